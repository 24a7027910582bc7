//! The framed evidence record the agent writes to the serial console and the host decodes.
//!
//! A record is an ordered list of named entries (`tpm/binary_bios_measurements`,
//! `fw_cfg/etc/acpi/tables`, `errors`, …). On the wire it is one frame amid whatever else the
//! console printed (firmware and kernel messages before and after):
//!
//! ```text
//! MRLAB-RECORD-BEGIN v1 len=<payload bytes> sha256=<hex of payload>
//! <payload, base64, lines of at most 76 characters>
//! MRLAB-RECORD-END
//! ```
//!
//! The payload is `u32 LE entry count`, then per entry `u32 LE name length`, the UTF-8 name,
//! `u64 LE data length`, the data. The length and digest in the begin line make a truncated or
//! corrupted stream an error instead of a silently shorter record.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// First token of the line that opens a record.
pub const BEGIN_MARKER: &str = "MRLAB-RECORD-BEGIN";
/// The whole line that closes a record.
pub const END_MARKER: &str = "MRLAB-RECORD-END";
/// The only frame version this module writes and reads.
pub const VERSION: &str = "v1";
/// Longest base64 line; a multiple of 4 so every full line decodes on its own.
pub const LINE_LEN: usize = 76;

/// Name of the entry holding one line per problem the agent met.
pub const ERRORS_ENTRY: &str = "errors";

/// An ordered list of named byte strings. Names are unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub entries: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The data of the first entry called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_slice())
    }

    /// Appends an entry (the agent never adds a name twice; [`decode`] rejects duplicates).
    pub fn push(&mut self, name: impl Into<String>, data: impl Into<Vec<u8>>) {
        self.entries.push((name.into(), data.into()));
    }

    /// The non-empty lines of the `errors` entry: problems the agent met while collecting.
    pub fn errors(&self) -> Vec<String> {
        self.get(ERRORS_ENTRY)
            .map(|d| {
                String::from_utf8_lossy(d)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The entry names in record order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }
}

/// Why a serial stream did not yield a record. Line numbers count from 1 in the serial stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("no `{BEGIN_MARKER}` line in the serial output: the agent did not run or did not get to write its record")]
    NoRecord,
    #[error("{count} `{BEGIN_MARKER}` lines in the serial output (lines {lines:?}); expected exactly one")]
    MultipleRecords { count: usize, lines: Vec<usize> },
    #[error("line {line}: malformed begin line {text:?}: {reason}")]
    BadBeginLine {
        line: usize,
        text: String,
        reason: String,
    },
    #[error("record truncated: begin line {begin_line} has no `{END_MARKER}` line after it ({base64_lines} lines follow it)")]
    Truncated {
        begin_line: usize,
        base64_lines: usize,
    },
    #[error("line {line}: bad base64 in record body: {reason}")]
    BadBase64 { line: usize, reason: String },
    #[error("record length mismatch: begin line says {expected} bytes, body decodes to {found}")]
    LengthMismatch { expected: usize, found: usize },
    #[error("record sha256 mismatch: begin line says {expected}, body hashes to {found}")]
    DigestMismatch { expected: String, found: String },
    #[error("malformed record payload at byte {offset}: {what}")]
    Payload { offset: usize, what: String },
}

/// Encodes `record` as a frame: begin line, base64 body lines, end line, each ending in `\n`.
pub fn encode(record: &Record) -> String {
    let payload = serialize(record);
    let body = base64::engine::general_purpose::STANDARD.encode(&payload);
    let mut out = format!(
        "{BEGIN_MARKER} {VERSION} len={} sha256={}\n",
        payload.len(),
        hex::encode(Sha256::digest(&payload))
    );
    // Base64 output is ASCII, so splitting bytes at any index keeps valid UTF-8.
    for chunk in body.as_bytes().chunks(LINE_LEN) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(END_MARKER);
    out.push('\n');
    out
}

/// Finds the one record frame in `serial` (raw console bytes, `\n` or `\r\n` line ends, other
/// output around it) and decodes it, checking the length and sha256 the begin line announces.
pub fn decode(serial: &[u8]) -> Result<Record, RecordError> {
    let lines: Vec<&[u8]> = serial
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    let begins: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| find(l, BEGIN_MARKER.as_bytes()).is_some())
        .map(|(i, _)| i)
        .collect();
    let begin = match begins.as_slice() {
        [] => return Err(RecordError::NoRecord),
        [one] => *one,
        many => {
            return Err(RecordError::MultipleRecords {
                count: many.len(),
                lines: many.iter().map(|i| i + 1).collect(),
            })
        }
    };
    let (expected_len, expected_sha) = parse_begin(lines[begin], begin + 1)?;

    // Look for the end line first: a stream cut mid-line must read as truncated, not as bad
    // base64 in its last, partial line.
    let end = lines
        .iter()
        .skip(begin + 1)
        .position(|l| *l == END_MARKER.as_bytes())
        .map(|p| begin + 1 + p)
        .ok_or(RecordError::Truncated {
            begin_line: begin + 1,
            base64_lines: lines.len() - begin - 1,
        })?;
    let mut payload = Vec::with_capacity(expected_len);
    for (i, line) in lines.iter().enumerate().take(end).skip(begin + 1) {
        if line.len() > LINE_LEN {
            return Err(RecordError::BadBase64 {
                line: i + 1,
                reason: format!("{} characters, longer than {LINE_LEN}", line.len()),
            });
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(line)
            .map_err(|e| RecordError::BadBase64 {
                line: i + 1,
                reason: e.to_string(),
            })?;
        payload.extend_from_slice(&bytes);
    }
    if payload.len() != expected_len {
        return Err(RecordError::LengthMismatch {
            expected: expected_len,
            found: payload.len(),
        });
    }
    let found_sha = hex::encode(Sha256::digest(&payload));
    if found_sha != expected_sha {
        return Err(RecordError::DigestMismatch {
            expected: expected_sha,
            found: found_sha,
        });
    }
    deserialize(&payload)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses `… MRLAB-RECORD-BEGIN v1 len=N sha256=HEX` (anything before the marker is console
/// noise that lacked a newline) into the announced payload length and lower-case digest.
fn parse_begin(line: &[u8], line_no: usize) -> Result<(usize, String), RecordError> {
    let text = String::from_utf8_lossy(line).into_owned();
    let bad = |reason: &str| RecordError::BadBeginLine {
        line: line_no,
        text: text.clone(),
        reason: reason.to_owned(),
    };
    let start = text.find(BEGIN_MARKER).ok_or_else(|| bad("no marker"))?;
    let mut fields = text[start + BEGIN_MARKER.len()..].split_whitespace();
    match fields.next() {
        Some(VERSION) => {}
        Some(v) => return Err(bad(&format!("version {v:?}, expected {VERSION:?}"))),
        None => return Err(bad("missing version")),
    }
    let len = fields
        .next()
        .and_then(|f| f.strip_prefix("len="))
        .ok_or_else(|| bad("missing `len=`"))?
        .parse::<usize>()
        .map_err(|e| bad(&format!("`len=` is not a number: {e}")))?;
    let sha = fields
        .next()
        .and_then(|f| f.strip_prefix("sha256="))
        .ok_or_else(|| bad("missing `sha256=`"))?;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("`sha256=` is not 64 hex digits"));
    }
    if let Some(extra) = fields.next() {
        return Err(bad(&format!("unexpected field {extra:?}")));
    }
    Ok((len, sha.to_ascii_lowercase()))
}

fn serialize(record: &Record) -> Vec<u8> {
    let size: usize = record
        .entries
        .iter()
        .map(|(n, d)| 12 + n.len() + d.len())
        .sum();
    let mut out = Vec::with_capacity(4 + size);
    // Counts and lengths beyond u32/u64 cannot occur for in-guest evidence; saturate rather
    // than panic, decode then reports the mismatch.
    out.extend_from_slice(
        &u32::try_from(record.entries.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for (name, data) in &record.entries {
        out.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// A checked reader over the payload.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], RecordError> {
        let end = self
            .offset
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| RecordError::Payload {
                offset: self.offset,
                what: format!(
                    "{what}: needs {n} bytes, {} left",
                    self.bytes.len() - self.offset
                ),
            })?;
        let out = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, RecordError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, RecordError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

fn deserialize(payload: &[u8]) -> Result<Record, RecordError> {
    let mut r = Reader {
        bytes: payload,
        offset: 0,
    };
    let count = r.u32("entry count")?;
    let mut record = Record::default();
    for index in 0..count {
        let name_offset = r.offset;
        let name_len = r.u32(&format!("entry {index} name length"))? as usize;
        let name = r.take(name_len, &format!("entry {index} name"))?;
        let name = std::str::from_utf8(name).map_err(|e| RecordError::Payload {
            offset: name_offset + 4,
            what: format!("entry {index} name is not UTF-8: {e}"),
        })?;
        if record.get(name).is_some() {
            return Err(RecordError::Payload {
                offset: name_offset,
                what: format!("entry {index}: duplicate name {name:?}"),
            });
        }
        let data_len = r.u64(&format!("entry {name:?} data length"))?;
        let data_len = usize::try_from(data_len).map_err(|_| RecordError::Payload {
            offset: r.offset - 8,
            what: format!("entry {name:?}: data length {data_len} does not fit in memory"),
        })?;
        let data = r.take(data_len, &format!("entry {name:?} data"))?;
        record.push(name, data);
    }
    if r.offset != payload.len() {
        return Err(RecordError::Payload {
            offset: r.offset,
            what: format!(
                "{} trailing bytes after {count} entries",
                payload.len() - r.offset
            ),
        });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        let mut r = Record::default();
        r.push("proc/cmdline", b"console=ttyS0 mrlab.nonce=00ff\n".to_vec());
        // Long enough for many base64 lines, with every byte value.
        r.push(
            "tpm/binary_bios_measurements",
            (0..5000u32).map(|i| (i % 256) as u8).collect::<Vec<_>>(),
        );
        r.push("fw_cfg/etc/acpi/rsdp", Vec::new());
        r.push(
            ERRORS_ENTRY,
            b"tdx/tdreport: /dev/tdx_guest: not found\n".to_vec(),
        );
        r
    }

    fn framed_in_console(frame: &str) -> Vec<u8> {
        let mut s = b"BdsDxe: loading Boot0001\r\n[    0.000000] Linux version 6.1\r\nnoise-without-newline "
            .to_vec();
        s.extend_from_slice(frame.replace('\n', "\r\n").as_bytes());
        s.extend_from_slice(b"[   12.5] reboot: Power down\r\n");
        s
    }

    #[test]
    fn round_trip_amid_console_noise_with_crlf() {
        let rec = sample();
        let frame = encode(&rec);
        assert!(frame
            .lines()
            .all(|l| l.len() <= LINE_LEN || l.starts_with(BEGIN_MARKER)));
        let back = decode(&framed_in_console(&frame)).unwrap();
        assert_eq!(back, rec);
        assert_eq!(
            back.errors(),
            vec!["tdx/tdreport: /dev/tdx_guest: not found"]
        );
    }

    #[test]
    fn begin_line_announces_independent_sha256() {
        // Oracle: the sha256 of the 4-byte payload of an empty record (count 0), computed by
        // `printf '\0\0\0\0' | sha256sum`.
        let frame = encode(&Record::default());
        assert_eq!(
            frame.lines().next().unwrap(),
            "MRLAB-RECORD-BEGIN v1 len=4 sha256=df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119"
        );
        assert_eq!(frame.lines().nth(1).unwrap(), "AAAAAA==");
    }

    #[test]
    fn cut_in_the_middle_is_truncated() {
        let frame = encode(&sample());
        let console = framed_in_console(&frame);
        let cut = &console[..console.len() / 2];
        match decode(cut) {
            Err(RecordError::Truncated {
                begin_line: 3,
                base64_lines,
            }) => {
                assert!(base64_lines > 0)
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn missing_lines_is_a_length_mismatch() {
        let frame = encode(&sample());
        let lines: Vec<&str> = frame.lines().collect();
        let mut cut: Vec<&str> = lines.clone();
        cut.remove(5);
        let err = decode(cut.join("\n").as_bytes()).unwrap_err();
        assert_eq!(
            err,
            RecordError::LengthMismatch {
                expected: serialize(&sample()).len(),
                found: serialize(&sample()).len() - 57
            }
        );
    }

    #[test]
    fn flipped_byte_is_a_digest_mismatch() {
        let frame = encode(&sample());
        let mut bytes = frame.into_bytes();
        // Line 3 of the frame, first character: a base64 letter changed to another letter.
        let pos = bytes.iter().position(|&b| b == b'\n').unwrap() + 1 + LINE_LEN + 1;
        bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(err, RecordError::DigestMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    }

    #[test]
    fn non_base64_line_names_the_line() {
        let frame = encode(&sample());
        let mut lines: Vec<String> = frame.lines().map(str::to_owned).collect();
        lines[2] = "[   3.2] random: crng init done".into();
        let err = decode(lines.join("\n").as_bytes()).unwrap_err();
        assert!(
            matches!(err, RecordError::BadBase64 { line: 3, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn no_record_and_two_records_are_errors() {
        assert_eq!(decode(b"kernel panic\n"), Err(RecordError::NoRecord));
        let two = format!("{}{}", encode(&sample()), encode(&sample()));
        assert!(matches!(
            decode(two.as_bytes()),
            Err(RecordError::MultipleRecords { count: 2, .. })
        ));
    }

    #[test]
    fn malformed_begin_line_is_rejected() {
        let frame = encode(&sample()).replacen(" v1 ", " v2 ", 1);
        assert!(matches!(
            decode(frame.as_bytes()),
            Err(RecordError::BadBeginLine { line: 1, .. })
        ));
    }

    #[test]
    fn payload_with_bad_entry_length_is_rejected() {
        // A well-framed payload whose one entry claims more data than there is.
        let mut payload = 1u32.to_le_bytes().to_vec();
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.push(b'x');
        payload.extend_from_slice(&100u64.to_le_bytes());
        payload.extend_from_slice(b"short");
        let frame = format!(
            "{BEGIN_MARKER} v1 len={} sha256={}\n{}\n{END_MARKER}\n",
            payload.len(),
            hex::encode(Sha256::digest(&payload)),
            base64::engine::general_purpose::STANDARD.encode(&payload)
        );
        let err = decode(frame.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            RecordError::Payload {
                offset: 17,
                what: "entry \"x\" data: needs 100 bytes, 5 left".into()
            }
        );
    }
}
