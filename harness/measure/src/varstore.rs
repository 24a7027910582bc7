//! The UEFI variable store a firmware image carries in its CFV (the NV variable firmware
//! volume), as edk2 lays it out: `EFI_FIRMWARE_VOLUME_HEADER`, `VARIABLE_STORE_HEADER`
//! (MdeModulePkg/Include/Guid/VariableFormat.h), then variables, each 4-byte aligned.
//!
//! A build that enrolls Secure Boot keys at build time (Debian's `OVMF.inteltdx.ms.fd`, whose
//! store holds the Microsoft KEK/db/dbx and a PK) measures those variables' bytes, so the
//! prediction reads them from here instead of assuming an empty store.

use crate::reader::{Reader, Truncated};
use crate::uefi::Guid;
use std::collections::BTreeMap;

/// `gEfiAuthenticatedVariableGuid`: the store holds `AUTHENTICATED_VARIABLE_HEADER`s.
pub const AUTHENTICATED_VARIABLE_STORE: Guid = Guid::from_fields(
    0xAAF3_2C78,
    0x947B,
    0x439A,
    [0xA1, 0x80, 0x2E, 0x14, 0x4E, 0xC3, 0x77, 0x92],
);
/// `gEfiVariableGuid`: the store holds plain `VARIABLE_HEADER`s.
pub const VARIABLE_STORE: Guid = Guid::from_fields(
    0xDDCF_3616,
    0x3275,
    0x4164,
    [0x98, 0xB6, 0xFE, 0x85, 0x70, 0x7F, 0xFE, 0x7D],
);

const FV_SIGNATURE: &[u8; 4] = b"_FVH";
const FV_SIGNATURE_AT: usize = 0x28;
const FV_HEADER_LENGTH_AT: usize = 0x30;
/// `VARIABLE_STORE_HEADER`: Signature (GUID), Size u32, Format u8, State u8, two reserved.
const STORE_HEADER_LEN: usize = 28;
/// `VARIABLE_DATA` (0x55AA): where a variable header starts.
const START_ID: u16 = 0x55AA;
/// `VAR_ADDED`: a variable in this state is the live copy.
const VAR_ADDED: u8 = 0x3F;
/// `AUTHENTICATED_VARIABLE_HEADER`: StartId, State, Reserved, Attributes, MonotonicCount,
/// TimeStamp (16), PubKeyIndex, NameSize, DataSize, VendorGuid.
const AUTH_HEADER_LEN: usize = 60;
/// `VARIABLE_HEADER`: StartId, State, Reserved, Attributes, NameSize, DataSize, VendorGuid.
const PLAIN_HEADER_LEN: usize = 32;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VarStoreError {
    #[error("the CFV is no firmware volume (no _FVH signature)")]
    NotAVolume,
    #[error("the CFV holds no variable store (unknown store GUID or truncated header)")]
    NoStore,
    #[error("variable at CFV offset {at:#x} runs past the store: {read}")]
    Truncated { at: usize, read: Truncated },
}

/// The live variables of the store in `cfv`: (vendor GUID, name) → data.
pub fn variables(cfv: &[u8]) -> Result<BTreeMap<(Guid, String), Vec<u8>>, VarStoreError> {
    if cfv.get(FV_SIGNATURE_AT..FV_SIGNATURE_AT + 4) != Some(FV_SIGNATURE.as_slice()) {
        return Err(VarStoreError::NotAVolume);
    }
    let fv_len = Reader::at(cfv, FV_HEADER_LENGTH_AT)
        .u16("HeaderLength")
        .map_err(|_| VarStoreError::NotAVolume)? as usize;
    let no_store = |_| VarStoreError::NoStore;
    let mut header = Reader::new(
        Reader::at(cfv, fv_len)
            .bytes(STORE_HEADER_LEN, "VARIABLE_STORE_HEADER")
            .map_err(no_store)?,
    );
    let guid = header.guid("Signature").map_err(no_store)?;
    let size = header.u32("Size").map_err(no_store)? as usize;
    let header_len = if guid == AUTHENTICATED_VARIABLE_STORE {
        AUTH_HEADER_LEN
    } else if guid == VARIABLE_STORE {
        PLAIN_HEADER_LEN
    } else {
        return Err(VarStoreError::NoStore);
    };
    let store = &cfv[..fv_len.saturating_add(size).min(cfv.len())];

    let mut out = BTreeMap::new();
    let mut at = align4(fv_len + STORE_HEADER_LEN);
    while at + header_len <= store.len() {
        let truncated = |read| VarStoreError::Truncated { at, read };
        let mut r = Reader::at(store, at);
        if r.u16("StartId").map_err(truncated)? != START_ID {
            break;
        }
        let state = r.u8("State").map_err(truncated)?;
        // NameSize, DataSize and VendorGuid end both header kinds.
        let mut r = Reader::at(store, at + header_len - 24);
        let name_size = r.u32("NameSize").map_err(truncated)? as usize;
        let data_size = r.u32("DataSize").map_err(truncated)? as usize;
        let vendor = r.guid("VendorGuid").map_err(truncated)?;
        let name = r.bytes(name_size, "Name").map_err(truncated)?;
        let data = r.bytes(data_size, "Data").map_err(truncated)?;
        if state == VAR_ADDED {
            let name: Vec<u16> = name
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|u| *u != 0)
                .collect();
            out.insert((vendor, String::from_utf16_lossy(&name)), data.to_vec());
        }
        at = align4(r.pos());
    }
    Ok(out)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uefi::{utf16le, EFI_GLOBAL_VARIABLE};

    /// A CFV with one authenticated variable `name` = `data`, in `state`.
    fn cfv(name: &str, data: &[u8], state: u8) -> Vec<u8> {
        let mut v = vec![0u8; 72];
        v[FV_SIGNATURE_AT..FV_SIGNATURE_AT + 4].copy_from_slice(FV_SIGNATURE);
        v[FV_HEADER_LENGTH_AT..FV_HEADER_LENGTH_AT + 2].copy_from_slice(&72u16.to_le_bytes());
        v.extend_from_slice(&AUTHENTICATED_VARIABLE_STORE.0);
        v.extend_from_slice(&0x1000u32.to_le_bytes());
        v.extend_from_slice(&[0x5A, 0xFE, 0, 0, 0, 0, 0, 0]);
        let mut name16 = utf16le(name);
        name16.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&START_ID.to_le_bytes());
        v.extend_from_slice(&[state, 0]);
        v.extend_from_slice(&0x27u32.to_le_bytes());
        v.extend_from_slice(&[0; 8 + 16 + 4]);
        v.extend_from_slice(&(name16.len() as u32).to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(&EFI_GLOBAL_VARIABLE.0);
        v.extend_from_slice(&name16);
        v.extend_from_slice(data);
        v.resize(72 + 0x1000, 0xFF);
        v
    }

    #[test]
    fn live_variables_are_read_and_deleted_ones_are_not() {
        let store = variables(&cfv("PK", b"key", VAR_ADDED)).unwrap();
        assert_eq!(
            store.get(&(EFI_GLOBAL_VARIABLE, "PK".to_string())),
            Some(&b"key".to_vec())
        );
        assert!(variables(&cfv("PK", b"key", 0x3C)).unwrap().is_empty());
    }

    #[test]
    fn bad_stores_are_errors_not_panics() {
        assert_eq!(variables(b"short"), Err(VarStoreError::NotAVolume));
        let mut image = cfv("PK", b"key", VAR_ADDED);
        image[72] ^= 1;
        assert_eq!(variables(&image), Err(VarStoreError::NoStore));
        let image = cfv("PK", b"key", VAR_ADDED);
        for cut in 0..image.len().min(300) {
            let _ = variables(&image[..cut]);
        }
        // A data size past the store.
        let mut image = cfv("PK", b"key", VAR_ADDED);
        let size_at = 72 + STORE_HEADER_LEN + AUTH_HEADER_LEN - 20;
        image[size_at..size_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = variables(&image).unwrap_err();
        assert!(
            matches!(err, VarStoreError::Truncated { at, .. } if at == 72 + STORE_HEADER_LEN),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(": Data needs 4294967295 bytes"),
            "{err}"
        );
    }
}
