//! Child processes in their own process group, killed as a whole on drop, and the private
//! temp dirs of a run; both listed in one registry so an interrupted mrlab can end them all
//! ([`terminate_all`]).
//!
//! Every child is started with `PR_SET_PDEATHSIG` = SIGKILL, so a SIGKILLed mrlab (no handler
//! runs) still takes its QEMUs and swtpms along. The signal fires when the *thread* that forked
//! the child exits: children are spawned from tokio worker threads or the main thread, which
//! live as long as the runtime, i.e. as long as a run. The temp dirs of a SIGKILLed process
//! are removed by its guardian ([`start_guardian`], [`guard`]): a small child that is told
//! every registration over a pipe and cleans up what is left when the pipe closes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Live process groups and temp dirs of this process, and whether it is shutting down.
struct Registry {
    groups: BTreeSet<i32>,
    dirs: BTreeSet<PathBuf>,
    terminating: bool,
    /// The guardian's stdin, when one runs: every change above is written to it.
    guardian: Option<std::process::ChildStdin>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    groups: BTreeSet::new(),
    dirs: BTreeSet::new(),
    terminating: false,
    guardian: None,
});

/// One registry change as a guardian line: `+g PGID`, `-g PGID`, `+d HEXPATH`, `-d HEXPATH`
/// (paths hex-encoded, so any byte in them survives the line format).
enum Change<'a> {
    AddGroup(i32),
    RemoveGroup(i32),
    AddDir(&'a Path),
    RemoveDir(&'a Path),
}

impl Registry {
    fn tell(&mut self, change: Change) {
        use std::io::Write;
        let line = match change {
            Change::AddGroup(g) => format!("+g {g}\n"),
            Change::RemoveGroup(g) => format!("-g {g}\n"),
            Change::AddDir(d) => format!("+d {}\n", hex_path(d)),
            Change::RemoveDir(d) => format!("-d {}\n", hex_path(d)),
        };
        if let Some(guardian) = &mut self.guardian {
            // A guardian that died cannot be helped; the run goes on without it.
            if guardian.write_all(line.as_bytes()).is_err() {
                self.guardian = None;
            }
        }
    }
}

/// A path as the guardian line format carries it: every byte as two hex digits.
fn hex_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Starts `command` (which must run [`guard`]) as this process's guardian, in its own process
/// group so a terminal's Ctrl-C reaches only mrlab, which then cleans up itself.
pub fn start_guardian(mut command: std::process::Command) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    registry().guardian = child.stdin;
    Ok(())
}

/// The guardian's work: follow the registry changes on `input` until it closes (the process
/// that started the guardian is gone, however it ended), then kill the groups and remove the
/// dirs that are still registered.
pub fn guard(input: impl std::io::BufRead) {
    let mut groups = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    let unhex = |hex: &str| -> Option<PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    };
    for line in input.lines() {
        let Ok(line) = line else { break };
        match line.split_once(' ') {
            Some(("+g", pgid)) => groups.extend(pgid.parse::<i32>().ok()),
            Some(("-g", pgid)) => {
                pgid.parse::<i32>().ok().map(|g| groups.remove(&g));
            }
            Some(("+d", hex)) => dirs.extend(unhex(hex)),
            Some(("-d", hex)) => {
                unhex(hex).map(|d| dirs.remove(&d));
            }
            _ => {}
        }
    }
    for pgid in groups {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic elsewhere while holding the lock leaves the sets intact: keep using them.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn shutting_down() -> std::io::Error {
    std::io::Error::other("mrlab is shutting down (interrupted)")
}

/// Ends every registered process group (SIGKILL) and removes every registered temp dir, and
/// refuses new ones from then on: what mrlab does on SIGINT/SIGTERM before it writes the
/// reports of what finished. Returns how many groups and dirs it ended.
pub fn terminate_all() -> (usize, usize) {
    let mut registry = registry();
    registry.terminating = true;
    for &pgid in &registry.groups {
        // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    for dir in &registry.dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    let ended = (registry.groups.len(), registry.dirs.len());
    for pgid in std::mem::take(&mut registry.groups) {
        registry.tell(Change::RemoveGroup(pgid));
    }
    for dir in std::mem::take(&mut registry.dirs) {
        registry.tell(Change::RemoveDir(&dir));
    }
    ended
}

/// Whether [`terminate_all`] ran: a process that ends now was killed by it.
pub fn terminating() -> bool {
    registry().terminating
}

/// Makes `command`'s child die with this process: SIGKILL on the death of the forking thread
/// (`PR_SET_PDEATHSIG`), or at once when this process already died between fork and exec.
pub fn die_with_parent(command: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
}

/// The longest temp root used for run dirs: a socket path (`<root>/mrlab-vm-XXXXXX/swtpm.sock`)
/// must fit `sun_path`, 108 bytes.
const MAX_TEMP_ROOT: usize = 64;

/// `$TMPDIR` when socket paths under it fit and it has no comma (swtpm's `key=value,…`
/// options have no escape for one), else `/tmp`.
pub fn short_temp_root() -> PathBuf {
    let root = std::env::temp_dir();
    let text = root.to_string_lossy();
    if text.len() <= MAX_TEMP_ROOT && !text.contains(',') {
        root
    } else {
        PathBuf::from("/tmp")
    }
}

/// A private temp dir (`<root or a short temp root>/<prefix>XXXXXX`), registered so [`terminate_all`]
/// removes it; removed on drop.
#[derive(Debug)]
pub struct PrivateDir {
    dir: tempfile::TempDir,
}

impl PrivateDir {
    pub fn new(prefix: &str, root: Option<&Path>) -> std::io::Result<PrivateDir> {
        let mut registry = registry();
        if registry.terminating {
            return Err(shutting_down());
        }
        let mut builder = tempfile::Builder::new();
        builder.prefix(prefix);
        let dir = match root {
            Some(root) => builder.tempdir_in(root),
            None => builder.tempdir_in(short_temp_root()),
        }?;
        registry.dirs.insert(dir.path().to_path_buf());
        registry.tell(Change::AddDir(dir.path()));
        Ok(PrivateDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // The TempDir field removes the dir right after.
        let mut registry = registry();
        if registry.dirs.remove(self.dir.path()) {
            registry.tell(Change::RemoveDir(self.dir.path()));
        }
    }
}

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
        command.stdout(log_file.try_clone()?).stderr(log_file);
        Group::spawn_prepared(name, command)
    }

    /// Spawns a command whose stdout and stderr the caller has set, with stdin closed, in its
    /// own process group, registered for [`terminate_all`] and dying with this process.
    pub fn spawn_prepared(name: &'static str, mut command: Command) -> std::io::Result<Group> {
        die_with_parent(&mut command);
        // Spawned and registered under the lock, so terminate_all cannot miss a group.
        let mut registry = registry();
        if registry.terminating {
            return Err(shutting_down());
        }
        let child = command
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or_else(|| {
            std::io::Error::other(format!("{name} exited before its pid was read"))
        })?;
        let pgid = i32::try_from(pid).map_err(std::io::Error::other)?;
        registry.groups.insert(pgid);
        registry.tell(Change::AddGroup(pgid));
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
        let mut registry = registry();
        if registry.groups.remove(&self.pgid) {
            registry.tell(Change::RemoveGroup(self.pgid));
        }
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

/// One process as its `/proc/<pid>/stat` line describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    /// The command name (`comm`, at most 15 bytes).
    pub comm: String,
    /// `R`, `S`, `Z` (zombie) …
    pub state: String,
    pub ppid: i32,
    pub pgrp: i32,
}

impl ProcStat {
    /// Parse a stat line: `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses,
    /// so it ends at the last `)`.
    fn parse(stat: &str) -> Option<ProcStat> {
        let (head, rest) = stat.rsplit_once(')')?;
        let (pid, comm) = head.split_once(" (")?;
        let mut fields = rest.split_whitespace();
        Some(ProcStat {
            pid: pid.trim().parse().ok()?,
            comm: comm.to_string(),
            state: fields.next()?.to_string(),
            ppid: fields.next()?.parse().ok()?,
            pgrp: fields.next()?.parse().ok()?,
        })
    }
}

/// Every process `/proc` lists now; ones that exit while being read are left out.
pub fn processes() -> std::io::Result<Vec<ProcStat>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) {
            out.extend(ProcStat::parse(&stat));
        }
    }
    Ok(out)
}

/// Pids of live (non-zombie) processes in process group `pgid`, from `/proc`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    processes()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.pgrp == pgid && p.state != "Z")
        .map(|p| p.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (qemu (x) y) S 17 4242 4242 0 -1 4194560 0 0";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                pid: 4242,
                comm: "qemu (x) y".into(),
                state: "S".into(),
                ppid: 17,
                pgrp: 4242,
            })
        );
        assert_eq!(ProcStat::parse("4242 (cut"), None);
    }

    #[test]
    fn the_guardian_removes_what_is_still_registered_when_its_input_ends() {
        let root = tempfile::tempdir().unwrap();
        let (kept, gone) = (root.path().join("a,\nb"), root.path().join("c"));
        std::fs::create_dir(&kept).unwrap();
        std::fs::create_dir(&gone).unwrap();
        let input = format!(
            "+d {}\n+d {}\n-d {}\nnonsense\n+g x\n",
            hex_path(&gone),
            hex_path(&kept),
            hex_path(&kept)
        );
        guard(input.as_bytes());
        assert!(kept.exists() && !gone.exists());
    }

    #[test]
    fn processes_include_this_one() {
        let me = std::process::id() as i32;
        let this = processes().unwrap().into_iter().find(|p| p.pid == me);
        assert_eq!(
            this.map(|p| p.ppid),
            Some(std::os::unix::process::parent_id() as i32)
        );
    }
}
