//! Intel TDX DCAP quotes, versions 4 and 5 (Intel TDX DCAP Quote Generation Library and Quote
//! Verification Library API, "Quote Format"):
//!
//! - header, 48 bytes: version u16, attestation key type u16, TEE type u32 (0x81 = TDX),
//!   QE SVN u16, PCE SVN u16, QE vendor id [16], user data [20];
//! - v4: the TD report body (TD 1.0, 584 bytes) follows the header;
//!   v5: body type u16 (2 = TD 1.0, 3 = TD 1.5) and body size u32 come first;
//! - then the signature data length u32 and the signature data (ECDSA-P256 signature [64],
//!   attestation key [64], certification data type u16, size u32, data).
//!
//! [`verify`] checks the signature data of a quote with certification data type 6 (QE report
//! certification data): QE report [384], its ECDSA-P256 signature [64], QE auth data size u16 and
//! data, then nested certification data type 5 (PCK certificate chain, PEM, leaf first).

use crate::error::{Error, Result};
use crate::tdinfo::{fields, TdInfo};
use measure::reader::Reader;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::Encode;
use x509_cert::Certificate;

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
    pub td: TdInfo,
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
        td: TdInfo::read(r)?,
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
        let mut v = fields(json!({
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
        }));
        b.td.write_json(&mut v);
        v.extend(fields(json!({
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
        })));
        if let (Some(svn2), Some(servicetd)) = (b.tee_tcb_svn2, b.mrservicetd) {
            v.insert("tee_tcb_svn2".into(), hex::encode(svn2).into());
            v.insert("mrservicetd".into(), hex::encode(servicetd).into());
        }
        Value::Object(v)
    }
}

/// Certification data type 6: QE report certification data.
pub const CERT_DATA_QE_REPORT: u16 = 6;
/// Certification data type 5: PCK certificate chain (PEM, leaf first, root last).
pub const CERT_DATA_PCK_CHAIN: u16 = 5;
/// An SGX report (the QE's), as signed by the PCK key.
pub const QE_REPORT_SIZE: usize = 384;
/// REPORTDATA [64] sits at the end of the SGX report body.
const QE_REPORT_DATA_OFFSET: usize = 320;
/// The only certificate signature algorithm Intel uses for the PCK chain.
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// SHA-256 of the DER of Intel's published SGX Root CA certificate (CN "Intel SGX Root CA",
/// serial 22650cd65a9d3489f383b49552bf501b392706ac, valid to 2049), as verifiers pin it. A name
/// check alone would accept any self-signed certificate that calls itself Intel.
const INTEL_SGX_ROOT_CA_DER_SHA256: [u8; 32] = [
    0x44, 0xa0, 0x19, 0x6b, 0x2b, 0x99, 0xf8, 0x89, 0xb8, 0xe1, 0x49, 0xe9, 0x5b, 0x80, 0x7a, 0x35,
    0x0e, 0x74, 0x24, 0x96, 0x43, 0x99, 0xe8, 0x85, 0xa7, 0xcb, 0xb8, 0xcc, 0xfa, 0xb6, 0x74, 0xd3,
];

/// Outcome of each step of quote signature verification (`signature` in expected.json).
/// Certificate validity periods and revocation (CRLs, TCB info) are not checked: this crate has
/// no clock and no collateral.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignatureCheck {
    /// The ECDSA-P256 signature over header + body verifies under the attestation key.
    pub quote_signature_valid: bool,
    /// QE report REPORTDATA[0..32] = SHA-256(attestation key || QE auth data).
    pub qe_report_binds_attestation_key: bool,
    /// The QE report signature verifies under the PCK leaf certificate's key.
    pub qe_report_signature_valid: bool,
    /// Every certificate is signed (ECDSA-SHA256) by the next one, whose subject is its
    /// issuer, and the last one is self-signed.
    pub pck_chain_valid: bool,
    /// The last certificate is Intel's SGX Root CA itself (self-signed, CN "Intel SGX Root CA"):
    /// its DER is byte-identical to the published one.
    pub pck_root_is_intel_sgx_root_ca: bool,
}

impl SignatureCheck {
    /// Every check passed.
    pub fn all_valid(&self) -> bool {
        self.quote_signature_valid
            && self.qe_report_binds_attestation_key
            && self.qe_report_signature_valid
            && self.pck_chain_valid
            && self.pck_root_is_intel_sgx_root_ca
    }

    /// The fixture/CLI shape (`quote.signature` in expected.json).
    pub fn to_json(&self) -> Value {
        json!({
            "quote_signature_valid": self.quote_signature_valid,
            "qe_report_binds_attestation_key": self.qe_report_binds_attestation_key,
            "qe_report_signature_valid": self.qe_report_signature_valid,
            "pck_chain_valid": self.pck_chain_valid,
            "pck_root_is_intel_sgx_root_ca": self.pck_root_is_intel_sgx_root_ca,
        })
    }
}

/// The pieces of a quote's signature data that verification needs.
struct SignatureData<'a> {
    signed: &'a [u8],
    quote_signature: &'a [u8],
    attestation_key: &'a [u8],
    qe_report: &'a [u8],
    qe_report_signature: &'a [u8],
    qe_auth_data: &'a [u8],
    pck_chain_pem: &'a [u8],
}

/// Reads certification data type and size at the reader and returns a reader bounded to that
/// data (offsets stay file offsets).
fn certification_data<'a>(
    quote: &'a [u8],
    r: &mut Reader<'a>,
    expected_type: u16,
    field: &'static str,
) -> Result<Reader<'a>> {
    let type_at = r.pos();
    let found = r.u16(field)?;
    if found != expected_type {
        return Err(Error::Invalid {
            field,
            offset: type_at,
            reason: format!("certification data type {found}, expected {expected_type}"),
        });
    }
    let size = r.u32(field)? as usize;
    let start = r.pos();
    r.bytes(size, field)?;
    Ok(Reader::at(quote.get(..r.pos()).unwrap_or_default(), start))
}

fn signature_data(bytes: &[u8]) -> Result<SignatureData<'_>> {
    let quote = parse(bytes)?;
    let signed = bytes.get(..quote.signed_length).unwrap_or_default();
    // parse() checked that the signature data fits; bound reads to it so trailing bytes of a
    // fixed-size buffer are never taken for certification data.
    let quote_bytes = bytes.get(..quote.quote_length).unwrap_or_default();
    let mut r = Reader::at(quote_bytes, quote.signed_length + 4);
    let quote_signature = r.bytes(64, "quote signature")?;
    let attestation_key = r.bytes(64, "attestation key")?;
    let mut qe = certification_data(
        quote_bytes,
        &mut r,
        CERT_DATA_QE_REPORT,
        "QE report certification data",
    )?;
    let qe_report = qe.bytes(QE_REPORT_SIZE, "QE report")?;
    let qe_report_signature = qe.bytes(64, "QE report signature")?;
    let auth_size = qe.u16("QE auth data size")?;
    let qe_auth_data = qe.bytes(auth_size.into(), "QE auth data")?;
    let mut pck = certification_data(
        quote_bytes,
        &mut qe,
        CERT_DATA_PCK_CHAIN,
        "PCK certificate chain",
    )?;
    Ok(SignatureData {
        signed,
        quote_signature,
        attestation_key,
        qe_report,
        qe_report_signature,
        qe_auth_data,
        pck_chain_pem: pck.bytes(pck.remaining(), "PCK certificate chain")?,
    })
}

/// `signature` verifies over `message` under `key`; false for malformed keys or signatures.
fn ecdsa_p256_valid(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    Signature::from_slice(signature).is_ok_and(|sig| key.verify(message, &sig).is_ok())
}

/// A raw P-256 public key (x || y, 64 bytes) as quotes carry it.
fn raw_p256_key(xy: &[u8]) -> Option<VerifyingKey> {
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(xy);
    VerifyingKey::from_sec1_bytes(&sec1).ok()
}

fn certificate_key(cert: &Certificate) -> Option<VerifyingKey> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    VerifyingKey::from_sec1_bytes(spki.subject_public_key.as_bytes()?).ok()
}

/// `cert` names `issuer` as its issuer and carries a valid ECDSA-SHA256 signature by its key.
fn signed_by(cert: &Certificate, issuer: &Certificate) -> bool {
    if cert.signature_algorithm.oid != ECDSA_WITH_SHA256
        || cert.tbs_certificate.issuer != issuer.tbs_certificate.subject
    {
        return false;
    }
    let (Some(key), Ok(tbs), Some(sig)) = (
        certificate_key(issuer),
        cert.tbs_certificate.to_der(),
        cert.signature.as_bytes(),
    ) else {
        return false;
    };
    Signature::from_der(sig).is_ok_and(|sig| key.verify(&tbs, &sig).is_ok())
}

/// Verify a TDX quote's signature data (see [`SignatureCheck`] for each step). Errors when the
/// quote or its signature data layout is malformed (truncated, or certification data types other
/// than 6 with nested 5); cryptographic failures, including unparseable keys and certificates,
/// are `false` results.
pub fn verify(bytes: &[u8]) -> Result<SignatureCheck> {
    let sig = signature_data(bytes)?;
    let quote_signature_valid = raw_p256_key(sig.attestation_key)
        .is_some_and(|key| ecdsa_p256_valid(&key, sig.signed, sig.quote_signature));
    let mut hasher = Sha256::new();
    hasher.update(sig.attestation_key);
    hasher.update(sig.qe_auth_data);
    let binding = hasher.finalize();
    let qe_report_binds_attestation_key = sig
        .qe_report
        .get(QE_REPORT_DATA_OFFSET..QE_REPORT_DATA_OFFSET + 32)
        .is_some_and(|report_data| report_data == binding.as_slice());
    // The chain is PEM text; a C string terminator may follow it.
    let pem = sig
        .pck_chain_pem
        .strip_suffix(&[0])
        .unwrap_or(sig.pck_chain_pem);
    // x509-cert 0.2's load_pem_chain strips trailing line ends and then computes `len - 1`,
    // which underflows (a panic where overflow checks are on) when nothing else is left.
    let text_len = pem
        .iter()
        .rposition(|b| !matches!(b, b'\r' | b'\n'))
        .map_or(0, |last| last + 1);
    let chain = if text_len == 0 {
        Vec::new()
    } else {
        Certificate::load_pem_chain(pem).unwrap_or_default()
    };
    let qe_report_signature_valid = chain
        .first()
        .and_then(certificate_key)
        .is_some_and(|key| ecdsa_p256_valid(&key, sig.qe_report, sig.qe_report_signature));
    let pck_chain_valid = chain.len() >= 2
        && chain.windows(2).all(|pair| match pair {
            [cert, issuer] => signed_by(cert, issuer),
            _ => false,
        })
        && chain.last().is_some_and(|root| signed_by(root, root));
    let pck_root_is_intel_sgx_root_ca = chain.last().is_some_and(|root| {
        root.to_der()
            .is_ok_and(|der| Sha256::digest(der).as_slice() == INTEL_SGX_ROOT_CA_DER_SHA256)
    });
    Ok(SignatureCheck {
        quote_signature_valid,
        qe_report_binds_attestation_key,
        qe_report_signature_valid,
        pck_chain_valid,
        pck_root_is_intel_sgx_root_ca,
    })
}
