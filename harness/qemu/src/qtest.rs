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
    line: String,
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
            line: String::new(),
        }
    }

    /// Sends one command and returns what follows `OK` (empty when nothing does).
    pub async fn command(&mut self, command: &str) -> Result<String, QtestError> {
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
            let n = self.reader.read_line(&mut self.line).await.map_err(io)?;
            if n == 0 {
                return Err(QtestError::Closed {
                    command: command.to_string(),
                });
            }
            let reply = self.line.trim_end();
            if reply.starts_with("IRQ") {
                continue;
            }
            return match reply.strip_prefix("OK") {
                Some(rest) => Ok(rest.trim_start().to_string()),
                None => Err(QtestError::Refused {
                    command: command.to_string(),
                    reply: reply.to_string(),
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
        use base64::Engine as _;
        let command = format!("b64read 0x{addr:x} 0x{len:x}");
        let reply = self.command(&command).await?;
        match base64::engine::general_purpose::STANDARD.decode(reply.trim()) {
            Ok(bytes) if bytes.len() == len => Ok(bytes),
            _ => Err(QtestError::BadValue { command, reply }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_for_write_commands() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "0x00ab10");
    }
}
