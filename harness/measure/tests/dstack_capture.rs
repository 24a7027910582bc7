//! Ground truth: the UEFI events of a real TD (dstack, OVMF direct kernel boot, 64 GiB) as
//! logged in `fixtures/tdx-json-eventlog/dstack-gpu-64g/quote-report.json`. Each predicted event
//! must have the capture's SHA-384 digest and, where the capture logs it, the same data.

use measure::uefi::{self, EfiAction, SecureBootVariable};
use measure::{Event, EventType};
use serde_json::Value;

const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/tdx-json-eventlog/dstack-gpu-64g/quote-report.json"
);

struct Logged {
    imr: u64,
    event_type: u32,
    digest: String,
    payload: Vec<u8>,
}

fn capture() -> Vec<Logged> {
    let text = std::fs::read_to_string(CAPTURE)
        .unwrap_or_else(|e| panic!("{CAPTURE}: {e} (the fixtures are in harness/fixtures)"));
    let doc: Value = serde_json::from_str(&text).expect("capture is JSON");
    // The event log is itself a JSON document stored as a string in some dstack versions.
    let log = match &doc["event_log"] {
        Value::String(s) => serde_json::from_str(s).expect("event_log string is JSON"),
        other => other.clone(),
    };
    log.as_array()
        .expect("event_log is an array")
        .iter()
        .map(|e| Logged {
            imr: e["imr"].as_u64().expect("imr"),
            event_type: e["event_type"].as_u64().expect("event_type") as u32,
            digest: e["digest"].as_str().expect("digest").to_string(),
            payload: hex::decode(e["event_payload"].as_str().expect("payload")).expect("hex"),
        })
        .collect()
}

fn of_type(log: &[Logged], event_type: EventType) -> Vec<&Logged> {
    log.iter()
        .filter(|e| e.event_type == event_type.0)
        .collect()
}

fn assert_same(predicted: &Event, logged: &Logged) {
    assert_eq!(
        predicted.digests.sha384_hex().as_deref(),
        Some(logged.digest.as_str()),
        "{}: digest",
        predicted.label
    );
    assert_eq!(
        predicted.data.as_deref(),
        Some(logged.payload.as_slice()),
        "{}: event data",
        predicted.label
    );
    assert_eq!(
        predicted.register().map(|r| r.mr_index() as u64 - 1),
        Some(logged.imr),
        "{}: register",
        predicted.label
    );
}

#[test]
fn secure_boot_variables_match_capture() {
    let log = capture();
    let logged = of_type(&log, EventType::EFI_VARIABLE_DRIVER_CONFIG);
    assert_eq!(logged.len(), 5, "SecureBoot, PK, KEK, db, dbx");
    // This TD's firmware has no SecureBoot variable and no keys enrolled: all five are empty.
    for (variable, logged) in SecureBootVariable::ALL.into_iter().zip(logged) {
        assert_same(&uefi::secure_boot_variable(variable, &[]), logged);
    }
}

#[test]
fn secure_boot_present_with_zero_differs_from_absent() {
    let absent = uefi::secure_boot_variable(SecureBootVariable::SecureBoot, &[]);
    let zero = uefi::secure_boot_variable(SecureBootVariable::SecureBoot, &[0]);
    assert_ne!(absent.digests, zero.digests);
}

#[test]
fn separators_match_capture() {
    let log = capture();
    let logged = of_type(&log, EventType::SEPARATOR);
    assert_eq!(logged.len(), 2, "one in RTMR0 (PCR7), one in RTMR1 (PCR4)");
    assert_same(&uefi::separator(7), logged[0]);
    assert_same(&uefi::separator(4), logged[1]);
}

#[test]
fn boot_order_matches_capture() {
    let log = capture();
    let logged = of_type(&log, EventType::EFI_VARIABLE_BOOT);
    // OVMF direct kernel boot: BootOrder holds the single entry 0000.
    assert_same(&uefi::boot_order(&[0]), logged[0]);
}

#[test]
fn actions_match_capture() {
    let log = capture();
    let logged = of_type(&log, EventType::EFI_ACTION);
    let actions = [
        EfiAction::CallingEfiApplication,
        EfiAction::ExitBootServicesInvocation,
        EfiAction::ExitBootServicesReturnedWithSuccess,
    ];
    assert_eq!(logged.len(), actions.len());
    for (action, logged) in actions.into_iter().zip(logged) {
        assert_same(&uefi::efi_action(action), logged);
    }
}

#[test]
fn boot0000_ui_app_matches_capture() {
    use measure::devpath::ovmf::{self, BootManagerMenu};
    let log = capture();
    let logged = of_type(&log, EventType::EFI_VARIABLE_BOOT);
    // OVMF edk2-stable202211 registers UiApp as the hidden boot manager menu, Boot0000.
    let option = ovmf::boot_manager_menu(BootManagerMenu::UiApp)
        .encode()
        .unwrap();
    assert_same(&uefi::boot_option(0, &option), logged[1]);
    assert_eq!(logged.len(), 2, "BootOrder and Boot0000 only");
}

#[test]
fn kernel_image_load_event_path_matches_capture() {
    use measure::devpath::ovmf;
    use measure::pe::ImageLoadEvent;
    let log = capture();
    let logged = of_type(&log, EventType::EFI_BOOT_SERVICES_APPLICATION);
    assert_eq!(logged.len(), 1, "the -kernel image");
    let load = ImageLoadEvent::decode(&logged[0].payload).unwrap();
    assert_eq!(
        load.device_path,
        ovmf::kernel_loader_file("kernel").encode().unwrap(),
        "VenMedia(QEMU kernel loader FS)/kernel"
    );
    assert_eq!(load.encode(), logged[0].payload);
}
