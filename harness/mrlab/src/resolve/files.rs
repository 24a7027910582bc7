//! Where the firmware, kernel and initrd come from (a managed id in the image cache or a file
//! named by the scenario), and the blank files the cache makes for devices.

use super::{Problem, ResolveError};
use crate::scenario::Scenario;
use measure::quirks::Version;
use std::path::{Path, PathBuf};

/// The firmware image and, for a managed one, its package version. The image is checked to be
/// UEFI firmware here, not by a boot that would run to its timeout.
pub(super) fn firmware(
    scenario: &Scenario,
    cache: &images::Cache,
    tpm: bool,
) -> Result<(PathBuf, Option<Version>), ResolveError> {
    let key_err = |problem: Problem| ResolveError::key(scenario, "firmware", problem);
    let (firmware, version) = if looks_like_path(&scenario.firmware) {
        (
            existing(&scenario.dir, &scenario.firmware).map_err(key_err)?,
            None,
        )
    } else {
        if let (true, Some(why)) = (tpm, cache.firmware_without_tpm(&scenario.firmware)) {
            return Err(key_err(why.into()));
        }
        let path = cache
            .firmware(&scenario.firmware)
            .map_err(|e| ResolveError::images(scenario, e))?;
        (path, package_version(cache, &scenario.firmware))
    };
    let image = crate::input::read(&firmware, crate::input::FIRMWARE)
        .map_err(|e| key_err(Problem::Input(e)))?;
    measure::firmware::check_uefi_image(&image)
        .map_err(|e| key_err(format!("{}: {e}", firmware.display()).into()))?;
    Ok((firmware, version))
}

/// The kernel to boot: a file, or a managed kernel (its id is kept: the agent's initramfs and
/// a UKI are built from its package).
pub(super) struct Kernel {
    pub vmlinuz: PathBuf,
    pub id: Option<String>,
}

pub(super) fn kernel(scenario: &Scenario, cache: &images::Cache) -> Result<Kernel, ResolveError> {
    if looks_like_path(&scenario.kernel) {
        let vmlinuz = existing(&scenario.dir, &scenario.kernel)
            .map_err(|m| ResolveError::key(scenario, "kernel", m))?;
        return Ok(Kernel { vmlinuz, id: None });
    }
    let k = cache
        .kernel(&scenario.kernel)
        .map_err(|e| ResolveError::images(scenario, e))?;
    Ok(Kernel {
        vmlinuz: k.vmlinuz,
        id: Some(scenario.kernel.clone()),
    })
}

/// The scenario's `initrd`: none, the agent's initramfs for a managed kernel, or a file.
pub(super) fn initrd(
    scenario: &Scenario,
    cache: &images::Cache,
    kernel_id: Option<&str>,
) -> Result<Option<PathBuf>, ResolveError> {
    match scenario.initrd.as_str() {
        "" | "none" => Ok(None),
        "agent" => {
            let id = kernel_id.ok_or_else(|| {
                ResolveError::key(
                    scenario,
                    "initrd",
                    "`agent` needs a managed kernel id (its modules go into the initramfs)",
                )
            })?;
            let initramfs = cache
                .agent_initramfs(id)
                .map_err(|e| ResolveError::images(scenario, e))?;
            Ok(Some(initramfs))
        }
        path => existing(&scenario.dir, path)
            .map(Some)
            .map_err(|m| ResolveError::key(scenario, "initrd", m)),
    }
}

pub(super) fn looks_like_path(value: &str) -> bool {
    value.contains('/') || value.ends_with(".fd") || value.ends_with(".efi")
}

/// A file named in a scenario, relative to the scenario's folder unless absolute.
pub(super) fn existing(base: &Path, path: &str) -> Result<PathBuf, Problem> {
    let p = base.join(path);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() => Ok(p),
        Ok(m) if m.is_dir() => Err(Problem::Directory(p)),
        Ok(_) => Err(Problem::NotRegular(p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Problem::NoSuchFile(p)),
        Err(e) => Err(Problem::io(&p)(e)),
    }
}

/// The version of a managed package, from the lock.
pub(super) fn package_version(cache: &images::Cache, id: &str) -> Option<Version> {
    locked_version(cache, id).and_then(Version::parse)
}

/// The Debian version string the lock pins for package `id`.
pub(super) fn locked_version<'c>(cache: &'c images::Cache, id: &str) -> Option<&'c str> {
    cache
        .packages()
        .iter()
        .find(|p| p.id == id)
        .map(|p| p.version.as_str())
}

/// A sparse all-zero raw disk of `size` bytes in the image cache, made once.
pub(super) fn blank_disk(cache: &images::Cache, size: u64) -> Result<PathBuf, Problem> {
    let path = cache
        .root()
        .join("images")
        .join(format!("blank-{size}.raw"));
    if !path.is_file() {
        let dir = path.parent().expect("cache path has a parent");
        std::fs::create_dir_all(dir).map_err(Problem::io(dir))?;
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(Problem::io(dir))?;
        tmp.as_file().set_len(size).map_err(Problem::io(&path))?;
        tmp.persist(&path)
            .map_err(|e| Problem::io(&path)(e.error))?;
    }
    Ok(path)
}

/// An empty folder in the image cache to share over 9p.
pub(super) fn empty_dir(cache: &images::Cache) -> Result<PathBuf, Problem> {
    let path = cache.root().join("images").join("virtfs-empty");
    std::fs::create_dir_all(&path).map_err(Problem::io(&path))?;
    Ok(path)
}
