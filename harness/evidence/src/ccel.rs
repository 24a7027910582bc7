//! The ACPI CCEL table (Confidential Computing Event Log, ACPI 6.5 section 5.2.34): where the
//! TD's event log area is (LASA) and how long it is (LAML). The log itself is a crypto-agile
//! TCG log with the MR index in the PCR field: parse it with [`crate::log::parse`] and
//! [`crate::log::Format::Ccel`].

use crate::error::{Error, Result};
use measure::reader::Reader;
use serde_json::{json, Value};

/// `cc_type` of Intel TDX.
pub const CC_TYPE_TDX: u8 = 2;
/// Size of the CCEL table: 36-byte ACPI header + cc_type, subtype, reserved, LAML, LASA.
pub const TABLE_SIZE: usize = 56;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CcelTable {
    pub signature: [u8; 4],
    pub length: u32,
    pub revision: u8,
    pub checksum: u8,
    /// The sum of all `length` bytes is 0 mod 256.
    pub checksum_valid: bool,
    pub oem_id: [u8; 6],
    pub oem_table_id: [u8; 8],
    pub oem_revision: u32,
    pub creator_id: [u8; 4],
    pub creator_revision: u32,
    pub cc_type: u8,
    pub cc_subtype: u8,
    /// Log Area Minimum Length.
    pub laml: u64,
    /// Log Area Start Address (guest physical).
    pub lasa: u64,
}

impl CcelTable {
    /// The fixture/CLI shape (`ccel_table` in expected.json).
    pub fn to_json(&self) -> Value {
        json!({
            "signature": String::from_utf8_lossy(&self.signature),
            "length": self.length,
            "revision": self.revision,
            "oem_id": String::from_utf8_lossy(&self.oem_id),
            "oem_table_id": String::from_utf8_lossy(&self.oem_table_id),
            "cc_type": self.cc_type,
            "cc_subtype": self.cc_subtype,
            "laml": self.laml,
            "lasa": self.lasa,
            "checksum_valid": self.checksum_valid,
        })
    }
}

/// Parse the CCEL table as read from `/sys/firmware/acpi/tables/CCEL`.
pub fn parse_table(bytes: &[u8]) -> Result<CcelTable> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    let mut r = Reader::new(bytes);
    let signature = r.array::<4>("signature")?;
    if &signature != b"CCEL" {
        return Err(Error::Invalid {
            field: "signature",
            offset: 0,
            reason: format!(
                "expected \"CCEL\", found {:?}",
                String::from_utf8_lossy(&signature)
            ),
        });
    }
    let length = r.u32("length")?;
    if (length as usize) < TABLE_SIZE || length as usize > bytes.len() {
        return Err(Error::Invalid {
            field: "length",
            offset: 4,
            reason: format!(
                "table length {length} must be at least {TABLE_SIZE} and within the {} bytes given",
                bytes.len()
            ),
        });
    }
    let revision = r.u8("revision")?;
    let checksum = r.u8("checksum")?;
    let oem_id = r.array("oem_id")?;
    let oem_table_id = r.array("oem_table_id")?;
    let oem_revision = r.u32("oem_revision")?;
    let creator_id = r.array("creator_id")?;
    let creator_revision = r.u32("creator_revision")?;
    let cc_type = r.u8("cc_type")?;
    let cc_subtype = r.u8("cc_subtype")?;
    r.u16("reserved")?;
    let laml = r.u64("laml")?;
    let lasa = r.u64("lasa")?;
    let checksum_valid = bytes
        .get(..length as usize)
        .is_some_and(|t| t.iter().fold(0u8, |s, b| s.wrapping_add(*b)) == 0);
    Ok(CcelTable {
        signature,
        length,
        revision,
        checksum,
        checksum_valid,
        oem_id,
        oem_table_id,
        oem_revision,
        creator_id,
        creator_revision,
        cc_type,
        cc_subtype,
        laml,
        lasa,
    })
}
