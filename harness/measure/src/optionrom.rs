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
use crate::reader::{Reader, Truncated};
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
    #[error("{what} at ROM offset {offset:#x}: need {need} bytes, {available} left")]
    Truncated {
        what: &'static str,
        offset: usize,
        need: usize,
        available: usize,
    },
    #[error("{what} at ROM offset {offset:#x}: {reason}")]
    Invalid {
        what: &'static str,
        offset: usize,
        reason: String,
    },
    #[error("compressed EFI image of the ROM image at offset {offset:#x}")]
    Decompress {
        offset: usize,
        source: DecompressError,
    },
    #[error("PE image of the EFI ROM image at offset {offset:#x}")]
    Pe { offset: usize, source: PeError },
}

fn invalid(what: &'static str, offset: usize, reason: impl Into<String>) -> OptionRomError {
    OptionRomError::Invalid {
        what,
        offset,
        reason: reason.into(),
    }
}

/// A short read names the field and its ROM offset.
impl From<Truncated> for OptionRomError {
    fn from(e: Truncated) -> OptionRomError {
        OptionRomError::Truncated {
            what: e.field,
            offset: e.offset,
            need: e.needed,
            available: e.available,
        }
    }
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
        let signature = Reader::at(rom, offset).u16("ROM header signature")?;
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
    let pcir_pointer = usize::from(Reader::at(rom, offset + PCIR_POINTER).u16("PCIR pointer")?);
    if pcir_pointer == 0 || pcir_pointer % 4 != 0 {
        return Err(invalid(
            "PCIR pointer",
            offset + PCIR_POINTER,
            format!("{pcir_pointer:#x} is not a non-zero multiple of 4"),
        ));
    }
    let pcir_offset = offset + pcir_pointer;
    // PCI Firmware Specification's PCI data structure: Signature, VendorId, DeviceId,
    // DeviceListOffset, Length, Revision, ClassCode, ImageLength, CodeRevision, CodeType,
    // Indicator, MaxRuntimeImageLength.
    let mut pcir = Reader::at(rom, pcir_offset);
    pcir.clone().bytes(PCIR_SIZE, "PCI data structure")?;
    let signature: [u8; 4] = pcir.array("PCI data structure signature")?;
    if &signature != PCIR_SIGNATURE {
        return Err(invalid(
            "PCI data structure signature",
            pcir_offset,
            format!("found {} (want \"PCIR\")", hex::encode(signature)),
        ));
    }
    let vendor_id = pcir.u16("PCIR VendorId")?;
    let device_id = pcir.u16("PCIR DeviceId")?;
    pcir.bytes(8, "PCIR DeviceListOffset to ClassCode")?;
    let length = usize::from(pcir.u16("PCIR ImageLength")?) * BLOCK;
    if length == 0 {
        return Err(invalid(
            "PCIR ImageLength",
            pcir_offset + 0x10,
            "zero (firmware would loop on this image)",
        ));
    }
    let bytes = Reader::at(rom, offset).bytes(length, "ROM image (PCIR ImageLength)")?;
    pcir.u16("PCIR CodeRevision")?;
    let code_type = pcir.u8("PCIR CodeType")?;
    let indicator = pcir.u8("PCIR Indicator")?;
    let efi = if code_type == CODE_TYPE_EFI {
        // EFI_PCI_EXPANSION_ROM_HEADER after its 0xAA55 signature.
        let mut r = Reader::at(rom, offset + 2);
        let initialization_size = usize::from(r.u16("InitializationSize")?) * BLOCK;
        let efi_signature = r.u32("EfiSignature")?;
        let subsystem = r.u16("EfiSubsystem")?;
        let machine = r.u16("EfiMachineType")?;
        let compression = r.u16("CompressionType")?;
        r.bytes(8, "Reserved")?;
        let image_offset = usize::from(r.u16("EfiImageHeaderOffset")?);
        Some(EfiRomHeader {
            initialization_size,
            efi_signature,
            subsystem,
            machine,
            compression,
            image_offset,
        })
    } else {
        None
    };
    Ok(RomImage {
        offset,
        vendor_id,
        device_id,
        code_type,
        last: indicator & 0x80 != 0,
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
        .and_then(|at| Reader::at(&file, at).u16("optional header Subsystem").ok())
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
