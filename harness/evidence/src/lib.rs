//! Pure evidence parsers: bytes in, values out. No processes, files or clocks.
//!
//! - [`log`]: one entry point for event logs (TPM TCG2 crypto-agile, TCG 1.2 SHA-1, TDX CCEL,
//!   dstack JSON) and their replay to PCR banks and RTMRs.
//! - [`tcg`]: the binary TCG record formats, reading and writing.
//! - [`ccel`]: the ACPI CCEL table.
//! - [`dstack`]: dstack's JSON document (quote + JSON event log + vm_config).
//! - [`quote`], [`tdreport`]: TDX quotes v4/v5 and the 1024-byte TDREPORT; [`tdinfo`]: the
//!   TD measurements both carry.
//! - [`decode`]: human-readable descriptions of well-known event data.

pub mod alg;
pub mod ccel;
pub mod decode;
pub mod dstack;
pub mod error;
pub mod log;
pub mod quote;
pub mod tcg;
pub mod tdinfo;
pub mod tdreport;

pub use alg::HashAlg;
pub use error::Error;
pub use log::{parse, EventLog, Format, LogEvent, Padding, PcrBank};
