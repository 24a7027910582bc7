//! Every parser survives every fixture truncated at many lengths and with bit flips: it returns
//! a value or an error, never panics. (The cargo-fuzz targets in `fuzz/` do the same with
//! generated input.)

use evidence::log::{parse, Format};
use std::path::PathBuf;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures");

fn fixture_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in std::fs::read_dir(FIXTURES).unwrap() {
        let kind = kind.unwrap().path();
        if !kind.is_dir() {
            continue;
        }
        for set in std::fs::read_dir(kind).unwrap() {
            let set = set.unwrap().path();
            // A kind holds sets (folders) or, like smbios/, its fixture files directly.
            let files: Vec<PathBuf> = if set.is_dir() {
                std::fs::read_dir(set)
                    .unwrap()
                    .map(|f| f.unwrap().path())
                    .collect()
            } else {
                vec![set]
            };
            for file in files {
                let name = file.file_name().unwrap().to_string_lossy().to_string();
                if name != "expected.json"
                    && name != "README.md"
                    && !name.ends_with(".yaml")
                    && !name.ends_with(".warn")
                {
                    out.push(file);
                }
            }
        }
    }
    out.sort();
    assert!(out.len() > 30, "fixture files: {}", out.len());
    out
}

fn feed_all(bytes: &[u8]) {
    for format in [
        Format::Auto,
        Format::Tcg2,
        Format::Tcg1,
        Format::Ccel,
        Format::DstackJson,
    ] {
        if let Ok(log) = parse(bytes, format) {
            // Replay and decode must hold on whatever parsed.
            let _ = log.replay_pcrs();
            let _ = log.replay_rtmrs();
            for e in &log.events {
                let _ = evidence::decode::describe(&e.event);
            }
        }
    }
    let _ = evidence::ccel::parse_table(bytes);
    let _ = evidence::quote::parse(bytes);
    let _ = evidence::tdreport::parse(bytes);
    let _ = evidence::dstack::parse_document(bytes);
}

/// Lengths to cut at: every length of the first KiB of small files, a stride beyond.
fn cut_points(len: usize) -> impl Iterator<Item = usize> {
    let dense = len.min(1024);
    let stride = (len / 256).max(1);
    (0..dense).chain((dense..len).step_by(stride))
}

#[test]
fn truncated_fixtures_never_panic() {
    for file in fixture_files() {
        let bytes = std::fs::read(&file).unwrap();
        // Large CCEL areas are mostly fill: only the log part is interesting to cut densely.
        for len in cut_points(bytes.len().min(64 * 1024)) {
            feed_all(&bytes[..len]);
        }
    }
}

#[test]
fn bit_flipped_fixtures_never_panic() {
    for file in fixture_files() {
        let original = std::fs::read(&file).unwrap();
        let len = original.len().min(32 * 1024);
        let mut bytes = original[..len].to_vec();
        // Deterministic spread of positions; flip one bit, feed, restore.
        let step = (len / 300).max(1);
        for pos in (0..len).step_by(step) {
            for bit in [0u8, 7] {
                bytes[pos] ^= 1 << bit;
                feed_all(&bytes);
                bytes[pos] ^= 1 << bit;
            }
        }
        // Length fields set to huge values: 0xff over each 4-byte window of the first records.
        for pos in (0..len.min(256)).step_by(2) {
            let saved: Vec<u8> = bytes[pos..(pos + 4).min(len)].to_vec();
            for b in &mut bytes[pos..(pos + 4).min(len)] {
                *b = 0xff;
            }
            feed_all(&bytes);
            bytes[pos..pos + saved.len()].copy_from_slice(&saved);
        }
    }
}

#[test]
fn truncation_error_names_the_offset() {
    let bytes = std::fs::read(format!(
        "{FIXTURES}/tpm-eventlog/tpm2tools-event-uefiaction/event-uefiaction.bin"
    ))
    .unwrap();
    let full = parse(&bytes, Format::Tcg2).unwrap();
    let last = full.events.last().unwrap().offset;
    // Cut inside the last record's data: the error names the record's event field and where.
    let err = parse(&bytes[..bytes.len() - 1], Format::Tcg2).unwrap_err();
    match err {
        evidence::Error::Truncated {
            field,
            offset,
            needed,
            available,
        } => {
            assert_eq!(field, "event");
            assert!(
                offset > last,
                "offset {offset} is inside the last record at {last}"
            );
            assert_eq!(needed, available + 1);
        }
        other => panic!("expected a truncation error, got {other}"),
    }
}
