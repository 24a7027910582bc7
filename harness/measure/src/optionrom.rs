//! PCI option ROMs and the driver images OVMF measures from them.
//!
//! A ROM is a chain of images, each starting with `55 AA` and pointing (at +0x18) to a "PCIR"
//! data structure that gives its length in 512-byte units, its code type (0 legacy x86,
//! 3 EFI) and whether it is the last image. An EFI image's ROM header adds the EFI signature
//! 0x0EF1, the PE subsystem, machine type, compression type (0 none, 1 UEFI compression), the
//! initialisation size (512-byte units) and the offset of the PE image.
//!
//! What OVMF (edk2-stable202211 … 202511, `MdeModulePkg/Bus/Pci/PciBusDxe`) does with it:
//! - `LoadOpRomImage` copies the image chain from the ROM BAR; `ProcessOpRomImage` walks it
//!   and, for every EFI image whose ROM subsystem is not an application, calls LoadImage with
//!   the device path `<PCI device>/Offset(start, start + ImageLength*512 - 1)`. It does **not**
//!   look at the machine type there (edk2 615a72400b, 2017, "dispatch option ROMs for foreign
//!   architectures"); edk2 ff3c1adf20 (after edk2-stable202511) tries native images first and
//!   falls back to foreign ones only when no native one started.
//! - LoadImage reads the file through PciBusDxe's `LoadFile2` (`LocalLoadFile2`), which accepts
//!   only EFI signature 0x0EF1, ROM subsystem boot-service or runtime driver, compression ≤ 1,
//!   `InitializationSize*512 ≤ ImageLength*512` and an image offset inside it. The file is the
//!   bytes from the image offset to the end of the initialisation size — trailing padding
//!   included — or, when compressed, their decompression (`OrigSize` bytes).
//! - The Security2 handler (`DxeTpm2MeasureBootLib`) measures that file before the loader
//!   checks the machine type: its Authenticode hash (`measure::pe`), event type and PCR from
//!   the PE header's Subsystem (boot-service driver → EV_EFI_BOOT_SERVICES_DRIVER, runtime
//!   driver → EV_EFI_RUNTIME_SERVICES_DRIVER, both PCR2 = RTMR1; an application → PCR4).
//!
//! Structural damage (no `55 AA` at offset 0, a PCIR outside the ROM or without its signature,
//! an image longer than the ROM, a zero length, an undecodable compressed stream or PE image)
//! is an error here, where firmware would silently stop or skip: a prediction from a broken
//! ROM file should fail loudly. Images firmware skips by its rules (legacy code, applications,
//! headers `LocalLoadFile2` refuses) are listed by [`images`] and produce no event.

pub mod decompress;

use crate::event::{Event, EventType, Input, Platforms};
use crate::pe::{self, PeError, PeImage};
use decompress::DecompressError;
use std::borrow::Cow;
use thiserror::Error;

pub const ROM_SIGNATURE: u16 = 0xaa55;
pub const PCIR_SIGNATURE: &[u8; 4] = b"PCIR";
pub const EFI_ROM_SIGNATURE: u32 = 0x0ef1;
pub const CODE_TYPE_PCAT: u8 = 0;
pub const CODE_TYPE_EFI: u8 = 3;
pub const COMPRESSION_NONE: u16 = 0;
pub const COMPRESSION_UEFI: u16 = 1;
pub const SUBSYSTEM_EFI_APPLICATION: u16 = 10;
pub const SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER: u16 = 11;
pub const SUBSYSTEM_EFI_RUNTIME_DRIVER: u16 = 12;
pub const MACHINE_IA32: u16 = 0x014c;
pub const MACHINE_X64: u16 = 0x8664;

/// Images are laid out, and unsigned gaps skipped, in 512-byte units.
const BLOCK: usize = 512;
/// Offset of the PCIR pointer in every ROM image header.
const PCIR_POINTER: usize = 0x18;
/// edk2's `PCI_DATA_STRUCTURE` (the PCI 2.2 layout) is read whole, so it must fit.
const PCIR_SIZE: usize = 0x18;
/// Offset of the PE subsystem field from the optional header's CheckSum (68 vs 64 in both
/// PE32 and PE32+).
const SUBSYSTEM_AFTER_CHECKSUM: u64 = 4;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptionRomError {
    #[error("{what} at ROM offset {offset:#x}: need {need} bytes, ROM has {len}")]
    Truncated {
        what: &'static str,
        offset: usize,
        need: usize,
        len: usize,
    },
    #[error("{what} at ROM offset {offset:#x}: {reason}")]
    Invalid {
        what: &'static str,
        offset: usize,
        reason: String,
    },
    #[error("compressed EFI image of the ROM image at offset {offset:#x}: {source}")]
    Decompress {
        offset: usize,
        source: DecompressError,
    },
    #[error("PE image of the EFI ROM image at offset {offset:#x}: {source}")]
    Pe { offset: usize, source: PeError },
}

fn invalid(what: &'static str, offset: usize, reason: impl Into<String>) -> OptionRomError {
    OptionRomError::Invalid {
        what,
        offset,
        reason: reason.into(),
    }
}

fn bytes_at<'a>(
    rom: &'a [u8],
    offset: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], OptionRomError> {
    offset
        .checked_add(len)
        .and_then(|end| rom.get(offset..end))
        .ok_or(OptionRomError::Truncated {
            what,
            offset,
            need: len,
            len: rom.len(),
        })
}

fn u16_at(rom: &[u8], offset: usize, what: &'static str) -> Result<u16, OptionRomError> {
    let b = bytes_at(rom, offset, 2, what)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(rom: &[u8], offset: usize, what: &'static str) -> Result<u32, OptionRomError> {
    let b = bytes_at(rom, offset, 4, what)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// One image of the chain, with its PCIR fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RomImage<'a> {
    /// Where the image starts in the ROM (the device path's Offset start).
    pub offset: usize,
    pub vendor_id: u16,
    pub device_id: u16,
    pub code_type: u8,
    /// PCIR Indicator bit 7.
    pub last: bool,
    /// The image's bytes, `ImageLength * 512` of them.
    pub bytes: &'a [u8],
    /// The EFI ROM header, for code type 3.
    pub efi: Option<EfiRomHeader>,
}

/// The EFI fields of an EFI image's ROM header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EfiRomHeader {
    pub efi_signature: u32,
    pub subsystem: u16,
    pub machine: u16,
    pub compression: u16,
    /// `InitializationSize * 512`.
    pub initialization_size: usize,
    /// Offset of the (possibly compressed) PE image from the image start.
    pub image_offset: usize,
}

/// The file LoadImage receives for one EFI ROM image: what firmware measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EfiDriver<'a> {
    /// The image's start and last byte in the ROM: the device path's `Offset(start, end)`.
    pub rom_offset: usize,
    pub rom_end: usize,
    /// From the ROM header (the PE header carries its own; they agree in well-formed ROMs).
    pub machine: u16,
    pub compressed: bool,
    /// The PE header's Subsystem: what decides the event type.
    pub pe_subsystem: u16,
    /// The file passed to LoadImage: borrowed from the ROM, or decompressed.
    pub file: Cow<'a, [u8]>,
}

impl RomImage<'_> {
    /// The image's end in the ROM, inclusive, as the device path's Offset node gives it.
    pub fn end(&self) -> usize {
        self.offset + self.bytes.len() - 1
    }
}

/// Walk the image chain as edk2 `LoadOpRomImage` does: start at 0 (which must hold `55 AA`),
/// step by each image's `ImageLength*512`, skip 512-byte blocks without `55 AA`, stop after
/// the image flagged last or at the ROM's end.
pub fn images(rom: &[u8]) -> Result<Vec<RomImage<'_>>, OptionRomError> {
    let mut found = Vec::new();
    let mut offset = 0usize;
    while offset < rom.len() {
        let signature = u16_at(rom, offset, "ROM header signature")?;
        if signature != ROM_SIGNATURE {
            if found.is_empty() {
                return Err(invalid(
                    "ROM header signature",
                    offset,
                    format!("found {signature:#06x} (want 0xaa55)"),
                ));
            }
            offset += BLOCK;
            continue;
        }
        let image = image_at(rom, offset)?;
        let last = image.last;
        offset += image.bytes.len();
        found.push(image);
        if last {
            break;
        }
    }
    Ok(found)
}

fn image_at(rom: &[u8], offset: usize) -> Result<RomImage<'_>, OptionRomError> {
    let pcir_pointer = usize::from(u16_at(rom, offset + PCIR_POINTER, "PCIR pointer")?);
    if pcir_pointer == 0 || pcir_pointer % 4 != 0 {
        return Err(invalid(
            "PCIR pointer",
            offset + PCIR_POINTER,
            format!("{pcir_pointer:#x} is not a non-zero multiple of 4"),
        ));
    }
    let pcir_offset = offset + pcir_pointer;
    let pcir = bytes_at(rom, pcir_offset, PCIR_SIZE, "PCI data structure")?;
    if &pcir[..4] != PCIR_SIGNATURE {
        return Err(invalid(
            "PCI data structure signature",
            pcir_offset,
            format!("found {} (want \"PCIR\")", hex::encode(&pcir[..4])),
        ));
    }
    let field = |at: usize| u16::from_le_bytes([pcir[at], pcir[at + 1]]);
    let length = usize::from(field(0x10)) * BLOCK;
    if length == 0 {
        return Err(invalid(
            "PCIR ImageLength",
            pcir_offset + 0x10,
            "zero (firmware would loop on this image)",
        ));
    }
    let bytes = bytes_at(rom, offset, length, "ROM image (PCIR ImageLength)")?;
    let code_type = pcir[0x14];
    let efi = if code_type == CODE_TYPE_EFI {
        Some(EfiRomHeader {
            initialization_size: usize::from(u16_at(rom, offset + 2, "InitializationSize")?)
                * BLOCK,
            efi_signature: u32_at(rom, offset + 4, "EfiSignature")?,
            subsystem: u16_at(rom, offset + 8, "EfiSubsystem")?,
            machine: u16_at(rom, offset + 0xa, "EfiMachineType")?,
            compression: u16_at(rom, offset + 0xc, "CompressionType")?,
            image_offset: usize::from(u16_at(rom, offset + 0x16, "EfiImageHeaderOffset")?),
        })
    } else {
        None
    };
    Ok(RomImage {
        offset,
        vendor_id: field(4),
        device_id: field(6),
        code_type,
        last: pcir[0x15] & 0x80 != 0,
        bytes,
        efi,
    })
}

/// Every EFI image OVMF passes to LoadImage (and so measures), in ROM order, with the file it
/// measures. Machine types are not filtered: OVMF up to edk2-stable202511 measures foreign
/// (e.g. IA32) images too, before refusing to start them (see the module notes).
pub fn efi_drivers(rom: &[u8]) -> Result<Vec<EfiDriver<'_>>, OptionRomError> {
    let mut drivers = Vec::new();
    for image in images(rom)? {
        if let Some(driver) = loaded_file(&image)? {
            drivers.push(driver);
        }
    }
    Ok(drivers)
}

/// What `ProcessOpRomImage` + `LocalLoadFile2` hand to LoadImage for one image, or `None`
/// where they skip it.
fn loaded_file<'a>(image: &RomImage<'a>) -> Result<Option<EfiDriver<'a>>, OptionRomError> {
    let Some(efi) = image.efi else {
        return Ok(None);
    };
    let accepted = efi.efi_signature == EFI_ROM_SIGNATURE
        && matches!(
            efi.subsystem,
            SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER | SUBSYSTEM_EFI_RUNTIME_DRIVER
        )
        && efi.compression <= COMPRESSION_UEFI
        && efi.initialization_size <= image.bytes.len()
        && efi.image_offset < efi.initialization_size;
    if !accepted {
        return Ok(None);
    }
    let stored = &image.bytes[efi.image_offset..efi.initialization_size];
    let file = if efi.compression == COMPRESSION_UEFI {
        Cow::Owned(
            decompress::decompress(stored).map_err(|source| OptionRomError::Decompress {
                offset: image.offset,
                source,
            })?,
        )
    } else {
        Cow::Borrowed(stored)
    };
    let pe_error = |source| OptionRomError::Pe {
        offset: image.offset,
        source,
    };
    let pe = PeImage::parse(&file).map_err(pe_error)?;
    let subsystem_at = pe.checksum_offset + SUBSYSTEM_AFTER_CHECKSUM;
    let pe_subsystem = usize::try_from(subsystem_at)
        .ok()
        .and_then(|at| file.get(at..at.checked_add(2)?))
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| {
            pe_error(PeError::Truncated {
                what: "optional header Subsystem",
                offset: subsystem_at,
                need: 2,
                len: file.len(),
            })
        })?;
    Ok(Some(EfiDriver {
        rom_offset: image.offset,
        rom_end: image.end(),
        machine: efi.machine,
        compressed: efi.compression == COMPRESSION_UEFI,
        pe_subsystem,
        file,
    }))
}

/// The events OVMF logs for the option ROM `rom` of one PCI device, in the order it logs them:
/// one per EFI driver image (see [`efi_drivers`]), EV_EFI_BOOT_SERVICES_DRIVER (or
/// EV_EFI_RUNTIME_SERVICES_DRIVER) in PCR2/RTMR1 with the Authenticode digests of the file
/// LoadImage received. The label is `label` when the ROM yields one event, else
/// `label@<rom offset>` per event. No data: the UEFI_IMAGE_LOAD_EVENT holds the address of a
/// pool buffer, which is not predictable.
///
/// vTPM only: a TD logs no option-ROM driver. dstack-vmm gives every TD virtio-net-pci NICs
/// with QEMU's default ROM, and the real dstack TD log (fixtures/tdx-json-eventlog/
/// dstack-gpu-64g) has no EV_EFI_BOOT_SERVICES_DRIVER in RTMR1; nor has trustee's OVMF
/// direct-boot CCEL. The cause (QEMU's ROM BAR in a TD, or TDVF's dispatch) is not pinned down;
/// the captures are the evidence.
pub fn driver_events(rom: &[u8], label: &str) -> Result<Vec<Event>, OptionRomError> {
    let drivers = efi_drivers(rom)?;
    let several = drivers.len() > 1;
    let mut events = Vec::with_capacity(drivers.len());
    for driver in drivers {
        let (pcr, event_type) = match driver.pe_subsystem {
            SUBSYSTEM_EFI_APPLICATION => (4, EventType::EFI_BOOT_SERVICES_APPLICATION),
            SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER => (2, EventType::EFI_BOOT_SERVICES_DRIVER),
            SUBSYSTEM_EFI_RUNTIME_DRIVER => (2, EventType::EFI_RUNTIME_SERVICES_DRIVER),
            // DxeTpm2MeasureBootLib logs nothing for other subsystems.
            _ => continue,
        };
        let digests = pe::authenticode(&driver.file).map_err(|source| OptionRomError::Pe {
            offset: driver.rom_offset,
            source,
        })?;
        let label = if several {
            format!("{label}@{:#x}", driver.rom_offset)
        } else {
            label.to_string()
        };
        events.push(Event {
            pcr,
            event_type,
            digests,
            data: None,
            label,
            varies_with: vec![Input::Devices, Input::QemuVersion],
            platforms: Platforms::VTPM,
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian ipxe-qemu's ROM, which QEMU 7.2 finds for `virtio-net-pci` (default romfile
    /// `efi-virtio.rom`, searched in /usr/lib/ipxe/qemu among QEMU's data dirs): the copy in
    /// the managed `qemu-7.2` root (images/fetch.sh), the same on every host.
    const VIRTIO_ROM: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.cache/roots/qemu-7.2/usr/lib/ipxe/qemu/efi-virtio.rom"
    );
    /// The EV_EFI_BOOT_SERVICES_DRIVER event OVMF 2022.11 logged on a vTPM for that ROM on a
    /// virtio-net-pci NIC ("PciRoot(0x0)/Pci(0x1,0x0)/Offset(0x12800,0x3cdff)", 0x2a5c8 bytes).
    const VIRTIO_DRIVER_SHA384: &str = "023467d65d283e7acfb49cb91434c6675149b105536ff84f088efa68fce7a73a59c972a98b2e32a230723534e88ae07a";
    /// sha384sum of bytes 0x12838..0x3ce00 of that ROM: the driver file as stored.
    const VIRTIO_FILE_SHA384: &str = "5671c30f3bc0511a56fff9acf8cfeb59e3ad6a880169295b32c8b44f1995e457dc36225dd6527cb7aaffbc85e722bbaf";
    /// edk2's EfiRom (BaseTools, edk2-stable202211, built from source) run as
    /// `EfiRom -f 0x1af4 -i 0x1000 -ec virtio.efi` on that driver file: one EFI image,
    /// UEFI-compressed.
    const COMPRESSED_ROM: &[u8] = include_bytes!("optionrom/testdata/virtio-efirom-ec.rom");

    fn virtio_rom() -> Vec<u8> {
        std::fs::read(VIRTIO_ROM)
            .unwrap_or_else(|e| panic!("{VIRTIO_ROM}: {e} (run images/fetch.sh)"))
    }

    fn sha384_hex(bytes: &[u8]) -> String {
        use sha2::{Digest, Sha384};
        hex::encode(Sha384::digest(bytes))
    }

    #[test]
    fn virtio_rom_chain() {
        let rom = virtio_rom();
        let images = images(&rom).unwrap();
        let summary: Vec<_> = images
            .iter()
            .map(|i| {
                (
                    i.offset,
                    i.bytes.len(),
                    i.code_type,
                    i.last,
                    i.vendor_id,
                    i.device_id,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (0, 0x12800, CODE_TYPE_PCAT, false, 0x1af4, 0x1041),
                (0x12800, 0x2a600, CODE_TYPE_EFI, true, 0x1af4, 0x1041),
            ]
        );
        assert_eq!(
            images[1].efi,
            Some(EfiRomHeader {
                efi_signature: EFI_ROM_SIGNATURE,
                subsystem: SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER,
                machine: MACHINE_X64,
                compression: COMPRESSION_NONE,
                initialization_size: 0x2a600,
                image_offset: 0x38,
            })
        );
        // The real event's device path: Offset(0x12800,0x3cdff).
        assert_eq!((images[1].offset, images[1].end()), (0x12800, 0x3cdff));
    }

    #[test]
    fn virtio_driver_is_the_file_firmware_measured() {
        let rom = virtio_rom();
        let drivers = efi_drivers(&rom).unwrap();
        assert_eq!(drivers.len(), 1);
        let d = &drivers[0];
        // The real event's ImageLengthInMemory and device path offsets.
        assert_eq!(d.file.len(), 0x2a5c8);
        assert_eq!((d.rom_offset, d.rom_end), (0x12800, 0x3cdff));
        assert_eq!(sha384_hex(&d.file), VIRTIO_FILE_SHA384);
        assert!(!d.compressed);
        assert_eq!(d.pe_subsystem, SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER);
    }

    #[test]
    fn virtio_driver_event_matches_the_real_log() {
        let events = driver_events(&virtio_rom(), "optionrom:virtio-net").unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.pcr, 2);
        assert_eq!(e.event_type, EventType::EFI_BOOT_SERVICES_DRIVER);
        assert_eq!(
            e.digests.sha384_hex().as_deref(),
            Some(VIRTIO_DRIVER_SHA384)
        );
        assert!(e.digests.sha256.is_some());
        assert_eq!(e.label, "optionrom:virtio-net");
        assert_eq!(e.varies_with, [Input::Devices, Input::QemuVersion]);
        assert_eq!(e.platforms, Platforms::VTPM);
        assert_eq!(e.data, None);
    }

    #[test]
    fn compressed_rom_from_edk2_efirom_decompresses_to_the_measured_driver() {
        let images = images(COMPRESSED_ROM).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].efi.map(|e| e.compression), Some(COMPRESSION_UEFI));
        let drivers = efi_drivers(COMPRESSED_ROM).unwrap();
        assert_eq!(drivers.len(), 1);
        assert!(drivers[0].compressed);
        assert_eq!(sha384_hex(&drivers[0].file), VIRTIO_FILE_SHA384);
        let events = driver_events(COMPRESSED_ROM, "optionrom:virtio-net").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].digests.sha384_hex().as_deref(),
            Some(VIRTIO_DRIVER_SHA384)
        );
    }

    #[test]
    fn rom_without_efi_image_measures_nothing() {
        // The legacy image alone, flagged last.
        let rom = virtio_rom();
        let mut legacy = rom[..0x12800].to_vec();
        let pcir = 0x1c;
        legacy[pcir + 0x15] |= 0x80;
        assert_eq!(driver_events(&legacy, "x").unwrap(), []);
    }

    #[test]
    fn skipped_images_follow_local_load_file2() {
        let rom = virtio_rom();
        let efi = 0x12800;
        for (field, value) in [
            (8, SUBSYSTEM_EFI_APPLICATION),
            (8, 13),
            (0xc, 2),
            (4, 0x0ef0),
        ] {
            let mut r = rom.clone();
            r[efi + field..efi + field + 2].copy_from_slice(&value.to_le_bytes());
            assert_eq!(
                efi_drivers(&r).unwrap(),
                [],
                "field {field:#x} = {value:#x}"
            );
        }
        // An IA32-tagged image is still loaded (and measured) by OVMF 2022.11.
        let mut r = rom.clone();
        r[efi + 0xa..efi + 0xc].copy_from_slice(&MACHINE_IA32.to_le_bytes());
        assert_eq!(efi_drivers(&r).unwrap().len(), 1);
    }

    #[test]
    fn two_drivers_get_offset_labels() {
        // Chain the compressed ROM's image after the host ROM's (clear its last flag).
        let mut rom = virtio_rom();
        let pcir = 0x12800 + 0x1c;
        rom[pcir + 0x15] &= !0x80;
        rom.extend_from_slice(COMPRESSED_ROM);
        let events = driver_events(&rom, "nic").unwrap();
        let labels: Vec<_> = events.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(labels, ["nic@0x12800", "nic@0x3ce00"]);
        assert!(events
            .iter()
            .all(|e| e.digests.sha384_hex().as_deref() == Some(VIRTIO_DRIVER_SHA384)));
    }

    /// The two PCR2 events OVMF 2022.11 logged (vTPM, QEMU 7.2, TCG) for one virtio-net NIC
    /// whose romfile was built by edk2's EfiRom from: the host ROM's legacy image, the driver
    /// with its COFF Machine set to IA32 (`-ec`), and the driver itself (`-ec`).
    const FOREIGN_THEN_NATIVE_SHA384: [&str; 2] = [
        "94a5a45cb27ac13df7be5894e7c96021d40aa81ed835fead3c83dc45171aeb1b040f031cb9b63fe4b1619bccc9c7c24a",
        VIRTIO_DRIVER_SHA384,
    ];

    #[test]
    fn foreign_machine_images_are_measured_in_rom_order() {
        // The same files firmware received, laid out as: legacy, IA32-tagged driver
        // (uncompressed here: the measured file is the decompressed one), compressed driver.
        let mut rom = virtio_rom();
        let efi = 0x12800;
        rom[efi + 0xa..efi + 0xc].copy_from_slice(&MACHINE_IA32.to_le_bytes());
        let pe = efi + 0x38;
        let e_lfanew = u32::from_le_bytes(rom[pe + 0x3c..pe + 0x40].try_into().unwrap()) as usize;
        rom[pe + e_lfanew + 4..pe + e_lfanew + 6].copy_from_slice(&MACHINE_IA32.to_le_bytes());
        rom[efi + 0x1c + 0x15] &= !0x80;
        rom.extend_from_slice(COMPRESSED_ROM);
        let drivers = efi_drivers(&rom).unwrap();
        let machines: Vec<_> = drivers.iter().map(|d| (d.machine, d.compressed)).collect();
        assert_eq!(machines, [(MACHINE_IA32, false), (MACHINE_X64, true)]);
        let events = driver_events(&rom, "nic").unwrap();
        let digests: Vec<_> = events
            .iter()
            .map(|e| e.digests.sha384_hex().unwrap_or_default())
            .collect();
        assert_eq!(digests, FOREIGN_THEN_NATIVE_SHA384);
        assert!(events
            .iter()
            .all(|e| (e.pcr, e.event_type) == (2, EventType::EFI_BOOT_SERVICES_DRIVER)));
    }

    #[test]
    fn structural_errors_name_the_field() {
        assert_eq!(
            images(&[0x55]),
            Err(OptionRomError::Truncated {
                what: "ROM header signature",
                offset: 0,
                need: 2,
                len: 1
            })
        );
        assert!(matches!(
            images(&[0; 512]),
            Err(OptionRomError::Invalid {
                what: "ROM header signature",
                offset: 0,
                ..
            })
        ));
        let rom = virtio_rom();
        let mut bad_pcir = rom.clone();
        bad_pcir[0x1c] = b'X';
        assert!(matches!(
            images(&bad_pcir),
            Err(OptionRomError::Invalid {
                what: "PCI data structure signature",
                offset: 0x1c,
                ..
            })
        ));
        assert!(matches!(
            images(&rom[..0x3c000]),
            Err(OptionRomError::Truncated {
                what: "ROM image (PCIR ImageLength)",
                offset: 0x12800,
                ..
            })
        ));
        let mut zero_len = rom.clone();
        zero_len[0x1c + 0x10..0x1c + 0x12].fill(0);
        assert!(matches!(
            images(&zero_len),
            Err(OptionRomError::Invalid {
                what: "PCIR ImageLength",
                ..
            })
        ));
        let mut bad_stream = COMPRESSED_ROM.to_vec();
        bad_stream[0x38 + 8..0x38 + 16].fill(0xff);
        assert!(matches!(
            driver_events(&bad_stream, "x"),
            Err(OptionRomError::Decompress { offset: 0, .. })
        ));
    }

    #[test]
    fn truncations_and_bit_flips_never_panic() {
        let rom = virtio_rom();
        // The headers of both images and the start of the PE image, plus a spread of cuts.
        let header_bits = (0..0x60)
            .chain(0x12800..0x12900)
            .flat_map(|byte| (0..8).map(move |bit| (byte, bit)));
        for (byte, bit) in header_bits {
            let mut r = rom.clone();
            r[byte] ^= 1 << bit;
            let _ = driver_events(&r, "x");
        }
        for len in (0..rom.len())
            .step_by(0x1000)
            .chain([0x12801, 0x12818, 0x12838])
        {
            let _ = driver_events(&rom[..len], "x");
        }
        // The compressed stream: flips across the header, tables and data.
        for byte in (0x38..COMPRESSED_ROM.len()).step_by(97) {
            let mut r = COMPRESSED_ROM.to_vec();
            r[byte] ^= 0x10;
            let _ = driver_events(&r, "x");
        }
    }
}
