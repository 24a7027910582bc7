//! Child processes in their own process group, killed as a whole on drop.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A spawned program leading its own process group. Dropping it SIGKILLs the group, so a
/// cancelled or failed boot leaves no QEMU or swtpm behind; [`Group::kill`] also reaps it.
#[derive(Debug)]
pub struct Group {
    pub name: &'static str,
    child: Child,
    pgid: i32,
    exited: Option<ExitStatus>,
}

impl Group {
    /// Spawns `program args…` with stdin closed and stdout/stderr appended to `log`.
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> std::io::Result<Group> {
        let mut command = Command::new(program);
        command.args(args);
        Group::spawn_command(name, command, log)
    }

    /// Spawns a prepared command (program, arguments, environment) the same way.
    pub fn spawn_command(
        name: &'static str,
        mut command: Command,
        log: &Path,
    ) -> std::io::Result<Group> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or_else(|| {
            std::io::Error::other(format!("{name} exited before its pid was read"))
        })?;
        let pgid = i32::try_from(pid).map_err(std::io::Error::other)?;
        Ok(Group {
            name,
            child,
            pgid,
            exited: None,
        })
    }

    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the group leader to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        let status = self.child.wait().await?;
        self.exited = Some(status);
        Ok(status)
    }

    /// The leader's exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    fn signal_group(&self) {
        // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory.
        unsafe {
            libc::kill(-self.pgid, libc::SIGKILL);
        }
    }

    /// SIGKILLs the whole group and reaps the leader.
    pub async fn kill(&mut self) -> std::io::Result<ExitStatus> {
        self.signal_group();
        self.wait().await
    }

    /// Waits up to `grace` for the leader to exit by itself, then kills the group.
    pub async fn wait_or_kill(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(status) => {
                // Children the leader left behind in its group go too.
                self.signal_group();
                status
            }
            Err(_) => self.kill().await,
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal_group();
    }
}

/// Waits until `path` exists as a socket, or `group` exits, or `timeout` passes.
pub async fn wait_for_socket(
    path: &Path,
    group: &mut Group,
    timeout: Duration,
) -> Result<(), SocketWait> {
    use std::os::unix::fs::FileTypeExt;
    let start = Instant::now();
    loop {
        if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            return Ok(());
        }
        if let Ok(Some(status)) = group.try_wait() {
            return Err(SocketWait::Exited(status));
        }
        if start.elapsed() > timeout {
            return Err(SocketWait::TimedOut);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[derive(Debug)]
pub enum SocketWait {
    Exited(ExitStatus),
    TimedOut,
}

/// Pids of live (non-zombie) processes in process group `pgid`, from `/proc`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state ppid pgrp …
        let Some(after) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|s| s.parse::<i32>().ok());
        if pgrp == Some(pgid) && state != Some("Z") {
            pids.push(pid);
        }
    }
    pids
}
