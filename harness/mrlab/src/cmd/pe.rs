//! `mrlab pe`: PE/COFF facts and the Authenticode digests firmware would measure.

use anyhow::Context;
use measure::pe::{PeImage, SignedDigest};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Input file.
    pub file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    file: String,
    bytes: usize,
    machine: String,
    optional_header: &'static str,
    size_of_headers: u32,
    sections: Vec<SectionReport>,
    certificate_table: Option<CertificateTable>,
    authenticode: Authenticode,
    signatures: Vec<SignatureReport>,
}

#[derive(Serialize)]
struct SectionReport {
    name: String,
    virtual_address: u32,
    virtual_size: u32,
    pointer_to_raw_data: u32,
    size_of_raw_data: u32,
    characteristics: u32,
}

#[derive(Serialize)]
struct CertificateTable {
    offset: u32,
    size: u32,
}

#[derive(Serialize)]
struct Authenticode {
    sha256: String,
    sha384: String,
}

#[derive(Serialize)]
struct SignatureReport {
    algorithm: &'static str,
    digest: String,
    /// Null when mrlab does not compute that algorithm (SHA-1, SHA-512).
    matches: Option<bool>,
}

fn machine_name(machine: u16) -> String {
    match machine {
        0x014c => "i386".to_string(),
        0x8664 => "x86_64".to_string(),
        0xaa64 => "aarch64".to_string(),
        0x01c4 => "arm".to_string(),
        0x5064 => "riscv64".to_string(),
        other => format!("{other:#06x}"),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.file.display().to_string();
    let bytes = mrlab::input::read(&args.file, mrlab::input::IMAGE)?;
    let image = PeImage::parse(&bytes).with_context(|| format!("{path}: not a PE image"))?;
    let digests = image
        .authenticode()
        .with_context(|| format!("{path}: cannot compute the Authenticode hash"))?;
    let signed: Vec<SignedDigest> = image
        .signed_digests()
        .with_context(|| format!("{path}: unreadable embedded signature"))?;
    let report = Report {
        file: path,
        bytes: bytes.len(),
        machine: machine_name(image.machine),
        optional_header: if image.magic == measure::pe::MAGIC_PE32 {
            "PE32"
        } else {
            "PE32+"
        },
        size_of_headers: image.size_of_headers,
        sections: image
            .sections
            .iter()
            .map(|s| SectionReport {
                name: s.name.clone(),
                virtual_address: s.virtual_address,
                virtual_size: s.virtual_size,
                pointer_to_raw_data: s.pointer_to_raw_data,
                size_of_raw_data: s.size_of_raw_data,
                characteristics: s.characteristics,
            })
            .collect(),
        certificate_table: image.certificate_table.map(|t| CertificateTable {
            offset: t.address,
            size: t.size,
        }),
        authenticode: Authenticode {
            sha256: digests.sha256_hex().unwrap_or_default(),
            sha384: digests.sha384_hex().unwrap_or_default(),
        },
        signatures: signed
            .iter()
            .map(|s| SignatureReport {
                algorithm: s.algorithm.name(),
                digest: hex::encode(&s.digest),
                matches: s.matches(&digests),
            })
            .collect(),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(r: &Report) -> anyhow::Result<()> {
    outln!("file                {}", r.file);
    outln!("bytes               {}", r.bytes);
    outln!("machine             {} ({})", r.machine, r.optional_header);
    outln!("size of headers     {:#x}", r.size_of_headers);
    match &r.certificate_table {
        Some(t) => outln!("certificate table   {:#x} + {:#x}", t.offset, t.size),
        None => outln!("certificate table   none"),
    }
    outln!("authenticode sha256 {}", r.authenticode.sha256);
    outln!("authenticode sha384 {}", r.authenticode.sha384);
    for s in &r.signatures {
        let verdict = match s.matches {
            Some(true) => "matches",
            Some(false) => "DOES NOT MATCH",
            None => "not computed",
        };
        outln!("signed {:<12} {} ({verdict})", s.algorithm, s.digest);
    }
    outln!();
    outln!(
        "{:<10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "section",
        "vaddr",
        "vsize",
        "raw_off",
        "raw_size",
        "flags"
    );
    for s in &r.sections {
        outln!(
            "{:<10} {:>#10x} {:>#10x} {:>#10x} {:>#10x} {:>#10x}",
            s.name,
            s.virtual_address,
            s.virtual_size,
            s.pointer_to_raw_data,
            s.size_of_raw_data,
            s.characteristics
        );
    }
    Ok(())
}
