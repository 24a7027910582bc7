//! The vTPM judge: the guest's TPM log must replay to its PCRs, align with the prediction,
//! fold to the predicted PCRs, and the ACPI and boot-order blobs must be the oracle's.

use super::align::{self, Alignment};
use super::{divergence, divergence_reason, Findings, JudgeError, Judgement};
use crate::prepare::{fold_pcr, Prepared};
use crate::recorded::sysfs_pcr;
use crate::report::{
    EventRow, NotCheckable, Outcome, RegisterRow, ScenarioReport, TdxEvents, UnpredictedPcr,
    Verdict,
};
use measure::predict::Prediction;
use measure::Event;

/// fw_cfg files the guest must read exactly as the oracle serves them (ACPI and boot order).
pub const CROSS_CHECKED_FW_CFG: &[&str] = &[
    "etc/acpi/rsdp",
    "etc/acpi/tables",
    "etc/table-loader",
    "bootorder",
];

const IMA_PCR: u32 = 10;

/// Compare a vTPM boot's evidence with the prediction.
pub(super) fn compare_vtpm(
    prepared: &Prepared,
    file: &str,
    record: &agent::record::Record,
) -> Result<Judgement, JudgeError> {
    let (scenario, resolved, prediction) = (
        &prepared.resolved.scenario,
        &prepared.resolved,
        &prepared.prediction,
    );
    let mut notes: Vec<String> = record
        .errors()
        .iter()
        .map(|e| format!("agent: {e}"))
        .collect();
    let log = tpm_log(record)?;
    // Every event of the log is judged but those the prediction declares it does not model.
    let actual: Vec<Event> = log
        .measure_events()
        .into_iter()
        .filter(|e| prediction.judges(e))
        .collect();

    let alignment = align_judged(prediction, &actual);
    let counts = alignment.counts();
    let integrity = replay_problems(&log, record)?;
    let registers = pcr_rows(prediction, record)?;
    let acpi_blobs = blob_rows(&prepared.oracle, record);

    let tdx_events = match &prepared.td_events {
        Ok(td_events) => Some(tdx_events(td_events, prediction, &alignment)),
        Err(e) => {
            notes.push(format!("no TD prediction to count TD events against: {e}"));
            None
        }
    };

    let first_divergence = alignment
        .first_divergence()
        .map(|d| divergence(d, &prediction.events, &actual));
    let findings = findings(
        integrity,
        &alignment,
        &prediction.events,
        &actual,
        &registers,
        &acpi_blobs,
    );
    let report = ScenarioReport {
        name: scenario.name.clone(),
        file: file.to_string(),
        backend: "vtpm".into(),
        // Derived from the findings by `Judgement::report`.
        verdict: Verdict::Error,
        reason: None,
        registers,
        events: counts,
        first_divergence,
        tdx_events,
        unpredicted_pcrs: unpredicted_pcrs(prediction),
        acpi_blobs,
        qemu_version: resolved.qemu_version.map(|v| v.to_string()),
        ovmf_version: resolved.ovmf_version.map(|v| v.to_string()),
        quirks: resolved
            .quirks
            .rows
            .iter()
            .map(|id| id.to_string())
            .collect(),
        duration_s: 0.0,
        notes,
        event_rows: event_rows(&alignment, prediction, &actual),
        predictors: Vec::new(),
    };
    Ok(Judgement { report, findings })
}

/// The predicted and logged events aligned, PCR by PCR, over the PCRs the prediction judges
/// (those it predicts whole and those it declares unpredicted).
fn align_judged(prediction: &Prediction, actual: &[Event]) -> Alignment {
    let judged_pcrs = prediction
        .full_pcrs
        .iter()
        .copied()
        .chain(prediction.unpredicted.iter().map(|u| u.pcr))
        .collect();
    align::align(&prediction.events, actual, &judged_pcrs)
}

/// The PCRs the prediction declares it cannot predict, and why.
fn unpredicted_pcrs(prediction: &Prediction) -> Vec<UnpredictedPcr> {
    prediction
        .unpredicted
        .iter()
        .map(|u| UnpredictedPcr {
            pcr: u.pcr,
            reason: u.reason.clone(),
        })
        .collect()
}

/// The guest's TPM event log from its record.
fn tpm_log(record: &agent::record::Record) -> Result<evidence::log::EventLog, JudgeError> {
    let log_bytes = record
        .get(agent::record::TPM_EVENT_LOG_ENTRY)
        .ok_or(JudgeError::NoTpmLog)?;
    evidence::log::parse(log_bytes, evidence::log::Format::Tcg2).map_err(JudgeError::TpmLog)
}

/// What the vTPM judge found: integrity, the first divergence, registers and blobs that differ.
fn findings(
    integrity: Vec<String>,
    alignment: &Alignment,
    predicted: &[Event],
    actual: &[Event],
    registers: &[RegisterRow],
    acpi_blobs: &[RegisterRow],
) -> Findings {
    Findings {
        integrity,
        events: alignment
            .first_divergence()
            .map(|d| divergence_reason(alignment, d, predicted, actual, &format!("PCR{}", d.pcr))),
        registers: differing(registers).map(|bad| format!("registers differ: {bad}")),
        blobs: differing(acpi_blobs)
            .map(|bad| format!("fw_cfg blobs differ between oracle and guest: {bad}")),
        predictors: Vec::new(),
    }
}

/// Integrity: where the log does not replay to the PCRs the TPM reports, in either bank.
fn replay_problems(
    log: &evidence::log::EventLog,
    record: &agent::record::Record,
) -> Result<Vec<String>, JudgeError> {
    let mut problems = Vec::new();
    for bank in log.replay_pcrs() {
        let name = match bank.alg.name().as_str() {
            "sha256" => "sha256",
            "sha384" => "sha384",
            _ => continue,
        };
        // PCR10 belongs to the kernel's IMA, which logs to its own list, not the firmware log.
        for pcr in (0..16u32).filter(|&p| p != IMA_PCR) {
            let reported = sysfs_pcr(record, name, pcr)?;
            if reported != bank.pcrs[pcr as usize] {
                problems.push(format!(
                    "event log does not replay to the TPM's PCR{pcr} ({name}): log {} vs TPM {}",
                    hex::encode(&bank.pcrs[pcr as usize]),
                    hex::encode(&reported)
                ));
            }
        }
    }
    Ok(problems)
}

/// Every fully predicted PCR, folded from predicted events (zero when none lands in it), against
/// the TPM, in both banks.
fn pcr_rows(
    prediction: &Prediction,
    record: &agent::record::Record,
) -> Result<Vec<RegisterRow>, JudgeError> {
    let mut registers = Vec::new();
    for &pcr in &prediction.full_pcrs {
        for bank in ["sha256", "sha384"] {
            let predicted = fold_pcr(&prediction.events, pcr, bank);
            let actual = sysfs_pcr(record, bank, pcr)?;
            registers.push(RegisterRow {
                name: format!("pcr{pcr}:{bank}"),
                matches: predicted == actual,
                predicted: Some(hex::encode(&predicted)),
                actual: Some(hex::encode(&actual)),
            });
        }
    }
    Ok(registers)
}

/// ACPI and boot order: the oracle's bytes must be what the guest read.
fn blob_rows(
    oracle: &std::collections::BTreeMap<String, Vec<u8>>,
    record: &agent::record::Record,
) -> Vec<RegisterRow> {
    CROSS_CHECKED_FW_CFG
        .iter()
        .map(|name| {
            let predicted = oracle.get(*name);
            let actual = record.get(&agent::record::fw_cfg_entry(name));
            RegisterRow {
                name: name.to_string(),
                predicted: predicted.map(|b| sha384_hex(b)),
                actual: actual.map(sha384_hex),
                matches: predicted.is_some()
                    && actual.is_some()
                    && predicted.map(Vec::as_slice) == actual,
            }
        })
        .collect()
}

/// The names of the rows that do not match, joined, if any.
fn differing(rows: &[RegisterRow]) -> Option<String> {
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| !r.matches)
        .map(|r| r.name.as_str())
        .collect();
    (!bad.is_empty()).then(|| bad.join(", "))
}

/// Every event of the TD prediction: checked when the same event (by label, in order) of the
/// vTPM prediction matched the log; not checkable when a vTPM boot does not log it.
fn tdx_events(td_events: &[Event], prediction: &Prediction, alignment: &Alignment) -> TdxEvents {
    let matched_events: Vec<Event> = alignment
        .entries
        .iter()
        .filter(|e| e.outcome == Outcome::Matched)
        .filter_map(|e| e.predicted)
        .map(|i| prediction.events[i].clone())
        .collect();
    let verification = measure::verification::td_statuses(
        td_events,
        &matched_events,
        &crate::verification::captured_td_events(&images::workspace_root()),
    )
    .into_iter()
    .zip(td_events)
    .map(|(status, event)| crate::report::EventVerification {
        label: event.label.clone(),
        register: event.register().map(|r| r.to_string()),
        status: status.as_str(),
    })
    .collect();
    let mut matched: Vec<&str> = matched_events
        .iter()
        .filter(|e| e.platforms.tdx)
        .map(|e| e.label.as_str())
        .collect();
    let mut checked = 0;
    let mut not_checkable = Vec::new();
    for event in td_events {
        if !event.platforms.vtpm {
            not_checkable.push(NotCheckable {
                label: event.label.clone(),
                register: event.register().map(|r| r.to_string()),
                reason: td_only_reason(&event.label).to_string(),
            });
        } else if let Some(k) = matched.iter().position(|l| *l == event.label) {
            matched.remove(k);
            checked += 1;
        }
    }
    TdxEvents {
        total: td_events.len(),
        checked,
        not_checkable,
        verification,
    }
}

/// Why a vTPM boot does not log a TD event.
fn td_only_reason(label: &str) -> &'static str {
    match label {
        "td_hob" => "TD-only: the TD HOB, measured into RTMR0 by TdxHelperLib",
        "cfv" => "TD-only: the configuration firmware volume, measured into RTMR0 by TdxHelperLib",
        l if l.starts_with("acpi:") => {
            "this OVMF measures fw_cfg ACPI blobs only in a TD (quirk ovmf-acpi-measured-with-tpm \
             not in force); on vtpm the blob's bytes are compared with the oracle instead"
        }
        _ => "TD-only event",
    }
}

fn event_rows(alignment: &Alignment, prediction: &Prediction, actual: &[Event]) -> Vec<EventRow> {
    alignment
        .entries
        .iter()
        .map(|entry| {
            let p = entry.predicted.map(|i| &prediction.events[i]);
            let a = entry.actual.map(|j| &actual[j]);
            let e = p.or(a).expect("an entry has at least one side");
            EventRow {
                outcome: entry.outcome,
                pcr: entry.pcr,
                register: e.register().map(|r| r.to_string()),
                event_type: e.event_type.name().to_string(),
                label: p
                    .map(|e| e.label.clone())
                    .or_else(|| a.and_then(measure::grub::logged_label)),
                sha384: a.or(p).and_then(|e| e.digests.sha384_hex()),
                varies_with_agent: p
                    .is_some_and(|e| e.varies_with.contains(&measure::Input::Initrd)),
            }
        })
        .collect()
}

fn sha384_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha384::digest(bytes))
}
