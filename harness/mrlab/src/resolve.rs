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
    pub qemu_binary: PathBuf,
    pub qemu_version: Option<Version>,
    pub ovmf_version: Option<Version>,
    pub quirks: Quirks,
}

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

/// Resolve a scenario for a VM with (`tpm`) or without a vTPM.
pub fn resolve(
    scenario: &Scenario,
    cache: &images::Cache,
    tpm: bool,
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
    if scenario.boot == BootMode::Uki {
        return Err(key_err(
            "boot",
            "UKI boot is not supported by this runner yet".into(),
        ));
    }

    let (firmware, ovmf_version) = if looks_like_path(&scenario.firmware) {
        (
            existing(&scenario.dir, &scenario.firmware).map_err(|m| key_err("firmware", m))?,
            None,
        )
    } else {
        let path = cache.firmware(&scenario.firmware).map_err(images_err)?;
        let version = package_version(cache, &scenario.firmware);
        (path, version)
    };
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

    let qemu_binary = if scenario.qemu == "system" {
        PathBuf::from("qemu-system-x86_64")
    } else {
        existing(&scenario.dir, &scenario.qemu).map_err(|m| key_err("qemu", m))?
    };
    let qemu_version = qemu_version(&qemu_binary).map_err(|m| key_err("qemu", m))?;

    let mut vm = qemu::vm::Vm::new(
        firmware,
        scenario.cpus,
        scenario.memory,
        qemu::vm::Boot::Kernel {
            kernel,
            initrd,
            cmdline: scenario.cmdline.clone(),
        },
    );
    vm.tpm = tpm;
    let m = &scenario.machine;
    vm.machine.smm = m.smm;
    vm.machine.hpet = m.hpet;
    vm.machine.pic = m.pic;
    vm.machine.acpi_pci_hotplug_with_bridge_support = m.acpi_pci_hotplug;
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
            Device::VirtioBlk { .. } | Device::Virtfs { .. } => {
                return Err(key_err(
                    "devices",
                    format!("device #{i} ({device:?}) is not supported by this runner yet"),
                ))
            }
        });
    }
    let quirks = Quirks::resolve(ovmf_version, qemu_version, None);
    Ok(Resolved {
        scenario: scenario.clone(),
        vm,
        qemu_binary,
        qemu_version,
        ovmf_version,
        quirks,
    })
}

fn looks_like_path(value: &str) -> bool {
    value.contains('/') || value.ends_with(".fd") || value.ends_with(".efi")
}

/// A file named in a scenario, relative to the scenario's folder unless absolute.
fn existing(base: &Path, path: &str) -> Result<PathBuf, String> {
    let p = base.join(path);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{}: no such file", p.display()))
    }
}

fn package_version(cache: &images::Cache, id: &str) -> Option<Version> {
    cache
        .packages()
        .iter()
        .find(|p| p.id == id)
        .and_then(|p| Version::parse(&p.version))
}

/// `QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)` → 7.2.
fn qemu_version(binary: &Path) -> Result<Option<Version>, String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: cannot run: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .and_then(Version::parse))
}
