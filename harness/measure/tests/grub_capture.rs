//! shim + GRUB boot events checked against a real vTPM event log captured by this project
//! (`tests/data/grub-vtpm/README.md`), from the Debian packages it booted (`.cache/debs`,
//! fetched by `images/fetch.sh`).

mod common;

use common::Logged;
use measure::grub::{self, GrubFiles};
use measure::{pe, Digests, Event, EventType};
use std::path::PathBuf;

fn capture() -> Vec<Logged> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/grub-vtpm"))
        .join("ovmf2022.11-shim16.1-grub2.12.tcg2");
    common::records(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .expect("a crypto-agile log")
}

fn deb(id: &str, rel: &str) -> Vec<u8> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/debs"))
        .join(id)
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run images/fetch.sh)", path.display()))
}

fn shim() -> Vec<u8> {
    deb("shim-16.1", "usr/lib/shim/shimx64.efi.signed")
}

/// Type, both digests and data equal.
fn assert_same(predicted: &Event, logged: &Logged) {
    let label = &predicted.label;
    assert_eq!(
        (predicted.pcr, predicted.event_type.0),
        (logged.pcr, logged.event_type),
        "{label}"
    );
    assert_eq!(
        predicted.digests.sha256.map(|d| d.to_vec()),
        logged.sha256,
        "{label}: sha256"
    );
    assert_eq!(
        predicted.digests.sha384.map(|d| d.to_vec()),
        logged.sha384,
        "{label}: sha384"
    );
    assert_eq!(predicted.data.as_ref(), Some(&logged.data), "{label}: data");
}

/// The logged events from shim's own measurement to the ExitBootServices actions.
fn after_shim(log: &[Logged]) -> &[Logged] {
    let first = log
        .iter()
        .position(|e| e.pcr == 14)
        .expect("shim's PCR14 events");
    &log[first..]
}

#[test]
fn shim_and_grub_images_are_measured_by_authenticode() {
    let log = capture();
    let apps: Vec<&Logged> = log
        .iter()
        .filter(|e| e.event_type == EventType::EFI_BOOT_SERVICES_APPLICATION.0)
        .collect();
    assert_eq!(apps.len(), 2, "shim and GRUB; GRUB loads the kernel itself");
    let grub = deb(
        "grub-2.12",
        "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
    );
    for (image, logged) in [(shim(), apps[0]), (grub, apps[1])] {
        let digests = pe::authenticode(&image).unwrap();
        assert_eq!(digests.sha256.map(|d| d.to_vec()), logged.sha256);
        assert_eq!(digests.sha384.map(|d| d.to_vec()), logged.sha384);
    }
}

#[test]
fn shims_mok_databases_and_sbat_level_match_the_capture() {
    let log = capture();
    let predicted = grub::shim_events(&shim()).unwrap();
    let logged = after_shim(&log);
    assert_eq!(predicted.len(), 4);
    for (p, l) in predicted.iter().zip(logged) {
        assert_same(p, l);
    }
}

#[test]
fn grubs_config_commands_and_files_match_the_capture() {
    let log = capture();
    let cfg = grub::config(&[], "console=ttyS0");
    let kernel = deb("kernel-6.12", "boot/vmlinuz-6.12.95+deb12-amd64");
    // The initrd is the agent initramfs of that boot: its digest is taken from the log, the
    // prediction of its event's place, name and type is what is checked here.
    let grub_logged: Vec<&Logged> = log
        .iter()
        .filter(|e| e.event_type == EventType::IPL.0 && (e.pcr == 8 || e.pcr == 9))
        .collect();
    let initrd_logged = grub_logged
        .iter()
        .find(|e| e.data == b"/initrd.img\0")
        .expect("the initrd event");
    let initrd = Digests {
        sha256: initrd_logged
            .sha256
            .as_deref()
            .map(|d| d.try_into().unwrap()),
        sha384: initrd_logged
            .sha384
            .as_deref()
            .map(|d| d.try_into().unwrap()),
    };
    let files = GrubFiles {
        config: cfg.as_bytes(),
        kernel: &kernel,
        initrd: &initrd,
    };
    let (predicted, linux_cmdline) = grub::grub_events(&files, 2).unwrap();
    assert_eq!(predicted.len(), grub_logged.len());
    for (p, l) in predicted.iter().zip(&grub_logged) {
        assert_same(p, l);
    }
    assert_eq!(
        linux_cmdline.as_deref(),
        Some("BOOT_IMAGE=/vmlinuz console=ttyS0")
    );
}

#[test]
fn a_changed_command_line_changes_grubs_events() {
    let initrd = Digests::of(b"");
    let events = |cmdline: &str| {
        let cfg = grub::config(&[], cmdline);
        let files = GrubFiles {
            config: cfg.as_bytes(),
            kernel: b"",
            initrd: &initrd,
        };
        grub::grub_events(&files, 2).unwrap().0
    };
    let (right, wrong) = (events("console=ttyS0"), events("console=ttyS0 quiet"));
    let differ: Vec<&str> = right
        .iter()
        .zip(&wrong)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.label.as_str())
        .collect();
    assert_eq!(
        differ,
        [
            "grub:file:/EFI/debian/grub.cfg",
            "grub:file:/EFI/debian/grub.cfg",
            "grub:cmd",
            "grub:kernel_cmdline"
        ]
    );
}

/// Every shim and GRUB event of the capture gets the label its prediction has, from its own
/// data: an event the prediction lacks is still named.
#[test]
fn logged_shim_and_grub_events_are_named_like_the_predicted_ones() {
    let labels: Vec<String> = capture()
        .iter()
        .filter_map(|l| {
            grub::logged_label(&Event {
                pcr: l.pcr,
                event_type: EventType(l.event_type),
                digests: Digests::default(),
                data: Some(l.data.clone()),
                label: String::new(),
                varies_with: Vec::new(),
                platforms: measure::Platforms::BOTH,
            })
        })
        .collect();
    assert_eq!(
        labels,
        [
            "shim:MokList",
            "shim:MokListX",
            "shim:SbatLevel",
            "shim:MokListTrusted",
            "grub:file:/EFI/debian/grub.cfg",
            "grub:file:/EFI/debian/grub.cfg",
            "grub:cmd",
            "grub:file:/vmlinuz",
            "grub:kernel_cmdline",
            "grub:cmd",
            "grub:file:/initrd.img",
            "grub:cmd",
        ]
    );
}
