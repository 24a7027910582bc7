//! `mrlab run`: boot scenarios, compare with the prediction, report.

use mrlab::report::{self, Verdict};
use mrlab::run::{self, Options};
use mrlab::schedule::{Budget, Capacity, Demand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  mrlab run scenarios/                    every scenario in the folder, on the vtpm backend
  mrlab run scenarios/kernel-smoke.toml --junit junit.xml
  mrlab run scenarios/dstack-like.toml --predictor dstack-mr=/usr/local/bin/dstack-mr
  mrlab run scenarios/ --predictor mine='python3 my_predictor.py'
A predictor gets inputs.json (the VM: files, cmdline, cpus, memory, machine flags, devices) as
its last argument and prints {\"mrtd\",\"rtmr0\",\"rtmr1\",\"rtmr2\"} (96 hex digits each); the
report sets each register beside the builtin TD prediction, which the vtpm run verifies
(README.md, \"External predictors\").
Each scenario gets a folder under --results with report.json, serial.log, run.sh (re-runs the
VM by hand) and evidence/ (what the guest collected). Exit status 0 only if every scenario passes.")]
pub struct Args {
    /// Scenario files, or folders of *.toml scenarios.
    #[arg(required = true)]
    pub scenarios: Vec<PathBuf>,
    /// Where the guest runs: vtpm (any Linux; TCG here) or tdx (a TDX host).
    #[arg(long, default_value = "vtpm", value_parser = ["vtpm", "tdx"])]
    pub backend: String,
    /// Cores to keep busy (default: all of them). A scenario holds min(its vCPUs, this) of
    /// them while it runs, and its guest memory plus 512 MiB of the memory available.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Write the JSON report (all scenarios) here.
    #[arg(long)]
    pub json_report: Option<PathBuf>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write a markdown summary here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// An external TD predictor, compared register by register with the builtin prediction:
    /// NAME=COMMAND (run by sh with inputs.json appended) or dstack-mr=PATH. Repeatable.
    #[arg(long = "predictor", value_name = "NAME=COMMAND")]
    pub predictors: Vec<mrlab::predictors::Predictor>,
    /// Folder for per-scenario results.
    #[arg(long, default_value = "results/runs")]
    pub results: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let platform = platform(&args)?;
    mrlab::predictors::check_unique(&args.predictors)?;
    let files = scenario_files(&args.scenarios)?;
    let cache = Arc::new(images::Cache::open(&images::workspace_root())?);
    let budget = Budget::new(Capacity::of_host(args.jobs));
    let opts = Arc::new(Options {
        results: args.results.clone(),
        platform,
        accel: qemu::argv::Accel::Tcg,
        predictors: args.predictors.clone(),
    });
    // A SIGKILLed mrlab runs no handler: its guardian removes the temp dirs then.
    let mut guardian = std::process::Command::new(std::env::current_exe()?);
    guardian.arg("guard");
    if let Err(e) = qemu::process::start_guardian(guardian) {
        eprintln!("mrlab: warning: no guardian ({e}): a SIGKILL would leave temp dirs behind");
    }
    let rt = tokio::runtime::Runtime::new()?;
    // Each task puts its report in its slot; on SIGINT/SIGTERM the finished slots are reported
    // and the others become `error: interrupted`.
    let backend = run::backend_name(&opts);
    let slots: Arc<std::sync::Mutex<Vec<Option<report::ScenarioReport>>>> =
        Arc::new(std::sync::Mutex::new(duplicate_names(&files, backend)));
    let interrupted = rt.block_on(async {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let all = run_all(&files, &budget, &cache, &opts, &slots);
        anyhow::Ok(tokio::select! {
            () = all => None,
            _ = sigint.recv() => Some(Interrupt::Int),
            _ = sigterm.recv() => Some(Interrupt::Term),
        })
    })?;
    // What finished before a signal; a scenario that ends after it (its QEMU killed below)
    // did not finish.
    let finished = slots.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(signal) = interrupted {
        // Kill every QEMU/swtpm group and remove the run's temp dirs first, then stop the
        // tasks; what finished before the signal is still reported below.
        qemu::process::terminate_all();
        rt.shutdown_timeout(std::time::Duration::from_millis(500));
        eprintln!("mrlab: interrupted by {}: stopped every VM", signal.name());
    }
    let reports = reports(finished, &files, interrupted, backend);
    write_reports(&args, &reports)?;
    let passed = report::count(&reports, Verdict::Pass);
    let skipped = report::count(&reports, Verdict::Skip);
    eprintln!(
        "{passed} passed, {} failed, {skipped} skipped",
        reports.len() - passed - skipped
    );
    Ok(match interrupted {
        Some(signal) => ExitCode::from(signal.exit_code()),
        None if passed + skipped == reports.len() => ExitCode::SUCCESS,
        None => ExitCode::FAILURE,
    })
}

/// The backend asked for; a TD only on a TDX host.
fn platform(args: &Args) -> anyhow::Result<measure::Platform> {
    Ok(if args.backend == "tdx" {
        if let Some(why) = run::tdx_host_problem(Path::new("/")) {
            anyhow::bail!(
                "--backend tdx needs a TDX host: {why}. Recorded TD evidence can be checked \
                 offline with `mrlab diagnose --event-log … --quote …`"
            );
        }
        measure::Platform::Tdx
    } else {
        measure::Platform::Vtpm
    })
}

/// A report per scenario file: the finished ones, and an error for each that did not finish.
fn reports(
    finished: Vec<Option<report::ScenarioReport>>,
    files: &[PathBuf],
    interrupted: Option<Interrupt>,
    backend: &str,
) -> Vec<report::ScenarioReport> {
    finished
        .into_iter()
        .zip(files)
        .map(|(slot, file)| {
            slot.unwrap_or_else(|| {
                let why = match interrupted {
                    Some(signal) => format!("interrupted by {} before it finished", signal.name()),
                    None => "the scenario's task failed".into(),
                };
                let name = file
                    .file_stem()
                    .map_or(file.display().to_string(), |s| s.to_string_lossy().into());
                report::ScenarioReport::error(&name, &file.display().to_string(), backend, why, 0.0)
            })
        })
        .collect()
}

/// The summary on stdout, the report files asked for, and the notes worth a human's eye.
fn write_reports(args: &Args, reports: &[report::ScenarioReport]) -> anyhow::Result<()> {
    let summary = report::markdown(reports);
    outln!("{summary}");
    write_opt(&args.json_report, &report::json(reports))?;
    write_opt(&args.junit, &report::junit(reports))?;
    write_opt(&args.markdown, &summary)?;
    // A pass that needed a retry, or that warns, says so beside the count, not only in JSON.
    for r in reports {
        for note in r.notes.iter().filter(|n| is_shown_note(n)) {
            eprintln!("{} {:?}: {note}", r.name, r.verdict);
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Interrupt {
    Int,
    Term,
}

impl Interrupt {
    fn name(self) -> &'static str {
        match self {
            Interrupt::Int => "SIGINT",
            Interrupt::Term => "SIGTERM",
        }
    }

    /// The shell's 128 + signal number.
    fn exit_code(self) -> u8 {
        match self {
            Interrupt::Int => 130,
            Interrupt::Term => 143,
        }
    }
}

/// Notes a person must see in the terminal: a retry that may hide a flaky host, a warning.
fn is_shown_note(note: &str) -> bool {
    note.starts_with("retried") || note.starts_with("warning:")
}

/// One slot per file: `None` to run it, or an error report for a scenario whose name an
/// earlier file already uses (the name is its results folder, so one would clobber the other).
fn duplicate_names(files: &[PathBuf], backend: &str) -> Vec<Option<report::ScenarioReport>> {
    let mut seen: std::collections::HashMap<String, &Path> = std::collections::HashMap::new();
    files
        .iter()
        .map(|file| {
            // A file that does not load is reported by its own run.
            let name = mrlab::scenario::Scenario::load(file).ok()?.name;
            match seen.get(&name) {
                Some(first) => Some(report::ScenarioReport::error(
                    &name,
                    &file.display().to_string(),
                    backend,
                    format!(
                        "name `{name}` is already used by {} in this run: names must be unique \
                         (each names its results folder)",
                        first.display()
                    ),
                    0.0,
                )),
                None => {
                    seen.insert(name, file);
                    None
                }
            }
        })
        .collect()
}

/// Runs every scenario in the order given, as many at once as the budget admits, each report
/// into its slot.
async fn run_all(
    files: &[PathBuf],
    budget: &Budget,
    cache: &Arc<images::Cache>,
    opts: &Arc<Options>,
    slots: &Arc<std::sync::Mutex<Vec<Option<report::ScenarioReport>>>>,
) {
    let total = files.len();
    let progress = Arc::new(Progress::default());
    let to_run: Vec<usize> = (0..total)
        .filter(|&i| slots.lock().unwrap_or_else(|e| e.into_inner())[i].is_none())
        .collect();
    progress.queued.store(to_run.len(), Ordering::SeqCst);
    let mut handles = Vec::new();
    for i in to_run {
        let file = files[i].clone();
        let (cache, opts, slots, progress) =
            (cache.clone(), opts.clone(), slots.clone(), progress.clone());
        // Admitted before spawning, so scenarios start in the order given. A file that does
        // not load asks for the least; its run reports why it did not load.
        let admission = budget.admit(demand(&file)).await;
        progress.queued.fetch_sub(1, Ordering::SeqCst);
        progress.running.fetch_add(1, Ordering::SeqCst);
        handles.push(tokio::spawn(async move {
            let _admission = admission;
            eprintln!(
                "[{}/{total}] {} … ({})",
                i + 1,
                file.display(),
                progress.line()
            );
            let out = run::run_file(&file, &cache, &opts).await;
            progress.running.fetch_sub(1, Ordering::SeqCst);
            let r = &out.report;
            eprintln!(
                "[{}/{total}] {} {:?} ({:.1} s){}{}{} ({})",
                i + 1,
                r.name,
                r.verdict,
                r.duration_s,
                r.reason
                    .as_deref()
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default(),
                r.tdx_events
                    .as_ref()
                    .map(|t| format!("; TDX events: {}", t.summary()))
                    .unwrap_or_default(),
                report::predictor_summary(r),
                progress.line()
            );
            for note in r.notes.iter().filter(|n| is_shown_note(n)) {
                eprintln!("    {note}");
            }
            slots.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(out.report);
        }));
    }
    for h in handles {
        if let Err(e) = h.await {
            eprintln!("mrlab: a scenario task failed: {e}");
        }
    }
}

/// Scenarios booting now and waiting for their share of the budget, for the progress lines.
#[derive(Default)]
struct Progress {
    running: AtomicUsize,
    queued: AtomicUsize,
}

impl Progress {
    fn line(&self) -> String {
        format!(
            "{} running, {} queued",
            self.running.load(Ordering::SeqCst),
            self.queued.load(Ordering::SeqCst)
        )
    }
}

/// The scenario's vCPUs and guest memory; the least (one vCPU, no memory) for a file that
/// does not load.
fn demand(file: &Path) -> Demand {
    mrlab::scenario::Scenario::load(file).map_or(Demand { cpus: 1, memory: 0 }, |s| Demand {
        cpus: s.cpus,
        memory: s.memory,
    })
}

fn write_opt(path: &Option<PathBuf>, text: &str) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    Ok(())
}

/// Files as given; folders expand to their `*.toml`, sorted.
pub fn scenario_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            found.sort();
            if found.is_empty() {
                anyhow::bail!("{}: no *.toml scenarios in this folder", p.display());
            }
            out.extend(found);
        } else if Path::new(p).is_file() {
            out.push(p.clone());
        } else {
            anyhow::bail!("{}: no such scenario file or folder", p.display());
        }
    }
    Ok(out)
}
