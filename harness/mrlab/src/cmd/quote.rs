//! `mrlab quote`: decode a TDX quote (v4/v5), a 1024-byte TDREPORT, or the quote inside a
//! dstack JSON document.

use anyhow::Context;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Quote, TDREPORT (exactly 1024 bytes) or dstack JSON document.
    pub file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.file.display();
    let bytes = mrlab::input::read(&args.file, mrlab::input::QUOTE)?;
    let mut fields = if bytes.len() == evidence::tdreport::SIZE {
        let report =
            evidence::tdreport::parse(&bytes).with_context(|| format!("{path}: TDREPORT"))?;
        let mut v = report.to_json();
        v["kind"] = "tdreport".into();
        v
    } else {
        let quote_bytes = if bytes.first() == Some(&b'{') {
            evidence::dstack::parse_document(&bytes)
                .with_context(|| format!("{path}: dstack document"))?
                .quote
        } else {
            bytes
        };
        let quote =
            evidence::quote::parse(&quote_bytes).with_context(|| format!("{path}: TDX quote"))?;
        let mut v = quote.to_json();
        v["kind"] = "quote".into();
        // A quote whose signature data cannot be verified is still worth decoding.
        v["signature"] = match evidence::quote::verify(&quote_bytes) {
            Ok(check) => check.to_json(),
            Err(err) => serde_json::json!({ "error": err.to_string() }),
        };
        v
    };
    let out = if args.json {
        serde_json::to_string_pretty(&fields)? + "\n"
    } else {
        let mut out = String::new();
        if let Value::Object(map) = &mut fields {
            for (k, v) in map.iter() {
                let shown = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out += &format!("{k:<24} {shown}\n");
            }
        }
        out
    };
    super::write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}
