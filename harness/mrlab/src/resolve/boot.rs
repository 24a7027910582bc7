//! The scenario's boot mode → how QEMU starts the guest (`qemu::vm::Boot`) and, for a UKI
//! boot, the parts on its ESP.

use super::esp::{self, UkiParts};
use super::files::Kernel;
use super::grub::{self, GrubParts};
use super::ResolveError;
use crate::scenario::{BootMode, Scenario};
use std::path::PathBuf;

pub(super) fn boot(
    scenario: &Scenario,
    cache: &images::Cache,
    kernel: Kernel,
    initrd: Option<PathBuf>,
) -> Result<(qemu::vm::Boot, Option<UkiParts>, Option<GrubParts>), ResolveError> {
    match scenario.boot {
        BootMode::Kernel => Ok((
            qemu::vm::Boot::Kernel {
                kernel: kernel.vmlinuz,
                initrd,
                cmdline: scenario.cmdline.clone(),
            },
            None,
            None,
        )),
        BootMode::Grub => {
            let initrd = initrd.ok_or_else(|| {
                ResolveError::key(
                    scenario,
                    "initrd",
                    "GRUB boot needs an initrd (`agent` or a file)",
                )
            })?;
            let parts = grub::grub_parts(scenario, cache, kernel.vmlinuz, initrd)?;
            Ok((qemu::vm::Boot::Disk, None, Some(parts)))
        }
        BootMode::Uki => {
            let kernel_id = kernel.id.ok_or_else(|| {
                ResolveError::key(
                    scenario,
                    "kernel",
                    "UKI boot needs a managed kernel id (the UKI is built from its package)",
                )
            })?;
            let initrd = initrd.ok_or_else(|| {
                ResolveError::key(
                    scenario,
                    "initrd",
                    "UKI boot needs an initrd (`agent` or a file)",
                )
            })?;
            let parts = esp::uki_parts(scenario, cache, kernel_id, initrd)?;
            Ok((qemu::vm::Boot::Disk, Some(parts), None))
        }
    }
}
