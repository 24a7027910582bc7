//! The same inputs give the same bytes: initramfs, UKI and ESP disks (systemd-boot + UKI, shim +
//! GRUB) built twice, into two fresh cache directories, must be identical.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn build_all(root: &Path) -> Vec<(String, Vec<u8>)> {
    let cache = images::Cache::open_at(&repo(), root).expect("open cache");
    let initrd = cache
        .agent_initramfs("kernel-6.12")
        .unwrap_or_else(|e| panic!("{e} (run images/fetch.sh)"));
    let uki = cache
        .uki(&images::UkiSpec {
            kernel_id: "kernel-6.12".into(),
            stub_id: "systemd-boot-257".into(),
            cmdline: "console=ttyS0".into(),
            initrd: initrd.clone(),
        })
        .expect("uki");
    let disk = cache
        .esp_disk(&images::DiskSpec {
            bootloader_id: "systemd-boot-257".into(),
            ukis: vec![("mrlab".into(), uki.clone())],
            loader_conf: Some("timeout 0\n".into()),
        })
        .expect("disk");
    let kernel = cache.kernel("kernel-6.12").expect("kernel");
    let grub_disk = cache
        .grub_disk(&images::GrubDiskSpec {
            shim_id: "shim-16.1".into(),
            grub_id: "grub-2.12".into(),
            grub_cfg: "linux /vmlinuz console=ttyS0\ninitrd /initrd.img\nboot\n".into(),
            kernel: kernel.vmlinuz,
            initrd: initrd.clone(),
        })
        .expect("grub disk");
    [
        ("initramfs", initrd),
        ("uki", uki),
        ("disk", disk),
        ("grub disk", grub_disk),
    ]
    .into_iter()
    .map(|(what, path)| {
        assert!(
            path.starts_with(root),
            "{} not under {}",
            path.display(),
            root.display()
        );
        (what.to_owned(), std::fs::read(&path).expect("read image"))
    })
    .collect()
}

#[test]
fn images_built_twice_into_fresh_caches_are_identical() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let first = build_all(a.path());
    let second = build_all(b.path());
    for ((what, x), (_, y)) in first.iter().zip(&second) {
        assert!(!x.is_empty(), "{what} is empty");
        if let Some(at) = x.iter().zip(y).position(|(p, q)| p != q) {
            panic!("{what} differs between builds at byte {at}");
        }
        assert_eq!(x.len(), y.len(), "{what} length differs");
    }
}
