//! Offline comparison: recorded evidence against a scenario's prediction, no guest booted.
//!
//! - vTPM: a results folder's `evidence/` (what the agent collected) is judged exactly as a live
//!   run would judge it.
//! - TDX: an event log (CCEL, TCG2 or dstack JSON) plus the TD's registers (quote or TDREPORT;
//!   a dstack JSON document carries its own quote). The log must replay to the registers
//!   (integrity); then events are aligned register by register with the TD prediction, and
//!   MRTD/RTMR0–2 are compared with the prediction.

use crate::compare;
use crate::prepare::Prepared;
use crate::report::{RegisterRow, ScenarioReport, Verdict};
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

    let builtin = crate::prepare::builtin_registers(prepared, page_order)?;
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
        let d = alignment
            .first_divergence()
            .expect("a divergence when events differ");
        let place = d
            .predicted
            .map(|i| &predicted[i])
            .or(d.actual.map(|j| &actual[j]))
            .and_then(Event::register)
            .map_or(format!("PCR{}", d.pcr), |r| r.to_string());
        (
            Verdict::Fail,
            Some(crate::run::divergence_reason(
                &alignment, d, &predicted, &actual, &place,
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

    /// The nightly TD lane's judge (`run::judge`, which `mrlab run --backend tdx` and e2e with
    /// `MRLAB_BACKEND=tdx` call on a TD's serial log) on a real TD's record as the agent writes
    /// it to the serial console: it reaches a verdict with the TD judge. The capture is a GCE
    /// COS disk boot on Google's firmware, not the scenario's VM, so the verdict is a fail that
    /// names the first diverging event and reports the TD's registers, not an error about a
    /// missing TPM log.
    #[test]
    fn td_record_is_judged_by_the_td_judge() {
        let root = images::workspace_root();
        let scenario =
            crate::scenario::Scenario::load(&root.join("scenarios/kernel-smoke.toml")).unwrap();
        let cache = images::Cache::open(&root).expect("image cache (run ci/setup-host.sh)");
        let prepared = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(crate::prepare::prepare(
                &scenario,
                &cache,
                measure::Platform::Tdx,
            ))
            .unwrap();
        let record = gce_td_record();
        let serial = format!(
            "[    1.0] boot noise\n{}\nreboot: Power down\n",
            agent::record::encode(&record)
        );
        let dir = tempfile::tempdir().unwrap();
        let report =
            crate::run::judge(&prepared, "kernel-smoke", serial.as_bytes(), dir.path()).unwrap();
        assert_eq!(report.backend, "tdx");
        assert_eq!(report.verdict, Verdict::Fail, "{:?}", report.reason);
        let first = report.first_divergence.as_ref().expect("first divergence");
        let label = first.label.as_deref().expect("a predicted event's label");
        let register = first.register.as_deref().expect("a register");
        assert!(["rtmr0", "rtmr1", "rtmr2"].contains(&register), "{first:?}");
        assert_eq!(
            report.reason.as_deref(),
            Some(
                format!(
                    "first divergence: {:?} `{label}` in {register}",
                    first.outcome
                )
                .as_str()
            )
        );
        assert!(report.events.matched > 0 && report.events.mismatched > 0);
        // The registers compared are the quote's.
        let actual: Vec<(&str, &str)> = report
            .registers
            .iter()
            .map(|r| (r.name.as_str(), r.actual.as_deref().unwrap()))
            .collect();
        // expected.json of the fixture: the quote's MRTD and RTMR0.
        assert_eq!(
            actual[0],
            ("mrtd", "dae67181d3d65e073ad8f95b7907d5e927bfe9761c9ff3e9b89734a45d8954dba41394c7717cb2735396c1d04231f94a")
        );
        assert_eq!(
            actual[1],
            ("rtmr0", "3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752afd17f6")
        );
        assert!(report.registers.iter().all(|r| !r.matches));
        // The same record read back from the results folder judges the same way.
        let again = crate::run::judge_record(
            &prepared,
            "kernel-smoke",
            &record_from_dir(dir.path()).unwrap(),
        )
        .unwrap();
        assert_eq!(again.verdict, Verdict::Fail);
        assert_eq!(again.reason, report.reason);

        // A vTPM record (no CCEL) given to the TD judge is an error that says what is missing.
        let mut vtpm = agent::record::Record::default();
        vtpm.push("tpm/binary_bios_measurements", vec![0u8; 8]);
        let err = crate::run::judge_record(&prepared, "kernel-smoke", &vtpm).unwrap_err();
        assert!(err.starts_with("no ccel/data"), "{err}");
    }
}
