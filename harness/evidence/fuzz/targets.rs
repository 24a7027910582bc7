//! The bodies of the evidence fuzz targets, shared by the cargo-fuzz binaries
//! (`fuzz_targets/*.rs`) and the stable mutation test (`harness/mrlab/tests/fuzz_targets.rs`):
//! any bytes give a value or an error, never a panic or a hang.

use evidence::log::{parse, Format};

/// TPM logs (auto-detected, TCG2 and TCG 1.2), their replay, the event decoders and the writer.
pub fn tcg(data: &[u8]) {
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
}

/// CCEL log data and the ACPI CCEL table.
pub fn ccel(data: &[u8]) {
    if let Ok(log) = parse(data, Format::Ccel) {
        let _ = log.replay_rtmrs();
        for e in &log.events {
            let _ = evidence::decode::describe(&e.event);
        }
    }
    let _ = evidence::ccel::parse_table(data);
}

/// TDX quotes v4/v5.
pub fn quote(data: &[u8]) {
    if let Ok(q) = evidence::quote::parse(data) {
        let _ = q.to_json();
    }
}

/// The quote signature check: ECDSA over the header and body, the QE report, the PCK chain.
pub fn quote_verify(data: &[u8]) {
    let _ = evidence::quote::verify(data);
}

/// 1024-byte TDREPORTs (other sizes are rejected up front, so the input is also padded or cut
/// to 1024).
pub fn tdreport(data: &[u8]) {
    let mut report = [0u8; 1024];
    let n = data.len().min(1024);
    report[..n].copy_from_slice(&data[..n]);
    if let Ok(r) = evidence::tdreport::parse(&report) {
        let _ = r.to_json();
    }
    let _ = evidence::tdreport::parse(data);
}
