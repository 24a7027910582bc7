//! TPM logs (auto-detected, TCG2 and TCG 1.2), their replay and the event decoders.
#![no_main]
use evidence::log::{parse, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Auto, Format::Tcg2, Format::Tcg1] {
        if let Ok(log) = parse(data, format) {
            let _ = log.replay_pcrs();
            let _ = log.replay_rtmrs();
            for e in &log.events {
                let _ = evidence::decode::describe(&e.event);
            }
            let _ = evidence::tcg::write_log(&log);
        }
    }
});
