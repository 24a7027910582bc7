//! A UKI boot's EFI system partition: the UKI and systemd-boot built into a disk image in the
//! cache, attached first on the root bus, and the PCI paths OVMF's boot options name.

use super::files::package_version;
use super::{Problem, ResolveError};
use crate::scenario::Scenario;
use measure::quirks::Version;
use std::path::{Path, PathBuf};

/// What a UKI boot is made of: the ESP disk (first in `vm.devices`) and the files on it.
#[derive(Clone, Debug)]
pub struct UkiParts {
    pub disk: PathBuf,
    /// Where the ESP and the other boot candidates sit (set when it is attached).
    pub place: DiskPlace,
    /// systemd-boot as copied to `\EFI\BOOT\BOOTX64.EFI`.
    pub bootloader: PathBuf,
    pub uki: PathBuf,
    /// `loader/loader.conf` as written to the ESP.
    pub loader_conf: Option<String>,
    /// The systemd version of the stub and the boot loader (one version drives both's quirks).
    pub systemd_version: Option<Version>,
}

/// Drive id of the ESP disk of a UKI boot.
pub(super) const ESP_DRIVE_ID: &str = "esp";
/// The ESP's `loader/loader.conf`: boot the default entry at once.
const LOADER_CONF: &str = "timeout 0\n";

/// Build (or find) the UKI and its ESP disk for a scenario; the PCI paths are filled in by
/// [`attach`] once the devices are known.
pub(super) fn uki_parts(
    scenario: &Scenario,
    cache: &images::Cache,
    kernel_id: String,
    initrd: PathBuf,
) -> Result<UkiParts, ResolveError> {
    let images_err = |source| ResolveError::images(scenario, source);
    let bootloader_id = scenario.bootloader.as_deref().unwrap_or(&scenario.stub);
    let systemd_version = package_version(cache, &scenario.stub);
    let loader_version = package_version(cache, bootloader_id);
    if systemd_version != loader_version {
        return Err(ResolveError::key(
            scenario,
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
    let uki = cache
        .uki(&images::UkiSpec {
            kernel_id,
            stub_id: scenario.stub.clone(),
            cmdline: scenario.cmdline.clone(),
            initrd,
        })
        .map_err(images_err)?;
    let disk = cache
        .esp_disk(&images::DiskSpec {
            bootloader_id: bootloader_id.to_string(),
            ukis: vec![("mrlab".into(), uki.clone())],
            loader_conf: Some(LOADER_CONF.into()),
        })
        .map_err(images_err)?;
    Ok(UkiParts {
        disk,
        place: DiskPlace::default(),
        bootloader: cache.systemd_boot(bootloader_id).map_err(images_err)?,
        uki,
        loader_conf: Some(LOADER_CONF.into()),
        systemd_version,
    })
}

/// Put the ESP first on the root bus, so OVMF enumerates it first ("UEFI Misc Device",
/// Boot0001), and record the PCI paths of it, the other disks and the NICs.
pub(super) fn attach(vm: &mut qemu::vm::Vm, parts: &mut UkiParts) -> Result<(), Problem> {
    parts.place = attach_disk(vm, &parts.disk)?;
    Ok(())
}

/// Where a boot disk and the other boot candidates sit, as OVMF's boot options name them.
#[derive(Clone, Debug, Default)]
pub struct DiskPlace {
    /// The disk's PCI path from the root bus, (device, function) per hop.
    pub disk_pci: Vec<(u8, u8)>,
    /// The other disks' PCI paths, in root-bus order (OVMF's boot options for them).
    pub other_disks_pci: Vec<Vec<(u8, u8)>>,
    /// The NICs' PCI paths and MACs, in root-bus order (OVMF's network boot options).
    pub nics: Vec<measure::predict::Nic>,
}

/// [`attach`] for any ESP image (a UKI's or a shim + GRUB one).
pub(super) fn attach_disk(vm: &mut qemu::vm::Vm, disk: &Path) -> Result<DiskPlace, Problem> {
    vm.devices.insert(
        0,
        qemu::vm::Device::Disk(qemu::vm::Disk {
            id: ESP_DRIVE_ID.into(),
            file: disk.to_owned(),
            format: qemu::vm::DiskFormat::Raw,
            // The cached image stays pristine; nothing in the boot writes to the ESP.
            readonly: true,
            serial: None,
        }),
    );
    // Disks and NICs always have a root-bus slot of their own.
    let root_bus_slot =
        |devices: &[qemu::vm::Device], i| qemu::pci::root_bus_slot(devices, i).unwrap_or(u8::MAX);
    let disk_pci = vec![(root_bus_slot(&vm.devices, 0), 0)];
    let other_disks_pci = vm
        .devices
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, d)| matches!(d, qemu::vm::Device::Disk(_)))
        .map(|(i, _)| vec![(root_bus_slot(&vm.devices, i), 0)])
        .collect();
    let macs = vm.nic_macs()?;
    let nics = vm
        .devices
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d, qemu::vm::Device::Net { .. }))
        .map(|(i, _)| vec![(root_bus_slot(&vm.devices, i), 0)])
        .zip(macs)
        .map(|(pci, mac)| measure::predict::Nic { pci, mac })
        .collect();
    Ok(DiskPlace {
        disk_pci,
        other_disks_pci,
        nics,
    })
}
