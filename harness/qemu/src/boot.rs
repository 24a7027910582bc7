//! Supervised boots: each VM in its own temp dir with its own sockets, QEMU and swtpm each in
//! their own process group (killed whole on timeout, error or drop), QMP watching run states.

use crate::argv::{argv, run_sh, vsock_daemon, vsock_daemon_args, Accel, Backend, RunDir};
use crate::binary::QemuBinary;
use crate::process::{wait_for_socket, Group, PrivateDir, SocketWait};
use crate::vm::{Boot, Vm};
use futures::StreamExt;
use qapi::qmp;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct BootOptions {
    /// Wall-clock limit for the whole boot, from spawning QEMU to its exit.
    pub timeout: Duration,
    /// Where `serial.log`, `qemu.stderr` and `run.sh` are copied when the boot ends, on success
    /// and failure alike (the run dir itself, with its sockets, is always removed).
    pub save_logs_to: Option<PathBuf>,
    pub qemu_binary: QemuBinary,
    /// Where run dirs are made; the system temp dir when `None`. Unix socket paths are limited
    /// to 108 bytes, so the root should be short.
    pub temp_root: Option<PathBuf>,
    /// Where the manufactured TPM state is kept for many boots (`swtpm::manufactured`); with
    /// `None` every boot with a TPM runs `swtpm_setup` itself.
    pub swtpm_states: Option<PathBuf>,
}

impl BootOptions {
    pub fn new(timeout: Duration) -> BootOptions {
        BootOptions {
            timeout,
            save_logs_to: None,
            qemu_binary: QemuBinary::system(),
            temp_root: None,
            swtpm_states: None,
        }
    }
}

/// A VM that ran to its end (guest power-off, or a reset, which `-no-reboot` turns into exit).
#[derive(Debug)]
pub struct BootOutcome {
    /// Holds the sockets, `serial.log`, `qemu.stderr` and `run.sh`; removed when the outcome
    /// is dropped.
    pub run_dir: RunDir,
    pub serial: Vec<u8>,
    pub exit_status: ExitStatus,
    pub duration: Duration,
    /// The guest asked for a reset (QMP SHUTDOWN with reason guest-reset, e.g. after a panic
    /// with `panic=-1`) rather than a power-off.
    pub guest_reset: bool,
    _temp: PrivateDir,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot prepare the run dir")]
    RunDir(#[source] std::io::Error),
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("swtpm")]
    Swtpm(#[from] crate::swtpm::SwtpmError),
    #[error("QEMU rejected its arguments or configuration ({status}): {stderr}")]
    Rejected { status: String, stderr: String },
    #[error("QEMU exited early ({status}) without the guest shutting down; stderr: {stderr}; serial tail: {serial_tail}")]
    ExitedEarly {
        status: String,
        stderr: String,
        serial_tail: String,
    },
    #[error("guest still running after {timeout:?}; serial tail: {serial_tail}")]
    Hung {
        timeout: Duration,
        serial_tail: String,
    },
    #[error("swtpm died ({status}) while the guest was running; swtpm log: {log}")]
    SwtpmDied { status: String, log: String },
    #[error("vhost-device-vsock {problem}; its log: {log}")]
    VsockDaemon { problem: String, log: String },
    #[error("guest panicked (QMP run state {state}); serial tail: {serial_tail}")]
    GuestPanicked { state: String, serial_tail: String },
    #[error("guest kernel panicked: {line}; serial tail: {serial_tail}")]
    KernelPanic { line: String, serial_tail: String },
    #[error("QEMU stopped the guest with run state {state} (e.g. \"KVM internal error\"); stderr: {stderr}")]
    InternalError { state: String, stderr: String },
    #[error("QMP on {socket}: {message}")]
    Qmp { socket: String, message: String },
    #[error("cannot save the boot's logs: {0}")]
    SaveLogs(String),
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default()
}

/// `text` without terminal escape sequences (CSI `ESC [ … final`, and two-byte `ESC x`) and
/// without other control characters but newline and tab: a guest's console output, fit for an
/// error message, a terminal and a report.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameter and intermediate bytes, then one final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST (ESC \\).
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Linux's panic line (`panic()` prints "Kernel panic - not syncing: <reason>") if the serial
/// log holds one. Without `panic=` on its command line a panicked kernel spins forever; seeing
/// the line ends the boot at once with the reason instead of at the deadline.
pub fn kernel_panic(serial: &[u8]) -> Option<String> {
    const MARKER: &[u8] = b"Kernel panic - not syncing";
    let start = serial.windows(MARKER.len()).position(|w| w == MARKER)?;
    let line = serial[start..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    Some(printable(String::from_utf8_lossy(line).trim_end()))
}

/// The last ~600 characters of the serial log, printable, for error messages.
fn serial_tail(run: &RunDir) -> String {
    let text = printable(&read_lossy(&run.serial_log()));
    let start = text
        .char_indices()
        .rev()
        .nth(600)
        .map(|(i, _)| i)
        .unwrap_or(0);
    text[start..].to_string()
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// Boots `vm` under `backend` and supervises it to its end.
pub async fn boot(
    vm: &Vm,
    backend: &Backend,
    opts: &BootOptions,
) -> Result<BootOutcome, BootError> {
    run(vm, backend, opts, None).await
}

/// What ends a supervised run early with success: the serial log matching a predicate.
type SerialDone<'a> = &'a (dyn Fn(&[u8]) -> bool + Sync);

async fn run(
    vm: &Vm,
    backend: &Backend,
    opts: &BootOptions,
    serial_done: Option<SerialDone<'_>>,
) -> Result<BootOutcome, BootError> {
    let temp =
        PrivateDir::new("mrlab-vm-", opts.temp_root.as_deref()).map_err(BootError::RunDir)?;
    let run = RunDir::new(temp.path());
    std::fs::write(run.run_sh(), run_sh(vm, backend, &opts.qemu_binary))
        .map_err(BootError::RunDir)?;

    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let mut swtpm = None;
    if vm.tpm && *backend != Backend::Oracle {
        let state = match &opts.swtpm_states {
            Some(kept) => crate::swtpm::State::Manufactured(kept),
            None => crate::swtpm::State::Setup,
        };
        swtpm = Some(crate::swtpm::start(&run, state, Duration::from_secs(10)).await?);
    }
    let mut vsock = start_vsock_daemon(vm, backend, &run).await?;
    let mut command = opts.qemu_binary.tokio_command();
    command.args(argv(vm, backend, &run));
    let mut qemu = Group::spawn_command("qemu", command, &run.stderr_log()).map_err(|source| {
        BootError::Spawn {
            program: opts.qemu_binary.program.display().to_string(),
            source,
        }
    })?;

    let supervised = supervise(
        &mut qemu,
        &mut swtpm,
        &mut vsock,
        &run,
        opts,
        deadline,
        serial_done,
    )
    .await;
    // Whatever QEMU left in its group goes; swtpm (--terminate) ends as QEMU's socket closes;
    // the vsock daemon serves on until killed. All are reaped here on every path, so an error
    // leaves no process behind.
    let _ = qemu.kill().await;
    if let Some(mut swtpm) = swtpm.take() {
        let _ = swtpm.wait_or_kill(Duration::from_secs(2)).await;
    }
    if let Some(mut vsock) = vsock.take() {
        let _ = vsock.kill().await;
    }
    // Saved on failure too: the logs are what one debugs a failed boot from.
    let saved = match &opts.save_logs_to {
        Some(to) => save_logs(&run, to),
        None => Ok(()),
    };
    let (exit_status, guest_reset) = supervised?;
    saved.map_err(BootError::SaveLogs)?;
    let serial = std::fs::read(run.serial_log()).unwrap_or_default();
    Ok(BootOutcome {
        run_dir: run,
        serial,
        exit_status,
        duration: start.elapsed(),
        guest_reset,
        _temp: temp,
    })
}

/// Starts the vhost-user vsock daemon when the VM needs one, and waits for its sockets.
async fn start_vsock_daemon(
    vm: &Vm,
    backend: &Backend,
    run: &RunDir,
) -> Result<Option<Group>, BootError> {
    let Some(daemon) = vsock_daemon(vm, backend) else {
        return Ok(None);
    };
    let args = vsock_daemon_args(vm, run);
    let mut group =
        Group::spawn("vhost-device-vsock", daemon, &args, &run.vsock_log()).map_err(|source| {
            BootError::Spawn {
                program: daemon.display().to_string(),
                source,
            }
        })?;
    for index in 0..vm.vsock_count() {
        let socket = run.vsock_socket(index);
        let problem = match wait_for_socket(&socket, &mut group, Duration::from_secs(10)).await {
            Ok(()) => continue,
            Err(SocketWait::Exited(status)) => format!("exited ({status}) before listening"),
            Err(SocketWait::TimedOut) => {
                format!("did not create {} within 10 s", socket.display())
            }
        };
        let _ = group.kill().await;
        return Err(BootError::VsockDaemon {
            problem,
            log: read_lossy(&run.vsock_log()),
        });
    }
    Ok(Some(group))
}

/// Copies the logs and `run.sh` of `run` into `to`; a file the boot never made is skipped.
fn save_logs(run: &RunDir, to: &Path) -> Result<(), String> {
    for from in [
        run.serial_log(),
        run.stderr_log(),
        run.vsock_log(),
        run.run_sh(),
    ] {
        let Some(name) = from.file_name() else {
            continue;
        };
        if !from.exists() {
            continue;
        }
        let dest = to.join(name);
        std::fs::copy(&from, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    Ok(())
}

/// Watches a started QEMU to its end: its exit, QMP events and run states, swtpm, the vsock
/// daemon, the deadline.
async fn supervise(
    qemu: &mut Group,
    swtpm: &mut Option<Group>,
    vsock: &mut Option<Group>,
    run: &RunDir,
    opts: &BootOptions,
    deadline: tokio::time::Instant,
    serial_done: Option<SerialDone<'_>>,
) -> Result<(ExitStatus, bool), BootError> {
    let run = run.clone();
    let rejected = |status: &std::io::Result<ExitStatus>| BootError::Rejected {
        status: describe(status),
        stderr: read_lossy(&run.stderr_log()),
    };
    let qmp_error = |message: String| BootError::Qmp {
        socket: run.qmp_socket().display().to_string(),
        message,
    };

    match wait_for_socket(&run.qmp_socket(), qemu, Duration::from_secs(20)).await {
        Ok(()) => {}
        Err(SocketWait::Exited(status)) => return Err(rejected(&Ok(status))),
        Err(SocketWait::TimedOut) => {
            return Err(qmp_error("socket not created within 20 s".into()))
        }
    }
    // A QEMU that fails device or machine setup can still have created the QMP socket: its
    // exit during the handshake is a rejection, not a QMP failure.
    let stream = tokio::select! {
        stream = async {
            // The socket file exists from bind(); connecting can be refused until listen().
            let mut attempts = 0;
            let negotiation = loop {
                match qapi::futures::QmpStreamTokio::open_uds(run.qmp_socket()).await {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && attempts < 100 => {
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => break other?,
                }
            };
            negotiation.negotiate().await
        } => stream,
        status = qemu.wait() => return Err(rejected(&status)),
    };
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            let status = tokio::time::timeout(Duration::from_secs(2), qemu.wait()).await;
            return Err(match status {
                Ok(status) => rejected(&status),
                Err(_) => qmp_error(format!("handshake failed: {e}")),
            });
        }
    };
    let (service, mut events) = stream.into_parts();
    let (event_tx, mut event_rx) = tokio::sync::mpsc::unbounded_channel();
    // Polling the event stream also delivers command responses to `service`.
    let forwarder = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if event_tx.send(event).is_err() {
                break;
            }
        }
    });
    let _forwarder = AbortOnDrop(forwarder);

    let initial = tokio::select! {
        status = service.execute(qmp::query_status {}) => status,
        status = qemu.wait() => return Err(rejected(&status)),
    };
    match initial {
        Ok(info) => check_run_state(&info.status, &run)?,
        Err(e) => return Err(qmp_error(format!("query-status: {e}"))),
    }

    let mut guest_reset = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let exit_status = loop {
        tokio::select! {
            status = qemu.wait() => {
                match status {
                    Ok(status) if status.success() => break status,
                    other => {
                        return Err(BootError::ExitedEarly {
                            status: describe(&other),
                            stderr: read_lossy(&run.stderr_log()),
                            serial_tail: serial_tail(&run),
                        })
                    }
                }
            }
            event = event_rx.recv() => match event {
                Some(Ok(qmp::Event::SHUTDOWN { data, .. })) => {
                    guest_reset = matches!(data.reason, qmp::ShutdownCause::guest_reset);
                }
                Some(Ok(qmp::Event::GUEST_PANICKED { .. })) => {
                    return Err(BootError::GuestPanicked {
                        state: "guest-panicked".into(),
                        serial_tail: serial_tail(&run),
                    });
                }
                Some(Ok(qmp::Event::STOP { .. })) => {
                    match service.execute(qmp::query_status {}).await {
                        Ok(info) => check_run_state(&info.status, &run)?,
                        Err(e) => return Err(qmp_error(format!("query-status after STOP: {e}"))),
                    }
                }
                Some(Ok(_)) => {}
                // QMP closes as QEMU exits; the exit status decides.
                Some(Err(_)) | None => {
                    let status = qemu.wait().await;
                    match status {
                        Ok(status) if status.success() => break status,
                        other => return Err(BootError::ExitedEarly {
                            status: describe(&other),
                            stderr: read_lossy(&run.stderr_log()),
                            serial_tail: serial_tail(&run),
                        }),
                    }
                }
            },
            status = wait_optional(swtpm) => {
                // With --terminate swtpm also ends (by itself, not by a signal) when a finishing
                // QEMU closes its socket, which can be seen first: a QEMU exiting cleanly right
                // after is no failure. A signalled swtpm died, however QEMU ends after it.
                let signalled = match &status {
                    Ok(s) => std::os::unix::process::ExitStatusExt::signal(s).is_some(),
                    Err(_) => true,
                };
                if !signalled {
                    if let Ok(Ok(qemu_status)) = tokio::time::timeout(Duration::from_secs(3), qemu.wait()).await {
                        if qemu_status.success() {
                            break qemu_status;
                        }
                    }
                }
                return Err(BootError::SwtpmDied {
                    status: describe(&status),
                    log: read_lossy(&run.swtpm_log()),
                });
            }
            status = wait_optional(vsock) => {
                return Err(BootError::VsockDaemon {
                    problem: format!("died ({}) while the guest was running", describe(&status)),
                    log: read_lossy(&run.vsock_log()),
                });
            }
            _ = tick.tick() => {
                let serial = std::fs::read(run.serial_log()).unwrap_or_default();
                if serial_done.is_some_and(|done| done(&serial)) {
                    let _ = service.execute(qmp::quit {}).await;
                    break qemu.wait_or_kill(Duration::from_secs(5)).await.map_err(|e| qmp_error(format!("quit: {e}")))?;
                }
                check_kernel_panic(&serial, &run)?;
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(BootError::Hung { timeout: opts.timeout, serial_tail: serial_tail(&run) });
            }
        }
    };
    // A guest with `panic=-1` resets after its panic and QEMU (-no-reboot) exits cleanly: still
    // a failed boot, whichever of the exit and the serial poll came first — unless the guest
    // finished its work before it panicked.
    let serial = std::fs::read(run.serial_log()).unwrap_or_default();
    if !serial_done.is_some_and(|done| done(&serial)) {
        check_kernel_panic(&serial, &run)?;
    }
    Ok((exit_status, guest_reset))
}

fn check_kernel_panic(serial: &[u8], run: &RunDir) -> Result<(), BootError> {
    match kernel_panic(serial) {
        Some(line) => Err(BootError::KernelPanic {
            line,
            serial_tail: serial_tail(run),
        }),
        None => Ok(()),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn wait_optional(group: &mut Option<Group>) -> std::io::Result<ExitStatus> {
    match group {
        Some(group) => group.wait().await,
        None => std::future::pending().await,
    }
}

fn check_run_state(state: &qmp::RunState, run: &RunDir) -> Result<(), BootError> {
    match state {
        qmp::RunState::internal_error => Err(BootError::InternalError {
            state: "internal-error".into(),
            stderr: read_lossy(&run.stderr_log()),
        }),
        qmp::RunState::guest_panicked => Err(BootError::GuestPanicked {
            state: "guest-panicked".into(),
            serial_tail: serial_tail(run),
        }),
        _ => Ok(()),
    }
}

/// Whether KVM works here, by a probe boot (not by `/dev/kvm`, which exists on hosts where a
/// KVM guest stops at once with "KVM internal error"): OVMF under KVM must reach BDS.
pub async fn probe_kvm_with(qemu_binary: &QemuBinary, firmware: &Path) -> bool {
    let vm = Vm::new(firmware, 1, 256 << 20, Boot::Disk);
    let mut opts = BootOptions::new(Duration::from_secs(15));
    opts.qemu_binary = qemu_binary.clone();
    let reached_bds = |serial: &[u8]| serial.windows(6).any(|w| w == b"BdsDxe");
    let backend = Backend::Vtpm { accel: Accel::Kvm };
    run(&vm, &backend, &opts, Some(&reached_bds)).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::{kernel_panic, printable};

    #[test]
    fn kernel_panic_line_is_found_amid_console_output() {
        // As Linux 6.1 printed it on our serial console under TCG with a missing root fs.
        let serial = b"[    2.1] VFS: Cannot open root device \"(null)\" or unknown-block(0,0): error -6\r\n\
[    2.2] Please append a correct \"root=\" boot option; here are the available partitions:\r\n\
[    2.3] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n\
[    2.4] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0-27-amd64 #1  Debian 6.1.115-1\r\n";
        assert_eq!(
            kernel_panic(serial).as_deref(),
            Some("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)")
        );
        assert_eq!(
            kernel_panic(b"[    0.0] Linux version 6.1.0\r\nmrlab-agent: done\r\n"),
            None
        );
    }

    #[test]
    fn serial_text_loses_escapes_and_control_characters() {
        let console = "\u{1b}[2J\u{1b}[01;01H\u{1b}[=3hBdsDxe: loading\r\n\u{1b}]0;title\u{7}ok\u{0}\tdone\u{1b}c";
        assert_eq!(printable(console), "BdsDxe: loading\nok\tdone");
    }
}
