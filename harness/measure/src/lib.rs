//! The prediction core of mrlab: bytes in, values out. No processes, no files, no clocks.
//!
//! `event` is the event model every other crate speaks: a predicted event and an event read
//! from a guest's log are the same type, so comparing them is plain equality on fields.

pub mod acpi;
pub mod cpio;
pub mod devpath;
pub mod diff;
pub mod event;
pub mod firmware;
pub mod fwcfg;
pub mod gpt;
pub mod grub;
pub mod optionrom;
pub mod pe;
pub mod predict;
pub mod quirks;
pub mod reader;
pub mod smbios;
pub mod systemd;
pub mod tdvf;
pub mod uefi;
pub mod varstore;
pub mod verification;

pub use event::{Digests, Event, EventType, Input, Platform, Platforms, Register, Registers};
