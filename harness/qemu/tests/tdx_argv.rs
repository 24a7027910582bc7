//! The TD command line (`argv` with `Backend::Tdx`) against the pinned QEMUs' own option parsers.
//!
//! No host here has TDX, so QEMU cannot start a TD. What it can do is parse and apply every
//! option it handles before it initialises the accelerator (`-object`, `-machine` and its
//! properties, the `confidential-guest-support` link, memory backends, `-smp`, `-m`, chardevs)
//! and then stop at `-accel kvm`. A run that ends on an `-accel kvm:` error (or KVM's own
//! "Could not access KVM kernel module") failed only for want of KVM/TDX; any other message names
//! an option the parser refused. Devices, `-bios` and `-kernel` are opened after the accelerator,
//! so this test does not reach them (the vtpm boots run the same `-device` arguments).

use qemu::argv::{argv, Backend, RunDir, TdxFlavour};
use qemu::{Boot, Device, QemuBinary, Vm};
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn cache() -> images::Cache {
    images::Cache::open(&images::workspace_root()).expect("images/packages.lock")
}

/// A `-kernel` TD on the IntelTdx build with the devices of a dstack-like VM.
fn td() -> Vm {
    let cache = cache();
    let firmware = cache
        .firmware("ovmf-2026.08-inteltdx")
        .unwrap_or_else(|e| panic!("{e}"));
    let kernel = cache
        .kernel("kernel-6.12")
        .unwrap_or_else(|e| panic!("{e}"))
        .vmlinuz;
    let mut vm = Vm::new(
        firmware,
        2,
        2 << 30,
        Boot::Kernel {
            kernel,
            initrd: None,
            cmdline: "console=ttyS0".into(),
        },
    );
    vm.devices = vec![
        Device::Net {
            id: "net0".into(),
            mac: None,
        },
        Device::Vsock { guest_cid: 3 },
        Device::PcieRootPort { chassis: 1 },
    ];
    vm
}

/// How QEMU ended with a TD command line.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Every option was accepted; it stopped at the accelerator (no KVM, or KVM without TDX).
    NeedsKvmTdx(String),
    /// Still running after the deadline: a TDX host started the TD (it was killed).
    Started,
    /// The parser refused an option, or QEMU failed for another reason: its stderr.
    Refused(String),
}

/// Whether every line QEMU printed is about the KVM accelerator: `-accel kvm: vm-type TDX not
/// supported by KVM` (KVM without TDX), `-accel kvm: failed to initialize kvm: …` after
/// `Could not access KVM kernel module: …` (no /dev/kvm).
fn wants_only_kvm_tdx(stderr: &str) -> bool {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    !lines.is_empty()
        && lines.iter().all(|line| {
            let message = line.strip_prefix("qemu-system-x86_64: ").unwrap_or(line);
            message.starts_with("-accel kvm: ")
                || message.starts_with("Could not access KVM kernel module: ")
        })
}

fn classify(stderr: String, exited: bool) -> Outcome {
    if !exited {
        Outcome::Started
    } else if wants_only_kvm_tdx(&stderr) {
        Outcome::NeedsKvmTdx(stderr)
    } else {
        Outcome::Refused(stderr)
    }
}

/// Runs `qemu` with `args` for at most 20 s.
fn run(qemu: &QemuBinary, args: &[String]) -> Outcome {
    let mut child = qemu
        .command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start QEMU");
    let deadline = Instant::now() + Duration::from_secs(20);
    let exited = loop {
        if child.try_wait().expect("wait for QEMU").is_some() {
            break true;
        }
        if Instant::now() > deadline {
            child.kill().expect("kill QEMU");
            child.wait().expect("reap QEMU");
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("QEMU stderr");
    classify(stderr, exited)
}

fn td_argv(flavour: TdxFlavour, dir: &std::path::Path) -> Vec<String> {
    argv(&td(), &Backend::Tdx { flavour }, &RunDir::new(dir))
}

fn assert_accepted(qemu_id: &str, flavour: TdxFlavour) {
    let qemu = cache().qemu(qemu_id).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let outcome = run(&qemu, &td_argv(flavour, dir.path()));
    assert!(
        matches!(outcome, Outcome::NeedsKvmTdx(_) | Outcome::Started),
        "{qemu_id}, {flavour:?} TD argv: {outcome:?}"
    );
}

#[test]
fn qemu_11_1_accepts_the_upstream_td_command_line() {
    assert_accepted("qemu-11.1", TdxFlavour::Upstream);
}

/// The flavour the quirk table picks for QEMU < 10.1 (a named RAM backend), which 11.1 still
/// parses.
#[test]
fn qemu_11_1_accepts_the_named_memory_backend_td_command_line() {
    assert_accepted("qemu-11.1", TdxFlavour::Canonical82);
}

/// Debian's QEMU 10.0 predates upstream TDX (10.1): it has no `tdx-guest` object type, so no
/// flavour of the TD command line can run on it; the parser says so on the `-object` option.
#[test]
fn qemu_10_0_has_no_tdx_guest_object() {
    let qemu = cache().qemu("qemu-10.0").unwrap_or_else(|e| panic!("{e}"));
    for flavour in [TdxFlavour::Upstream, TdxFlavour::Canonical82] {
        let dir = tempfile::tempdir().expect("temp dir");
        match run(&qemu, &td_argv(flavour, dir.path())) {
            Outcome::Refused(stderr) => assert!(
                stderr.contains("-object tdx-guest,id=tdx: ")
                    && stderr.contains("'qom-type' does not accept value 'tdx-guest'"),
                "{flavour:?}: {stderr}"
            ),
            other => panic!("qemu-10.0, {flavour:?}: expected a refused tdx-guest, got {other:?}"),
        }
    }
}

/// The check can fail: one unknown property in the TD's own options is an option error, not a
/// want of KVM, on both the `-object` and the `-machine` option.
#[test]
fn an_option_error_is_not_taken_for_a_missing_kvm() {
    let qemu = cache().qemu("qemu-11.1").unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let good = td_argv(TdxFlavour::Upstream, dir.path());
    for (option, value) in [("-object", "tdx-guest,id=tdx"), ("-machine", "q35")] {
        let mut args = good.clone();
        let at = args
            .windows(2)
            .position(|w| w[0] == option && w[1].starts_with(value))
            .expect("the option is in the TD argv")
            + 1;
        args[at] += ",no-such-property=on";
        match run(&qemu, &args) {
            Outcome::Refused(stderr) => {
                assert!(stderr.contains("no-such-property"), "{option}: {stderr}")
            }
            other => panic!("{option} with an unknown property: {other:?}"),
        }
    }
    assert!(!wants_only_kvm_tdx(""));
    assert!(!wants_only_kvm_tdx(
        "qemu-system-x86_64: -accel kvm: vm-type TDX not supported by KVM\n\
         qemu-system-x86_64: -bios x: could not load firmware\n"
    ));
    assert!(wants_only_kvm_tdx(
        "Could not access KVM kernel module: No such file or directory\n\
         qemu-system-x86_64: -accel kvm: failed to initialize kvm: No such file or directory\n"
    ));
}
