//! A client for QEMU's qtest protocol (`-qtest unix:…`, `softmmu/qtest.c`): one text command
//! per line, answered by `OK[ value]` or `FAIL …`; `IRQ …` lines are asynchronous notices and are skipped.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum QtestError {
    #[error("qtest command `{command}`")]
    Io {
        command: String,
        source: std::io::Error,
    },
    #[error("qtest command `{command}`: QEMU closed the connection")]
    Closed { command: String },
    #[error("qtest command `{command}`: expected `OK…`, got `{reply}`")]
    Refused { command: String, reply: String },
    #[error("qtest command `{command}`: cannot parse the value in `{reply}`")]
    BadValue { command: String, reply: String },
}

pub struct Qtest {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// The last reply line, as bytes: a `b64read` reply is decoded straight from here.
    line: Vec<u8>,
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("0x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

impl Qtest {
    pub fn new(stream: UnixStream) -> Qtest {
        let (read, writer) = stream.into_split();
        Qtest {
            // A kernel's `b64read` reply is megabytes on one line: read it in large steps.
            reader: BufReader::with_capacity(1 << 20, read),
            writer,
            line: Vec::new(),
        }
    }

    /// Sends one command and returns what follows `OK` (empty when nothing does).
    pub async fn command(&mut self, command: &str) -> Result<String, QtestError> {
        let value = self.reply(command).await?;
        Ok(String::from_utf8_lossy(&self.line[value]).into_owned())
    }

    /// Sends one command and returns where, in `self.line`, the value after `OK` is.
    async fn reply(&mut self, command: &str) -> Result<std::ops::Range<usize>, QtestError> {
        let io = |source| QtestError::Io {
            command: command.to_string(),
            source,
        };
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(io)?;
        loop {
            self.line.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.line)
                .await
                .map_err(io)?;
            if n == 0 {
                return Err(QtestError::Closed {
                    command: command.to_string(),
                });
            }
            let reply = self.line.trim_ascii_end();
            if reply.starts_with(b"IRQ") {
                continue;
            }
            return match reply.strip_prefix(b"OK") {
                Some(rest) => {
                    let value = rest.trim_ascii_start();
                    let start = reply.len() - value.len();
                    Ok(start..reply.len())
                }
                None => Err(QtestError::Refused {
                    command: command.to_string(),
                    reply: String::from_utf8_lossy(reply).into_owned(),
                }),
            };
        }
    }

    async fn value(&mut self, command: &str) -> Result<u64, QtestError> {
        let reply = self.command(command).await?;
        let parsed = reply
            .strip_prefix("0x")
            .and_then(|digits| u64::from_str_radix(digits, 16).ok());
        parsed.ok_or_else(|| QtestError::BadValue {
            command: command.to_string(),
            reply,
        })
    }

    pub async fn outb(&mut self, port: u16, value: u8) -> Result<(), QtestError> {
        self.command(&format!("outb 0x{port:x} 0x{value:x}"))
            .await
            .map(drop)
    }
    pub async fn outw(&mut self, port: u16, value: u16) -> Result<(), QtestError> {
        self.command(&format!("outw 0x{port:x} 0x{value:x}"))
            .await
            .map(drop)
    }
    pub async fn outl(&mut self, port: u16, value: u32) -> Result<(), QtestError> {
        self.command(&format!("outl 0x{port:x} 0x{value:x}"))
            .await
            .map(drop)
    }
    pub async fn inb(&mut self, port: u16) -> Result<u8, QtestError> {
        Ok(self.value(&format!("inb 0x{port:x}")).await? as u8)
    }
    pub async fn inl(&mut self, port: u16) -> Result<u32, QtestError> {
        Ok(self.value(&format!("inl 0x{port:x}")).await? as u32)
    }
    pub async fn writeq(&mut self, addr: u64, value: u64) -> Result<(), QtestError> {
        self.command(&format!("writeq 0x{addr:x} 0x{value:x}"))
            .await
            .map(drop)
    }
    pub async fn readb(&mut self, addr: u64) -> Result<u8, QtestError> {
        Ok(self.value(&format!("readb 0x{addr:x}")).await? as u8)
    }
    pub async fn memwrite(&mut self, addr: u64, data: &[u8]) -> Result<(), QtestError> {
        let command = format!("write 0x{addr:x} 0x{:x} {}", data.len(), hex(data));
        self.command(&command).await.map(drop)
    }
    /// Guest memory via `b64read`: QEMU's `read` hex-formats byte by byte, which makes reading
    /// an 8 MiB kernel take seconds; base64 is an order of magnitude faster.
    pub async fn memread(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, QtestError> {
        let mut out = Vec::with_capacity(len);
        self.memread_into(addr, len, &mut out).await?;
        Ok(out)
    }

    /// [`Qtest::memread`], appended to `out` and decoded straight from the reply line (a
    /// kernel's replies are megabytes: no copy of them is made).
    pub async fn memread_into(
        &mut self,
        addr: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), QtestError> {
        use base64::Engine as _;
        let command = format!("b64read 0x{addr:x} 0x{len:x}");
        let value = self.reply(&command).await?;
        let before = out.len();
        match base64::engine::general_purpose::STANDARD.decode_vec(&self.line[value.clone()], out) {
            Ok(()) if out.len() - before == len => Ok(()),
            _ => {
                out.truncate(before);
                // The start of the reply is enough to see what went wrong.
                let shown = &self.line[value.start..value.end.min(value.start + 120)];
                Err(QtestError::BadValue {
                    command,
                    reply: String::from_utf8_lossy(shown).into_owned(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake QEMU answering each line of `replies` to one command.
    async fn answered(replies: &'static [&'static str]) -> Qtest {
        use tokio::io::AsyncReadExt;
        let (ours, theirs) = UnixStream::pair().expect("socket pair");
        tokio::spawn(async move {
            let (mut read, mut write) = theirs.into_split();
            let mut buf = [0u8; 256];
            for reply in replies {
                if read.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let _ = write.write_all(reply.as_bytes()).await;
            }
        });
        Qtest::new(ours)
    }

    #[tokio::test]
    async fn b64read_skips_irq_lines_and_checks_the_length() {
        let mut q = answered(&["IRQ raise 4\nOK AAEC\n", "OK AAE=\n", "FAIL nope\n"]).await;
        assert_eq!(q.memread(0x1000, 3).await.expect("3 bytes"), [0, 1, 2]);
        // Two bytes where three were asked: refused, nothing appended.
        let mut out = vec![9];
        let err = q.memread_into(0x1000, 3, &mut out).await.unwrap_err();
        assert!(
            matches!(&err, QtestError::BadValue { reply, .. } if reply == "AAE="),
            "{err}"
        );
        assert_eq!(out, [9]);
        let err = q.memread(0x1000, 3).await.unwrap_err();
        assert!(
            matches!(&err, QtestError::Refused { reply, .. } if reply == "FAIL nope"),
            "{err}"
        );
    }

    #[test]
    fn hex_for_write_commands() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "0x00ab10");
    }
}
