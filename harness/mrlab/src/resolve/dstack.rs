//! The `dstack` preset: the machine options and devices dstack-vmm gives a CVM, on blank images.

use super::files::{blank_disk, empty_dir};
use super::{Problem, ResolveError};
use crate::scenario::{DstackHostShare, DstackPreset, DstackRootfs, Preset, Scenario};

/// Replace `vm`'s machine options and devices with the preset's, when the scenario asks for it.
pub(super) fn apply(
    vm: &mut qemu::vm::Vm,
    scenario: &Scenario,
    cache: &images::Cache,
) -> Result<(), ResolveError> {
    if scenario.preset != Some(Preset::Dstack) {
        return Ok(());
    }
    let preset = scenario.dstack.clone().unwrap_or_default();
    vm.machine = qemu::vm::DstackLayout::machine(false, None);
    vm.devices = layout(&preset, cache)
        .map_err(|m| ResolveError::key(scenario, "dstack", m))?
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
    Ok(())
}

/// dstack-vmm's layout on blank images. Every disk is a read-only raw file, where dstack's hd1
/// is a writable qcow2: format and write access are invisible to the firmware's measurements
/// (PCI functions and ACPI are the same), and a shared cached file must not be written.
fn layout(preset: &DstackPreset, cache: &images::Cache) -> Result<qemu::vm::DstackLayout, Problem> {
    if preset.nics > 8 {
        return Err(Problem::Rule(format!("nics = {}: at most 8", preset.nics)));
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
