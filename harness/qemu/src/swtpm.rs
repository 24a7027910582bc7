//! swtpm lifecycle: state setup with SHA-256 and SHA-384 PCR banks, then the socket server.

use crate::argv::{swtpm_setup_args, swtpm_socket_args, RunDir};
use crate::process::{wait_for_socket, Group, SocketWait};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    #[error("cannot run {program}: {source}")]
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
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"))
}

/// Starts swtpm for `run`. With `setup`, the state is first made by `swtpm_setup` (PCR banks
/// sha256+sha384, as firmware measuring into both needs); without, swtpm starts on empty
/// state, which is enough for a TPM that only has to exist (the fw_cfg oracle).
pub async fn start(run: &RunDir, setup: bool, timeout: Duration) -> Result<Group, SwtpmError> {
    let state = run.swtpm_state();
    std::fs::create_dir_all(&state).map_err(|source| SwtpmError::Spawn {
        program: "swtpm",
        source,
    })?;
    if setup {
        // In its own process group, like every child: a run cancelled mid-setup (its prediction
        // failed first) kills swtpm_setup and the swtpm it started, not swtpm_setup alone.
        let setup_log = run.path.join("swtpm_setup.log");
        let mut command = tokio::process::Command::new("swtpm_setup");
        command.args(swtpm_setup_args(run));
        let mut group =
            Group::spawn_command("swtpm_setup", command, &setup_log).map_err(|source| {
                SwtpmError::Spawn {
                    program: "swtpm_setup",
                    source,
                }
            })?;
        let status = group.wait().await.map_err(|source| SwtpmError::Spawn {
            program: "swtpm_setup",
            source,
        })?;
        if !status.success() {
            return Err(SwtpmError::Setup {
                status: status.to_string(),
                output: read_log(&setup_log),
            });
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
