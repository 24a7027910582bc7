//! `mrlab`: predict, boot, compare and snapshot confidential-VM launch measurements.
//!
//! Each subcommand lives in its own module under `cmd/`; this file only parses arguments.

mod cmd;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mrlab: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
