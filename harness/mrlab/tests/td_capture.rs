//! The predicted `-kernel` TD event log against a real TD's (dstack, QEMU 9.2.1, 64 GiB): same
//! types, registers and order; equal digests wherever our inputs are that TD's inputs (UEFI
//! variables, separators, actions, BootOrder/Boot0000, TD HOB). The capture is read at test time
//! from harness/fixtures.

use measure::predict::{predict, Boot, Inputs, KernelBoot};
use measure::quirks::{Quirks, Version};
use measure::{EventType, Platform, Register};

const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/tdx-json-eventlog/dstack-gpu-64g/quote-report.json"
);

struct CapturedEvent {
    register: Register,
    event_type: u32,
    digest: String,
}

fn capture() -> Vec<CapturedEvent> {
    let doc = evidence::dstack::parse_document(
        &std::fs::read(CAPTURE).expect("fixture in harness/fixtures"),
    )
    .expect("dstack document parses");
    doc.event_log
        .events
        .iter()
        .filter(|e| e.register != Some(Register::Rtmr3))
        .map(|e| CapturedEvent {
            register: e.register.expect("boot events are in RTMR0-2"),
            event_type: e.event.event_type.0,
            digest: e.event.digests.sha384_hex().expect("sha384"),
        })
        .collect()
}

#[test]
fn predicted_kernel_boot_has_the_td_capture_shape_and_digests() {
    let cache =
        images::Cache::open(&images::workspace_root()).expect("image cache (run images/fetch.sh)");
    let firmware = std::fs::read(cache.firmware("ovmf-2022.11").unwrap()).unwrap();
    let kernel = std::fs::read(cache.kernel("kernel-6.1").unwrap().vmlinuz).unwrap();
    // The TD's firmware does not set SecureBoot (like OVMF 2025.02): take that quirk set.
    let quirks = Quirks::resolve(Some(Version(2025, 2)), Some(Version(9, 2)), None);
    let acpi: Vec<(String, &[u8])> = ["etc/table-loader", "etc/acpi/rsdp", "etc/acpi/tables"]
        .iter()
        .map(|n| (n.to_string(), &b"stand-in"[..]))
        .collect();
    let prediction = predict(&Inputs {
        platform: Platform::Tdx,
        quirks: &quirks,
        firmware: &firmware,
        memory: 64 << 30,
        acpi_blobs: acpi,
        option_roms: Vec::new(),
        boot: Boot::Kernel(KernelBoot {
            kernel: &kernel,
            initrd: Some(b"stand-in initrd"),
            cmdline: "console=ttyS0",
        }),
    })
    .expect("prediction");

    let captured = capture();
    assert_eq!(prediction.events.len(), captured.len(), "event count");
    let mut equal = Vec::new();
    for (i, (p, c)) in prediction.events.iter().zip(&captured).enumerate() {
        assert_eq!(
            p.register(),
            Some(c.register),
            "event {i} ({}) register",
            p.label
        );
        assert_eq!(p.event_type.0, c.event_type, "event {i} ({}) type", p.label);
        if p.digests.sha384_hex().as_deref() == Some(c.digest.as_str()) {
            equal.push(p.label.clone());
        }
    }
    // Inputs shared with that TD: these digests must be equal.
    for label in [
        "td_hob",
        "efi:SecureBoot",
        "efi:PK",
        "efi:KEK",
        "efi:db",
        "efi:dbx",
        "separator:pcr7",
        "efi:BootOrder",
        "boot:Boot0000",
        "action:calling-efi-app",
        "separator:pcr4",
        "action:exit-boot-services-invocation",
        "action:exit-boot-services-returned",
    ] {
        assert!(
            equal.iter().any(|l| l == label),
            "{label} differs from the TD capture; equal: {equal:?}"
        );
    }
    // Inputs that are not that TD's (our kernel, initrd, cmdline, ACPI stand-ins) must differ:
    // the comparison above is not vacuous.
    for label in ["pe:kernel", "linux:initrd", "acpi:etc/acpi/tables"] {
        assert!(
            !equal.iter().any(|l| l == label),
            "{label} unexpectedly equal"
        );
    }
    assert!(prediction
        .events
        .iter()
        .any(|e| e.event_type == EventType::EFI_HANDOFF_TABLES2));
}

/// `mrlab diagnose` on the real TD capture, with a scenario describing that TD as far as this
/// host can (OVMF 2022.11, whose TD HOB layout that TD used; 16 vCPUs, 64 GiB): the log replays
/// to the quote's RTMRs, the TD HOB and the variables match, and the first divergence is the CFV
/// (that TD's firmware had another CFV).
#[test]
fn diagnose_names_the_first_divergence_of_the_td_capture() {
    use measure::tdvf::PageOrder;
    use mrlab::diagnose::{diagnose_td, TdEvidence};
    use mrlab::report::Verdict;
    use mrlab::run::{prepare, Preparation};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dstack-td.toml");
    std::fs::write(
        &path,
        "name = \"dstack-gpu-64g\"\ncpus = 16\nmemory = \"64G\"\nfirmware = \"ovmf-2022.11\"\n[machine]\nacpi_pci_hotplug = false\npic = false\n",
    )
    .unwrap();
    let scenario = mrlab::scenario::Scenario::load(&path).unwrap();
    let cache = images::Cache::open(&images::workspace_root()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Preparation::Ready(prepared) = rt
        .block_on(prepare(&scenario, &cache, Platform::Tdx))
        .unwrap()
    else {
        panic!("not skippable")
    };
    let doc = evidence::dstack::parse_document(&std::fs::read(CAPTURE).unwrap()).unwrap();
    let quote = evidence::quote::parse(&doc.quote).unwrap();
    let td = TdEvidence {
        log: doc.event_log,
        mrtd: quote.body.mrtd,
        rtmrs: quote.body.rtmrs,
        source: "quote".into(),
    };
    let report = diagnose_td(&prepared, "dstack-td.toml", &td, PageOrder::TwoPass).unwrap();
    assert_eq!(report.verdict, Verdict::Fail, "{:?}", report.reason);
    let first = report.first_divergence.expect("a divergence");
    assert_eq!(first.label.as_deref(), Some("cfv"), "{first:?}");
    assert!(report.events.matched >= 12, "{:?}", report.events);
    assert_eq!(report.registers.len(), 4);
}
