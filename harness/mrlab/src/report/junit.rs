//! JUnit XML: one testcase per scenario, for CI dashboards.

use super::{count, ScenarioReport, Verdict};
use std::fmt::Write as _;

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
