//! External predictors: other implementations of the TD prediction, run beside the builtin one
//! and judged against the same reference, so a TDX host can check the library its users ship.
//!
//! # The contract
//!
//! A predictor predicts a TD's MRTD and RTMR0–2 (RTMR3 optional) for one VM.
//!
//! - **Command** (`--predictor NAME=COMMAND`): the harness writes `inputs.json` (below) into
//!   `<results>/<scenario>/predictors/<NAME>/` and runs `sh -c 'COMMAND "$@"' NAME
//!   <that inputs.json>`, i.e. COMMAND with the path appended as its last argument, in its own
//!   process group, with a time limit of [`TIMEOUT`]. Exit status 0 and stdout one JSON object
//!   `{"mrtd": H, "rtmr0": H, "rtmr1": H, "rtmr2": H}` (each `H` 96 hex digits, the SHA-384
//!   register value; `"rtmr3"` optional; other keys ignored) is a prediction. Anything else (a
//!   non-zero exit, a bad document, the time limit) is an error naming the predictor.
//! - **dstack-mr** (`--predictor dstack-mr=PATH`): an adapter for `dstack-mr measure --json`
//!   (Dstack-TEE/dstack `dstack/dstack-mr/cli`). It writes the image folder dstack-mr reads
//!   (`metadata.json` naming `ovmf.fd`, `bzImage`, `initramfs.cpio`, symlinks to the VM's files)
//!   and maps the VM onto its flags. dstack-mr models one VM shape only, so:
//!   - a VM it cannot express at all (UKI boot, no initrd) makes the whole result
//!     `unsupported: <reason>`;
//!   - a VM whose ACPI it cannot express (device list other than dstack's, HPET on, QEMU older
//!     than 8.0, no serial port) keeps MRTD/RTMR1/RTMR2 and marks RTMR0 `unsupported`.
//!
//!   dstack-mr itself runs `dstack-acpi-tables` (dstack's QEMU build) from `PATH` for RTMR0; a
//!   host without it gets dstack-mr's own error.
//!
//! `inputs.json` (`"contract": 1`): `scenario`; `boot` (`kernel` or `uki`); absolute paths
//! `firmware`, `kernel`, `initrd` (null when absent), `uki` (`{disk, bootloader, uki}` for a UKI
//! boot, else null); `cmdline`, the `-append` value QEMU hands the firmware (OVMF's loader appends
//! ` initrd=initrd` when there is an initrd, as both the builtin prediction and dstack-mr model);
//! `cpus`; `memory` in bytes; `machine` (`smm`, `hpet`, `pic`, `kernel_irqchip`,
//! `pci_hole64_size`, `acpi_pci_hotplug_with_bridge_support`, `phys_bits`; null = QEMU's default); `serial`;
//! `devices` in command-line order, which decides PCI slots and so ACPI (`{kind: virtio-blk, id,
//! file, format, readonly}`, `{kind: virtio-net, id}`, `{kind: vhost-vsock, guest_cid}`, `{kind:
//! virtfs, id, mount_tag}`, `{kind: cdrom, file}`, `{kind: pcie-root-port, chassis}`); `qemu`
//! (`binary`, `version`, `data_dirs`, `env`); `ovmf_version`; `mrtd_page_order` (`single-pass` or `two-pass`, the
//! reference's order).
//!
//! # The reference
//!
//! On a TD, the registers it reported. On the vtpm backend there are no RTMRs: the reference is
//! the builtin TD prediction of the same VM, whose TDX-relevant events the vTPM run checks
//! against the real firmware; reports label it `builtin (vtpm-verified)`.

use crate::prepare::{builtin_registers, Prepared, TdRegisters};
use crate::report::predictors::{PredictorReport, RegisterRow, Status};
use crate::report::{ScenarioReport, Verdict};
use crate::resolve::Resolved;
use measure::tdvf::PageOrder;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// How long one predictor may run (dstack-mr starts a QEMU for its ACPI tables).
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The register names of the contract, in report order.
pub const REGISTERS: [&str; 5] = ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"];

/// One external predictor, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Predictor {
    pub name: String,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A shell command that reads `inputs.json` (its last argument) and prints the registers.
    Command { command: String },
    /// The `dstack-mr` CLI at this path.
    DstackMr { path: PathBuf },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("--predictor {0:?}: expected NAME=COMMAND or dstack-mr=PATH")]
    NoEquals(String),
    #[error(
        "--predictor {0:?}: NAME must be letters, digits, `.`, `_` or `-` (it names a folder)"
    )]
    BadName(String),
    #[error("--predictor {0:?}: `builtin` is the harness's own prediction; pick another name")]
    Reserved(String),
    #[error("--predictor {0:?}: empty command")]
    EmptyCommand(String),
}

impl FromStr for Predictor {
    type Err = ParseError;

    fn from_str(arg: &str) -> Result<Predictor, ParseError> {
        let (name, rest) = arg
            .split_once('=')
            .ok_or_else(|| ParseError::NoEquals(arg.into()))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || name.starts_with('.')
        {
            return Err(ParseError::BadName(arg.into()));
        }
        if name == "builtin" {
            return Err(ParseError::Reserved(arg.into()));
        }
        if rest.trim().is_empty() {
            return Err(ParseError::EmptyCommand(arg.into()));
        }
        let kind = if name == "dstack-mr" {
            Kind::DstackMr {
                path: PathBuf::from(rest),
            }
        } else {
            Kind::Command {
                command: rest.to_string(),
            }
        };
        Ok(Predictor {
            name: name.to_string(),
            kind,
        })
    }
}

impl Predictor {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Command { .. } => "command",
            Kind::DstackMr { .. } => "dstack-mr",
        }
    }
}

/// Names must be unique: each predictor gets its own folder and report row.
pub fn check_unique(predictors: &[Predictor]) -> Result<(), String> {
    for (i, p) in predictors.iter().enumerate() {
        if predictors[..i].iter().any(|q| q.name == p.name) {
            return Err(format!("--predictor {}: given twice", p.name));
        }
    }
    Ok(())
}

/// The contract's side of the TD registers: by register name, and read from stdout.
impl TdRegisters {
    fn get(&self, name: &str) -> Option<[u8; 48]> {
        match name {
            "mrtd" => Some(self.mrtd),
            "rtmr0" => Some(self.rtmr[0]),
            "rtmr1" => Some(self.rtmr[1]),
            "rtmr2" => Some(self.rtmr[2]),
            "rtmr3" => self.rtmr3,
            _ => None,
        }
    }

    /// Parse the contract's stdout document.
    pub fn from_json(stdout: &[u8]) -> Result<TdRegisters, String> {
        let doc: serde_json::Map<String, Value> = serde_json::from_slice(stdout)
            .map_err(|e| format!("stdout is not a JSON object: {e}"))?;
        let field = |name: &str| -> Result<Option<[u8; 48]>, String> {
            let Some(value) = doc.get(name) else {
                return Ok(None);
            };
            let text = value
                .as_str()
                .ok_or_else(|| format!("`{name}` is {value}, expected a hex string"))?;
            let bytes = hex::decode(text).map_err(|e| format!("`{name}`: not hex: {e}"))?;
            let len = bytes.len();
            <[u8; 48]>::try_from(bytes)
                .map(Some)
                .map_err(|_| format!("`{name}`: {len} bytes, expected 48 (SHA-384)"))
        };
        let required = |name: &str| {
            field(name)?.ok_or_else(|| {
                format!(
                    "stdout has no `{name}` (expected {{\"mrtd\",\"rtmr0\",\"rtmr1\",\"rtmr2\"}})"
                )
            })
        };
        Ok(TdRegisters {
            mrtd: required("mrtd")?,
            rtmr: [required("rtmr0")?, required("rtmr1")?, required("rtmr2")?],
            rtmr3: field("rtmr3")?,
        })
    }
}

/// What a predictor produced for one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// Registers; `unsupported` lists registers the predictor cannot model for this VM, why.
    Registers {
        registers: Box<TdRegisters>,
        unsupported: Vec<(&'static str, String)>,
    },
    /// The predictor cannot express this VM at all.
    Unsupported(String),
    Error(String),
}

/// Compare a predictor's result with the reference.
pub fn compare(
    predictor: &Predictor,
    prediction: Prediction,
    reference: &TdRegisters,
    reference_label: &str,
) -> PredictorReport {
    let mut report = errored(predictor, String::new(), reference_label);
    report.error = None;
    let (registers, unsupported) = match prediction {
        Prediction::Error(e) => return errored(predictor, e, reference_label),
        Prediction::Unsupported(why) => {
            report.status = Status::Unsupported;
            report.unsupported = Some(why);
            return report;
        }
        Prediction::Registers {
            registers,
            unsupported,
        } => (registers, unsupported),
    };
    for name in REGISTERS {
        let predicted = registers.get(name);
        let expected = reference.get(name);
        // RTMR3 is optional in the contract: no row when the predictor does not give it.
        if name == "rtmr3" && predicted.is_none() {
            continue;
        }
        let why = unsupported
            .iter()
            .find(|(r, _)| *r == name)
            .map(|(_, why)| why.clone());
        let matches = match (&why, predicted, expected) {
            (None, Some(p), Some(e)) => Some(p == e),
            _ => None,
        };
        report.registers.push(RegisterRow {
            name: name.into(),
            predicted: predicted.map(hex::encode),
            reference: expected.map(hex::encode),
            matches,
            unsupported: why,
        });
    }
    report.status = if report.registers.iter().any(|r| r.matches == Some(false)) {
        Status::Mismatch
    } else if report.registers.iter().all(|r| r.matches == Some(true)) {
        Status::Match
    } else {
        Status::Partial
    };
    report
}

/// Fold the predictors into the scenario's verdict: an error makes it `error`, a register that
/// differs makes a pass `fail`; each names the predictor. Unsupported results become notes.
pub fn apply(report: &mut ScenarioReport, predictors: Vec<PredictorReport>) {
    let mut reasons = Vec::new();
    let mut worst = report.verdict;
    for p in &predictors {
        match p.status {
            Status::Error => {
                worst = Verdict::Error;
                reasons.push(format!(
                    "predictor `{}` failed: {}",
                    p.name,
                    p.error.as_deref().unwrap_or("")
                ));
            }
            Status::Mismatch => {
                if worst == Verdict::Pass {
                    worst = Verdict::Fail;
                }
                let bad: Vec<&str> = p
                    .registers
                    .iter()
                    .filter(|r| r.matches == Some(false))
                    .map(|r| r.name.as_str())
                    .collect();
                reasons.push(format!(
                    "predictor `{}`: {} differ{} from {}",
                    p.name,
                    bad.join(", "),
                    if bad.len() == 1 { "s" } else { "" },
                    p.reference
                ));
            }
            Status::Unsupported => report.notes.push(format!(
                "predictor `{}` unsupported: {}",
                p.name,
                p.unsupported.as_deref().unwrap_or("")
            )),
            Status::Partial => {
                for r in p.registers.iter().filter(|r| r.unsupported.is_some()) {
                    report.notes.push(format!(
                        "predictor `{}` {} not compared, unsupported: {}",
                        p.name,
                        r.name,
                        r.unsupported.as_deref().unwrap_or("")
                    ));
                }
            }
            Status::Match => {}
        }
    }
    if !reasons.is_empty() {
        report.reason = Some(match report.reason.take() {
            Some(existing) if !existing.is_empty() => {
                format!("{existing}; {}", reasons.join("; "))
            }
            _ => reasons.join("; "),
        });
    }
    report.verdict = worst;
    report.predictors = predictors;
}

/// The vtpm reference: each predictor against the builtin TD prediction of the scenario's VM
/// (prepared here for the TDX platform: no TPM device), working in `dir/predictors/`.
pub async fn vs_builtin(
    predictors: &[Predictor],
    scenario: &crate::scenario::Scenario,
    cache: &images::Cache,
    dir: &Path,
) -> Vec<PredictorReport> {
    const LABEL: &str = "builtin (vtpm-verified)";
    let order = PageOrder::SinglePass;
    let td = crate::prepare::prepare(scenario, cache, measure::Platform::Tdx)
        .await
        .and_then(|p| builtin_registers(&p, order).map(|reference| (p, reference)));
    match td {
        Ok((td, reference)) => {
            check_all(
                predictors,
                &td,
                order,
                &reference,
                LABEL,
                &dir.join("predictors"),
            )
            .await
        }
        Err(e) => predictors
            .iter()
            .map(|p| errored(p, format!("builtin TD prediction: {e}"), LABEL))
            .collect(),
    }
}

/// A predictor that could not be run or compared.
pub fn errored(predictor: &Predictor, error: String, reference_label: &str) -> PredictorReport {
    PredictorReport {
        name: predictor.name.clone(),
        kind: predictor.kind_name().into(),
        reference: reference_label.into(),
        status: Status::Error,
        error: Some(error),
        unsupported: None,
        registers: Vec::new(),
    }
}

/// Run every predictor on the TD VM of `td` (each in `work/<name>/`) and compare it with
/// `reference`.
pub async fn check_all(
    predictors: &[Predictor],
    td: &Prepared,
    order: PageOrder,
    reference: &TdRegisters,
    reference_label: &str,
    work: &Path,
) -> Vec<PredictorReport> {
    let mut out = Vec::new();
    for p in predictors {
        let prediction = predict(p, &td.resolved, &td.oracle, order, &work.join(&p.name)).await;
        out.push(compare(p, prediction, reference, reference_label));
    }
    out
}

/// Run one predictor on the VM of `resolved`; `oracle` is that VM's fw_cfg dump.
pub async fn predict(
    predictor: &Predictor,
    resolved: &Resolved,
    oracle: &BTreeMap<String, Vec<u8>>,
    order: PageOrder,
    dir: &Path,
) -> Prediction {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Prediction::Error(format!("{}: {e}", dir.display()));
    }
    match &predictor.kind {
        Kind::Command { command } => {
            let inputs = dir.join("inputs.json");
            let doc = inputs_json(resolved, order);
            let text = serde_json::to_string_pretty(&doc).expect("inputs serialize");
            if let Err(e) = std::fs::write(&inputs, text) {
                return Prediction::Error(format!("{}: {e}", inputs.display()));
            }
            let argv = vec![
                "-c".to_string(),
                format!("{command} \"$@\""),
                predictor.name.clone(),
                absolute(&inputs).display().to_string(),
            ];
            match run_capture(Path::new("sh"), &argv, &[], dir).await {
                Ok(stdout) => match TdRegisters::from_json(&stdout) {
                    Ok(registers) => Prediction::Registers {
                        registers: Box::new(registers),
                        unsupported: Vec::new(),
                    },
                    Err(e) => Prediction::Error(e),
                },
                Err(e) => Prediction::Error(e),
            }
        }
        Kind::DstackMr { path } => {
            let plan = match dstack_mr_plan(resolved, order, dir) {
                Ok(plan) => plan,
                Err(why) => return Prediction::Unsupported(why),
            };
            if let Err(e) = plan.write_image() {
                return Prediction::Error(e);
            }
            // dstack-mr logs through tracing to stdout; keep stdout for the JSON.
            let mut env = vec![("RUST_LOG".to_string(), "off".to_string())];
            if plan.unsupported.iter().any(|(r, _)| *r == "rtmr0") {
                // RTMR0 is not compared, but dstack-mr computes it before anything else and
                // needs `dstack-acpi-tables` for that. Stand in this VM's own tables (from the
                // oracle), so MRTD/RTMR1/RTMR2, which do not depend on ACPI, still come out.
                match stand_in_acpi_tables(oracle, dir) {
                    Ok(path) => env.push(("PATH".into(), path)),
                    Err(e) => return Prediction::Error(e),
                }
            }
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            match run_capture(path, &plan.argv, &env, dir).await {
                Ok(stdout) => match TdRegisters::from_json(&stdout) {
                    Ok(registers) => Prediction::Registers {
                        registers: Box::new(registers),
                        unsupported: plan.unsupported,
                    },
                    Err(e) => Prediction::Error(e),
                },
                Err(e) => Prediction::Error(e),
            }
        }
    }
}

/// A `dstack-acpi-tables` that prints `etc/acpi/tables` from `oracle`, first on a `PATH` it
/// returns.
fn stand_in_acpi_tables(oracle: &BTreeMap<String, Vec<u8>>, dir: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let tables = oracle
        .get("etc/acpi/tables")
        .ok_or("the fw_cfg oracle served no etc/acpi/tables")?;
    let bin = absolute(dir).join("stand-in-bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    let blob = bin.join("etc-acpi-tables.bin");
    std::fs::write(&blob, tables).map_err(|e| format!("{}: {e}", blob.display()))?;
    let script = bin.join("dstack-acpi-tables");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec cat '{}'\n", blob.display()),
    )
    .and_then(|()| std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)))
    .map_err(|e| format!("{}: {e}", script.display()))?;
    let path = std::env::var("PATH").unwrap_or_default();
    Ok(format!("{}:{path}", bin.display()))
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Run `program argv…` in its own process group with stdout and stderr kept in `dir`; the
/// group is killed on timeout and after the leader exits (no stray children). Returns stdout
/// on exit status 0.
async fn run_capture(
    program: &Path,
    argv: &[String],
    env: &[(&str, &str)],
    dir: &Path,
) -> Result<Vec<u8>, String> {
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let open = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut command = tokio::process::Command::new(program);
    command
        .args(argv)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(open(&out_path)?)
        .stderr(open(&err_path)?);
    // A group registered like QEMU's: killed whole after the leader exits, on timeout, and
    // when mrlab is interrupted.
    let mut group = qemu::process::Group::spawn_prepared("predictor", command)
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let status = match tokio::time::timeout(TIMEOUT, group.wait()).await {
        Ok(status) => {
            let _ = group.kill().await;
            status.map_err(|e| format!("waiting for {}: {e}", program.display()))?
        }
        Err(_) => {
            let _ = group.kill().await;
            return Err(format!("timed out after {} s", TIMEOUT.as_secs()));
        }
    };
    let stdout = std::fs::read(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
    if !status.success() {
        let stderr = std::fs::read(&err_path).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr);
        let tail: Vec<&str> = stderr.trim().lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "exited with {status}{}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {}", tail.join(" | "))
            }
        ));
    }
    Ok(stdout)
}

/// The generic contract's `inputs.json` for the TD VM of `resolved`.
pub fn inputs_json(resolved: &Resolved, order: PageOrder) -> Value {
    use qemu::vm::{Boot, Device};
    let vm = &resolved.vm;
    let path = |p: &Path| absolute(p).display().to_string();
    let cmdline_override = resolved.scenario.predict.cmdline.clone();
    let (boot, kernel, initrd, cmdline, uki) = match (&vm.boot, &resolved.uki) {
        (
            Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            },
            _,
        ) => (
            "kernel",
            Some(path(kernel)),
            initrd.as_deref().map(path),
            Some(cmdline_override.unwrap_or_else(|| cmdline.clone())),
            Value::Null,
        ),
        (Boot::Disk, uki) => (
            "uki",
            None,
            None,
            cmdline_override,
            uki.as_ref().map_or(Value::Null, |u| {
                json!({"disk": path(&u.disk), "bootloader": path(&u.bootloader), "uki": path(&u.uki)})
            }),
        ),
    };
    let devices: Vec<Value> = vm
        .devices
        .iter()
        .map(|d| match d {
            Device::Disk(disk) => json!({
                "kind": "virtio-blk", "id": disk.id, "file": path(&disk.file),
                "format": disk.format.as_str(), "readonly": disk.readonly,
            }),
            Device::Net { id, .. } => json!({"kind": "virtio-net", "id": id}),
            Device::Vsock { guest_cid } => json!({"kind": "vhost-vsock", "guest_cid": guest_cid}),
            Device::Share(share) => {
                json!({"kind": "virtfs", "id": share.id, "mount_tag": share.mount_tag})
            }
            Device::Cdrom { file } => json!({"kind": "cdrom", "file": path(file)}),
            Device::PcieRootPort { chassis } => {
                json!({"kind": "pcie-root-port", "chassis": chassis})
            }
        })
        .collect();
    let m = &vm.machine;
    json!({
        "contract": 1,
        "scenario": resolved.scenario.name,
        "boot": boot,
        "firmware": path(&vm.firmware),
        "kernel": kernel,
        "initrd": initrd,
        "uki": uki,
        "cmdline": cmdline,
        "cpus": vm.cpus,
        "memory": vm.memory,
        "machine": {
            "smm": m.smm,
            "hpet": m.hpet,
            "pic": m.pic,
            "kernel_irqchip": m.kernel_irqchip.map(|k| k.as_str()),
            "pci_hole64_size": m.pci_hole64_size,
            "acpi_pci_hotplug_with_bridge_support": m.acpi_pci_hotplug_with_bridge_support,
            "phys_bits": m.phys_bits,
        },
        "serial": vm.serial,
        "devices": devices,
        "qemu": {
            "binary": resolved.qemu_binary.program.display().to_string(),
            // How to start it: a managed QEMU runs through its root's own loader, so `binary`
            // alone may not start on this host. Append QEMU's own arguments to this.
            "command": std::iter::once(resolved.qemu_binary.executable().display().to_string())
                .chain(resolved.qemu_binary.leading_args())
                .collect::<Vec<_>>(),
            // An extracted QEMU runs with these `-L` dirs first and this environment.
            "data_dirs": resolved.qemu_binary.data_dirs.iter()
                .map(|d| d.display().to_string()).collect::<Vec<_>>(),
            "env": resolved.qemu_binary.env.iter()
                .map(|(k, v)| (k.clone(), Value::from(v.display().to_string())))
                .collect::<serde_json::Map<String, Value>>(),
            "version": resolved.qemu_version.map(|v| v.to_string()),
        },
        "ovmf_version": resolved.ovmf_version.map(|v| v.to_string()),
        "mrtd_page_order": page_order_name(order),
    })
}

fn page_order_name(order: PageOrder) -> &'static str {
    match order {
        PageOrder::SinglePass => "single-pass",
        PageOrder::TwoPass => "two-pass",
    }
}

/// A dstack-mr invocation for one VM: its image folder and argv.
#[derive(Debug, PartialEq, Eq)]
pub struct DstackMrPlan {
    pub image_dir: PathBuf,
    /// `metadata.json` (dstack-types `ImageInfo`).
    pub metadata: Value,
    /// (name in the image folder, target).
    pub links: Vec<(&'static str, PathBuf)>,
    pub argv: Vec<String>,
    /// Registers dstack-mr computes for a different VM than this one, and why.
    pub unsupported: Vec<(&'static str, String)>,
}

impl DstackMrPlan {
    fn write_image(&self) -> Result<(), String> {
        let dir = &self.image_dir;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (name, target) in &self.links {
            let link = dir.join(name);
            std::os::unix::fs::symlink(absolute(target), &link)
                .map_err(|e| format!("{}: {e}", link.display()))?;
        }
        let path = dir.join("metadata.json");
        let text = serde_json::to_string_pretty(&self.metadata).expect("metadata serializes");
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The VM as dstack-mr's flags: `Err` when dstack-mr cannot express it at all.
pub fn dstack_mr_plan(
    resolved: &Resolved,
    order: PageOrder,
    dir: &Path,
) -> Result<DstackMrPlan, String> {
    let vm = &resolved.vm;
    let qemu::vm::Boot::Kernel {
        kernel,
        initrd,
        cmdline,
    } = &vm.boot
    else {
        return Err("dstack-mr models -kernel direct boot only, this VM boots a UKI".into());
    };
    let initrd = initrd
        .as_ref()
        .ok_or("dstack-mr needs an initrd (it measures one into RTMR2)")?;
    if vm.tpm {
        return Err("dstack-mr does not model a TPM device (`swtpm` is unsupported there)".into());
    }
    let image_dir = dir.join("image");
    let cmdline = resolved
        .scenario
        .predict
        .cmdline
        .clone()
        .unwrap_or_else(|| cmdline.clone());
    // dstack-mr appends " initrd=initrd" itself, as OVMF's -kernel loader does.
    let metadata = json!({
        "cmdline": cmdline,
        "kernel": "bzImage",
        "initrd": "initramfs.cpio",
        "bios": "ovmf.fd",
    });
    let links = vec![
        ("ovmf.fd", vm.firmware.clone()),
        ("bzImage", kernel.clone()),
        ("initramfs.cpio", initrd.clone()),
    ];

    let mut unsupported = Vec::new();
    let shape = dstack_shape(vm);
    let m = &vm.machine;
    let mut acpi_problems = Vec::new();
    if let Err(why) = &shape {
        acpi_problems.push(why.clone());
    }
    if m.hpet != Some(false) {
        acpi_problems.push("dstack-mr's VM has hpet=off, this one has the HPET".to_string());
    }
    if !vm.serial {
        acpi_problems.push("dstack-mr's VM has a serial port, this one has none".to_string());
    }
    let qemu_version = match resolved.qemu_version {
        Some(v) if v >= measure::quirks::Version(8, 0) => Some(format!("{}.{}.0", v.0, v.1)),
        Some(v) => {
            acpi_problems.push(format!(
                "dstack-mr models the ACPI of QEMU >= 8.0 (TDX), this VM's QEMU is {v}"
            ));
            None
        }
        None => {
            acpi_problems.push("this VM's QEMU version is unknown".to_string());
            None
        }
    };
    if !acpi_problems.is_empty() {
        unsupported.push(("rtmr0", acpi_problems.join("; ")));
    }
    let shape = shape.unwrap_or_default();
    let flag = |b: bool| if b { "true" } else { "false" }.to_string();
    let mut argv: Vec<String> = vec![
        "measure".into(),
        "--json".into(),
        "--cpu".into(),
        vm.cpus.to_string(),
        "--memory".into(),
        vm.memory.to_string(),
        "--two-pass-add-pages".into(),
        flag(order == PageOrder::TwoPass),
        // QEMU's own default when the VM leaves it unset: the i8259 PIC is on (what the
        // fw_cfg oracle of this VM served).
        "--pic".into(),
        flag(m.pic.unwrap_or(true)),
        // QEMU refuses SMM for a TD (tdx-guest turns `smm=auto` off).
        "--smm".into(),
        flag(m.smm.unwrap_or(false)),
        "--hotplug-off".into(),
        flag(m.acpi_pci_hotplug_with_bridge_support == Some(false)),
        "--num-nics".into(),
        shape.nics.to_string(),
        "--num-verity-volumes".into(),
        shape.verity_volumes.to_string(),
        "--root-verity".into(),
        flag(shape.root_verity),
    ];
    if let Some(size) = m.pci_hole64_size {
        argv.extend(["--pci-hole64-size".into(), size.to_string()]);
    }
    if let Some(v) = qemu_version {
        argv.extend(["--qemu-version".into(), v]);
    }
    argv.push(
        absolute(dir)
            .join("image/metadata.json")
            .display()
            .to_string(),
    );
    Ok(DstackMrPlan {
        image_dir,
        metadata,
        links,
        argv,
        unsupported,
    })
}

/// The parameters of dstack-mr's device layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DstackShape {
    pub nics: usize,
    pub verity_volumes: usize,
    /// The rootfs is a virtio-blk verity disk (`hd0`), not a `-cdrom`.
    pub root_verity: bool,
}

/// Match the VM's PCI devices against dstack-mr's layout (`acpi.rs`): virtio-blk `hd1`, N
/// virtio-blk verity volumes, N virtio-net, vhost-vsock, 9p `host-shared`, then the rootfs
/// (virtio-blk `hd0`, or a `-cdrom`, which takes no PCI slot). dstack-vmm puts `hd0` first
/// instead (`qemu::vm::DstackLayout`); identical virtio-blk functions make both orders give
/// the same slots per device class, so both are accepted. dstack-mr's CLI cannot express a
/// disk host share, PCIe root ports without GPUs, or a TPM.
pub fn dstack_shape(vm: &qemu::vm::Vm) -> Result<DstackShape, String> {
    use qemu::vm::Device;
    let cdrom = vm
        .devices
        .iter()
        .filter(|d| matches!(d, Device::Cdrom { .. }))
        .count();
    if cdrom > 1 {
        return Err(format!(
            "dstack-mr's VM has at most one cdrom, this one has {cdrom}"
        ));
    }
    let kinds: Vec<char> = vm
        .devices
        .iter()
        .filter_map(|d| match d {
            Device::Disk(_) => Some('b'),
            Device::Net { .. } => Some('n'),
            Device::Vsock { .. } => Some('v'),
            Device::Share(_) => Some('s'),
            Device::PcieRootPort { .. } => Some('r'),
            Device::Cdrom { .. } => None,
        })
        .collect();
    let text: String = kinds.iter().collect();
    let describe = || {
        let these = if kinds.is_empty() {
            "none".to_string()
        } else {
            format!(
                "[{}]",
                kinds
                    .iter()
                    .map(|k| match k {
                        'b' => "blk",
                        'n' => "net",
                        'v' => "vsock",
                        's' => "9p",
                        _ => "root-port",
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        format!(
            "dstack-mr's VM has PCI devices blk, blk×volumes, net×N, vsock, 9p[, blk rootfs]; \
             this one has {these}"
        )
    };
    let blks = text.chars().take_while(|&c| c == 'b').count();
    let rest = &text[blks..];
    let nics = rest.chars().take_while(|&c| c == 'n').count();
    let tail = &rest[nics..];
    let root_verity = cdrom == 0;
    // Blk disks before the NICs: hd1 and the volumes, plus hd0 when it comes first.
    let leading_root = match tail {
        "vs" => root_verity,
        "vsb" if root_verity => false,
        _ => return Err(describe()),
    };
    let before_volumes = 1 + usize::from(leading_root);
    if blks < before_volumes {
        return Err(describe());
    }
    Ok(DstackShape {
        nics,
        verity_volumes: blks - before_volumes,
        root_verity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use qemu::vm::{Boot, Device, Share, Vm};

    #[test]
    fn parses_command_and_dstack_mr_predictors() {
        assert_eq!(
            "mine=python3 predict.py --fast".parse::<Predictor>(),
            Ok(Predictor {
                name: "mine".into(),
                kind: Kind::Command {
                    command: "python3 predict.py --fast".into()
                }
            })
        );
        // `=` inside the command stays in the command.
        assert_eq!(
            "x=env A=1 ./p".parse::<Predictor>().unwrap().kind,
            Kind::Command {
                command: "env A=1 ./p".into()
            }
        );
        assert_eq!(
            "dstack-mr=/opt/bin/dstack-mr".parse::<Predictor>(),
            Ok(Predictor {
                name: "dstack-mr".into(),
                kind: Kind::DstackMr {
                    path: "/opt/bin/dstack-mr".into()
                }
            })
        );
    }

    #[test]
    fn rejects_bad_predictor_arguments() {
        type Case = (&'static str, fn(String) -> ParseError);
        let cases: [Case; 6] = [
            ("dstack-mr", ParseError::NoEquals),
            ("=cmd", ParseError::BadName),
            ("a/b=cmd", ParseError::BadName),
            ("..=cmd", ParseError::BadName),
            ("builtin=cmd", ParseError::Reserved),
            ("p=  ", ParseError::EmptyCommand),
        ];
        for (arg, error) in cases {
            assert_eq!(arg.parse::<Predictor>(), Err(error(arg.into())), "{arg}");
        }
        let twice = ["a=x".parse().unwrap(), "a=y".parse().unwrap()];
        assert!(check_unique(&twice).unwrap_err().contains("a"));
    }

    #[test]
    fn contract_output_is_checked() {
        let h = |b: u8| hex::encode([b; 48]);
        let ok = format!(
            r#"{{"mrtd":"{}","rtmr0":"{}","rtmr1":"{}","rtmr2":"{}","extra":1}}"#,
            h(1),
            h(2),
            h(3),
            h(4)
        );
        let regs = TdRegisters::from_json(ok.as_bytes()).unwrap();
        assert_eq!((regs.mrtd[0], regs.rtmr[2][47], regs.rtmr3), (1, 4, None));
        let short = ok.replace(&h(3), "abcd");
        assert!(TdRegisters::from_json(short.as_bytes())
            .unwrap_err()
            .contains("rtmr1"));
        let missing = format!(r#"{{"mrtd":"{}"}}"#, h(1));
        assert!(TdRegisters::from_json(missing.as_bytes())
            .unwrap_err()
            .contains("rtmr0"));
        assert!(TdRegisters::from_json(b"MRTD: 00").is_err());
    }

    fn blk(id: &str) -> Device {
        Device::readonly_raw_disk(id, "/d")
    }

    fn net(i: usize) -> Device {
        Device::Net {
            id: format!("net{i}"),
            mac: None,
        }
    }

    fn share() -> Device {
        Device::Share(Share {
            id: "virtfs0".into(),
            path: "/s".into(),
            mount_tag: "host-shared".into(),
            readonly: true,
            security_model: "none".into(),
        })
    }

    fn vm(devices: Vec<Device>) -> Vm {
        let mut vm = Vm::new("/fw", 1, 1 << 30, Boot::Disk);
        vm.devices = devices;
        vm
    }

    #[test]
    fn dstack_shapes_are_recognised_in_both_orders() {
        let vsock = Device::Vsock { guest_cid: 3 };
        // dstack-vmm order: hd0, hd1, vol0, net0, net1, vsock, 9p.
        let vmm = vm(vec![
            blk("hd0"),
            blk("hd1"),
            blk("vol0"),
            net(0),
            net(1),
            vsock.clone(),
            share(),
        ]);
        let want = DstackShape {
            nics: 2,
            verity_volumes: 1,
            root_verity: true,
        };
        assert_eq!(dstack_shape(&vmm), Ok(want));
        // dstack-mr's own order: hd1, vol0, net0, net1, vsock, 9p, hd0.
        let mr = vm(vec![
            blk("hd1"),
            blk("vol0"),
            net(0),
            net(1),
            vsock.clone(),
            share(),
            blk("hd0"),
        ]);
        assert_eq!(dstack_shape(&mr), Ok(want));
        // An ISO rootfs: cdrom, hd1, net0, vsock, 9p.
        let iso = vm(vec![
            Device::Cdrom { file: "/i".into() },
            blk("hd1"),
            net(0),
            vsock.clone(),
            share(),
        ]);
        assert_eq!(
            dstack_shape(&iso),
            Ok(DstackShape {
                nics: 1,
                verity_volumes: 0,
                root_verity: false
            })
        );
    }

    #[test]
    fn other_device_lists_are_not_dstack_shapes() {
        // The repo's dstack-like scenario (no vsock on this kind of host) and a bare VM.
        let like = vm(vec![blk("disk0"), net(1), share()]);
        let why = dstack_shape(&like).unwrap_err();
        assert!(why.contains("[blk, net, 9p]"), "{why}");
        assert!(dstack_shape(&vm(vec![])).is_err());
        // Root ports alone (no GPU) have no dstack-mr flag.
        let ports = vm(vec![
            blk("hd0"),
            blk("hd1"),
            net(0),
            Device::Vsock { guest_cid: 3 },
            share(),
            Device::PcieRootPort { chassis: 1 },
        ]);
        assert!(dstack_shape(&ports).is_err());
        // A disk host share (hd2) is not expressible through `dstack-mr measure`.
        let hd2 = vm(vec![
            blk("hd0"),
            blk("hd1"),
            net(0),
            Device::Vsock { guest_cid: 3 },
            blk("hd2"),
        ]);
        assert!(dstack_shape(&hd2).is_err());
    }

    fn regs(b: u8) -> TdRegisters {
        TdRegisters {
            mrtd: [b; 48],
            rtmr: [[b; 48]; 3],
            rtmr3: None,
        }
    }

    #[test]
    fn comparison_statuses_and_verdicts() {
        let p: Predictor = "p=x".parse().unwrap();
        let reference = regs(7);
        let mut one_off = regs(7);
        one_off.rtmr[1] = [8; 48];
        let partial = compare(
            &p,
            Prediction::Registers {
                registers: Box::new(one_off.clone()),
                unsupported: vec![("rtmr1", "no".into())],
            },
            &reference,
            "actual",
        );
        assert_eq!(partial.status, Status::Partial);
        let wrong = compare(
            &p,
            Prediction::Registers {
                registers: Box::new(one_off),
                unsupported: Vec::new(),
            },
            &reference,
            "builtin (vtpm-verified)",
        );
        assert_eq!(wrong.status, Status::Mismatch);
        let mut report = ScenarioReport::error("s", "s.toml", "vtpm", String::new(), 0.0);
        report.verdict = Verdict::Pass;
        report.reason = None;
        apply(&mut report, vec![wrong, partial]);
        assert_eq!(report.verdict, Verdict::Fail);
        assert_eq!(
            report.reason.as_deref(),
            Some("predictor `p`: rtmr1 differs from builtin (vtpm-verified)")
        );
        assert!(report.notes[0].contains("rtmr1 not compared"));
        let failed = compare(&p, Prediction::Error("boom".into()), &reference, "actual");
        apply(&mut report, vec![failed]);
        assert_eq!(report.verdict, Verdict::Error);
        assert!(report
            .reason
            .unwrap()
            .contains("predictor `p` failed: boom"));
    }
}
