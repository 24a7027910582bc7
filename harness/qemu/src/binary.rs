//! Which QEMU runs a VM: the binary plus what it needs besides its compiled-in defaults, so a
//! QEMU extracted beside the host's (no install, no root) finds its own blobs and modules.

use std::path::PathBuf;

/// A QEMU to run. Every place that starts QEMU (boots, the fw_cfg oracle, `-L help`,
/// `--version`, `run.sh`) goes through this, so they all run the same QEMU the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuBinary {
    pub program: PathBuf,
    /// Searched, in order, before the binary's compiled-in data dirs (`-L`): an extracted QEMU
    /// would otherwise load the host QEMU's `linuxboot_dma.bin` and the like.
    pub data_dirs: Vec<PathBuf>,
    /// Environment the binary needs, e.g. `QEMU_MODULE_DIR`: an extracted QEMU must not load
    /// the host QEMU's modules (`util/module.c` reads this variable before its built-in dir).
    pub env: Vec<(String, PathBuf)>,
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
            data_dirs: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The arguments that come before any others: `-L <dir>` per data dir.
    pub fn leading_args(&self) -> Vec<String> {
        self.data_dirs
            .iter()
            .flat_map(|dir| ["-L".to_string(), dir.display().to_string()])
            .collect()
    }

    /// A command for this QEMU: its environment and leading arguments set, more to add.
    pub fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.args(self.leading_args());
        cmd
    }

    /// The same, for tokio.
    pub fn tokio_command(&self) -> tokio::process::Command {
        tokio::process::Command::from(self.command())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dirs_lead_the_arguments_and_env_is_set() {
        let q = QemuBinary {
            program: "/q/qemu-system-x86_64".into(),
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
}
