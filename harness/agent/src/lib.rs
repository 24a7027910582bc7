//! The in-guest evidence collector's shared parts. The host uses [`record`] to decode what the
//! agent (the `mrlab-agent` binary, PID 1 of the harness initramfs) wrote to the serial console.

pub mod record;
