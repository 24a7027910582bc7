//! Wiring for [`measure::verification`]: the real TD logs in `harness/fixtures` and the vTPM
//! events that check a TD prediction.

use measure::verification::{td_statuses, Verification};
use measure::Event;
use std::path::Path;

/// The folders of `harness/fixtures` that hold real TD event logs (CCEL, dstack JSON); every file
/// in them that parses as a TD log counts (README there gives their provenance).
const CAPTURE_DIRS: [&str; 2] = ["tdx-ccel", "tdx-json-eventlog"];

/// Every event of the real TD logs in `<root>/harness/fixtures`. A file that is no TD log (an
/// expected-values JSON, a quote) is not one of them.
pub fn captured_td_events(root: &Path) -> Vec<Event> {
    let fixtures = root.join("harness/fixtures");
    let mut events = Vec::new();
    for dir in CAPTURE_DIRS {
        let Ok(captures) = std::fs::read_dir(fixtures.join(dir)) else {
            continue;
        };
        for capture in captures.flatten() {
            let Ok(files) = std::fs::read_dir(capture.path()) else {
                continue;
            };
            for file in files.flatten() {
                let Ok(bytes) = crate::input::read(&file.path(), crate::input::EVENT_LOG) else {
                    continue;
                };
                if let Ok(log) = evidence::log::parse(&bytes, evidence::log::Format::Auto) {
                    if matches!(
                        log.format,
                        evidence::log::Format::Ccel | evidence::log::Format::DstackJson
                    ) {
                        events.extend(log.measure_events());
                    }
                }
            }
        }
    }
    events
}

/// The verification status of each TD event before any boot: a capture's, else the vTPM
/// prediction of the same VM (`vtpm`, which a vtpm run of it checks event by event), else
/// unverified. A firmware refused on vtpm has no vTPM prediction (`vtpm` empty).
pub fn before_boot(td: &[Event], vtpm: &[Event]) -> Vec<Verification> {
    td_statuses(td, vtpm, &captured_td_events(&images::workspace_root()))
}
