//! The framed evidence record the agent writes to the serial console and the host decodes.
//!
//! A record is an ordered list of named entries (`tpm/binary_bios_measurements`,
//! `fw_cfg/etc/acpi/tables`, `errors`, …). On the wire it is one frame amid whatever else the
//! console printed (firmware and kernel messages before and after):
//!
//! ```text
//! MRLAB-RECORD-BEGIN v2 len=<body bytes> sha256=<hex of body> raw=<payload bytes>
//! <body, base64, lines of at most 76 characters>
//! MRLAB-RECORD-END
//! ```
//!
//! The payload is `u32 LE entry count`, then per entry `u32 LE name length`, the UTF-8 name,
//! `u64 LE data length`, the data. In v2 the body is the payload compressed as a zlib stream
//! (RFC 1950/1951), and `raw=` is the payload's length; v1 (no `raw=`) sends the payload itself.
//! The agent writes v2: the fw_cfg ACPI tables and TPM log areas are mostly zero padding, and a
//! kernel-smoke payload of ~220 KB becomes ~9 KB, which matters because the serial line moves
//! every byte at UART speed under TCG. The host reads both versions.
//!
//! The length and digest of the body in the begin line make a truncated or corrupted stream an
//! error instead of a silently shorter record; in v2 the inflated payload must then be exactly
//! `raw=` bytes (and the zlib stream's own Adler-32 must hold).

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// First token of the line that opens a record.
pub const BEGIN_MARKER: &str = "MRLAB-RECORD-BEGIN";
/// The whole line that closes a record.
pub const END_MARKER: &str = "MRLAB-RECORD-END";
/// The frame version [`encode`] writes (deflated body).
pub const VERSION: &str = "v2";
/// The earlier frame version (plain body), still read by [`decode`].
pub const VERSION_V1: &str = "v1";
/// Deflate level of the v2 body: miniz's default, which gets a kernel-smoke payload to ~4% of
/// its size; higher levels save a few hundred bytes and cost more guest time under TCG.
const DEFLATE_LEVEL: u8 = 6;
/// Longest base64 line; a multiple of 4 so every full line decodes on its own.
pub const LINE_LEN: usize = 76;

/// Name of the entry holding one line per problem the agent met.
pub const ERRORS_ENTRY: &str = "errors";
/// The kernel command line the guest booted with (`/proc/cmdline`).
pub const CMDLINE_ENTRY: &str = "proc/cmdline";
/// The guest kernel's release (`/proc/sys/kernel/osrelease`).
pub const KERNEL_RELEASE_ENTRY: &str = "kernel/release";
/// The TPM's event log (securityfs `tpm0/binary_bios_measurements`).
pub const TPM_EVENT_LOG_ENTRY: &str = "tpm/binary_bios_measurements";
/// A TD's ACPI CCEL table (its header: where the log area is).
pub const CCEL_TABLE_ENTRY: &str = "ccel/table";
/// A TD's event log, the CCEL log area.
pub const CCEL_DATA_ENTRY: &str = "ccel/data";
/// A TD's 1024-byte TDREPORT (`/dev/tdx_guest`).
pub const TDREPORT_ENTRY: &str = "tdx/tdreport";
/// A TD's quote (configfs-tsm `outblob`).
pub const QUOTE_ENTRY: &str = "tdx/quote";
/// The fw_cfg files too large to read, one `name size` line each.
pub const FW_CFG_SKIPPED_ENTRY: &str = "fw_cfg.skipped";

/// The entry holding fw_cfg file `name` as the guest read it.
pub fn fw_cfg_entry(name: &str) -> String {
    format!("fw_cfg/{name}")
}

/// The entry holding PCR `pcr` of `bank` (`sha256`, `sha384`) as sysfs gave it (hex text).
pub fn pcr_entry(bank: &str, pcr: u32) -> String {
    format!("tpm/pcr-{bank}/{pcr}")
}

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
    #[error("record v2 body does not inflate: {reason}")]
    BadDeflate { reason: String },
    #[error(
        "record v2 length mismatch: begin line says raw={expected} bytes, body inflates to {found}"
    )]
    RawLengthMismatch { expected: usize, found: String },
    #[error("malformed record payload at byte {offset}: {what}")]
    Payload { offset: usize, what: String },
}

/// Encodes `record` as a v2 frame: begin line, base64 body lines, end line, each ending in `\n`.
pub fn encode(record: &Record) -> String {
    let payload = serialize(record);
    let body = miniz_oxide::deflate::compress_to_vec_zlib(&payload, DEFLATE_LEVEL);
    let mut out = format!(
        "{BEGIN_MARKER} {VERSION} len={} sha256={} raw={}\n",
        body.len(),
        hex::encode(Sha256::digest(&body)),
        payload.len()
    );
    push_base64_lines(&mut out, &body);
    out.push_str(END_MARKER);
    out.push('\n');
    out
}

fn push_base64_lines(out: &mut String, body: &[u8]) {
    let text = base64::engine::general_purpose::STANDARD.encode(body);
    // Base64 output is ASCII, so splitting bytes at any index keeps valid UTF-8.
    for chunk in text.as_bytes().chunks(LINE_LEN) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
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
    let Begin {
        len: expected_len,
        sha256: expected_sha,
        raw,
    } = parse_begin(lines[begin], begin + 1)?;

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
    // The announced length only sizes the buffer up to what the lines can hold: a begin line
    // claiming terabytes must end as a length mismatch, not an allocation failure.
    let mut body = Vec::with_capacity(expected_len.min((end - begin) * (LINE_LEN / 4 * 3)));
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
        body.extend_from_slice(&bytes);
    }
    if body.len() != expected_len {
        return Err(RecordError::LengthMismatch {
            expected: expected_len,
            found: body.len(),
        });
    }
    let found_sha = hex::encode(Sha256::digest(&body));
    if found_sha != expected_sha {
        return Err(RecordError::DigestMismatch {
            expected: expected_sha,
            found: found_sha,
        });
    }
    match raw {
        None => deserialize(&body),
        Some(raw) => deserialize(&inflate(&body, raw)?),
    }
}

/// Inflates a v2 body that must give exactly `raw` bytes; output stops one byte past `raw`, so a
/// body that would inflate to gigabytes costs no more memory than an honest one.
fn inflate(body: &[u8], raw: usize) -> Result<Vec<u8>, RecordError> {
    use miniz_oxide::inflate::{decompress_to_vec_zlib_with_limit, TINFLStatus};
    match decompress_to_vec_zlib_with_limit(body, raw) {
        Ok(payload) if payload.len() == raw => Ok(payload),
        Ok(payload) => Err(RecordError::RawLengthMismatch {
            expected: raw,
            found: format!("{} bytes", payload.len()),
        }),
        Err(e) if e.status == TINFLStatus::HasMoreOutput => Err(RecordError::RawLengthMismatch {
            expected: raw,
            found: format!("more than {raw} bytes"),
        }),
        Err(e) => Err(RecordError::BadDeflate {
            reason: format!("{:?}", e.status),
        }),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a begin line announces.
struct Begin {
    /// Bytes of the body (what the base64 lines decode to).
    len: usize,
    /// Lower-case hex sha256 of the body.
    sha256: String,
    /// v2: bytes of the payload the body inflates to; v1: none (the body is the payload).
    raw: Option<usize>,
}

/// Parses `… MRLAB-RECORD-BEGIN v1 len=N sha256=HEX` or `… v2 len=N sha256=HEX raw=M` (anything
/// before the marker is console noise that lacked a newline).
fn parse_begin(line: &[u8], line_no: usize) -> Result<Begin, RecordError> {
    let text = String::from_utf8_lossy(line).into_owned();
    let bad = |reason: &str| RecordError::BadBeginLine {
        line: line_no,
        text: text.clone(),
        reason: reason.to_owned(),
    };
    let number = |field: Option<&str>, key: &str| {
        field
            .and_then(|f| f.strip_prefix(key))
            .ok_or_else(|| bad(&format!("missing `{key}`")))?
            .parse::<usize>()
            .map_err(|e| bad(&format!("`{key}` is not a number: {e}")))
    };
    let start = text.find(BEGIN_MARKER).ok_or_else(|| bad("no marker"))?;
    let mut fields = text[start + BEGIN_MARKER.len()..].split_whitespace();
    let deflated = match fields.next() {
        Some(VERSION) => true,
        Some(VERSION_V1) => false,
        Some(v) => {
            return Err(bad(&format!(
                "version {v:?}, expected {VERSION:?} or {VERSION_V1:?}"
            )))
        }
        None => return Err(bad("missing version")),
    };
    let len = number(fields.next(), "len=")?;
    let sha = fields
        .next()
        .and_then(|f| f.strip_prefix("sha256="))
        .ok_or_else(|| bad("missing `sha256=`"))?;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("`sha256=` is not 64 hex digits"));
    }
    let raw = if deflated {
        Some(number(fields.next(), "raw=")?)
    } else {
        None
    };
    if let Some(extra) = fields.next() {
        return Err(bad(&format!("unexpected field {extra:?}")));
    }
    Ok(Begin {
        len,
        sha256: sha.to_ascii_lowercase(),
        raw,
    })
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
        // Long enough for many base64 lines even deflated: xorshift bytes do not compress.
        let mut x = 0x2545_f491_u32;
        let noise = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect::<Vec<_>>();
        r.push("tpm/binary_bios_measurements", noise);
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

    /// `v1 len=N sha256=H` framing around `payload` as it is, as agents before v2 wrote it.
    fn v1_frame(payload: &[u8]) -> String {
        let mut out = format!(
            "{BEGIN_MARKER} {VERSION_V1} len={} sha256={}\n",
            payload.len(),
            hex::encode(Sha256::digest(payload))
        );
        push_base64_lines(&mut out, payload);
        out.push_str(END_MARKER);
        out.push('\n');
        out
    }

    #[test]
    fn v1_frames_still_decode() {
        // The frame a v1 agent wrote for an empty record (count 0): its sha256 computed by
        // `printf '\0\0\0\0' | sha256sum`.
        let frame = "MRLAB-RECORD-BEGIN v1 len=4 sha256=df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119\nAAAAAA==\nMRLAB-RECORD-END\n";
        assert_eq!(decode(frame.as_bytes()), Ok(Record::default()));
        let back = decode(&framed_in_console(&v1_frame(&serialize(&sample())))).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn v2_frame_from_an_independent_zlib_decodes() {
        // Made with Python's zlib (level 9), not with this module: entries `proc/cmdline` =
        // "console=ttyS0\n", `fw_cfg/etc/tpm/log` = 4096 zero bytes, `errors` = "". Payload
        // 4186 bytes, body 97 bytes, body sha256 from `hashlib.sha256`.
        let frame = "MRLAB-RECORD-BEGIN v2 len=97 sha256=c578524363ed2ee4f7ba84f43c80b12362ad7086246233501d52e59e71d06296 raw=4186
eNrtyMEJgDAQBdEFwYOIiI3EBqzCAjysaxCSbEgCYvcGxCr8D+YyDRH1tZiUDfvdnUEGerGGrE6W
Uu517qZ6jmvjwxopbEr0xqmlkQAAAAAAAADgJ9qapKQpf+cBCMsTiA==
MRLAB-RECORD-END
";
        let rec = decode(frame.as_bytes()).unwrap();
        assert_eq!(rec.get("proc/cmdline"), Some(&b"console=ttyS0\n"[..]));
        assert_eq!(rec.get("fw_cfg/etc/tpm/log"), Some(&[0u8; 4096][..]));
        assert_eq!(rec.names().collect::<Vec<_>>().len(), 3);
    }

    #[test]
    fn zero_padded_areas_shrink_on_the_wire() {
        // The shape of a kernel-smoke record: ACPI tables and TPM log areas are fixed-size
        // fw_cfg files, mostly zero. The e2e suite checks a real boot's record on the wire.
        let mut r = sample();
        let mut tables = vec![0u8; 131072];
        tables[..5000].copy_from_slice(r.get("tpm/binary_bios_measurements").unwrap());
        r.push("fw_cfg/etc/acpi/tables", tables);
        r.push("fw_cfg/etc/tpm/log", vec![0u8; 65536]);
        let frame = encode(&r);
        assert!(frame.len() < 20_000, "{} bytes on the wire", frame.len());
        assert_eq!(decode(frame.as_bytes()), Ok(r));
    }

    /// A v2 frame around `body` as given (valid framing, digest of `body`), announcing `raw`.
    fn v2_frame(body: &[u8], raw: usize) -> String {
        let mut out = format!(
            "{BEGIN_MARKER} {VERSION} len={} sha256={} raw={raw}\n",
            body.len(),
            hex::encode(Sha256::digest(body))
        );
        push_base64_lines(&mut out, body);
        out.push_str(END_MARKER);
        out.push('\n');
        out
    }

    #[test]
    fn v2_payload_must_inflate_to_exactly_raw_bytes() {
        let payload = serialize(&sample());
        let body = miniz_oxide::deflate::compress_to_vec_zlib(&payload, DEFLATE_LEVEL);
        assert_eq!(
            decode(v2_frame(&body, payload.len() + 1).as_bytes()),
            Err(RecordError::RawLengthMismatch {
                expected: payload.len() + 1,
                found: format!("{} bytes", payload.len()),
            })
        );
        assert_eq!(
            decode(v2_frame(&body, payload.len() - 1).as_bytes()),
            Err(RecordError::RawLengthMismatch {
                expected: payload.len() - 1,
                found: format!("more than {} bytes", payload.len() - 1),
            })
        );
        // A well-framed body that is no zlib stream (the v1 payload itself).
        let err = decode(v2_frame(&payload, payload.len()).as_bytes()).unwrap_err();
        assert!(matches!(err, RecordError::BadDeflate { .. }), "{err:?}");
        // A zlib stream whose Adler-32 trailer is wrong: inflates, but is not what was deflated.
        let mut bad_adler = body.clone();
        *bad_adler.last_mut().unwrap() ^= 1;
        let err = decode(v2_frame(&bad_adler, payload.len()).as_bytes()).unwrap_err();
        assert!(matches!(err, RecordError::BadDeflate { .. }), "{err:?}");
    }

    #[test]
    fn raw_belongs_to_v2_only() {
        let v2 = encode(&sample());
        let first = v2.lines().next().unwrap();
        let no_raw = v2.replacen(&first[first.find(" raw=").unwrap()..], "", 1);
        let err = decode(no_raw.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, RecordError::BadBeginLine { reason, .. } if reason == "missing `raw=`"),
            "{err:?}"
        );
        let v1 = v1_frame(&serialize(&sample())).replacen('\n', " raw=1\n", 1);
        let err = decode(v1.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, RecordError::BadBeginLine { reason, .. } if reason == "unexpected field \"raw=1\""),
            "{err:?}"
        );
    }

    #[test]
    fn an_absurd_announced_length_is_a_mismatch_not_an_allocation() {
        let frame = encode(&sample());
        let first = frame.lines().next().unwrap();
        let huge = first.replacen(
            &first[first.find("len=").unwrap()..first.find(" sha256=").unwrap()],
            &format!("len={}", usize::MAX),
            1,
        );
        let err = decode(frame.replacen(first, &huge, 1).as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                RecordError::LengthMismatch {
                    expected: usize::MAX,
                    ..
                }
            ),
            "{err:?}"
        );
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
        let body = miniz_oxide::deflate::compress_to_vec_zlib(&serialize(&sample()), DEFLATE_LEVEL);
        assert_eq!(
            err,
            RecordError::LengthMismatch {
                expected: body.len(),
                found: body.len() - 57
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
        let frame = encode(&sample()).replacen(" v2 ", " v3 ", 1);
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
