//! fw_cfg snapshots: what `mrlab fwcfg SCENARIO --out DIR` writes, and the prediction
//! `mrlab predict SCENARIO --fwcfg DIR` makes from it without starting QEMU. This is how a
//! verifier or a KMS computes reference values on a host that has the firmware, kernel and
//! initrd but no QEMU.
//!
//! `DIR/manifest.json` (`"schema": "mrlab-fwcfg/1"`) holds what produced the files — QEMU's id
//! and version, the OVMF version the oracle programmed the chipset for, the machine type and the
//! VM's shape (everything of the [`qemu::vm::Vm`] that reaches fw_cfg, with the sha256 of the
//! `-kernel` image and initrd instead of their paths) — and the name, size and sha256 of every
//! file. Beside the fw_cfg files, the snapshot keeps the PCI option ROMs QEMU attaches to
//! devices (`(option-rom)/…`): they come from QEMU's data, not from fw_cfg, and OVMF measures
//! them. A snapshot is refused when its manifest does not fit the scenario (another VM shape,
//! QEMU or OVMF) or a file does not match its digest.

use crate::input::{read, InputError, DISK, IMAGE};
use crate::prepare::{self, PrepareError, Prepared};
use crate::resolve::{self, Resolved};
use crate::scenario::Scenario;
use measure::quirks::Version;
use measure::Platform;
use qemu::vm::{Boot, Device, Vm};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
pub const SCHEMA: &str = "mrlab-fwcfg/1";
/// Where the option ROMs go in a snapshot; no fw_cfg name has parentheses.
const OPTION_ROM_DIR: &str = "(option-rom)";

/// Why a snapshot could not be written or used: the manifest or file and what is wrong with it,
/// the lower error as `source()`.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Input(#[from] InputError),
    /// Boxed: a resolve error is the largest by far, and every result of this stage carries its size.
    #[error(transparent)]
    Resolve(Box<resolve::ResolveError>),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error("file name {0:?} is not a plain relative path")]
    NotRelative(String),
    #[error("{}: cannot write", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: option ROM without a file name", .0.display())]
    RomWithoutName(PathBuf),
    #[error("{}: not JSON", .path.display())]
    ManifestJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The manifest does not fit the scenario, or lacks what a snapshot has.
    #[error("{}: {problem}", .path.display())]
    Manifest { path: PathBuf, problem: String },
    /// A file the manifest lists is wrong (`source`).
    #[error("{}", .manifest.display())]
    Listed {
        manifest: PathBuf,
        #[source]
        source: Box<SnapshotError>,
    },
    #[error("a file entry has no \"name\"")]
    NoName,
    #[error("{}: sha256 {digest}, the manifest says {listed}", .path.display())]
    Digest {
        path: PathBuf,
        digest: String,
        listed: String,
    },
}

impl From<resolve::ResolveError> for SnapshotError {
    fn from(e: resolve::ResolveError) -> SnapshotError {
        SnapshotError::Resolve(Box::new(e))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Everything of `vm` that decides its fw_cfg files, without host paths. Files that fw_cfg
/// carries (the `-kernel` image) or that the prediction reads beside it (the initrd) are named
/// by their sha256; disks, shares and the vsock backend are not (only their PCI functions reach
/// fw_cfg).
pub fn vm_shape(vm: &Vm) -> Result<Value, InputError> {
    let boot = match &vm.boot {
        Boot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => json!({
            "kind": "kernel",
            "kernel_sha256": sha256_hex(&read(kernel, IMAGE)?),
            "initrd_sha256": initrd.as_deref().map(|p| read(p, DISK)).transpose()?.map(|b| sha256_hex(&b)),
            "cmdline": cmdline,
        }),
        Boot::Disk => json!({"kind": "disk"}),
    };
    // The shared view of each device, plus what changes the guest's view of it.
    let devices: Vec<Value> = vm
        .devices
        .iter()
        .map(|d| {
            let mut json = crate::resolve::device_json(d);
            match d {
                Device::Disk(disk) => {
                    json.insert("serial".into(), json!(disk.serial));
                }
                Device::Net { mac, .. } => {
                    json.insert("mac".into(), json!(mac));
                }
                Device::Share(share) => {
                    json.insert("readonly".into(), json!(share.readonly));
                    json.insert("security_model".into(), json!(share.security_model));
                }
                _ => {}
            }
            Value::Object(json)
        })
        .collect();
    Ok(json!({
        "cpus": vm.cpus,
        "memory": vm.memory,
        "machine": crate::resolve::machine_json(&vm.machine),
        "boot": boot,
        "devices": devices,
        "serial": vm.serial,
        "tpm": vm.tpm,
    }))
}

/// A fw_cfg name (or option ROM name) as a relative path below the snapshot folder; anything
/// that could leave it is refused.
fn relative(name: &str) -> Result<PathBuf, SnapshotError> {
    let path = Path::new(name.trim_start_matches('/'));
    if name.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(SnapshotError::NotRelative(name.to_string()));
    }
    Ok(path.to_path_buf())
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> Result<(), SnapshotError> {
    let path = dir.join(relative(name)?);
    let cannot_write = |path: &Path| {
        let path = path.to_owned();
        move |source| SnapshotError::Write { path, source }
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(cannot_write(parent))?;
    }
    std::fs::write(&path, data).map_err(cannot_write(&path))
}

fn entry(name: &str, data: &[u8]) -> Value {
    json!({"name": name, "bytes": data.len(), "sha256": sha256_hex(data)})
}

/// The manifest of `resolved`'s fw_cfg `files`, without the file list.
fn identity(resolved: &Resolved) -> Result<Value, InputError> {
    Ok(json!({
        "schema": SCHEMA,
        "qemu": {
            "id": resolved.scenario.qemu,
            "version": resolved.qemu_version.map(|v| v.to_string()),
        },
        "ovmf_version": resolved.ovmf_version.map(|v| v.to_string()),
        "machine": "q35",
        "vm": vm_shape(&resolved.vm)?,
    }))
}

/// Write `files` (the oracle's dump of `resolved.vm`), the option ROMs and the manifest into
/// `dir`. Returns the names written, with their sizes, in order.
pub fn write(
    dir: &Path,
    resolved: &Resolved,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<(String, usize)>, SnapshotError> {
    let mut manifest = identity(resolved)?;
    let mut written = Vec::new();
    let mut entries = Vec::new();
    for (name, data) in files {
        write_file(dir, name, data)?;
        entries.push(entry(name, data));
        written.push((name.clone(), data.len()));
    }
    let mut roms = Vec::new();
    for (label, path) in &resolved.option_roms {
        let data = read(path, IMAGE)?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| SnapshotError::RomWithoutName(path.clone()))?;
        let name = format!("{OPTION_ROM_DIR}/{file_name}");
        write_file(dir, &name, &data)?;
        let mut rom = entry(&name, &data);
        rom["label"] = json!(label);
        roms.push(rom);
        written.push((name, data.len()));
    }
    manifest["files"] = json!(entries);
    manifest["option_roms"] = json!(roms);
    let text = serde_json::to_string_pretty(&manifest).expect("a JSON value serializes") + "\n";
    write_file(dir, MANIFEST, text.as_bytes())?;
    Ok(written)
}

/// The first place two JSON values differ, as `path: a vs b`.
fn first_difference(path: &str, expected: &Value, found: &Value) -> Option<String> {
    match (expected, found) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|k| {
                first_difference(
                    &format!("{path}.{k}"),
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                )
            })
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(&format!("{path}[{i}]"), x, y)),
        _ if expected == found => None,
        _ => Some(format!(
            "{path}: the snapshot has {found}, the scenario {expected}"
        )),
    }
}

/// One file the manifest lists, read and checked against its size and sha256.
fn read_listed(dir: &Path, listed: &Value) -> Result<(String, Vec<u8>), SnapshotError> {
    let name = listed["name"]
        .as_str()
        .ok_or(SnapshotError::NoName)?
        .to_string();
    let path = dir.join(relative(&name)?);
    let data = read(&path, IMAGE)?;
    let digest = sha256_hex(&data);
    if Some(digest.as_str()) != listed["sha256"].as_str() {
        return Err(SnapshotError::Digest {
            path,
            digest,
            listed: listed["sha256"].to_string(),
        });
    }
    Ok((name, data))
}

/// Predict `scenario` for `platform` from the snapshot in `dir`, starting no QEMU.
pub fn prepare(
    scenario: &Scenario,
    cache: &images::Cache,
    platform: Platform,
    dir: &Path,
) -> Result<Box<Prepared>, SnapshotError> {
    let manifest_path = dir.join(MANIFEST);
    let manifest: Value =
        serde_json::from_slice(&read(&manifest_path, IMAGE)?).map_err(|source| {
            SnapshotError::ManifestJson {
                path: manifest_path.clone(),
                source,
            }
        })?;
    let bad = |problem: String| SnapshotError::Manifest {
        path: manifest_path.clone(),
        problem,
    };
    let listed = |source| SnapshotError::Listed {
        manifest: manifest_path.clone(),
        source: Box::new(source),
    };
    if manifest["schema"] != SCHEMA {
        return Err(bad(format!(
            "schema {}, expected {SCHEMA:?}",
            manifest["schema"]
        )));
    }
    let qemu_version = manifest["qemu"]["version"]
        .as_str()
        .map(|v| Version::parse(v).ok_or_else(|| bad(format!("QEMU version {v:?}"))))
        .transpose()?;
    // Recorded, never started: the version comes from the manifest.
    let qemu_binary = qemu::QemuBinary::at(&scenario.qemu);
    let mut resolved = resolve::resolve_without_qemu(
        scenario,
        cache,
        platform == Platform::Vtpm,
        qemu_binary,
        qemu_version,
    )?;
    let expected = identity(&resolved)?;
    for key in ["schema", "qemu", "ovmf_version", "machine", "vm"] {
        if let Some(why) = first_difference(key, &expected[key], &manifest[key]) {
            let hint = if key == "vm" && expected["vm"]["tpm"] != manifest["vm"]["tpm"] {
                " (a vTPM VM has a TPM device, a TD none: dump with `mrlab fwcfg --no-tpm` for --platform tdx)"
            } else {
                ""
            };
            return Err(bad(format!(
                "does not fit scenario {}: {why}{hint}",
                scenario.name
            )));
        }
    }
    let mut oracle = BTreeMap::new();
    for file in manifest["files"]
        .as_array()
        .ok_or_else(|| bad("no \"files\" list".into()))?
    {
        let (name, data) = read_listed(dir, file).map_err(listed)?;
        oracle.insert(name, data);
    }
    for rom in manifest["option_roms"]
        .as_array()
        .ok_or_else(|| bad("no \"option_roms\" list".into()))?
    {
        let (name, _) = read_listed(dir, rom).map_err(listed)?;
        let label = rom["label"]
            .as_str()
            .ok_or_else(|| bad(format!("option ROM {name} has no label")))?;
        resolved
            .option_roms
            .push((label.to_string(), dir.join(relative(&name)?)));
    }
    let initrd = prepare::read_initrd_digests(&resolved.vm)?;
    Ok(prepare::prepared_from(resolved, oracle, initrd, platform)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        for bad in ["../x", "/../x", "a/../../x", ""] {
            assert!(relative(bad).is_err(), "{bad}");
        }
        assert_eq!(
            relative("/etc/acpi/tables").unwrap(),
            Path::new("etc/acpi/tables")
        );
        assert_eq!(relative("(kernel)").unwrap(), Path::new("(kernel)"));
    }

    #[test]
    fn the_first_difference_names_its_path() {
        let a = json!({"vm": {"cpus": 1, "devices": [{"id": "net0"}]}});
        let b = json!({"vm": {"cpus": 1, "devices": [{"id": "net1"}]}});
        assert_eq!(
            first_difference("m", &a, &b).as_deref(),
            Some("m.vm.devices[0].id: the snapshot has \"net1\", the scenario \"net0\"")
        );
        assert_eq!(first_difference("m", &a, &a), None);
    }
}
