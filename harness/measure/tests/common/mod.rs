//! A minimal test-only reader of the TCG crypto-agile event log format (PC Client PFP 10.2),
//! independent of the code under test (the evidence crate), shared by the tests that compare
//! `measure`'s events with real logs.
// Each test binary compiles this module and reads only the fields it needs.
#![allow(dead_code)]

use std::collections::BTreeMap;

/// One logged event: PCR, type, the SHA-256 and SHA-384 digests when logged, the event data.
#[derive(Debug)]
pub struct Logged {
    pub pcr: u32,
    pub event_type: u32,
    pub sha256: Option<Vec<u8>>,
    pub sha384: Option<Vec<u8>>,
    pub data: Vec<u8>,
}

pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The TCG_PCR_EVENT2 records after the Spec ID Event03 header, with digest sizes from that
/// header; `None` for a TCG 1.2 log (no Spec ID Event03).
pub fn records(log: &[u8]) -> Option<Vec<Logged>> {
    if log.len() < 48 || &log[32..48] != b"Spec ID Event03\0" {
        return None;
    }
    let spec_size = le32(log, 28) as usize;
    let spec = &log[32..32 + spec_size];
    let mut sizes = BTreeMap::new();
    for i in 0..le32(spec, 24) as usize {
        let at = 28 + 4 * i;
        let alg = u16::from_le_bytes([spec[at], spec[at + 1]]);
        sizes.insert(
            alg,
            u16::from_le_bytes([spec[at + 2], spec[at + 3]]) as usize,
        );
    }
    let mut out = Vec::new();
    let mut at = 32 + spec_size;
    while at + 12 <= log.len() {
        let (pcr, event_type, count) = (le32(log, at), le32(log, at + 4), le32(log, at + 8));
        if event_type == u32::MAX || count == u32::MAX {
            break;
        }
        at += 12;
        let (mut sha256, mut sha384) = (None, None);
        for _ in 0..count {
            let alg = u16::from_le_bytes([log[at], log[at + 1]]);
            let size = *sizes
                .get(&alg)
                .unwrap_or_else(|| panic!("algorithm {alg:#x} at {at} not in the Spec ID"));
            let digest = Some(log[at + 2..at + 2 + size].to_vec());
            match alg {
                0x0b => sha256 = digest,
                0x0c => sha384 = digest,
                _ => {}
            }
            at += 2 + size;
        }
        let size = le32(log, at) as usize;
        let data = log[at + 4..at + 4 + size].to_vec();
        at += 4 + size;
        out.push(Logged {
            pcr,
            event_type,
            sha256,
            sha384,
            data,
        });
    }
    Some(out)
}
