//! Which QEMU runs a VM: the binary plus what it needs besides its compiled-in defaults, so a
//! QEMU extracted beside the host's (no install, no root) finds its own blobs and modules.

use std::path::PathBuf;

/// A QEMU to run. Every place that starts QEMU (boots, the fw_cfg oracle, `-L help`,
/// `--version`, `run.sh`) goes through this, so they all run the same QEMU the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuBinary {
    /// The `qemu-system-x86_64` binary.
    pub program: PathBuf,
    /// Set for a QEMU extracted with its whole library closure into one root: it is started
    /// through that root's dynamic loader and loads nothing of the host's.
    pub loader: Option<Loader>,
    /// Searched, in order, before the binary's compiled-in data dirs (`-L`): an extracted QEMU
    /// would otherwise load the host QEMU's `linuxboot_dma.bin` and the like.
    pub data_dirs: Vec<PathBuf>,
    /// Environment the binary needs, e.g. `QEMU_MODULE_DIR`: an extracted QEMU must not load
    /// the host QEMU's modules (`util/module.c` reads this variable before its built-in dir).
    pub env: Vec<(String, PathBuf)>,
}

/// A root's own `ld-linux-x86-64.so.2` and library dirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loader {
    pub path: PathBuf,
    /// `--library-path`, searched instead of the host's dirs; the host's `ld.so.cache` is not
    /// read either (`--inhibit-cache`).
    pub library_path: Vec<PathBuf>,
}

impl Loader {
    fn args(&self, program: &std::path::Path) -> Vec<String> {
        let dirs: Vec<String> = self
            .library_path
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        vec![
            "--inhibit-cache".into(),
            "--library-path".into(),
            dirs.join(":"),
            program.display().to_string(),
        ]
    }
}

impl QemuBinary {
    /// `qemu-system-x86_64` from `PATH`, with its own defaults.
    pub fn system() -> QemuBinary {
        QemuBinary::at("qemu-system-x86_64")
    }

    /// The binary at `program`, with its own defaults.
    pub fn at(program: impl Into<PathBuf>) -> QemuBinary {
        QemuBinary {
            program: program.into(),
            loader: None,
            data_dirs: Vec::new(),
            env: Vec::new(),
        }
    }

    /// What is executed: the root's loader, or QEMU itself.
    pub fn executable(&self) -> &std::path::Path {
        self.loader.as_ref().map_or(&self.program, |l| &l.path)
    }

    /// The arguments that come before any others: the loader's (ending in QEMU's path), then
    /// `-L <dir>` per data dir.
    pub fn leading_args(&self) -> Vec<String> {
        // Started through a loader, QEMU would be `ld-linux-x86-64` in `ps` and
        // /proc/PID/comm; `-name process=` gives it back its own name.
        let loader = self.loader.iter().flat_map(|l| {
            let name = self
                .program
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            let mut args = l.args(&self.program);
            args.extend(["-name".into(), format!("process={name}")]);
            args
        });
        let data_dirs = self
            .data_dirs
            .iter()
            .flat_map(|dir| ["-L".to_string(), dir.display().to_string()]);
        loader.chain(data_dirs).collect()
    }

    /// A command for this QEMU: its environment and leading arguments set, more to add.
    pub fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.executable());
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.args(self.leading_args());
        cmd
    }

    /// The same, for tokio.
    pub fn tokio_command(&self) -> tokio::process::Command {
        tokio::process::Command::from(self.command())
    }

    /// Runs this QEMU with `args` to completion (duct), stdin closed and its output captured,
    /// whatever its exit status.
    fn run_captured(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        let argv: Vec<String> = self
            .leading_args()
            .into_iter()
            .chain(args.iter().map(|a| a.to_string()))
            .collect();
        let mut expression = duct::cmd(self.executable(), argv);
        for (key, value) in &self.env {
            expression = expression.env(key, value);
        }
        expression
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
    }

    /// Runs this QEMU with `args` to completion, like `command().args(args).output()`, but
    /// once per process for the same binary and arguments: `--version` and `-L help` answer the
    /// same for every scenario of a run. The answer is keyed by the binary's (and its loader's)
    /// path and mtime, so a QEMU replaced mid-run is asked again; only a successful answer is
    /// kept, and a binary whose file cannot be found (a bare name on `PATH`) is always asked.
    pub fn output_once(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        type Key = (QemuBinary, Vec<String>, Vec<std::time::SystemTime>);
        static ANSWERS: std::sync::Mutex<Vec<(Key, std::process::Output)>> =
            std::sync::Mutex::new(Vec::new());
        let mtimes: Option<Vec<_>> = std::iter::once(&self.program)
            .chain(self.loader.as_ref().map(|l| &l.path))
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect();
        let Some(mtimes) = mtimes else {
            return self.run_captured(args);
        };
        let key = (
            self.clone(),
            args.iter().map(|a| a.to_string()).collect(),
            mtimes,
        );
        let lookup = || {
            let answers = ANSWERS.lock().unwrap_or_else(|e| e.into_inner());
            answers
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, o)| o.clone())
        };
        if let Some(output) = lookup() {
            return Ok(output);
        }
        // Not held while QEMU runs: two scenarios asking at once both run it, which is correct,
        // only not the saving.
        let output = self.run_captured(args)?;
        if output.status.success() {
            ANSWERS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((key, output.clone()));
        }
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dirs_lead_the_arguments_and_env_is_set() {
        let q = QemuBinary {
            program: "/q/qemu-system-x86_64".into(),
            loader: None,
            data_dirs: vec!["/q/share/qemu".into(), "/q/more".into()],
            env: vec![("QEMU_MODULE_DIR".into(), "/q/lib/qemu".into())],
        };
        assert_eq!(q.leading_args(), ["-L", "/q/share/qemu", "-L", "/q/more"]);
        let cmd = q.command();
        assert_eq!(cmd.get_program(), "/q/qemu-system-x86_64");
        assert_eq!(
            cmd.get_args().collect::<Vec<_>>(),
            ["-L", "/q/share/qemu", "-L", "/q/more"]
        );
        let envs: Vec<_> = cmd.get_envs().collect();
        assert_eq!(
            envs,
            [(
                std::ffi::OsStr::new("QEMU_MODULE_DIR"),
                Some(std::ffi::OsStr::new("/q/lib/qemu"))
            )]
        );
        assert!(QemuBinary::system().leading_args().is_empty());
    }

    #[test]
    fn a_root_qemu_runs_through_its_loader() {
        let q = QemuBinary {
            program: "/r/usr/bin/qemu-system-x86_64".into(),
            loader: Some(Loader {
                path: "/r/lib/ld.so".into(),
                library_path: vec!["/r/lib".into(), "/r/usr/lib".into()],
            }),
            data_dirs: vec!["/r/share/qemu".into()],
            env: Vec::new(),
        };
        let cmd = q.command();
        assert_eq!(cmd.get_program(), "/r/lib/ld.so");
        assert_eq!(
            cmd.get_args().collect::<Vec<_>>(),
            [
                "--inhibit-cache",
                "--library-path",
                "/r/lib:/r/usr/lib",
                "/r/usr/bin/qemu-system-x86_64",
                "-name",
                "process=qemu-system-x86_64",
                "-L",
                "/r/share/qemu"
            ]
        );
    }

    #[test]
    fn answers_are_kept_per_binary_and_mtime_and_failures_are_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let program = dir.path().join("qemu-system-x86_64");
        let write_program = |exit: u8| {
            let script = format!(
                "#!/bin/sh\necho \"$@\" >>'{}'\necho \"QEMU emulator version 7.2.19\"\nexit {exit}\n",
                calls.display()
            );
            std::fs::write(&program, script).unwrap();
            std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let asked = || std::fs::read_to_string(&calls).unwrap_or_default();
        write_program(0);
        let q = QemuBinary::at(&program);
        let first = q.output_once(&["--version"]).unwrap();
        let again = q.output_once(&["--version"]).unwrap();
        assert_eq!(first.stdout, again.stdout);
        assert_eq!(asked(), "--version\n", "asked once");
        q.output_once(&["-L", "help"]).unwrap();
        assert_eq!(
            asked(),
            "--version\n-L help\n",
            "other arguments, another answer"
        );

        // A rebuilt binary (another mtime) is asked again; its failure is not kept.
        write_program(1);
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&program)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(!q.output_once(&["--version"]).unwrap().status.success());
        assert!(!q.output_once(&["--version"]).unwrap().status.success());
        assert_eq!(asked(), "--version\n-L help\n--version\n--version\n");
    }
}
