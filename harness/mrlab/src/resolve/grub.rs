//! A shim + GRUB boot's EFI system partition: Debian's signed shim and GRUB, the grub.cfg the
//! harness writes from the scenario, the kernel and initrd, built into a disk image in the cache
//! and attached first on the root bus like a UKI boot's.

use super::esp;
use super::files::locked_version;
use super::{Problem, ResolveError};
use crate::scenario::Scenario;
use measure::quirks::Version;
use std::path::PathBuf;

/// What a shim + GRUB boot is made of: the ESP disk (first in `vm.devices`) and its files.
#[derive(Clone, Debug)]
pub struct GrubParts {
    pub disk: PathBuf,
    /// Where the ESP and the other boot candidates sit (set when it is attached).
    pub place: esp::DiskPlace,
    /// The packages' files copied to `\EFI\BOOT\BOOTX64.EFI` and `\EFI\BOOT\grubx64.efi`.
    pub shim: PathBuf,
    pub grub: PathBuf,
    /// `/EFI/debian/grub.cfg` as written.
    pub grub_cfg: String,
    /// The scenario's `[grub]` lines and command line grub.cfg was written with.
    pub lines: Vec<String>,
    pub cmdline: String,
    /// Copied to `/vmlinuz` and `/initrd.img`.
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// GRUB's version, which decides its quirks.
    pub grub_version: Option<Version>,
}

/// Build (or find) the shim + GRUB ESP disk of a scenario, with the grub.cfg written from its
/// kernel command line and `[grub]` lines; the PCI paths are filled in by [`attach`].
pub(super) fn grub_parts(
    scenario: &Scenario,
    cache: &images::Cache,
    kernel: PathBuf,
    initrd: PathBuf,
) -> Result<GrubParts, ResolveError> {
    let images_err = |source| ResolveError::images(scenario, source);
    let options = scenario.grub.clone().unwrap_or_default();
    // Debian's signed package versions are `<template>+<GRUB version>`: 1+2.12+9+deb13u4.
    let grub_version = locked_version(cache, &options.package)
        .and_then(|version| version.split_once('+'))
        .and_then(|(_, upstream)| Version::parse(upstream));
    if grub_version.is_some_and(|v| v < Version(2, 12)) {
        return Err(ResolveError::key(
            scenario,
            "grub.package",
            format!(
                "{} (GRUB {}) is not predicted: booted by OVMF and shim it gives Linux no \
                 TPMEventLog table, so the guest has no event log and no vtpm run could check \
                 a prediction; use grub-2.12",
                options.package,
                grub_version.map_or("?".into(), |v| v.to_string())
            ),
        ));
    }
    let grub_cfg = measure::grub::config(&options.lines, &scenario.cmdline);
    let spec = images::GrubDiskSpec {
        shim_id: options.shim.clone(),
        grub_id: options.package.clone(),
        grub_cfg: grub_cfg.clone(),
        kernel: kernel.clone(),
        initrd: initrd.clone(),
    };
    Ok(GrubParts {
        disk: cache.grub_disk(&spec).map_err(images_err)?,
        place: esp::DiskPlace::default(),
        shim: cache.shim(&options.shim).map_err(images_err)?,
        grub: cache.grub(&options.package).map_err(images_err)?,
        grub_cfg,
        lines: options.lines,
        cmdline: scenario.cmdline.clone(),
        kernel,
        initrd,
        grub_version,
    })
}

/// Put the ESP first on the root bus and record the PCI paths its boot options name.
pub(super) fn attach(vm: &mut qemu::vm::Vm, parts: &mut GrubParts) -> Result<(), Problem> {
    parts.place = esp::attach_disk(vm, &parts.disk)?;
    Ok(())
}
