//! Running a predictor: its folder, then its kind's run (`Kind::predict`), each program in its
//! own process group, with stdout and stderr kept in the folder.

use super::{Prediction, Predictor, PredictorError};
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
    if let Err(e) = std::fs::create_dir_all(dir).map_err(PredictorError::io(dir)) {
        return e.into();
    }
    predictor
        .kind
        .predict(&predictor.name, resolved, oracle, order, dir)
        .await
}

/// Run `program argv…` in its own process group with stdout and stderr kept in `dir`; the
/// group is killed on timeout and after the leader exits (no stray children). Returns stdout
/// on exit status 0.
pub(super) async fn run_capture(
    program: &Path,
    argv: &[String],
    env: &[(&str, &str)],
    dir: &Path,
) -> Result<Vec<u8>, PredictorError> {
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let open = |p: &Path| std::fs::File::create(p).map_err(PredictorError::io(p));
    let mut command = tokio::process::Command::new(program);
    command
        .args(argv)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(open(&out_path)?)
        .stderr(open(&err_path)?);
    // A group registered like QEMU's: killed whole after the leader exits, on timeout, and
    // when mrlab is interrupted.
    let mut group =
        qemu::process::Group::spawn_prepared("predictor", command).map_err(|source| {
            PredictorError::Spawn {
                program: program.to_owned(),
                source,
            }
        })?;
    let status = match tokio::time::timeout(TIMEOUT, group.wait()).await {
        Ok(status) => {
            let _ = group.kill().await;
            status.map_err(|source| PredictorError::Wait {
                program: program.to_owned(),
                source,
            })?
        }
        Err(_) => {
            let _ = group.kill().await;
            return Err(PredictorError::Timeout(TIMEOUT));
        }
    };
    let stdout = std::fs::read(&out_path).map_err(PredictorError::io(&out_path))?;
    if !status.success() {
        let stderr = std::fs::read(&err_path).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr);
        let tail: Vec<&str> = stderr.trim().lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(PredictorError::Exited {
            status,
            stderr_tail: tail.join(" | "),
        });
    }
    Ok(stdout)
}
