//! The SMBIOS table OVMF installs, and the PCR1 event edk2's SmbiosMeasurementDxe measures it
//! with (edk2-stable202505 and later: "OvmfPkg: Enable Smbios measurement", cd76265f1a).
//!
//! How the table is built (edk2 sources):
//! - OvmfPkg/SmbiosPlatformDxe `InstallAllStructures`: every structure of QEMU's fw_cfg file
//!   `etc/smbios/smbios-tables` up to its end-of-table (type 127), in order, with QEMU's
//!   handles; then, when QEMU gave no type 0, OVMF's own type 0 (`mOvmfDefaultType0`: vendor,
//!   version and release date strings from the FixedPcds PcdFirmwareVendor,
//!   PcdFirmwareVersionString, PcdFirmwareReleaseDateString).
//! - MdeModulePkg/Universal/SmbiosDxe: `SmbiosAdd` gives a record added with handle 0xFFFE the
//!   lowest handle not in use (`GetAvailableSmbiosHandle`) and writes it into the record;
//!   `SmbiosCreateTable`/`SmbiosCreate64BitTable` concatenate the records in the order they were
//!   added and close with a type 127 whose handle is `GetMaxSmbiosHandle` (0xFEFF).
//! - MdeModulePkg/Universal/SmbiosMeasurementDxe `MeasureSmbiosTable` (at ReadyToBoot): a copy
//!   of that table up to and including type 127, passed through `FilterSmbiosTable`, is hashed
//!   into PCR1 as EV_EFI_HANDOFF_TABLES; its event data is an EFI_HANDOFF_TABLE_POINTERS with
//!   the entry point's address, which the digest does not cover.
//!
//! Checked against a real boot (OVMF 2026.08+ds-2, QEMU 7.2): the table built here is
//! byte-identical to the one read from guest memory, and its filtered digest is the logged one.

use crate::event::{Event, EventType, Input, Platforms};
use crate::reader::Reader;

/// OVMF's own type 0 strings: the firmware build's PcdFirmwareVendor, PcdFirmwareVersionString
/// and PcdFirmwareReleaseDateString.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareStrings {
    pub vendor: String,
    pub version: String,
    pub release_date: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SmbiosError {
    #[error(
        "etc/smbios/smbios-tables: the {field} of the structure at offset {at} runs past the end"
    )]
    Truncated { at: usize, field: &'static str },
    #[error("etc/smbios/smbios-tables: no end-of-table structure (type 127)")]
    NoEnd,
    #[error("etc/smbios/smbios-tables: structure at offset {0} has length {1} (less than its 4-byte header)")]
    BadLength(usize, u8),
}

const END_OF_TABLE: u8 = 127;
const HEADER: usize = 4;
/// SmbiosDxe `GetMaxSmbiosHandle` for SMBIOS ≠ 2.0: the end-of-table's handle.
const MAX_HANDLE: u16 = 0xFEFF;

/// QEMU's fw_cfg file of SMBIOS structures, which OVMF installs (and, from edk2-stable202505,
/// measures) and systemd-boot 262 measures parts of.
pub const QEMU_TABLES_FILE: &str = "etc/smbios/smbios-tables";

/// The structures of QEMU's `etc/smbios/smbios-tables` before its end-of-table, each with its
/// string set: what OVMF installs unchanged (handles included).
pub fn qemu_structures(qemu_tables: &[u8]) -> Result<Vec<&[u8]>, SmbiosError> {
    Ok(split(qemu_tables)?
        .into_iter()
        .take_while(|s| s[0] != END_OF_TABLE)
        .collect())
}

/// One structure: formatted area and its string set, up to and including the double NUL.
fn split(table: &[u8]) -> Result<Vec<&[u8]>, SmbiosError> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let truncated = |field| SmbiosError::Truncated { at, field };
        let mut r = Reader::at(table, at);
        let kind = r.u8("Type").map_err(|e| truncated(e.field))?;
        let length = r.u8("Length").map_err(|e| truncated(e.field))?;
        r.u16("Handle").map_err(|e| truncated(e.field))?;
        let formatted = usize::from(length)
            .checked_sub(HEADER)
            .ok_or(SmbiosError::BadLength(at, length))?;
        r.bytes(formatted, "formatted area")
            .map_err(|e| truncated(e.field))?;
        let end = r
            .rest()
            .windows(2)
            .position(|w| w == [0, 0])
            .ok_or(truncated("string set"))?;
        let next = r.pos() + end + 2;
        out.push(&table[at..next]);
        if kind == END_OF_TABLE {
            return Ok(out);
        }
        at = next;
        if at >= table.len() {
            return Err(SmbiosError::NoEnd);
        }
    }
}

fn handle(structure: &[u8]) -> u16 {
    u16::from_le_bytes([structure[2], structure[3]])
}

/// SMBIOS_TABLE_TYPE0 as `mOvmfDefaultType0` fills it (26 bytes: SMBIOS 3.x adds
/// ExtendedBiosSize), then the three strings.
fn ovmf_type0(handle: u16, strings: &FirmwareStrings) -> Vec<u8> {
    let mut t = vec![0u8, 26];
    t.extend_from_slice(&handle.to_le_bytes());
    t.extend_from_slice(&[1, 2]); // Vendor, BiosVersion
    t.extend_from_slice(&0xE800u16.to_le_bytes()); // BiosSegment
    t.extend_from_slice(&[3, 0]); // BiosReleaseDate, BiosSize
    t.extend_from_slice(&8u64.to_le_bytes()); // BiosCharacteristicsNotSupported
    t.extend_from_slice(&[0, 0x1C]); // VM, UEFI, target content distribution
    t.extend_from_slice(&[0, 0, 0xFF, 0xFF]); // BIOS release, EC release
    t.extend_from_slice(&[0, 0]); // ExtendedBiosSize
    for s in [&strings.vendor, &strings.version, &strings.release_date] {
        t.extend_from_slice(s.as_bytes());
        t.push(0);
    }
    t.push(0);
    t
}

/// The SMBIOS structure table OVMF installs, from QEMU's `etc/smbios/smbios-tables`.
pub fn ovmf_table(qemu_tables: &[u8], firmware: &FirmwareStrings) -> Result<Vec<u8>, SmbiosError> {
    let records = qemu_structures(qemu_tables)?;
    let mut table: Vec<u8> = records.concat();
    if records.iter().all(|s| s[0] != 0) {
        let used: Vec<u16> = records.iter().map(|s| handle(s)).collect();
        let free = (0..MAX_HANDLE).find(|h| !used.contains(h)).unwrap_or(0);
        table.extend(ovmf_type0(free, firmware));
    }
    table.extend_from_slice(&[END_OF_TABLE, HEADER as u8]);
    table.extend_from_slice(&MAX_HANDLE.to_le_bytes());
    table.extend_from_slice(&[0, 0]);
    Ok(table)
}

/// A field SmbiosMeasurementDxe blanks: offset and size in the formatted area; a string field's
/// string is overwritten with spaces first.
struct Blanked {
    offset: usize,
    size: usize,
    string: bool,
}

const fn field(offset: usize, size: usize) -> Blanked {
    Blanked {
        offset,
        size,
        string: false,
    }
}

const fn string(offset: usize) -> Blanked {
    Blanked {
        offset,
        size: 1,
        string: true,
    }
}

/// `mSmbiosFilterStandardTableBlackList` (edk2-stable202505+, Type4 Voltage/CurrentSpeed and
/// Type27 NominalSpeed included): per type, the fields blanked; `None` blanks all but the header.
fn filter(kind: u8) -> Option<Option<&'static [Blanked]>> {
    const TYPE1: &[Blanked] = &[string(0x07), field(0x08, 16), field(0x18, 1)];
    const TYPE2: &[Blanked] = &[string(0x07), string(0x0A)];
    const TYPE3: &[Blanked] = &[string(0x07), string(0x08)];
    const TYPE4: &[Blanked] = &[
        string(0x20),
        string(0x21),
        string(0x22),
        field(0x23, 1),
        field(0x24, 1),
        field(0x25, 1),
        field(0x2A, 2),
        field(0x2C, 2),
        field(0x2E, 2),
        field(0x11, 1),
        field(0x16, 2),
    ];
    const TYPE17: &[Blanked] = &[string(0x18), string(0x19), string(0x1A)];
    const TYPE22: &[Blanked] = &[string(0x0E), field(0x10, 2), field(0x12, 2)];
    const TYPE23: &[Blanked] = &[field(0x05, 2)];
    const TYPE27: &[Blanked] = &[field(0x0C, 2)];
    const TYPE39: &[Blanked] = &[string(0x08), string(0x09), string(0x0A)];
    match kind {
        1 => Some(Some(TYPE1)),
        2 => Some(Some(TYPE2)),
        3 => Some(Some(TYPE3)),
        4 => Some(Some(TYPE4)),
        17 => Some(Some(TYPE17)),
        22 => Some(Some(TYPE22)),
        23 => Some(Some(TYPE23)),
        27 => Some(Some(TYPE27)),
        39 => Some(Some(TYPE39)),
        // 11 OEM strings, 15 event log, 18 32-bit memory error, 31 BIS
        // entry point, 33 64-bit memory error, and every OEM type (≥ 128): all but the header.
        11 | 15 | 18 | 31 | 33 | 128.. => Some(None),
        _ => None,
    }
}

/// The byte range of string `index` (1-based) of a structure, without its NUL.
fn string_span(structure: &[u8], index: u8) -> Option<(usize, usize)> {
    let mut start = usize::from(structure[1]);
    for n in 1..=index {
        let len = structure[start..].iter().position(|&b| b == 0)?;
        if len == 0 {
            return None;
        }
        if n == index {
            return Some((start, start + len));
        }
        start += len + 1;
    }
    None
}

/// `FilterSmbiosEntry` on each structure: what SmbiosMeasurementDxe hashes.
pub fn filtered(table: &[u8]) -> Result<Vec<u8>, SmbiosError> {
    let mut out = Vec::with_capacity(table.len());
    for structure in split(table)? {
        let mut s = structure.to_vec();
        match filter(s[0]) {
            Some(None) => s[HEADER..].fill(0),
            Some(Some(fields)) => {
                let length = usize::from(s[1]);
                // A field past the formatted area (an older SMBIOS version's shorter
                // structure) is left alone.
                for f in fields.iter().filter(|f| f.offset + f.size <= length) {
                    if f.string && s[f.offset] != 0 {
                        if let Some((a, b)) = string_span(&s, s[f.offset]) {
                            s[a..b].fill(b' ');
                        }
                    }
                    s[f.offset..f.offset + f.size].fill(0);
                }
            }
            None => {}
        }
        out.extend(s);
    }
    Ok(out)
}

/// PCR1 EV_EFI_HANDOFF_TABLES over the filtered SMBIOS table. Its logged data names the
/// table's guest address, which is not predicted (`data: None`).
pub fn handoff_event(table: &[u8]) -> Result<Event, SmbiosError> {
    Ok(Event::measured(
        1,
        EventType::EFI_HANDOFF_TABLES,
        "smbios:tables",
        &filtered(table)?,
        None,
    )
    .varies_with(&[
        Input::QemuVersion,
        Input::Cpus,
        Input::Memory,
        Input::OvmfVersion,
    ])
    .on(Platforms::BOTH))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2's `etc/smbios/smbios-tables` for a 1-vCPU, 2 GiB q35 VM, as the guest read it
    /// (harness/fixtures/smbios/README.md).
    fn qemu_7_2_tables() -> Vec<u8> {
        include_bytes!("../../fixtures/smbios/qemu-7.2-smbios-tables").to_vec()
    }

    fn debian_2026_08() -> FirmwareStrings {
        FirmwareStrings {
            vendor: "Debian distribution of EDK II".into(),
            version: "2026.08+ds-2".into(),
            release_date: "09/26/2026".into(),
        }
    }

    #[test]
    fn the_table_is_what_the_guest_had_and_its_digest_what_ovmf_logged() {
        let table = ovmf_table(&qemu_7_2_tables(), &debian_2026_08()).unwrap();
        // Read from guest memory at the entry point's TableAddress.
        assert_eq!(
            table,
            include_bytes!("../../fixtures/smbios/ovmf-2026.08-guest-table")
        );
        // The PCR1 EV_EFI_HANDOFF_TABLES event of that boot.
        let event = handoff_event(&table).unwrap();
        assert_eq!(
            event.digests.sha256.map(hex::encode).as_deref(),
            Some("63973a48d2cbcee9b2e62b856faa1c7935583fee3046f85bc12f1b94c2070eaa")
        );
    }

    #[test]
    fn the_filter_blanks_serials_and_uuids_and_leaves_the_rest() {
        let table = ovmf_table(&qemu_7_2_tables(), &debian_2026_08()).unwrap();
        let mut with_uuid = qemu_7_2_tables();
        with_uuid[8..24].copy_from_slice(&[0xAB; 16]);
        let other = ovmf_table(&with_uuid, &debian_2026_08()).unwrap();
        assert_ne!(table, other);
        assert_eq!(filtered(&table).unwrap(), filtered(&other).unwrap());
        // Another firmware version string is another digest.
        let mut strings = debian_2026_08();
        strings.version = "2026.08+ds-3".into();
        let bumped = ovmf_table(&qemu_7_2_tables(), &strings).unwrap();
        assert_ne!(filtered(&table).unwrap(), filtered(&bumped).unwrap());
    }

    #[test]
    fn a_table_without_its_end_is_an_error() {
        let tables = qemu_7_2_tables();
        let cut = &tables[..tables.len() - 6];
        assert_eq!(ovmf_table(cut, &debian_2026_08()), Err(SmbiosError::NoEnd));
        assert_eq!(
            ovmf_table(&tables[..10], &debian_2026_08()),
            Err(SmbiosError::Truncated {
                at: 0,
                field: "formatted area"
            })
        );
        let into_strings = usize::from(tables[1]) + 1;
        assert_eq!(
            ovmf_table(&tables[..into_strings], &debian_2026_08()),
            Err(SmbiosError::Truncated {
                at: 0,
                field: "string set"
            })
        );
        assert_eq!(
            ovmf_table(&tables[..2], &debian_2026_08()),
            Err(SmbiosError::Truncated {
                at: 0,
                field: "Handle"
            })
        );
    }
}
