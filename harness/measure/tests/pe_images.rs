//! Authenticode of Debian's signed kernels: the hash `measure` computes must equal the digest
//! Debian's own signature (SpcIndirectDataContent) signs, read from the file at test time.

use measure::pe::{self, DigestAlgorithm, PeImage};

const DEBS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/debs");

fn read(rel: &str) -> Vec<u8> {
    let path = format!("{DEBS}/{rel}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}; run images/fetch.sh"))
}

fn assert_signed_digest_matches(rel: &str) {
    let file = read(rel);
    let image = PeImage::parse(&file).unwrap();
    assert_eq!(image.machine, 0x8664, "{rel}: x86-64");
    assert!(image.certificate_table.is_some(), "{rel}: signed");
    let signed = image.signed_digests().unwrap();
    assert_eq!(signed.len(), 1, "{rel}: one signature");
    assert_eq!(signed[0].algorithm, DigestAlgorithm::Sha256);
    let ours = pe::authenticode(&file).unwrap();
    assert_eq!(
        hex::encode(ours.sha256.unwrap()),
        hex::encode(&signed[0].digest),
        "{rel}: Authenticode SHA-256 vs the signed digest"
    );
    assert_eq!(signed[0].matches(&ours), Some(true));
}

#[test]
fn debian_6_1_kernel_hash_equals_its_signature() {
    assert_signed_digest_matches("kernel-6.1/boot/vmlinuz-6.1.0-50-amd64");
}

#[test]
fn debian_6_12_kernel_hash_equals_its_signature() {
    assert_signed_digest_matches("kernel-6.12/boot/vmlinuz-6.12.95+deb12-amd64");
}

#[test]
fn any_change_to_a_hashed_byte_breaks_the_match() {
    let mut file = read("kernel-6.1/boot/vmlinuz-6.1.0-50-amd64");
    // 0x1f1 is the setup header's setup_sects: inside the hashed headers.
    file[0x1f1] ^= 1;
    let image = PeImage::parse(&file).unwrap();
    let signed = image.signed_digests().unwrap();
    assert_eq!(
        signed[0].matches(&image.authenticode().unwrap()),
        Some(false)
    );
}

#[test]
fn truncated_kernel_is_an_error() {
    let file = read("kernel-6.1/boot/vmlinuz-6.1.0-50-amd64");
    for len in [0, 0x3c, 0x100, 0x200, file.len() / 2, file.len() - 1] {
        let result = PeImage::parse(&file[..len])
            .and_then(|p| p.authenticode().and_then(|_| p.signed_digests()));
        assert!(result.is_err(), "length {len}");
    }
}
