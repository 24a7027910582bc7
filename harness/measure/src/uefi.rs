//! UEFI variable, separator and action events, and the GUID and UTF-16 primitives the UEFI
//! structures share.
//!
//! Labels (stable; other crates and snapshots match on them):
//! - `efi:SecureBoot`, `efi:PK`, `efi:KEK`, `efi:db`, `efi:dbx` — EV_EFI_VARIABLE_DRIVER_CONFIG,
//!   PCR7.
//! - `efi:BootOrder` and `boot:Boot####` (upper-case hex, as the variable name) —
//!   EV_EFI_VARIABLE_BOOT, PCR1.
//! - `separator:pcrN` — EV_SEPARATOR.
//! - `action:calling-efi-app`, `action:returning-from-efi-app`,
//!   `action:exit-boot-services-invocation`, `action:exit-boot-services-returned` —
//!   EV_EFI_ACTION.
//!
//! What is hashed follows edk2 `SecurityPkg/Tcg/Tcg2Dxe` `MeasureVariable` (the TD driver
//! `OvmfPkg/Tcg/TdTcg2Dxe` does the same): for EV_EFI_VARIABLE_DRIVER_CONFIG the digest covers
//! the whole UEFI_VARIABLE_DATA; for every other variable event type (EV_EFI_VARIABLE_BOOT) it
//! covers the variable's data only, while the logged event data is the full UEFI_VARIABLE_DATA.

use crate::event::{Event, EventType, Input, Platforms};
use crate::reader::{Reader, Truncated};
use std::fmt;
use thiserror::Error;

/// An EFI_GUID as stored in memory: `Data1`–`Data3` little-endian, `Data4` as bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    /// The GUID `d1-d2-d3-d4[0..2]-d4[2..8]` in its registry form.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// Parse `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` (either case).
    pub fn parse(text: &str) -> Result<Guid, GuidError> {
        let parts: Vec<&str> = text.split('-').collect();
        let widths = [8, 4, 4, 4, 12];
        if parts.len() != 5 || parts.iter().zip(widths).any(|(p, w)| p.len() != w) {
            return Err(GuidError::Format(text.to_string()));
        }
        let hex_of = |s: &str| hex::decode(s).map_err(|_| GuidError::Format(text.to_string()));
        let (a, b, c, d, e) = (
            hex_of(parts[0])?,
            hex_of(parts[1])?,
            hex_of(parts[2])?,
            hex_of(parts[3])?,
            hex_of(parts[4])?,
        );
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&[a[3], a[2], a[1], a[0]]);
        bytes[4..6].copy_from_slice(&[b[1], b[0]]);
        bytes[6..8].copy_from_slice(&[c[1], c[0]]);
        bytes[8..10].copy_from_slice(&d);
        bytes[10..].copy_from_slice(&e);
        Ok(Guid(bytes))
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    /// Registry form in upper case, as edk2's `%g` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9]
        )?;
        for byte in &b[10..] {
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GuidError {
    #[error("not a GUID (want XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX): {0:?}")]
    Format(String),
}

/// EFI_GLOBAL_VARIABLE: SecureBoot, PK, KEK, BootOrder, Boot####.
pub const EFI_GLOBAL_VARIABLE: Guid = Guid::from_fields(
    0x8BE4_DF61,
    0x93CA,
    0x11D2,
    [0xAA, 0x0D, 0x00, 0xE0, 0x98, 0x03, 0x2B, 0x8C],
);

/// EFI_IMAGE_SECURITY_DATABASE_GUID: db, dbx.
pub const EFI_IMAGE_SECURITY_DATABASE: Guid = Guid::from_fields(
    0xD719_B2CB,
    0x3D3A,
    0x4596,
    [0xA3, 0xBC, 0xDA, 0xD0, 0x0E, 0x67, 0x65, 0x6F],
);

/// Encode a string as UTF-16LE without a terminator.
pub fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Errors decoding UEFI structures, naming the field and the byte offset.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UefiError {
    #[error("{what} at offset {offset}: need {need} bytes, {have} left")]
    Truncated {
        what: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("{what} at offset {offset}: {reason}")]
    Invalid {
        what: &'static str,
        offset: usize,
        reason: String,
    },
}

/// A short read keeps UefiError's own wording.
impl From<Truncated> for UefiError {
    fn from(e: Truncated) -> UefiError {
        UefiError::Truncated {
            what: e.field,
            offset: e.offset,
            need: e.needed,
            have: e.available,
        }
    }
}

/// Decode UTF-16LE code units (already cut to length) into a String, naming the field on error.
pub(crate) fn decode_utf16(
    bytes: &[u8],
    what: &'static str,
    offset: usize,
) -> Result<String, UefiError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(UefiError::Invalid {
            what,
            offset,
            reason: format!("odd UTF-16 byte length {}", bytes.len()),
        });
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).map_err(|_| UefiError::Invalid {
        what,
        offset,
        reason: "invalid UTF-16".to_string(),
    })
}

/// UEFI_VARIABLE_DATA (TCG PC Client PFP): the event data of every variable event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariableData {
    pub vendor: Guid,
    /// The variable name, logged as UTF-16 without the terminating NUL.
    pub name: String,
    pub data: Vec<u8>,
}

impl VariableData {
    pub fn new(vendor: Guid, name: &str, data: &[u8]) -> VariableData {
        VariableData {
            vendor,
            name: name.to_string(),
            data: data.to_vec(),
        }
    }

    /// `VariableName ‖ UnicodeNameLength (u64, in chars) ‖ VariableDataLength (u64) ‖
    /// UnicodeName ‖ VariableData`.
    pub fn encode(&self) -> Vec<u8> {
        let name = utf16le(&self.name);
        let mut out = Vec::with_capacity(32 + name.len() + self.data.len());
        out.extend_from_slice(&self.vendor.0);
        out.extend_from_slice(&((name.len() / 2) as u64).to_le_bytes());
        out.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&name);
        out.extend_from_slice(&self.data);
        out
    }

    /// Decode a UEFI_VARIABLE_DATA; trailing bytes after the variable data are an error.
    pub fn parse(bytes: &[u8]) -> Result<VariableData, UefiError> {
        let mut r = Reader::new(bytes);
        let vendor = r.guid("VariableName")?;
        let name_chars = r.u64("UnicodeNameLength")?;
        let data_len = r.u64("VariableDataLength")?;
        let name_at = r.pos();
        let name_bytes = usize::try_from(name_chars)
            .ok()
            .and_then(|n| n.checked_mul(2))
            .ok_or(UefiError::Invalid {
                what: "UnicodeNameLength",
                offset: 16,
                reason: format!("{name_chars} characters is too long"),
            })?;
        let name = decode_utf16(r.bytes(name_bytes, "UnicodeName")?, "UnicodeName", name_at)?;
        let data_len = usize::try_from(data_len).map_err(|_| UefiError::Invalid {
            what: "VariableDataLength",
            offset: 24,
            reason: format!("{data_len} bytes is too long"),
        })?;
        let data = r.bytes(data_len, "VariableData")?.to_vec();
        if r.remaining() != 0 {
            return Err(UefiError::Invalid {
                what: "UEFI_VARIABLE_DATA",
                offset: r.pos(),
                reason: format!("{} bytes after VariableData", r.remaining()),
            });
        }
        Ok(VariableData { vendor, name, data })
    }
}

/// The Secure Boot configuration variables measured into PCR7 (in this order by edk2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecureBootVariable {
    SecureBoot,
    Pk,
    Kek,
    Db,
    Dbx,
}

impl SecureBootVariable {
    pub const ALL: [SecureBootVariable; 5] = [
        SecureBootVariable::SecureBoot,
        SecureBootVariable::Pk,
        SecureBootVariable::Kek,
        SecureBootVariable::Db,
        SecureBootVariable::Dbx,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SecureBootVariable::SecureBoot => "SecureBoot",
            SecureBootVariable::Pk => "PK",
            SecureBootVariable::Kek => "KEK",
            SecureBootVariable::Db => "db",
            SecureBootVariable::Dbx => "dbx",
        }
    }

    pub fn vendor(self) -> Guid {
        match self {
            SecureBootVariable::Db | SecureBootVariable::Dbx => EFI_IMAGE_SECURITY_DATABASE,
            _ => EFI_GLOBAL_VARIABLE,
        }
    }

    pub fn label(self) -> String {
        format!("efi:{}", self.name())
    }
}

/// EV_EFI_VARIABLE_DRIVER_CONFIG in PCR7 for a Secure Boot variable. `data` is the variable's
/// content; an absent variable is measured with empty data. SecureBoot is absent in some OVMF
/// builds and `00` in others, so it is an input, not a constant.
pub fn secure_boot_variable(variable: SecureBootVariable, data: &[u8]) -> Event {
    let logged = VariableData::new(variable.vendor(), variable.name(), data).encode();
    Event::hashed_data(
        7,
        EventType::EFI_VARIABLE_DRIVER_CONFIG,
        variable.label(),
        logged,
    )
    .varies_with(&[Input::SecureBoot, Input::OvmfVersion])
    .on(Platforms::BOTH)
}

/// EV_EFI_VARIABLE_BOOT in PCR1 for `BootOrder`: the digest covers the u16 list only.
pub fn boot_order(order: &[u16]) -> Event {
    let data: Vec<u8> = order.iter().flat_map(|n| n.to_le_bytes()).collect();
    boot_variable_event("BootOrder", "efi:BootOrder".to_string(), &data).varies_with(&[
        Input::BootOrder,
        Input::Devices,
        Input::OvmfVersion,
    ])
}

/// EV_EFI_VARIABLE_BOOT in PCR1 for `Boot####`; `load_option` is the variable's data (an
/// EFI_LOAD_OPTION, see [`crate::devpath::LoadOption::encode`]), which alone is hashed.
pub fn boot_option(number: u16, load_option: &[u8]) -> Event {
    let name = format!("Boot{number:04X}");
    let label = format!("boot:{name}");
    boot_variable_event(&name, label, load_option).varies_with(&[
        Input::BootOrder,
        Input::Devices,
        Input::OvmfVersion,
    ])
}

fn boot_variable_event(name: &str, label: String, data: &[u8]) -> Event {
    let logged = VariableData::new(EFI_GLOBAL_VARIABLE, name, data).encode();
    Event::measured(1, EventType::EFI_VARIABLE_BOOT, label, data, Some(logged))
}

/// EV_SEPARATOR with data `00000000` (the success separator) into `pcr`.
pub fn separator(pcr: u32) -> Event {
    Event::hashed_data(
        pcr,
        EventType::SEPARATOR,
        format!("separator:pcr{pcr}"),
        vec![0; 4],
    )
}

/// The EV_EFI_ACTION strings edk2 measures (`MdePkg/Include/IndustryStandard/UefiTcgPlatform.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EfiAction {
    /// Before starting a boot option's image (PCR4).
    CallingEfiApplication,
    /// When a boot option's image returns (PCR4).
    ReturningFromEfiApplication,
    /// ExitBootServices called (PCR5).
    ExitBootServicesInvocation,
    /// ExitBootServices succeeded (PCR5).
    ExitBootServicesReturnedWithSuccess,
}

impl EfiAction {
    pub fn text(self) -> &'static str {
        match self {
            EfiAction::CallingEfiApplication => "Calling EFI Application from Boot Option",
            EfiAction::ReturningFromEfiApplication => {
                "Returning from EFI Application from Boot Option"
            }
            EfiAction::ExitBootServicesInvocation => "Exit Boot Services Invocation",
            EfiAction::ExitBootServicesReturnedWithSuccess => {
                "Exit Boot Services Returned with Success"
            }
        }
    }

    pub fn pcr(self) -> u32 {
        match self {
            EfiAction::CallingEfiApplication | EfiAction::ReturningFromEfiApplication => 4,
            EfiAction::ExitBootServicesInvocation
            | EfiAction::ExitBootServicesReturnedWithSuccess => 5,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            EfiAction::CallingEfiApplication => "action:calling-efi-app",
            EfiAction::ReturningFromEfiApplication => "action:returning-from-efi-app",
            EfiAction::ExitBootServicesInvocation => "action:exit-boot-services-invocation",
            EfiAction::ExitBootServicesReturnedWithSuccess => "action:exit-boot-services-returned",
        }
    }
}

/// EV_EFI_ACTION: the ASCII string without a terminator is both data and digest input.
pub fn efi_action(action: EfiAction) -> Event {
    Event::hashed_data(
        action.pcr(),
        EventType::EFI_ACTION,
        action.label(),
        action.text().as_bytes().to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trip() {
        let g = Guid::parse("8be4df61-93ca-11d2-aa0d-00e098032b8c").unwrap();
        assert_eq!(g, EFI_GLOBAL_VARIABLE);
        assert_eq!(g.to_string(), "8BE4DF61-93CA-11D2-AA0D-00E098032B8C");
        assert_eq!(
            hex::encode(g.0),
            "61dfe48bca93d211aa0d00e098032b8c",
            "in-memory layout is mixed-endian"
        );
        assert!(Guid::parse("8be4df61-93ca-11d2-aa0d00e098032b8c").is_err());
        assert!(Guid::parse("zze4df61-93ca-11d2-aa0d-00e098032b8c").is_err());
    }

    #[test]
    fn variable_data_rejects_every_truncation() {
        let full = VariableData::new(EFI_GLOBAL_VARIABLE, "Boot0000", &[1, 2, 3]).encode();
        assert_eq!(VariableData::parse(&full).unwrap().name, "Boot0000");
        for len in 0..full.len() {
            assert!(VariableData::parse(&full[..len]).is_err(), "length {len}");
        }
        let mut longer = full.clone();
        longer.push(0);
        assert!(VariableData::parse(&longer).is_err());
        let mut huge = full;
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(VariableData::parse(&huge).is_err());
    }
}
