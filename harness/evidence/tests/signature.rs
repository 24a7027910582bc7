//! Quote signature verification fails for the right step when one byte changes. The unmodified
//! quotes verify fully (their expected.json says so; tests/fixtures.rs asserts it).

use evidence::quote::{self, SignatureCheck, QE_REPORT_SIZE};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures");

/// A v4 and a v5 quote from upstream test data.
const QUOTES: &[&str] = &[
    "tdx-quote/dcap-qvl-tdx-quote/tdx_quote",
    "tdx-quote/go-tdx-guest-v5-sample/quote_v5_sample.dat",
];

const ALL_VALID: SignatureCheck = SignatureCheck {
    quote_signature_valid: true,
    qe_report_binds_attestation_key: true,
    qe_report_signature_valid: true,
    pck_chain_valid: true,
    pck_root_is_intel_sgx_root_ca: true,
};

fn load(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

/// Offset of the QE report: after header+body, the signature data length u32, quote signature
/// [64], attestation key [64], certification data type u16 and size u32.
fn qe_report_offset(bytes: &[u8]) -> usize {
    quote::parse(bytes).unwrap().signed_length + 4 + 64 + 64 + 2 + 4
}

fn flipped(bytes: &[u8], offset: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[offset] ^= 0x01;
    out
}

#[test]
fn unmodified_quotes_verify() {
    for name in QUOTES {
        assert_eq!(quote::verify(&load(name)).unwrap(), ALL_VALID, "{name}");
    }
}

#[test]
fn body_byte_flip_breaks_only_the_quote_signature() {
    for name in QUOTES {
        let bytes = load(name);
        // MRTD starts 136 bytes into the v4 body; any signed byte will do.
        let check = quote::verify(&flipped(&bytes, quote::HEADER_SIZE + 140)).unwrap();
        assert_eq!(
            check,
            SignatureCheck {
                quote_signature_valid: false,
                ..ALL_VALID
            },
            "{name}"
        );
    }
}

#[test]
fn qe_report_byte_flip_breaks_only_the_qe_report_signature() {
    for name in QUOTES {
        let bytes = load(name);
        // Byte 10 is in the QE's CPUSVN, outside REPORTDATA, so the key binding still holds.
        let check = quote::verify(&flipped(&bytes, qe_report_offset(&bytes) + 10)).unwrap();
        assert_eq!(
            check,
            SignatureCheck {
                qe_report_signature_valid: false,
                ..ALL_VALID
            },
            "{name}"
        );
    }
}

#[test]
fn qe_report_data_flip_breaks_the_binding_and_the_qe_report_signature() {
    for name in QUOTES {
        let bytes = load(name);
        let check = quote::verify(&flipped(&bytes, qe_report_offset(&bytes) + 320)).unwrap();
        assert_eq!(
            check,
            SignatureCheck {
                qe_report_binds_attestation_key: false,
                qe_report_signature_valid: false,
                ..ALL_VALID
            },
            "{name}"
        );
    }
}

#[test]
fn attestation_key_flip_breaks_the_quote_signature_and_the_binding() {
    for name in QUOTES {
        let bytes = load(name);
        let key_at = quote::parse(&bytes).unwrap().signed_length + 4 + 64;
        let check = quote::verify(&flipped(&bytes, key_at + 63)).unwrap();
        assert!(!check.quote_signature_valid, "{name}");
        assert!(!check.qe_report_binds_attestation_key, "{name}");
        assert!(
            check.qe_report_signature_valid && check.pck_chain_valid,
            "{name}"
        );
    }
}

/// Changes one base64 character in the second-to-last line of a certificate's PEM (`index` 0 =
/// leaf, 2 = root), which holds its signature value: it still parses, its key is unchanged.
fn tamper_certificate_signature(bytes: &[u8], index: usize) -> Vec<u8> {
    let end = b"-----END CERTIFICATE-----";
    let end_at = (0..bytes.len())
        .filter(|&i| bytes[i..].starts_with(end))
        .nth(index)
        .unwrap();
    let line_starts: Vec<usize> = (1..end_at).filter(|&i| bytes[i - 1] == b'\n').collect();
    let target = line_starts[line_starts.len() - 2] + 10;
    let mut out = bytes.to_vec();
    out[target] = if out[target] == b'A' { b'B' } else { b'A' };
    out
}

#[test]
fn leaf_certificate_signature_change_breaks_only_the_chain() {
    for name in QUOTES {
        let check = quote::verify(&tamper_certificate_signature(&load(name), 0)).unwrap();
        assert_eq!(
            check,
            SignatureCheck {
                pck_chain_valid: false,
                ..ALL_VALID
            },
            "{name}"
        );
    }
}

#[test]
fn root_certificate_change_breaks_the_chain_and_the_intel_root_pin() {
    for name in QUOTES {
        let check = quote::verify(&tamper_certificate_signature(&load(name), 2)).unwrap();
        assert_eq!(
            check,
            SignatureCheck {
                pck_chain_valid: false,
                pck_root_is_intel_sgx_root_ca: false,
                ..ALL_VALID
            },
            "{name}"
        );
    }
}

#[test]
fn malformed_signature_data_is_an_error_not_a_panic() {
    for name in QUOTES {
        let bytes = load(name);
        let qe_report = qe_report_offset(&bytes);
        // Certification data type 6 → 7.
        let mut wrong_type = bytes.clone();
        wrong_type[qe_report - 6] = 7;
        let err = quote::verify(&wrong_type).unwrap_err().to_string();
        assert!(
            err.contains("certification data type 7, expected 6"),
            "{err}"
        );
        // Cut inside the QE report: the signature data length no longer fits.
        assert!(quote::verify(&bytes[..qe_report + QE_REPORT_SIZE / 2]).is_err());
        // Every truncation point and flipped signature-data byte is an error or a result,
        // never a panic.
        for cut in (0..bytes.len()).step_by(97) {
            let _ = quote::verify(&bytes[..cut]);
        }
        let signed = quote::parse(&bytes).unwrap().signed_length;
        for at in (signed..bytes.len()).step_by(7) {
            let _ = quote::verify(&flipped(&bytes, at));
        }
    }
}
