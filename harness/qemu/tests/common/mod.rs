//! What the qemu crate's integration tests boot: the host's OVMF and the pinned 6.1 kernel.

use std::path::PathBuf;

/// Debian's OVMF 2022.11, installed on the host by `ci/setup-host.sh`.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// The pinned Debian 6.1 kernel (`images/fetch.sh`); a missing one fails the test, saying so.
pub fn kernel() -> PathBuf {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.cache/debs/kernel-6.1/boot/vmlinuz-6.1.0-50-amd64"
    ));
    assert!(
        path.exists(),
        "{} is missing: run images/fetch.sh",
        path.display()
    );
    path
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
