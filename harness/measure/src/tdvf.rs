//! TDVF (TD Virtual Firmware) facts of an OVMF image: the TDX metadata, MRTD, the TD HOB and
//! the CFV, as QEMU and KVM build a TD from it and as OVMF measures it.
//!
//! Where each fact comes from:
//! - Metadata location: QEMU `hw/i386/pc_sysfw_ovmf.c` (GUIDed table ending 32 bytes before the
//!   end of the image) and `hw/i386/tdvf.c` (TDX metadata offset entry, descriptor and section
//!   checks). Section types and attributes: TDVF design guide, td-shim `metadata.rs`.
//! - MRTD: QEMU `target/i386/kvm/tdx.c` `tdx_init_fw_mem_region` adds every section with
//!   `KVM_TDX_INIT_MEM_REGION`, flag `KVM_TDX_MEASURE_MEMORY_REGION` when the section has
//!   MR_EXTEND; Linux `arch/x86/kvm/vmx/tdx.c` `tdx_gmem_post_populate` does, per 4 KiB page,
//!   TDH.MEM.PAGE.ADD then 16 TDH.MR.EXTEND of 256 bytes. Older TDX trees (QEMU 8.x with the
//!   `KVM_MEMORY_MAPPING` + `KVM_TDX_EXTEND_MEMORY` API) mapped a whole section, then extended
//!   the whole section: see [`PageOrder`].
//! - TD HOB: QEMU `hw/i386/tdvf-hob.c` and `tdx_finalize_vm` (RAM entries from the e820 table,
//!   TD_HOB and TempMem ranges accepted, sorted by address); the RAM split below 4 GiB is
//!   `hw/i386/pc_q35.c`. OVMF `TdxHelperMeasureTdHob` hashes the list up to, not including, the
//!   end-of-list HOB.
//! - CFV: OVMF `TdxHelperMeasureCfvImage` hashes `PcdCfvRawDataSize` bytes at the CFV base; the
//!   logged event data is built in `TdxMeasurementHob.c`.

use crate::event::{Event, EventType, Input, Platforms};
use crate::reader::{Reader, Truncated};
use sha2::{Digest, Sha384};
use std::fmt;

/// TD page size: every section address and size is a multiple of it.
pub const PAGE_SIZE: u64 = 0x1000;
/// TDH.MR.EXTEND measures 256 bytes per call.
pub const MR_EXTEND_CHUNK: usize = 0x100;

/// Bytes after the table footer entry's GUID: the footer GUID starts 48 bytes before the end.
const FOOTER_GUID_FROM_END: usize = 48;
/// A GUIDed table entry ends with a 2-byte length (of the whole entry) and a 16-byte GUID.
const ENTRY_TRAILER: usize = 18;
const DESCRIPTOR_LEN: usize = 16;
const SECTION_LEN: usize = 32;
/// "TDVF" read as a little-endian u32.
const TDVF_SIGNATURE: [u8; 4] = *b"TDVF";
const TDVF_VERSION: u32 = 1;
/// Sanity bounds, not QEMU rules: real TDVF images have 6–8 sections totalling a few MiB. They
/// keep MRTD and TD HOB work bounded on hostile metadata.
pub const MAX_SECTIONS: u32 = 256;
pub const MAX_TOTAL_MEMORY: u64 = 1 << 32;

/// A GUID in its on-disk (mixed-endian) byte order, from its canonical fields.
const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// `96b582de-1fb2-45f7-baea-a366c55a082d`: OVMF GUIDed table footer.
pub const TABLE_FOOTER_GUID: [u8; 16] = guid(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// `e47a6535-984a-4798-865e-4685a7bf8ec2`: entry holding the TDX metadata offset from the end.
pub const TDX_METADATA_OFFSET_GUID: [u8; 16] = guid(
    0xe47a_6535,
    0x984a,
    0x4798,
    [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2],
);
/// `93bb96af-b9f2-4eb8-9462-e0ba74564236`: gUefiOvmfPkgTokenSpaceGuid, the vendor GUID OVMF
/// logs for the TD HOB handoff table.
pub const OVMF_PKG_TOKEN_SPACE_GUID: [u8; 16] = guid(
    0x93bb_96af,
    0xb9f2,
    0x4eb8,
    [0x94, 0x62, 0xe0, 0xba, 0x74, 0x56, 0x42, 0x36],
);

/// TDVF section type (TDVF design guide; td-shim adds PermMem..TdInfo).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SectionType {
    Bfv,
    Cfv,
    TdHob,
    TempMem,
    PermMem,
    Payload,
    PayloadParam,
    TdInfo,
}

impl SectionType {
    pub fn from_code(code: u32) -> Option<SectionType> {
        Some(match code {
            0 => SectionType::Bfv,
            1 => SectionType::Cfv,
            2 => SectionType::TdHob,
            3 => SectionType::TempMem,
            4 => SectionType::PermMem,
            5 => SectionType::Payload,
            6 => SectionType::PayloadParam,
            7 => SectionType::TdInfo,
            _ => return None,
        })
    }

    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        match self {
            SectionType::Bfv => "BFV",
            SectionType::Cfv => "CFV",
            SectionType::TdHob => "TD_HOB",
            SectionType::TempMem => "TempMem",
            SectionType::PermMem => "PermMem",
            SectionType::Payload => "Payload",
            SectionType::PayloadParam => "PayloadParam",
            SectionType::TdInfo => "TdInfo",
        }
    }

    /// Sections copied from the image into TD memory (QEMU requires raw data for these).
    pub fn carries_image_data(self) -> bool {
        matches!(self, SectionType::Bfv | SectionType::Cfv)
    }
}

impl fmt::Display for SectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Section attribute bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attributes(pub u32);

impl Attributes {
    /// The section's pages are measured into MRTD with TDH.MR.EXTEND.
    pub const MR_EXTEND: u32 = 1 << 0;
    /// The TDVF spec asks the VMM to add the pages after launch (TDH.MEM.PAGE.AUG). QEMU
    /// ignores it and adds every section at build time; this module follows QEMU.
    pub const PAGE_AUG: u32 = 1 << 1;

    pub fn mr_extend(self) -> bool {
        self.0 & Self::MR_EXTEND != 0
    }

    pub fn page_aug(self) -> bool {
        self.0 & Self::PAGE_AUG != 0
    }

    /// Names of the set bits, unknown bits as hex.
    pub fn names(self) -> Vec<String> {
        let mut names = Vec::new();
        if self.mr_extend() {
            names.push("MR_EXTEND".to_string());
        }
        if self.page_aug() {
            names.push("PAGE_AUG".to_string());
        }
        let unknown = self.0 & !(Self::MR_EXTEND | Self::PAGE_AUG);
        if unknown != 0 {
            names.push(format!("{unknown:#x}"));
        }
        names
    }
}

/// One TDVF section entry, as stored in the metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// Position in the metadata table (0-based).
    pub index: usize,
    /// Offset of the section's bytes in the image.
    pub data_offset: u32,
    pub raw_data_size: u32,
    /// Guest physical address.
    pub memory_address: u64,
    pub memory_data_size: u64,
    pub section_type: SectionType,
    pub attributes: Attributes,
}

impl Section {
    pub fn pages(&self) -> u64 {
        self.memory_data_size / PAGE_SIZE
    }

    /// Image bytes backing the section's memory: QEMU points the whole `memory_data_size`
    /// at `data_offset` in the image. `None` for sections QEMU backs with fresh memory.
    fn image_bytes<'a>(&self, image: &'a [u8]) -> Option<&'a [u8]> {
        if !self.section_type.carries_image_data() {
            return None;
        }
        let start = usize::try_from(self.data_offset).ok()?;
        let len = usize::try_from(self.memory_data_size).ok()?;
        image.get(start..start.checked_add(len)?)
    }
}

/// The parsed TDVF metadata of a firmware image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tdvf {
    /// Length of the image the metadata was read from.
    pub image_len: usize,
    /// File offset of the TDVF descriptor.
    pub metadata_offset: usize,
    pub version: u32,
    pub sections: Vec<Section>,
}

/// Malformed TDVF metadata, or a request the metadata cannot answer. Offsets are file offsets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TdvfError {
    #[error("image is {len} bytes, too small to hold the OVMF GUIDed table footer")]
    TooSmall { len: usize },
    #[error("no OVMF table footer GUID at offset {offset:#x} (not an OVMF image, or no TDVF)")]
    NoFooter { offset: usize },
    #[error(
        "OVMF GUIDed table length {length} at offset {offset:#x} is invalid (at least {ENTRY_TRAILER}, at most {max})"
    )]
    BadTableLength {
        offset: usize,
        length: u16,
        max: usize,
    },
    #[error(
        "OVMF GUIDed table entry at offset {offset:#x} has length {length} (at least {ENTRY_TRAILER}, at most {remaining} left in the table)"
    )]
    BadEntryLength {
        offset: usize,
        length: u16,
        remaining: usize,
    },
    #[error("OVMF GUIDed table has no TDX metadata offset entry (e47a6535-984a-4798-865e-4685a7bf8ec2): not a TDVF image")]
    NoMetadataOffset,
    #[error("TDX metadata offset entry at offset {offset:#x} holds {len} bytes, expected 4")]
    ShortMetadataOffsetEntry { offset: usize, len: usize },
    #[error("TDX metadata offset {value:#x} (from the end) is outside the {image_len}-byte image")]
    MetadataOffsetOutOfRange { value: u32, image_len: usize },
    #[error("TDVF descriptor at offset {offset:#x}: signature {found:02x?}, expected \"TDVF\"")]
    BadSignature { offset: usize, found: [u8; 4] },
    #[error("TDVF descriptor at offset {offset:#x}: version {found}, expected 1")]
    UnsupportedVersion { offset: usize, found: u32 },
    #[error("TDVF descriptor at offset {offset:#x}: {found} sections, QEMU requires at least 2")]
    TooFewSections { offset: usize, found: u32 },
    #[error("TDVF descriptor at offset {offset:#x}: {found} sections, more than the {MAX_SECTIONS} this parser accepts")]
    TooManySections { offset: usize, found: u32 },
    #[error("TDVF metadata at offset {offset:#x}: sections add up to more than {MAX_TOTAL_MEMORY:#x} bytes of TD memory")]
    TooMuchMemory { offset: usize },
    #[error("TDVF descriptor at offset {offset:#x}: length {found}, expected {expected} for its section count")]
    BadMetadataLength {
        offset: usize,
        found: u32,
        expected: u64,
    },
    #[error("TDVF metadata at offset {offset:#x} ({length} bytes) runs past the end of the {image_len}-byte image")]
    MetadataOutOfImage {
        offset: usize,
        length: u64,
        image_len: usize,
    },
    #[error("TDVF section {index}: unknown type {found}")]
    UnknownSectionType { index: usize, found: u32 },
    #[error("TDVF section {index}: type {section_type} is not supported by QEMU (only BFV, CFV, TD_HOB, TempMem)")]
    UnsupportedSectionType {
        index: usize,
        section_type: SectionType,
    },
    #[error(
        "TDVF section {index}: raw data size {raw:#x} is larger than memory data size {memory:#x}"
    )]
    RawLargerThanMemory { index: usize, raw: u32, memory: u64 },
    #[error("TDVF section {index}: memory address {address:#x} is not 4 KiB aligned")]
    UnalignedAddress { index: usize, address: u64 },
    #[error("TDVF section {index}: memory data size {size:#x} is not 4 KiB aligned")]
    UnalignedSize { index: usize, size: u64 },
    #[error("TDVF section {index}: data offset {offset:#x} is not 4 KiB aligned")]
    UnalignedDataOffset { index: usize, offset: u32 },
    #[error("TDVF section {index}: memory range {address:#x}+{size:#x} wraps around")]
    AddressOverflow {
        index: usize,
        address: u64,
        size: u64,
    },
    #[error("TDVF section {index}: {section_type} has no raw data")]
    MissingRawData {
        index: usize,
        section_type: SectionType,
    },
    #[error("TDVF section {index}: {section_type} has raw data size {raw:#x}, expected 0")]
    UnexpectedRawData {
        index: usize,
        section_type: SectionType,
        raw: u32,
    },
    #[error("TDVF section {index}: data {offset:#x}+{size:#x} runs past the end of the {image_len}-byte image")]
    SectionOutOfImage {
        index: usize,
        offset: u32,
        size: u64,
        image_len: usize,
    },
    #[error(
        "image is {found} bytes but the TDVF metadata was parsed from a {expected}-byte image"
    )]
    ImageMismatch { expected: usize, found: usize },
    #[error("TDVF section {index}: MR_EXTEND on a {section_type} section, whose contents QEMU generates, is not modelled")]
    ExtendOfGeneratedSection {
        index: usize,
        section_type: SectionType,
    },
    #[error("TDVF metadata has no {0} section")]
    NoSection(SectionType),
    #[error("memory size must be at least one page, got {0:#x}")]
    BadMemorySize(u64),
    #[error("TDVF section {index} ({section_type} {address:#x}+{size:#x}) is not inside guest RAM of {memory:#x} bytes")]
    SectionOutsideRam {
        index: usize,
        section_type: SectionType,
        address: u64,
        size: u64,
        memory: u64,
    },
    #[error("TD HOB list needs {needed:#x} bytes but the TD_HOB section holds {capacity:#x}")]
    HobOverrun { needed: u64, capacity: u64 },
    #[error("TDVF metadata: {0}")]
    Truncated(#[from] Truncated),
}

/// Find the data of the TDX metadata offset entry in the OVMF GUIDed table. Returns the file
/// offset of the entry's data and the data.
fn find_metadata_offset_entry(image: &[u8]) -> Result<(usize, &[u8]), TdvfError> {
    let len = image.len();
    let footer_at = len
        .checked_sub(FOOTER_GUID_FROM_END)
        .filter(|at| *at >= 2)
        .ok_or(TdvfError::TooSmall { len })?;
    if image.get(footer_at..footer_at + 16) != Some(&TABLE_FOOTER_GUID[..]) {
        return Err(TdvfError::NoFooter { offset: footer_at });
    }
    // The footer is itself an entry whose length covers the whole table.
    let length_at = footer_at - 2;
    let table_len = Reader::at(image, length_at)
        .u16("OVMF GUIDed table length")
        .map_err(|_| TdvfError::TooSmall { len })?;
    let entries_len = usize::from(table_len)
        .checked_sub(ENTRY_TRAILER)
        .filter(|n| *n <= length_at)
        .ok_or(TdvfError::BadTableLength {
            offset: length_at,
            length: table_len,
            max: length_at + ENTRY_TRAILER,
        })?;

    // Walk entries backwards from the footer: each is data, u16 length, GUID.
    let mut end = length_at;
    let mut remaining = entries_len;
    while remaining >= ENTRY_TRAILER {
        let guid_at = end - 16;
        let entry_len_at = end - ENTRY_TRAILER;
        let entry_len = Reader::at(image, entry_len_at)
            .u16("OVMF GUIDed table entry length")
            .map_err(|_| TdvfError::TooSmall { len })?;
        let entry_len_usize = usize::from(entry_len);
        if entry_len_usize < ENTRY_TRAILER || entry_len_usize > remaining {
            return Err(TdvfError::BadEntryLength {
                offset: entry_len_at,
                length: entry_len,
                remaining,
            });
        }
        let start = end - entry_len_usize;
        if image.get(guid_at..end) == Some(&TDX_METADATA_OFFSET_GUID[..]) {
            let data = image
                .get(start..entry_len_at)
                .ok_or(TdvfError::TooSmall { len })?;
            return Ok((start, data));
        }
        end = start;
        remaining -= entry_len_usize;
    }
    Err(TdvfError::NoMetadataOffset)
}

impl Tdvf {
    /// Parse the TDVF metadata of an OVMF image, with QEMU's checks (`hw/i386/tdvf.c`) plus
    /// the bounds QEMU leaves to luck (section data inside the image).
    pub fn parse(image: &[u8]) -> Result<Tdvf, TdvfError> {
        let image_len = image.len();
        let (entry_at, data) = find_metadata_offset_entry(image)?;
        // QEMU reads the first 4 bytes of the entry; OVMF stores exactly 4.
        let value = Reader::new(data).u32("TDX metadata offset").map_err(|_| {
            TdvfError::ShortMetadataOffsetEntry {
                offset: entry_at,
                len: data.len(),
            }
        })?;
        let offset = usize::try_from(value)
            .ok()
            .and_then(|v| image_len.checked_sub(v))
            .ok_or(TdvfError::MetadataOffsetOutOfRange { value, image_len })?;
        let descriptor = image
            .get(offset..)
            .filter(|d| d.len() >= DESCRIPTOR_LEN)
            .ok_or(TdvfError::MetadataOutOfImage {
                offset,
                length: DESCRIPTOR_LEN as u64,
                image_len,
            })?;

        // TDX_METADATA_DESCRIPTOR (TDVF design guide): Signature, Length, Version,
        // NumberOfSectionEntry.
        let mut r = Reader::at(image, offset);
        let signature: [u8; 4] = r.array("Signature")?;
        let length = r.u32("Length")?;
        let version = r.u32("Version")?;
        let count = r.u32("NumberOfSectionEntry")?;
        if signature != TDVF_SIGNATURE {
            return Err(TdvfError::BadSignature {
                offset,
                found: signature,
            });
        }
        if version != TDVF_VERSION {
            return Err(TdvfError::UnsupportedVersion {
                offset,
                found: version,
            });
        }
        if count < 2 {
            return Err(TdvfError::TooFewSections {
                offset,
                found: count,
            });
        }
        if count > MAX_SECTIONS {
            return Err(TdvfError::TooManySections {
                offset,
                found: count,
            });
        }
        let expected = DESCRIPTOR_LEN as u64 + u64::from(count) * SECTION_LEN as u64;
        if u64::from(length) != expected {
            return Err(TdvfError::BadMetadataLength {
                offset,
                found: length,
                expected,
            });
        }
        let table = usize::try_from(expected)
            .ok()
            .and_then(|n| descriptor.get(DESCRIPTOR_LEN..n))
            .ok_or(TdvfError::MetadataOutOfImage {
                offset,
                length: expected,
                image_len,
            })?;

        let sections = table
            .chunks_exact(SECTION_LEN)
            .enumerate()
            .map(|(index, raw)| parse_section(index, raw, image_len))
            .collect::<Result<Vec<_>, _>>()?;
        let total: u64 = sections.iter().map(|s| s.memory_data_size).sum();
        if sections
            .iter()
            .any(|s| s.memory_data_size > MAX_TOTAL_MEMORY)
            || total > MAX_TOTAL_MEMORY
        {
            return Err(TdvfError::TooMuchMemory { offset });
        }
        Ok(Tdvf {
            image_len,
            metadata_offset: offset,
            version,
            sections,
        })
    }

    /// The first section of a type.
    pub fn section(&self, section_type: SectionType) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.section_type == section_type)
    }

    fn check_image(&self, image: &[u8]) -> Result<(), TdvfError> {
        if image.len() != self.image_len {
            return Err(TdvfError::ImageMismatch {
                expected: self.image_len,
                found: image.len(),
            });
        }
        Ok(())
    }
}

fn parse_section(index: usize, raw: &[u8], image_len: usize) -> Result<Section, TdvfError> {
    // TDX_METADATA_SECTION; `raw` is exactly SECTION_LEN bytes (chunks_exact).
    let mut r = Reader::new(raw);
    let data_offset = r.u32("DataOffset")?;
    let raw_data_size = r.u32("RawDataSize")?;
    let memory_address = r.u64("MemoryAddress")?;
    let memory_data_size = r.u64("MemoryDataSize")?;
    let type_code = r.u32("Type")?;
    let attributes = Attributes(r.u32("Attributes")?);

    let section_type = SectionType::from_code(type_code).ok_or(TdvfError::UnknownSectionType {
        index,
        found: type_code,
    })?;
    if !matches!(
        section_type,
        SectionType::Bfv | SectionType::Cfv | SectionType::TdHob | SectionType::TempMem
    ) {
        return Err(TdvfError::UnsupportedSectionType {
            index,
            section_type,
        });
    }
    if memory_data_size < u64::from(raw_data_size) {
        return Err(TdvfError::RawLargerThanMemory {
            index,
            raw: raw_data_size,
            memory: memory_data_size,
        });
    }
    if !memory_address.is_multiple_of(PAGE_SIZE) {
        return Err(TdvfError::UnalignedAddress {
            index,
            address: memory_address,
        });
    }
    if !memory_data_size.is_multiple_of(PAGE_SIZE) {
        return Err(TdvfError::UnalignedSize {
            index,
            size: memory_data_size,
        });
    }
    if memory_address.checked_add(memory_data_size).is_none() {
        return Err(TdvfError::AddressOverflow {
            index,
            address: memory_address,
            size: memory_data_size,
        });
    }
    if section_type.carries_image_data() {
        if raw_data_size == 0 {
            return Err(TdvfError::MissingRawData {
                index,
                section_type,
            });
        }
        // KVM needs a page-aligned source; the image is mapped page-aligned.
        if !u64::from(data_offset).is_multiple_of(PAGE_SIZE) {
            return Err(TdvfError::UnalignedDataOffset {
                index,
                offset: data_offset,
            });
        }
        // QEMU hands KVM `memory_data_size` bytes starting at `data_offset` in the image.
        let end = u64::from(data_offset) + memory_data_size;
        if end > image_len as u64 {
            return Err(TdvfError::SectionOutOfImage {
                index,
                offset: data_offset,
                size: memory_data_size,
                image_len,
            });
        }
    } else if raw_data_size != 0 {
        return Err(TdvfError::UnexpectedRawData {
            index,
            section_type,
            raw: raw_data_size,
        });
    }
    Ok(Section {
        index,
        data_offset,
        raw_data_size,
        memory_address,
        memory_data_size,
        section_type,
        attributes,
    })
}

/// The order in which the TDX module sees page adds and extends: MRTD depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageOrder {
    /// Per page: TDH.MEM.PAGE.ADD, then (MR_EXTEND sections) its 16 TDH.MR.EXTENDs. Upstream
    /// KVM `KVM_TDX_INIT_MEM_REGION` (QEMU ≥ 9 TDX trees, upstream QEMU 10.1+).
    SinglePass,
    /// Per section: every page's TDH.MEM.PAGE.ADD, then every page's extends. The older API
    /// (`KVM_MEMORY_MAPPING` then `KVM_TDX_EXTEND_MEMORY` per section) used by QEMU 8.x TDX
    /// builds; dstack-mr `PageAddOrder::TwoPass`.
    TwoPass,
}

impl PageOrder {
    pub fn name(self) -> &'static str {
        match self {
            PageOrder::SinglePass => "single-pass",
            PageOrder::TwoPass => "two-pass",
        }
    }
}

/// TDH.MEM.PAGE.ADD: the TDX module hashes a 128-byte block "MEM.PAGE.ADD" ‖ pad ‖ GPA.
fn page_add(h: &mut Sha384, gpa: u64) {
    let mut block = [0u8; 128];
    block[..12].copy_from_slice(b"MEM.PAGE.ADD");
    block[16..24].copy_from_slice(&gpa.to_le_bytes());
    h.update(block);
}

/// TDH.MR.EXTEND over one page: per 256-byte chunk, "MR.EXTEND" ‖ pad ‖ GPA, then the chunk.
fn extend_page(h: &mut Sha384, gpa: u64, page: &[u8]) {
    for (i, chunk) in page.chunks(MR_EXTEND_CHUNK).enumerate() {
        let mut block = [0u8; 128];
        block[..9].copy_from_slice(b"MR.EXTEND");
        let chunk_gpa = gpa + (i * MR_EXTEND_CHUNK) as u64;
        block[16..24].copy_from_slice(&chunk_gpa.to_le_bytes());
        h.update(block);
        h.update(chunk);
    }
}

/// MRTD of a TD built from this image by QEMU + KVM, with the given page order. `image` must be
/// the bytes the metadata was parsed from.
pub fn mrtd(tdvf: &Tdvf, image: &[u8], order: PageOrder) -> Result<[u8; 48], TdvfError> {
    tdvf.check_image(image)?;
    let mut h = Sha384::new();
    for section in &tdvf.sections {
        let extended = if section.attributes.mr_extend() {
            Some(
                section
                    .image_bytes(image)
                    .ok_or(TdvfError::ExtendOfGeneratedSection {
                        index: section.index,
                        section_type: section.section_type,
                    })?,
            )
        } else {
            None
        };
        let pages = (0..section.pages()).map(|p| section.memory_address + p * PAGE_SIZE);
        let page_bytes = extended.map(|bytes| bytes.chunks(PAGE_SIZE as usize));
        match (order, page_bytes) {
            (_, None) => pages.for_each(|gpa| page_add(&mut h, gpa)),
            (PageOrder::SinglePass, Some(data)) => {
                for (gpa, page) in pages.zip(data) {
                    page_add(&mut h, gpa);
                    extend_page(&mut h, gpa, page);
                }
            }
            (PageOrder::TwoPass, Some(data)) => {
                pages.clone().for_each(|gpa| page_add(&mut h, gpa));
                for (gpa, page) in pages.zip(data) {
                    extend_page(&mut h, gpa, page);
                }
            }
        }
    }
    Ok(h.finalize().into())
}

/// Guest RAM below 4 GiB on q35 (`hw/i386/pc_q35.c`): with 0xB0000000 (2.75 GiB) or more, low
/// RAM stops at 2 GiB and the rest goes above 4 GiB; otherwise all RAM is low.
const Q35_LOWMEM_SPLIT_THRESHOLD: u64 = 0xb000_0000;
const Q35_LOWMEM_WHEN_SPLIT: u64 = 0x8000_0000;
const FOUR_GIB: u64 = 1 << 32;

/// A RAM range as QEMU's TDX code tracks it (`TdxRamEntry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    pub address: u64,
    pub length: u64,
    /// TD_HOB and TempMem ranges are added before launch; the rest is left unaccepted.
    pub accepted: bool,
}

impl RamRange {
    fn end(&self) -> u64 {
        self.address + self.length
    }
}

/// QEMU's TDX RAM entries for a q35 guest with `memory` bytes: the e820 RAM ranges, with each
/// TD_HOB and TempMem section carved out as accepted, sorted by address (`tdx_finalize_vm`).
pub fn ram_ranges(tdvf: &Tdvf, memory: u64) -> Result<Vec<RamRange>, TdvfError> {
    if memory < PAGE_SIZE {
        return Err(TdvfError::BadMemorySize(memory));
    }
    let low_limit = if memory >= Q35_LOWMEM_SPLIT_THRESHOLD {
        Q35_LOWMEM_WHEN_SPLIT
    } else {
        Q35_LOWMEM_SPLIT_THRESHOLD
    };
    let mut ranges = vec![RamRange {
        address: 0,
        length: memory.min(low_limit),
        accepted: false,
    }];
    if memory > low_limit {
        let high = memory - low_limit;
        FOUR_GIB
            .checked_add(high)
            .ok_or(TdvfError::BadMemorySize(memory))?;
        ranges.push(RamRange {
            address: FOUR_GIB,
            length: high,
            accepted: false,
        });
    }

    for section in tdvf
        .sections
        .iter()
        .filter(|s| matches!(s.section_type, SectionType::TdHob | SectionType::TempMem))
    {
        let (address, length) = (section.memory_address, section.memory_data_size);
        let end = address + length; // checked at parse time
        let outside = || TdvfError::SectionOutsideRam {
            index: section.index,
            section_type: section.section_type,
            address,
            size: length,
            memory,
        };
        // `tdx_accept_ram_range`: the first entry overlapping the range must contain it.
        let pos = ranges
            .iter()
            .position(|r| end > r.address && address < r.end())
            .ok_or_else(outside)?;
        let containing = ranges[pos];
        if containing.address > address || containing.end() < end {
            return Err(outside());
        }
        if containing.accepted {
            continue;
        }
        ranges[pos] = RamRange {
            address,
            length,
            accepted: true,
        };
        if address > containing.address {
            ranges.push(RamRange {
                address: containing.address,
                length: address - containing.address,
                accepted: false,
            });
        }
        if end < containing.end() {
            ranges.push(RamRange {
                address: end,
                length: containing.end() - end,
                accepted: false,
            });
        }
    }
    ranges.sort_by_key(|r| r.address);
    Ok(ranges)
}

const HOB_TYPE_HANDOFF: u16 = 0x0001;
const HOB_TYPE_RESOURCE_DESCRIPTOR: u16 = 0x0003;
const HOB_TYPE_END_OF_HOB_LIST: u16 = 0xffff;
const PHIT_LEN: u16 = 56;
const RESOURCE_DESCRIPTOR_LEN: u16 = 48;
const END_OF_HOB_LIST_LEN: u16 = 8;
const EFI_HOB_HANDOFF_TABLE_VERSION: u32 = 9;
const EFI_RESOURCE_SYSTEM_MEMORY: u32 = 0;
const EFI_RESOURCE_MEMORY_UNACCEPTED: u32 = 7;
/// PRESENT | INITIALIZED | TESTED: QEMU uses it for both private and unaccepted RAM.
const TDVF_RESOURCE_ATTRIBUTES: u32 = 0x7;

fn hob_header(out: &mut Vec<u8>, hob_type: u16, len: u16) {
    out.extend_from_slice(&hob_type.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
}

/// The HOB list QEMU writes into the TD_HOB section (`tdvf_hob_create`), end-of-list included:
/// PHIT, one resource descriptor per RAM range, end of list. Early TDX QEMU series (2022) also
/// listed MMIO ranges (`tdvf_hob_add_mmio_resources`); QEMU 9.x TDX trees and upstream do not,
/// and neither does the dstack capture this is checked against.
pub fn td_hob_list(tdvf: &Tdvf, memory: u64) -> Result<Vec<u8>, TdvfError> {
    let hob_section = tdvf
        .section(SectionType::TdHob)
        .ok_or(TdvfError::NoSection(SectionType::TdHob))?;
    let ranges = ram_ranges(tdvf, memory)?;
    let total = u64::from(PHIT_LEN)
        + ranges.len() as u64 * u64::from(RESOURCE_DESCRIPTOR_LEN)
        + u64::from(END_OF_HOB_LIST_LEN);
    if total > hob_section.memory_data_size {
        return Err(TdvfError::HobOverrun {
            needed: total,
            capacity: hob_section.memory_data_size,
        });
    }

    let mut hob = Vec::with_capacity(total as usize);
    hob_header(&mut hob, HOB_TYPE_HANDOFF, PHIT_LEN);
    hob.extend_from_slice(&EFI_HOB_HANDOFF_TABLE_VERSION.to_le_bytes());
    hob.extend_from_slice(&0u32.to_le_bytes()); // BootMode
    hob.extend_from_slice(&[0u8; 32]); // EfiMemoryTop/Bottom, EfiFreeMemoryTop/Bottom
    let end_of_list = hob_section.memory_address + total;
    hob.extend_from_slice(&end_of_list.to_le_bytes());

    for range in &ranges {
        hob_header(
            &mut hob,
            HOB_TYPE_RESOURCE_DESCRIPTOR,
            RESOURCE_DESCRIPTOR_LEN,
        );
        hob.extend_from_slice(&[0u8; 16]); // Owner
        let resource_type = if range.accepted {
            EFI_RESOURCE_SYSTEM_MEMORY
        } else {
            EFI_RESOURCE_MEMORY_UNACCEPTED
        };
        hob.extend_from_slice(&resource_type.to_le_bytes());
        hob.extend_from_slice(&TDVF_RESOURCE_ATTRIBUTES.to_le_bytes());
        hob.extend_from_slice(&range.address.to_le_bytes());
        hob.extend_from_slice(&range.length.to_le_bytes());
    }
    hob_header(&mut hob, HOB_TYPE_END_OF_HOB_LIST, END_OF_HOB_LIST_LEN);
    Ok(hob)
}

/// The bytes OVMF measures for the TD HOB: the list up to, not including, the end-of-list HOB
/// (`TdxHelperMeasureTdHob`).
pub fn td_hob(tdvf: &Tdvf, memory: u64) -> Result<Vec<u8>, TdvfError> {
    let mut hob = td_hob_list(tdvf, memory)?;
    hob.truncate(hob.len() - usize::from(END_OF_HOB_LIST_LEN));
    Ok(hob)
}

/// The RTMR0 event for the TD HOB: EV_EFI_HANDOFF_TABLES2 with a `TDX_HANDOFF_TABLE_POINTERS2`
/// ("TdxTable", one table: gUefiOvmfPkgTokenSpaceGuid at the TD_HOB address).
pub fn td_hob_event(tdvf: &Tdvf, memory: u64) -> Result<Event, TdvfError> {
    let measured = td_hob(tdvf, memory)?;
    let hob_address = tdvf
        .section(SectionType::TdHob)
        .ok_or(TdvfError::NoSection(SectionType::TdHob))?
        .memory_address;
    let description = b"TdxTable\0";
    let mut data = Vec::with_capacity(42);
    data.push(description.len() as u8);
    data.extend_from_slice(description);
    data.extend_from_slice(&1u64.to_le_bytes());
    data.extend_from_slice(&OVMF_PKG_TOKEN_SPACE_GUID);
    data.extend_from_slice(&hob_address.to_le_bytes());
    Ok(Event::measured(
        1,
        EventType::EFI_HANDOFF_TABLES2,
        "td_hob",
        &measured,
        Some(data),
    )
    .varies_with(&[Input::Memory, Input::Firmware, Input::QemuVersion])
    .on(Platforms::TDX))
}

/// The bytes OVMF measures for the CFV: `PcdCfvRawDataSize` bytes at the CFV base, i.e. the
/// section's raw data in the image.
pub fn cfv<'a>(tdvf: &Tdvf, image: &'a [u8]) -> Result<&'a [u8], TdvfError> {
    tdvf.check_image(image)?;
    let section = tdvf
        .section(SectionType::Cfv)
        .ok_or(TdvfError::NoSection(SectionType::Cfv))?;
    let start = section.data_offset as usize;
    // In range: parse checked data_offset + memory_data_size ≥ raw_data_size against the image.
    image
        .get(start..start + section.raw_data_size as usize)
        .ok_or(TdvfError::SectionOutOfImage {
            index: section.index,
            offset: section.data_offset,
            size: u64::from(section.raw_data_size),
            image_len: image.len(),
        })
}

/// `EFI_FIRMWARE_VOLUME_HEADER` with its one block-map entry, and the extended header's size.
const FV_HEADER_LEN: usize = 64;
const FV_EXT_HEADER_LEN: usize = 20;
const FV_EXT_HEADER_OFFSET_AT: usize = 52;

/// The FV name OVMF prints into the CFV event (`GetFvName`): the extended header's GUID when
/// the header points at one inside the volume.
fn fv_name(volume: &[u8]) -> Option<[u8; 16]> {
    let ext = usize::from(
        Reader::at(volume, FV_EXT_HEADER_OFFSET_AT)
            .u16("ExtHeaderOffset")
            .ok()?,
    );
    if volume.len() < FV_HEADER_LEN || ext < FV_HEADER_LEN || ext + FV_EXT_HEADER_LEN > volume.len()
    {
        return None;
    }
    volume.get(ext..ext + 16)?.try_into().ok()
}

/// A GUID as edk2's `%g` prints it (lower-case canonical form).
fn format_guid(g: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    )
}

/// The RTMR0 event for the CFV: EV_EFI_PLATFORM_FIRMWARE_BLOB2 with a 41-byte description
/// ("Fv(<name>)" or the X placeholder), the CFV base address and its raw size.
pub fn cfv_event(tdvf: &Tdvf, image: &[u8]) -> Result<Event, TdvfError> {
    let measured = cfv(tdvf, image)?;
    let section = tdvf
        .section(SectionType::Cfv)
        .ok_or(TdvfError::NoSection(SectionType::Cfv))?;
    let text = match fv_name(measured) {
        Some(name) => format!("Fv({})", format_guid(&name)),
        None => "Fv(XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX)".to_string(),
    };
    let mut description = [0u8; 41];
    description[..text.len()].copy_from_slice(text.as_bytes());
    let mut data = Vec::with_capacity(1 + 41 + 16);
    data.push(description.len() as u8);
    data.extend_from_slice(&description);
    data.extend_from_slice(&section.memory_address.to_le_bytes());
    data.extend_from_slice(&u64::from(section.raw_data_size).to_le_bytes());
    Ok(Event::measured(
        1,
        EventType::EFI_PLATFORM_FIRMWARE_BLOB2,
        "cfv",
        measured,
        Some(data),
    )
    .varies_with(&[Input::Firmware])
    .on(Platforms::TDX))
}

#[cfg(test)]
mod tests;
