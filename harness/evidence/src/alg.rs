//! TPM 2.0 hash algorithm identifiers (TCG Algorithm Registry) and PCR extension per bank.

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::fmt;

/// A `TPM_ALG_ID` as it appears in a crypto-agile log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashAlg(pub u16);

impl HashAlg {
    pub const SHA1: HashAlg = HashAlg(0x0004);
    pub const SHA256: HashAlg = HashAlg(0x000b);
    pub const SHA384: HashAlg = HashAlg(0x000c);
    pub const SHA512: HashAlg = HashAlg(0x000d);
    pub const SM3_256: HashAlg = HashAlg(0x0012);

    /// Lower-case name as used in fixtures and JSON (`sha256`), or `alg_0x....`.
    pub fn name(self) -> String {
        match self {
            HashAlg::SHA1 => "sha1".into(),
            HashAlg::SHA256 => "sha256".into(),
            HashAlg::SHA384 => "sha384".into(),
            HashAlg::SHA512 => "sha512".into(),
            HashAlg::SM3_256 => "sm3_256".into(),
            HashAlg(other) => format!("alg_{other:#06x}"),
        }
    }

    /// Digest size of the algorithms this crate can compute.
    pub fn digest_size(self) -> Option<usize> {
        match self {
            HashAlg::SHA1 => Some(20),
            HashAlg::SHA256 | HashAlg::SM3_256 => Some(32),
            HashAlg::SHA384 => Some(48),
            HashAlg::SHA512 => Some(64),
            _ => None,
        }
    }

    /// Whether [`HashAlg::extend`] can compute this bank.
    pub fn can_replay(self) -> bool {
        matches!(
            self,
            HashAlg::SHA1 | HashAlg::SHA256 | HashAlg::SHA384 | HashAlg::SHA512
        )
    }

    /// `H(old ‖ digest)`; `None` for an algorithm this crate does not implement (SM3, unknown).
    pub fn extend(self, old: &[u8], digest: &[u8]) -> Option<Vec<u8>> {
        fn ext<D: Digest>(old: &[u8], digest: &[u8]) -> Vec<u8> {
            let mut h = D::new();
            h.update(old);
            h.update(digest);
            h.finalize().to_vec()
        }
        match self {
            HashAlg::SHA1 => Some(ext::<Sha1>(old, digest)),
            HashAlg::SHA256 => Some(ext::<Sha256>(old, digest)),
            HashAlg::SHA384 => Some(ext::<Sha384>(old, digest)),
            HashAlg::SHA512 => Some(ext::<Sha512>(old, digest)),
            _ => None,
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
