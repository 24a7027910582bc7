//! Scenario → the one `Vm` that drives both the QEMU command line and the prediction, plus the
//! facts the prediction needs (versions → quirks). Reads files and asks QEMU its version: effects,
//! kept here at the edge. One module per part of the `Vm`: `files` (firmware, kernel, initrd),
//! `boot` (boot mode), `esp` (a UKI boot's disk), `dstack` (the preset), `machine`, `devices`;
//! `emulator` asks the QEMU binary.

mod boot;
mod devices;
mod dstack;
mod emulator;
mod esp;
mod files;
mod grub;
mod machine;

pub use devices::{device_json, vsock_daemon};
pub use esp::{DiskPlace, UkiParts};
pub use grub::GrubParts;
pub use machine::machine_json;

use crate::scenario::Scenario;
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
    /// shim + GRUB boot: the files on the boot disk, for the prediction.
    pub grub: Option<GrubParts>,
    /// The PCI option ROM file of each device that has one (label, path), in device order.
    pub option_roms: Vec<(String, PathBuf)>,
}

/// Why a scenario does not resolve: a key's value, or the image cache. The cause is the
/// error's `source()` (print it with [`crate::error::chain`]).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("scenario {scenario}: key `{key}`")]
    Key {
        scenario: String,
        key: &'static str,
        #[source]
        problem: Problem,
    },
    #[error("scenario {scenario}")]
    Images {
        scenario: String,
        #[source]
        source: images::Error,
    },
}

/// What is wrong with the value of a scenario key.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{}: no such file", .0.display())]
    NoSuchFile(PathBuf),
    #[error("{}: is a directory, not a file", .0.display())]
    Directory(PathBuf),
    #[error("{}: not a regular file (a device, socket or pipe)", .0.display())]
    NotRegular(PathBuf),
    #[error("{}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot run", .program.display())]
    CannotRun {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{} {args}` failed ({status}): {stderr}", .program.display())]
    Failed {
        program: PathBuf,
        args: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error(transparent)]
    Input(crate::input::InputError),
    #[error(transparent)]
    Value(#[from] crate::scenario::ValueError),
    /// A rule of the scenario format or of a lower stage, in words.
    #[error("{0}")]
    Rule(String),
}

impl Problem {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Problem + '_ {
        move |source| Problem::Io {
            path: path.to_owned(),
            source,
        }
    }
}

impl From<String> for Problem {
    fn from(rule: String) -> Problem {
        Problem::Rule(rule)
    }
}

impl From<&str> for Problem {
    fn from(rule: &str) -> Problem {
        Problem::Rule(rule.to_string())
    }
}

impl ResolveError {
    fn key(scenario: &Scenario, key: &'static str, problem: impl Into<Problem>) -> ResolveError {
        ResolveError::Key {
            scenario: scenario.name.clone(),
            key,
            problem: problem.into(),
        }
    }

    fn images(scenario: &Scenario, source: images::Error) -> ResolveError {
        ResolveError::Images {
            scenario: scenario.name.clone(),
            source,
        }
    }
}

/// Resolve a scenario for a VM with (`tpm`) or without a vTPM.
pub fn resolve(
    scenario: &Scenario,
    cache: &images::Cache,
    tpm: bool,
) -> Result<Resolved, ResolveError> {
    let qemu_binary = emulator::qemu_binary(scenario, cache)?;
    let qemu_version = emulator::qemu_version(scenario, cache, &qemu_binary)
        .map_err(|message| ResolveError::key(scenario, "qemu", message))?;
    let mut resolved = resolve_without_qemu(scenario, cache, tpm, qemu_binary, qemu_version)?;
    resolved.option_roms = emulator::option_roms(&resolved.vm, &resolved.qemu_binary)
        .map_err(|message| ResolveError::key(scenario, "devices", message))?;
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
    let (firmware, ovmf_version) = files::firmware(scenario, cache, tpm)?;
    let kernel = files::kernel(scenario, cache)?;
    let initrd = files::initrd(scenario, cache, kernel.id.as_deref())?;
    let (boot, mut uki, mut grub) = boot::boot(scenario, cache, kernel, initrd)?;
    let mut vm = qemu::vm::Vm::new(firmware, scenario.cpus, scenario.memory, boot);
    vm.tpm = tpm;
    devices::vsock_host(&mut vm, cache);
    dstack::apply(&mut vm, scenario, cache)?;
    machine::apply(&mut vm.machine, scenario, tpm)?;
    devices::add(&mut vm, scenario, cache)?;
    if let Some(parts) = &mut uki {
        esp::attach(&mut vm, parts).map_err(|m| ResolveError::key(scenario, "devices", m))?;
    }
    if let Some(parts) = &mut grub {
        grub::attach(&mut vm, parts).map_err(|m| ResolveError::key(scenario, "devices", m))?;
    }
    let systemd_version = uki.as_ref().and_then(|u| u.systemd_version);
    let quirks = Quirks::resolve(ovmf_version, qemu_version, systemd_version)
        .with_grub(grub.as_ref().and_then(|g| g.grub_version));
    let firmware_strings = match (quirks.needs_firmware_strings(), ovmf_version) {
        (true, Some(_)) => Some(
            cache
                .firmware_strings(&scenario.firmware)
                .map_err(|e| ResolveError::images(scenario, e))?,
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
        grub,
        option_roms: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_error_names_scenario_key_and_file_once() {
        let scenario = Scenario::parse(
            "name = \"x\"\nfirmware = \"missing.fd\"",
            Path::new("scenarios/x.toml"),
        )
        .expect("scenario");
        let cache = images::Cache::open(&images::workspace_root()).expect("lock");
        let err = resolve_without_qemu(&scenario, &cache, false, qemu::QemuBinary::system(), None)
            .expect_err("no such firmware");
        assert!(matches!(
            &err,
            ResolveError::Key {
                key: "firmware",
                problem: Problem::NoSuchFile(_),
                ..
            }
        ));
        assert_eq!(
            crate::error::chain(&err),
            "scenario x: key `firmware`: scenarios/missing.fd: no such file"
        );
    }
}
