//! Recorded evidence: the agent's record as a results folder holds it (`evidence/`), written
//! after a boot and read back for an offline diagnosis, and a TD's evidence taken from a record.

use measure::Registers;
use std::path::{Path, PathBuf};

/// Why recorded evidence could not be read, saved or used: the folder, file or record entry is
/// named, the lower error is `source()`.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{}: cannot list the evidence folder", .dir.display())]
    List {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error("{}: no evidence (neither tpm/binary_bios_measurements nor ccel/data)", .0.display())]
    NoEvidence(PathBuf),
    /// `agent_said` is the agent's own account of what it could not read, or empty.
    #[error("no ccel/data: the guest exposed no CCEL ACPI table data{agent_said}")]
    NoCcel { agent_said: String },
    #[error("neither tdx/quote nor tdx/tdreport: no TD registers{agent_said}")]
    NoTdRegisters { agent_said: String },
    /// A recorded entry (`ccel/data`, `tdx/quote`, `tdx/tdreport`) that does not parse.
    #[error("{entry}")]
    Unparsable {
        entry: String,
        #[source]
        source: evidence::Error,
    },
    #[error("evidence record: entry name {0:?} is not a plain relative path")]
    EntryName(String),
    #[error("{}: cannot save evidence", .path.display())]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("evidence record has no {0}")]
    NoPcr(String),
    #[error("{entry}: not hex")]
    PcrNotHex {
        entry: String,
        #[source]
        source: hex::FromHexError,
    },
}

/// Read a results folder's `evidence/` back into a record.
pub fn record_from_dir(dir: &Path) -> Result<agent::record::Record, EvidenceError> {
    let base = if dir.join("evidence").is_dir() {
        dir.join("evidence")
    } else {
        dir.to_path_buf()
    };
    let mut record = agent::record::Record::default();
    let mut stack = vec![base.clone()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        let list = |source| EvidenceError::List {
            dir: d.clone(),
            source,
        };
        for entry in std::fs::read_dir(&d).map_err(list)? {
            let path = entry.map_err(list)?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let name = path
            .strip_prefix(&base)
            .expect("below base")
            .to_string_lossy()
            .into_owned();
        let data = crate::input::read(&path, crate::input::EVIDENCE)?;
        record.push(name, data);
    }
    if record.get(agent::record::TPM_EVENT_LOG_ENTRY).is_none()
        && record.get(agent::record::CCEL_DATA_ENTRY).is_none()
    {
        return Err(EvidenceError::NoEvidence(base));
    }
    Ok(record)
}

/// A TD's recorded evidence: its event log and the registers it reported.
pub struct TdEvidence {
    pub log: evidence::log::EventLog,
    /// MRTD and RTMR0–3 of the quote or TDREPORT.
    pub registers: Registers,
    /// Where the registers came from, for messages.
    pub source: String,
}

/// Register evidence of a TD: its bytes, the name its errors carry, and what messages call it.
pub struct Named<'a> {
    pub bytes: &'a [u8],
    pub name: String,
    pub source: String,
}

/// The one place that picks a TD's registers: the quote when there is one, else the TDREPORT;
/// `None` when there is neither. Gives the registers and where they came from. A quote or
/// TDREPORT that does not parse is an error naming it.
pub fn quote_else_tdreport(
    quote: Option<Named>,
    tdreport: Option<Named>,
) -> Option<Result<(Registers, String), EvidenceError>> {
    let unparsable = |entry: String| move |source| EvidenceError::Unparsable { entry, source };
    if let Some(q) = quote {
        return Some(
            evidence::quote::parse(q.bytes)
                .map(|quote| (quote.body.td.registers(), q.source))
                .map_err(unparsable(q.name)),
        );
    }
    let t = tdreport?;
    Some(
        evidence::tdreport::parse(t.bytes)
            .map(|report| (report.td.registers(), t.source))
            .map_err(unparsable(t.name)),
    )
}

impl TdEvidence {
    /// A TD's evidence from the agent's record: the CCEL log (`ccel/data`) and the registers of
    /// the quote (`tdx/quote`) or, without one, of the TDREPORT (`tdx/tdreport`). What is missing
    /// is an error that carries the agent's own account (`errors`).
    pub fn from_record(record: &agent::record::Record) -> Result<TdEvidence, EvidenceError> {
        let agent_said = || {
            record
                .get(agent::record::ERRORS_ENTRY)
                .map(|e| format!(" (agent: {})", String::from_utf8_lossy(e).trim()))
                .unwrap_or_default()
        };
        let data =
            record
                .get(agent::record::CCEL_DATA_ENTRY)
                .ok_or_else(|| EvidenceError::NoCcel {
                    agent_said: agent_said(),
                })?;
        let log = evidence::log::parse(data, evidence::log::Format::Ccel).map_err(|source| {
            EvidenceError::Unparsable {
                entry: agent::record::CCEL_DATA_ENTRY.to_string(),
                source,
            }
        })?;
        let named = |entry: &str, source: &str| {
            record.get(entry).map(|bytes| Named {
                bytes,
                name: entry.to_string(),
                source: source.to_string(),
            })
        };
        let quote = named(agent::record::QUOTE_ENTRY, "quote");
        let tdreport = named(agent::record::TDREPORT_ENTRY, "TDREPORT");
        let (registers, source) = quote_else_tdreport(quote, tdreport).unwrap_or_else(|| {
            Err(EvidenceError::NoTdRegisters {
                agent_said: agent_said(),
            })
        })?;
        Ok(TdEvidence {
            log,
            registers,
            source,
        })
    }
}

/// Writes each evidence entry to `dir/evidence/<name>`. The names come from the guest: one that
/// is not a plain relative path (absolute, `..`, `.`) is refused, not written.
pub fn save_evidence(dir: &Path, record: &agent::record::Record) -> Result<(), EvidenceError> {
    use std::path::Component;
    let base = dir.join("evidence");
    for (name, data) in &record.entries {
        let relative = Path::new(name);
        if name.is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(EvidenceError::EntryName(name.clone()));
        }
        let path = base.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| EvidenceError::Save {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, data).map_err(|source| EvidenceError::Save {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// PCR values as the guest's sysfs gave them (`tpm/pcr-<bank>/<n>`, hex text).
pub fn sysfs_pcr(
    record: &agent::record::Record,
    bank: &str,
    pcr: u32,
) -> Result<Vec<u8>, EvidenceError> {
    let name = agent::record::pcr_entry(bank, pcr);
    let Some(text) = record.get(&name) else {
        return Err(EvidenceError::NoPcr(name));
    };
    hex::decode(String::from_utf8_lossy(text).trim()).map_err(|source| EvidenceError::PcrNotHex {
        entry: name,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use measure::Register;

    fn fixture(path: &str) -> Vec<u8> {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/").to_string() + path;
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// The real GCE TD capture (COS 113), packed as the agent would record it.
    fn gce_td_record() -> agent::record::Record {
        let mut record = agent::record::Record::default();
        record.push(
            "ccel/data",
            fixture("tdx-ccel/go-tdx-guest-cos-113/ccel_data.dat"),
        );
        record.push(
            "tdx/quote",
            fixture("tdx-ccel/go-tdx-guest-cos-113/cos-113-tdx-quote.dat"),
        );
        record
    }

    /// The quote's registers and the CCEL's replay must be the fixture's expected RTMRs.
    #[test]
    fn td_evidence_from_a_recorded_capture() {
        let record = gce_td_record();
        let td = TdEvidence::from_record(&record).unwrap();
        assert_eq!(td.source, "quote");
        let rtmr0 = "3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752afd17f6";
        assert_eq!(hex::encode(td.registers.get(Register::Rtmr0)), rtmr0);
        assert_eq!(
            hex::encode(td.log.replay_rtmrs().get(Register::Rtmr0)),
            rtmr0
        );
        // expected.json: 44 records, the Spec ID header and 16 + 7 + 20 measurements.
        assert_eq!(td.log.events.len(), 16 + 7 + 20);
    }

    #[test]
    fn missing_td_evidence_is_an_error_with_the_agents_account() {
        let mut record = agent::record::Record::default();
        record.push(
            "errors",
            b"tdx/tdreport: /dev/tdx_guest: not found\n".to_vec(),
        );
        let err = crate::error::chain(&TdEvidence::from_record(&record).err().unwrap());
        assert!(
            err.contains("no ccel/data") && err.contains("/dev/tdx_guest"),
            "{err}"
        );
        record.push(
            "ccel/data",
            fixture("tdx-ccel/go-tdx-guest-cos-113/ccel_data.dat"),
        );
        let err = crate::error::chain(&TdEvidence::from_record(&record).err().unwrap());
        assert!(err.contains("neither tdx/quote nor tdx/tdreport"), "{err}");
        record.push("tdx/tdreport", vec![0; 10]);
        let err = crate::error::chain(&TdEvidence::from_record(&record).err().unwrap());
        assert!(err.starts_with("tdx/tdreport: "), "{err}");
    }

    #[test]
    fn evidence_names_from_the_guest_cannot_leave_the_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("scenario");
        for bad in ["../x", "/abs", "a/../../x", "./x", ""] {
            let mut record = agent::record::Record::default();
            record.push("tpm/ok", "fine");
            record.push(bad, "escaped");
            let e = save_evidence(&dir, &record).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("evidence record: entry name {bad:?} is not a plain relative path")
            );
        }
        // Only the good entries of the first record, inside the folder, were written.
        assert_eq!(
            std::fs::read_to_string(dir.join("evidence/tpm/ok")).unwrap(),
            "fine"
        );
        assert!(!root.path().join("x").exists());
    }
}
