//! `mrlab images build [--update-lock]`: fetch the pinned packages (`images/fetch.sh`), then
//! build the agent initramfs for every pinned kernel and a UKI plus ESP disk for every pinned
//! kernel × systemd-boot pair. Idempotent: what is already in the cache is reused.

use anyhow::Context as _;
use std::process::{Command, ExitCode};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Fetch pinned packages and build every default image.
    Build {
        /// Re-pin every package to the newest version its suite serves before fetching.
        #[arg(long)]
        update_lock: bool,
    },
}

/// The kernel command line of the default UKIs.
const DEFAULT_UKI_CMDLINE: &str = "console=ttyS0";

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Action::Build { update_lock } = args.action;
    let repo = images::workspace_root();
    let fetch = repo.join("images/fetch.sh");
    eprintln!("images: fetching pinned packages ({})", fetch.display());
    let mut cmd = Command::new(&fetch);
    if update_lock {
        cmd.arg("--update-lock");
    }
    let status = cmd
        .status()
        .with_context(|| format!("running {}", fetch.display()))?;
    anyhow::ensure!(status.success(), "{} failed: {status}", fetch.display());

    let cache = images::Cache::open(&repo)?;
    let ids = |prefix: &str| -> Vec<String> {
        cache
            .packages()
            .iter()
            .filter(|p| p.id.starts_with(prefix))
            .map(|p| p.id.clone())
            .collect()
    };
    let kernels = ids("kernel-");
    let systemds = ids("systemd-boot-");
    let total = kernels.len() * (1 + systemds.len());
    let mut step = 0;
    for kernel in &kernels {
        step += 1;
        eprintln!("images: [{step}/{total}] agent initramfs for {kernel}");
        let initrd = cache.agent_initramfs(kernel)?;
        outln!("{}", initrd.display());
        for systemd in &systemds {
            step += 1;
            eprintln!("images: [{step}/{total}] UKI and ESP disk for {kernel} with {systemd}");
            let uki = cache.uki(&images::UkiSpec {
                kernel_id: kernel.clone(),
                stub_id: systemd.clone(),
                cmdline: DEFAULT_UKI_CMDLINE.into(),
                initrd: initrd.clone(),
            })?;
            let disk = cache.esp_disk(&images::DiskSpec {
                bootloader_id: systemd.clone(),
                ukis: vec![("mrlab".into(), uki.clone())],
                loader_conf: Some("timeout 0\n".into()),
            })?;
            outln!("{}", uki.display());
            outln!("{}", disk.display());
        }
    }
    eprintln!("images: done, cache at {}", cache.root().display());
    Ok(ExitCode::SUCCESS)
}
