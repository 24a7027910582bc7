//! Kernel module closures of the pinned kernels (`.cache/debs`, so `images/fetch.sh` must have
//! run). Here, not in the crate's unit tests, because they read the image cache.

use images::modules::resolve;
use std::fs;
use std::path::PathBuf;

fn kernel_modules(id: &str) -> PathBuf {
    let base = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/debs")).join(id);
    let dir = base.join("lib/modules");
    let release = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}: run images/fetch.sh", dir.display()))
        .next()
        .expect("one release dir; run images/fetch.sh")
        .unwrap()
        .file_name();
    dir.join(release)
}

/// Oracle: `xz -dc tdx-guest.ko.xz | strings | grep depends=` gives `depends=tsm`, and
/// tsm.ko gives `depends=configfs`; TPM drivers are built in (config `CONFIG_TCG_TIS=y`).
#[test]
fn kernel_6_12_tdx_guest_pulls_tsm_and_configfs_in_order() {
    let dir = kernel_modules("kernel-6.12");
    let mods = resolve(&dir, &["qemu_fw_cfg", "tdx_guest", "tpm_tis"]).unwrap();
    let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["qemu_fw_cfg", "configfs", "tsm", "tdx_guest"]);
    assert_eq!(
        mods[3].rel_path,
        "kernel/drivers/virt/coco/tdx-guest/tdx-guest.ko"
    );
    assert!(mods.iter().all(|m| m.data.starts_with(b"\x7fELF")));
}

#[test]
fn kernel_6_1_has_no_tdx_guest_module() {
    let dir = kernel_modules("kernel-6.1");
    let mods = resolve(&dir, &["qemu_fw_cfg", "configfs", "tdx_guest"]).unwrap();
    let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["qemu_fw_cfg", "configfs"]);
}
