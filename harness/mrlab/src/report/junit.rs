//! JUnit XML: one testcase per scenario, for CI dashboards.

use super::{count, ScenarioReport, Verdict};
use std::fmt::Write as _;

/// JUnit XML: one testcase per scenario. Each lists the quirk rows its VM's versions applied
/// as `quirk` properties (the testcase `<properties>` that Jenkins, GitLab and pytest's
/// `record_property` use), so a version bump shows in a CI dashboard as it does in report.json.
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
        let body = testcase_body(r);
        if body.is_empty() {
            out.push_str("/>\n");
        } else {
            let _ = write!(out, ">\n{body}  </testcase>\n");
        }
    }
    out.push_str("</testsuite>\n");
    out
}

/// What a testcase holds: its quirk properties, then its failure, error or skip (none when it
/// passed).
fn testcase_body(r: &ScenarioReport) -> String {
    let mut body = String::new();
    if !r.quirks.is_empty() {
        body.push_str("    <properties>\n");
        for id in &r.quirks {
            let _ = writeln!(
                body,
                "      <property name=\"quirk\" value=\"{}\"/>",
                xml(id)
            );
        }
        body.push_str("    </properties>\n");
    }
    let reason = xml(r.reason.as_deref().unwrap_or(""));
    let element = match r.verdict {
        Verdict::Pass => return body,
        Verdict::Fail => "failure",
        Verdict::Error => "error",
        Verdict::Skip => "skipped",
    };
    let _ = writeln!(body, "    <{element} message=\"{reason}\"/>");
    body
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
    fn junit_lists_the_quirk_rows_of_each_testcase() {
        let mut old = ScenarioReport::error("old", "old.toml", "vtpm", String::new(), 1.0);
        old.verdict = Verdict::Pass;
        let mut new = ScenarioReport::error("new", "new.toml", "vtpm", "diverged".into(), 2.0);
        new.verdict = Verdict::Fail;
        new.quirks = vec![
            "ovmf-secureboot-absent".into(),
            "ovmf-smbios-measured".into(),
        ];
        let x = junit(&[old, new]);
        assert!(
            x.contains("<testcase classname=\"mrlab.vtpm\" name=\"old\" time=\"1.000\"/>\n"),
            "{x}"
        );
        assert!(
            x.contains(
                "<testcase classname=\"mrlab.vtpm\" name=\"new\" time=\"2.000\">\n    \
                 <properties>\n      \
                 <property name=\"quirk\" value=\"ovmf-secureboot-absent\"/>\n      \
                 <property name=\"quirk\" value=\"ovmf-smbios-measured\"/>\n    \
                 </properties>\n    \
                 <failure message=\"diverged\"/>\n  \
                 </testcase>\n"
            ),
            "{x}"
        );
        assert_eq!(x.matches("<properties>").count(), 1, "{x}");
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
