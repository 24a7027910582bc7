//! A scenario on a managed QEMU resolves to the binary of its root under `.cache/roots`
//! (`images/fetch.sh` must have run), started through the root's own loader, data dirs and
//! modules, and that binary answers as the version the lock pins. Here, not in the crate's unit
//! tests, because it reads the image cache and runs QEMU.

mod common;

use measure::quirks::Version;
use mrlab::scenario::Scenario;

#[test]
fn managed_qemu_is_the_root_binary_with_its_own_loader_data_and_modules() {
    let cache = common::cache();
    // nic-1: one virtio-net NIC, whose option ROM must come from the root too.
    let mut scenario = Scenario::load(&common::scenario_path("nic-1")).expect("scenario");
    scenario.qemu = "qemu-10.0".into();
    let resolved = mrlab::resolve::resolve(&scenario, &cache, false)
        .unwrap_or_else(|e| panic!("{e} (run images/fetch.sh)"));
    let q = &resolved.qemu_binary;
    let root = cache.program_root("qemu-10.0").expect("fetched");
    assert_eq!(q.program, root.join("usr/bin/qemu-system-x86_64"));
    let loader = q
        .loader
        .as_ref()
        .expect("started through its root's loader");
    assert!(loader.path.starts_with(&root), "{loader:?}");
    assert!(loader.library_path.iter().all(|d| d.starts_with(&root)));
    assert_eq!(q.data_dirs[0], root.join("usr/share/qemu"));
    assert!(q.data_dirs.iter().all(|d| d.starts_with(&root)));
    assert_eq!(
        q.env,
        [(
            "QEMU_MODULE_DIR".to_string(),
            root.join("usr/lib/x86_64-linux-gnu/qemu")
        )]
    );
    // resolve takes a managed root's version from the lock (qemu-system-x86 1:10.0.2+ds-…)
    // without asking the binary.
    assert_eq!(resolved.qemu_version, Some(Version(10, 0)));
    // Its own data dir is searched first, and the NIC's efi-virtio.rom comes from the root's
    // own ipxe-qemu, never from the host.
    let help = q.output_once(&["-L", "help"]).expect("-L help");
    assert!(help.status.success(), "{help:?}");
    let first = String::from_utf8_lossy(&help.stdout)
        .lines()
        .next()
        .map(str::to_owned);
    assert_eq!(first, Some(q.data_dirs[0].display().to_string()));
    let roms = &resolved.option_roms;
    assert_eq!(roms.len(), 1);
    assert!(roms[0].1.ends_with("efi-virtio.rom"), "{roms:?}");
    assert!(roms[0].1.starts_with(&root), "{roms:?}");
}

/// resolve trusts the lock for a managed root's version; each root's binary must say the same.
#[test]
fn each_managed_qemu_reports_the_version_its_lock_pins() {
    let cache = common::cache();
    let ids: Vec<&str> = cache
        .roots()
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| id.starts_with("qemu-"))
        .collect();
    assert!(ids.len() >= 3, "{ids:?}");
    for id in ids {
        let locked = cache
            .root_package_version(id, "qemu-system-x86")
            .unwrap_or_else(|| panic!("{id} pins qemu-system-x86"));
        let q = cache
            .qemu(id)
            .unwrap_or_else(|e| panic!("{e} (run images/fetch.sh)"));
        let out = q.output_once(&["--version"]).expect("--version");
        assert!(out.status.success(), "{id}: {out:?}");
        // `QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)`
        let text = String::from_utf8_lossy(&out.stdout);
        let said = text
            .split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
            .and_then(Version::parse);
        assert_eq!(
            said,
            Version::parse(locked),
            "{id}: lock {locked}, binary {text}"
        );
        assert!(
            text.contains(locked),
            "{id}: {text} names its Debian version {locked}"
        );
    }
}
