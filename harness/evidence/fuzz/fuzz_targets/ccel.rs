//! CCEL log data and the ACPI CCEL table.
#![no_main]
use evidence::log::{parse, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = parse(data, Format::Ccel) {
        let _ = log.replay_rtmrs();
        for e in &log.events {
            let _ = evidence::decode::describe(&e.event);
        }
    }
    let _ = evidence::ccel::parse_table(data);
});
