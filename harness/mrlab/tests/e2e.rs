//! End to end on the vtpm backend: one test per `scenarios/*.toml` (boots it for real under
//! QEMU + OVMF + swtpm), plus the faults that must end in `error` or `fail`, never `pass`.
//!
//! Each scenario's reviewable projection is an insta snapshot under `results/snapshots/`
//! (`cargo insta review` after a QEMU/OVMF change). Digests that depend on our own agent
//! initramfs (initrd, and the kernel whose patched header records the initrd size) are shown
//! as such, so a rebuilt agent does not churn every snapshot; they are still compared, byte
//! for byte, by the run itself.

use mrlab::compare::Outcome;
use mrlab::report::{ScenarioReport, Verdict};
use mrlab::run::{self, Options};
use mrlab::scenario::Scenario;
use rstest::rstest;
use serde::Serialize;
use std::path::{Path, PathBuf};

fn cache() -> images::Cache {
    images::Cache::open(&images::workspace_root()).expect("image cache (run ci/setup-host.sh)")
}

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
    events: Vec<String>,
    fw_cfg_sha384: Vec<String>,
    tdx_events_checked: Option<(usize, usize)>,
}

fn projection(report: &ScenarioReport) -> Projection {
    Projection {
        name: report.name.clone(),
        verdict: report.verdict,
        qemu: report.qemu_version.clone(),
        ovmf: report.ovmf_version.clone(),
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
        tdx_events_checked: report.tdx_events_checked,
    }
}

#[rstest]
fn scenario_passes(#[files("../../scenarios/*.toml")] path: PathBuf) {
    let _machine = shared();
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let out = runtime().block_on(run::run_file(&path, &cache(), &options("scenarios")));
    let report = out.report;
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
    insta::with_settings!({
        snapshot_path => "../../../results/snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_yaml_snapshot!(name.as_str(), projection(&report));
    });
}

/// A prediction made with the wrong command line must fail, naming the cmdline event first:
/// `linux:cmdline` (PCR9) for -kernel boot, the UKI's `.cmdline` section (PCR11) for UKI boot.
#[rstest]
#[case::kernel("wrong-cmdline.toml", "linux:cmdline")]
#[case::uki("wrong-uki-cmdline.toml", "uki:.cmdline")]
fn wrong_cmdline_prediction_fails_at_the_cmdline_event(#[case] file: &str, #[case] label: &str) {
    let _machine = shared();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    let report = runtime()
        .block_on(run::run_file(&path, &cache(), &options("wrong-cmdline")))
        .report;
    assert_eq!(report.verdict, Verdict::Fail, "{:?}", report.reason);
    let first = report.first_divergence.expect("a first divergence");
    assert_eq!(first.label.as_deref(), Some(label));
    assert_eq!(first.outcome, Outcome::Mismatched);
    assert!(report.reason.unwrap().contains(label));
}

/// Two VMs that differ in one device get different ACPI tables from the oracle, and their
/// committed snapshots show it.
#[test]
fn one_more_device_changes_the_acpi_tables() {
    let _machine = shared();
    let rt = runtime();
    let tables = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../scenarios")
            .join(format!("{name}.toml"));
        let scenario = Scenario::load(&path).unwrap();
        let p = rt
            .block_on(run::prepare(&scenario, &cache(), measure::Platform::Vtpm))
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

/// A corrupted or truncated evidence record is an error, never a pass; so is a serial log
/// without one. Uses a real serial log from a real boot.
#[test]
fn corrupt_or_missing_evidence_is_an_error() {
    let _machine = shared();
    let scenario = Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/kernel-smoke.toml"),
    )
    .unwrap();
    let rt = runtime();
    let out = rt.block_on(run::run_scenario(
        &scenario,
        "kernel-smoke",
        &cache(),
        &options("corrupt"),
    ));
    assert_eq!(out.report.verdict, Verdict::Pass, "{:?}", out.report.reason);
    let dir = results("corrupt").join("kernel-smoke");
    let serial = std::fs::read(dir.join("serial.log")).expect("serial.log kept");
    // The judge of the platform the guest ran on: a TD's record (MRLAB_BACKEND=tdx) goes to
    // the TD judge, as in `mrlab run --backend tdx`.
    let prepared = rt
        .block_on(run::prepare(&scenario, &cache(), platform()))
        .unwrap();
    let judge = |bytes: &[u8]| run::judge(&prepared, "kernel-smoke", bytes, &dir.join("judge"));
    assert_eq!(
        judge(&serial).expect("the real serial log judges").verdict,
        Verdict::Pass
    );

    let begin = find(&serial, b"MRLAB-RECORD-BEGIN").expect("record in serial.log");
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
    let record = mrlab::diagnose::record_from_dir(&dir).expect("evidence/ in the results folder");
    let again = run::judge_record(&prepared, "kernel-smoke", &record).expect("judges");
    assert_eq!(again.verdict, Verdict::Pass, "{:?}", again.reason);
    assert!(mrlab::diagnose::record_from_dir(&dir.join("no-such-folder")).is_err());
}

/// Boot faults end in `error` with the reason, and leave no process behind.
#[rstest]
#[case::guest_hangs("hang.toml", "boot:")]
#[case::qemu_rejects_an_argument("bad-arg.toml", "bogus-device")]
#[case::unknown_key("bad-key.toml", "memroy")]
#[case::missing_kernel("missing-kernel.toml", "no such file")]
#[case::uki_with_a_nic("uki-with-nic.toml", "network boot options")]
fn faults_are_errors(#[case] file: &str, #[case] reason: &str) {
    let _machine = exclusive();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
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
    for p in qemu::process::processes().expect("/proc") {
        if p.ppid == me
            && (p.comm.starts_with("qemu")
                || p.comm.starts_with("swtpm")
                || p.comm.starts_with("vhost-device"))
        {
            panic!("leftover child {} ({})", p.comm, p.pid);
        }
    }
}
