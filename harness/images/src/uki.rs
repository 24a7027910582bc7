//! Unified kernel images built with systemd's own `ukify` (the stub's version where the lock
//! pins it, `ukify-262` for `systemd-boot-262`; else `ukify-257`), so the UKIs the harness boots
//! are laid out exactly as the ones users ship; the systemd-stub is selectable
//! (`systemd-boot-252` … `systemd-boot-262`), which decides what gets measured into PCR 11.
//!
//! Determinism: ukify copies the stub and appends sections in a fixed order; the only clock it
//! reads is for signing certificates, which is not used. `SOURCE_DATE_EPOCH` is pinned anyway and
//! an empty `--config` keeps a host `ukify.conf` out of the build.

use crate::{write_atomically, Cache, Error};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

/// The `.osrel` section of every harness UKI.
pub const UKI_OS_RELEASE: &str = "ID=mrlab\nNAME=\"mrlab agent\"\nVERSION_ID=1\n";

/// Bumped whenever the way UKIs are assembled changes.
const UKI_FORMAT: &str = "mrlab-uki-v1";
/// Package providing `usr/bin/ukify` for stubs whose own systemd version has no pinned ukify.
pub const UKIFY_PACKAGE: &str = "ukify-257";

/// What goes into a UKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkiSpec {
    /// Kernel package id, e.g. `kernel-6.12`; `.uname` is its release.
    pub kernel_id: String,
    /// systemd-boot package id providing `linuxx64.efi.stub`, e.g. `systemd-boot-257`.
    pub stub_id: String,
    /// The `.cmdline` section.
    pub cmdline: String,
    /// The `.initrd` section (e.g. [`Cache::agent_initramfs`]).
    pub initrd: PathBuf,
}

fn python() -> PathBuf {
    // ukify's shebang is `/usr/bin/env python3`, but the distribution's interpreter is the one
    // that has python3-pefile (installed by ci/setup-host.sh); a PATH python may not.
    match std::env::var_os("MRLAB_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ if Path::new("/usr/bin/python3").exists() => PathBuf::from("/usr/bin/python3"),
        _ => PathBuf::from("python3"),
    }
}

impl Cache {
    /// The `linuxx64.efi.stub` of systemd-boot package `stub_id`.
    pub fn stub(&self, stub_id: &str) -> Result<PathBuf, Error> {
        let path = self
            .package(stub_id)?
            .join("usr/lib/systemd/boot/efi/linuxx64.efi.stub");
        if !path.is_file() {
            return Err(Error::Package {
                id: stub_id.to_owned(),
                what: format!("{} missing", path.display()),
            });
        }
        Ok(path)
    }

    /// The ukify package a UKI with stub `stub_id` is built with: `ukify-<v>` for
    /// `systemd-boot-<v>` when the lock pins it, else [`UKIFY_PACKAGE`].
    pub fn ukify_for(&self, stub_id: &str) -> String {
        stub_id
            .strip_prefix("systemd-boot-")
            .map(|v| format!("ukify-{v}"))
            .filter(|id| self.packages().iter().any(|p| &p.id == id))
            .unwrap_or_else(|| UKIFY_PACKAGE.to_owned())
    }

    /// Builds (or finds) the UKI for `spec` under `<root>/images/uki-<key>/uki.efi`, keyed by
    /// the locked kernel, stub and ukify packages, the cmdline and the initrd's sha256.
    pub fn uki(&self, spec: &UkiSpec) -> Result<PathBuf, Error> {
        let kernel = self.kernel(&spec.kernel_id)?;
        let stub = self.stub(&spec.stub_id)?;
        let ukify_id = self.ukify_for(&spec.stub_id);
        let ukify = self.package(&ukify_id)?.join("usr/bin/ukify");
        let initrd = fs::read(&spec.initrd).map_err(|e| Error::Io(spec.initrd.clone(), e))?;

        let mut key = Sha256::new();
        for part in [
            UKI_FORMAT,
            &self.locked(&spec.kernel_id)?.sha256,
            &self.locked(&spec.stub_id)?.sha256,
            &self.locked(&ukify_id)?.sha256,
            &spec.cmdline,
            UKI_OS_RELEASE,
        ] {
            // Length-prefixed so that no two part lists hash alike.
            key.update((part.len() as u64).to_le_bytes());
            key.update(part);
        }
        key.update(Sha256::digest(&initrd));
        let key = hex::encode(key.finalize());
        let dir = self.root.join("images").join(format!("uki-{}", &key[..16]));
        let out = dir.join("uki.efi");
        if out.is_file() {
            return Ok(out);
        }

        let work = crate::temp_sibling(&dir.join("work"));
        fs::create_dir_all(&work).map_err(|e| Error::Io(work.clone(), e))?;
        let result = self.run_ukify(&ukify, &kernel, &stub, spec, &work);
        let built = result.and_then(|path| {
            let data = fs::read(&path).map_err(|e| Error::Io(path.clone(), e))?;
            write_atomically(&out, &data)
        });
        let _ = fs::remove_dir_all(&work);
        built.map(|()| out)
    }

    fn run_ukify(
        &self,
        ukify: &Path,
        kernel: &crate::KernelImage,
        stub: &Path,
        spec: &UkiSpec,
        work: &Path,
    ) -> Result<PathBuf, Error> {
        let os_release = work.join("os-release");
        let config = work.join("ukify.conf");
        let output = work.join("uki.efi");
        fs::write(&os_release, UKI_OS_RELEASE).map_err(|e| Error::Io(os_release.clone(), e))?;
        fs::write(&config, "").map_err(|e| Error::Io(config.clone(), e))?;
        let args: Vec<OsString> = vec![
            ukify.into(),
            "build".into(),
            "--config".into(),
            config.into(),
            "--linux".into(),
            kernel.vmlinuz.clone().into(),
            "--initrd".into(),
            spec.initrd.clone().into(),
            "--cmdline".into(),
            spec.cmdline.clone().into(),
            "--os-release".into(),
            format!("@{}", os_release.display()).into(),
            "--uname".into(),
            kernel.release.clone().into(),
            "--stub".into(),
            stub.into(),
            "--output".into(),
            output.clone().into(),
        ];
        let python = python();
        let describe = std::iter::once(python.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let build = duct::cmd(python, args).env("SOURCE_DATE_EPOCH", "0");
        crate::run_tool(build, &describe).map_err(|e| match e {
            Error::Tool { command, mut output } if output.contains("No module named 'pefile'") => {
                output.push_str("\nukify needs python3-pefile: run ci/setup-host.sh (or set MRLAB_PYTHON to a python3 that has pefile)");
                Error::Tool { command, output }
            }
            e => e,
        })?;
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stub_is_built_with_the_ukify_of_its_own_systemd_where_pinned() {
        let cache = Cache::open(&crate::workspace_root()).expect("lock");
        assert_eq!(cache.ukify_for("systemd-boot-262"), "ukify-262");
        assert_eq!(cache.ukify_for("systemd-boot-257"), "ukify-257");
        // No ukify-252 is pinned: 257's builds the old stubs' UKIs.
        assert_eq!(cache.ukify_for("systemd-boot-252"), UKIFY_PACKAGE);
    }
}
