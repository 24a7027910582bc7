//! The QEMU a scenario runs: its binary, the version it reports and the option ROM files it
//! attaches to devices. Asking QEMU is an effect; a host without QEMU skips this module
//! (`resolve_without_qemu`).

use super::files::{existing, looks_like_path};
use super::{Problem, ResolveError};
use crate::scenario::Scenario;
use measure::quirks::Version;
use std::path::{Path, PathBuf};

/// The scenario's `qemu`: `system` (on PATH), a managed id from the lock (extracted by
/// images/fetch.sh, run with its own data and module dirs), or a path to a binary.
pub(super) fn qemu_binary(
    scenario: &Scenario,
    cache: &images::Cache,
) -> Result<qemu::QemuBinary, ResolveError> {
    if scenario.qemu == "system" {
        return Ok(qemu::QemuBinary::system());
    }
    if looks_like_path(&scenario.qemu) {
        return existing(&scenario.dir, &scenario.qemu)
            .map(qemu::QemuBinary::at)
            .map_err(|message| ResolveError::key(scenario, "qemu", message));
    }
    cache
        .qemu(&scenario.qemu)
        .map_err(|source| ResolveError::images(scenario, source))
}

/// QEMU attaches `efi-virtio.rom` to every virtio-net-pci (`virtio_net_pci_class_init`
/// romfile), found in its data dirs (`-L help`, first hit wins). Other devices here have none.
pub(super) fn option_roms(
    vm: &qemu::vm::Vm,
    qemu_binary: &qemu::QemuBinary,
) -> Result<Vec<(String, PathBuf)>, Problem> {
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
            Problem::Rule(format!(
                "virtio-net needs efi-virtio.rom in one of {}'s data dirs (`-L help`); install Debian package ipxe-qemu",
                qemu_binary.program.display()
            ))
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

/// Runs `qemu args…` to completion; a failure (e.g. a shared library the loader cannot find)
/// is an error carrying QEMU's stderr.
fn run_qemu(qemu: &qemu::QemuBinary, args: &[&str]) -> Result<std::process::Output, Problem> {
    let program = &qemu.program;
    let out = qemu
        .output_once(args)
        .map_err(|source| Problem::CannotRun {
            program: program.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Problem::Failed {
            program: program.clone(),
            args: args.join(" "),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// The QEMU's major.minor version. A managed root's is the `qemu-system-x86` its lock entry
/// pins (`1:7.2+dfsg-7+deb12u18` → 7.2; tests/managed_qemu.rs checks each root's binary says
/// the same), so that no `qemu --version` delays the oracle; any other QEMU is asked.
pub(super) fn qemu_version(
    scenario: &Scenario,
    cache: &images::Cache,
    binary: &qemu::QemuBinary,
) -> Result<Option<Version>, Problem> {
    let managed = scenario.qemu != "system" && !looks_like_path(&scenario.qemu);
    match cache.root_package_version(&scenario.qemu, "qemu-system-x86") {
        Some(locked) if managed => Ok(Version::parse(locked)),
        _ => asked_version(binary),
    }
}

/// `QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)` → 7.2.
fn asked_version(binary: &qemu::QemuBinary) -> Result<Option<Version>, Problem> {
    let out = run_qemu(binary, &["--version"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .and_then(Version::parse))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(text: &str) -> Scenario {
        Scenario::parse(text, Path::new("scenarios/x.toml")).expect("scenario")
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
            .expect_err("nothing fetched");
        let err = crate::error::chain(&err);
        assert!(
            err.starts_with("scenario x: ")
                && err.contains("\"qemu-10.0\" is not fetched")
                && err.ends_with("run images/fetch.sh"),
            "{err}"
        );
        // An id the lock does not pin is named as such.
        let err = qemu_binary(&scenario("name = \"x\"\nqemu = \"qemu-9.9\""), &cache)
            .expect_err("not pinned");
        let err = crate::error::chain(&err);
        assert!(err.contains("\"qemu-9.9\" is not in"), "{err}");
        // The cause follows once (it used to be printed twice, in the message and as source).
        assert_eq!(err.matches("is not in").count(), 1, "{err}");
    }
}
