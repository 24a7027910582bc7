//! End to end on the vtpm backend: one test per `scenarios/*.toml` (boots it for real under
//! QEMU + OVMF + swtpm), plus the faults that must end in `error` or `fail`, never `pass`.
//!
//! Each scenario's reviewable projection is an insta snapshot under `results/snapshots/`
//! (`cargo insta review` after a QEMU/OVMF change). Digests that depend on our own agent
//! initramfs (initrd, and the kernel whose patched header records the initrd size) are shown
//! as such, so a rebuilt agent does not churn every snapshot; they are still compared, byte
//! for byte, by the run itself.

mod common;

use common::cache;
use mrlab::prepare;
use mrlab::report::Outcome;
use mrlab::report::{ScenarioReport, Verdict};
use mrlab::run::{self, Options};
use mrlab::scenario::Scenario;
use rstest::rstest;
use serde::Serialize;
use std::path::{Path, PathBuf};

fn results(test: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("e2e")
        .join(test)
}

/// `MRLAB_BACKEND=tdx` (the nightly lane on TDX hosts) boots every scenario as a TD; anything
/// else is the vtpm backend.
fn platform() -> measure::Platform {
    match std::env::var("MRLAB_BACKEND").as_deref() {
        Ok("tdx") => measure::Platform::Tdx,
        _ => measure::Platform::Vtpm,
    }
}

fn options(test: &str) -> Options {
    Options {
        results: results(test),
        platform: platform(),
        accel: qemu::argv::Accel::Tcg,
        predictors: Vec::new(),
    }
}

/// Boots share the machine (read lock); a test that counts leftover processes takes it alone
/// (write lock), so another test's live QEMU is not mistaken for a leak.
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

/// What a reviewer wants to see change when QEMU or OVMF changes.
#[derive(Serialize)]
struct Projection {
    name: String,
    verdict: Verdict,
    qemu: Option<String>,
    ovmf: Option<String>,
    /// The quirk rows the versions applied: a version bump shows which rules changed.
    quirks: Vec<String>,
    events: Vec<String>,
    fw_cfg_sha384: Vec<String>,
    /// Every event of the TD prediction: how many this vTPM boot checked, which it cannot.
    tdx_events: Option<String>,
}

fn projection(report: &ScenarioReport) -> Projection {
    Projection {
        name: report.name.clone(),
        verdict: report.verdict,
        qemu: report.qemu_version.clone(),
        ovmf: report.ovmf_version.clone(),
        quirks: report.quirks.clone(),
        events: report
            .event_rows
            .iter()
            .map(|e| {
                let label = e.label.as_deref().unwrap_or("(unpredicted)");
                let digest = if e.varies_with_agent {
                    "(varies with the agent initramfs)".to_string()
                } else {
                    e.sha384.clone().unwrap_or_default()
                };
                format!(
                    "{:?} pcr{} {} {label} {digest}",
                    e.outcome, e.pcr, e.event_type
                )
            })
            .collect(),
        fw_cfg_sha384: report
            .acpi_blobs
            .iter()
            .map(|b| format!("{} {}", b.name, b.actual.as_deref().unwrap_or("absent")))
            .collect(),
        tdx_events: report.tdx_events.as_ref().map(|t| t.summary()),
    }
}

#[rstest]
fn scenario_passes(#[files("../../scenarios/*.toml")] path: PathBuf) {
    let _machine = shared();
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let out = runtime().block_on(run::run_file(&path, &cache(), &options("scenarios")));
    let report = out.report;
    // A NUMA node's memory file (`hugepages`) is unlinked by QEMU as soon as it is made.
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("qemu_back_mem"))
        .collect();
    assert!(left.is_empty(), "{name}: left in /dev/shm: {left:?}");
    if report.verdict == Verdict::Skip {
        eprintln!("SKIPPED {name}: {}", report.reason.as_deref().unwrap_or(""));
        return;
    }
    assert_eq!(
        report.verdict,
        Verdict::Pass,
        "{name}: {}\n{}",
        report.reason.as_deref().unwrap_or(""),
        mrlab::report::markdown(std::slice::from_ref(&report))
    );
    // A pass must have checked something: events matched, PCRs compared, blobs compared.
    assert!(
        report.events.matched >= 10,
        "{name}: only {} events matched",
        report.events.matched
    );
    assert!(!report.registers.is_empty() && report.registers.iter().all(|r| r.matches));
    if platform() == measure::Platform::Tdx {
        // The snapshots are the vtpm view (PCRs, vTPM-only events); a TD is held to the
        // registers and events above.
        return;
    }
    let Some(key) = snapshot_key(&path, &name, &report) else {
        return;
    };
    insta::with_settings!({
        snapshot_path => "../../../results/snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_yaml_snapshot!(key.as_str(), projection(&report));
    });
}

/// The snapshot a scenario is held to. A managed QEMU (the default) is the same on every host:
/// its snapshot is the scenario's name. A host QEMU (`qemu = "system"` or a path) differs from
/// host to host, so its snapshots are keyed by the version it reports
/// (`<name>@host-qemu-<version>`); a host whose QEMU has no reviewed snapshot yet is told how to
/// record one, and is still held to the verdict and counts above.
fn snapshot_key(path: &Path, name: &str, report: &ScenarioReport) -> Option<String> {
    let scenario = Scenario::load(path).expect("scenario loads");
    if !(scenario.qemu == "system" || scenario.qemu.contains('/')) {
        return Some(name.to_owned());
    }
    let version = report.qemu_version.as_deref().unwrap_or("unknown");
    let key = format!("{name}@host-qemu-{version}");
    let committed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../results/snapshots")
        .join(format!("{key}.snap"));
    let recording = matches!(
        std::env::var("INSTA_UPDATE").as_deref(),
        Ok("always" | "new")
    );
    if committed.exists() || recording {
        return Some(key);
    }
    eprintln!(
        "NO SNAPSHOT {key}: no reviewed snapshot for this host's QEMU {version}; record one with \
         INSTA_UPDATE=always cargo test -p mrlab --test e2e {name} and review it"
    );
    None
}

/// A prediction made with the wrong command line must fail, naming the cmdline event first:
/// `linux:cmdline` (PCR9) for -kernel boot, the UKI's `.cmdline` section (PCR11) for UKI boot.
#[rstest]
#[case::kernel("wrong-cmdline.toml", "linux:cmdline")]
#[case::uki("wrong-uki-cmdline.toml", "uki:.cmdline")]
#[case::grub("wrong-grub-cmdline.toml", "grub:file:/EFI/debian/grub.cfg")]
fn wrong_cmdline_prediction_fails_at_the_cmdline_event(#[case] file: &str, #[case] label: &str) {
    let _machine = shared();
    let path = common::data(file);
    let report = runtime()
        .block_on(run::run_file(&path, &cache(), &options("wrong-cmdline")))
        .report;
    assert_eq!(report.verdict, Verdict::Fail, "{:?}", report.reason);
    let first = report.first_divergence.expect("a first divergence");
    assert_eq!(first.label.as_deref(), Some(label));
    assert_eq!(first.outcome, Outcome::Mismatched);
    assert!(report.reason.unwrap().contains(label));
}

/// A grub.cfg line the prediction does not know fails the run: grub.cfg itself (PCR9, logged
/// first) is named as the first divergence, and the line's own `grub_cmd` event (PCR8) is
/// unexpected.
#[test]
fn an_extra_grub_cfg_line_is_caught() {
    let _machine = shared();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/extra-grub-line.toml");
    let report = runtime()
        .block_on(run::run_file(&path, &cache(), &options("extra-grub-line")))
        .report;
    assert_eq!(report.verdict, Verdict::Fail, "{:?}", report.reason);
    let first = report.first_divergence.expect("a first divergence");
    assert_eq!(
        first.label.as_deref(),
        Some("grub:file:/EFI/debian/grub.cfg")
    );
    assert_eq!(first.outcome, Outcome::Mismatched);
    let unexpected: Vec<(u32, Option<&str>)> = report
        .event_rows
        .iter()
        .filter(|r| r.outcome == Outcome::Unexpected)
        .map(|r| (r.pcr, r.label.as_deref()))
        .collect();
    assert_eq!(
        unexpected,
        [(8, Some("grub:cmd"))],
        "the extra line's grub_cmd"
    );
}

/// Two VMs that differ in one device get different ACPI tables from the oracle, and their
/// committed snapshots show it.
#[test]
fn one_more_device_changes_the_acpi_tables() {
    let _machine = shared();
    let rt = runtime();
    let tables = |name: &str| {
        let scenario = Scenario::load(&common::scenario_path(name)).unwrap();
        let p = rt
            .block_on(prepare::prepare(
                &scenario,
                &cache(),
                measure::Platform::Vtpm,
            ))
            .unwrap();
        p.oracle
            .get("etc/acpi/tables")
            .cloned()
            .expect("ACPI tables")
    };
    assert_ne!(
        tables("kernel-smoke"),
        tables("nic-1"),
        "a NIC must change the DSDT"
    );
    let snapshot_line = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../results/snapshots")
            .join(format!("{name}.snap"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .lines()
            .find(|l| l.contains("etc/acpi/tables "))
            .map(str::to_owned)
            .expect("snapshot lists etc/acpi/tables")
    };
    assert_ne!(snapshot_line("kernel-smoke"), snapshot_line("nic-1"));
}

/// One real boot of `scenarios/kernel-smoke.toml`, shared by the tests that judge its evidence
/// and mutations of it: its prepared prediction, serial log and decoded record.
struct RealRun {
    scenario: PathBuf,
    prepared: Box<prepare::Prepared>,
    serial: Vec<u8>,
    record: agent::record::Record,
    dir: PathBuf,
}

static KERNEL_SMOKE: std::sync::OnceLock<RealRun> = std::sync::OnceLock::new();

fn kernel_smoke() -> &'static RealRun {
    KERNEL_SMOKE.get_or_init(|| {
        let _machine = shared();
        let path = common::scenario_path("kernel-smoke");
        let scenario = Scenario::load(&path).unwrap();
        let rt = runtime();
        let out = rt.block_on(run::run_scenario(
            &scenario,
            "kernel-smoke",
            &cache(),
            &options("real-evidence"),
        ));
        assert_eq!(out.report.verdict, Verdict::Pass, "{:?}", out.report.reason);
        let dir = results("real-evidence").join("kernel-smoke");
        let serial = std::fs::read(dir.join("serial.log")).expect("serial.log kept");
        let record = agent::record::decode(&serial).expect("the real serial log decodes");
        // The judge of the platform the guest ran on: a TD's record (MRLAB_BACKEND=tdx) goes to
        // the TD judge, as in `mrlab run --backend tdx`.
        let prepared = rt
            .block_on(prepare::prepare(&scenario, &cache(), platform()))
            .unwrap();
        RealRun {
            scenario: path,
            prepared,
            serial,
            record,
            dir,
        }
    })
}

/// A corrupted or truncated evidence record is an error, never a pass; so is a serial log
/// without one. Uses a real serial log from a real boot.
#[test]
fn corrupt_or_missing_evidence_is_an_error() {
    let real = kernel_smoke();
    let (serial, dir) = (&real.serial, &real.dir);
    let judge = |bytes: &[u8]| {
        run::judge(&real.prepared, "kernel-smoke", bytes, &dir.join("judge"))
            .map_err(|e| mrlab::error::chain(&e))
    };
    assert_eq!(
        judge(serial).expect("the real serial log judges").verdict,
        Verdict::Pass
    );

    let begin = find(serial, b"MRLAB-RECORD-BEGIN").expect("record in serial.log");
    let mut flipped = serial.clone();
    flipped[begin + 200] ^= 0x01;
    let e = judge(&flipped).unwrap_err();
    assert!(e.contains("evidence record"), "{e}");

    let truncated = &serial[..begin + (serial.len() - begin) / 2];
    let e = judge(truncated).unwrap_err();
    assert!(e.contains("evidence record"), "{e}");

    let e = judge(&serial[..begin]).unwrap_err();
    assert!(e.contains("evidence record"), "{e}");

    // `mrlab diagnose --evidence DIR` reads the saved evidence back and judges it the same way.
    let record = mrlab::recorded::record_from_dir(dir).expect("evidence/ in the results folder");
    let again =
        mrlab::judge::judge_record(&real.prepared, "kernel-smoke", &record).expect("judges");
    assert_eq!(again.verdict, Verdict::Pass, "{:?}", again.reason);
    assert!(mrlab::recorded::record_from_dir(&dir.join("no-such-folder")).is_err());
}

/// The record travels over the emulated UART byte by byte: v2 deflates it, so kernel-smoke's
/// ~220 KB of evidence (mostly zero-padded ACPI and TPM log areas) crosses as at most 40 KB.
#[test]
fn kernel_smoke_record_is_deflated_on_the_wire() {
    let real = kernel_smoke();
    let begin = find(&real.serial, b"MRLAB-RECORD-BEGIN").expect("record in serial.log");
    let end = find(&real.serial, b"MRLAB-RECORD-END").expect("record end in serial.log");
    let frame = &real.serial[begin..end];
    assert!(frame.starts_with(b"MRLAB-RECORD-BEGIN v2 "));
    assert!(
        frame.len() <= 40 * 1024,
        "{} bytes on the wire",
        frame.len()
    );
    let payload: usize = real.record.entries.iter().map(|(_, d)| d.len()).sum();
    assert!(payload > 200 * 1024, "{payload} bytes of evidence");
}

const TPM_LOG: &str = "tpm/binary_bios_measurements";

/// One change to a real boot's evidence. Log changes keep the recorded PCR values consistent:
/// every PCR whose replay changes is rewritten to the new replay, as a TPM would have extended.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    /// An EV_IPL event the prediction lacks, appended in this PCR.
    ExtraIpl(u32),
    /// An extra firmware volume blob in PCR0: a declared unpredicted event type.
    ExtraFirmwareBlob,
    /// The first event of this PCR removed.
    DropFirst(u32),
    /// The first two events of this PCR swapped.
    SwapFirstTwo(u32),
    /// One bank's digest of the first event of this PCR changed, the other bank left right.
    OneBankDigest(u32, &'static str),
    /// A recorded PCR value the log does not replay to (`tpm/pcr-<bank>/<pcr>`).
    PcrValue(&'static str, u32),
    /// A byte flipped in a fw_cfg file the guest read.
    FlipFwCfg(&'static str),
}

fn mutate(record: &agent::record::Record, mutation: Mutation) -> agent::record::Record {
    use evidence::log::{parse, Format};
    let mut out = record.clone();
    let set = |out: &mut agent::record::Record, name: &str, data: Vec<u8>| {
        let entry = out
            .entries
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("the real record has {name}"));
        entry.1 = data;
    };
    let log = parse(record.get(TPM_LOG).unwrap(), Format::Tcg2).unwrap();
    let mut events = log.events.clone();
    let first_in = |events: &[evidence::log::LogEvent], pcr: u32| {
        events
            .iter()
            .position(|e| e.index == pcr && e.event.extends())
            .unwrap_or_else(|| panic!("the real log has an event in PCR{pcr}"))
    };
    match mutation {
        Mutation::ExtraIpl(_) | Mutation::ExtraFirmwareBlob => {
            let (pcr, event_type, data) = match mutation {
                Mutation::ExtraIpl(pcr) => (
                    pcr,
                    measure::EventType::IPL,
                    b"mrlab: an event the prediction lacks".to_vec(),
                ),
                _ => (
                    0,
                    measure::EventType::EFI_PLATFORM_FIRMWARE_BLOB,
                    vec![0; 16],
                ),
            };
            let mut extra = events.last().unwrap().clone();
            extra.index = pcr;
            extra.event.pcr = pcr;
            extra.event.event_type = event_type;
            extra.digests = digests_of(&extra.digests, &data);
            extra.event.data = Some(data);
            events.push(extra);
        }
        Mutation::DropFirst(pcr) => {
            events.remove(first_in(&events, pcr));
        }
        Mutation::SwapFirstTwo(pcr) => {
            let first = first_in(&events, pcr);
            let second = first + 1 + first_in(&events[first + 1..], pcr);
            events.swap(first, second);
        }
        Mutation::OneBankDigest(pcr, bank) => {
            let first = first_in(&events, pcr);
            let digest = events[first]
                .digests
                .iter_mut()
                .find(|(alg, _)| alg.name() == bank)
                .expect("the log has the bank");
            digest.1[0] ^= 0x01;
        }
        Mutation::PcrValue(bank, pcr) => {
            let name = format!("tpm/pcr-{bank}/{pcr}");
            let mut text = record.get(&name).unwrap().to_vec();
            text[0] = if text[0] == b'0' { b'1' } else { b'0' };
            set(&mut out, &name, text);
        }
        Mutation::FlipFwCfg(name) => {
            let name = format!("fw_cfg/{name}");
            let mut data = record.get(&name).unwrap().to_vec();
            let middle = data.len() / 2;
            data[middle] ^= 0x01;
            set(&mut out, &name, data);
        }
    }
    if events == log.events {
        return out;
    }
    let bytes = evidence::tcg::write_log(&evidence::log::EventLog {
        events,
        ..log.clone()
    })
    .unwrap();
    let mutated = parse(&bytes, Format::Tcg2).unwrap();
    for (before, after) in log.replay_pcrs().iter().zip(mutated.replay_pcrs()) {
        for pcr in (0..24).filter(|&p| before.pcrs[p] != after.pcrs[p]) {
            let text = format!("{}\n", hex::encode_upper(&after.pcrs[pcr]));
            set(
                &mut out,
                &format!("tpm/pcr-{}/{pcr}", before.alg.name()),
                text.into_bytes(),
            );
        }
    }
    set(&mut out, TPM_LOG, bytes);
    out
}

/// Each bank's digest of `data`, in the banks (and order) of `like`.
fn digests_of(
    like: &[(evidence::alg::HashAlg, Vec<u8>)],
    data: &[u8],
) -> Vec<(evidence::alg::HashAlg, Vec<u8>)> {
    use sha2::Digest;
    like.iter()
        .map(|(alg, _)| {
            let digest = match alg.name().as_str() {
                "sha256" => sha2::Sha256::digest(data).to_vec(),
                "sha384" => sha2::Sha384::digest(data).to_vec(),
                other => panic!("the real log has a {other} bank"),
            };
            (*alg, digest)
        })
        .collect()
}

/// Negative tests on a real boot's evidence: each change to it must fail (or, for a PCR value,
/// be an error) with its own reason, both through the live judge (the serial record) and
/// through `mrlab diagnose --evidence DIR`, and name the check that caught it.
#[rstest]
#[case::extra_event_in_pcr0(
    Mutation::ExtraIpl(0),
    Verdict::Fail,
    "Unexpected EV_IPL (not predicted) in PCR0"
)]
#[case::extra_event_in_pcr1_rtmr0(
    Mutation::ExtraIpl(1),
    Verdict::Fail,
    "Unexpected EV_IPL (not predicted) in PCR1"
)]
#[case::extra_event_in_pcr7_rtmr0(
    Mutation::ExtraIpl(7),
    Verdict::Fail,
    "Unexpected EV_IPL (not predicted) in PCR7"
)]
#[case::extra_event_in_pcr4_rtmr1(
    Mutation::ExtraIpl(4),
    Verdict::Fail,
    "Unexpected EV_IPL (not predicted) in PCR4"
)]
#[case::extra_event_in_pcr8_rtmr2(
    Mutation::ExtraIpl(8),
    Verdict::Fail,
    "Unexpected EV_IPL (not predicted) in PCR8"
)]
#[case::extra_event_in_pcr10_ima(
    Mutation::ExtraIpl(10),
    Verdict::Fail,
    "Unexpected EV_IPL (not predicted) in PCR10"
)]
#[case::extra_event_in_pcr12_rtmr2(
    Mutation::ExtraIpl(12),
    Verdict::Fail,
    "Unexpected EV_IPL (not predicted) in PCR12"
)]
#[case::extra_event_in_pcr14_rtmr2(
    Mutation::ExtraIpl(14),
    Verdict::Fail,
    "Unexpected EV_IPL (not predicted) in PCR14"
)]
#[case::missing_event(
    Mutation::DropFirst(9),
    Verdict::Fail,
    "Missing `linux:cmdline` in PCR9"
)]
#[case::reordered_pair(
    Mutation::SwapFirstTwo(7),
    Verdict::Fail,
    "Unexpected `efi:PK` in PCR7: logged, but out of order"
)]
#[case::sha256_bank_only(
    Mutation::OneBankDigest(9, "sha256"),
    Verdict::Fail,
    "Mismatched `linux:cmdline` in PCR9 (sha256 differs)"
)]
#[case::sha384_bank_only(
    Mutation::OneBankDigest(9, "sha384"),
    Verdict::Fail,
    "Mismatched `linux:cmdline` in PCR9 (sha384 differs)"
)]
#[case::pcr_value_sha256(
    Mutation::PcrValue("sha256", 7),
    Verdict::Error,
    "event log does not replay to the TPM's PCR7 (sha256)"
)]
#[case::pcr_value_sha384(
    Mutation::PcrValue("sha384", 14),
    Verdict::Error,
    "event log does not replay to the TPM's PCR14 (sha384)"
)]
#[case::acpi_tables_byte(
    Mutation::FlipFwCfg("etc/acpi/tables"),
    Verdict::Fail,
    "fw_cfg blobs differ between oracle and guest: etc/acpi/tables"
)]
#[case::table_loader_byte(
    Mutation::FlipFwCfg("etc/table-loader"),
    Verdict::Fail,
    "fw_cfg blobs differ between oracle and guest: etc/table-loader"
)]
#[case::bootorder_byte(
    Mutation::FlipFwCfg("bootorder"),
    Verdict::Fail,
    "fw_cfg blobs differ between oracle and guest: bootorder"
)]
fn mutated_real_evidence_fails_with_its_own_reason(
    #[case] mutation: Mutation,
    #[case] verdict: Verdict,
    #[case] reason: &str,
) {
    let real = kernel_smoke();
    // `mrlab diagnose` starts its own oracle QEMU.
    let _machine = shared();
    let mutated = mutate(&real.record, mutation);
    assert_ne!(mutated, real.record, "{mutation:?} changed nothing");
    let dir = results("mutations").join(format!("{mutation:?}"));
    let _ = std::fs::remove_dir_all(&dir);

    // The live judge, on the record as the guest would have written it to the serial console.
    let serial = agent::record::encode(&mutated);
    let live = run::judge(&real.prepared, "kernel-smoke", serial.as_bytes(), &dir)
        .expect("the mutated record judges");
    assert_eq!(live.verdict, verdict, "{mutation:?}: {:?}", live.reason);
    let why = live.reason.clone().unwrap_or_default();
    assert!(
        why.contains(reason),
        "{mutation:?}: reason {why:?} lacks {reason:?}"
    );

    // `mrlab diagnose` on the evidence folder the live judge saved.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mrlab"))
        .arg("diagnose")
        .arg("--scenario")
        .arg(&real.scenario)
        .arg("--evidence")
        .arg(&dir)
        .arg("--json")
        .output()
        .expect("mrlab diagnose runs");
    assert_eq!(out.status.code(), Some(1), "{mutation:?}: {out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let scenario = &report["scenarios"][0];
    assert_eq!(
        scenario["verdict"],
        serde_json::to_value(verdict).unwrap(),
        "{mutation:?}"
    );
    assert_eq!(
        scenario["reason"].as_str(),
        Some(why.as_str()),
        "{mutation:?}"
    );
}

/// A prediction for RAM in a NUMA node (`[machine] hugepages`) cannot pass a real boot without
/// one: the oracle's tables then hold an SRAT (and the CPUs' `_PXM`) that the guest's do not.
/// The same boot passes its own prediction (`corrupt_or_missing_evidence_is_an_error`).
#[test]
fn a_numa_prediction_fails_a_boot_without_a_numa_node() {
    let real = kernel_smoke();
    let _machine = shared();
    let mut scenario = Scenario::load(&real.scenario).unwrap();
    scenario.machine.hugepages = true;
    let numa = runtime()
        .block_on(prepare::prepare(&scenario, &cache(), platform()))
        .unwrap();
    let srat = |tables: &[u8]| find(tables, b"SRAT").is_some();
    assert!(srat(&numa.oracle["etc/acpi/tables"]));
    assert!(!srat(&real.prepared.oracle["etc/acpi/tables"]));
    let dir = results("numa-mismatch");
    let report = run::judge(&numa, "kernel-smoke", &real.serial, &dir).expect("judges");
    assert_eq!(report.verdict, Verdict::Fail, "{:?}", report.reason);
    // The SRAT grows the tables, moves the RSDT (so the RSDP) and adds loader commands.
    assert_eq!(
        report.reason.as_deref(),
        Some(
            "fw_cfg blobs differ between oracle and guest: etc/acpi/rsdp, etc/acpi/tables, \
             etc/table-loader"
        )
    );
}

/// The TD events a vTPM run counts are the TD prediction's own (made with a TD's fw_cfg, no
/// TPM device), and one the log gets wrong is no longer counted as checked.
#[test]
fn tdx_event_counts_are_the_td_predictions() {
    let real = kernel_smoke();
    let scenario = Scenario::load(&real.scenario).unwrap();
    let _machine = shared();
    let td = runtime()
        .block_on(prepare::prepare(
            &scenario,
            &cache(),
            measure::Platform::Tdx,
        ))
        .unwrap();
    let labels = |events: &[measure::Event]| -> Vec<String> {
        events.iter().map(|e| e.label.clone()).collect()
    };
    let counted = real.prepared.td_events.as_ref().expect("a TD prediction");
    assert_eq!(labels(counted), labels(&td.prediction.events));

    let pass = mrlab::judge::judge_record(&real.prepared, "kernel-smoke", &real.record).unwrap();
    let tdx = pass.tdx_events.expect("TD events counted");
    assert_eq!(tdx.total, td.prediction.events.len());
    let td_only: Vec<&str> = td
        .prediction
        .events
        .iter()
        .filter(|e| !e.platforms.vtpm)
        .map(|e| e.label.as_str())
        .collect();
    let not_checkable: Vec<&str> = tdx.not_checkable.iter().map(|n| n.label.as_str()).collect();
    assert_eq!(not_checkable, td_only);
    assert!(td_only.contains(&"td_hob") && td_only.contains(&"cfv"));
    assert_eq!(tdx.checked, tdx.total - td_only.len());

    let wrong = mutate(&real.record, Mutation::OneBankDigest(9, "sha384"));
    let fail = mrlab::judge::judge_record(&real.prepared, "kernel-smoke", &wrong).unwrap();
    assert_eq!(fail.tdx_events.unwrap().checked, tdx.checked - 1);
}

/// A log event that fails the event check also fails the register check of its PCR; an extra
/// firmware volume blob in PCR0 is the one declared blind spot: PCR0's blobs are not predicted.
#[test]
fn extra_events_fail_the_register_check_too() {
    let real = kernel_smoke();
    for pcr in [8, 12, 14] {
        let mutated = mutate(&real.record, Mutation::ExtraIpl(pcr));
        let report = mrlab::judge::judge_record(&real.prepared, "kernel-smoke", &mutated).unwrap();
        let bad: Vec<&str> = report
            .registers
            .iter()
            .filter(|r| !r.matches)
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            bad,
            [format!("pcr{pcr}:sha256"), format!("pcr{pcr}:sha384")]
        );
    }
    let mutated = mutate(&real.record, Mutation::ExtraFirmwareBlob);
    let report = mrlab::judge::judge_record(&real.prepared, "kernel-smoke", &mutated).unwrap();
    assert_eq!(report.verdict, Verdict::Pass, "{:?}", report.reason);
    assert!(report
        .unpredicted_pcrs
        .iter()
        .any(|u| u.pcr == 0 && u.reason.contains("EV_EFI_PLATFORM_FIRMWARE_BLOB")));
}

/// Boot faults end in `error` with the reason, and leave no process behind.
#[rstest]
#[case::guest_hangs("hang.toml", "boot:")]
#[case::qemu_rejects_an_argument("bad-arg.toml", "bogus-device")]
#[case::unknown_key("bad-key.toml", "memroy")]
#[case::missing_kernel("missing-kernel.toml", "no such file")]
fn faults_are_errors(#[case] file: &str, #[case] reason: &str) {
    let _machine = exclusive();
    let path = common::data(file);
    let report = runtime()
        .block_on(run::run_file(&path, &cache(), &options("faults")))
        .report;
    assert_eq!(
        report.verdict,
        Verdict::Error,
        "{file}: {:?}",
        report.reason
    );
    let why = report.reason.unwrap_or_default();
    assert!(
        why.contains(reason),
        "{file}: reason {why:?} does not mention {reason:?}"
    );
    assert_no_children();
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// No qemu, swtpm or vsock daemon child of this test process is left.
fn assert_no_children() {
    let me = std::process::id() as i32;
    let ours = || -> Vec<(String, i32)> {
        qemu::process::processes()
            .expect("/proc")
            .into_iter()
            // A zombie has exited; tokio reaps it at its next SIGCHLD.
            .filter(|p| p.ppid == me && p.state != "Z")
            .filter(|p| {
                p.comm.starts_with("qemu")
                    || p.comm.starts_with("swtpm")
                    || p.comm.starts_with("vhost-device")
            })
            .map(|p| (p.comm, p.pid))
            .collect()
    };
    // A cancelled boot's groups are SIGKILLed as they drop; give the kernel a moment to end them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !ours().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left = ours();
    assert!(left.is_empty(), "leftover children: {left:?}");
}
