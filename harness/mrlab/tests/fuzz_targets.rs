//! The cargo-fuzz targets (evidence, measure, agent) on the stable toolchain: each target's own
//! body (shared with its fuzz binary by `#[path]`) is fed seeded random mutations of the real
//! fixtures in `harness/fixtures` (and of a synthetic TDVF image, and the cached EFI binaries
//! when the image cache has them). A panic fails the test and leaves the input in
//! `$CARGO_TARGET_TMPDIR/fuzz-crash-<target>.bin`.
//!
//! Bounded for CI: `MUTATIONS_PER_TARGET` inputs or `TIME_PER_TARGET`, whichever ends first.
//! `MRLAB_FUZZ_ITERS=N` runs exactly N inputs per target instead (no time bound), and
//! `MRLAB_FUZZ_SEED` picks another random sequence. Run long campaigns in release:
//! `MRLAB_FUZZ_ITERS=1000000 cargo test --release -p mrlab --test fuzz_targets -- --nocapture`.

#[path = "../../agent/fuzz/targets.rs"]
mod agent_targets;
#[path = "../../evidence/fuzz/targets.rs"]
mod evidence_targets;
#[path = "../../measure/fuzz/targets.rs"]
mod measure_targets;

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MUTATIONS_PER_TARGET: u64 = 20_000;
const TIME_PER_TARGET: Duration = Duration::from_secs(4);

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Values that sit on parser boundaries: lengths, counts and offsets.
const INTERESTING_U32: [u32; 8] = [0, 1, 0x7f, 0x80, 0xffff, 0x7fff_ffff, 0x8000_0000, u32::MAX];

/// One to four mutations of `input`: bit flips, random or boundary bytes, boundary u32s,
/// truncation, deleted, duplicated or spliced-in chunks (from another seed).
fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                out[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                out[at] = rng.next() as u8;
            }
            2 if len > 0 => {
                let at = rng.below(len);
                out[at] = [0x00, 0xff, 0x7f, 0x80][rng.below(4)];
            }
            3 if len >= 4 => {
                let at = rng.below(len - 3);
                let value = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                out[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            4 => out.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                out.drain(at..at + n);
            }
            6 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let chunk = out[at..at + n].to_vec();
                let to = rng.below(len + 1);
                out.splice(to..to, chunk);
            }
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let at = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - at).min(256));
                    let to = rng.below(len + 1);
                    out.splice(to..to, other[at..at + n].iter().copied());
                }
            }
        }
    }
    out
}

fn iterations() -> (u64, Option<Duration>) {
    match std::env::var("MRLAB_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => (n, None),
        None => (MUTATIONS_PER_TARGET, Some(TIME_PER_TARGET)),
    }
}

/// Feeds `target` each seed, then mutations of random seeds; a panic names the input.
fn campaign(name: &str, target: fn(&[u8]), seeds: Vec<Vec<u8>>) {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let seed = std::env::var("MRLAB_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x006d_726c_6162_u64);
    let mut rng = Rng(seed ^ name.bytes().fold(0, |h, b| h * 31 + u64::from(b)) | 1);
    let (count, time) = iterations();
    let start = Instant::now();
    let mut done = 0u64;
    let run = |input: &[u8], done: u64| {
        if std::panic::catch_unwind(|| target(input)).is_err() {
            let path =
                Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-crash-{name}.bin"));
            std::fs::write(&path, input).expect("crash file");
            panic!(
                "{name}: input #{done} (seed {seed}) panicked; saved to {}",
                path.display()
            );
        }
    };
    for s in &seeds {
        run(s, done);
        done += 1;
    }
    while done < count && time.is_none_or(|t| start.elapsed() < t) {
        let base = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base, &seeds);
        run(&input, done);
        done += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "fuzz {name}: {done} executions in {secs:.1} s ({:.0}/s), {} seeds",
        done as f64 / secs,
        seeds.len()
    );
}

/// Fixture files under `harness/fixtures/<kind>/`, whose names pass `keep`.
fn fixtures(kind: &str, keep: impl Fn(&str) -> bool) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(common::fixture_path(kind))
        .expect("fixtures")
        .flatten()
        .flat_map(|set| {
            std::fs::read_dir(set.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|f| f.path())
        .filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            name != "expected.json"
                && !name.ends_with(".yaml")
                && !name.ends_with(".warn")
                && !name.ends_with("_out.json")
                && keep(&name)
        })
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Inputs that once crashed a target (`harness/<crate>/fuzz/regressions/<target>/`, saved from
/// cargo-fuzz artifacts): each stays a seed, so the crash cannot come back unnoticed.
fn regressions(krate: &str, target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("regressions")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Event data of every event in the TPM log fixtures.
fn event_data() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for log in fixtures("tpm-eventlog", |_| true) {
        if let Ok(log) = evidence::log::parse(&log, evidence::log::Format::Auto) {
            out.extend(log.events.into_iter().filter_map(|e| e.event.data));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Every suffix (from the first 256 offsets) of the blobs that `accepts` takes: the structures
/// a decoder knows, cut out of the events they are embedded in.
fn accepted_suffixes(blobs: &[Vec<u8>], accepts: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = blobs
        .iter()
        .flat_map(|b| (0..b.len().min(256)).map(move |at| &b[at..]))
        .filter(|s| accepts(s))
        .map(<[u8]>::to_vec)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Cached images (`.cache/debs/<id>/<path>`) the image cache may hold; none when absent.
fn cached(files: &[(&str, &str)]) -> Vec<Vec<u8>> {
    files
        .iter()
        .filter_map(|(id, path)| std::fs::read(common::deb_file(id, path)).ok())
        .collect()
}

/// A minimal TDVF image (the layout of `measure::tdvf`'s unit tests): BFV and CFV pages, a
/// TD_HOB and a TempMem section, metadata at 0x3000, the GUIDed table at the end.
fn synthetic_tdvf() -> Vec<u8> {
    const LEN: usize = 0x4000;
    const META_AT: usize = 0x3000;
    // e47a6535-984a-4798-865e-4685a7bf8ec2 and 96b582de-1fb2-45f7-baea-a366c55a082d, as stored.
    const TDX_METADATA_OFFSET_GUID: [u8; 16] = [
        0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e,
        0xc2,
    ];
    const TABLE_FOOTER_GUID: [u8; 16] = [
        0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08,
        0x2d,
    ];
    let sections: [(u32, u32, u64, u64, u32, u32); 4] = [
        (0x0000, 0x2000, 0xffff_e000, 0x2000, 0, 1),
        (0x2000, 0x1000, 0xffff_d000, 0x1000, 1, 0),
        (0, 0, 0x80_9000, 0x2000, 2, 0),
        (0, 0, 0x80_0000, 0x6000, 3, 0),
    ];
    let mut image: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let mut meta = b"TDVF".to_vec();
    meta.extend_from_slice(&(16 + 32 * sections.len() as u32).to_le_bytes());
    meta.extend_from_slice(&1u32.to_le_bytes());
    meta.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (off, raw, addr, size, ty, attr) in sections {
        meta.extend_from_slice(&off.to_le_bytes());
        meta.extend_from_slice(&raw.to_le_bytes());
        meta.extend_from_slice(&addr.to_le_bytes());
        meta.extend_from_slice(&size.to_le_bytes());
        meta.extend_from_slice(&ty.to_le_bytes());
        meta.extend_from_slice(&attr.to_le_bytes());
    }
    image[META_AT..META_AT + meta.len()].copy_from_slice(&meta);
    let mut table = ((LEN - META_AT) as u32).to_le_bytes().to_vec();
    table.extend_from_slice(&22u16.to_le_bytes());
    table.extend_from_slice(&TDX_METADATA_OFFSET_GUID);
    table.extend_from_slice(&40u16.to_le_bytes());
    table.extend_from_slice(&TABLE_FOOTER_GUID);
    let at = LEN - 32 - table.len();
    image[at..LEN - 32].copy_from_slice(&table);
    image
}

fn quotes() -> Vec<Vec<u8>> {
    let mut seeds = fixtures("tdx-quote", |n| !n.contains("report"));
    seeds.extend(fixtures("tdx-ccel", |n| n.contains("quote")));
    seeds
}

#[test]
fn tcg() {
    campaign(
        "tcg",
        evidence_targets::tcg,
        fixtures("tpm-eventlog", |_| true),
    );
}

#[test]
fn ccel() {
    // CCEL areas are mostly fill after the log: the first 20 000 bytes hold the events.
    let seeds = fixtures("tdx-ccel", |n| !n.contains("quote"))
        .into_iter()
        .map(|mut s| {
            s.truncate(20_000);
            s
        })
        .collect();
    campaign("ccel", evidence_targets::ccel, seeds);
}

#[test]
fn quote() {
    campaign("quote", evidence_targets::quote, quotes());
}

#[test]
fn quote_verify() {
    let mut seeds = quotes();
    seeds.extend(regressions("evidence", "quote_verify"));
    campaign("quote_verify", evidence_targets::quote_verify, seeds);
}

#[test]
fn tdreport() {
    campaign(
        "tdreport",
        evidence_targets::tdreport,
        fixtures("tdx-quote", |n| n.contains("report")),
    );
}

#[test]
fn record() {
    // A serial log around a record of real evidence, as the agent writes it.
    let mut record = agent::record::Record::default();
    record.push(
        "tpm/binary_bios_measurements",
        fixtures("tpm-eventlog", |_| true).remove(0),
    );
    record.push(
        "tdx/tdreport",
        fixtures("tdx-quote", |n| n.contains("report")).remove(0),
    );
    record.push("tpm/pcr-sha256/0", "00".repeat(32));
    let framed = agent::record::encode(&record);
    let serial = format!("Linux booting\r\n{framed}\r\nreboot: Power down\r\n").into_bytes();
    campaign(
        "record",
        agent_targets::record,
        vec![serial, framed.into_bytes()],
    );
}

#[test]
fn tdvf() {
    // A 2 MiB OVMF costs milliseconds per input (CFV hash); the synthetic image has the same
    // structures in 16 KiB. `ci/fuzz.sh` seeds cargo-fuzz with the real OVMF.
    campaign("tdvf", measure_targets::tdvf, vec![synthetic_tdvf()]);
}

#[test]
fn pe() {
    let mut seeds = accepted_suffixes(&event_data(), |s| {
        measure::pe::ImageLoadEvent::decode(s).is_ok()
    });
    seeds.extend(cached(&[
        (
            "systemd-boot-257",
            "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        ),
        (
            "systemd-boot-252",
            "usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        ),
    ]));
    campaign("pe", measure_targets::pe, seeds);
}

#[test]
fn devpath() {
    let seeds = accepted_suffixes(&event_data(), |s| {
        measure::devpath::DevicePath::decode(s).is_ok_and(|p| p.encode().is_ok_and(|e| e == s))
    });
    campaign("devpath", measure_targets::devpath, seeds);
}

#[test]
fn load_option() {
    let mut seeds = accepted_suffixes(&event_data(), |s| {
        measure::devpath::LoadOption::decode(s).is_ok()
    });
    seeds.extend(
        event_data()
            .into_iter()
            .filter(|d| measure::uefi::VariableData::parse(d).is_ok()),
    );
    campaign("load_option", measure_targets::load_option, seeds);
}

#[test]
fn gpt() {
    let seeds = accepted_suffixes(&event_data(), |s| measure::gpt::GptData::decode(s).is_ok());
    campaign("gpt", measure_targets::gpt, seeds);
}
