//! 1024-byte TDREPORTs (other sizes are rejected up front, so pad or cut the input to 1024).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut report = [0u8; 1024];
    let n = data.len().min(1024);
    report[..n].copy_from_slice(&data[..n]);
    if let Ok(r) = evidence::tdreport::parse(&report) {
        let _ = r.to_json();
    }
    let _ = evidence::tdreport::parse(data);
});
