//! Whether bytes can be an x86 UEFI firmware image at all, before a VM boots them: a random
//! file given as firmware would otherwise boot until the timeout with no output.

/// QEMU's x86 `-bios` wants a whole number of 64 KiB blocks (`x86_bios_rom_init`).
const BIOS_BLOCK: usize = 64 << 10;
/// EFI_FIRMWARE_VOLUME_HEADER.Signature, at offset 40 of each volume (PI spec, vol. 3).
const FV_SIGNATURE: &[u8; 4] = b"_FVH";
const FV_SIGNATURE_AT: usize = 40;
/// Firmware volumes in OVMF images start on 4 KiB boundaries.
const FV_ALIGN: usize = 4 << 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FirmwareError {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes, not a whole number of 64 KiB blocks as QEMU's -bios needs")]
    Size(usize),
    #[error("holds no EFI firmware volume (no \"_FVH\" header on a 4 KiB boundary): not a UEFI firmware image")]
    NoFirmwareVolume,
}

/// Checks the shape of a UEFI firmware image (OVMF): size and at least one firmware volume.
pub fn check_uefi_image(image: &[u8]) -> Result<(), FirmwareError> {
    if image.is_empty() {
        return Err(FirmwareError::Empty);
    }
    if !image.len().is_multiple_of(BIOS_BLOCK) {
        return Err(FirmwareError::Size(image.len()));
    }
    let has_volume = (0..image.len())
        .step_by(FV_ALIGN)
        .any(|at| image.get(at + FV_SIGNATURE_AT..at + FV_SIGNATURE_AT + 4) == Some(FV_SIGNATURE));
    if has_volume {
        Ok(())
    } else {
        Err(FirmwareError::NoFirmwareVolume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_that_are_no_uefi_image_are_refused() {
        assert_eq!(check_uefi_image(&[]), Err(FirmwareError::Empty));
        assert_eq!(check_uefi_image(&[0; 1000]), Err(FirmwareError::Size(1000)));
        // Pseudo-random 2 MiB, as a user's wrong file would be.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let random: Vec<u8> = (0..2 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(
            check_uefi_image(&random),
            Err(FirmwareError::NoFirmwareVolume)
        );
        let mut one_volume = random;
        one_volume[0x20000 + 40..0x20000 + 44].copy_from_slice(b"_FVH");
        assert_eq!(check_uefi_image(&one_volume), Ok(()));
    }
}
