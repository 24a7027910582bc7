//! `mrlab diagnose`: recorded evidence against a scenario, offline.

use measure::tdvf::PageOrder;
use measure::Platform;
use mrlab::judge;
use mrlab::predictors;
use mrlab::prepare;
use mrlab::recorded::{self, quote_else_tdreport, Named, TdEvidence};
use mrlab::report::{self, ScenarioReport, Verdict};
use mrlab::scenario::Scenario;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  mrlab diagnose --scenario scenarios/kernel-smoke.toml --evidence results/runs/kernel-smoke
  mrlab diagnose --scenario my-td.toml --event-log ccel.bin --quote quote.dat
  mrlab diagnose --scenario my-td.toml --event-log quote-report.json     (dstack JSON carries its quote)
Prints the first event where reality and prediction part, both digests, the decoded event data and
what that event varies with. Exit 0 only when everything matches.
--predictor NAME=COMMAND / dstack-mr=PATH (repeatable) also compares external predictors with the
TD's registers (TD evidence) or with the builtin TD prediction (a vtpm results folder).")]
pub struct Args {
    /// The scenario describing the VM the evidence came from.
    #[arg(long)]
    pub scenario: PathBuf,
    /// A results folder (or its evidence/ folder) from `mrlab run`: a vtpm one is judged as the
    /// run judged it; a TD's (CCEL, quote or TDREPORT) like --event-log with its registers.
    #[arg(long, conflicts_with_all = ["event_log", "quote", "tdreport"])]
    pub evidence: Option<PathBuf>,
    /// A TD's event log: CCEL data, TCG2, or a dstack JSON document.
    #[arg(long)]
    pub event_log: Option<PathBuf>,
    /// The TD's quote (v4/v5).
    #[arg(long, conflicts_with = "tdreport")]
    pub quote: Option<PathBuf>,
    /// The TD's 1024-byte TDREPORT.
    #[arg(long)]
    pub tdreport: Option<PathBuf>,
    /// MRTD page-add order of the TD's QEMU/KVM: auto (from the scenario's QEMU version, quirk
    /// qemu-8-tdx-two-pass-mrtd), single-pass (QEMU >= 9) or two-pass (QEMU 8.x TDX builds).
    #[arg(long, default_value = "auto", value_parser = ["auto", "single-pass", "two-pass"])]
    pub mrtd_order: String,
    /// An external TD predictor: NAME=COMMAND or dstack-mr=PATH (see `mrlab run --help`).
    #[arg(long = "predictor", value_name = "NAME=COMMAND")]
    pub predictors: Vec<predictors::Predictor>,
    /// Print the JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ctx = Context {
        scenario: Scenario::load(&args.scenario)?,
        cache: images::Cache::open(&images::workspace_root())?,
        rt: tokio::runtime::Runtime::new()?,
        file: args.scenario.display().to_string(),
        // Predictors work (inputs.json, dstack-mr's image folder) in a folder dropped at exit.
        work: tempfile::tempdir()?,
    };
    predictors::check_unique(&args.predictors)?;
    // A results folder of a vTPM run is judged as the live run judged it; a TD's (a CCEL and no
    // TPM log, from `mrlab run --backend tdx`) goes the TD way, like --event-log.
    let evidence = match &args.evidence {
        Some(dir) => Some((dir, recorded::record_from_dir(dir)?)),
        None => None,
    };
    let from_td = |record: &agent::record::Record| {
        record.get(agent::record::CCEL_DATA_ENTRY).is_some()
            && record.get(agent::record::TPM_EVENT_LOG_ENTRY).is_none()
    };
    let report = if let Some((_, record)) = evidence.as_ref().filter(|(_, r)| !from_td(r)) {
        judge_vtpm(&ctx, &args, record)?
    } else {
        let td = match &evidence {
            Some((dir, record)) => {
                let mut td = TdEvidence::from_record(record).map_err(anyhow::Error::msg)?;
                td.source = format!("{} in {}", td.source, dir.display());
                td
            }
            None => td_evidence_from_files(&args)?,
        };
        judge_td(&ctx, &args, &td)?
    };
    if args.json {
        outln!("{}", report::json(std::slice::from_ref(&report)));
    } else {
        print_summary(&report)?;
    }
    Ok(if report.verdict == Verdict::Pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What judging needs besides the evidence.
struct Context {
    scenario: Scenario,
    cache: images::Cache,
    rt: tokio::runtime::Runtime,
    file: String,
    work: tempfile::TempDir,
}

/// A vTPM run's record, judged as the live run judged it; predictors against the builtin TD
/// prediction.
fn judge_vtpm(
    ctx: &Context,
    args: &Args,
    record: &agent::record::Record,
) -> anyhow::Result<ScenarioReport> {
    let prepared = ctx
        .rt
        .block_on(prepare::prepare(&ctx.scenario, &ctx.cache, Platform::Vtpm))?;
    let judgement = judge::judgement(&prepared, &ctx.file, record)?;
    let rows = if args.predictors.is_empty() {
        Vec::new()
    } else {
        ctx.rt.block_on(predictors::vs_builtin(
            &args.predictors,
            &ctx.scenario,
            &ctx.cache,
            ctx.work.path(),
        ))
    };
    Ok(judgement.with_predictors(rows).report())
}

/// A TD's evidence against the TD prediction in the page order asked for; predictors against
/// the TD's registers.
fn judge_td(ctx: &Context, args: &Args, td: &TdEvidence) -> anyhow::Result<ScenarioReport> {
    let prepared = ctx
        .rt
        .block_on(prepare::prepare(&ctx.scenario, &ctx.cache, Platform::Tdx))?;
    let order = match args.mrtd_order.as_str() {
        "two-pass" => PageOrder::TwoPass,
        "single-pass" => PageOrder::SinglePass,
        _ => prepared.resolved.quirks.mrtd_page_order,
    };
    let label = format!("actual ({})", td.source);
    let judgement = judge::td_judgement(&prepared, &ctx.file, td, order)?;
    let mut rows = Vec::new();
    if !args.predictors.is_empty() {
        rows = ctx.rt.block_on(predictors::check_all(
            &args.predictors,
            &prepared,
            order,
            &td.registers,
            &label,
            ctx.work.path(),
        ));
    }
    Ok(judgement.with_predictors(rows).report())
}

/// The markdown summary, each register's comparison and the first divergence in full.
fn print_summary(report: &ScenarioReport) -> anyhow::Result<()> {
    outln!("{}", report::markdown(std::slice::from_ref(report)));
    for r in &report.registers {
        outln!(
            "{:<14} {} {}",
            r.name,
            if r.matches { "==" } else { "!=" },
            r.actual.as_deref().unwrap_or("-")
        );
    }
    if let Some(d) = &report.first_divergence {
        outln!(
            "\nfirst divergence ({:?}) {} {}",
            d.outcome,
            d.event_type,
            d.label.as_deref().unwrap_or("(unpredicted)")
        );
        outln!(
            "  predicted: {} {}",
            d.predicted_digest.as_deref().unwrap_or("-"),
            d.predicted_data.as_deref().unwrap_or("")
        );
        outln!(
            "  actual:    {} {}",
            d.actual_digest.as_deref().unwrap_or("-"),
            d.actual_data.as_deref().unwrap_or("")
        );
        outln!("  varies with: {:?}", d.varies_with);
    }
    Ok(())
}

/// A TD's evidence from `--event-log` and `--quote`/`--tdreport` (a dstack JSON document
/// carries its own quote).
fn td_evidence_from_files(args: &Args) -> anyhow::Result<TdEvidence> {
    let log_path = args.event_log.as_ref().ok_or_else(|| {
        anyhow::anyhow!("give --evidence DIR, or --event-log F with --quote Q or --tdreport T")
    })?;
    let bytes = mrlab::input::read(log_path, mrlab::input::EVENT_LOG)?;
    let (log, quote_bytes) = if bytes.first() == Some(&b'{') {
        let doc = evidence::dstack::parse_document(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", log_path.display()))?;
        (
            doc.event_log,
            Some((doc.quote, format!("quote in {}", log_path.display()))),
        )
    } else {
        let log = evidence::log::parse(&bytes, evidence::log::Format::Auto)
            .map_err(|e| anyhow::anyhow!("{}: {e}", log_path.display()))?;
        (log, None)
    };
    let read = |path: &PathBuf| mrlab::input::read(path, mrlab::input::QUOTE);
    let quote_file = args.quote.as_ref().map(read).transpose();
    let tdreport_file = args.tdreport.as_ref().map(read).transpose();
    let (quote_file, tdreport_file) = (quote_file?, tdreport_file?);
    let tdreport = tdreport_file
        .as_deref()
        .zip(args.tdreport.as_ref())
        .map(|(b, p)| named(b, p, "TDREPORT"));
    // --quote first, then --tdreport, then the quote a dstack document carries.
    let quote = match (quote_file.as_deref().zip(args.quote.as_ref()), &tdreport) {
        (Some((b, p)), _) => Some(named(b, p, "quote")),
        (None, Some(_)) => None,
        (None, None) => quote_bytes.as_ref().map(|(q, source)| Named {
            bytes: q,
            name: source.clone(),
            source: source.clone(),
        }),
    };
    let (registers, source) = quote_else_tdreport(quote, tdreport).ok_or_else(|| {
        anyhow::anyhow!("--event-log needs --quote or --tdreport (the TD's registers)")
    })??;
    Ok(TdEvidence {
        log,
        registers,
        source,
    })
}

/// A quote or TDREPORT file given on the command line, for [`quote_else_tdreport`].
fn named<'a>(bytes: &'a [u8], path: &Path, what: &str) -> Named<'a> {
    Named {
        bytes,
        name: path.display().to_string(),
        source: format!("{what} {}", path.display()),
    }
}
