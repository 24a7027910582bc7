//! Disks that boot the way Debian's and Ubuntu's cloud images do: OVMF starts Debian's signed
//! shim as the removable-media loader (`/EFI/BOOT/BOOTX64.EFI`), shim starts the signed GRUB
//! beside it (`/EFI/BOOT/grubx64.efi`), GRUB reads its configuration from its built-in prefix
//! (`/EFI/debian/grub.cfg`) and loads `/vmlinuz` and `/initrd.img` from the same ESP.
//!
//! The disk is the UKI disk's GPT + FAT32 writer ([`crate::disk`]) with other files: same fixed
//! GUIDs, volume id and timestamps, so the same inputs give the same bytes.

use crate::{Cache, Error};
use std::fs;
use std::path::{Path, PathBuf};

/// Where shim-signed installs the signed shim.
const SHIM_FILE: &str = "usr/lib/shim/shimx64.efi.signed";
/// Where grub-efi-amd64-signed installs the signed monolithic GRUB.
const GRUB_FILE: &str = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";

/// Debian's signed GRUB has `/EFI/debian` built in as its prefix (`grub-mkimage --prefix` in
/// debian/build-efi-images; the string is in both 2.06's and 2.12's image), on the device it
/// was started from: the configuration it reads is this file of the ESP.
pub const GRUB_CFG_PATH: &str = "EFI/debian/grub.cfg";
/// The kernel and initrd on the ESP, as grub.cfg names them.
pub const KERNEL_PATH: &str = "vmlinuz";
pub const INITRD_PATH: &str = "initrd.img";

/// What goes on a shim + GRUB disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubDiskSpec {
    /// shim-signed package id, e.g. `shim-16.1`.
    pub shim_id: String,
    /// grub-efi-amd64-signed package id, e.g. `grub-2.12`.
    pub grub_id: String,
    /// `/EFI/debian/grub.cfg`.
    pub grub_cfg: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

fn packaged_file(cache: &Cache, id: &str, rel: &str) -> Result<PathBuf, Error> {
    let path = cache.package(id)?.join(rel);
    if !path.is_file() {
        return Err(Error::Package {
            id: id.to_owned(),
            what: format!("{} missing", path.display()),
        });
    }
    Ok(path)
}

impl Cache {
    /// The signed shim of shim-signed package `shim_id`.
    pub fn shim(&self, shim_id: &str) -> Result<PathBuf, Error> {
        packaged_file(self, shim_id, SHIM_FILE)
    }

    /// The signed GRUB of grub-efi-amd64-signed package `grub_id`.
    pub fn grub(&self, grub_id: &str) -> Result<PathBuf, Error> {
        packaged_file(self, grub_id, GRUB_FILE)
    }

    /// The ESP's files of a shim + GRUB disk (path, bytes), in the order they are written.
    pub fn grub_esp_files(&self, spec: &GrubDiskSpec) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let read = |p: &Path| fs::read(p).map_err(|e| Error::Io(p.to_owned(), e));
        Ok(vec![
            (
                "EFI/BOOT/BOOTX64.EFI".into(),
                read(&self.shim(&spec.shim_id)?)?,
            ),
            (
                "EFI/BOOT/grubx64.efi".into(),
                read(&self.grub(&spec.grub_id)?)?,
            ),
            (GRUB_CFG_PATH.into(), spec.grub_cfg.clone().into_bytes()),
            (KERNEL_PATH.into(), read(&spec.kernel)?),
            (INITRD_PATH.into(), read(&spec.initrd)?),
        ])
    }

    /// Builds (or finds) the raw GPT disk of `spec` (sparse, 130 MiB), keyed by every file on
    /// its ESP.
    pub fn grub_disk(&self, spec: &GrubDiskSpec) -> Result<PathBuf, Error> {
        self.esp_disk_of(b"shim+grub", &self.grub_esp_files(spec)?)
    }
}
