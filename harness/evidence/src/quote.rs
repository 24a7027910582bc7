//! Intel TDX DCAP quotes, versions 4 and 5 (Intel TDX DCAP Quote Generation Library and Quote
//! Verification Library API, "Quote Format"):
//!
//! - header, 48 bytes: version u16, attestation key type u16, TEE type u32 (0x81 = TDX),
//!   QE SVN u16, PCE SVN u16, QE vendor id [16], user data [20];
//! - v4: the TD report body (TD 1.0, 584 bytes) follows the header;
//!   v5: body type u16 (2 = TD 1.0, 3 = TD 1.5) and body size u32 come first;
//! - then the signature data length u32 and the signature data (ECDSA-P256 signature [64],
//!   attestation key [64], certification data type u16, size u32, data).

use crate::error::{Error, Result};
use crate::reader::Reader;
use serde_json::{json, Value};

pub const HEADER_SIZE: usize = 48;
pub const TEE_TYPE_TDX: u32 = 0x81;
/// TD 1.0 report body.
pub const BODY_TD10_SIZE: usize = 584;
/// TD 1.5 report body: TD 1.0 + TEE_TCB_SVN2 [16] + MRSERVICETD [48].
pub const BODY_TD15_SIZE: usize = 648;
pub const BODY_TYPE_TD10: u16 = 2;
pub const BODY_TYPE_TD15: u16 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub att_key_type: u16,
    pub tee_type: u32,
    pub qe_svn: u16,
    pub pce_svn: u16,
    pub qe_vendor_id: [u8; 16],
    pub user_data: [u8; 20],
}

/// The TD report body a quote signs (TD 1.0 fields, plus the TD 1.5 ones for body type 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdBody {
    pub tee_tcb_svn: [u8; 16],
    pub mrseam: [u8; 48],
    pub mrsignerseam: [u8; 48],
    pub seam_attributes: [u8; 8],
    pub td_attributes: [u8; 8],
    pub xfam: [u8; 8],
    pub mrtd: [u8; 48],
    pub mrconfigid: [u8; 48],
    pub mrowner: [u8; 48],
    pub mrownerconfig: [u8; 48],
    pub rtmrs: [[u8; 48]; 4],
    pub report_data: [u8; 64],
    pub tee_tcb_svn2: Option<[u8; 16]>,
    pub mrservicetd: Option<[u8; 48]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    pub header: Header,
    /// v5 only.
    pub body_type: Option<u16>,
    pub body_size: usize,
    pub body: TdBody,
    /// Header and body bytes the signature covers.
    pub signed_length: usize,
    pub signature_data_length: u32,
    /// Bytes the quote uses (signed part + length field + signature data).
    pub quote_length: usize,
    pub file_length: usize,
    pub trailing_all_zero: bool,
    /// Certification data type (6 = QE report certification data), when the signature data is
    /// long enough to hold it.
    pub certification_data_type: Option<u16>,
}

fn read_body(r: &mut Reader, td15: bool) -> Result<TdBody> {
    Ok(TdBody {
        tee_tcb_svn: r.array("tee_tcb_svn")?,
        mrseam: r.array("mrseam")?,
        mrsignerseam: r.array("mrsignerseam")?,
        seam_attributes: r.array("seam_attributes")?,
        td_attributes: r.array("td_attributes")?,
        xfam: r.array("xfam")?,
        mrtd: r.array("mrtd")?,
        mrconfigid: r.array("mrconfigid")?,
        mrowner: r.array("mrowner")?,
        mrownerconfig: r.array("mrownerconfig")?,
        rtmrs: [
            r.array("rtmr0")?,
            r.array("rtmr1")?,
            r.array("rtmr2")?,
            r.array("rtmr3")?,
        ],
        report_data: r.array("report_data")?,
        tee_tcb_svn2: if td15 {
            Some(r.array("tee_tcb_svn2")?)
        } else {
            None
        },
        mrservicetd: if td15 {
            Some(r.array("mrservicetd")?)
        } else {
            None
        },
    })
}

/// Parse a TDX quote v4 or v5. Bytes after the quote (a fixed-size buffer) are allowed and
/// reported in `quote_length` / `trailing_all_zero`.
pub fn parse(bytes: &[u8]) -> Result<Quote> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    let mut r = Reader::new(bytes);
    let header = Header {
        version: r.u16("version")?,
        att_key_type: r.u16("att_key_type")?,
        tee_type: r.u32("tee_type")?,
        qe_svn: r.u16("qe_svn")?,
        pce_svn: r.u16("pce_svn")?,
        qe_vendor_id: r.array("qe_vendor_id")?,
        user_data: r.array("user_data")?,
    };
    if header.tee_type != TEE_TYPE_TDX {
        return Err(Error::Invalid {
            field: "tee_type",
            offset: 4,
            reason: format!("{:#x} is not TDX (0x81)", header.tee_type),
        });
    }
    let (body_type, body_size) = match header.version {
        4 => (None, BODY_TD10_SIZE),
        5 => {
            let body_type = r.u16("body_type")?;
            let size_at = r.pos();
            let body_size = r.u32("body_size")? as usize;
            let expected = match body_type {
                BODY_TYPE_TD10 => BODY_TD10_SIZE,
                BODY_TYPE_TD15 => BODY_TD15_SIZE,
                other => {
                    return Err(Error::Invalid {
                        field: "body_type",
                        offset: HEADER_SIZE,
                        reason: format!("{other} is not a TD report body (2 = TD 1.0, 3 = TD 1.5)"),
                    })
                }
            };
            if body_size != expected {
                return Err(Error::Invalid {
                    field: "body_size",
                    offset: size_at,
                    reason: format!("{body_size} for body type {body_type}, expected {expected}"),
                });
            }
            (Some(body_type), body_size)
        }
        other => {
            return Err(Error::Invalid {
                field: "version",
                offset: 0,
                reason: format!("quote version {other}, expected 4 or 5"),
            })
        }
    };
    let body = read_body(&mut r, body_size == BODY_TD15_SIZE)?;
    let signed_length = r.pos();
    let signature_data_length = r.u32("signature_data_length")?;
    let signature = r.bytes(signature_data_length as usize, "signature data")?;
    let quote_length = r.pos();
    // ECDSA signature [64] and attestation key [64] come before the certification data.
    let certification_data_type = Reader::at(signature, 128)
        .u16("certification data type")
        .ok();
    Ok(Quote {
        header,
        body_type,
        body_size,
        body,
        signed_length,
        signature_data_length,
        quote_length,
        file_length: bytes.len(),
        trailing_all_zero: r.rest().iter().all(|b| *b == 0),
        certification_data_type,
    })
}

impl Quote {
    /// Flat fields in the fixture/CLI shape (`quote` in expected.json), byte fields as
    /// lower-case hex in file order.
    pub fn to_json(&self) -> Value {
        let h = &self.header;
        let b = &self.body;
        let mut v = json!({
            "version": h.version,
            "att_key_type": h.att_key_type,
            "tee_type": format!("{:#x}", h.tee_type),
            "qe_svn": h.qe_svn,
            "pce_svn": h.pce_svn,
            "qe_vendor_id": hex::encode(h.qe_vendor_id),
            "user_data": hex::encode(h.user_data),
            "body_type": self.body_type,
            "body_size": self.body_size,
            "tee_tcb_svn": hex::encode(b.tee_tcb_svn),
            "mrseam": hex::encode(b.mrseam),
            "mrsignerseam": hex::encode(b.mrsignerseam),
            "seam_attributes": hex::encode(b.seam_attributes),
            "td_attributes": hex::encode(b.td_attributes),
            "xfam": hex::encode(b.xfam),
            "mrtd": hex::encode(b.mrtd),
            "mrconfigid": hex::encode(b.mrconfigid),
            "mrowner": hex::encode(b.mrowner),
            "mrownerconfig": hex::encode(b.mrownerconfig),
            "rtmr0": hex::encode(b.rtmrs[0]),
            "rtmr1": hex::encode(b.rtmrs[1]),
            "rtmr2": hex::encode(b.rtmrs[2]),
            "rtmr3": hex::encode(b.rtmrs[3]),
            "report_data": hex::encode(b.report_data),
            "signed_length": self.signed_length,
            "signature_data_length": self.signature_data_length,
            "quote_length": self.quote_length,
            "file_length": self.file_length,
            "trailing_bytes": {
                "length": self.file_length - self.quote_length,
                "all_zero": self.trailing_all_zero,
            },
            "certification_data_type": self.certification_data_type,
        });
        if let (Some(svn2), Some(servicetd)) = (b.tee_tcb_svn2, b.mrservicetd) {
            v["tee_tcb_svn2"] = json!(hex::encode(svn2));
            v["mrservicetd"] = json!(hex::encode(servicetd));
        }
        v
    }
}
