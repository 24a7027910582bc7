//! A careless or hostile user's runs: a full results disk, stale results, clashing or escaping
//! names, a comma and a long path in `--results`. Each must end in a clear error or a clean
//! run, never a pass built on missing data.

mod common;

use mrlab::report::Verdict;
use mrlab::run::{self, Options};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::cache;

fn scenario(name: &str) -> PathBuf {
    common::repo().join("scenarios").join(name)
}

fn options(results: &Path) -> Options {
    Options {
        results: results.to_path_buf(),
        platform: measure::Platform::Vtpm,
        accel: qemu::argv::Accel::Tcg,
        predictors: Vec::new(),
    }
}

fn run_file(path: &Path, results: &Path) -> mrlab::report::ScenarioReport {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(run::run_file(path, &cache(), &options(results)))
        .report
}

/// A scenario that fails before booting: its firmware does not exist.
fn broken(dir: &Path, file: &str, name: &str) -> PathBuf {
    let path = dir.join(file);
    let text = format!(
        "name = {}\nfirmware = \"no-such-firmware.fd\"\n",
        toml::Value::String(name.into())
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

/// A tmpfs of `kib` KiB, unmounted on drop; `None` where mounting is not permitted.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(kib: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallDisk { dir }),
            other => {
                eprintln!("SKIPPED: cannot mount a {kib} KiB tmpfs here ({other:?})");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_results_disk_is_an_error_not_a_pass() {
    // The same scenario on a roomy disk passes; what its logs take is measured there.
    let roomy = tempfile::tempdir().unwrap();
    let reference = run_file(&scenario("kernel-smoke.toml"), roomy.path());
    assert_eq!(reference.verdict, Verdict::Pass, "{:?}", reference.reason);
    let folder = roomy.path().join("kernel-smoke");
    let logs: u64 = ["serial.log", "qemu.stderr", "run.sh"]
        .iter()
        .map(|f| std::fs::metadata(folder.join(f)).map_or(0, |m| m.len().div_ceil(4096) * 4096))
        .sum();
    let evidence: u64 = files_under(&folder.join("evidence"))
        .iter()
        .map(|f| {
            std::fs::metadata(folder.join("evidence").join(f))
                .unwrap()
                .len()
        })
        .sum();
    assert!(evidence > 64 << 10, "evidence is {evidence} bytes");

    // Room for the logs and a little more, not for the evidence.
    let Some(disk) = SmallDisk::mount(logs / 1024 + 16) else {
        return;
    };
    let report = run_file(&scenario("kernel-smoke.toml"), disk.dir.path());
    assert_eq!(report.verdict, Verdict::Error, "{:?}", report.reason);
    // The evidence did not fit; then neither did report.json, which keeps the first failure
    // as a note.
    let said = format!("{:?} {:?}", report.reason, report.notes);
    assert!(
        said.contains("cannot save evidence") && said.contains("No space left on device"),
        "{said}"
    );
}

#[test]
fn a_folder_holds_only_the_new_run_and_a_name_cannot_leave_results() {
    let work = tempfile::tempdir().unwrap();
    let results = work.path().join("results");
    // What an earlier run left: a serial log and evidence that would pass.
    let stale = results.join("stale");
    std::fs::create_dir_all(stale.join("evidence/tpm")).unwrap();
    std::fs::write(stale.join("serial.log"), "old").unwrap();
    std::fs::write(stale.join("evidence/tpm/binary_bios_measurements"), "old").unwrap();
    let report = run_file(&broken(work.path(), "stale.toml", "stale"), &results);
    assert_eq!(report.verdict, Verdict::Error);
    assert_eq!(files_under(&stale), ["report.json"]);

    for (file, name) in [
        ("up.toml", "../../x"),
        ("dot.toml", "."),
        ("abs.toml", "/tmp/x"),
    ] {
        let report = run_file(&broken(work.path(), file, name), &results);
        assert_eq!(report.verdict, Verdict::Error);
        assert!(
            report
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("key `name`"),
            "{name}: {:?}",
            report.reason
        );
    }
    // Nothing was written outside the stale scenario's own folder.
    let mut everything = files_under(work.path());
    everything.retain(|f| !f.ends_with(".toml"));
    assert_eq!(everything, ["results/stale/report.json"]);
}

#[test]
fn two_scenarios_with_one_name_are_an_error() {
    let work = tempfile::tempdir().unwrap();
    let first = broken(work.path(), "a.toml", "same");
    let second = broken(work.path(), "b.toml", "same");
    let output = Command::new(env!("CARGO_BIN_EXE_mrlab"))
        .arg("run")
        .args([&first, &second])
        .arg("--results")
        .arg(work.path().join("results"))
        .arg("--json-report")
        .arg(work.path().join("report.json"))
        .output()
        .expect("mrlab");
    assert_eq!(output.status.code(), Some(1));
    let report = std::fs::read_to_string(work.path().join("report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let reason = report["scenarios"][1]["reason"].as_str().unwrap();
    assert!(
        reason.contains("name `same` is already used by") && reason.contains("a.toml"),
        "{reason}"
    );
}

#[test]
fn a_comma_and_a_long_path_in_results_still_boot() {
    // Sockets live in a short private dir under /tmp; only logs go to the results folder, whose
    // path is longer than a socket path may be and holds a comma.
    let work = tempfile::tempdir().unwrap();
    let results = work.path().join("re,sults").join("x".repeat(120));
    let report = run_file(&scenario("kernel-smoke.toml"), &results);
    assert_eq!(report.verdict, Verdict::Pass, "{:?}", report.reason);
    let folder = results.join("kernel-smoke");
    for file in ["report.json", "serial.log", "run.sh", "qemu.stderr"] {
        assert!(folder.join(file).is_file(), "{file}");
    }
}

#[test]
fn a_file_that_is_no_uefi_firmware_is_refused_before_booting() {
    let work = tempfile::tempdir().unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..2 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(work.path().join("random.fd"), random).unwrap();
    for (firmware, says) in [
        ("random.fd", "holds no EFI firmware volume"),
        ("/dev/null", "not a regular file"),
        ("/tmp", "is a directory"),
    ] {
        let path = work.path().join("s.toml");
        std::fs::write(&path, format!("name = \"s\"\nfirmware = \"{firmware}\"\n")).unwrap();
        let started = std::time::Instant::now();
        let report = run_file(&path, &work.path().join("results"));
        assert_eq!(report.verdict, Verdict::Error);
        let reason = report.reason.unwrap_or_default();
        assert!(
            reason.contains("key `firmware`") && reason.contains(says),
            "{firmware}: {reason}"
        );
        assert!(
            started.elapsed().as_secs() < 10,
            "{firmware}: refused only after a boot"
        );
    }
}

#[test]
fn endless_inputs_are_refused_by_size() {
    for args in [
        &["replay", "/dev/zero"][..],
        &["quote", "/dev/zero"],
        &["firmware", "/dev/zero"],
        &["pe", "/dev/zero"],
        &[
            "diagnose",
            "--scenario",
            "kernel-smoke.toml",
            "--event-log",
            "/dev/zero",
            "--quote",
            "/dev/zero",
        ],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_mrlab"))
            .args(args)
            .current_dir(scenario("."))
            .output()
            .expect("mrlab");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("/dev/zero: larger than"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_command_line_the_efi_stub_truncates_is_warned_about() {
    // QEMU accepts the line (shorter than the 6.1 kernel's 2047-byte limit); OVMF appends
    // " initrd=initrd", and the EFI stub cuts the result.
    let work = tempfile::tempdir().unwrap();
    let mut cmdline = String::from("console=ttyS0 mrlab.pad=");
    cmdline.push_str(&"x".repeat(2040 - cmdline.len()));
    let path = work.path().join("long.toml");
    let text = std::fs::read_to_string(scenario("kernel-smoke.toml"))
        .unwrap()
        .replace(
            "cmdline = \"console=ttyS0\"",
            &format!("cmdline = \"{cmdline}\""),
        )
        .replace("name = \"kernel-smoke\"", "name = \"long-cmdline\"");
    std::fs::write(&path, text).unwrap();
    let report = run_file(&path, &work.path().join("results"));
    let warning = report
        .notes
        .iter()
        .find(|n| n.starts_with("warning: the kernel's EFI stub truncated the command line"));
    assert!(
        warning.is_some(),
        "{:?} {:?} {:?}",
        report.verdict,
        report.reason,
        report.notes
    );
}

/// `mrlab replay log | head -1`: the reader closes the pipe early; mrlab must end quietly, not
/// panic on the write (Rust ignores SIGPIPE, so the write fails with EPIPE instead).
#[test]
fn a_stdout_closed_by_its_reader_ends_the_command_quietly() {
    let log = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../fixtures/tpm-eventlog/gotpmtools-arch-linux-workstation/arch-linux-workstation.bin",
    );
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_mrlab"))
        .arg("replay")
        .arg(&log)
        .stdout(writer)
        .output()
        .expect("mrlab runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.is_empty(),
        "a closed reader is not an error: {stderr}"
    );
}
