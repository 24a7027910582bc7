//! swtpm lifecycle: state setup with SHA-256 and SHA-384 PCR banks, then the socket server.

use crate::argv::{swtpm_setup_args, swtpm_socket_args, RunDir};
use crate::process::{wait_for_socket, Group, SocketWait};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    #[error("cannot run {program}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("swtpm_setup failed ({status}); its output: {output}")]
    Setup { status: String, output: String },
    #[error("swtpm exited ({status}) before creating its socket; its log: {log}")]
    Exited { status: String, log: String },
    #[error("swtpm did not create {socket} within {timeout:?}")]
    NoSocket { socket: String, timeout: Duration },
    #[error("TPM state {path}")]
    State {
        path: String,
        source: std::io::Error,
    },
    #[error("{program} --version printed nothing ({status})")]
    Version {
        program: &'static str,
        status: String,
    },
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"))
}

/// Where a boot's TPM state comes from.
#[derive(Clone, Copy, Debug)]
pub enum State<'a> {
    /// Empty: swtpm starts on no state, enough for a TPM that only has to exist (the fw_cfg
    /// oracle).
    Empty,
    /// `swtpm_setup` makes the state in the run dir (PCR banks sha256+sha384, as firmware
    /// measuring into both needs).
    Setup,
    /// The same state, made by `swtpm_setup` once and kept under this dir, keyed by the
    /// versions of swtpm and swtpm_setup and the setup flags ([`manufactured`]); each boot
    /// gets a copy.
    Manufactured(&'a Path),
}

/// Starts swtpm for `run` on the state `state` says.
pub async fn start(run: &RunDir, state: State<'_>, timeout: Duration) -> Result<Group, SwtpmError> {
    let state_dir = run.swtpm_state();
    std::fs::create_dir_all(&state_dir).map_err(|source| SwtpmError::State {
        path: state_dir.display().to_string(),
        source,
    })?;
    match state {
        State::Empty => {}
        State::Setup => setup(&state_dir, &run.path.join("swtpm_setup.log")).await?,
        State::Manufactured(kept) => {
            let made = manufactured(kept).await?;
            copy_state(&made, &state_dir)?;
        }
    }
    let log = run.path.join("swtpm.stderr");
    let mut group = Group::spawn("swtpm", Path::new("swtpm"), &swtpm_socket_args(run), &log)
        .map_err(|source| SwtpmError::Spawn {
            program: "swtpm",
            source,
        })?;
    match wait_for_socket(&run.swtpm_socket(), &mut group, timeout).await {
        Ok(()) => Ok(group),
        Err(SocketWait::Exited(status)) => Err(SwtpmError::Exited {
            status: status.to_string(),
            log: format!("{}{}", read_log(&log), read_log(&run.swtpm_log())),
        }),
        Err(SocketWait::TimedOut) => {
            let _ = group.kill().await;
            Err(SwtpmError::NoSocket {
                socket: run.swtpm_socket().display().to_string(),
                timeout,
            })
        }
    }
}

/// Runs `swtpm_setup` to make a TPM state in `state_dir`, its output going to `log`.
async fn setup(state_dir: &Path, log: &Path) -> Result<(), SwtpmError> {
    // In its own process group, like every child: a run cancelled mid-setup (its prediction
    // failed first) kills swtpm_setup and the swtpm it started, not swtpm_setup alone.
    let mut command = tokio::process::Command::new("swtpm_setup");
    command.args(swtpm_setup_args(state_dir));
    let spawn_error = |source| SwtpmError::Spawn {
        program: "swtpm_setup",
        source,
    };
    let mut group = Group::spawn_command("swtpm_setup", command, log).map_err(spawn_error)?;
    let status = group.wait().await.map_err(spawn_error)?;
    if !status.success() {
        return Err(SwtpmError::Setup {
            status: status.to_string(),
            output: read_log(log),
        });
    }
    Ok(())
}

/// The manufactured TPM state under `kept`: `swtpm_setup` runs once per swtpm version and set
/// of setup flags (it takes 0.6 s and more per boot, most of it waiting on swtpm), and every
/// boot starts from a copy. A boot has always started from a newly manufactured TPM, so the
/// only thing boots now share is what manufacturing draws at random, the primary seeds; no
/// key is made from them (no `--createek`, no certificates), and neither PCRs nor the event
/// log depend on them. Made in a temp dir beside and renamed into place, so a process that
/// stops half way leaves no half state and two that race both end on one whole state.
pub async fn manufactured(kept: &Path) -> Result<PathBuf, SwtpmError> {
    let dir = kept.join(format!("swtpm-{}", state_key().await?));
    if dir.join(PERMANENT_STATE).is_file() {
        return Ok(dir);
    }
    let state_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| SwtpmError::State { path, source }
    };
    std::fs::create_dir_all(kept).map_err(state_error(kept))?;
    let temp = tempfile::Builder::new()
        .prefix(".swtpm-making-")
        .tempdir_in(kept)
        .map_err(state_error(kept))?;
    let state_dir = temp.path().join("state");
    std::fs::create_dir(&state_dir).map_err(state_error(&state_dir))?;
    setup(&state_dir, &temp.path().join("swtpm_setup.log")).await?;
    if !state_dir.join(PERMANENT_STATE).is_file() {
        return Err(SwtpmError::State {
            path: state_dir.display().to_string(),
            source: std::io::Error::other(format!("swtpm_setup made no {PERMANENT_STATE}")),
        });
    }
    match std::fs::rename(&state_dir, &dir) {
        Ok(()) => Ok(dir),
        // Another boot made it first: its state is as good as ours.
        Err(_) if dir.join(PERMANENT_STATE).is_file() => Ok(dir),
        Err(source) => Err(SwtpmError::State {
            path: dir.display().to_string(),
            source,
        }),
    }
}

/// The file swtpm keeps a TPM 2.0's permanent state in (swtpm's `tpm2-00.permall`).
const PERMANENT_STATE: &str = "tpm2-00.permall";

/// Copies the state files of `from` into `to`, but swtpm's `.lock`.
fn copy_state(from: &Path, to: &Path) -> Result<(), SwtpmError> {
    let copy = || -> std::io::Result<()> {
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            if entry.file_type()?.is_file() && entry.file_name() != ".lock" {
                std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            }
        }
        Ok(())
    };
    copy().map_err(|source| SwtpmError::State {
        path: format!("{} copied to {}", from.display(), to.display()),
        source,
    })
}

/// A hex key naming what makes a manufactured state: the `--version` answers of swtpm and
/// swtpm_setup and the setup flags (the state path left out). Asked once per process.
async fn state_key() -> Result<String, SwtpmError> {
    static KEY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    KEY.get_or_try_init(|| async {
        let mut key = Sha256::new();
        for program in ["swtpm", "swtpm_setup"] {
            let out = tokio::process::Command::new(program)
                .arg("--version")
                .output()
                .await
                .map_err(|source| SwtpmError::Spawn { program, source })?;
            // swtpm_setup 0.7 prints its version and exits with 1: the answer is the text.
            if out.stdout.is_empty() {
                return Err(SwtpmError::Version {
                    program,
                    status: out.status.to_string(),
                });
            }
            key.update(&out.stdout);
        }
        for arg in swtpm_setup_args(Path::new("")) {
            key.update(arg.as_bytes());
            key.update([0]);
        }
        Ok(hex::encode(&key.finalize()[..8]))
    })
    .await
    .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs swtpm and swtpm_setup, as every TPM boot does.
    #[tokio::test]
    async fn the_manufactured_state_is_made_once_and_copied_per_boot() {
        let kept = tempfile::tempdir().unwrap();
        let made = manufactured(kept.path()).await.unwrap();
        let permall = made.join(PERMANENT_STATE);
        let bytes = std::fs::read(&permall).unwrap();
        assert!(!bytes.is_empty());
        // Nothing half made is left beside it.
        let names: Vec<_> = std::fs::read_dir(kept.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with("swtpm-"), "{names:?}");

        // The second boot finds it: same dir, same state (a new swtpm_setup draws new seeds).
        assert_eq!(manufactured(kept.path()).await.unwrap(), made);
        assert_eq!(std::fs::read(&permall).unwrap(), bytes);

        let run = tempfile::tempdir().unwrap();
        let run = RunDir::new(run.path());
        let mut swtpm = start(
            &run,
            State::Manufactured(kept.path()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read(run.swtpm_state().join(PERMANENT_STATE)).unwrap(),
            bytes
        );
        swtpm.kill().await.unwrap();
        // The boot's swtpm wrote its own copy only.
        assert_eq!(std::fs::read(&permall).unwrap(), bytes);
    }
}
