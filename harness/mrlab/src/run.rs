//! One scenario, end to end: resolve → oracle → predict → boot → evidence → compare → report.
//!
//! Every failure becomes a report with verdict `error` and a reason naming what broke; nothing
//! here panics on bad input, and every process and temp dir belongs to a value that cleans up
//! on drop.

use crate::compare::{self, Alignment, Outcome};
use crate::input::{read, DISK, IMAGE};
use crate::report::{
    Divergence, EventRow, NotCheckable, RegisterRow, ScenarioReport, TdxEvents, UnpredictedPcr,
    Verdict,
};
use crate::resolve::{self, Resolved};
use crate::scenario::Scenario;
use measure::predict::{self, Boot, KernelBoot, Prediction, UkiBoot};
use measure::{Event, Platform};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// fw_cfg files the guest must read exactly as the oracle serves them (ACPI and boot order).
pub const CROSS_CHECKED_FW_CFG: &[&str] = &[
    "etc/acpi/rsdp",
    "etc/acpi/tables",
    "etc/table-loader",
    "bootorder",
];

pub struct Options {
    /// Where each scenario's folder (report.json, serial.log, run.sh, evidence/) goes.
    pub results: PathBuf,
    /// vtpm: `accel` with a swtpm; tdx: a TD under KVM on a TDX host.
    pub platform: Platform,
    pub accel: qemu::argv::Accel,
    /// External predictors, each compared with the builtin TD prediction (`--predictor`).
    pub predictors: Vec<crate::predictor::Predictor>,
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
                    e.to_string(),
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
        Err(reason) if qemu::process::terminating() => (
            ScenarioReport::error(
                &scenario.name,
                file,
                backend_name(opts),
                format!("interrupted (mrlab was signalled) before it finished; then: {reason}"),
                0.0,
            ),
            None,
        ),
        Err(reason) => (
            ScenarioReport::error(&scenario.name, file, backend_name(opts), reason, 0.0),
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
fn empty_folder(dir: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "{}: cannot empty the results folder: {e}",
                dir.display()
            ))
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create the results folder: {e}", dir.display()))
}

/// A scenario ready to boot: its VM, the oracle's fw_cfg dump and the prediction.
pub struct Prepared {
    pub resolved: Resolved,
    pub oracle: BTreeMap<String, Vec<u8>>,
    pub prediction: Prediction,
    /// The events of this VM's TD prediction, which the report counts (the same events as
    /// `prediction` when preparing a TD), or why there is none (firmware without TDVF metadata).
    /// For a vTPM VM it is made from the vTPM VM's own fw_cfg, whose ACPI holds a TPM device:
    /// the events and labels are the TD's, an ACPI digest may not be.
    pub td_events: Result<Vec<Event>, String>,
}

/// Resolve, ask the oracle, predict for `platform` (a vTPM VM has a TPM device, which changes
/// ACPI; a TD has none). No guest runs, so a VM this host could not run (e.g. a TD's
/// vhost-vsock without `/dev/vhost-vsock`) is still predicted: the oracle stands in for what it
/// cannot start, and a prediction or an offline diagnosis needs no more.
pub async fn prepare(
    scenario: &Scenario,
    cache: &images::Cache,
    platform: Platform,
) -> Result<Box<Prepared>, String> {
    let resolved =
        resolve::resolve(scenario, cache, platform == Platform::Vtpm).map_err(|e| e.to_string())?;
    prepare_resolved(resolved, platform).await
}

/// [`prepare`] of a scenario already resolved: the oracle and the prediction, which a boot of
/// the same VM does not need, so `mrlab run` boots it meanwhile.
pub async fn prepare_resolved(
    resolved: Resolved,
    platform: Platform,
) -> Result<Box<Prepared>, String> {
    // The oracle: every fw_cfg file of this very VM, from the same QEMU binary. The initrd is
    // hashed meanwhile, once for both predictions below.
    let oracle =
        qemu::fwcfg::dump_fw_cfg(&resolved.vm, &resolved.qemu_binary, firmware_pci(&resolved));
    let (oracle, initrd) = tokio::join!(oracle, initrd_digests(&resolved));
    let oracle = oracle.map_err(|e| e.to_string())?;
    prepared_from(resolved, oracle, initrd?, platform)
}

/// The prediction of a resolved VM from its fw_cfg files (the oracle's, or a snapshot's) and
/// its initrd's digests (read once for both predictions).
pub fn prepared_from(
    resolved: Resolved,
    oracle: BTreeMap<String, Vec<u8>>,
    initrd: Option<measure::Digests>,
    platform: Platform,
) -> Result<Box<Prepared>, String> {
    let prediction = predict_for(&resolved, &oracle, initrd.as_ref(), platform)?;
    let td_events = match platform {
        Platform::Tdx => Ok(prediction.events.clone()),
        // The vTPM VM's TPM device adds the `etc/tpm/log` ACPI blob, which a TD does not have.
        Platform::Vtpm => {
            predict_for(&resolved, &oracle, initrd.as_ref(), Platform::Tdx).map(|p| {
                p.events
                    .into_iter()
                    .filter(|e| e.label != TPM_LOG_ACPI_EVENT)
                    .collect()
            })
        }
    };
    Ok(Box::new(Prepared {
        resolved,
        oracle,
        prediction,
        td_events,
    }))
}

/// The ACPI event of the blob the vTPM VM's TPM device adds (`etc/tpm/log`).
const TPM_LOG_ACPI_EVENT: &str = "acpi:etc/tpm/log";

/// The chipset values the scenario's firmware programs before reading ACPI (its PCIEXBAR).
pub fn firmware_pci(resolved: &Resolved) -> qemu::fwcfg::FirmwarePci {
    match resolved.ovmf_version {
        Some(v) if v >= measure::quirks::Version(2023, 0) => qemu::fwcfg::FirmwarePci::OVMF_2025_02,
        _ => qemu::fwcfg::FirmwarePci::OVMF_2022_11,
    }
}

async fn run_inner(
    scenario: &Scenario,
    file: &str,
    cache: &images::Cache,
    opts: &Options,
    dir: &Path,
    started: Instant,
) -> Result<(ScenarioReport, Option<Prediction>), String> {
    let resolved = resolve::resolve(scenario, cache, opts.platform == Platform::Vtpm)
        .map_err(|e| e.to_string())?;
    if let Some(why) = resolved.vm.unsupported_reason() {
        let mut r = ScenarioReport::error(&scenario.name, file, backend_name(opts), why, 0.0);
        r.verdict = Verdict::Skip;
        return Ok((r, None));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create results folder: {e}", dir.display()))?;

    // Boot. The run dir (sockets, swtpm state) is a short private dir under the system temp
    // dir, removed on every path; its logs and run.sh land in the results folder, a failed
    // boot's too, for a human.
    let options = qemu::boot::BootOptions {
        timeout: Duration::from_secs(scenario.timeout_s),
        save_logs_to: Some(dir.to_path_buf()),
        qemu_binary: resolved.qemu_binary.clone(),
        temp_root: None,
    };
    let quirks = &resolved.quirks;
    let backend = match opts.platform {
        Platform::Vtpm => qemu::argv::Backend::Vtpm { accel: opts.accel },
        Platform::Tdx => qemu::argv::Backend::Tdx {
            flavour: if quirks.tdx_named_memory_backend {
                qemu::argv::TdxFlavour::Canonical82
            } else {
                qemu::argv::TdxFlavour::Upstream
            },
        },
    };
    // An infrastructure failure (no run dir, swtpm or QMP trouble) gets one more try; a guest
    // that boots and then disagrees with the prediction never does.
    let mut retried = None;
    let vm = resolved.vm.clone();
    let boot = async {
        match qemu::boot::boot(&vm, &backend, &options).await {
            Err(e) if is_infrastructure(&e) => {
                retried = Some(format!("retried once after an infrastructure failure: {e}"));
                qemu::boot::boot(&vm, &backend, &options).await
            }
            other => other,
        }
        .map(|boot| boot.serial)
        .map_err(|e| format!("boot: {e}"))
    };
    // The guest boots while the oracle runs and the prediction is made: neither needs the
    // other until the judging. A failed prediction stops the boot (dropping it kills QEMU).
    let (prepared, serial) = tokio::try_join!(prepare_resolved(resolved, opts.platform), boot)?;

    let mut report = match opts.platform {
        Platform::Vtpm => {
            let mut report = judge(&prepared, file, &serial, dir)?;
            if !opts.predictors.is_empty() {
                let predictors =
                    crate::predictor::vs_builtin(&opts.predictors, scenario, cache, dir).await;
                crate::predictor::apply(&mut report, predictors);
            }
            report
        }
        Platform::Tdx => judge_td(&prepared, file, &serial, dir, &opts.predictors).await?,
    };
    report.notes.extend(retried);
    report.notes.extend(cmdline_truncated(&serial));
    report.duration_s = started.elapsed().as_secs_f64();
    Ok((report, Some(prepared.prediction)))
}

/// The report's `backend` for a run on `opts.platform`.
pub fn backend_name(opts: &Options) -> &'static str {
    match opts.platform {
        Platform::Vtpm => "vtpm",
        Platform::Tdx => "tdx",
    }
}

/// Judge a TD's serial output with the TD judge ([`judge`]), then external predictors against
/// the registers the TD reported.
async fn judge_td(
    prepared: &Prepared,
    file: &str,
    serial: &[u8],
    dir: &Path,
    predictors: &[crate::predictor::Predictor],
) -> Result<ScenarioReport, String> {
    let mut report = judge(prepared, file, serial, dir)?;
    if !predictors.is_empty() {
        let record = agent::record::decode(serial)
            .map_err(|e| format!("evidence record in serial.log: {e}"))?;
        let td = crate::diagnose::TdEvidence::from_record(&record)?;
        let actual = crate::predictor::TdRegisters {
            mrtd: td.mrtd,
            rtmr: [td.rtmrs[0], td.rtmrs[1], td.rtmrs[2]],
            rtmr3: Some(td.rtmrs[3]),
        };
        let label = format!("actual ({})", td.source);
        let rows = crate::predictor::check_all(
            predictors,
            prepared,
            prepared.resolved.quirks.mrtd_page_order,
            &actual,
            &label,
            &dir.join("predictors"),
        )
        .await;
        crate::predictor::apply(&mut report, rows);
    }
    Ok(report)
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
/// save it under `dir/evidence`, compare ([`judge_record`]).
pub fn judge(
    prepared: &Prepared,
    file: &str,
    serial: &[u8],
    dir: &Path,
) -> Result<ScenarioReport, String> {
    let record =
        agent::record::decode(serial).map_err(|e| format!("evidence record in serial.log: {e}"))?;
    save_evidence(dir, &record)?;
    judge_record(prepared, file, &record)
}

/// Judge an evidence record (decoded from a serial log, or read back from a results folder) by
/// the platform it was predicted for: a vTPM guest's TPM log, PCRs and fw_cfg blobs; a TD's
/// CCEL and registers (quote, else TDREPORT), with the MRTD page order of the VM's QEMU.
pub fn judge_record(
    prepared: &Prepared,
    file: &str,
    record: &agent::record::Record,
) -> Result<ScenarioReport, String> {
    match prepared.prediction.platform {
        Platform::Vtpm => compare_vtpm(prepared, file, record),
        Platform::Tdx => {
            let td = crate::diagnose::TdEvidence::from_record(record)?;
            crate::diagnose::diagnose_td(
                prepared,
                file,
                &td,
                prepared.resolved.quirks.mrtd_page_order,
            )
        }
    }
}

/// The digests of a `-kernel` boot's initrd, read and hashed on a blocking thread so that it
/// overlaps the fw_cfg oracle's QEMU.
async fn initrd_digests(resolved: &Resolved) -> Result<Option<measure::Digests>, String> {
    let vm = resolved.vm.clone();
    tokio::task::spawn_blocking(move || read_initrd_digests(&vm))
        .await
        .map_err(|e| format!("hashing the initrd: {e}"))?
}

/// Both banks' digests of the `-kernel` initrd, if the VM has one.
pub fn read_initrd_digests(vm: &qemu::Vm) -> Result<Option<measure::Digests>, String> {
    match &vm.boot {
        qemu::vm::Boot::Kernel {
            initrd: Some(path), ..
        } => read(path, DISK).map(|b| Some(measure::Digests::of(&b))),
        _ => Ok(None),
    }
}

/// QEMU's SMBIOS structures in fw_cfg, which OVMF installs (and, from 2025.05, measures).
const SMBIOS_TABLES: &str = "etc/smbios/smbios-tables";

/// The prediction for this VM: oracle blobs, the kernel as QEMU hands it to the firmware, and
/// the initrd's digests ([`initrd_digests`]) for a `-kernel` boot.
pub fn predict_for(
    resolved: &Resolved,
    oracle: &BTreeMap<String, Vec<u8>>,
    initrd: Option<&measure::Digests>,
    platform: Platform,
) -> Result<Prediction, String> {
    let firmware = crate::input::read(&resolved.vm.firmware, crate::input::FIRMWARE)?;
    let acpi_blobs = measure::acpi::measured_blobs(oracle);
    let roms: Vec<(String, Vec<u8>)> = resolved
        .option_roms
        .iter()
        .map(|(label, path)| read(path, IMAGE).map(|bytes| (label.clone(), bytes)))
        .collect::<Result<_, _>>()?;
    let option_roms: Vec<(String, &[u8])> = roms
        .iter()
        .map(|(l, b)| (l.clone(), b.as_slice()))
        .collect();
    let cmdline_override = resolved.scenario.predict.cmdline.as_deref();
    let predict = |boot| {
        let inputs = predict::Inputs {
            platform,
            quirks: &resolved.quirks,
            firmware: &firmware,
            memory: resolved.vm.memory,
            acpi_blobs: acpi_blobs.clone(),
            option_roms: option_roms.clone(),
            fw_cfg_files: oracle,
            fw_cfg_boot_menu: oracle.get(qemu::fwcfg::BOOT_MENU_ITEM).map(Vec::as_slice),
            smbios_tables: oracle.get(SMBIOS_TABLES).map(Vec::as_slice),
            firmware_strings: resolved.firmware_strings.as_ref(),
            boot,
        };
        predict::predict(&inputs).map_err(|e| format!("prediction: {e}"))
    };
    match (&resolved.vm.boot, &resolved.uki) {
        (qemu::vm::Boot::Kernel { cmdline, .. }, _) => {
            let kernel = kernel_as_measured(resolved, oracle, platform)?;
            predict(Boot::Kernel(KernelBoot {
                kernel: &kernel,
                initrd,
                cmdline: cmdline_override.unwrap_or(cmdline),
            }))
        }
        (qemu::vm::Boot::Disk, Some(uki)) => {
            let disk = read(&uki.disk, DISK)?;
            let bootloader = read(&uki.bootloader, IMAGE)?;
            let image = read(&uki.uki, IMAGE)?;
            predict(Boot::Uki(UkiBoot {
                disk: &disk,
                block_size: 512,
                disk_pci: uki.disk_pci.clone(),
                other_disks_pci: uki.other_disks_pci.clone(),
                nics: uki.nics.clone(),
                bootloader: &bootloader,
                loader_conf: uki.loader_conf.as_deref().map(str::as_bytes),
                uki: &image,
                cmdline_override,
            }))
        }
        (qemu::vm::Boot::Disk, None) => {
            Err("disk boot without a UKI the harness built is not predicted".into())
        }
    }
}

/// The `-kernel` image OVMF loads and measures: QEMU's patched setup ‖ kernel items, or the
/// unpatched `etc/boot/kernel` file when this QEMU serves it and this OVMF prefers it (quirks
/// `qemu-boot-kernel-file`, `ovmf-boot-kernel-file-preferred`). The oracle must agree with the
/// QEMU row: a file the version says is absent (or the reverse) is an error, not a guess.
fn kernel_as_measured(
    resolved: &Resolved,
    oracle: &BTreeMap<String, Vec<u8>>,
    platform: Platform,
) -> Result<Vec<u8>, String> {
    let served = oracle.get(qemu::fwcfg::BOOT_KERNEL_FILE);
    if served.is_some() != resolved.quirks.qemu_serves_unpatched_kernel {
        return Err(format!(
            "fw_cfg oracle: QEMU {} {} {}, but quirk qemu-boot-kernel-file expects {}",
            resolved
                .qemu_version
                .map_or("(unknown version)".into(), |v| v.to_string()),
            if served.is_some() {
                "serves"
            } else {
                "does not serve"
            },
            qemu::fwcfg::BOOT_KERNEL_FILE,
            if resolved.quirks.qemu_serves_unpatched_kernel {
                "it"
            } else {
                "none"
            },
        ));
    }
    match served {
        Some(kernel) if resolved.quirks.kernel_measured_unpatched_on(platform) => {
            Ok(kernel.clone())
        }
        _ => qemu::fwcfg::kernel_as_loaded(oracle).map_err(|e| format!("fw_cfg oracle: {e}")),
    }
}

/// Writes each evidence entry to `dir/evidence/<name>`. The names come from the guest: one that
/// is not a plain relative path (absolute, `..`, `.`) is refused, not written.
fn save_evidence(dir: &Path, record: &agent::record::Record) -> Result<(), String> {
    use std::path::Component;
    let base = dir.join("evidence");
    for (name, data) in &record.entries {
        let relative = Path::new(name);
        if name.is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(format!(
                "evidence record: entry name {name:?} is not a plain relative path"
            ));
        }
        let path = base.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("{}: cannot save evidence: {e}", parent.display()))?;
        }
        std::fs::write(&path, data)
            .map_err(|e| format!("{}: cannot save evidence: {e}", path.display()))?;
    }
    Ok(())
}

/// PCR values as the guest's sysfs gave them (`tpm/pcr-<bank>/<n>`, hex text).
fn sysfs_pcr(record: &agent::record::Record, bank: &str, pcr: u32) -> Result<Vec<u8>, String> {
    let name = format!("tpm/pcr-{bank}/{pcr}");
    let text = record
        .get(&name)
        .ok_or_else(|| format!("evidence record has no {name}"))?;
    hex::decode(String::from_utf8_lossy(text).trim()).map_err(|e| format!("{name}: not hex: {e}"))
}

const IMA_PCR: u32 = 10;

/// Compare a vTPM boot's evidence with the prediction.
fn compare_vtpm(
    prepared: &Prepared,
    file: &str,
    record: &agent::record::Record,
) -> Result<ScenarioReport, String> {
    let (scenario, resolved, prediction, oracle) = (
        &prepared.resolved.scenario,
        &prepared.resolved,
        &prepared.prediction,
        &prepared.oracle,
    );
    let mut notes = Vec::new();
    for e in record.errors() {
        notes.push(format!("agent: {e}"));
    }
    let log_bytes = record.get("tpm/binary_bios_measurements").ok_or(
        "evidence record has no tpm/binary_bios_measurements: the guest saw no TPM event log",
    )?;
    let log = evidence::log::parse(log_bytes, evidence::log::Format::Tcg2)
        .map_err(|e| format!("evidence/tpm/binary_bios_measurements: {e}"))?;
    // Every event of the log is judged but those the prediction declares it does not model.
    let actual: Vec<Event> = log
        .measure_events()
        .into_iter()
        .filter(|e| prediction.judges(e))
        .collect();

    // Integrity: the log must replay to the PCRs the TPM reports.
    let mut problems = Vec::new();
    for bank in log.replay_pcrs() {
        let name = match bank.alg.name().as_str() {
            "sha256" => "sha256",
            "sha384" => "sha384",
            _ => continue,
        };
        // PCR10 belongs to the kernel's IMA, which logs to its own list, not the firmware log.
        for pcr in (0..16u32).filter(|&p| p != IMA_PCR) {
            let reported = sysfs_pcr(record, name, pcr)?;
            if reported != bank.pcrs[pcr as usize] {
                problems.push(format!(
                    "event log does not replay to the TPM's PCR{pcr} ({name}): log {} vs TPM {}",
                    hex::encode(&bank.pcrs[pcr as usize]),
                    hex::encode(&reported)
                ));
            }
        }
    }

    let judged_pcrs = prediction
        .full_pcrs
        .iter()
        .copied()
        .chain(prediction.unpredicted.iter().map(|u| u.pcr))
        .collect();
    let alignment = compare::align(&prediction.events, &actual, &judged_pcrs);
    let counts = alignment.counts();

    // Registers: every fully predicted PCR, folded from predicted events (zero when none lands
    // in it), against the TPM.
    let mut registers = Vec::new();
    for &pcr in &prediction.full_pcrs {
        for bank in ["sha256", "sha384"] {
            let predicted = fold_pcr(&prediction.events, pcr, bank);
            let actual = sysfs_pcr(record, bank, pcr)?;
            registers.push(RegisterRow {
                name: format!("pcr{pcr}:{bank}"),
                matches: predicted == actual,
                predicted: Some(hex::encode(&predicted)),
                actual: Some(hex::encode(&actual)),
            });
        }
    }

    // ACPI and boot order: the oracle's bytes must be what the guest read.
    let mut acpi_blobs = Vec::new();
    for name in CROSS_CHECKED_FW_CFG {
        let predicted = oracle.get(*name);
        let actual = record.get(&format!("fw_cfg/{name}"));
        acpi_blobs.push(RegisterRow {
            name: name.to_string(),
            predicted: predicted.map(|b| sha384_hex(b)),
            actual: actual.map(sha384_hex),
            matches: predicted.is_some()
                && actual.is_some()
                && predicted.map(Vec::as_slice) == actual,
        });
    }

    let tdx_events = match &prepared.td_events {
        Ok(td_events) => Some(tdx_events(td_events, prediction, &alignment)),
        Err(e) => {
            notes.push(format!("no TD prediction to count TD events against: {e}"));
            None
        }
    };

    let first_divergence = alignment
        .first_divergence()
        .map(|d| divergence(d, &prediction.events, &actual));
    let registers_ok = registers.iter().all(|r| r.matches);
    let blobs_ok = acpi_blobs.iter().all(|r| r.matches);
    let events_ok = counts.mismatched == 0 && counts.missing == 0 && counts.unexpected == 0;
    let (verdict, reason) = if !problems.is_empty() {
        (Verdict::Error, Some(problems.join("; ")))
    } else if !events_ok {
        let d = alignment
            .first_divergence()
            .expect("a divergence when events differ");
        (
            Verdict::Fail,
            Some(divergence_reason(
                &alignment,
                d,
                &prediction.events,
                &actual,
                &format!("PCR{}", d.pcr),
            )),
        )
    } else if !registers_ok {
        let bad: Vec<&str> = registers
            .iter()
            .filter(|r| !r.matches)
            .map(|r| r.name.as_str())
            .collect();
        (
            Verdict::Fail,
            Some(format!("registers differ: {}", bad.join(", "))),
        )
    } else if !blobs_ok {
        let bad: Vec<&str> = acpi_blobs
            .iter()
            .filter(|r| !r.matches)
            .map(|r| r.name.as_str())
            .collect();
        (
            Verdict::Fail,
            Some(format!(
                "fw_cfg blobs differ between oracle and guest: {}",
                bad.join(", ")
            )),
        )
    } else {
        (Verdict::Pass, None)
    };

    Ok(ScenarioReport {
        name: scenario.name.clone(),
        file: file.to_string(),
        backend: "vtpm".into(),
        verdict,
        reason,
        registers,
        events: counts,
        first_divergence,
        tdx_events,
        unpredicted_pcrs: prediction
            .unpredicted
            .iter()
            .map(|u| UnpredictedPcr {
                pcr: u.pcr,
                reason: u.reason.clone(),
            })
            .collect(),
        acpi_blobs,
        qemu_version: resolved.qemu_version.map(|v| v.to_string()),
        ovmf_version: resolved.ovmf_version.map(|v| v.to_string()),
        duration_s: 0.0,
        notes,
        event_rows: event_rows(&alignment, prediction, &actual),
        predictors: Vec::new(),
    })
}

/// Every event of the TD prediction: checked when the same event (by label, in order) of the
/// vTPM prediction matched the log; not checkable when a vTPM boot does not log it.
fn tdx_events(td_events: &[Event], prediction: &Prediction, alignment: &Alignment) -> TdxEvents {
    let matched_events: Vec<Event> = alignment
        .entries
        .iter()
        .filter(|e| e.outcome == Outcome::Matched)
        .filter_map(|e| e.predicted)
        .map(|i| prediction.events[i].clone())
        .collect();
    let verification = measure::verification::td_statuses(
        td_events,
        &matched_events,
        &crate::verification::captured_td_events(&images::workspace_root()),
    )
    .into_iter()
    .zip(td_events)
    .map(|(status, event)| crate::report::EventVerification {
        label: event.label.clone(),
        register: event.register().map(|r| r.to_string()),
        status: status.as_str(),
    })
    .collect();
    let mut matched: Vec<&str> = matched_events
        .iter()
        .filter(|e| e.platforms.tdx)
        .map(|e| e.label.as_str())
        .collect();
    let mut checked = 0;
    let mut not_checkable = Vec::new();
    for event in td_events {
        if !event.platforms.vtpm {
            not_checkable.push(NotCheckable {
                label: event.label.clone(),
                register: event.register().map(|r| r.to_string()),
                reason: td_only_reason(&event.label).to_string(),
            });
        } else if let Some(k) = matched.iter().position(|l| *l == event.label) {
            matched.remove(k);
            checked += 1;
        }
    }
    TdxEvents {
        total: td_events.len(),
        checked,
        not_checkable,
        verification,
    }
}

/// Why a vTPM boot does not log a TD event.
fn td_only_reason(label: &str) -> &'static str {
    match label {
        "td_hob" => "TD-only: the TD HOB, measured into RTMR0 by TdxHelperLib",
        "cfv" => "TD-only: the configuration firmware volume, measured into RTMR0 by TdxHelperLib",
        l if l.starts_with("acpi:") => {
            "this OVMF measures fw_cfg ACPI blobs only in a TD (quirk ovmf-acpi-measured-with-tpm \
             not in force); on vtpm the blob's bytes are compared with the oracle instead"
        }
        _ => "TD-only event",
    }
}

/// One line naming the first divergence: its outcome, the event, where (`place`), and for a
/// mismatch which digest banks differ; an event present but out of order says so.
pub fn divergence_reason(
    alignment: &Alignment,
    entry: &compare::Entry,
    predicted: &[Event],
    actual: &[Event],
    place: &str,
) -> String {
    let p = entry.predicted.map(|i| &predicted[i]);
    let a = entry.actual.map(|j| &actual[j]);
    // A swapped pair shows as one unexpected and one missing entry of the same event.
    let misplaced = alignment
        .out_of_order(entry, predicted, actual)
        .and_then(|other| entry.predicted.or(other.predicted))
        .map(|i| &predicted[i]);
    let event = match (p.or(misplaced), a) {
        (Some(p), _) => format!("`{}`", p.label),
        (None, Some(a)) => format!("{} (not predicted)", a.event_type.name()),
        (None, None) => "(no event)".to_string(),
    };
    let mut reason = format!("first divergence: {:?} {event} in {place}", entry.outcome);
    if let (Some(p), Some(a)) = (p, a) {
        let differences = what_differs(p, a);
        if !differences.is_empty() {
            let _ = write!(reason, " ({} differs)", differences.join(" and "));
        }
    }
    if misplaced.is_some() {
        reason.push_str(": logged, but out of order");
    }
    reason
}

/// What differs between two events standing in the same place: digest banks (a bank only one
/// side has is not compared) and the event type.
fn what_differs(predicted: &Event, actual: &Event) -> Vec<&'static str> {
    let (p, a) = (&predicted.digests, &actual.digests);
    let mut differences = Vec::new();
    if matches!((p.sha256, a.sha256), (Some(x), Some(y)) if x != y) {
        differences.push("sha256");
    }
    if matches!((p.sha384, a.sha384), (Some(x), Some(y)) if x != y) {
        differences.push("sha384");
    }
    if predicted.event_type != actual.event_type {
        differences.push("event type");
    }
    differences
}

fn sha384_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha384::digest(bytes))
}

/// A vTPM PCR folded from the predicted events that land in it, in one bank (`sha256` or
/// `sha384`), starting from zero. Empty when an event has no digest in that bank.
pub fn fold_pcr(events: &[Event], pcr: u32, bank: &str) -> Vec<u8> {
    use measure::event::{extend_sha256, extend_sha384};
    let mut events = events
        .iter()
        .filter(|e| e.pcr == pcr && e.extends() && e.platforms.contains(Platform::Vtpm));
    if bank == "sha256" {
        let mut value = [0u8; 32];
        for e in events.by_ref() {
            let Some(d) = e.digests.sha256 else {
                return Vec::new();
            };
            value = extend_sha256(&value, &d);
        }
        value.to_vec()
    } else {
        let mut value = [0u8; 48];
        for e in events {
            let Some(d) = e.digests.sha384 else {
                return Vec::new();
            };
            value = extend_sha384(&value, &d);
        }
        value.to_vec()
    }
}

/// The report's view of one unmatched alignment entry; `predicted` and `actual` are the slices
/// the alignment indexes.
pub fn divergence(entry: &compare::Entry, predicted: &[Event], actual: &[Event]) -> Divergence {
    let p = entry.predicted.map(|i| &predicted[i]);
    let a = entry.actual.map(|j| &actual[j]);
    let any = p.or(a).expect("an entry has at least one side");
    Divergence {
        outcome: entry.outcome,
        label: p.map(|e| e.label.clone()),
        pcr: entry.pcr,
        register: any.register().map(|r| r.to_string()),
        event_type: any.event_type.name().to_string(),
        predicted_digest: p.and_then(|e| e.digests.sha384_hex()),
        actual_digest: a.and_then(|e| e.digests.sha384_hex()),
        predicted_data: p.map(evidence::decode::describe),
        actual_data: a.map(evidence::decode::describe),
        varies_with: p.map(|e| e.varies_with.clone()).unwrap_or_default(),
    }
}

fn event_rows(alignment: &Alignment, prediction: &Prediction, actual: &[Event]) -> Vec<EventRow> {
    alignment
        .entries
        .iter()
        .map(|entry| {
            let p = entry.predicted.map(|i| &prediction.events[i]);
            let a = entry.actual.map(|j| &actual[j]);
            let e = p.or(a).expect("an entry has at least one side");
            EventRow {
                outcome: entry.outcome,
                pcr: entry.pcr,
                register: e.register().map(|r| r.to_string()),
                event_type: e.event_type.name().to_string(),
                label: p.map(|e| e.label.clone()),
                sha384: a.or(p).and_then(|e| e.digests.sha384_hex()),
                varies_with_agent: p
                    .is_some_and(|e| e.varies_with.contains(&measure::Input::Initrd)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Predicting (and so diagnosing offline) a dstack TD, whose layout has a vhost-vsock,
    /// needs no `/dev/vhost-vsock`: only a boot does.
    #[test]
    fn a_td_with_vsock_is_predicted_where_it_could_not_boot() {
        let root = images::workspace_root();
        let scenario = Scenario::load(&root.join("scenarios/dstack-preset.toml")).unwrap();
        let cache = images::Cache::open(&root).expect("image cache (run ci/setup-host.sh)");
        let prepared = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(prepare(&scenario, &cache, Platform::Tdx))
            .expect("a TD prediction");
        assert_eq!(prepared.resolved.vm.vsock_host, qemu::VsockHost::Kernel);
        assert_eq!(
            prepared.resolved.vm.unsupported_reason().is_some(),
            !Path::new(qemu::vm::VHOST_VSOCK_DEVICE).exists()
        );
        assert_eq!(prepared.prediction.platform, Platform::Tdx);
        assert!(prepared
            .prediction
            .events
            .iter()
            .any(|e| e.label == "acpi:etc/acpi/tables"));
    }

    #[test]
    fn evidence_names_from_the_guest_cannot_leave_the_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("scenario");
        for bad in ["../x", "/abs", "a/../../x", "./x", ""] {
            let mut record = agent::record::Record::default();
            record.push("tpm/ok", "fine");
            record.push(bad, "escaped");
            let e = save_evidence(&dir, &record).unwrap_err();
            assert_eq!(
                e,
                format!("evidence record: entry name {bad:?} is not a plain relative path")
            );
        }
        // Only the good entries of the first record, inside the folder, were written.
        assert_eq!(
            std::fs::read_to_string(dir.join("evidence/tpm/ok")).unwrap(),
            "fine"
        );
        assert!(!root.path().join("x").exists());
    }

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
