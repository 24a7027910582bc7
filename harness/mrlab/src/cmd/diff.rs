//! `mrlab diff`: the predicted events that appear, disappear or change between two scenarios,
//! or one scenario under another firmware, QEMU or systemd-boot package.

use anyhow::Context;
use measure::{Event, Platform};
use mrlab::scenario::Scenario;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  mrlab diff scenarios/kernel-ovmf2025.toml --firmware ovmf-2026.08       what OVMF 2026.08 changes
  mrlab diff scenarios/kernel-smoke.toml --qemu qemu-11.1 --platform vtpm
  mrlab diff scenarios/uki-ovmf2026.toml scenarios/uki-ovmf2026-systemd262.toml --json
B is the second scenario, or the first one with --firmware/--qemu/--stub applied. Both are
predicted like `mrlab predict` (each asks its own QEMU's fw_cfg oracle); nothing boots.")]
pub struct Args {
    /// Scenario A.
    pub a: PathBuf,
    /// Scenario B (default: A, changed by the options below).
    pub b: Option<PathBuf>,
    /// B's firmware: a managed OVMF id from images/packages.lock, or a path.
    #[arg(long)]
    pub firmware: Option<String>,
    /// B's QEMU: a managed id (`qemu-11.1`), `system`, or a path.
    #[arg(long)]
    pub qemu: Option<String>,
    /// B's systemd-boot package (UKI boots).
    #[arg(long)]
    pub stub: Option<String>,
    /// Compare the TD predictions (RTMRs) or the vTPM ones (PCR 0-15).
    #[arg(long, default_value = "tdx", value_parser = ["tdx", "vtpm"])]
    pub platform: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

struct Side {
    title: String,
    scenario: Scenario,
    versions: String,
    quirks: Vec<&'static str>,
    events: Vec<Event>,
}

fn side(
    rt: &tokio::runtime::Runtime,
    cache: &images::Cache,
    title: String,
    scenario: Scenario,
    platform: Platform,
) -> anyhow::Result<Side> {
    let prepared = rt
        .block_on(mrlab::prepare::prepare(&scenario, cache, platform))
        .with_context(|| title.clone())?;
    let r = &prepared.resolved;
    let systemd = r.uki.as_ref().and_then(|u| u.systemd_version);
    let shown = |v: Option<measure::quirks::Version>| v.map_or("?".into(), |v| v.to_string());
    let mut versions = format!(
        "OVMF {}, QEMU {}",
        shown(r.ovmf_version),
        shown(r.qemu_version)
    );
    if systemd.is_some() {
        versions.push_str(&format!(", systemd {}", shown(systemd)));
    }
    Ok(Side {
        title,
        versions,
        quirks: r.quirks.rows.clone(),
        events: prepared.prediction.events.clone(),
        scenario,
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let platform = if args.platform == "tdx" {
        Platform::Tdx
    } else {
        Platform::Vtpm
    };
    let a = Scenario::load(&args.a)?;
    let (b, b_title) = second_scenario(&args)?;
    let cache = images::Cache::open(&images::workspace_root())?;
    let rt = tokio::runtime::Runtime::new()?;
    let a = side(&rt, &cache, args.a.display().to_string(), a, platform)?;
    let b = side(&rt, &cache, b_title, b, platform)?;
    if args.json {
        print_json(&args.platform, &a, &b)?;
    } else {
        print_text(&args.platform, &a, &b)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Side B: the second scenario, or side A's with the version overrides, and its title.
fn second_scenario(args: &Args) -> anyhow::Result<(Scenario, String)> {
    let overrides: Vec<String> = [
        ("firmware", &args.firmware),
        ("qemu", &args.qemu),
        ("stub", &args.stub),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
    .collect();
    if args.b.is_none() && overrides.is_empty() {
        anyhow::bail!("diff needs a second scenario or at least one of --firmware, --qemu, --stub");
    }
    let b_path = args.b.clone().unwrap_or_else(|| args.a.clone());
    let mut b = Scenario::load(&b_path)?;
    if let Some(firmware) = &args.firmware {
        b.firmware = firmware.clone();
    }
    if let Some(qemu) = &args.qemu {
        b.qemu = qemu.clone();
    }
    if let Some(stub) = &args.stub {
        b.stub = stub.clone();
    }
    let mut b_title = b_path.display().to_string();
    if !overrides.is_empty() {
        b_title.push_str(&format!(" with {}", overrides.join(", ")));
    }
    Ok((b, b_title))
}

/// The quirk rows only `b` applies.
fn quirks_only_in<'a>(b: &'a Side, a: &Side) -> Vec<&'a str> {
    b.quirks
        .iter()
        .filter(|q| !a.quirks.contains(q))
        .copied()
        .collect()
}

fn varies(e: &Event) -> Vec<String> {
    e.varies_with
        .iter()
        .map(|v| format!("{v:?}").to_lowercase())
        .collect()
}

fn print_json(platform: &str, a: &Side, b: &Side) -> anyhow::Result<()> {
    let (changes, same) = measure::diff::diff(&a.events, &b.events);
    let doc = json!({
        "platform": platform,
        "a": {"scenario": a.title, "name": a.scenario.name, "versions": a.versions},
        "b": {"scenario": b.title, "name": b.scenario.name, "versions": b.versions},
        "changes": changes.iter().map(|c| {
            let e = c.event();
            json!({
                "change": c.kind,
                "pcr": e.pcr,
                "register": e.register().map(|r| r.to_string()),
                "label": e.label,
                "type": e.event_type.name(),
                "a": c.a.and_then(|e| e.digests.sha384_hex()),
                "b": c.b.and_then(|e| e.digests.sha384_hex()),
                "varies_with": varies(e),
            })
        }).collect::<Vec<Value>>(),
        "unchanged": same,
        "quirks": {"added": quirks_only_in(b, a), "removed": quirks_only_in(a, b)},
    });
    outln!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

fn print_text(platform: &str, a: &Side, b: &Side) -> anyhow::Result<()> {
    let (changes, same) = measure::diff::diff(&a.events, &b.events);
    outln!("A: {} ({})", a.title, a.versions);
    outln!("B: {} ({})", b.title, b.versions);
    outln!("platform: {platform}");
    outln!();
    let short = |e: Option<&Event>| {
        e.and_then(|e| e.digests.sha384_hex())
            .map_or("-".to_string(), |d| format!("{}…", &d[..16]))
    };
    for c in &changes {
        let e = c.event();
        let mark = match c.kind {
            measure::diff::ChangeKind::Added => "+",
            measure::diff::ChangeKind::Removed => "-",
            measure::diff::ChangeKind::Changed => "~",
        };
        outln!(
            "{mark} pcr{:<2} {:<6} {:<32} {:<34} {} → {}  varies with {}",
            e.pcr,
            e.register().map_or("-".to_string(), |r| r.to_string()),
            e.label,
            e.event_type.name(),
            short(c.a),
            short(c.b),
            varies(e).join(",")
        );
    }
    if changes.is_empty() {
        outln!("no predicted event differs");
    }
    outln!();
    outln!(
        "{} changed, {same} the same; quirk rows: +[{}] -[{}]",
        changes.len(),
        quirks_only_in(b, a).join(", "),
        quirks_only_in(a, b).join(", ")
    );
    Ok(())
}
