//! Running a predictor: the command with its `inputs.json`, or dstack-mr with its image folder,
//! in its own process group, with stdout and stderr kept in its folder.

use super::contract::inputs_json;
use super::dstack::dstack_mr_plan;
use super::{absolute, Kind, Prediction, Predictor};
use crate::prepare::TdRegisters;
use crate::resolve::Resolved;
use measure::tdvf::PageOrder;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long one predictor may run (dstack-mr starts a QEMU for its ACPI tables).
pub const TIMEOUT: Duration = Duration::from_secs(120);

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
