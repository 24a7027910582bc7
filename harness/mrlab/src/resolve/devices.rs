//! The scenario's `[[devices]]` → QEMU devices, the vsock host side, and the root-bus slot each
//! device takes.

use super::files::{blank_disk, empty_dir, existing};
use super::{Problem, ResolveError};
use crate::scenario::{Device, Scenario};
use std::path::{Path, PathBuf};

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
