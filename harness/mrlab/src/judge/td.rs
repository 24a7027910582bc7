//! The TD judge: the CCEL must replay to the TD's RTMRs, align register by register with the
//! TD prediction, and MRTD/RTMR0–2 must be the predicted ones.

use super::align;
use super::{divergence, divergence_reason, Findings, JudgeError, Judgement};
use crate::prepare::Prepared;
use crate::recorded::TdEvidence;
use crate::report::{RegisterRow, ScenarioReport};
use evidence::log::conventional_pcr;
use measure::tdvf::PageOrder;
use measure::{Event, Register};
use std::collections::BTreeSet;

/// Compare a TD's evidence with the TD prediction of `prepared`.
pub fn td_judgement(
    prepared: &Prepared,
    file: &str,
    evidence: &TdEvidence,
    page_order: PageOrder,
) -> Result<Judgement, JudgeError> {
    let integrity = replay_problems(evidence);
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
    let alignment = align::align(&predicted, &actual, &full);
    let registers = register_rows(prepared, evidence, page_order)?;

    let findings = Findings {
        integrity,
        events: alignment.first_divergence().map(|d| {
            let place = d
                .predicted
                .map(|i| &predicted[i])
                .or(d.actual.map(|j| &actual[j]))
                .and_then(Event::register)
                .map_or(format!("PCR{}", d.pcr), |r| r.to_string());
            divergence_reason(&alignment, d, &predicted, &actual, &place)
        }),
        registers: registers
            .iter()
            .find(|r| !r.matches)
            .map(|bad| format!("{} differs from the prediction", bad.name)),
        blobs: None,
        predictors: Vec::new(),
    };
    // Verdict and reason: derived from the findings by `Judgement::report`.
    let mut report = ScenarioReport::error(
        &prepared.resolved.scenario.name,
        file,
        "tdx",
        String::new(),
        0.0,
    );
    report.registers = registers;
    report.events = alignment.counts();
    report.first_divergence = alignment
        .first_divergence()
        .map(|d| divergence(d, &predicted, &actual));
    report.qemu_version = prepared.resolved.qemu_version.map(|v| v.to_string());
    report.ovmf_version = prepared.resolved.ovmf_version.map(|v| v.to_string());
    report.quirks = prepared
        .resolved
        .quirks
        .rows
        .iter()
        .map(|id| id.to_string())
        .collect();
    Ok(Judgement { report, findings })
}

/// Integrity: where the CCEL does not replay to the RTMRs the TD reported.
fn replay_problems(evidence: &TdEvidence) -> Vec<String> {
    let replayed = evidence.log.replay_rtmrs();
    let mut problems = Vec::new();
    for reg in [
        Register::Rtmr0,
        Register::Rtmr1,
        Register::Rtmr2,
        Register::Rtmr3,
    ] {
        if replayed.get(reg) != evidence.registers.get(reg) {
            problems.push(format!(
                "the event log does not replay to {reg} of the {}: log {} vs {}",
                evidence.source,
                hex::encode(replayed.get(reg)),
                hex::encode(evidence.registers.get(reg))
            ));
        }
    }
    problems
}

/// MRTD (from the firmware in `page_order`) and RTMR0–2 (folded from the prediction) against
/// the TD's.
fn register_rows(
    prepared: &Prepared,
    evidence: &TdEvidence,
    page_order: PageOrder,
) -> Result<Vec<RegisterRow>, JudgeError> {
    let builtin = crate::prepare::builtin_registers(prepared, page_order)?;
    let rows = [
        Register::Mrtd,
        Register::Rtmr0,
        Register::Rtmr1,
        Register::Rtmr2,
    ]
    .map(|reg| row(reg.name(), &builtin.get(reg), &evidence.registers.get(reg)));
    Ok(rows.to_vec())
}

fn row(name: &str, predicted: &[u8; 48], actual: &[u8; 48]) -> RegisterRow {
    RegisterRow {
        name: name.to_string(),
        predicted: Some(hex::encode(predicted)),
        actual: Some(hex::encode(actual)),
        matches: predicted == actual,
    }
}
