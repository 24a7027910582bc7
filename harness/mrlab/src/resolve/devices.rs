//! The scenario's `[[devices]]` → QEMU devices, the vsock host side, and the root-bus slot each
//! device takes; and the JSON every view of a device starts from.

use super::files::{blank_disk, empty_dir, existing};
use super::{Problem, ResolveError};
use crate::scenario::{Device, Scenario};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// A device as JSON: its kind and what identifies it, the part that predictors' `inputs.json`
/// and the fw_cfg snapshot manifest share. Each adds its own fields (a predictor the files it
/// reads, the manifest what changes the guest's view: MACs, serials, share options).
pub fn device_json(device: &qemu::vm::Device) -> Map<String, Value> {
    use qemu::vm::Device;
    let value = match device {
        Device::Disk(disk) => json!({
            "kind": "virtio-blk", "id": disk.id, "format": disk.format.as_str(),
            "readonly": disk.readonly,
        }),
        Device::Net { id, .. } => json!({"kind": "virtio-net", "id": id}),
        Device::Vsock { guest_cid } => json!({"kind": "vhost-vsock", "guest_cid": guest_cid}),
        Device::Share(share) => {
            json!({"kind": "virtfs", "id": share.id, "mount_tag": share.mount_tag})
        }
        Device::Cdrom { .. } => json!({"kind": "cdrom"}),
        Device::PcieRootPort { chassis } => {
            json!({"kind": "pcie-root-port", "chassis": chassis})
        }
        Device::PcieExpander {
            id,
            slot,
            numa_node,
            bus_nr,
        } => json!({
            "kind": "pxb-pcie", "id": id, "slot": slot, "numa_node": numa_node,
            "bus_nr": bus_nr,
        }),
    };
    match value {
        Value::Object(map) => map,
        _ => unreachable!("every arm is a JSON object"),
    }
}

/// The version of rust-vmm's vhost-device-vsock that `ci/install-vhost-device-vsock.sh` installs.
const VSOCK_DAEMON_VERSION: &str = "0.3.0";

/// Where `ci/install-vhost-device-vsock.sh` puts the vhost-user vsock daemon.
pub fn vsock_daemon(cache: &images::Cache) -> PathBuf {
    cache
        .root()
        .join(format!("tools/vhost-device-vsock-{VSOCK_DAEMON_VERSION}"))
        .join("bin/vhost-device-vsock")
}

/// A TD always uses the kernel's vhost-vsock; a vTPM VM falls back to the vhost-user daemon
/// where the host has none.
pub(super) fn vsock_host(vm: &mut qemu::vm::Vm, cache: &images::Cache) {
    if vm.tpm && !Path::new(qemu::vm::VHOST_VSOCK_DEVICE).exists() {
        vm.vsock_host = qemu::VsockHost::User {
            daemon: vsock_daemon(cache),
        };
    }
}

/// Append the scenario's devices, in its order, after those `vm` already has.
pub(super) fn add(
    vm: &mut qemu::vm::Vm,
    scenario: &Scenario,
    cache: &images::Cache,
) -> Result<(), ResolveError> {
    let key_err = |message| ResolveError::key(scenario, "devices", message);
    for (i, device) in scenario.devices.iter().enumerate() {
        vm.devices.push(match device {
            Device::VirtioNet {} => qemu::vm::Device::Net {
                id: format!("net{i}"),
                mac: None,
            },
            Device::VhostVsock { cid } => qemu::vm::Device::Vsock { guest_cid: *cid },
            Device::PcieRootPort {} => qemu::vm::Device::PcieRootPort {
                chassis: i as u8 + 1,
            },
            Device::VirtioBlk { size, file } => {
                let file = match (file, size) {
                    (Some(f), _) => {
                        existing(&scenario.dir, &f.to_string_lossy()).map_err(key_err)?
                    }
                    (None, Some(size)) => blank_disk(cache, *size).map_err(key_err)?,
                    (None, None) => {
                        return Err(key_err(Problem::Rule(format!(
                            "device #{i}: virtio-blk needs `file` or `size`"
                        ))))
                    }
                };
                // Read-only: the agent never writes, and concurrent runs share the file.
                qemu::vm::Device::Disk(qemu::vm::Disk {
                    id: format!("disk{i}"),
                    file,
                    format: qemu::vm::DiskFormat::Raw,
                    readonly: true,
                    serial: None,
                })
            }
            Device::Virtfs { tag } => qemu::vm::Device::Share(qemu::vm::Share {
                id: format!("fs{i}"),
                path: empty_dir(cache).map_err(key_err)?,
                mount_tag: tag.clone(),
                readonly: true,
                security_model: "none".into(),
            }),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsock_daemon_is_where_the_install_script_puts_it() {
        let script = std::fs::read_to_string(
            images::workspace_root().join("ci/install-vhost-device-vsock.sh"),
        )
        .expect("install script");
        assert!(script.contains(&format!("\nversion={VSOCK_DAEMON_VERSION}\n")));
        assert!(script.contains("dest=\"$cache/tools/vhost-device-vsock-$version\""));
        assert!(script.contains("--root \"$tmp\""));
    }
}
