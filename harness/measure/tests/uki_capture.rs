//! UKI boot events (OVMF → systemd-boot → UKI → kernel) checked against real vTPM event logs
//! captured by `mrlab run` (see `tests/data/uki-vtpm/README.md`), and against the Debian
//! packages they were built from (`.cache/debs`, fetched by `images/fetch.sh`).

mod common;

use common::Logged;
use measure::devpath::{ovmf, LOAD_OPTION_ACTIVE};
use measure::quirks::{Quirks, Version};
use measure::{pe, systemd, uefi, Event, EventType};
use sha2::{Digest, Sha256, Sha384};
use std::path::PathBuf;

/// A crypto-agile TCG2 log, as every vTPM capture here is.
fn parse(log: &[u8]) -> Vec<Logged> {
    common::records(log).expect("a crypto-agile log (Spec ID Event03)")
}

fn data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/uki-vtpm"))
}

fn capture(name: &str) -> Vec<Logged> {
    let path = data_dir().join(name);
    parse(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn deb(id: &str, rel: &str) -> Vec<u8> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/debs"))
        .join(id)
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run images/fetch.sh)", path.display()))
}

/// The predicted event equals the logged one: type, both digests and (when predicted) data.
fn assert_same(predicted: &Event, logged: &Logged) {
    assert_eq!(predicted.pcr, logged.pcr, "{}: PCR", predicted.label);
    assert_eq!(
        predicted.event_type.0, logged.event_type,
        "{}: type",
        predicted.label
    );
    assert_eq!(
        predicted.digests.sha256.map(|d| d.to_vec()),
        logged.sha256.clone(),
        "{}: sha256",
        predicted.label
    );
    assert_eq!(
        predicted.digests.sha384.map(|d| d.to_vec()),
        logged.sha384.clone(),
        "{}: sha384",
        predicted.label
    );
    if let Some(data) = &predicted.data {
        assert_eq!(data, &logged.data, "{}: event data", predicted.label);
    }
}

fn in_pcr(log: &[Logged], pcr: u32, event_type: EventType) -> Vec<&Logged> {
    log.iter()
        .filter(|e| e.pcr == pcr && e.event_type == event_type.0)
        .collect()
}

/// `images::UKI_OS_RELEASE`, the `.osrel` of every harness UKI.
const OSREL: &[u8] = b"ID=mrlab\nNAME=\"mrlab agent\"\nVERSION_ID=1\n";

#[test]
fn boot_options_for_a_virtio_disk_in_slot_1_match_both_firmwares() {
    for name in ["ovmf2022.11-systemd257.tcg2", "ovmf2025.02-systemd257.tcg2"] {
        let log = capture(name);
        let vars = in_pcr(&log, 1, EventType::EFI_VARIABLE_BOOT);
        assert_eq!(vars.len(), 4, "{name}: BootOrder and three options");
        assert_same(&uefi::boot_order(&[0, 1, 2]), vars[0]);
        let menu = ovmf::boot_manager_menu(ovmf::BootManagerMenu::UiApp);
        assert_same(&uefi::boot_option(0, &menu.encode().unwrap()), vars[1]);
        let disk = ovmf::misc_device(&[(1, 0)], 1);
        assert_same(&uefi::boot_option(1, &disk.encode().unwrap()), vars[2]);
        let shell =
            ovmf::fv_application(ovmf::UEFI_SHELL, "EFI Internal Shell", LOAD_OPTION_ACTIVE);
        assert_same(&uefi::boot_option(2, &shell.encode().unwrap()), vars[3]);
        // Another slot is another device path, hence another digest.
        let slot2 = uefi::boot_option(1, &ovmf::misc_device(&[(2, 0)], 1).encode().unwrap());
        assert_ne!(
            slot2.digests.sha256.map(|d| d.to_vec()),
            vars[2].sha256.clone()
        );
    }
}

#[test]
fn section_name_events_match_both_stubs() {
    for (name, sections) in [
        (
            "ovmf2022.11-systemd257.tcg2",
            &[".linux", ".osrel", ".cmdline", ".initrd", ".uname", ".sbat"][..],
        ),
        (
            "ovmf2022.11-systemd252.tcg2",
            &[".linux", ".osrel", ".cmdline", ".initrd"][..],
        ),
    ] {
        let log = capture(name);
        let ipl = in_pcr(&log, 11, EventType::IPL);
        assert_eq!(ipl.len(), 2 * sections.len(), "{name}: a pair per section");
        for (pair, section) in ipl.chunks(2).zip(sections) {
            let [name_event, _] = systemd::section_events(section, b"");
            assert_same(&name_event, pair[0]);
            assert_eq!(name_event.label, format!("uki:{section}:name"));
        }
    }
}

#[test]
fn section_data_events_match_the_uki_inputs() {
    let log = capture("ovmf2022.11-systemd257.tcg2");
    let ipl = in_pcr(&log, 11, EventType::IPL);
    let release = "6.12.95+deb12-amd64";
    let vmlinuz = deb("kernel-6.12", &format!("boot/vmlinuz-{release}"));
    for (at, section, data) in [
        (1, ".linux", vmlinuz.as_slice()),
        (3, ".osrel", OSREL),
        (5, ".cmdline", b"console=ttyS0".as_slice()),
        (9, ".uname", release.as_bytes()),
    ] {
        let [_, data_event] = systemd::section_events(section, data);
        assert_eq!(data_event.label, format!("uki:{section}"));
        assert_same(&data_event, ipl[at]);
    }
    // The kernel the stub starts from .linux is measured by firmware like any PE image.
    let apps = in_pcr(&log, 4, EventType::EFI_BOOT_SERVICES_APPLICATION);
    assert_eq!(apps.len(), 3, "systemd-boot, UKI, kernel");
    let kernel = pe::boot_services_application("kernel", &vmlinuz, None).unwrap();
    assert_same(&kernel, apps[2]);
}

#[test]
fn systemd_boot_image_and_loader_conf_match() {
    for (name, package, loader_conf) in [
        ("ovmf2022.11-systemd257.tcg2", "systemd-boot-257", true),
        ("ovmf2022.11-systemd252.tcg2", "systemd-boot-252", false),
    ] {
        let log = capture(name);
        let bootloader = deb(package, "usr/lib/systemd/boot/efi/systemd-bootx64.efi");
        let apps = in_pcr(&log, 4, EventType::EFI_BOOT_SERVICES_APPLICATION);
        let event = pe::boot_services_application("systemd-boot", &bootloader, None).unwrap();
        assert_same(&event, apps[0]);
        let tags = in_pcr(&log, 5, EventType::EVENT_TAG);
        if loader_conf {
            assert_eq!(tags.len(), 1, "{name}");
            assert_same(&systemd::loader_conf_event(b"timeout 0\n"), tags[0]);
        } else {
            assert!(
                tags.is_empty(),
                "{name}: systemd-boot 252 measures no loader.conf"
            );
        }
    }
}

#[test]
fn systemd_252_measures_the_passed_cmdline_into_pcr12_twice() {
    let log = capture("ovmf2022.11-systemd252.tcg2");
    let pcr12 = in_pcr(&log, 12, EventType::IPL);
    assert_eq!(pcr12.len(), 2);
    assert_same(
        &systemd::load_options_event("systemd-boot:cmdline", "console=ttyS0"),
        pcr12[0],
    );
    assert_same(
        &systemd::load_options_event("stub:cmdline", "console=ttyS0"),
        pcr12[1],
    );
    // Linux measures the same UTF-16 text with its NUL as LOADED_IMAGE::LoadOptions.
    let tags = in_pcr(&log, 9, EventType::EVENT_TAG);
    assert_eq!(tags[0].sha256, pcr12[0].sha256);
    assert!(in_pcr(&capture("ovmf2022.11-systemd257.tcg2"), 12, EventType::IPL).is_empty());
}

#[test]
fn os_release_cpio_is_the_one_read_back_from_guest_memory() {
    let captured = std::fs::read(data_dir().join("initrd-osrel-cpio-systemd257.bin")).unwrap();
    assert_eq!(systemd::extra_cpio("os-release", OSREL), captured);
}

#[test]
fn quirks_pick_the_observed_behaviour_per_systemd_version() {
    let q252 = Quirks::resolve(Some(Version(2022, 11)), None, Some(Version(252, 39)));
    let q257 = Quirks::resolve(Some(Version(2022, 11)), None, Some(Version(257, 13)));
    let present = [".linux", ".osrel", ".cmdline", ".initrd", ".uname", ".sbat"];
    let measured = |q: &Quirks| -> Vec<&str> {
        q.stub_measured_sections
            .iter()
            .copied()
            .filter(|s| present.contains(s))
            .collect()
    };
    assert_eq!(measured(&q252), [".linux", ".osrel", ".cmdline", ".initrd"]);
    assert_eq!(measured(&q257), present);
}

#[test]
fn mangled_cmdline_drops_control_characters_and_trailing_spaces() {
    assert_eq!(systemd::mangle_cmdline("a\tb \n"), "a b");
    assert_eq!(systemd::mangle_cmdline("console=ttyS0"), "console=ttyS0");
    // Independent oracle: the digest systemd logs is over UTF-16LE with its NUL.
    let event = systemd::load_options_event("stub:cmdline", "x");
    assert_eq!(
        event.digests.sha256.unwrap().to_vec(),
        Sha256::digest([b'x', 0, 0, 0]).to_vec()
    );
    assert_eq!(
        event.digests.sha384.unwrap().to_vec(),
        Sha384::digest([b'x', 0, 0, 0]).to_vec()
    );
}
