//! A real `mrlab run` interrupted mid-boot and mid-oracle: SIGINT and SIGTERM must leave no
//! process of its tree and no temp dir of its own within 2 s, and still write the reports of
//! the scenarios that finished; SIGKILL (no handler runs) must leave no process within 5 s.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn scenario(name: &str) -> PathBuf {
    common::repo().join("scenarios").join(name)
}

/// What to wait for before signalling: the boot's QEMU (QMP), the oracle's (qtest), or an
/// external predictor that runs after the boot and never ends by itself.
#[derive(Clone, Copy)]
enum Phase {
    Boot,
    Oracle,
    Predictor,
}

/// The `--predictor` command of [`Phase::Predictor`] (`sh -c 'sleep 600; : "$@"'`: the
/// inputs.json argument goes to `:`).
const SLOW_PREDICTOR: &str = "sleep 600; :";

impl Phase {
    fn marker(self) -> &'static str {
        match self {
            Phase::Boot => "-qmp",
            Phase::Oracle => "-qtest",
            Phase::Predictor => "sleep 600",
        }
    }

    /// Whether a child's command line is this phase's process. A child forked but not yet
    /// exec'd shows mrlab's own argv, which holds the predictor command: that one must start
    /// the line.
    fn matches(self, cmdline: &str) -> bool {
        match self {
            Phase::Predictor => cmdline.starts_with(self.marker()),
            _ => cmdline.contains(self.marker()),
        }
    }
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Live pids of `root`'s process tree (by parent links), `root` included.
fn tree(root: i32) -> Vec<i32> {
    let procs: Vec<_> = qemu::process::processes()
        .expect("/proc")
        .into_iter()
        .filter(|p| p.state != "Z")
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(procs.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        i += 1;
    }
    found
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim().to_string())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

struct Run {
    child: Child,
    tmp: tempfile::TempDir,
    work: tempfile::TempDir,
}

/// Starts `mrlab run` on `scenarios` (one at a time) with a private TMPDIR, and waits until a
/// QEMU of `phase` runs in its tree.
fn start(scenarios: &[PathBuf], phase: Phase) -> Run {
    let tmp = tempfile::tempdir().expect("tmp");
    let work = tempfile::tempdir().expect("work");
    let child = Command::new(env!("CARGO_BIN_EXE_mrlab"))
        .arg("run")
        .args(scenarios)
        .args(["--jobs", "1", "--results"])
        .arg(work.path().join("results"))
        .arg("--json-report")
        .arg(work.path().join("report.json"))
        .arg("--junit")
        .arg(work.path().join("junit.xml"))
        .args(match phase {
            Phase::Predictor => vec!["--predictor".to_string(), format!("slow={SLOW_PREDICTOR}")],
            _ => Vec::new(),
        })
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mrlab");
    let mut run = Run { child, tmp, work };
    let pid = run.child.id() as i32;
    let start = Instant::now();
    loop {
        // Children only: mrlab's own argv holds the predictor command.
        if tree(pid)
            .iter()
            .any(|&p| p != pid && phase.matches(&cmdline(p)))
        {
            return run;
        }
        if let Ok(Some(status)) = run.child.try_wait() {
            panic!(
                "mrlab exited ({status}) before its {} QEMU ran",
                phase.marker()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no {} QEMU",
            phase.marker()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Signals mrlab; returns its exit status and what of its tree and temp dirs is left after
/// `within`.
fn interrupt(run: &mut Run, signal: i32, within: Duration) -> (Option<i32>, Vec<String>) {
    let pid = run.child.id() as i32;
    let before = tree(pid);
    assert!(
        before.len() >= 2,
        "mrlab has no children to leave behind: {before:?}"
    );
    // SAFETY: signals the mrlab child this test started; no memory is touched.
    unsafe {
        libc::kill(pid, signal);
    }
    let start = Instant::now();
    let mut status = None;
    loop {
        if status.is_none() {
            status = run.child.try_wait().expect("wait");
        }
        let procs: Vec<String> = before
            .iter()
            .filter(|&&p| p != pid && alive(p))
            .map(|&p| format!("{p} {}", cmdline(p)))
            .collect();
        let dirs: Vec<String> = std::fs::read_dir(run.tmp.path())
            .expect("tmp")
            .flatten()
            .map(|e| e.path().display().to_string())
            .collect();
        let left: Vec<String> = procs.into_iter().chain(dirs).collect();
        if (status.is_some() && left.is_empty()) || start.elapsed() > within {
            return (status.map(|s| s.code().unwrap_or(-1)), left);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_clean_exit(run: &mut Run, signal: i32, code: i32) {
    let (status, left) = interrupt(run, signal, Duration::from_secs(2));
    assert!(left.is_empty(), "left behind after 2 s: {left:?}");
    assert_eq!(status, Some(code), "mrlab's exit status");
}

#[test]
fn sigint_mid_boot_ends_every_child_and_reports_what_finished() {
    // The first scenario fails before booting (a missing firmware): it finished, and its report
    // must be in the run's reports beside the interrupted one.
    let work = tempfile::tempdir().expect("scenario dir");
    let broken = work.path().join("broken.toml");
    std::fs::write(
        &broken,
        "name = \"broken\"\nfirmware = \"no-such-firmware.fd\"\n",
    )
    .unwrap();
    let mut run = start(&[broken, scenario("kernel-smoke.toml")], Phase::Boot);
    assert_clean_exit(&mut run, libc::SIGINT, 130);
    let report = std::fs::read_to_string(run.work.path().join("report.json")).expect("report");
    let report: serde_json::Value = serde_json::from_str(&report).expect("json");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 2, "{report}");
    assert_eq!(scenarios[0]["name"], "broken");
    assert!(
        scenarios[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no-such-firmware.fd"),
        "{report}"
    );
    assert_eq!(scenarios[1]["verdict"], "error");
    assert_eq!(
        scenarios[1]["reason"],
        "interrupted by SIGINT before it finished"
    );
    let junit = std::fs::read_to_string(run.work.path().join("junit.xml")).expect("junit");
    assert!(junit.contains("interrupted by SIGINT"), "{junit}");
}

#[test]
fn sigterm_mid_boot_ends_every_child() {
    let mut run = start(&[scenario("kernel-smoke.toml")], Phase::Boot);
    assert_clean_exit(&mut run, libc::SIGTERM, 143);
}

#[test]
fn sigint_mid_oracle_ends_the_oracle_and_removes_its_temp_dir() {
    let mut run = start(&[scenario("kernel-smoke.toml")], Phase::Oracle);
    assert_clean_exit(&mut run, libc::SIGINT, 130);
}

#[test]
fn sigterm_mid_oracle_ends_the_oracle_and_removes_its_temp_dir() {
    let mut run = start(&[scenario("kernel-smoke.toml")], Phase::Oracle);
    assert_clean_exit(&mut run, libc::SIGTERM, 143);
}

#[test]
fn sigint_during_an_external_predictor_ends_it() {
    let mut run = start(&[scenario("kernel-smoke.toml")], Phase::Predictor);
    assert_clean_exit(&mut run, libc::SIGINT, 130);
}

#[test]
fn sigkill_mid_boot_leaves_nothing() {
    let mut run = start(&[scenario("kernel-smoke.toml")], Phase::Boot);
    let (status, left) = interrupt(&mut run, libc::SIGKILL, Duration::from_secs(5));
    // No handler runs on SIGKILL: the children die by their parent-death signal, the guardian
    // removes the temp dirs.
    assert!(left.is_empty(), "left behind after 5 s: {left:?}");
    assert_eq!(status, Some(-1), "killed by a signal");
}
