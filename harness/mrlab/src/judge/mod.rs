//! Judge: prepared prediction + recorded evidence → a report with a verdict. Nothing here
//! boots, spawns or writes.

pub mod align;
mod td;
mod vtpm;

use crate::prepare::Prepared;
use crate::recorded::TdEvidence;
use crate::report::{Divergence, ScenarioReport};
use align::Alignment;
use measure::{Event, Platform};
use std::fmt::Write as _;

pub use td::diagnose_td;

/// Judge an evidence record (decoded from a serial log, or read back from a results folder) by
/// the platform it was predicted for: a vTPM guest's TPM log, PCRs and fw_cfg blobs; a TD's
/// CCEL and registers (quote, else TDREPORT), with the MRTD page order of the VM's QEMU.
pub fn judge_record(
    prepared: &Prepared,
    file: &str,
    record: &agent::record::Record,
) -> Result<ScenarioReport, String> {
    match prepared.prediction.platform {
        Platform::Vtpm => vtpm::compare_vtpm(prepared, file, record),
        Platform::Tdx => {
            let td = TdEvidence::from_record(record)?;
            diagnose_td(
                prepared,
                file,
                &td,
                prepared.resolved.quirks.mrtd_page_order,
            )
        }
    }
}

/// One line naming the first divergence: its outcome, the event, where (`place`), and for a
/// mismatch which digest banks differ; an event present but out of order says so.
pub fn divergence_reason(
    alignment: &Alignment,
    entry: &align::Entry,
    predicted: &[Event],
    actual: &[Event],
    place: &str,
) -> String {
    let p = entry.predicted.map(|i| &predicted[i]);
    let a = entry.actual.map(|j| &actual[j]);
    // A swapped pair shows as one unexpected and one missing entry of the same event.
    let misplaced = alignment
        .out_of_order(entry, predicted, actual)
        .and_then(|other| entry.predicted.or(other.predicted))
        .map(|i| &predicted[i]);
    let event = match (p.or(misplaced), a) {
        (Some(p), _) => format!("`{}`", p.label),
        (None, Some(a)) => format!("{} (not predicted)", a.event_type.name()),
        (None, None) => "(no event)".to_string(),
    };
    let mut reason = format!("first divergence: {:?} {event} in {place}", entry.outcome);
    if let (Some(p), Some(a)) = (p, a) {
        let differences = what_differs(p, a);
        if !differences.is_empty() {
            let _ = write!(reason, " ({} differs)", differences.join(" and "));
        }
    }
    if misplaced.is_some() {
        reason.push_str(": logged, but out of order");
    }
    reason
}

/// What differs between two events standing in the same place: digest banks (a bank only one
/// side has is not compared) and the event type.
fn what_differs(predicted: &Event, actual: &Event) -> Vec<&'static str> {
    let (p, a) = (&predicted.digests, &actual.digests);
    let mut differences = Vec::new();
    if matches!((p.sha256, a.sha256), (Some(x), Some(y)) if x != y) {
        differences.push("sha256");
    }
    if matches!((p.sha384, a.sha384), (Some(x), Some(y)) if x != y) {
        differences.push("sha384");
    }
    if predicted.event_type != actual.event_type {
        differences.push("event type");
    }
    differences
}

/// The report's view of one unmatched alignment entry; `predicted` and `actual` are the slices
/// the alignment indexes.
pub fn divergence(entry: &align::Entry, predicted: &[Event], actual: &[Event]) -> Divergence {
    let p = entry.predicted.map(|i| &predicted[i]);
    let a = entry.actual.map(|j| &actual[j]);
    let any = p.or(a).expect("an entry has at least one side");
    Divergence {
        outcome: entry.outcome,
        label: p.map(|e| e.label.clone()),
        pcr: entry.pcr,
        register: any.register().map(|r| r.to_string()),
        event_type: any.event_type.name().to_string(),
        predicted_digest: p.and_then(|e| e.digests.sha384_hex()),
        actual_digest: a.and_then(|e| e.digests.sha384_hex()),
        predicted_data: p.map(evidence::decode::describe),
        actual_data: a.map(evidence::decode::describe),
        varies_with: p.map(|e| e.varies_with.clone()).unwrap_or_default(),
    }
}
