//! The markdown summary: one row per scenario, then what was not checked, the first
//! divergences and the predictors beside their references.

use super::predictors::{PredictorReport, Status};
use super::{ScenarioReport, TdxEvents, Verdict};
use std::fmt::Write as _;

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
    quirk_rows(&mut out, reports);
    predictor_tables(&mut out, reports);
    out
}

/// The quirk rows that applied, one line per distinct set with the scenarios that had it, so
/// a version bump shows as a changed line.
fn quirk_rows(out: &mut String, reports: &[ScenarioReport]) {
    let mut sets: Vec<(&[String], Vec<&str>)> = Vec::new();
    for r in reports {
        match sets
            .iter_mut()
            .find(|(rows, _)| *rows == r.quirks.as_slice())
        {
            Some((_, names)) => names.push(&r.name),
            None => sets.push((&r.quirks, vec![&r.name])),
        }
    }
    if sets.iter().all(|(rows, _)| rows.is_empty()) {
        return;
    }
    out.push_str("\n### Quirk rows applied\n");
    for (rows, names) in sets {
        let rows = if rows.is_empty() {
            "none".to_string()
        } else {
            rows.iter()
                .map(|id| format!("`{id}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "- {rows}: {}", names.join(", "));
    }
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

fn predictor_summary_status(p: &PredictorReport) -> String {
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
