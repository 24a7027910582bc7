//! `mrlab firmware`: the TDVF facts of a firmware image (sections, MRTD in both page orders,
//! CFV and TD HOB digests).

use anyhow::Context;
use measure::tdvf::{self, PageOrder, Tdvf};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Firmware image (OVMF.fd with TDVF metadata).
    pub file: PathBuf,
    /// Guest memory for the TD HOB digest: 2G, 2048M, 2.75G, or bytes.
    #[arg(long, default_value = "2G", value_parser = mrlab::scenario::parse_size)]
    pub memory: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Everything the command reports, computed once for both output forms.
struct Facts {
    tdvf: Tdvf,
    mrtd_single: [u8; 48],
    mrtd_two: [u8; 48],
    cfv: measure::Event,
    cfv_section: tdvf::Section,
    td_hob: measure::Event,
    td_hob_len: usize,
}

fn facts(image: &[u8], memory: u64) -> Result<Facts, tdvf::TdvfError> {
    let tdvf = Tdvf::parse(image)?;
    Ok(Facts {
        mrtd_single: tdvf::mrtd(&tdvf, image, PageOrder::SinglePass)?,
        mrtd_two: tdvf::mrtd(&tdvf, image, PageOrder::TwoPass)?,
        cfv: tdvf::cfv_event(&tdvf, image)?,
        cfv_section: tdvf
            .section(tdvf::SectionType::Cfv)
            .cloned()
            .ok_or(tdvf::TdvfError::NoSection(tdvf::SectionType::Cfv))?,
        td_hob: tdvf::td_hob_event(&tdvf, memory)?,
        td_hob_len: tdvf::td_hob(&tdvf, memory)?.len(),
        tdvf,
    })
}

fn sha384_hex(event: &measure::Event) -> String {
    event.digests.sha384_hex().unwrap_or_default()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.file.display();
    let image = mrlab::input::read(&args.file, mrlab::input::FIRMWARE)?;
    let f = facts(&image, args.memory).with_context(|| path.to_string())?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&facts_json(&args, &f))?);
    } else {
        print_facts(&args, &f)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn facts_json(args: &Args, f: &Facts) -> serde_json::Value {
    let cfv = &f.cfv_section;
    let sections: Vec<_> = f
        .tdvf
        .sections
        .iter()
        .map(|s| {
            json!({
                "index": s.index,
                "type": s.section_type.name(),
                "type_id": s.section_type.code(),
                "data_offset": s.data_offset,
                "raw_data_size": s.raw_data_size,
                "memory_address": s.memory_address,
                "memory_data_size": s.memory_data_size,
                "attributes": s.attributes.names(),
                "attributes_raw": s.attributes.0,
            })
        })
        .collect();
    json!({
        "file": args.file,
        "image_bytes": f.tdvf.image_len,
        "metadata_offset": f.tdvf.metadata_offset,
        "version": f.tdvf.version,
        "sections": sections,
        "mrtd": {
            "single_pass": hex::encode(f.mrtd_single),
            "two_pass": hex::encode(f.mrtd_two),
        },
        "cfv": {
            "digest": sha384_hex(&f.cfv),
            "address": cfv.memory_address,
            "bytes": cfv.raw_data_size,
            "event_type": f.cfv.event_type.name(),
        },
        "td_hob": {
            "memory": args.memory,
            "digest": sha384_hex(&f.td_hob),
            "bytes": f.td_hob_len,
            "event_type": f.td_hob.event_type.name(),
        },
    })
}

fn print_facts(args: &Args, f: &Facts) -> anyhow::Result<()> {
    let path = args.file.display();
    let cfv = &f.cfv_section;
    outln!(
        "{path}: {} bytes, TDVF metadata v{} at {:#x}, {} sections",
        f.tdvf.image_len,
        f.tdvf.version,
        f.tdvf.metadata_offset,
        f.tdvf.sections.len()
    );
    outln!(
        "  {:>2}  {:<8} {:>11} {:>10} {:>18} {:>10}  attributes",
        "#",
        "type",
        "data offset",
        "raw size",
        "memory address",
        "mem size"
    );
    for s in &f.tdvf.sections {
        outln!(
            "  {:>2}  {:<8} {:>#11x} {:>#10x} {:>#18x} {:>#10x}  {}",
            s.index,
            s.section_type.name(),
            s.data_offset,
            s.raw_data_size,
            s.memory_address,
            s.memory_data_size,
            s.attributes.names().join("|")
        );
    }
    outln!("MRTD single-pass  {}", hex::encode(f.mrtd_single));
    outln!("MRTD two-pass     {}", hex::encode(f.mrtd_two));
    outln!(
        "CFV               {}  ({:#x} bytes at {:#x})",
        sha384_hex(&f.cfv),
        cfv.raw_data_size,
        cfv.memory_address
    );
    outln!(
        "TD HOB            {}  ({} bytes, memory {} bytes = {} GiB)",
        sha384_hex(&f.td_hob),
        f.td_hob_len,
        args.memory,
        args.memory as f64 / f64::from(1u32 << 30)
    );
    Ok(())
}
