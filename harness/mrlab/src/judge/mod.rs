//! Judge: prepared prediction + recorded evidence → a report with a verdict. Nothing here
//! boots, spawns or writes.

pub mod align;
mod td;
mod vtpm;

use crate::prepare::Prepared;
use crate::recorded::TdEvidence;
use crate::report::predictors::{PredictorReport, Status};
use crate::report::{Divergence, ScenarioReport, Verdict};
use align::Alignment;
use measure::tdvf::PageOrder;
use measure::{Event, Platform};
use std::fmt::Write as _;

pub use td::td_judgement;

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
/// log does not replay to the registers the guest reported) or a predictor that failed makes
/// the run an error; otherwise the first failing check, events before registers before fw_cfg
/// blobs before external predictors, makes it a fail. The predictors' lines follow the judge's.
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
    /// External predictors that failed or differ from the reference, in their rows' order.
    pub predictors: Vec<PredictorFinding>,
}

/// What an external predictor's row adds to the judgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PredictorFinding {
    /// It gave no result.
    Failed { name: String, error: String },
    /// These registers differ from the reference.
    Differs {
        name: String,
        registers: Vec<String>,
        reference: String,
    },
}

impl PredictorFinding {
    /// The finding of one predictor row, if it has one (a match, partial or unsupported row
    /// has none).
    pub fn of(row: &PredictorReport) -> Option<PredictorFinding> {
        match row.status {
            Status::Error => Some(PredictorFinding::Failed {
                name: row.name.clone(),
                error: row.error.clone().unwrap_or_default(),
            }),
            Status::Mismatch => Some(PredictorFinding::Differs {
                name: row.name.clone(),
                registers: row
                    .registers
                    .iter()
                    .filter(|r| r.matches == Some(false))
                    .map(|r| r.name.clone())
                    .collect(),
                reference: row.reference.clone(),
            }),
            Status::Match | Status::Partial | Status::Unsupported => None,
        }
    }

    fn line(&self) -> String {
        match self {
            PredictorFinding::Failed { name, error } => {
                format!("predictor `{name}` failed: {error}")
            }
            PredictorFinding::Differs {
                name,
                registers,
                reference,
            } => format!(
                "predictor `{name}`: {} differ{} from {reference}",
                registers.join(", "),
                if registers.len() == 1 { "s" } else { "" },
            ),
        }
    }
}

impl Findings {
    /// The verdict and its one-line reason.
    pub fn verdict(self) -> (Verdict, Option<String>) {
        let predictor_failed = self
            .predictors
            .iter()
            .any(|p| matches!(p, PredictorFinding::Failed { .. }));
        let (verdict, reason) = if !self.integrity.is_empty() {
            (Verdict::Error, Some(self.integrity.join("; ")))
        } else {
            match self.events.or(self.registers).or(self.blobs) {
                Some(reason) => (Verdict::Fail, Some(reason)),
                None if self.predictors.is_empty() => (Verdict::Pass, None),
                None => (Verdict::Fail, None),
            }
        };
        let verdict = if predictor_failed {
            Verdict::Error
        } else {
            verdict
        };
        let lines = reason
            .into_iter()
            .chain(self.predictors.iter().map(PredictorFinding::line))
            .collect::<Vec<_>>();
        (verdict, (!lines.is_empty()).then(|| lines.join("; ")))
    }
}

/// A judge's report and what it found. External predictors' rows are added to it
/// ([`Judgement::with_predictors`]); the verdict is derived once, from every finding, by
/// [`Judgement::report`].
#[derive(Debug)]
pub struct Judgement {
    /// The report but for its verdict and reason.
    report: ScenarioReport,
    findings: Findings,
}

impl Judgement {
    /// Add the external predictors' rows: each that failed or differs is a finding; each
    /// unsupported one, or register it could not compare, a note.
    pub fn with_predictors(mut self, rows: Vec<PredictorReport>) -> Judgement {
        for row in &rows {
            self.findings.predictors.extend(PredictorFinding::of(row));
            self.report.notes.extend(unsupported_notes(row));
        }
        self.report.predictors = rows;
        self
    }

    /// The report with its verdict.
    pub fn report(self) -> ScenarioReport {
        let mut report = self.report;
        (report.verdict, report.reason) = self.findings.verdict();
        report
    }
}

/// What a predictor could not predict, as report notes.
fn unsupported_notes(row: &PredictorReport) -> Vec<String> {
    match row.status {
        Status::Unsupported => vec![format!(
            "predictor `{}` unsupported: {}",
            row.name,
            row.unsupported.as_deref().unwrap_or("")
        )],
        Status::Partial => row
            .registers
            .iter()
            .filter(|r| r.unsupported.is_some())
            .map(|r| {
                format!(
                    "predictor `{}` {} not compared, unsupported: {}",
                    row.name,
                    r.name,
                    r.unsupported.as_deref().unwrap_or("")
                )
            })
            .collect(),
        Status::Match | Status::Mismatch | Status::Error => Vec::new(),
    }
}

/// Why evidence could not be judged at all (a judged difference is a finding, not an error):
/// the evidence is missing or unreadable, or the builtin registers could not be made.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error(transparent)]
    Evidence(#[from] crate::recorded::EvidenceError),
    #[error(transparent)]
    Prepare(#[from] crate::prepare::PrepareError),
    #[error("evidence record has no tpm/binary_bios_measurements: the guest saw no TPM event log")]
    NoTpmLog,
    #[error("evidence/tpm/binary_bios_measurements")]
    TpmLog(#[source] evidence::Error),
}

/// Judge an evidence record (decoded from a serial log, or read back from a results folder) by
/// the platform it was predicted for: a vTPM guest's TPM log, PCRs and fw_cfg blobs; a TD's
/// CCEL and registers (quote, else TDREPORT), with the MRTD page order of the VM's QEMU.
pub fn judgement(
    prepared: &Prepared,
    file: &str,
    record: &agent::record::Record,
) -> Result<Judgement, JudgeError> {
    match prepared.prediction.platform {
        Platform::Vtpm => vtpm::compare_vtpm(prepared, file, record),
        Platform::Tdx => {
            let td = TdEvidence::from_record(record)?;
            td_judgement(
                prepared,
                file,
                &td,
                prepared.resolved.quirks.mrtd_page_order,
            )
        }
    }
}

/// [`judgement`] without external predictors: the report with its verdict.
pub fn judge_record(
    prepared: &Prepared,
    file: &str,
    record: &agent::record::Record,
) -> Result<ScenarioReport, JudgeError> {
    judgement(prepared, file, record).map(Judgement::report)
}

/// [`td_judgement`] without external predictors: the report with its verdict.
pub fn diagnose_td(
    prepared: &Prepared,
    file: &str,
    evidence: &TdEvidence,
    page_order: PageOrder,
) -> Result<ScenarioReport, JudgeError> {
    td_judgement(prepared, file, evidence, page_order).map(Judgement::report)
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
        (None, Some(a)) => match measure::grub::logged_label(a) {
            Some(label) => format!("`{label}` (not predicted)"),
            None => format!("{} (not predicted)", a.event_type.name()),
        },
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
        label: p
            .map(|e| e.label.clone())
            .or_else(|| a.and_then(measure::grub::logged_label)),
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
            predictors: Vec::new(),
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

    fn predictor_row(status: Status, differing: &[&str]) -> PredictorReport {
        use crate::report::predictors::RegisterRow;
        PredictorReport {
            name: "p".into(),
            kind: "command".into(),
            reference: "builtin (vtpm-verified)".into(),
            status,
            error: (status == Status::Error).then(|| "boom".into()),
            unsupported: None,
            registers: ["mrtd", "rtmr1"]
                .into_iter()
                .map(|name| RegisterRow {
                    name: name.into(),
                    predicted: None,
                    reference: None,
                    matches: Some(!differing.contains(&name)),
                    unsupported: (status == Status::Partial && name == "rtmr1")
                        .then(|| "no".into()),
                })
                .collect(),
        }
    }

    fn passing() -> Judgement {
        let mut report = ScenarioReport::error("s", "s.toml", "vtpm", String::new(), 0.0);
        report.notes.push("from the judge".into());
        Judgement {
            report,
            findings: Findings::default(),
        }
    }

    #[test]
    fn predictor_rows_are_findings_of_the_one_verdict() {
        let report = passing().report();
        assert_eq!((report.verdict, report.reason), (Verdict::Pass, None));
        // A partial row is a note; a differing one makes a pass a fail, naming the registers.
        let report = passing()
            .with_predictors(vec![
                predictor_row(Status::Mismatch, &["rtmr1"]),
                predictor_row(Status::Partial, &[]),
            ])
            .report();
        assert_eq!(report.verdict, Verdict::Fail);
        assert_eq!(
            report.reason.as_deref(),
            Some("predictor `p`: rtmr1 differs from builtin (vtpm-verified)")
        );
        assert_eq!(report.notes[0], "from the judge");
        assert!(report.notes[1].contains("rtmr1 not compared"), "{report:?}");
        assert_eq!(report.predictors.len(), 2);
        // A failed predictor is an error, and its line follows the judge's own reason.
        let mut failing = passing();
        failing.findings.events = Some("first divergence".into());
        let report = failing
            .with_predictors(vec![
                predictor_row(Status::Mismatch, &["mrtd", "rtmr1"]),
                predictor_row(Status::Error, &[]),
            ])
            .report();
        assert_eq!(report.verdict, Verdict::Error);
        assert_eq!(
            report.reason.as_deref(),
            Some(
                "first divergence; predictor `p`: mrtd, rtmr1 differ from builtin \
                 (vtpm-verified); predictor `p` failed: boom"
            )
        );
        // A match adds nothing.
        let report = passing()
            .with_predictors(vec![predictor_row(Status::Match, &[])])
            .report();
        assert_eq!((report.verdict, report.reason), (Verdict::Pass, None));
    }
}
