//! The shim + GRUB part of [`crate::prepare`]: the ESP's files the prediction reads.

use crate::input::{read, DISK, IMAGE};
use crate::resolve::GrubParts;
use crate::scenario::PredictOverrides;
use measure::predict::{Boot, GrubBoot};

/// The bytes a shim + GRUB prediction reads, owned.
pub struct GrubInputs<'a> {
    parts: &'a GrubParts,
    disk: Vec<u8>,
    shim: Vec<u8>,
    grub: Vec<u8>,
    kernel: Vec<u8>,
    initrd: measure::Digests,
    config: String,
}

const BLOCK_SIZE: u32 = 512;

/// Reads the ESP's files; grub.cfg as the harness wrote it, or as it would read with the
/// `[predict]` command line or lines (a prediction made wrong on purpose).
pub fn read_inputs<'a>(
    parts: &'a GrubParts,
    overrides: &PredictOverrides,
) -> Result<GrubInputs<'a>, crate::input::InputError> {
    Ok(GrubInputs {
        parts,
        disk: crate::input::read_gpt_span(&parts.disk, BLOCK_SIZE)?,
        shim: read(&parts.shim, IMAGE)?,
        grub: read(&parts.grub, IMAGE)?,
        kernel: read(&parts.kernel, IMAGE)?,
        initrd: measure::Digests::of(&read(&parts.initrd, DISK)?),
        config: match (&overrides.cmdline, &overrides.grub_lines) {
            (None, None) => parts.grub_cfg.clone(),
            (cmdline, lines) => measure::grub::config(
                lines.as_deref().unwrap_or(&parts.lines),
                cmdline.as_deref().unwrap_or(&parts.cmdline),
            ),
        },
    })
}

impl GrubInputs<'_> {
    pub fn boot(&self) -> Boot<'_> {
        Boot::Grub(GrubBoot {
            disk: &self.disk,
            block_size: BLOCK_SIZE,
            disk_pci: self.parts.place.disk_pci.clone(),
            other_disks_pci: self.parts.place.other_disks_pci.clone(),
            nics: self.parts.place.nics.clone(),
            shim: &self.shim,
            grub: &self.grub,
            files: measure::grub::GrubFiles {
                config: self.config.as_bytes(),
                kernel: &self.kernel,
                initrd: &self.initrd,
            },
        })
    }
}
