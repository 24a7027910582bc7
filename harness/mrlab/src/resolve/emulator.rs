//! The QEMU a scenario runs: its binary, the version it reports and the option ROM files it
//! attaches to devices. Asking QEMU is an effect; a host without QEMU skips this module
//! (`resolve_without_qemu`).

use super::files::{existing, looks_like_path};
use super::ResolveError;
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
pub(super) fn qemu_version(binary: &qemu::QemuBinary) -> Result<Option<Version>, String> {
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
    use qemu::vm::Device;

    fn scenario(text: &str) -> Scenario {
        Scenario::parse(text, Path::new("scenarios/x.toml")).expect("scenario")
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
}
