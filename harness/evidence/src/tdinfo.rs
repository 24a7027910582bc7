//! The TD's own measurements, laid out alike in a TDREPORT's TDINFO (Intel TDX Module ABI,
//! `TDINFO_STRUCT`) and in a quote's TD report body (after SEAMATTRIBUTES): one reader and one
//! JSON shape for both.

use crate::error::Result;
use measure::reader::Reader;
use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdInfo {
    pub td_attributes: [u8; 8],
    pub xfam: [u8; 8],
    pub mrtd: [u8; 48],
    pub mrconfigid: [u8; 48],
    pub mrowner: [u8; 48],
    pub mrownerconfig: [u8; 48],
    pub rtmrs: [[u8; 48]; 4],
}

impl TdInfo {
    pub(crate) fn read(r: &mut Reader) -> Result<TdInfo> {
        Ok(TdInfo {
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
        })
    }

    /// MRTD and RTMR0–3, the registers a prediction is compared with.
    pub fn registers(&self) -> measure::Registers {
        measure::Registers::td(self.mrtd, self.rtmrs)
    }

    /// The fields as lower-case hex into `out` in their order, each RTMR as `rtmr0`…`rtmr3`.
    pub(crate) fn write_json(&self, out: &mut Map<String, Value>) {
        let hex_fields: [(&str, &[u8]); 10] = [
            ("td_attributes", &self.td_attributes),
            ("xfam", &self.xfam),
            ("mrtd", &self.mrtd),
            ("mrconfigid", &self.mrconfigid),
            ("mrowner", &self.mrowner),
            ("mrownerconfig", &self.mrownerconfig),
            ("rtmr0", &self.rtmrs[0]),
            ("rtmr1", &self.rtmrs[1]),
            ("rtmr2", &self.rtmrs[2]),
            ("rtmr3", &self.rtmrs[3]),
        ];
        for (name, bytes) in hex_fields {
            out.insert(name.into(), hex::encode(bytes).into());
        }
    }
}

/// The fields of a `json!({…})` object literal, to be put in order with [`TdInfo::write_json`].
pub(crate) fn fields(object: Value) -> Map<String, Value> {
    match object {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
