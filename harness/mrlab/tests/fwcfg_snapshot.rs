//! Verifier mode: `mrlab predict --fwcfg DIR` predicts from a `mrlab fwcfg` snapshot exactly
//! what the live oracle predicts, for every matrix scenario, and needs no QEMU to do it.

mod common;

use measure::predict::Prediction;
use measure::Platform;
use mrlab::scenario::Scenario;
use std::path::PathBuf;
use std::process::Command;

fn scenarios() -> Vec<PathBuf> {
    let dir = common::repo().join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

use common::cache;

/// What a prediction says, as one comparable value.
fn view(p: &Prediction) -> (Vec<measure::Event>, Vec<u32>, Vec<(u32, String)>) {
    (
        p.events.clone(),
        p.full_pcrs.iter().copied().collect(),
        p.unpredicted
            .iter()
            .map(|u| (u.pcr, u.reason.to_string()))
            .collect(),
    )
}

#[test]
fn every_matrix_scenario_predicts_the_same_from_its_snapshot() {
    let cache = cache();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let files = scenarios();
    assert!(files.len() >= 30, "the matrix: {files:?}");
    for file in files {
        let scenario = Scenario::load(&file).expect("scenario");
        let live = rt
            .block_on(mrlab::prepare::prepare(&scenario, &cache, Platform::Vtpm))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let dir = tempfile::tempdir().unwrap();
        mrlab::snapshot::write(dir.path(), &live.resolved, &live.oracle).expect("snapshot");
        let offline = mrlab::snapshot::prepare(&scenario, &cache, Platform::Vtpm, dir.path())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            view(&offline.prediction),
            view(&live.prediction),
            "{}",
            file.display()
        );
        assert_eq!(offline.td_events, live.td_events, "{}", file.display());
        assert_eq!(offline.oracle, live.oracle, "{}", file.display());
    }
}

/// The CLI with a PATH that holds cargo (the agent initramfs is checked with it) and no QEMU:
/// the same JSON as the live prediction, for a vTPM and a TD snapshot.
#[test]
fn predict_from_a_snapshot_runs_without_qemu_on_path() {
    let mrlab = env!("CARGO_BIN_EXE_mrlab");
    let cargo = PathBuf::from(std::env::var("CARGO").expect("cargo runs the tests"));
    let no_qemu_path = cargo.parent().unwrap();
    assert!(!no_qemu_path.join("qemu-system-x86_64").exists());
    let scenario = common::scenario_path("nic-1");
    for (platform, dump_flags) in [("vtpm", &[][..]), ("tdx", &["--no-tpm"][..])] {
        let dir = tempfile::tempdir().unwrap();
        let dump = Command::new(mrlab)
            .arg("fwcfg")
            .arg(&scenario)
            .args(dump_flags)
            .arg("--out")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            dump.status.success(),
            "{}",
            String::from_utf8_lossy(&dump.stderr)
        );
        let predict = |offline: bool| {
            let mut cmd = Command::new(mrlab);
            cmd.arg("predict")
                .arg(&scenario)
                .args(["--json", "--platform", platform]);
            if offline {
                cmd.arg("--fwcfg").arg(dir.path()).env("PATH", no_qemu_path);
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{platform} offline={offline}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let offline = predict(true);
        assert!(!offline.is_empty());
        let mut offline: serde_json::Value = serde_json::from_slice(&offline).unwrap();
        let mut live: serde_json::Value = serde_json::from_slice(&predict(false)).unwrap();
        // A TD event's `verified-vtpm` needs this VM's vTPM prediction, which a TD snapshot
        // cannot give (its fw_cfg is the TD's): offline it may only fall back to `unverified`,
        // never claim more. Everything else is equal.
        let verifications = |doc: &mut serde_json::Value| -> Vec<serde_json::Value> {
            doc["events"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .map(|e| e.as_object_mut().unwrap().remove("verification").unwrap())
                .collect()
        };
        let (off, on) = (verifications(&mut offline), verifications(&mut live));
        assert_eq!(offline, live, "{platform}");
        for (off, on) in off.iter().zip(&on) {
            assert!(
                off == on || off == "unverified",
                "{platform}: {off} offline, {on} live"
            );
        }
    }
}

/// A snapshot of another VM, or one whose file changed, is an error naming the problem.
#[test]
fn a_snapshot_that_does_not_fit_is_refused() {
    let cache = cache();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = common::repo().join("scenarios");
    let nic1 = Scenario::load(&dir.join("nic-1.toml")).unwrap();
    let live = rt
        .block_on(mrlab::prepare::prepare(&nic1, &cache, Platform::Vtpm))
        .unwrap();
    let snap = tempfile::tempdir().unwrap();
    mrlab::snapshot::write(snap.path(), &live.resolved, &live.oracle).unwrap();
    let err = |scenario: &Scenario, platform| {
        let e = mrlab::snapshot::prepare(scenario, &cache, platform, snap.path())
            .err()
            .expect("refused");
        mrlab::error::chain(&e)
    };
    let nic2 = Scenario::load(&dir.join("nic-2.toml")).unwrap();
    let e = err(&nic2, Platform::Vtpm);
    assert!(e.contains("does not fit scenario nic-2: vm.devices"), "{e}");
    let e = err(&nic1, Platform::Tdx);
    assert!(e.contains("vm.tpm: the snapshot has true"), "{e}");
    // RAM in a NUMA node (hugepages: an SRAT) against a snapshot without one.
    let mut numa = nic1.clone();
    numa.machine.hugepages = true;
    let e = err(&numa, Platform::Vtpm);
    assert!(
        e.contains("does not fit scenario nic-1: vm.machine.numa_node0_memory_file"),
        "{e}"
    );
    let qemu10 = Scenario::load(&dir.join("qemu10-kernel-smoke.toml")).unwrap();
    let e = err(&qemu10, Platform::Vtpm);
    assert!(
        e.contains("does not fit scenario qemu10-kernel-smoke: qemu"),
        "{e}"
    );
    // One byte of the DSDT changed.
    let tables = snap.path().join("etc/acpi/tables");
    let mut bytes = std::fs::read(&tables).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&tables, bytes).unwrap();
    let e = err(&nic1, Platform::Vtpm);
    assert!(e.contains("etc/acpi/tables: sha256"), "{e}");
    // The option ROM is measured (PCR2): a snapshot without it is refused too.
    std::fs::remove_file(snap.path().join("(option-rom)/efi-virtio.rom")).unwrap();
    std::fs::write(&tables, live.oracle.get("etc/acpi/tables").expect("dumped")).unwrap();
    let e = err(&nic1, Platform::Vtpm);
    assert!(e.contains("efi-virtio.rom"), "{e}");
}
