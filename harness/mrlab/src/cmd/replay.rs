//! `mrlab replay`: parse an event log (TPM TCG2/TCG1.2, TDX CCEL, dstack JSON), show every
//! record decoded, and the registers the log replays to.

use anyhow::Context;
use evidence::log::{EventLog, Format, LogEvent};
use evidence::HashAlg;
use measure::Register;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Event log file (binary_bios_measurements, CCEL data, dstack JSON).
    pub file: PathBuf,
    /// Log format: auto, tcg2, tcg1, ccel or dstack-json.
    #[arg(long, default_value = "auto")]
    pub format: Format,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bytes = mrlab::input::read(&args.file, mrlab::input::EVENT_LOG)?;
    let log = evidence::log::parse(&bytes, args.format).with_context(|| {
        format!(
            "{}: parsing as {} event log",
            args.file.display(),
            args.format
        )
    })?;
    let out = if args.json {
        serde_json::to_string_pretty(&to_json(&log))? + "\n"
    } else {
        table(&log)
    };
    super::write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// TD logs replay to RTMRs; TPM logs to PCR banks.
fn is_td_log(log: &EventLog) -> bool {
    matches!(log.format, Format::Ccel | Format::DstackJson)
}

/// The digest shown for an event: SHA-384 when present (what TDX compares), else the first.
fn main_digest(e: &LogEvent) -> Option<&[u8]> {
    e.digest(HashAlg::SHA384)
        .or_else(|| e.digests.first().map(|(_, d)| d.as_slice()))
}

fn registers_json(log: &EventLog) -> Value {
    if is_td_log(log) {
        let regs = log.replay_rtmrs();
        let m: Map<String, Value> = [
            Register::Rtmr0,
            Register::Rtmr1,
            Register::Rtmr2,
            Register::Rtmr3,
        ]
        .into_iter()
        .map(|r| (r.name().to_string(), json!(hex::encode(regs.get(r)))))
        .collect();
        Value::Object(m)
    } else {
        let m: Map<String, Value> = log
            .replay_pcrs()
            .into_iter()
            .map(|bank| {
                let pcrs: Map<String, Value> = bank
                    .pcrs
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("pcr{i}"), json!(hex::encode(v))))
                    .collect();
                (bank.alg.name(), Value::Object(pcrs))
            })
            .collect();
        Value::Object(m)
    }
}

fn to_json(log: &EventLog) -> Value {
    let events: Vec<Value> = log
        .events
        .iter()
        .map(|e| {
            let digests: Map<String, Value> = e
                .digests
                .iter()
                .map(|(alg, d)| (alg.name(), json!(hex::encode(d))))
                .collect();
            json!({
                "index": e.record,
                "offset": e.offset,
                "logged_index": e.index,
                "register": e.register.map(|r| r.name()),
                "pcr": e.event.pcr,
                "type": evidence::decode::type_name(e.event.event_type),
                "type_id": e.event.event_type.0,
                "digest": main_digest(e).map(hex::encode),
                "digests": digests,
                "data_hex": e.event.data.as_deref().map(hex::encode),
                "description": evidence::decode::describe(&e.event),
            })
        })
        .collect();
    let mut out = json!({
        "format": log.format.name(),
        "registers": registers_json(log),
        "events": events,
    });
    if let Some(spec_id) = &log.spec_id {
        out["spec_id"] = spec_id.to_json();
    }
    if let Some(p) = log.padding {
        out["padding"] = json!({"log_bytes": p.log_bytes, "padding_bytes": p.padding_bytes,
                                "padding_byte": format!("{:#04x}", p.byte)});
    }
    if let Some(locality) = log.startup_locality() {
        out["startup_locality"] = json!(locality);
    }
    out
}

fn table(log: &EventLog) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "format: {}, {} records",
        log.format,
        log.record_count()
    );
    if let Some(s) = &log.spec_id {
        let banks: Vec<String> = s.algorithms.iter().map(|(a, _)| a.name()).collect();
        let _ = writeln!(
            out,
            "spec id: version {} errata {}, banks {}",
            s.spec_version(),
            s.errata,
            banks.join(",")
        );
    }
    if let Some(p) = log.padding {
        let _ = writeln!(
            out,
            "padding: {} bytes of {:#04x} after {} log bytes",
            p.padding_bytes, p.byte, p.log_bytes
        );
    }
    let _ = writeln!(out);
    write_events(&mut out, log);
    let _ = writeln!(out);
    write_registers(&mut out, log);
    out
}

/// One line per event: record, PCR, register, type, digest and what it holds.
fn write_events(out: &mut String, log: &EventLog) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "{:>4}  {:>3}  {:<6}  {:<34}  {:<16}  description",
        "#", "pcr", "reg", "type", "digest"
    );
    for e in &log.events {
        let register = e.register.map(|r| r.name()).unwrap_or("-");
        let digest = main_digest(e)
            .map(|d| hex::encode(&d[..d.len().min(8)]))
            .unwrap_or_default();
        let mut description = evidence::decode::describe(&e.event);
        if description.chars().count() > 120 {
            description = description.chars().take(119).collect::<String>() + "…";
        }
        let _ = writeln!(
            out,
            "{:>4}  {:>3}  {:<6}  {:<34}  {:<16}  {}",
            e.record,
            e.event.pcr,
            register,
            evidence::decode::type_name(e.event.event_type),
            digest,
            description
        );
    }
}

/// The registers the log replays to: a TD's RTMRs, or each bank's PCRs the log extends.
fn write_registers(out: &mut String, log: &EventLog) {
    use std::fmt::Write;
    if is_td_log(log) {
        let regs = log.replay_rtmrs();
        for r in [
            Register::Rtmr0,
            Register::Rtmr1,
            Register::Rtmr2,
            Register::Rtmr3,
        ] {
            let _ = writeln!(out, "{:<6} {}", r.name(), hex::encode(regs.get(r)));
        }
    } else {
        let used: std::collections::BTreeSet<u32> =
            log.events.iter().map(|e| e.event.pcr).collect();
        for bank in log.replay_pcrs() {
            for pcr in &used {
                if let Some(v) = bank.pcrs.get(*pcr as usize) {
                    let _ = writeln!(
                        out,
                        "{:<7} pcr{:<2} {}",
                        bank.alg.name(),
                        pcr,
                        hex::encode(v)
                    );
                }
            }
        }
    }
}
