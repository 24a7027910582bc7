//! The binary TCG PC Client event log formats (TCG PC Client Platform Firmware Profile,
//! section 10): the crypto-agile format (a legacy `TCG_PCR_EVENT` carrying the Spec ID Event03
//! header, then `TCG_PCR_EVENT2` records with one digest per declared bank) and the TCG 1.2
//! format (`TCG_PCR_EVENT` records with one SHA-1 digest). The TDX CCEL uses the crypto-agile
//! format with the MR index in the PCR field.
//!
//! This module reads records and writes them back; [`crate::log`] gives them meaning.

use crate::alg::HashAlg;
use crate::error::{Error, Result};
use crate::log::{EventLog, Padding};
use measure::reader::Reader;
use measure::{Event, EventType};
use serde_json::{json, Value};

/// `TCG_EfiSpecIdEvent.signature` of a crypto-agile log.
pub const SPEC_ID_EVENT03: &[u8; 16] = b"Spec ID Event03\0";
/// Signature of a `StartupLocality` `EV_NO_ACTION` event (PFP 10.4.5.3).
pub const STARTUP_LOCALITY: &[u8; 16] = b"StartupLocality\0";
/// Size of the SHA-1 digest in a `TCG_PCR_EVENT` record.
const SHA1_SIZE: usize = 20;

/// The Spec ID Event03 header (`TCG_EfiSpecIdEvent`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecId {
    pub platform_class: u32,
    pub spec_version_major: u8,
    pub spec_version_minor: u8,
    pub errata: u8,
    /// 1 = 32-bit UINTN, 2 = 64-bit.
    pub uintn_size: u8,
    /// Declared banks and their digest sizes, in header order.
    pub algorithms: Vec<(HashAlg, u16)>,
    pub vendor_info: Vec<u8>,
}

impl SpecId {
    /// `major.minor`, e.g. `2.0`.
    pub fn spec_version(&self) -> String {
        format!("{}.{}", self.spec_version_major, self.spec_version_minor)
    }

    pub fn digest_size(&self, alg: HashAlg) -> Option<usize> {
        self.algorithms
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, size)| *size as usize)
    }

    /// The fixture/CLI shape: `{platform_class, spec_version, errata, uintn_size, algorithms}`.
    pub fn to_json(&self) -> Value {
        let algorithms: serde_json::Map<String, Value> = self
            .algorithms
            .iter()
            .map(|(alg, size)| (alg.name(), json!(size)))
            .collect();
        json!({
            "platform_class": self.platform_class,
            "spec_version": self.spec_version(),
            "errata": self.errata,
            "uintn_size": self.uintn_size,
            "algorithms": algorithms,
        })
    }

    /// The header mrlab writes: PC client class, spec 2.0, errata 0, 64-bit UINTN.
    pub fn with_algorithms(algorithms: Vec<(HashAlg, u16)>) -> SpecId {
        SpecId {
            platform_class: 0,
            spec_version_major: 2,
            spec_version_minor: 0,
            errata: 0,
            uintn_size: 2,
            algorithms,
            vendor_info: Vec::new(),
        }
    }
}

/// One record as stored: the index field (PCR or MR index), type, digests and data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Byte offset of the record in the input.
    pub offset: usize,
    pub index: u32,
    pub event_type: u32,
    pub digests: Vec<(HashAlg, Vec<u8>)>,
    pub data: Vec<u8>,
}

/// Records of one log, before they are mapped to registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Records {
    pub spec_id: Option<SpecId>,
    pub records: Vec<Record>,
    pub padding: Option<Padding>,
}

/// Whether the input starts with a crypto-agile Spec ID Event03 header record.
pub fn is_crypto_agile(bytes: &[u8]) -> bool {
    // pcr(4) type(4) sha1(20) size(4), then the signature.
    let header_type = bytes.get(4..8) == Some(&EventType::NO_ACTION.0.to_le_bytes()[..]);
    header_type && bytes.get(32..48) == Some(&SPEC_ID_EVENT03[..])
}

/// The fill that ends a fixed-size log area: the rest of the input is all 0xFF or all 0x00.
fn padding_at(bytes: &[u8], pos: usize) -> Option<Padding> {
    let rest = bytes.get(pos..).filter(|r| !r.is_empty())?;
    let byte = rest[0];
    if (byte == 0xff || byte == 0x00) && rest.iter().all(|b| *b == byte) {
        Some(Padding {
            log_bytes: pos,
            padding_bytes: rest.len(),
            byte,
        })
    } else {
        None
    }
}

fn check_index(
    record: usize,
    offset: usize,
    index: u32,
    max: u32,
    format: &'static str,
) -> Result<()> {
    if index > max {
        return Err(Error::IndexOutOfRange {
            record,
            offset,
            index,
            max,
            format,
        });
    }
    Ok(())
}

fn parse_spec_id(data: &[u8], base: usize) -> Result<SpecId> {
    let mut r = Reader::new(data);
    let at = |r: &Reader| base + r.pos();
    let signature = r
        .bytes(16, "Spec ID signature")
        .map_err(|e| rebase(e.into(), base))?;
    if signature != SPEC_ID_EVENT03 {
        return Err(Error::Invalid {
            field: "Spec ID signature",
            offset: base,
            reason: format!(
                "expected \"Spec ID Event03\", found {:?}",
                String::from_utf8_lossy(signature)
            ),
        });
    }
    let mut read = || -> Result<SpecId> {
        let platform_class = r.u32("Spec ID platformClass")?;
        let spec_version_minor = r.u8("Spec ID specVersionMinor")?;
        let spec_version_major = r.u8("Spec ID specVersionMajor")?;
        let errata = r.u8("Spec ID specErrata")?;
        let uintn_size = r.u8("Spec ID uintnSize")?;
        let count_at = at(&r);
        let count = r.u32("Spec ID numberOfAlgorithms")?;
        // Each algorithm entry takes 4 bytes: a count beyond the data is garbage, not a log.
        if count == 0 || count as usize > r.remaining() / 4 {
            return Err(Error::Invalid {
                field: "Spec ID numberOfAlgorithms",
                offset: count_at,
                reason: format!("{count} algorithms cannot fit in {} bytes", r.remaining()),
            });
        }
        let mut algorithms = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let alg_at = at(&r);
            let alg = HashAlg(r.u16("Spec ID algorithmId")?);
            let size = r.u16("Spec ID digestSize")?;
            if let Some(known) = alg.digest_size() {
                if known != size as usize {
                    return Err(Error::Invalid {
                        field: "Spec ID digestSize",
                        offset: alg_at,
                        reason: format!("{alg} declared with {size} bytes, its digest is {known}"),
                    });
                }
            }
            if algorithms.iter().any(|(a, _)| *a == alg) {
                return Err(Error::Invalid {
                    field: "Spec ID algorithmId",
                    offset: alg_at,
                    reason: format!("{alg} declared twice"),
                });
            }
            algorithms.push((alg, size));
        }
        let vendor_size = r.u8("Spec ID vendorInfoSize")?;
        let vendor_info = r
            .bytes(vendor_size as usize, "Spec ID vendorInfo")?
            .to_vec();
        Ok(SpecId {
            platform_class,
            spec_version_major,
            spec_version_minor,
            errata,
            uintn_size,
            algorithms,
            vendor_info,
        })
    };
    read().map_err(|e| rebase(e, base))
}

/// Shift a truncation offset of a sub-reader to input offsets.
fn rebase(e: Error, base: usize) -> Error {
    match e {
        Error::Truncated {
            field,
            offset,
            needed,
            available,
        } => Error::Truncated {
            field,
            offset: offset + base,
            needed,
            available,
        },
        other => other,
    }
}

/// Read a crypto-agile log. `max_index` bounds the index field (23 for PCRs, 4 for CCEL MR
/// indices); `format` names the format in errors.
pub fn parse_crypto_agile(bytes: &[u8], max_index: u32, format: &'static str) -> Result<Records> {
    if !is_crypto_agile(bytes) {
        return Err(Error::WrongFormat {
            expected: "crypto-agile TCG log",
            reason: "the first record is not an EV_NO_ACTION \"Spec ID Event03\" header".into(),
        });
    }
    let mut r = Reader::new(bytes);
    // The header's index field is not meaningful: TPM logs write 0, TDVF's CCEL writes 1.
    r.u32("header pcrIndex")?;
    r.u32("header eventType")?;
    r.bytes(SHA1_SIZE, "header digest")?;
    let data_at = r.pos() + 4;
    let data = r.sized32("header event")?;
    let spec_id = parse_spec_id(data, data_at)?;

    let mut records = Vec::new();
    let mut padding = None;
    while r.remaining() > 0 {
        if let Some(p) = padding_at(bytes, r.pos()) {
            padding = Some(p);
            break;
        }
        let record = records.len() + 1;
        let offset = r.pos();
        let index = r.u32("pcrIndex")?;
        check_index(record, offset, index, max_index, format)?;
        let event_type = r.u32("eventType")?;
        let count_at = r.pos();
        let count = r.u32("digests.count")?;
        if count as usize > spec_id.algorithms.len() {
            return Err(Error::Invalid {
                field: "digests.count",
                offset: count_at,
                reason: format!(
                    "record {record} has {count} digests, the header declares {} banks",
                    spec_id.algorithms.len()
                ),
            });
        }
        let mut digests = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let alg_at = r.pos();
            let alg = HashAlg(r.u16("digest algorithmId")?);
            let size = spec_id.digest_size(alg).ok_or(Error::UndeclaredAlgorithm {
                record,
                offset: alg_at,
                alg: alg.0,
            })?;
            digests.push((alg, r.bytes(size, "digest")?.to_vec()));
        }
        let data = r.sized32("event")?.to_vec();
        records.push(Record {
            offset,
            index,
            event_type,
            digests,
            data,
        });
    }
    Ok(Records {
        spec_id: Some(spec_id),
        records,
        padding,
    })
}

/// Read a TCG 1.2 log: `TCG_PCR_EVENT` records with SHA-1 digests, PCR 0..=23.
pub fn parse_legacy(bytes: &[u8]) -> Result<Records> {
    let mut r = Reader::new(bytes);
    let mut records = Vec::new();
    let mut padding = None;
    while r.remaining() > 0 {
        if !records.is_empty() {
            if let Some(p) = padding_at(bytes, r.pos()) {
                padding = Some(p);
                break;
            }
        }
        let record = records.len();
        let offset = r.pos();
        let index = r.u32("pcrIndex")?;
        check_index(record, offset, index, 23, "tcg1")?;
        let event_type = r.u32("eventType")?;
        let digest = r.bytes(SHA1_SIZE, "SHA-1 digest")?.to_vec();
        let data = r.sized32("event")?.to_vec();
        records.push(Record {
            offset,
            index,
            event_type,
            digests: vec![(HashAlg::SHA1, digest)],
            data,
        });
    }
    Ok(Records {
        spec_id: None,
        records,
        padding,
    })
}

/// Why a log cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("event {index} (pcr {pcr}, {event_type}) has no {bank} digest; every record needs one per declared bank")]
    MissingDigest {
        index: usize,
        pcr: u32,
        event_type: EventType,
        bank: &'static str,
    },
    #[error("event {index}: {what} is {len} bytes, more than a u32 length can state")]
    TooLarge {
        index: usize,
        what: &'static str,
        len: usize,
    },
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_sized(
    out: &mut Vec<u8>,
    index: usize,
    what: &'static str,
    data: &[u8],
) -> std::result::Result<(), WriteError> {
    let len = u32::try_from(data.len()).map_err(|_| WriteError::TooLarge {
        index,
        what,
        len: data.len(),
    })?;
    put_u32(out, len);
    out.extend_from_slice(data);
    Ok(())
}

/// The Spec ID header record (a `TCG_PCR_EVENT` in PCR 0 with a zero SHA-1 digest).
fn write_header(out: &mut Vec<u8>, spec_id: &SpecId) {
    let mut data = Vec::new();
    data.extend_from_slice(SPEC_ID_EVENT03);
    data.extend_from_slice(&spec_id.platform_class.to_le_bytes());
    data.push(spec_id.spec_version_minor);
    data.push(spec_id.spec_version_major);
    data.push(spec_id.errata);
    data.push(spec_id.uintn_size);
    put_u32(&mut data, spec_id.algorithms.len() as u32);
    for (alg, size) in &spec_id.algorithms {
        data.extend_from_slice(&alg.0.to_le_bytes());
        data.extend_from_slice(&size.to_le_bytes());
    }
    // vendorInfoSize is a u8: longer vendor info cannot be stated, so it is cut.
    let vendor = &spec_id.vendor_info[..spec_id.vendor_info.len().min(255)];
    data.push(vendor.len() as u8);
    data.extend_from_slice(vendor);
    put_u32(out, 0);
    put_u32(out, EventType::NO_ACTION.0);
    out.extend_from_slice(&[0; SHA1_SIZE]);
    put_u32(out, data.len() as u32);
    out.extend_from_slice(&data);
}

fn write_record(
    out: &mut Vec<u8>,
    index: usize,
    pcr: u32,
    event_type: u32,
    digests: &[(HashAlg, &[u8])],
    data: &[u8],
) -> std::result::Result<(), WriteError> {
    put_u32(out, pcr);
    put_u32(out, event_type);
    put_u32(out, digests.len() as u32);
    for (alg, digest) in digests {
        out.extend_from_slice(&alg.0.to_le_bytes());
        out.extend_from_slice(digest);
    }
    put_sized(out, index, "event data", data)
}

/// Write a crypto-agile log with SHA-256 and SHA-384 banks from events (absent data is written
/// as empty). Every event needs both digests: a record must carry every declared bank.
pub fn write(events: &[Event]) -> std::result::Result<Vec<u8>, WriteError> {
    let spec_id = SpecId::with_algorithms(vec![(HashAlg::SHA256, 32), (HashAlg::SHA384, 48)]);
    let mut out = Vec::new();
    write_header(&mut out, &spec_id);
    for (index, event) in events.iter().enumerate() {
        let missing = |bank| WriteError::MissingDigest {
            index,
            pcr: event.pcr,
            event_type: event.event_type,
            bank,
        };
        let sha256 = event.digests.sha256.ok_or_else(|| missing("sha256"))?;
        let sha384 = event.digests.sha384.ok_or_else(|| missing("sha384"))?;
        let digests = [
            (HashAlg::SHA256, &sha256[..]),
            (HashAlg::SHA384, &sha384[..]),
        ];
        let data = event.data.as_deref().unwrap_or(&[]);
        write_record(
            &mut out,
            index,
            event.pcr,
            event.event_type.0,
            &digests,
            data,
        )?;
    }
    Ok(out)
}

/// Write a parsed log back in its own format and banks: the Spec ID header it had (crypto-agile
/// logs) and every record's full digest list with its logged index, without the fill. TCG 1.2
/// logs are written as TCG 1.2 records.
pub fn write_log(log: &EventLog) -> std::result::Result<Vec<u8>, WriteError> {
    let mut out = Vec::new();
    match &log.spec_id {
        Some(spec_id) => {
            write_header(&mut out, spec_id);
            for (i, e) in log.events.iter().enumerate() {
                let digests: Vec<(HashAlg, &[u8])> =
                    e.digests.iter().map(|(a, d)| (*a, d.as_slice())).collect();
                let data = e.event.data.as_deref().unwrap_or(&[]);
                write_record(&mut out, i, e.index, e.event.event_type.0, &digests, data)?;
            }
        }
        None => {
            for (i, e) in log.events.iter().enumerate() {
                put_u32(&mut out, e.index);
                put_u32(&mut out, e.event.event_type.0);
                let sha1 = e
                    .digest(HashAlg::SHA1)
                    .filter(|d| d.len() == SHA1_SIZE)
                    .ok_or(WriteError::MissingDigest {
                        index: i,
                        pcr: e.index,
                        event_type: e.event.event_type,
                        bank: "sha1",
                    })?;
                out.extend_from_slice(sha1);
                put_sized(
                    &mut out,
                    i,
                    "event data",
                    e.event.data.as_deref().unwrap_or(&[]),
                )?;
            }
        }
    }
    Ok(out)
}
