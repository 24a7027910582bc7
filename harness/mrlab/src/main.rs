//! `mrlab`: predict, boot, compare and snapshot confidential-VM launch measurements.
//!
//! Each subcommand lives in its own module under `cmd/`; this file only parses arguments.

mod cmd;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    return_large_buffers_at_once();
    let cli = cmd::Cli::parse();
    match cmd::dispatch(cli) {
        Ok(code) => code,
        // The reader of our stdout went away (`| head`): nothing is wrong with the command.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mrlab: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A run hashes and compares many multi-MiB buffers (kernels, firmware, disks, fw_cfg dumps),
/// each for a moment. glibc raises its mmap threshold to the size of each large block freed
/// (up to 32 MiB), after which such buffers come from the heap and their pages stay with the
/// process when freed: the peak RSS of `mrlab run scenarios/` was 65 MiB, and 41 MiB instead of
/// 53-60 for the five GRUB scenarios, with the threshold held at 256 KiB (glibc mallopt(3)).
fn return_large_buffers_at_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.root_cause()
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
