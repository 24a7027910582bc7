//! Subcommands. One module each; `dispatch` is the only place that knows them all.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// `println!` that returns an error instead of panicking when stdout is closed
/// (`mrlab diagnose … | head`); `main` treats a broken pipe as the reader having had enough.
macro_rules! outln {
    () => {
        $crate::cmd::write_stdout("\n")?
    };
    ($($arg:tt)*) => {
        $crate::cmd::write_stdout(&format!("{}\n", format_args!($($arg)*)))?
    };
}

/// Writes to stdout; a closed pipe comes back as an error `main` ends the command on, quietly.
pub(crate) fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| anyhow::Error::new(e).context("writing to standard output"))
}

mod diagnose;
mod diff;
mod firmware;
mod fwcfg;
mod images;
mod pe;
mod predict;
mod quote;
mod replay;
mod run;

/// Boot confidential-VM launch configurations under QEMU and check their measurements against a
/// prediction, event by event.
#[derive(Parser)]
#[command(name = "mrlab", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Show TDVF metadata, MRTD (single- and two-pass), CFV and TD HOB digests of a firmware image.
    Firmware(firmware::Args),
    /// Show the Authenticode digests (SHA-256, SHA-384) of a PE/COFF image.
    Pe(pe::Args),
    /// Parse an event log (TPM TCG2/TCG1.2 or TDX CCEL) and replay it to register values.
    Replay(replay::Args),
    /// Predict the event log and registers of a scenario, without booting it.
    Predict(predict::Args),
    /// Dump every fw_cfg file of a scenario's VM, as its QEMU serves them to the firmware.
    Fwcfg(fwcfg::Args),
    /// Compare recorded evidence (a results folder, or a TD's event log + quote/TDREPORT) with a scenario's prediction.
    Diagnose(diagnose::Args),
    /// The predicted events that appear, disappear or change between two scenarios, or one
    /// scenario under another firmware, QEMU or systemd-boot package.
    Diff(diff::Args),
    /// Boot scenarios, compare their measurements with the prediction, and report.
    Run(run::Args),
    /// Fetch pinned packages and build guest images (agent initramfs, UKI, ESP disk).
    Images(images::Args),
    /// Decode a TDX quote (v4/v5) or a 1024-byte TDREPORT.
    Quote(quote::Args),
    /// Internal: the guardian `mrlab run` starts; removes the run's temp dirs and process groups
    /// left when mrlab dies without cleaning up (SIGKILL).
    #[command(hide = true)]
    Guard,
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Firmware(a) => firmware::run(a),
        Command::Pe(a) => pe::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Quote(a) => quote::run(a),
        Command::Images(a) => images::run(a),
        Command::Run(a) => run::run(a),
        Command::Diagnose(a) => diagnose::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Fwcfg(a) => fwcfg::run(a),
        Command::Guard => {
            qemu::process::guard(std::io::stdin().lock());
            Ok(ExitCode::SUCCESS)
        }
    }
}
