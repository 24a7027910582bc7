//! One error type for every parser: what is wrong, and where (byte offset, field).

/// A parse failure. Offsets are byte offsets into the input given to the parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("empty input: no bytes to parse")]
    Empty,
    #[error("truncated at offset {offset}: {field} needs {needed} bytes, {available} left")]
    Truncated {
        field: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("invalid {field} at offset {offset}: {reason}")]
    Invalid {
        field: &'static str,
        offset: usize,
        reason: String,
    },
    #[error("record {record} at offset {offset}: digest algorithm {alg:#06x} is not declared in the Spec ID header")]
    UndeclaredAlgorithm {
        record: usize,
        offset: usize,
        alg: u16,
    },
    #[error("record {record} at offset {offset}: index {index} is out of range (max {max} for {format})")]
    IndexOutOfRange {
        record: usize,
        offset: usize,
        index: u32,
        max: u32,
        format: &'static str,
    },
    #[error("not a {expected}: {reason}")]
    WrongFormat {
        expected: &'static str,
        reason: String,
    },
    #[error("size mismatch: {what} is {found} bytes, expected {expected}")]
    Size {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("JSON: {0}")]
    Json(String),
    #[error("event {index}: stated digest {stated} does not match {rule} ({computed})")]
    DigestMismatch {
        index: usize,
        rule: &'static str,
        stated: String,
        computed: String,
    },
}

/// A short read of the shared reader ([`measure::reader`]) is this error's `Truncated`.
impl From<measure::reader::Truncated> for Error {
    fn from(e: measure::reader::Truncated) -> Error {
        Error::Truncated {
            field: e.field,
            offset: e.offset,
            needed: e.needed,
            available: e.available,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
