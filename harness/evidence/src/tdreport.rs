//! The 1024-byte TDREPORT_STRUCT (Intel TDX Module ABI, TDG.MR.REPORT):
//!
//! | offset | size | part |
//! |---|---|---|
//! | 0 | 256 | REPORTMACSTRUCT: type [4] (type, subtype, version, reserved), reserved [12], CPUSVN [16], TEE_TCB_INFO_HASH [48], TEE_INFO_HASH [48], REPORTDATA [64], reserved [32], MAC [32] |
//! | 256 | 239 | TEE_TCB_INFO: valid [8], TEE_TCB_SVN [16], MRSEAM [48], MRSIGNERSEAM [48], ATTRIBUTES [8], reserved [111] |
//! | 495 | 17 | reserved |
//! | 512 | 512 | TDINFO: ATTRIBUTES [8], XFAM [8], MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG, RTMR0..3 [48 each], SERVTD_HASH [48], reserved [64] |
//!
//! TEE_TCB_INFO_HASH = SHA-384(TEE_TCB_INFO) and TEE_INFO_HASH = SHA-384(TDINFO).

use crate::error::{Error, Result};
use crate::tdinfo::{fields, TdInfo};
use measure::reader::Reader;
use serde_json::{json, Value};
use sha2::{Digest, Sha384};

pub const SIZE: usize = 1024;
/// REPORTMACSTRUCT.REPORTTYPE.TYPE of a TDX report (TDX Module ABI, REPORTTYPE).
const TDX_REPORT_TYPE: u8 = 0x81;
const TEE_TCB_INFO: std::ops::Range<usize> = 256..495;
const TDINFO: std::ops::Range<usize> = 512..1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdReport {
    pub report_type: u8,
    pub report_subtype: u8,
    pub report_version: u8,
    pub cpusvn: [u8; 16],
    pub tee_tcb_info_hash: [u8; 48],
    pub tee_info_hash: [u8; 48],
    pub report_data: [u8; 64],
    pub mac: [u8; 32],
    pub tee_tcb_svn: [u8; 16],
    pub mrseam: [u8; 48],
    pub mrsignerseam: [u8; 48],
    pub td: TdInfo,
    pub servtd_hash: [u8; 48],
    /// SHA-384 of TEE_TCB_INFO equals TEE_TCB_INFO_HASH.
    pub tee_tcb_info_hash_valid: bool,
    /// SHA-384 of TDINFO equals TEE_INFO_HASH.
    pub tee_info_hash_valid: bool,
}

/// Parse a TDREPORT; the input must be exactly 1024 bytes.
pub fn parse(bytes: &[u8]) -> Result<TdReport> {
    if bytes.len() != SIZE {
        return Err(Error::Size {
            what: "TDREPORT",
            expected: SIZE,
            found: bytes.len(),
        });
    }
    let mut r = Reader::new(bytes);
    let report_type = r.u8("report type")?;
    let report_subtype = r.u8("report subtype")?;
    // REPORTTYPE.TYPE 0x81 is TDX (0x00 would be SGX); SUBTYPE is 0 for a TDREPORT.
    if (report_type, report_subtype) != (TDX_REPORT_TYPE, 0) {
        return Err(Error::WrongFormat {
            expected: "TDREPORT",
            reason: format!(
                "report type {report_type:#04x}, subtype {report_subtype:#04x}: a TDREPORT has type 0x81, subtype 0"
            ),
        });
    }
    let report_version = r.u8("report version")?;
    r.bytes(13, "reserved")?;
    let cpusvn = r.array("cpusvn")?;
    let tee_tcb_info_hash: [u8; 48] = r.array("tee_tcb_info_hash")?;
    let tee_info_hash: [u8; 48] = r.array("tee_info_hash")?;
    let report_data = r.array("report_data")?;
    r.bytes(32, "reserved")?;
    let mac = r.array("mac")?;
    let mut t = Reader::at(bytes, TEE_TCB_INFO.start);
    t.bytes(8, "tee_tcb_info valid")?;
    let tee_tcb_svn = t.array("tee_tcb_svn")?;
    let mrseam = t.array("mrseam")?;
    let mrsignerseam = t.array("mrsignerseam")?;
    let mut d = Reader::at(bytes, TDINFO.start);
    let td = TdInfo::read(&mut d)?;
    let servtd_hash = d.array("servtd_hash")?;
    let hash = |range: std::ops::Range<usize>| -> [u8; 48] {
        Sha384::digest(bytes.get(range).unwrap_or(&[])).into()
    };
    Ok(TdReport {
        report_type,
        report_subtype,
        report_version,
        cpusvn,
        tee_tcb_info_hash,
        tee_info_hash,
        report_data,
        mac,
        tee_tcb_svn,
        mrseam,
        mrsignerseam,
        td,
        servtd_hash,
        tee_tcb_info_hash_valid: hash(TEE_TCB_INFO) == tee_tcb_info_hash,
        tee_info_hash_valid: hash(TDINFO) == tee_info_hash,
    })
}

impl TdReport {
    /// The fixture/CLI shape (`tdreport` in expected.json).
    pub fn to_json(&self) -> Value {
        let mut v = fields(json!({
            "report_type": format!("{:#x}", self.report_type),
            "report_subtype": self.report_subtype,
            "report_version": self.report_version,
            "cpusvn": hex::encode(self.cpusvn),
            "tee_tcb_info_hash": hex::encode(self.tee_tcb_info_hash),
            "tee_info_hash": hex::encode(self.tee_info_hash),
            "report_data": hex::encode(self.report_data),
            "mac": hex::encode(self.mac),
            "tee_tcb_svn": hex::encode(self.tee_tcb_svn),
            "mrseam": hex::encode(self.mrseam),
            "mrsignerseam": hex::encode(self.mrsignerseam),
        }));
        self.td.write_json(&mut v);
        v.extend(fields(json!({
            "servtd_hash": hex::encode(self.servtd_hash),
            "tee_tcb_info_hash_valid": self.tee_tcb_info_hash_valid,
            "tee_info_hash_valid": self.tee_info_hash_valid,
        })));
        Value::Object(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_1024_bytes_are_not_a_tdreport() {
        let e = parse(&[0u8; SIZE]).unwrap_err().to_string();
        assert_eq!(
            e,
            "not a TDREPORT: report type 0x00, subtype 0x00: a TDREPORT has type 0x81, subtype 0"
        );
        let mut typed = [0u8; SIZE];
        typed[0] = 0x81;
        assert!(parse(&typed).is_ok());
    }
}
