//! Judge: prepared prediction + recorded evidence → a report with a verdict. Nothing here
//! boots, spawns or writes.

pub mod align;
mod td;
mod vtpm;

use crate::prepare::Prepared;
use crate::recorded::TdEvidence;
use crate::report::{Divergence, ScenarioReport, Verdict};
use align::Alignment;
use measure::{Event, Platform};
use std::fmt::Write as _;

pub use td::diagnose_td;

/// Leaves in `prepared` only the oracle's fw_cfg files a judge reads ([`judge_record`]): the
/// rest (the `-kernel` items and the files newer QEMUs add beside them are 8 to 30 MiB a
/// scenario) served the prediction and would otherwise be held through the whole boot, once
/// for each scenario that runs at once.
pub fn keep_judged_oracle_files(prepared: &mut Prepared) {
    prepared
        .oracle
        .retain(|name, _| vtpm::CROSS_CHECKED_FW_CFG.contains(&name.as_str()));
}

/// What a judge found, by kind. The verdict comes from here alone: an integrity problem (the
/// log does not replay to the registers the guest reported) makes the run an error; otherwise
/// the first failing check, events before registers before fw_cfg blobs, makes it a fail.
#[derive(Debug, Default)]
pub struct Findings {
    /// Each way the log fails to replay to the reported registers.
    pub integrity: Vec<String>,
    /// The first divergence of the event alignment, as one line, when events differ.
    pub events: Option<String>,
    /// Which registers differ from the prediction, as one line.
    pub registers: Option<String>,
    /// Which fw_cfg blobs differ between the oracle and the guest, as one line.
    pub blobs: Option<String>,
}

impl Findings {
    /// The verdict and its one-line reason.
    pub fn verdict(self) -> (Verdict, Option<String>) {
        if !self.integrity.is_empty() {
            return (Verdict::Error, Some(self.integrity.join("; ")));
        }
        match self.events.or(self.registers).or(self.blobs) {
            Some(reason) => (Verdict::Fail, Some(reason)),
            None => (Verdict::Pass, None),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_takes_integrity_then_events_then_registers_then_blobs() {
        let line = |s: &str| Some(s.to_string());
        assert_eq!(Findings::default().verdict(), (Verdict::Pass, None));
        let all = || Findings {
            integrity: vec!["no replay".into(), "nor here".into()],
            events: line("first divergence"),
            registers: line("registers differ: pcr7:sha256"),
            blobs: line("fw_cfg blobs differ"),
        };
        assert_eq!(
            all().verdict(),
            (Verdict::Error, line("no replay; nor here"))
        );
        let mut f = all();
        f.integrity.clear();
        assert_eq!(f.verdict(), (Verdict::Fail, line("first divergence")));
        let mut f = all();
        (f.integrity, f.events) = (Vec::new(), None);
        assert_eq!(
            f.verdict(),
            (Verdict::Fail, line("registers differ: pcr7:sha256"))
        );
        let f = Findings {
            blobs: line("fw_cfg blobs differ"),
            ..Findings::default()
        };
        assert_eq!(f.verdict(), (Verdict::Fail, line("fw_cfg blobs differ")));
    }
}
