//! Reports: the JSON contract (DESIGN.md), a markdown summary and JUnit XML.

use crate::compare::Counts;
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
    pub outcome: crate::compare::Outcome,
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
    pub outcome: crate::compare::Outcome,
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
    pub duration_s: f64,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_rows: Vec<EventRow>,
    /// External predictors side by side with the reference (`--predictor`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub predictors: Vec<crate::predictor::PredictorReport>,
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
            duration_s,
            notes: Vec::new(),
            event_rows: Vec::new(),
            predictors: Vec::new(),
        }
    }
}

#[derive(Serialize)]
pub struct Report<'a> {
    pub scenarios: &'a [ScenarioReport],
}

pub fn json(reports: &[ScenarioReport]) -> String {
    serde_json::to_string_pretty(&Report { scenarios: reports }).expect("report serializes")
}

/// One row per scenario, then the first divergences.
pub fn markdown(reports: &[ScenarioReport]) -> String {
    let mut out = String::from("| scenario | verdict | QEMU | events m/x/-/+ | TDX events | duration |\n|---|---|---|---|---|---|\n");
    for r in reports {
        let c = r.events;
        let tdx = r
            .tdx_events
            .as_ref()
            .map_or("-".to_string(), TdxEvents::summary);
        let _ = writeln!(
            out,
            "| {} | {:?} | {} | {}/{}/{}/{} | {} | {:.1}s |",
            r.name,
            r.verdict,
            r.qemu_version.as_deref().unwrap_or("-"),
            c.matched,
            c.mismatched,
            c.missing,
            c.unexpected,
            tdx,
            r.duration_s
        );
    }
    for r in reports.iter().filter(|r| r.verdict != Verdict::Pass) {
        let _ = writeln!(out, "\n### {} — {:?}", r.name, r.verdict);
        if let Some(reason) = &r.reason {
            let _ = writeln!(out, "{reason}");
        }
        if let Some(d) = &r.first_divergence {
            let _ = writeln!(
                out,
                "first divergence: {:?} `{}` (PCR{} {}): predicted {} actual {}; varies with {:?}",
                d.outcome,
                d.label.as_deref().unwrap_or("?"),
                d.pcr,
                d.event_type,
                d.predicted_digest.as_deref().unwrap_or("-"),
                d.actual_digest.as_deref().unwrap_or("-"),
                d.varies_with
            );
        }
    }
    not_checked(&mut out, reports);
    predictor_tables(&mut out, reports);
    out
}

/// What the runs did not check, once per distinct reason: unpredicted PCR values and the TD
/// events a vTPM boot cannot log.
fn not_checked(out: &mut String, reports: &[ScenarioReport]) {
    let mut lines: Vec<(String, usize)> = Vec::new();
    let mut note = |line: String| match lines.iter_mut().find(|(l, _)| *l == line) {
        Some((_, n)) => *n += 1,
        None => lines.push((line, 1)),
    };
    for r in reports {
        for u in &r.unpredicted_pcrs {
            note(format!("PCR{} value not predicted: {}", u.pcr, u.reason));
        }
        for n in r.tdx_events.iter().flat_map(|t| &t.not_checkable) {
            note(format!(
                "TD event `{}` ({}) not checkable on vtpm: {}",
                n.label,
                n.register.as_deref().unwrap_or("-"),
                n.reason
            ));
        }
    }
    if lines.is_empty() {
        return;
    }
    out.push_str("\n### Not checked\n");
    for (line, n) in lines {
        let _ = writeln!(out, "- {line} ({n} of {} scenarios)", reports.len());
    }
}

/// ` [name: status, …]` for a scenario's one-line summary; empty without predictors.
pub fn predictor_summary(report: &ScenarioReport) -> String {
    if report.predictors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = report
        .predictors
        .iter()
        .map(|p| {
            let status = serde_json::to_value(p.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("{}: {status}", p.name)
        })
        .collect();
    format!(" [predictors {}]", parts.join(", "))
}

/// Each predictor beside its reference, register by register.
fn predictor_tables(out: &mut String, reports: &[ScenarioReport]) {
    for r in reports.iter().filter(|r| !r.predictors.is_empty()) {
        let _ = writeln!(out, "\n### {} — predictors", r.name);
        for p in &r.predictors {
            let _ = writeln!(
                out,
                "\n`{}` ({}): {}",
                p.name,
                p.kind,
                predictor_summary_status(p)
            );
            if p.registers.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "\n| register | {} | {} | match |\n|---|---|---|---|",
                p.name, p.reference
            );
            for reg in &p.registers {
                let verdict = match (reg.matches, &reg.unsupported) {
                    (Some(true), _) => "yes".to_string(),
                    (Some(false), _) => "**NO**".to_string(),
                    (None, Some(why)) => format!("not compared: {why}"),
                    (None, None) => "not compared".to_string(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {verdict} |",
                    reg.name,
                    reg.predicted.as_deref().unwrap_or("-"),
                    reg.reference.as_deref().unwrap_or("-")
                );
            }
        }
    }
}

fn predictor_summary_status(p: &crate::predictor::PredictorReport) -> String {
    use crate::predictor::Status;
    match p.status {
        Status::Match => "every register matches".into(),
        Status::Partial => "every compared register matches".into(),
        Status::Mismatch => "MISMATCH".into(),
        Status::Unsupported => format!(
            "unsupported: {}",
            p.unsupported.as_deref().unwrap_or_default()
        ),
        Status::Error => format!("error: {}", p.error.as_deref().unwrap_or_default()),
    }
}

/// How many scenarios ended with `verdict`.
pub fn count(reports: &[ScenarioReport], verdict: Verdict) -> usize {
    reports.iter().filter(|r| r.verdict == verdict).count()
}

/// JUnit XML: one testcase per scenario.
pub fn junit(reports: &[ScenarioReport]) -> String {
    let failures = count(reports, Verdict::Fail);
    let errors = count(reports, Verdict::Error);
    let skipped = count(reports, Verdict::Skip);
    let total: f64 = reports.iter().map(|r| r.duration_s).sum();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"mrlab\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{total:.3}\">\n",
        reports.len()
    );
    for r in reports {
        let _ = write!(
            out,
            "  <testcase classname=\"mrlab.{}\" name=\"{}\" time=\"{:.3}\"",
            xml(&r.backend),
            xml(&r.name),
            r.duration_s
        );
        let reason = xml(r.reason.as_deref().unwrap_or(""));
        match r.verdict {
            Verdict::Pass => out.push_str("/>\n"),
            Verdict::Fail => {
                let _ = write!(
                    out,
                    ">\n    <failure message=\"{reason}\"/>\n  </testcase>\n"
                );
            }
            Verdict::Error => {
                let _ = write!(out, ">\n    <error message=\"{reason}\"/>\n  </testcase>\n");
            }
            Verdict::Skip => {
                let _ = write!(
                    out,
                    ">\n    <skipped message=\"{reason}\"/>\n  </testcase>\n"
                );
            }
        }
    }
    out.push_str("</testsuite>\n");
    out
}

/// Escapes `text` for an XML attribute or text node. Control characters other than tab and
/// newline cannot appear in XML 1.0 at all, not even escaped: each becomes U+FFFD.
fn xml(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' => c,
            c if (c as u32) < 0x20 || c == '\u{7f}' => '\u{fffd}',
            c => c,
        })
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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
    fn junit_marks_errors_and_escapes() {
        let r = ScenarioReport::error(
            "a<b",
            "s.toml",
            "vtpm",
            "qemu said \"no\" & died".into(),
            1.5,
        );
        let x = junit(&[r]);
        assert!(x.contains("errors=\"1\""), "{x}");
        assert!(x.contains("name=\"a&lt;b\""), "{x}");
        assert!(x.contains("qemu said &quot;no&quot; &amp; died"), "{x}");
    }

    #[test]
    fn junit_holds_no_control_characters() {
        let r = ScenarioReport::error(
            "a",
            "a.toml",
            "vtpm",
            "tail: \u{1b}[31mred\u{0}".into(),
            0.0,
        );
        let x = junit(&[r]);
        assert!(x.contains("tail: \u{fffd}[31mred\u{fffd}"), "{x}");
        assert!(!x
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\t')));
    }
}
