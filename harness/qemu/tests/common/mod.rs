//! What the qemu crate's integration tests boot: the pinned OVMF 2022.11, the pinned 6.1 kernel
//! and the managed QEMU 7.2 (`images/fetch.sh`), never the host's, so they mean the same on
//! every host. A missing one fails the test, saying to run images/fetch.sh.

use std::path::PathBuf;

fn cache() -> images::Cache {
    images::Cache::open(&images::workspace_root()).expect("images/packages.lock")
}

/// Debian's OVMF 2022.11 (`ovmf-2022.11`).
pub fn ovmf() -> PathBuf {
    cache()
        .firmware("ovmf-2022.11")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// bookworm's QEMU 7.2 with its own libraries (`qemu-7.2`).
pub fn qemu() -> qemu::QemuBinary {
    cache().qemu("qemu-7.2").unwrap_or_else(|e| panic!("{e}"))
}

/// The pinned Debian 6.1 kernel (`kernel-6.1`).
pub fn kernel() -> PathBuf {
    cache()
        .kernel("kernel-6.1")
        .unwrap_or_else(|e| panic!("{e}"))
        .vmlinuz
}

/// The vhost-user vsock daemon `ci/install-vhost-device-vsock.sh` installs; a missing one fails
/// the test, saying so.
pub fn vsock_daemon() -> PathBuf {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.cache/tools/vhost-device-vsock-0.3.0/bin/vhost-device-vsock"
    ));
    assert!(
        path.exists(),
        "{} is missing: run ci/install-vhost-device-vsock.sh",
        path.display()
    );
    path
}
