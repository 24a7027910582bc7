//! The predicted `-kernel` TD event log against a real TD's (dstack, QEMU 9.2.1, 64 GiB): same
//! types, registers and order; equal digests wherever our inputs are that TD's inputs (UEFI
//! variables, separators, actions, BootOrder/Boot0000, TD HOB). The capture is read at test time
//! from harness/fixtures.

mod common;

use measure::predict::{predict, Boot, Inputs, KernelBoot};
use measure::quirks::{Quirks, Version};
use measure::{EventType, Platform, Register};

const CAPTURE: &str = "tdx-json-eventlog/dstack-gpu-64g/quote-report.json";

struct CapturedEvent {
    register: Register,
    event_type: u32,
    digest: String,
}

fn capture() -> Vec<CapturedEvent> {
    let doc = evidence::dstack::parse_document(&common::fixture(CAPTURE))
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
    let cache = common::cache();
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
        firmware_strings: None,
        fw_cfg_files: &Default::default(),
        fw_cfg_boot_menu: None,
        boot: Boot::Kernel(KernelBoot {
            kernel: &kernel,
            initrd: Some(&measure::Digests::of(b"stand-in initrd")),
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
    use mrlab::judge::diagnose_td;
    use mrlab::prepare::prepare;
    use mrlab::recorded::TdEvidence;
    use mrlab::report::Verdict;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dstack-td.toml");
    std::fs::write(
        &path,
        "name = \"dstack-gpu-64g\"\ncpus = 16\nmemory = \"64G\"\nfirmware = \"ovmf-2022.11\"\n[machine]\nacpi_pci_hotplug = false\npic = false\n",
    )
    .unwrap();
    let scenario = mrlab::scenario::Scenario::load(&path).unwrap();
    let cache = common::cache();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let prepared = rt
        .block_on(prepare(&scenario, &cache, Platform::Tdx))
        .unwrap();
    let doc = evidence::dstack::parse_document(&common::fixture(CAPTURE)).unwrap();
    let quote = evidence::quote::parse(&doc.quote).unwrap();
    let td = TdEvidence {
        log: doc.event_log,
        registers: quote.body.td.registers(),
        source: "quote".into(),
    };
    let report = diagnose_td(&prepared, "dstack-td.toml", &td, PageOrder::TwoPass).unwrap();
    assert_eq!(report.verdict, Verdict::Fail, "{:?}", report.reason);
    let first = report.first_divergence.expect("a divergence");
    assert_eq!(first.label.as_deref(), Some("cfv"), "{first:?}");
    assert!(report.events.matched >= 12, "{:?}", report.events);
    assert_eq!(report.registers.len(), 4);
}

/// `mrlab diagnose --evidence DIR` on a TD's results folder (a CCEL and a quote, laid out as
/// `mrlab run --backend tdx` saves them; here the real GCE COS 113 capture) takes the TD judge:
/// the quote's registers are the actual ones, and the COS boot diverges from kernel-smoke's
/// prediction with a named event, not with a missing TPM log.
#[test]
fn diagnose_takes_a_td_results_folder_to_the_td_judge() {
    let fixtures = common::fixture_path("tdx-ccel/go-tdx-guest-cos-113");
    let results = tempfile::tempdir().unwrap();
    let evidence = results.path().join("evidence");
    for (from, to) in [
        ("ccel_data.dat", "ccel/data"),
        ("cos-113-tdx-quote.dat", "tdx/quote"),
    ] {
        let to = evidence.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixtures.join(from), &to).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mrlab"))
        .args(["diagnose", "--json", "--scenario"])
        .arg(common::scenario_path("kernel-smoke"))
        .arg("--evidence")
        .arg(results.path())
        .output()
        .expect("run mrlab diagnose");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("diagnose printed no JSON ({e}): {stderr}"));
    let report = &doc["scenarios"][0];
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(report["backend"], "tdx");
    assert_eq!(report["verdict"], "fail", "{report}");
    let reason = report["reason"].as_str().unwrap();
    assert!(reason.starts_with("first divergence: "), "{reason}");
    // expected.json of the fixture: the quote's RTMR0.
    assert_eq!(
        report["registers"][1]["actual"],
        "3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752afd17f6"
    );
}

/// dstack's guest agent leaves RTMR3 runtime digests empty in GetQuote responses. Built from the
/// real capture by blanking them: `replay`, `quote` and `diagnose` take the file, and the log
/// replays to the registers of the capture's signed quote (its expected.json).
#[test]
fn a_dstack_document_with_empty_runtime_digests_is_accepted_by_every_command() {
    let mut doc: serde_json::Value = serde_json::from_slice(&common::fixture(CAPTURE)).unwrap();
    let mut events: serde_json::Value =
        serde_json::from_str(doc["event_log"].as_str().unwrap()).unwrap();
    for e in events.as_array_mut().unwrap() {
        if e["event_type"] == evidence::dstack::RUNTIME_EVENT_TYPE {
            e["digest"] = "".into();
        }
    }
    doc["event_log"] = events.to_string().into();
    let dir = tempfile::tempdir().unwrap();
    let blanked = dir.path().join("quote-report.json");
    std::fs::write(&blanked, serde_json::to_vec(&doc).unwrap()).unwrap();
    let scenario = dir.path().join("dstack-td.toml");
    std::fs::write(
        &scenario,
        "name = \"dstack-gpu-64g\"\ncpus = 16\nmemory = \"64G\"\nfirmware = \"ovmf-2022.11\"\n[machine]\nacpi_pci_hotplug = false\npic = false\n",
    )
    .unwrap();
    let mrlab = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mrlab"))
            .args(args)
            .output()
            .expect("run mrlab");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stderr}"));
        (out.status.code(), json)
    };
    // RTMR0-3 of the capture's signed quote (fixture expected.json, `pair:` basis).
    let quote_rtmrs = [
        "2e3843265f8ecdd4e2282694747f6f2f111605c33f2a8882f5734ee6f3a6ce63d8f34aeef06093dcda76fa5f9d33d8d6",
        "a1b79d76021970f57c45c4a7c395f780bab37011a4df27fe44e8559bd1abb4d6e52f12f866d1d08405448eb797a5970f",
        "1e31b59d605df7ee8160cf7966be9bafa6d0e1905de7e09695a24cd9748e71a603a51fae1297619fa0c30517addbcd07",
        "0f787c3877f3e95095d5a4d13dd0fe0233803b30120d8469866719dc28f519ce021fe1e53459121e7a5a4443147185a8",
    ];
    let (code, replay) = mrlab(&["replay".as_ref(), blanked.as_os_str(), "--json".as_ref()]);
    assert_eq!(code, Some(0));
    for (i, rtmr) in quote_rtmrs.iter().enumerate() {
        assert_eq!(replay["registers"][format!("rtmr{i}")], *rtmr);
    }
    let (code, quote) = mrlab(&["quote".as_ref(), blanked.as_os_str(), "--json".as_ref()]);
    assert_eq!(code, Some(0));
    assert_eq!(quote["rtmr3"], quote_rtmrs[3]);
    // The log replays to the quote, so diagnose judges events: the first divergence is the CFV
    // (that TD's firmware had another CFV), as with the unmodified capture.
    let (code, diagnose) = mrlab(&[
        "diagnose".as_ref(),
        "--json".as_ref(),
        "--scenario".as_ref(),
        scenario.as_os_str(),
        "--event-log".as_ref(),
        blanked.as_os_str(),
    ]);
    let report = &diagnose["scenarios"][0];
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["backend"], "tdx");
    assert_eq!(report["first_divergence"]["label"], "cfv", "{report}");
}
