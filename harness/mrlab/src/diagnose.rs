//! Offline comparison: recorded evidence against a scenario's prediction, no guest booted.
//!
//! - vTPM: a results folder's `evidence/` (what the agent collected) is judged exactly as a live
//!   run would judge it.
//! - TDX: an event log (CCEL, TCG2 or dstack JSON) plus the TD's registers (quote or TDREPORT;
//!   a dstack JSON document carries its own quote). The log must replay to the registers
//!   (integrity); then events are aligned register by register with the TD prediction, and
//!   MRTD/RTMR0–2 are compared with the prediction.

use crate::compare;
use crate::report::{RegisterRow, ScenarioReport, Verdict};
use crate::run::Prepared;
use evidence::log::conventional_pcr;
use measure::tdvf::PageOrder;
use measure::{Event, Register};
use std::collections::BTreeSet;
use std::path::Path;

/// Read a results folder's `evidence/` back into a record.
pub fn record_from_dir(dir: &Path) -> Result<agent::record::Record, String> {
    let base = if dir.join("evidence").is_dir() {
        dir.join("evidence")
    } else {
        dir.to_path_buf()
    };
    let mut record = agent::record::Record::default();
    let mut stack = vec![base.clone()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let path = entry.map_err(|e| format!("{}: {e}", d.display()))?.path();
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
    if record.get("tpm/binary_bios_measurements").is_none() && record.get("ccel/data").is_none() {
        return Err(format!(
            "{}: no evidence (neither tpm/binary_bios_measurements nor ccel/data)",
            base.display()
        ));
    }
    Ok(record)
}

/// A TD's recorded evidence: its event log and the registers it reported.
pub struct TdEvidence {
    pub log: evidence::log::EventLog,
    pub mrtd: [u8; 48],
    pub rtmrs: [[u8; 48]; 4],
    /// Where the registers came from, for messages.
    pub source: String,
}

/// Compare a TD's evidence with the TD prediction of `prepared`.
pub fn diagnose_td(
    prepared: &Prepared,
    file: &str,
    evidence: &TdEvidence,
    page_order: PageOrder,
) -> Result<ScenarioReport, String> {
    let replayed = evidence.log.replay_rtmrs();
    let mut problems = Vec::new();
    for (i, reg) in [
        Register::Rtmr0,
        Register::Rtmr1,
        Register::Rtmr2,
        Register::Rtmr3,
    ]
    .into_iter()
    .enumerate()
    {
        if replayed.get(reg) != evidence.rtmrs[i] {
            problems.push(format!(
                "the event log does not replay to {reg} of the {}: log {} vs {}",
                evidence.source,
                hex::encode(replayed.get(reg)),
                hex::encode(evidence.rtmrs[i])
            ));
        }
    }

    // Align register by register: predicted events take the conventional PCR of their register,
    // as log events from a CCEL do.
    let predicted: Vec<Event> = prepared
        .prediction
        .events
        .iter()
        .filter_map(|e| {
            let reg = e.register().filter(|r| *r != Register::Mrtd)?;
            Some(Event {
                pcr: conventional_pcr(reg),
                ..e.clone()
            })
        })
        .collect();
    let actual: Vec<Event> = evidence
        .log
        .events
        .iter()
        .map(|e| e.event.clone())
        .collect();
    let full: BTreeSet<u32> = [Register::Rtmr0, Register::Rtmr1, Register::Rtmr2]
        .into_iter()
        .map(conventional_pcr)
        .collect();
    let alignment = compare::align(&predicted, &actual, &full);
    let counts = alignment.counts();

    let builtin = crate::predictor::builtin_registers(prepared, page_order)?;
    let mut registers = vec![row("mrtd", &builtin.mrtd, &evidence.mrtd)];
    for (i, reg) in [Register::Rtmr0, Register::Rtmr1, Register::Rtmr2]
        .into_iter()
        .enumerate()
    {
        registers.push(row(reg.name(), &builtin.rtmr[i], &evidence.rtmrs[i]));
    }

    let first_divergence = alignment
        .first_divergence()
        .map(|d| crate::run::divergence(d, &predicted, &actual));
    let events_ok = counts.mismatched == 0 && counts.missing == 0 && counts.unexpected == 0;
    let (verdict, reason) = if !problems.is_empty() {
        (Verdict::Error, Some(problems.join("; ")))
    } else if !events_ok {
        let d = first_divergence
            .as_ref()
            .expect("a divergence when events differ");
        (
            Verdict::Fail,
            Some(format!(
                "first divergence: {:?} `{}` in {}",
                d.outcome,
                d.label.clone().unwrap_or_else(|| "(unpredicted)".into()),
                d.register.clone().unwrap_or_default()
            )),
        )
    } else if let Some(bad) = registers.iter().find(|r| !r.matches) {
        (
            Verdict::Fail,
            Some(format!("{} differs from the prediction", bad.name)),
        )
    } else {
        (Verdict::Pass, None)
    };
    let mut report = ScenarioReport::error(
        &prepared.resolved.scenario.name,
        file,
        "tdx",
        String::new(),
        0.0,
    );
    report.verdict = verdict;
    report.reason = reason;
    report.registers = registers;
    report.events = counts;
    report.first_divergence = first_divergence;
    report.qemu_version = prepared.resolved.qemu_version.map(|v| v.to_string());
    report.ovmf_version = prepared.resolved.ovmf_version.map(|v| v.to_string());
    Ok(report)
}

fn row(name: &str, predicted: &[u8; 48], actual: &[u8; 48]) -> RegisterRow {
    RegisterRow {
        name: name.to_string(),
        predicted: Some(hex::encode(predicted)),
        actual: Some(hex::encode(actual)),
        matches: predicted == actual,
    }
}

impl TdEvidence {
    /// A TD's evidence from the agent's record: the CCEL log (`ccel/data`) and the registers of
    /// the quote (`tdx/quote`) or, without one, of the TDREPORT (`tdx/tdreport`). What is missing
    /// is an error that carries the agent's own account (`errors`).
    pub fn from_record(record: &agent::record::Record) -> Result<TdEvidence, String> {
        let agent_said = || {
            record
                .get("errors")
                .map(|e| format!(" (agent: {})", String::from_utf8_lossy(e).trim()))
                .unwrap_or_default()
        };
        let data = record.get("ccel/data").ok_or_else(|| {
            format!(
                "no ccel/data: the guest exposed no CCEL ACPI table data{}",
                agent_said()
            )
        })?;
        let log = evidence::log::parse(data, evidence::log::Format::Ccel)
            .map_err(|e| format!("ccel/data: {e}"))?;
        let (mrtd, rtmrs, source) = if let Some(q) = record.get("tdx/quote") {
            let quote = evidence::quote::parse(q).map_err(|e| format!("tdx/quote: {e}"))?;
            (quote.body.mrtd, quote.body.rtmrs, "quote")
        } else if let Some(r) = record.get("tdx/tdreport") {
            let report = evidence::tdreport::parse(r).map_err(|e| format!("tdx/tdreport: {e}"))?;
            (report.mrtd, report.rtmrs, "TDREPORT")
        } else {
            return Err(format!(
                "neither tdx/quote nor tdx/tdreport: no TD registers{}",
                agent_said()
            ));
        };
        Ok(TdEvidence {
            log,
            mrtd,
            rtmrs,
            source: source.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use measure::Register;

    fn fixture(path: &str) -> Vec<u8> {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/").to_string() + path;
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// The real GCE TD capture, packed as the agent would record it: the quote's registers and
    /// the CCEL's replay must be the fixture's expected RTMRs.
    #[test]
    fn td_evidence_from_a_recorded_capture() {
        let mut record = agent::record::Record::default();
        record.push(
            "ccel/data",
            fixture("tdx-ccel/go-tdx-guest-cos-113/ccel_data.dat"),
        );
        record.push(
            "tdx/quote",
            fixture("tdx-ccel/go-tdx-guest-cos-113/cos-113-tdx-quote.dat"),
        );
        let td = TdEvidence::from_record(&record).unwrap();
        assert_eq!(td.source, "quote");
        let rtmr0 = "3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752afd17f6";
        assert_eq!(hex::encode(td.rtmrs[0]), rtmr0);
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
        let err = TdEvidence::from_record(&record).err().unwrap();
        assert!(
            err.contains("no ccel/data") && err.contains("/dev/tdx_guest"),
            "{err}"
        );
        record.push(
            "ccel/data",
            fixture("tdx-ccel/go-tdx-guest-cos-113/ccel_data.dat"),
        );
        let err = TdEvidence::from_record(&record).err().unwrap();
        assert!(err.contains("neither tdx/quote nor tdx/tdreport"), "{err}");
        record.push("tdx/tdreport", vec![0; 10]);
        let err = TdEvidence::from_record(&record).err().unwrap();
        assert!(err.starts_with("tdx/tdreport:"), "{err}");
    }
}
