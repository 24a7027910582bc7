//! One scenario, end to end: resolve → oracle → predict → boot → evidence → compare → report.
//!
//! Every failure becomes a report with verdict `error` and a reason naming what broke; nothing
//! here panics on bad input, and every process and temp dir belongs to a value that cleans up
//! on drop.

use crate::judge::{judgement, Judgement};
use crate::prepare::{prepare_resolved, Prepared};
use crate::recorded::save_evidence;
use crate::report::{ScenarioReport, Verdict};
use crate::resolve;
use crate::scenario::Scenario;
use measure::predict::Prediction;
use measure::Platform;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a scenario's run ended before its judgement: the results folder, a lower stage, the
/// boot or the serial log's record. A report shows it as its reason ([`crate::error::chain`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{}: cannot {action} the results folder", .dir.display())]
    Folder {
        dir: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Boxed: a resolve error is the largest by far.
    #[error(transparent)]
    Resolve(Box<resolve::ResolveError>),
    #[error(transparent)]
    Prepare(#[from] crate::prepare::PrepareError),
    #[error("waiting for a turn to prepare")]
    Turn(#[source] tokio::sync::AcquireError),
    #[error("boot")]
    Boot(#[source] qemu::boot::BootError),
    #[error("evidence record in serial.log")]
    Record(#[source] agent::record::RecordError),
    #[error(transparent)]
    Evidence(#[from] crate::recorded::EvidenceError),
    #[error(transparent)]
    Judge(#[from] crate::judge::JudgeError),
}

impl From<resolve::ResolveError> for RunError {
    fn from(e: resolve::ResolveError) -> RunError {
        RunError::Resolve(Box::new(e))
    }
}

pub struct Options {
    /// Where each scenario's folder (report.json, serial.log, run.sh, evidence/) goes.
    pub results: PathBuf,
    /// vtpm: `accel` with a swtpm; tdx: a TD under KVM on a TDX host.
    pub platform: Platform,
    pub accel: qemu::argv::Accel,
    /// External predictors, each compared with the builtin TD prediction (`--predictor`).
    pub predictors: Vec<crate::predictors::Predictor>,
}

/// Everything a run produced, for the report and for tests.
pub struct Outcomes {
    pub report: ScenarioReport,
    pub prediction: Option<Prediction>,
}

/// Run one scenario file. Never panics; errors become `Verdict::Error` reports.
pub async fn run_file(path: &Path, cache: &images::Cache, opts: &Options) -> Outcomes {
    let started = Instant::now();
    let file = path.display().to_string();
    let scenario = match Scenario::load(path) {
        Ok(s) => s,
        Err(e) => {
            let name = path
                .file_stem()
                .map_or(file.clone(), |s| s.to_string_lossy().into_owned());
            return Outcomes {
                report: ScenarioReport::error(
                    &name,
                    &file,
                    backend_name(opts),
                    crate::error::chain(&e),
                    started.elapsed().as_secs_f64(),
                ),
                prediction: None,
            };
        }
    };
    run_scenario(&scenario, &file, cache, opts).await
}

pub async fn run_scenario(
    scenario: &Scenario,
    file: &str,
    cache: &images::Cache,
    opts: &Options,
) -> Outcomes {
    let started = Instant::now();
    let dir = opts.results.join(&scenario.name);
    // A fresh folder: nothing of an earlier run may sit beside this run's report.
    let result = match empty_folder(&dir) {
        Ok(()) => run_inner(scenario, file, cache, opts, &dir, started).await,
        Err(e) => Err(e),
    };
    let (mut report, prediction) = match result {
        Ok(ok) => ok,
        // Its QEMU was killed because mrlab was signalled: say so, not what the kill caused.
        Err(e) if qemu::process::terminating() => (
            ScenarioReport::error(
                &scenario.name,
                file,
                backend_name(opts),
                format!(
                    "interrupted (mrlab was signalled) before it finished; then: {}",
                    crate::error::chain(&e)
                ),
                0.0,
            ),
            None,
        ),
        Err(e) => (
            ScenarioReport::error(
                &scenario.name,
                file,
                backend_name(opts),
                crate::error::chain(&e),
                0.0,
            ),
            None,
        ),
    };
    report.duration_s = started.elapsed().as_secs_f64();
    let path = dir.join("report.json");
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, crate::report::json(std::slice::from_ref(&report))))
    {
        // A result that cannot be written is no result: whatever the verdict was, it is an error.
        if let Some(was) = report.reason.take() {
            report.notes.push(format!("before the write failed: {was}"));
        }
        report.verdict = Verdict::Error;
        report.reason = Some(format!("{}: cannot write the report: {e}", path.display()));
    }
    Outcomes { report, prediction }
}

/// Removes `dir` with what an earlier run left in it, and makes it again, empty.
fn empty_folder(dir: &Path) -> Result<(), RunError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(folder_error(dir, "empty")(source)),
    }
    std::fs::create_dir_all(dir).map_err(folder_error(dir, "create"))
}

fn folder_error(dir: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> RunError {
    let dir = dir.to_owned();
    move |source| RunError::Folder {
        dir,
        action,
        source,
    }
}

async fn run_inner(
    scenario: &Scenario,
    file: &str,
    cache: &images::Cache,
    opts: &Options,
    dir: &Path,
    started: Instant,
) -> Result<(ScenarioReport, Option<Prediction>), RunError> {
    let resolved = resolve::resolve(scenario, cache, opts.platform == Platform::Vtpm)?;
    if let Some(why) = resolved.vm.unsupported_reason() {
        let mut r = ScenarioReport::error(&scenario.name, file, backend_name(opts), why, 0.0);
        r.verdict = Verdict::Skip;
        return Ok((r, None));
    }
    std::fs::create_dir_all(dir).map_err(folder_error(dir, "create"))?;

    // Boot. The run dir (sockets, swtpm state) is a short private dir under the system temp
    // dir, removed on every path; its logs and run.sh land in the results folder, a failed
    // boot's too, for a human.
    let options = qemu::boot::BootOptions {
        timeout: Duration::from_secs(scenario.timeout_s),
        save_logs_to: Some(dir.to_path_buf()),
        qemu_binary: resolved.qemu_binary.clone(),
        temp_root: None,
        swtpm_states: Some(cache.root().join("swtpm")),
    };
    let backend = boot_backend(opts, &resolved.quirks);
    let mut retried = None;
    let vm = resolved.vm.clone();
    let boot = boot_retrying_once(&vm, &backend, &options, &mut retried);
    // The guest boots while the oracle runs and the prediction is made: neither needs the
    // other until the judging. A failed prediction stops the boot (dropping it kills QEMU).
    let prepare = async {
        // One preparation at a time among the scenarios that run at once: each holds its
        // oracle dump, firmware and kernel (20 to 40 MiB) for well under a second, beside a
        // boot that takes ten, so waiting its turn costs no wall time and keeps the peak memory
        // of `mrlab run` at one such set.
        static PREPARING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
        let turn = PREPARING.acquire().await.map_err(RunError::Turn)?;
        let mut prepared = prepare_resolved(resolved, opts.platform).await?;
        // External predictors read the whole oracle after the boot; the judges only a few files.
        if opts.predictors.is_empty() {
            crate::judge::keep_judged_oracle_files(&mut prepared);
        }
        drop(turn);
        Ok::<_, RunError>(prepared)
    };
    let (prepared, serial) = tokio::try_join!(prepare, boot)?;

    let mut report = match opts.platform {
        Platform::Vtpm => {
            let judgement = judgement_of_serial(&prepared, file, &serial, dir)?;
            let rows = if opts.predictors.is_empty() {
                Vec::new()
            } else {
                crate::predictors::vs_builtin(&opts.predictors, scenario, cache, dir).await
            };
            judgement.with_predictors(rows).report()
        }
        Platform::Tdx => judge_td(&prepared, file, &serial, dir, &opts.predictors).await?,
    };
    report.notes.extend(retried);
    report.notes.extend(cmdline_truncated(&serial));
    report.duration_s = started.elapsed().as_secs_f64();
    Ok((report, Some(prepared.prediction)))
}

/// Boot `vm` to its serial output. An infrastructure failure (no run dir, swtpm or QMP
/// trouble) gets one more try, noted in `retried`; a guest that boots and then disagrees with
/// the prediction never does.
async fn boot_retrying_once(
    vm: &qemu::vm::Vm,
    backend: &qemu::argv::Backend,
    options: &qemu::boot::BootOptions,
    retried: &mut Option<String>,
) -> Result<Vec<u8>, RunError> {
    match qemu::boot::boot(vm, backend, options).await {
        Err(e) if is_infrastructure(&e) => {
            *retried = Some(format!(
                "retried once after an infrastructure failure: {}",
                crate::error::chain(&e)
            ));
            qemu::boot::boot(vm, backend, options).await
        }
        other => other,
    }
    .map(|boot| boot.serial)
    .map_err(RunError::Boot)
}

/// The QEMU backend of a run on `opts.platform`: a TD's flavour of QEMU options from the quirks.
fn boot_backend(opts: &Options, quirks: &measure::quirks::Quirks) -> qemu::argv::Backend {
    match opts.platform {
        Platform::Vtpm => qemu::argv::Backend::Vtpm { accel: opts.accel },
        Platform::Tdx => qemu::argv::Backend::Tdx {
            flavour: if quirks.tdx_named_memory_backend {
                qemu::argv::TdxFlavour::Canonical82
            } else {
                qemu::argv::TdxFlavour::Upstream
            },
        },
    }
}

/// The report's `backend` for a run on `opts.platform`.
pub fn backend_name(opts: &Options) -> &'static str {
    match opts.platform {
        Platform::Vtpm => "vtpm",
        Platform::Tdx => "tdx",
    }
}

/// Judge a TD's serial output with the TD judge ([`judgement_of_serial`]), then external predictors against
/// the registers the TD reported.
async fn judge_td(
    prepared: &Prepared,
    file: &str,
    serial: &[u8],
    dir: &Path,
    predictors: &[crate::predictors::Predictor],
) -> Result<ScenarioReport, RunError> {
    let judgement = judgement_of_serial(prepared, file, serial, dir)?;
    if predictors.is_empty() {
        return Ok(judgement.report());
    }
    let record = agent::record::decode(serial).map_err(RunError::Record)?;
    let td = crate::recorded::TdEvidence::from_record(&record)?;
    let label = format!("actual ({})", td.source);
    let rows = crate::predictors::check_all(
        predictors,
        prepared,
        prepared.resolved.quirks.mrtd_page_order,
        &td.registers,
        &label,
        &dir.join("predictors"),
    )
    .await;
    Ok(judgement.with_predictors(rows).report())
}

/// Why this host cannot run TDs, if it cannot: KVM and the kvm_intel `tdx` parameter, read from
/// `root` (`/` on a real host).
pub fn tdx_host_problem(root: &Path) -> Option<String> {
    let kvm = root.join("dev/kvm");
    if !kvm.exists() {
        return Some(format!("{} is absent: no KVM on this host", kvm.display()));
    }
    let param = root.join("sys/module/kvm_intel/parameters/tdx");
    match std::fs::read_to_string(&param) {
        Ok(v) if matches!(v.trim(), "Y" | "y" | "1") => None,
        Ok(v) => Some(format!(
            "{} is {:?}: TDX is not enabled in kvm_intel (load it with tdx=1 on a TDX-capable host)",
            param.display(),
            v.trim()
        )),
        Err(e) => Some(format!(
            "{}: {e}: kvm_intel without TDX support (a TDX host kernel is needed)",
            param.display()
        )),
    }
}

/// A warning when the guest's serial log shows the Linux EFI stub cutting the command line (it
/// prints "Command line is too long" and boots with the cut one): the measured LoadOptions
/// still hold the whole line, so the run can pass while the kernel saw less.
pub fn cmdline_truncated(serial: &[u8]) -> Option<String> {
    const STUB_SAYS: &[u8] = b"Command line is too long";
    let at = serial
        .windows(STUB_SAYS.len())
        .position(|w| w == STUB_SAYS)?;
    let line_end = serial[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(serial.len(), |n| at + n);
    let line = qemu::boot::printable(&String::from_utf8_lossy(&serial[at..line_end]));
    Some(format!(
        "warning: the kernel's EFI stub truncated the command line (serial.log: \"{}\"); the \
         measurement holds the whole line, the kernel ran with less",
        line.trim()
    ))
}

/// Failures of the host side, not of the guest: worth one retry.
fn is_infrastructure(e: &qemu::boot::BootError) -> bool {
    use qemu::boot::BootError::*;
    match e {
        RunDir(_)
        | Spawn { .. }
        | Swtpm(_)
        | SwtpmDied { .. }
        | VsockDaemon { .. }
        | Qmp { .. } => true,
        // Linux's timer check fails when TCG on a loaded host delivers the first PIT ticks
        // late (seen here with several TCG guests on 2 cores): the host's doing, not the VM's.
        KernelPanic { line, .. } => line.contains("IO-APIC + timer doesn't work"),
        _ => false,
    }
}

/// Judge a guest's serial output against the prepared prediction: decode the evidence record,
/// save it under `dir/evidence`, compare ([`judgement`]).
fn judgement_of_serial(
    prepared: &Prepared,
    file: &str,
    serial: &[u8],
    dir: &Path,
) -> Result<Judgement, RunError> {
    let record = agent::record::decode(serial).map_err(RunError::Record)?;
    save_evidence(dir, &record)?;
    Ok(judgement(prepared, file, &record)?)
}

/// [`judgement_of_serial`] without external predictors: the report with its verdict.
pub fn judge(
    prepared: &Prepared,
    file: &str,
    serial: &[u8],
    dir: &Path,
) -> Result<ScenarioReport, RunError> {
    judgement_of_serial(prepared, file, serial, dir).map(Judgement::report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_command_line_is_a_warning() {
        assert_eq!(cmdline_truncated(b"EFI stub: Loaded initrd\r\n"), None);
        let serial =
            b"EFI stub: WARNING: Command line is too long: truncated to 2047 bytes\r\nLinux";
        assert_eq!(
            cmdline_truncated(serial).as_deref(),
            Some(
                "warning: the kernel's EFI stub truncated the command line (serial.log: \"Command \
                 line is too long: truncated to 2047 bytes\"); the measurement holds the whole \
                 line, the kernel ran with less"
            )
        );
    }

    #[test]
    fn tdx_host_problem_names_what_is_missing() {
        let root = tempfile::tempdir().unwrap();
        let why = tdx_host_problem(root.path()).unwrap();
        assert!(why.contains("dev/kvm is absent"), "{why}");

        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        std::fs::write(root.path().join("dev/kvm"), "").unwrap();
        let why = tdx_host_problem(root.path()).unwrap();
        assert!(why.contains("kvm_intel without TDX support"), "{why}");

        let params = root.path().join("sys/module/kvm_intel/parameters");
        std::fs::create_dir_all(&params).unwrap();
        std::fs::write(params.join("tdx"), "N\n").unwrap();
        let why = tdx_host_problem(root.path()).unwrap();
        assert!(why.contains("is \"N\": TDX is not enabled"), "{why}");

        std::fs::write(params.join("tdx"), "Y\n").unwrap();
        assert_eq!(tdx_host_problem(root.path()), None);
    }
}
