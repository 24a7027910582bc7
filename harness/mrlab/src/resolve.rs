//! Scenario → the one `Vm` that drives both the QEMU command line and the prediction, plus the
//! facts the prediction needs (versions → quirks). Reads files and asks QEMU its version: effects,
//! kept here at the edge.

use crate::scenario::{BootMode, Device, Scenario};
use measure::quirks::{Quirks, Version};
use std::path::{Path, PathBuf};

/// A scenario with every file located and every version known.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub scenario: Scenario,
    pub vm: qemu::vm::Vm,
    pub qemu_binary: qemu::QemuBinary,
    /// Read from the binary itself (`--version`), not from the scenario or the lock.
    pub qemu_version: Option<Version>,
    pub ovmf_version: Option<Version>,
    /// A managed OVMF's version, vendor and date strings, where its quirks measure them.
    pub firmware_strings: Option<measure::smbios::FirmwareStrings>,
    pub quirks: Quirks,
    /// UKI boot: the files on the boot disk, for the prediction.
    pub uki: Option<UkiParts>,
    /// The PCI option ROM file of each device that has one (label, path), in device order.
    pub option_roms: Vec<(String, PathBuf)>,
}

/// What a UKI boot is made of: the ESP disk (first in `vm.devices`) and the files on it.
#[derive(Clone, Debug)]
pub struct UkiParts {
    pub disk: PathBuf,
    /// The disk's PCI path from the root bus, (device, function) per hop.
    pub disk_pci: Vec<(u8, u8)>,
    /// The other disks' PCI paths, in root-bus order (OVMF's boot options for them).
    pub other_disks_pci: Vec<Vec<(u8, u8)>>,
    /// The NICs' PCI paths and MACs, in root-bus order (OVMF's network boot options).
    pub nics: Vec<measure::predict::Nic>,
    /// systemd-boot as copied to `\EFI\BOOT\BOOTX64.EFI`.
    pub bootloader: PathBuf,
    pub uki: PathBuf,
    /// `loader/loader.conf` as written to the ESP.
    pub loader_conf: Option<String>,
    /// The systemd version of the stub and the boot loader (one version drives both's quirks).
    pub systemd_version: Option<Version>,
}

/// Drive id of the ESP disk of a UKI boot.
pub const ESP_DRIVE_ID: &str = "esp";
/// The ESP's `loader/loader.conf`: boot the default entry at once.
pub const LOADER_CONF: &str = "timeout 0\n";

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("scenario {scenario}: key `{key}`: {message}")]
    Key {
        scenario: String,
        key: &'static str,
        message: String,
    },
    #[error("scenario {scenario}: {source}")]
    Images {
        scenario: String,
        source: images::Error,
    },
}

/// The version of rust-vmm's vhost-device-vsock that `ci/install-vhost-device-vsock.sh` installs.
pub const VSOCK_DAEMON_VERSION: &str = "0.3.0";

/// Where `ci/install-vhost-device-vsock.sh` puts the vhost-user vsock daemon.
pub fn vsock_daemon(cache: &images::Cache) -> PathBuf {
    cache
        .root()
        .join(format!("tools/vhost-device-vsock-{VSOCK_DAEMON_VERSION}"))
        .join("bin/vhost-device-vsock")
}

/// Resolve a scenario for a VM with (`tpm`) or without a vTPM.
pub fn resolve(
    scenario: &Scenario,
    cache: &images::Cache,
    tpm: bool,
) -> Result<Resolved, ResolveError> {
    let qemu_binary = qemu_binary(scenario, cache)?;
    let qemu_version = qemu_version(&qemu_binary).map_err(|message| ResolveError::Key {
        scenario: scenario.name.clone(),
        key: "qemu",
        message,
    })?;
    let mut resolved = resolve_without_qemu(scenario, cache, tpm, qemu_binary, qemu_version)?;
    resolved.option_roms =
        option_roms(&resolved.vm, &resolved.qemu_binary).map_err(|message| ResolveError::Key {
            scenario: scenario.name.clone(),
            key: "devices",
            message,
        })?;
    Ok(resolved)
}

/// [`resolve`] for a host without QEMU (a verifier predicting from a fw_cfg snapshot): QEMU's
/// version is given, `qemu_binary` is recorded but never started, and `option_roms` is left
/// empty for the caller to fill from what it has of QEMU's data.
pub fn resolve_without_qemu(
    scenario: &Scenario,
    cache: &images::Cache,
    tpm: bool,
    qemu_binary: qemu::QemuBinary,
    qemu_version: Option<Version>,
) -> Result<Resolved, ResolveError> {
    let key_err = |key, message: String| ResolveError::Key {
        scenario: scenario.name.clone(),
        key,
        message,
    };
    let images_err = |source| ResolveError::Images {
        scenario: scenario.name.clone(),
        source,
    };
    let (firmware, ovmf_version) = if looks_like_path(&scenario.firmware) {
        (
            existing(&scenario.dir, &scenario.firmware).map_err(|m| key_err("firmware", m))?,
            None,
        )
    } else {
        if let (true, Some(why)) = (tpm, cache.firmware_without_tpm(&scenario.firmware)) {
            return Err(key_err("firmware", why));
        }
        let path = cache.firmware(&scenario.firmware).map_err(images_err)?;
        let version = package_version(cache, &scenario.firmware);
        (path, version)
    };
    // Refused here, not by a boot that would run to its timeout.
    crate::input::read(&firmware, crate::input::FIRMWARE)
        .and_then(|image| {
            measure::firmware::check_uefi_image(&image)
                .map_err(|e| format!("{}: {e}", firmware.display()))
        })
        .map_err(|m| key_err("firmware", m))?;
    let (kernel, kernel_id) = if looks_like_path(&scenario.kernel) {
        (
            existing(&scenario.dir, &scenario.kernel).map_err(|m| key_err("kernel", m))?,
            None,
        )
    } else {
        let k = cache.kernel(&scenario.kernel).map_err(images_err)?;
        (k.vmlinuz, Some(scenario.kernel.clone()))
    };
    let initrd = match scenario.initrd.as_str() {
        "" | "none" => None,
        "agent" => {
            let id = kernel_id.as_deref().ok_or_else(|| {
                key_err(
                    "initrd",
                    "`agent` needs a managed kernel id (its modules go into the initramfs)".into(),
                )
            })?;
            Some(cache.agent_initramfs(id).map_err(images_err)?)
        }
        path => Some(existing(&scenario.dir, path).map_err(|m| key_err("initrd", m))?),
    };

    let (boot, mut uki) = match scenario.boot {
        BootMode::Kernel => (
            qemu::vm::Boot::Kernel {
                kernel,
                initrd,
                cmdline: scenario.cmdline.clone(),
            },
            None,
        ),
        BootMode::Uki => {
            let kernel_id = kernel_id.ok_or_else(|| {
                key_err(
                    "kernel",
                    "UKI boot needs a managed kernel id (the UKI is built from its package)".into(),
                )
            })?;
            let initrd = initrd.ok_or_else(|| {
                key_err(
                    "initrd",
                    "UKI boot needs an initrd (`agent` or a file)".into(),
                )
            })?;
            let parts = uki_parts(scenario, cache, kernel_id, initrd).map_err(|e| match e {
                UkiError::Key(key, message) => key_err(key, message),
                UkiError::Images(source) => images_err(source),
            })?;
            (qemu::vm::Boot::Disk, Some(parts))
        }
    };
    let mut vm = qemu::vm::Vm::new(firmware, scenario.cpus, scenario.memory, boot);
    vm.tpm = tpm;
    // A TD always uses the kernel's vhost-vsock; a vTPM VM falls back to the vhost-user daemon
    // where the host has none.
    if tpm && !Path::new(qemu::vm::VHOST_VSOCK_DEVICE).exists() {
        vm.vsock_host = qemu::VsockHost::User {
            daemon: vsock_daemon(cache),
        };
    }
    if scenario.preset == Some(crate::scenario::Preset::Dstack) {
        let preset = scenario.dstack.clone().unwrap_or_default();
        vm.machine = qemu::vm::DstackLayout::machine(false, None);
        vm.devices = dstack_layout(&preset, cache)
            .map_err(|m| key_err("dstack", m))?
            .devices();
        if !preset.vsock {
            vm.devices
                .retain(|d| !matches!(d, qemu::vm::Device::Vsock { .. }));
        }
        for device in &mut vm.devices {
            if let qemu::vm::Device::Disk(disk) = device {
                disk.format = qemu::vm::DiskFormat::Raw;
                disk.readonly = true;
            }
        }
    }
    let m = &scenario.machine;
    vm.machine.smm = m.smm.or(vm.machine.smm);
    vm.machine.hpet = m.hpet.or(vm.machine.hpet);
    vm.machine.pic = m.pic.or(vm.machine.pic);
    vm.machine.acpi_pci_hotplug_with_bridge_support = m.acpi_pci_hotplug;
    vm.machine.phys_bits = m.phys_bits;
    let dstack_hugepages = scenario.dstack.as_ref().is_some_and(|d| d.hugepages);
    if m.hugepages || dstack_hugepages {
        vm.machine.numa = Some(qemu::vm::NumaMemory::for_host(tpm));
    }
    if let Some(size) = &m.pci_hole64_size {
        let bytes =
            crate::scenario::parse_size(size).map_err(|e| key_err("machine.pci_hole64_size", e))?;
        vm.machine.pci_hole64_size = Some(bytes);
    }
    for (i, device) in scenario.devices.iter().enumerate() {
        vm.devices.push(match device {
            Device::VirtioNet {} => qemu::vm::Device::Net {
                id: format!("net{i}"),
                mac: None,
            },
            Device::VhostVsock { cid } => qemu::vm::Device::Vsock { guest_cid: *cid },
            Device::PcieRootPort {} => qemu::vm::Device::PcieRootPort {
                chassis: i as u8 + 1,
            },
            Device::VirtioBlk { size, file } => {
                let file = match (file, size) {
                    (Some(f), _) => existing(&scenario.dir, &f.to_string_lossy())
                        .map_err(|m| key_err("devices", m))?,
                    (None, Some(size)) => {
                        blank_disk(cache, *size).map_err(|m| key_err("devices", m))?
                    }
                    (None, None) => {
                        return Err(key_err(
                            "devices",
                            format!("device #{i}: virtio-blk needs `file` or `size`"),
                        ))
                    }
                };
                // Read-only: the agent never writes, and concurrent runs share the file.
                qemu::vm::Device::Disk(qemu::vm::Disk {
                    id: format!("disk{i}"),
                    file,
                    format: qemu::vm::DiskFormat::Raw,
                    readonly: true,
                    serial: None,
                })
            }
            Device::Virtfs { tag } => qemu::vm::Device::Share(qemu::vm::Share {
                id: format!("fs{i}"),
                path: empty_dir(cache).map_err(|m| key_err("devices", m))?,
                mount_tag: tag.clone(),
                readonly: true,
                security_model: "none".into(),
            }),
        });
    }
    if let Some(parts) = &mut uki {
        // First on the root bus, so OVMF enumerates it first ("UEFI Misc Device", Boot0001).
        vm.devices.insert(
            0,
            qemu::vm::Device::Disk(qemu::vm::Disk {
                id: ESP_DRIVE_ID.into(),
                file: parts.disk.clone(),
                format: qemu::vm::DiskFormat::Raw,
                // The cached image stays pristine; nothing in the boot writes to the ESP.
                readonly: true,
                serial: None,
            }),
        );
        parts.disk_pci = vec![(root_bus_slot(&vm.devices, 0), 0)];
        parts.other_disks_pci = vm
            .devices
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, d)| matches!(d, qemu::vm::Device::Disk(_)))
            .map(|(i, _)| vec![(root_bus_slot(&vm.devices, i), 0)])
            .collect();
        let macs = vm.nic_macs().map_err(|m| key_err("devices", m))?;
        parts.nics = vm
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| matches!(d, qemu::vm::Device::Net { .. }))
            .map(|(i, _)| vec![(root_bus_slot(&vm.devices, i), 0)])
            .zip(macs)
            .map(|(pci, mac)| measure::predict::Nic { pci, mac })
            .collect();
    }
    let systemd_version = uki.as_ref().and_then(|u| u.systemd_version);
    let quirks = Quirks::resolve(ovmf_version, qemu_version, systemd_version);
    let firmware_strings = match (quirks.needs_firmware_strings(), ovmf_version) {
        (true, Some(_)) => Some(
            cache
                .firmware_strings(&scenario.firmware)
                .map_err(images_err)?,
        ),
        _ => None,
    };
    Ok(Resolved {
        scenario: scenario.clone(),
        vm,
        qemu_binary,
        qemu_version,
        ovmf_version,
        firmware_strings,
        quirks,
        uki,
        option_roms: Vec::new(),
    })
}

/// The scenario's `qemu`: `system` (on PATH), a managed id from the lock (extracted by
/// images/fetch.sh, run with its own data and module dirs), or a path to a binary.
fn qemu_binary(
    scenario: &Scenario,
    cache: &images::Cache,
) -> Result<qemu::QemuBinary, ResolveError> {
    if scenario.qemu == "system" {
        return Ok(qemu::QemuBinary::system());
    }
    if looks_like_path(&scenario.qemu) {
        return existing(&scenario.dir, &scenario.qemu)
            .map(qemu::QemuBinary::at)
            .map_err(|message| ResolveError::Key {
                scenario: scenario.name.clone(),
                key: "qemu",
                message,
            });
    }
    cache
        .qemu(&scenario.qemu)
        .map_err(|source| ResolveError::Images {
            scenario: scenario.name.clone(),
            source,
        })
}

enum UkiError {
    Key(&'static str, String),
    Images(images::Error),
}

impl From<images::Error> for UkiError {
    fn from(e: images::Error) -> UkiError {
        UkiError::Images(e)
    }
}

/// Build (or find) the UKI and its ESP disk for a scenario.
fn uki_parts(
    scenario: &Scenario,
    cache: &images::Cache,
    kernel_id: String,
    initrd: PathBuf,
) -> Result<UkiParts, UkiError> {
    let bootloader_id = scenario.bootloader.as_deref().unwrap_or(&scenario.stub);
    let systemd_version = package_version(cache, &scenario.stub);
    let loader_version = package_version(cache, bootloader_id);
    if systemd_version != loader_version {
        return Err(UkiError::Key(
            "bootloader",
            format!(
                "{bootloader_id} ({}) and stub {} ({}) must have the same systemd version: \
                 one version resolves the quirks of both",
                loader_version.map_or("unknown".into(), |v| v.to_string()),
                scenario.stub,
                systemd_version.map_or("unknown".into(), |v| v.to_string()),
            ),
        ));
    }
    let uki = cache.uki(&images::UkiSpec {
        kernel_id,
        stub_id: scenario.stub.clone(),
        cmdline: scenario.cmdline.clone(),
        initrd,
    })?;
    let disk = cache.esp_disk(&images::DiskSpec {
        bootloader_id: bootloader_id.to_string(),
        ukis: vec![("mrlab".into(), uki.clone())],
        loader_conf: Some(LOADER_CONF.into()),
    })?;
    Ok(UkiParts {
        disk,
        disk_pci: Vec::new(),
        other_disks_pci: Vec::new(),
        nics: Vec::new(),
        bootloader: cache.systemd_boot(bootloader_id)?,
        uki,
        loader_conf: Some(LOADER_CONF.into()),
        systemd_version,
    })
}

/// The root-bus slot QEMU gives `devices[index]`: q35 with `-nodefaults` has the host bridge
/// at 00.0, and each PCI device without `addr=` takes the next free slot in command-line order
/// (a `-cdrom` sits on the ICH9 AHCI function, 1f.2, and takes none).
pub fn root_bus_slot(devices: &[qemu::vm::Device], index: usize) -> u8 {
    let before = devices
        .iter()
        .take(index)
        .filter(|d| !matches!(d, qemu::vm::Device::Cdrom { .. }))
        .count();
    u8::try_from(1 + before).unwrap_or(u8::MAX)
}

/// QEMU attaches `efi-virtio.rom` to every virtio-net-pci (`virtio_net_pci_class_init`
/// romfile), found in its data dirs (`-L help`, first hit wins). Other devices here have none.
fn option_roms(
    vm: &qemu::vm::Vm,
    qemu_binary: &qemu::QemuBinary,
) -> Result<Vec<(String, PathBuf)>, String> {
    let nics = vm
        .devices
        .iter()
        .filter(|d| matches!(d, qemu::vm::Device::Net { .. }))
        .count();
    if nics == 0 {
        return Ok(Vec::new());
    }
    let out = run_qemu(qemu_binary, &["-L", "help"])?;
    let rom = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|dir| Path::new(dir.trim()).join("efi-virtio.rom"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "virtio-net needs efi-virtio.rom in one of {}'s data dirs (`-L help`); install Debian package ipxe-qemu",
                qemu_binary.program.display()
            )
        })?;
    Ok(vm
        .devices
        .iter()
        .filter_map(|d| match d {
            qemu::vm::Device::Net { id, .. } => {
                Some((format!("optionrom:virtio-net:{id}"), rom.clone()))
            }
            _ => None,
        })
        .collect())
}

/// A sparse all-zero raw disk of `size` bytes in the image cache, made once.
fn blank_disk(cache: &images::Cache, size: u64) -> Result<PathBuf, String> {
    let path = cache
        .root()
        .join("images")
        .join(format!("blank-{size}.raw"));
    if !path.is_file() {
        let dir = path.parent().expect("cache path has a parent");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        tmp.as_file()
            .set_len(size)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        tmp.persist(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(path)
}

/// dstack-vmm's layout on blank images. Every disk is a read-only raw file, where dstack's hd1
/// is a writable qcow2: format and write access are invisible to the firmware's measurements
/// (PCI functions and ACPI are the same), and a shared cached file must not be written.
fn dstack_layout(
    preset: &crate::scenario::DstackPreset,
    cache: &images::Cache,
) -> Result<qemu::vm::DstackLayout, String> {
    use crate::scenario::{DstackHostShare, DstackRootfs};
    if preset.nics > 8 {
        return Err(format!("nics = {}: at most 8", preset.nics));
    }
    let blank = || blank_disk(cache, 64 << 20);
    Ok(qemu::vm::DstackLayout {
        rootfs: match preset.rootfs {
            DstackRootfs::Verity => qemu::vm::DstackRootfs::Verity(blank()?),
            DstackRootfs::Iso => qemu::vm::DstackRootfs::Iso(blank()?),
        },
        data_disk: blank()?,
        verity_volumes: (0..preset.verity_volumes)
            .map(|_| blank())
            .collect::<Result<_, _>>()?,
        nics: preset.nics as usize,
        guest_cid: 3,
        host_share: match preset.host_share {
            DstackHostShare::NineP => qemu::vm::DstackHostShare::NinePFs {
                path: empty_dir(cache)?,
                readonly: true,
            },
            DstackHostShare::Disk => qemu::vm::DstackHostShare::Disk { file: blank()? },
        },
        root_ports: preset.root_ports,
        hugepages: preset.hugepages,
    })
}

/// An empty folder in the image cache to share over 9p.
fn empty_dir(cache: &images::Cache) -> Result<PathBuf, String> {
    let path = cache.root().join("images").join("virtfs-empty");
    std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn looks_like_path(value: &str) -> bool {
    value.contains('/') || value.ends_with(".fd") || value.ends_with(".efi")
}

/// A file named in a scenario, relative to the scenario's folder unless absolute.
fn existing(base: &Path, path: &str) -> Result<PathBuf, String> {
    let p = base.join(path);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() => Ok(p),
        Ok(m) if m.is_dir() => Err(format!("{}: is a directory, not a file", p.display())),
        Ok(_) => Err(format!(
            "{}: not a regular file (a device, socket or pipe)",
            p.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{}: no such file", p.display()))
        }
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

fn package_version(cache: &images::Cache, id: &str) -> Option<Version> {
    cache
        .packages()
        .iter()
        .find(|p| p.id == id)
        .and_then(|p| Version::parse(&p.version))
}

/// Runs `qemu args…` to completion; a failure (e.g. a shared library the loader cannot find)
/// is an error carrying QEMU's stderr.
fn run_qemu(qemu: &qemu::QemuBinary, args: &[&str]) -> Result<std::process::Output, String> {
    let program = qemu.program.display();
    let out = qemu
        .output_once(args)
        .map_err(|e| format!("{program}: cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// `QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)` → 7.2.
fn qemu_version(binary: &qemu::QemuBinary) -> Result<Option<Version>, String> {
    let out = run_qemu(binary, &["--version"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .and_then(Version::parse))
}

/// The q35 machine options as both JSON contracts write them: a predictor's `inputs.json` and
/// an fw_cfg snapshot's manifest.
pub fn machine_json(m: &qemu::Machine) -> serde_json::Value {
    serde_json::json!({
        "smm": m.smm,
        "hpet": m.hpet,
        "pic": m.pic,
        "kernel_irqchip": m.kernel_irqchip.map(|k| k.as_str()),
        "pci_hole64_size": m.pci_hole64_size,
        "acpi_pci_hotplug_with_bridge_support": m.acpi_pci_hotplug_with_bridge_support,
        "phys_bits": m.phys_bits,
        "numa_node0_memory_file": m.numa.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use qemu::vm::Device;

    fn scenario(text: &str) -> Scenario {
        Scenario::parse(text, Path::new("scenarios/x.toml")).expect("scenario")
    }

    #[test]
    fn vsock_daemon_is_where_the_install_script_puts_it() {
        let script = std::fs::read_to_string(
            images::workspace_root().join("ci/install-vhost-device-vsock.sh"),
        )
        .expect("install script");
        assert!(script.contains(&format!("\nversion={VSOCK_DAEMON_VERSION}\n")));
        assert!(script.contains("dest=\"$cache/tools/vhost-device-vsock-$version\""));
        assert!(script.contains("--root \"$tmp\""));
    }

    #[test]
    fn managed_qemu_is_the_root_binary_with_its_own_loader_data_and_modules() {
        let cache = images::Cache::open(&images::workspace_root()).expect("lock");
        let q = match qemu_binary(&scenario("name = \"x\"\nqemu = \"qemu-10.0\""), &cache) {
            Ok(q) => q,
            Err(e) => panic!("{e} (run images/fetch.sh)"),
        };
        let root = cache.program_root("qemu-10.0").expect("fetched");
        assert_eq!(q.program, root.join("usr/bin/qemu-system-x86_64"));
        let loader = q
            .loader
            .as_ref()
            .expect("started through its root's loader");
        assert!(loader.path.starts_with(&root), "{loader:?}");
        assert!(loader.library_path.iter().all(|d| d.starts_with(&root)));
        assert_eq!(q.data_dirs[0], root.join("usr/share/qemu"));
        assert!(q.data_dirs.iter().all(|d| d.starts_with(&root)));
        assert_eq!(
            q.env,
            [(
                "QEMU_MODULE_DIR".to_string(),
                root.join("usr/lib/x86_64-linux-gnu/qemu")
            )]
        );
        // The binary itself says what the lock pinned (qemu-system-x86 1:10.0.2+ds-…).
        let lock = std::fs::read_to_string(images::workspace_root().join("images/packages.lock"))
            .expect("lock");
        let pinned = lock
            .lines()
            .filter_map(|l| l.trim().strip_prefix("\"qemu-system-x86 1:10."))
            .map(|rest| Version::parse(&format!("10.{rest}")))
            .next()
            .flatten();
        assert_eq!(qemu_version(&q).expect("--version"), pinned);
        assert_eq!(pinned, Some(Version(10, 0)));
        // Its own data dir is searched first, and a NIC's efi-virtio.rom comes from the root's
        // own ipxe-qemu, never from the host.
        let help = run_qemu(&q, &["-L", "help"]).expect("-L help");
        let first = String::from_utf8_lossy(&help.stdout)
            .lines()
            .next()
            .map(str::to_owned);
        assert_eq!(first, Some(q.data_dirs[0].display().to_string()));
        let mut vm = qemu::vm::Vm::new("/fw.fd", 1, 1 << 30, qemu::vm::Boot::Disk);
        vm.devices.push(Device::Net {
            id: "net0".into(),
            mac: None,
        });
        let roms = option_roms(&vm, &q).expect("efi-virtio.rom in the root");
        assert_eq!(roms.len(), 1);
        assert!(roms[0].1.ends_with("efi-virtio.rom"), "{roms:?}");
        assert!(roms[0].1.starts_with(&root), "{roms:?}");
    }

    #[test]
    fn missing_managed_qemu_says_run_fetch() {
        // A checkout with the real lock and an empty cache.
        let repo = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(repo.path().join("images")).expect("mkdir");
        std::fs::copy(
            images::workspace_root().join("images/packages.lock"),
            repo.path().join("images/packages.lock"),
        )
        .expect("copy lock");
        let cache = images::Cache::open_at(repo.path(), &repo.path().join(".cache")).expect("lock");
        let err = qemu_binary(&scenario("name = \"x\"\nqemu = \"qemu-10.0\""), &cache)
            .expect_err("nothing fetched")
            .to_string();
        assert!(
            err.starts_with("scenario x: ")
                && err.contains("\"qemu-10.0\" is not fetched")
                && err.ends_with("run images/fetch.sh"),
            "{err}"
        );
        // An id the lock does not pin is named as such.
        let err = qemu_binary(&scenario("name = \"x\"\nqemu = \"qemu-9.9\""), &cache)
            .expect_err("not pinned")
            .to_string();
        assert!(err.contains("\"qemu-9.9\" is not in"), "{err}");
    }

    #[test]
    fn root_bus_slots_follow_device_order_and_skip_the_cdrom() {
        let disk = Device::readonly_raw_disk(ESP_DRIVE_ID, "/esp.raw");
        let cdrom = Device::Cdrom {
            file: "/x.iso".into(),
        };
        let net = Device::Net {
            id: "net0".into(),
            mac: None,
        };
        // The real UKI boots put the ESP first and OVMF logged Pci(0x1,0x0) for it.
        assert_eq!(root_bus_slot(&[disk.clone(), net.clone()], 0), 1);
        assert_eq!(root_bus_slot(&[net.clone(), disk.clone()], 1), 2);
        assert_eq!(root_bus_slot(&[cdrom, net, disk], 2), 2);
    }
}
