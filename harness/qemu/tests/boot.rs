//! Supervised boots under TCG: a real kernel boot, and faults that must end in a clear error
//! with no QEMU or swtpm left behind and no run dir left over.

mod common;

use common::{kernel, ovmf, vsock_daemon};
use qemu::{boot, Accel, Backend, Boot, BootError, BootOptions, Device, Vm, VsockHost};
use std::time::Duration;
use tokio::sync::Mutex;

/// Tests that kill our own children must not see another test's children.
static SERIAL: Mutex<()> = Mutex::const_new(());

const TCG: Backend = Backend::Vtpm { accel: Accel::Tcg };

fn kernel_vm() -> Vm {
    Vm::new(
        ovmf(),
        1,
        512 << 20,
        Boot::Kernel {
            kernel: kernel(),
            initrd: None,
            cmdline: "console=ttyS0 panic=-1".into(),
        },
    )
}

/// Our live child processes (pid, command name), from /proc.
fn children() -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    qemu::process::processes()
        .expect("/proc")
        .into_iter()
        .filter(|p| p.ppid == me && p.state != "Z")
        .map(|p| (p.pid, p.comm))
        .collect()
}

fn options(root: &tempfile::TempDir, timeout: u64) -> BootOptions {
    let mut opts = BootOptions::new(Duration::from_secs(timeout));
    opts.qemu_binary = common::qemu();
    opts.temp_root = Some(root.path().to_path_buf());
    opts
}

fn assert_clean(root: &tempfile::TempDir) {
    let left: Vec<_> = children()
        .into_iter()
        .filter(|(_, comm)| {
            comm.starts_with("qemu")
                || comm.starts_with("swtpm")
                || comm.starts_with("vhost-device")
        })
        .collect();
    assert!(left.is_empty(), "leftover processes: {left:?}");
    let dirs: Vec<_> = std::fs::read_dir(root.path())
        .expect("root")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(dirs.is_empty(), "leftover run dirs: {dirs:?}");
}

/// Kills our first child whose command name starts with `prefix`, once it exists.
async fn kill_child_after(prefix: &str, delay: Duration) {
    tokio::time::sleep(delay).await;
    let (pid, _) = children()
        .into_iter()
        .find(|(_, comm)| comm.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} child to kill"));
    // SAFETY: signals one pid of our own child; no memory is touched.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// A panicking kernel ends the boot with its panic line, long before the deadline: at once when
/// it would spin forever (no `panic=`), and after the reset QEMU exits on with `panic=-1`.
#[tokio::test]
async fn kernel_panic_ends_the_boot_with_its_reason() {
    let _guard = SERIAL.lock().await;
    for cmdline in ["console=ttyS0 panic=-1", "console=ttyS0"] {
        let root = tempfile::tempdir().expect("root");
        let mut vm = kernel_vm();
        vm.tpm = true;
        if let Boot::Kernel { cmdline: c, .. } = &mut vm.boot {
            *c = cmdline.into();
        }
        let started = std::time::Instant::now();
        let err = boot(&vm, &TCG, &options(&root, 150))
            .await
            .expect_err("no root fs: the kernel panics");
        match &err {
            BootError::KernelPanic { line, .. } => assert_eq!(
                line,
                "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
                "{cmdline}: {err}"
            ),
            other => panic!("{cmdline}: expected KernelPanic, got {other}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{cmdline}: took {:?}, the deadline decided",
            started.elapsed()
        );
        assert_clean(&root);
    }
}

#[tokio::test]
async fn bogus_device_is_rejected_with_qemu_stderr() {
    let _guard = SERIAL.lock().await;
    let root = tempfile::tempdir().expect("root");
    let mut vm = kernel_vm();
    vm.devices.push(Device::Disk(qemu::Disk {
        id: "hd0".into(),
        file: "/nonexistent/mrlab-disk.img".into(),
        format: qemu::DiskFormat::Raw,
        readonly: true,
        serial: None,
    }));
    let err = boot(&vm, &TCG, &options(&root, 30))
        .await
        .expect_err("missing disk");
    match &err {
        BootError::Rejected { stderr, .. } => {
            assert!(stderr.contains("/nonexistent/mrlab-disk.img"), "{err}")
        }
        other => panic!("expected Rejected, got {other}"),
    }
    assert_clean(&root);
}

#[tokio::test]
async fn unknown_device_driver_is_rejected() {
    let _guard = SERIAL.lock().await;
    let root = tempfile::tempdir().expect("root");
    let mut opts = options(&root, 30);
    // A wrapper adding `-device mrlab-bogus` to the argv the harness builds.
    let wrapper = root
        .path()
        .join("..")
        .join(format!("mrlab-qemu-wrapper-{}", std::process::id()));
    let managed = common::qemu();
    let exec: Vec<String> = std::iter::once(managed.executable().display().to_string())
        .chain(managed.leading_args())
        .map(|w| format!("'{w}'"))
        .collect();
    let env: String = managed
        .env
        .iter()
        .map(|(k, v)| format!("export {k}='{}'\n", v.display()))
        .collect();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n{env}exec {} \"$@\" -device mrlab-bogus\n",
            exec.join(" ")
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    opts.qemu_binary = qemu::QemuBinary::at(&wrapper);
    let err = boot(&kernel_vm(), &TCG, &opts)
        .await
        .expect_err("bogus device");
    let _ = std::fs::remove_file(&wrapper);
    match &err {
        BootError::Rejected { stderr, .. } => assert!(stderr.contains("mrlab-bogus"), "{err}"),
        other => panic!("expected Rejected, got {other}"),
    }
    assert_clean(&root);
}

#[tokio::test]
async fn guest_without_boot_device_hangs_past_timeout() {
    let _guard = SERIAL.lock().await;
    let root = tempfile::tempdir().expect("root");
    let vm = Vm::new(ovmf(), 1, 256 << 20, Boot::Disk);
    let err = boot(&vm, &TCG, &options(&root, 5)).await.expect_err("hang");
    assert!(matches!(err, BootError::Hung { .. }), "{err}");
    assert!(
        err.to_string().contains("guest still running after 5s"),
        "{err}"
    );
    assert_clean(&root);
}

#[tokio::test]
async fn qemu_killed_mid_boot_is_an_early_exit() {
    let _guard = SERIAL.lock().await;
    let root = tempfile::tempdir().expect("root");
    let (vm, opts) = (kernel_vm(), options(&root, 60));
    let (result, ()) = tokio::join!(
        boot(&vm, &TCG, &opts),
        kill_child_after("qemu", Duration::from_secs(2)),
    );
    let err = result.expect_err("killed");
    assert!(matches!(err, BootError::ExitedEarly { .. }), "{err}");
    assert!(err.to_string().contains("signal: 9"), "{err}");
    assert_clean(&root);
}

#[tokio::test]
async fn swtpm_dying_mid_boot_is_reported() {
    let _guard = SERIAL.lock().await;
    let root = tempfile::tempdir().expect("root");
    let mut vm = kernel_vm();
    vm.tpm = true;
    let opts = options(&root, 60);
    let (result, ()) = tokio::join!(
        boot(&vm, &TCG, &opts),
        kill_child_after("swtpm", Duration::from_secs(3)),
    );
    let err = result.expect_err("swtpm killed");
    assert!(matches!(err, BootError::SwtpmDied { .. }), "{err}");
    assert!(
        err.to_string().starts_with("swtpm died (signal: 9"),
        "{err}"
    );
    assert_clean(&root);
}

fn vsock_vm(daemon: std::path::PathBuf) -> Vm {
    let mut vm = kernel_vm();
    vm.devices.push(Device::Vsock { guest_cid: 3 });
    vm.vsock_host = VsockHost::User { daemon };
    vm
}

#[tokio::test]
async fn vhost_user_vsock_boots_and_its_daemon_goes_with_the_vm() {
    let _guard = SERIAL.lock().await;
    let root = tempfile::tempdir().expect("root");
    let logs = tempfile::tempdir().expect("logs");
    let mut opts = options(&root, 90);
    opts.save_logs_to = Some(logs.path().to_path_buf());
    // No initrd: the kernel gets past PCI enumeration and panics at mounting its root.
    let err = boot(&vsock_vm(vsock_daemon()), &TCG, &opts)
        .await
        .expect_err("no root fs: the kernel panics");
    assert!(matches!(err, BootError::KernelPanic { .. }), "{err}");
    let serial = std::fs::read_to_string(logs.path().join("serial.log")).expect("saved serial");
    // Linux enumerates the virtio-vsock function (modern-only id 1af4:1053, class 0x0780).
    assert!(
        serial.contains("pci 0000:00:01.0: [1af4:1053] type 00 class 0x078000"),
        "serial: {serial}"
    );
    assert_clean(&root);
}

#[tokio::test]
async fn vsock_daemon_that_never_listens_is_reported() {
    let _guard = SERIAL.lock().await;
    let root = tempfile::tempdir().expect("root");
    let err = boot(&vsock_vm("/bin/false".into()), &TCG, &options(&root, 30))
        .await
        .expect_err("a daemon that exits at once");
    assert!(matches!(err, BootError::VsockDaemon { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("vhost-device-vsock exited (exit status: 1) before listening"),
        "{err}"
    );
    assert_clean(&root);
}

#[tokio::test]
async fn vsock_daemon_dying_mid_boot_is_reported() {
    let _guard = SERIAL.lock().await;
    let root = tempfile::tempdir().expect("root");
    let opts = options(&root, 60);
    let vm = vsock_vm(vsock_daemon());
    let (result, ()) = tokio::join!(
        boot(&vm, &TCG, &opts),
        kill_child_after("vhost-device", Duration::from_secs(3)),
    );
    let err = result.expect_err("daemon killed");
    assert!(matches!(err, BootError::VsockDaemon { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("vhost-device-vsock died (signal: 9"),
        "{err}"
    );
    assert_clean(&root);
}
