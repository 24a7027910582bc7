//! `mrlab predict`: the predicted event log of a scenario, without booting it.

use anyhow::Context;
use measure::Platform;
use mrlab::prepare;
use mrlab::scenario::Scenario;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  mrlab predict scenarios/kernel-smoke.toml                  table: index, register, label, type, digest, varies-with
  mrlab predict scenarios/kernel-smoke.toml --platform tdx --json
  mrlab predict scenarios/kernel-smoke.toml --export-log predicted.bin   (TCG2 log; tpm2_eventlog reads it)
  mrlab predict scenarios/kernel-smoke.toml --fwcfg snap/   (from `mrlab fwcfg … --no-tpm --out snap/`, no QEMU)
The ACPI tables and the kernel as QEMU hands it over come from the fw_cfg oracle: the scenario's
own QEMU started paused under qtest (about a quarter of a second), or with --fwcfg a snapshot of it.")]
pub struct Args {
    /// Scenario file.
    pub scenario: PathBuf,
    /// Predict a TD (MRTD, RTMR0-3) or a vTPM guest (PCR0-15).
    #[arg(long, default_value = "tdx", value_parser = ["tdx", "vtpm"])]
    pub platform: String,
    /// Print the prediction as JSON (events and registers) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the predicted events as a TCG2 crypto-agile log (SHA-256 + SHA-384).
    #[arg(long)]
    pub export_log: Option<PathBuf>,
    /// Predict from a `mrlab fwcfg --out DIR` snapshot instead of asking QEMU (a host without
    /// QEMU, e.g. a verifier). Refused if its manifest does not fit the scenario.
    #[arg(long, value_name = "DIR")]
    pub fwcfg: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let platform = if args.platform == "tdx" {
        Platform::Tdx
    } else {
        Platform::Vtpm
    };
    let scenario = Scenario::load(&args.scenario)?;
    let cache = images::Cache::open(&images::workspace_root())?;
    let runtime = tokio::runtime::Runtime::new()?;
    // A TD's events are compared with the vTPM VM's (`verification`); from QEMU both are
    // prepared at once.
    let (prepared, vtpm) = match (&args.fwcfg, platform) {
        (Some(dir), _) => (
            mrlab::snapshot::prepare(&scenario, &cache, platform, dir).map_err(anyhow::Error::from),
            None,
        ),
        (None, Platform::Tdx) => {
            match runtime.block_on(prepare::prepare_td_with_vtpm(&scenario, &cache)) {
                Ok((td, vtpm)) => (Ok(td), Some(vtpm)),
                Err(e) => (Err(e.into()), None),
            }
        }
        (None, Platform::Vtpm) => (
            runtime
                .block_on(prepare::prepare(&scenario, &cache, platform))
                .map_err(anyhow::Error::from),
            None,
        ),
    };
    let prepared = prepared.with_context(|| args.scenario.display().to_string())?;
    let vtpm = match vtpm {
        Some(vtpm) => vtpm.ok(),
        None if prepared.prediction.platform == Platform::Tdx => runtime
            .block_on(prepare::prepare(&scenario, &cache, Platform::Vtpm))
            .ok()
            .map(|p| p.prediction.events),
        // A vTPM prediction's events are the checks themselves.
        None => None,
    };
    let statuses = verification(&prepared, vtpm);
    let registers = registers(&prepared)?;
    let prediction = &prepared.prediction;
    if let Some(path) = &args.export_log {
        let bytes = evidence::tcg::write(&prediction.events)?;
        std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    if args.json {
        print_json(&scenario, &args.platform, prediction, &statuses, registers)?;
    } else {
        print_table(prediction, &statuses, registers)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Per TD event: how far it has been checked against real firmware, from the vTPM VM's
/// prediction of the same scenario (none when it failed: every event unchecked). A vTPM
/// prediction's events are the checks themselves: `-`.
fn verification(
    prepared: &prepare::Prepared,
    vtpm: Option<Vec<measure::Event>>,
) -> Vec<&'static str> {
    let prediction = &prepared.prediction;
    match prediction.platform {
        Platform::Tdx => {
            let vtpm = vtpm.unwrap_or_default();
            mrlab::verification::before_boot(&prediction.events, &vtpm)
                .into_iter()
                .map(|v| v.as_str())
                .collect()
        }
        Platform::Vtpm => vec!["-"; prediction.events.len()],
    }
}

/// The predicted registers by name: a TD's MRTD and RTMRs, a vTPM guest's PCRs (null where
/// not predicted).
fn registers(prepared: &prepare::Prepared) -> anyhow::Result<Value> {
    let prediction = &prepared.prediction;
    Ok(match prediction.platform {
        Platform::Tdx => {
            // The same values `--predictor` compares external predictors with.
            let order = prepared.resolved.quirks.mrtd_page_order;
            let regs = mrlab::prepare::builtin_registers(prepared, order)?;
            json!({
                "mrtd": hex::encode(regs.mrtd),
                "rtmr0": hex::encode(regs.rtmr[0]),
                "rtmr1": hex::encode(regs.rtmr[1]),
                "rtmr2": hex::encode(regs.rtmr[2]),
                "rtmr3": regs.rtmr3.map(hex::encode),
            })
        }
        Platform::Vtpm => {
            let mut map = serde_json::Map::new();
            for pcr in 0..16u32 {
                let value = if prediction.full_pcrs.contains(&pcr) {
                    Value::String(hex::encode(prepare::fold_pcr(
                        &prediction.events,
                        pcr,
                        "sha384",
                    )))
                } else {
                    Value::Null
                };
                map.insert(format!("pcr{pcr}"), value);
            }
            Value::Object(map)
        }
    })
}

fn print_json(
    scenario: &Scenario,
    platform: &str,
    prediction: &measure::predict::Prediction,
    statuses: &[&str],
    registers: Value,
) -> anyhow::Result<()> {
    let events: Vec<Value> = prediction
        .events
        .iter()
        .zip(statuses)
        .map(|(e, status)| {
            json!({
                "register": e.register().map(|r| r.to_string()),
                "pcr": e.pcr,
                "type": e.event_type.name(),
                "type_id": e.event_type.0,
                "digest": e.digests.sha384_hex(),
                "digest_sha256": e.digests.sha256_hex(),
                "label": e.label,
                "data": evidence::decode::describe(e),
                "verification": status,
                "varies_with": e.varies_with,
            })
        })
        .collect();
    let doc = json!({
        "scenario": scenario.name,
        "platform": platform,
        "registers": registers,
        "unpredicted": prediction
            .unpredicted
            .iter()
            .map(|u| json!({"pcr": u.pcr, "reason": u.reason}))
            .collect::<Vec<_>>(),
        "events": events,
    });
    outln!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

fn print_table(
    prediction: &measure::predict::Prediction,
    statuses: &[&str],
    registers: Value,
) -> anyhow::Result<()> {
    outln!(
        "{:>3}  {:<6} {:>4}  {:<40} {:<34} {:<18} {:<16} varies with",
        "#",
        "reg",
        "pcr",
        "label",
        "type",
        "sha384",
        "verification"
    );
    for (i, (e, status)) in prediction.events.iter().zip(statuses).enumerate() {
        outln!(
            "{:>3}  {:<6} {:>4}  {:<40} {:<34} {:<18} {:<16} {}",
            i,
            e.register().map_or("-".to_string(), |r| r.to_string()),
            e.pcr,
            e.label,
            e.event_type.name(),
            e.digests
                .sha384_hex()
                .map_or("-".into(), |d| format!("{}…", &d[..16])),
            status,
            e.varies_with
                .iter()
                .map(|v| format!("{v:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    outln!();
    if let Value::Object(map) = registers {
        for (name, value) in map {
            let why = prediction
                .unpredicted
                .iter()
                .find(|u| name == format!("pcr{}", u.pcr))
                .map_or("(not predicted)".to_string(), |u| {
                    format!("(not predicted: {})", u.reason)
                });
            outln!("{name:<6} {}", value.as_str().unwrap_or(&why));
        }
    }
    Ok(())
}
