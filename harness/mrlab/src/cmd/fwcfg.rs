//! `mrlab fwcfg`: every fw_cfg file of a scenario's VM, as its QEMU serves it to OVMF.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = "Example:
  mrlab fwcfg scenarios/kernel-smoke.toml --out /tmp/fwcfg
  (then e.g. etc/acpi/tables, etc/table-loader, bootorder; (setup) and (kernel) are the -kernel items,
  (option-rom)/ the PCI option ROMs QEMU attaches, manifest.json what produced them)
  mrlab predict scenarios/kernel-smoke.toml --platform vtpm --fwcfg /tmp/fwcfg   (no QEMU needed)")]
pub struct Args {
    /// Scenario file.
    pub scenario: PathBuf,
    /// Folder to write the files into (fw_cfg names become paths).
    #[arg(long)]
    pub out: PathBuf,
    /// Dump the VM as a TD would see it: without the vTPM device.
    #[arg(long)]
    pub no_tpm: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let scenario = mrlab::scenario::Scenario::load(&args.scenario)?;
    let cache = images::Cache::open(&images::workspace_root())?;
    let resolved = mrlab::resolve::resolve(&scenario, &cache, !args.no_tpm)?;
    let rt = tokio::runtime::Runtime::new()?;
    let files = rt.block_on(qemu::fwcfg::dump_fw_cfg(
        &resolved.vm,
        &resolved.qemu_binary,
        mrlab::prepare::firmware_pci(&resolved),
    ))?;
    let written = mrlab::snapshot::write(&args.out, &resolved, &files)
        .with_context(|| args.out.display().to_string())?;
    for (name, size) in written {
        outln!("{size:>8}  {name}");
    }
    outln!(
        "{:>8}  {} (QEMU, OVMF, the VM and every file's sha256; `mrlab predict --fwcfg` reads it)",
        "",
        mrlab::snapshot::MANIFEST
    );
    Ok(ExitCode::SUCCESS)
}
