//! `mrlab diff` from OVMF 2025.02 to 2026.08 on the same -kernel VM lists exactly what the newer
//! firmware changes, and the new digests are the ones a real OVMF 2026.08 boot logged
//! (harness/fixtures/smbios: same QEMU 7.2, 1 vCPU, 2 GiB, kernel and command line).

mod common;

use serde_json::Value;
use std::process::Command;

use common::repo;

fn diff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mrlab"))
        .current_dir(repo())
        .arg("diff")
        .args(args)
        .output()
        .expect("run mrlab diff")
}

/// sha384 of the real log's event with this PCR and event type (the n-th such).
fn logged(log: &evidence::log::EventLog, pcr: u32, type_name: &str, nth: usize) -> String {
    log.events
        .iter()
        .filter(|e| e.event.pcr == pcr && e.event.event_type.name() == type_name)
        .nth(nth)
        .and_then(|e| e.event.digests.sha384_hex())
        .unwrap_or_else(|| panic!("no {type_name} #{nth} in PCR{pcr} of the real log"))
}

#[test]
fn ovmf_2025_02_to_2026_08_lists_exactly_the_new_firmware_s_changes() {
    let out = diff(&[
        "scenarios/kernel-ovmf2025.toml",
        "--firmware",
        "ovmf-2026.08",
        "--platform",
        "vtpm",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    let changes: Vec<(String, String, Option<String>)> = doc["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_owned(),
                c["label"].as_str().unwrap().to_owned(),
                c["b"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let listed: Vec<(&str, &str)> = changes
        .iter()
        .map(|(k, l, _)| (k.as_str(), l.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            ("added", "crtm:version"),
            ("added", "smbios:tables"),
            ("changed", "efi:BootOrder"),
            ("changed", "boot:Boot0000"),
            ("added", "boot:Boot0001"),
            ("changed", "linux:cmdline"),
        ]
    );
    assert_eq!(doc["unchanged"], 22);
    assert_eq!(
        doc["quirks"]["added"],
        serde_json::json!([
            "ovmf-crtm-version-is-firmware-version",
            "ovmf-smbios-measured",
            "ovmf-boot-manager-menu-app",
            "ovmf-kernel-initrd-option-first",
            // TD only: no vTPM event changes with it.
            "ovmf-td-fw-cfg-items-measured"
        ])
    );
    assert_eq!(
        doc["quirks"]["removed"],
        serde_json::json!(["ovmf-crtm-version-unknown"])
    );

    // The new side's digests are what OVMF 2026.08 logged on a real boot of the same VM shape.
    let bytes = std::fs::read(common::fixture_path(
        "smbios/ovmf-2026.08-qemu-7.2-binary_bios_measurements",
    ))
    .expect("fixture log");
    let log = evidence::log::parse(&bytes, evidence::log::Format::Tcg2).expect("log");
    let real = [
        logged(&log, 0, "EV_S_CRTM_VERSION", 0),
        logged(&log, 1, "EV_EFI_HANDOFF_TABLES", 0),
        logged(&log, 1, "EV_EFI_VARIABLE_BOOT", 0),
        logged(&log, 1, "EV_EFI_VARIABLE_BOOT", 1),
        logged(&log, 1, "EV_EFI_VARIABLE_BOOT", 2),
        logged(&log, 9, "EV_EVENT_TAG", 0),
    ];
    for ((_, label, b), real) in changes.iter().zip(&real) {
        assert_eq!(b.as_deref(), Some(real.as_str()), "{label}");
    }
}

#[test]
fn a_diff_without_a_second_side_is_an_error() {
    let out = diff(&["scenarios/kernel-smoke.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a second scenario or at least one of --firmware, --qemu, --stub"),
        "{err}"
    );
    // The same scenario against itself has no change.
    let out = diff(&[
        "scenarios/kernel-smoke.toml",
        "scenarios/kernel-smoke.toml",
        "--json",
    ]);
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["changes"], serde_json::json!([]));
}
