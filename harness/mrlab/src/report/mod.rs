//! Reports: the model every stage fills in (a leaf: it imports nothing of this crate), then its
//! renderings: the JSON contract (`report.json`, fields below), a markdown summary and JUnit XML.

mod json;
mod junit;
mod markdown;
pub mod predictors;

pub use json::{json, Report};
pub use junit::junit;
pub use markdown::{markdown, predictor_summary};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Error,
    /// The host cannot run this scenario (e.g. no /dev/vhost-vsock); never counted as a pass.
    Skip,
}

/// How one predicted or logged event came out of the alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Matched,
    Mismatched,
    Missing,
    Unexpected,
}

/// How many events came out with each [`Outcome`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub matched: usize,
    pub mismatched: usize,
    pub missing: usize,
    pub unexpected: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct RegisterRow {
    pub name: String,
    pub predicted: Option<String>,
    pub actual: Option<String>,
    #[serde(rename = "match")]
    pub matches: bool,
}

/// The first event where reality and prediction part.
#[derive(Clone, Debug, Serialize)]
pub struct Divergence {
    pub outcome: Outcome,
    pub label: Option<String>,
    pub pcr: u32,
    pub register: Option<String>,
    pub event_type: String,
    pub predicted_digest: Option<String>,
    pub actual_digest: Option<String>,
    pub predicted_data: Option<String>,
    pub actual_data: Option<String>,
    pub varies_with: Vec<measure::Input>,
}

/// One aligned event, for the snapshot and for humans.
#[derive(Clone, Debug, Serialize)]
pub struct EventRow {
    pub outcome: Outcome,
    pub pcr: u32,
    pub register: Option<String>,
    #[serde(rename = "type")]
    pub event_type: String,
    pub label: Option<String>,
    pub sha384: Option<String>,
    /// The digest depends on the harness's own initramfs (the initrd, or the kernel header that
    /// records its size): snapshots show that instead of the digest.
    pub varies_with_agent: bool,
}

/// Every event of a VM's TD prediction, counted against what a vTPM boot of it could check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TdxEvents {
    /// Events in the TD prediction of this VM.
    pub total: usize,
    /// Of those, the ones this boot's log matched.
    pub checked: usize,
    /// Of those, the ones a vTPM boot does not log at all, each with why.
    pub not_checkable: Vec<NotCheckable>,
    /// Every TD event with how far it has been checked: `verified-vtpm` (this boot matched
    /// it), `verified-capture` (equal to a real TD log in harness/fixtures) or `unverified`.
    pub verification: Vec<EventVerification>,
}

/// One TD event's verification status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventVerification {
    pub label: String,
    pub register: Option<String>,
    pub status: &'static str,
}

impl TdxEvents {
    /// `15 checked on vtpm, 3 not checkable (td_hob, cfv, …) of 18`.
    pub fn summary(&self) -> String {
        let mut out = format!("{} checked on vtpm", self.checked);
        if !self.not_checkable.is_empty() {
            let labels: Vec<&str> = self
                .not_checkable
                .iter()
                .map(|n| n.label.as_str())
                .collect();
            let _ = write!(
                out,
                ", {} not checkable ({})",
                self.not_checkable.len(),
                labels.join(", ")
            );
        }
        let _ = write!(out, " of {}", self.total);
        out
    }
}

/// A TD event a vTPM boot cannot check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotCheckable {
    pub label: String,
    pub register: Option<String>,
    pub reason: String,
}

/// A PCR whose value the prediction declares it does not fold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnpredictedPcr {
    pub pcr: u32,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub file: String,
    pub backend: String,
    pub verdict: Verdict,
    /// Why an `error`, `fail` or `skip`: one line a human can act on.
    pub reason: Option<String>,
    pub registers: Vec<RegisterRow>,
    pub events: Counts,
    pub first_divergence: Option<Divergence>,
    /// The events of this VM's TD prediction, and which of them this backend checked.
    pub tdx_events: Option<TdxEvents>,
    /// PCRs whose value is not predicted, each with why (the report shows what is not checked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpredicted_pcrs: Vec<UnpredictedPcr>,
    pub acpi_blobs: Vec<RegisterRow>,
    pub qemu_version: Option<String>,
    pub ovmf_version: Option<String>,
    /// The ids of the quirk rows (`measure::quirks::ROWS`) this VM's versions applied.
    pub quirks: Vec<String>,
    pub duration_s: f64,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_rows: Vec<EventRow>,
    /// External predictors side by side with the reference (`--predictor`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub predictors: Vec<predictors::PredictorReport>,
}

impl ScenarioReport {
    pub fn error(
        name: &str,
        file: &str,
        backend: &str,
        reason: String,
        duration_s: f64,
    ) -> ScenarioReport {
        ScenarioReport {
            name: name.to_string(),
            file: file.to_string(),
            backend: backend.to_string(),
            verdict: Verdict::Error,
            reason: Some(reason),
            registers: Vec::new(),
            events: Counts::default(),
            first_divergence: None,
            tdx_events: None,
            unpredicted_pcrs: Vec::new(),
            acpi_blobs: Vec::new(),
            qemu_version: None,
            ovmf_version: None,
            quirks: Vec::new(),
            duration_s,
            notes: Vec::new(),
            event_rows: Vec::new(),
            predictors: Vec::new(),
        }
    }
}

/// How many scenarios ended with `verdict`.
pub fn count(reports: &[ScenarioReport], verdict: Verdict) -> usize {
    reports.iter().filter(|r| r.verdict == verdict).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tdx_events_summary_names_what_vtpm_cannot_check() {
        let not = |label: &str| NotCheckable {
            label: label.into(),
            register: Some("rtmr0".into()),
            reason: "TD-only".into(),
        };
        let t = TdxEvents {
            total: 18,
            checked: 15,
            not_checkable: vec![not("td_hob"), not("cfv"), not("acpi:etc/acpi/tables")],
            verification: Vec::new(),
        };
        assert_eq!(
            t.summary(),
            "15 checked on vtpm, 3 not checkable (td_hob, cfv, acpi:etc/acpi/tables) of 18"
        );
        let mut r = ScenarioReport::error("s", "s.toml", "vtpm", String::new(), 0.0);
        r.tdx_events = Some(t);
        let md = markdown(std::slice::from_ref(&r));
        assert!(md.contains("| 15 checked on vtpm, 3 not checkable"), "{md}");
        assert!(
            md.contains("TD event `td_hob` (rtmr0) not checkable on vtpm: TD-only (1 of 1"),
            "{md}"
        );
        let json = json(&[r]);
        assert!(json.contains("\"not_checkable\""), "{json}");
    }

    #[test]
    fn quirk_rows_are_listed_per_distinct_set() {
        let report = |name: &str, rows: &[&str]| {
            let mut r = ScenarioReport::error(name, "s.toml", "vtpm", String::new(), 0.0);
            r.quirks = rows.iter().map(|id| id.to_string()).collect();
            r
        };
        let none = [report("a", &[]), report("b", &[])];
        assert!(!markdown(&none).contains("Quirk rows"));
        let md = markdown(&[
            report("old", &[]),
            report("new", &["ovmf-secureboot-absent", "ovmf-smbios-measured"]),
            report(
                "new-too",
                &["ovmf-secureboot-absent", "ovmf-smbios-measured"],
            ),
        ]);
        assert!(
            md.contains(
                "### Quirk rows applied\n- none: old\n\
                 - `ovmf-secureboot-absent`, `ovmf-smbios-measured`: new, new-too\n"
            ),
            "{md}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&json(&[report("new", &["ovmf-secureboot-absent"])])).unwrap();
        assert_eq!(
            json["scenarios"][0]["quirks"],
            serde_json::json!(["ovmf-secureboot-absent"])
        );
    }
}
