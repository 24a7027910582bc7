//! End-to-end check of the agent initramfs: `-kernel` boot of a pinned Debian kernel on the
//! managed QEMU 7.2 + pinned OVMF 2022.11 with a swtpm TPM 2.0 (SHA-256 and SHA-384 banks), TCG, and a decoded
//! record holding the event log, PCRs and the fw_cfg ACPI tables.

use agent::record;
use qemu::process::Group;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn cache() -> images::Cache {
    images::Cache::open(&repo()).expect("images/packages.lock")
}

/// bookworm's QEMU 7.2 from its own root (`images/fetch.sh`), the same on every host.
fn managed_qemu() -> Command {
    cache()
        .qemu("qemu-7.2")
        .unwrap_or_else(|e| panic!("{e}"))
        .command()
}

fn ovmf() -> PathBuf {
    cache()
        .firmware("ovmf-2022.11")
        .unwrap_or_else(|e| panic!("{e}"))
}

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// At most this many TCG guests at once: the test threads run in parallel, and more guests than
/// cores would stretch each boot towards the timeout.
const MAX_CONCURRENT_BOOTS: usize = 2;

/// A counting semaphore slot for one boot, released on drop.
struct BootSlot;

static RUNNING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

impl BootSlot {
    fn acquire() -> BootSlot {
        let (count, freed) = &RUNNING;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= MAX_CONCURRENT_BOOTS {
            n = freed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        BootSlot
    }
}

impl Drop for BootSlot {
    fn drop(&mut self) {
        let (count, freed) = &RUNNING;
        *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        freed.notify_one();
    }
}

/// How the guest starts.
enum Boot {
    /// `-kernel` direct boot of a kernel package with the agent initramfs and this `-append`.
    Kernel {
        kernel_id: &'static str,
        append: &'static str,
    },
    /// UEFI boot of a GPT/ESP disk image (systemd-boot, UKI), opened with `snapshot=on` so the
    /// cached image stays pristine.
    Disk(PathBuf),
}

/// Boots the guest and returns the raw serial output.
fn boot(how: Boot) -> Vec<u8> {
    let boot_args: Vec<String> = match how {
        Boot::Kernel { kernel_id, append } => {
            let cache = images::Cache::open(&repo()).expect("open cache");
            let kernel = cache
                .kernel(kernel_id)
                .unwrap_or_else(|e| panic!("{e} (run images/fetch.sh)"));
            let initrd = cache.agent_initramfs(kernel_id).expect("agent initramfs");
            vec![
                "-kernel".into(),
                kernel.vmlinuz.display().to_string(),
                "-initrd".into(),
                initrd.display().to_string(),
                "-append".into(),
                append.into(),
            ]
        }
        Boot::Disk(disk) => vec![
            "-drive".into(),
            format!(
                "if=none,id=disk0,format=raw,snapshot=on,file={}",
                disk.display()
            ),
            "-device".into(),
            "virtio-blk-pci,drive=disk0".into(),
        ],
    };

    let _slot = BootSlot::acquire();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = qemu::RunDir::new(dir.path());
    let serial = run.serial_log();
    let mut command = managed_qemu();
    command
        .args(["-machine", "q35", "-accel", "tcg", "-m", "2G", "-smp", "1"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-bios")
        .arg(ovmf())
        .args(&boot_args)
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-chardev")
        .arg(format!(
            "socket,id=chrtpm,path={}",
            run.swtpm_socket().display()
        ))
        .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
        .args(["-device", "tpm-tis,tpmdev=tpm0"]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // swtpm and QEMU as the harness starts them: each in its own process group, killed whole
    // when dropped, so a failing assertion leaves nothing behind.
    let status = runtime.block_on(async {
        let _swtpm = qemu::swtpm::start(&run, qemu::swtpm::State::Setup, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{e} (install swtpm: ci/setup-host.sh)"));
        let mut qemu = Group::spawn_command("qemu", command.into(), &run.stderr_log())
            .expect("qemu-system-x86_64");
        match tokio::time::timeout(BOOT_TIMEOUT, qemu.wait()).await {
            Ok(status) => status.expect("wait qemu"),
            Err(_) => panic!(
                "boot did not power off within {BOOT_TIMEOUT:?}; serial so far:\n{}",
                String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default())
            ),
        }
    });
    assert!(
        status.success(),
        "qemu exited with {status}: {}",
        std::fs::read_to_string(run.stderr_log()).unwrap_or_default()
    );
    std::fs::read(&serial).expect("serial log")
}

/// Decodes the record of a vTPM boot and checks what every vTPM boot must hold; returns it for
/// boot-specific checks.
fn check_vtpm_record(how: Boot, kernel_id: &str, cmdline_part: &str) -> record::Record {
    let serial = boot(how);
    let rec = record::decode(&serial).unwrap_or_else(|e| {
        panic!(
            "{e}; serial:\n{}",
            String::from_utf8_lossy(&serial[serial.len().saturating_sub(4000)..])
        )
    });
    let names: Vec<&str> = rec.names().collect();
    let log = rec.get("tpm/binary_bios_measurements").unwrap_or_default();
    // A crypto-agile TCG2 log starts with the TCG 1.2-format Spec ID event: PCR 0, type
    // EV_NO_ACTION (3), and its data begins with the signature "Spec ID Event03".
    assert!(
        log.len() > 1000,
        "event log too short ({} bytes); entries {names:?}",
        log.len()
    );
    assert_eq!(&log[..8], &[0, 0, 0, 0, 3, 0, 0, 0]);
    assert_eq!(&log[32..47], b"Spec ID Event03");
    for bank in ["sha256", "sha384"] {
        for n in 0..24 {
            let pcr = rec
                .get(&format!("tpm/pcr-{bank}/{n}"))
                .unwrap_or_else(|| panic!("tpm/pcr-{bank}/{n} missing; entries {names:?}"));
            let text = String::from_utf8_lossy(pcr);
            let hex_len = if bank == "sha256" { 64 } else { 96 };
            assert_eq!(text.trim().len(), hex_len, "tpm/pcr-{bank}/{n} = {text:?}");
        }
    }
    // PCR 0 is extended by firmware, so it is not all zero.
    let pcr0 = String::from_utf8_lossy(rec.get("tpm/pcr-sha384/0").unwrap()).to_string();
    assert!(pcr0.trim().chars().any(|c| c != '0'), "PCR0 = {pcr0}");
    let tables = rec.get("fw_cfg/etc/acpi/tables").unwrap_or_default();
    assert!(
        tables.len() > 100,
        "fw_cfg/etc/acpi/tables: {} bytes",
        tables.len()
    );
    // The tables blob holds the DSDT among others (signature from the ACPI spec).
    assert!(tables.windows(4).any(|w| w == b"DSDT"));
    assert!(rec
        .get("fw_cfg/etc/table-loader")
        .is_some_and(|d| !d.is_empty()));
    let cmdline = String::from_utf8_lossy(rec.get("proc/cmdline").unwrap()).to_string();
    assert!(cmdline.contains(cmdline_part), "{cmdline}");
    let release = cache_release(kernel_id);
    assert_eq!(rec.get("kernel/release"), Some(release.as_bytes()));
    assert_eq!(rec.errors(), Vec::<String>::new(), "agent errors");
    rec
}

fn cache_release(kernel_id: &str) -> String {
    images::Cache::open(&repo())
        .unwrap()
        .kernel(kernel_id)
        .unwrap()
        .release
}

/// `no_timer_check`: under TCG on a loaded host the first PIT ticks can come late enough for
/// Linux's IO-APIC timer check to panic ("IO-APIC + timer doesn't work!", seen here with
/// several TCG guests on 2 cores); these boots test the images, not that check.
const CMDLINE_BASE: &str = "console=ttyS0 no_timer_check";

fn kernel_boot(kernel_id: &'static str) {
    let append: &'static str = format!("{CMDLINE_BASE} mrlab.nonce=0011").leak();
    check_vtpm_record(
        Boot::Kernel { kernel_id, append },
        kernel_id,
        "mrlab.nonce=0011",
    );
}

#[test]
fn kernel_6_1_boot_on_vtpm_yields_record() {
    kernel_boot("kernel-6.1");
}

#[test]
fn kernel_6_12_boot_on_vtpm_yields_record() {
    kernel_boot("kernel-6.12");
}

/// OVMF → systemd-boot → UKI (systemd-stub) → kernel, from the ESP disk.
fn disk_boot(kernel_id: &'static str, systemd_id: &str) {
    let cache = images::Cache::open(&repo()).expect("open cache");
    let initrd = cache.agent_initramfs(kernel_id).expect("agent initramfs");
    let cmdline = &format!("{CMDLINE_BASE} mrlab.nonce=22");
    let uki = cache
        .uki(&images::UkiSpec {
            kernel_id: kernel_id.into(),
            stub_id: systemd_id.into(),
            cmdline: cmdline.into(),
            initrd,
        })
        .expect("uki");
    let disk = cache
        .esp_disk(&images::DiskSpec {
            bootloader_id: systemd_id.into(),
            ukis: vec![("mrlab".into(), uki)],
            loader_conf: Some("timeout 0\n".into()),
        })
        .expect("disk");
    let rec = check_vtpm_record(Boot::Disk(disk.clone()), kernel_id, cmdline);
    check_gpt_event(&rec, &disk);
    // systemd-stub measures the UKI sections into PCR 11 (from v252 on), so it is not zero;
    // with -kernel boot nothing extends it.
    let pcr11 = String::from_utf8_lossy(rec.get("tpm/pcr-sha256/11").unwrap()).to_string();
    assert!(pcr11.trim().chars().any(|c| c != '0'), "PCR11 = {pcr11}");
}

/// The firmware's own reading of our GPT is the oracle: OVMF measures the primary header and
/// the used partition entries (UEFI_GPT_DATA, EV_EFI_GPT_EVENT in PCR 5) only for a table it
/// accepted, and the logged bytes must be the ones we wrote at LBA 1 and LBA 2.
fn check_gpt_event(rec: &record::Record, disk: &Path) {
    let log = rec.get("tpm/binary_bios_measurements").unwrap();
    let log = evidence::log::parse(log, evidence::log::Format::Tcg2).expect("parse event log");
    let gpt: Vec<_> = log
        .events
        .iter()
        .filter(|e| e.event.event_type == measure::event::EventType::EFI_GPT_EVENT)
        .collect();
    assert_eq!(gpt.len(), 1, "one EV_EFI_GPT_EVENT");
    assert_eq!(gpt[0].index, 5);
    let data = gpt[0].event.data.as_deref().expect("GPT event data");
    let disk = std::fs::read(disk).unwrap();
    assert_eq!(&data[..92], &disk[512..604], "logged GPT header");
    assert_eq!(&data[92..100], &1u64.to_le_bytes(), "one partition");
    assert_eq!(&data[100..228], &disk[1024..1152], "logged ESP entry");
}

#[test]
fn uki_disk_boot_systemd_257_kernel_6_12() {
    disk_boot("kernel-6.12", "systemd-boot-257");
}

#[test]
fn uki_disk_boot_systemd_252_kernel_6_1() {
    disk_boot("kernel-6.1", "systemd-boot-252");
}
