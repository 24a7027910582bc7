//! Stage tests that need the image cache (fetched packages and a QEMU, `ci/setup-host.sh`):
//! preparing a TD, and the TD judge on a real TD's record. They live here, not under `src/`, so
//! `cargo test --lib` runs on a bare checkout.

mod common;

use measure::Platform;
use mrlab::judge::judge_record;
use mrlab::prepare::prepare;
use mrlab::recorded;
use mrlab::report::Verdict;
use mrlab::resolve;
use mrlab::run;
use mrlab::scenario::Scenario;
use std::path::Path;

/// Predicting (and so diagnosing offline) a dstack TD, whose layout has a vhost-vsock,
/// needs no `/dev/vhost-vsock`: only a boot does.
#[test]
fn a_td_with_vsock_is_predicted_where_it_could_not_boot() {
    let scenario = Scenario::load(&common::scenario_path("dstack-preset")).unwrap();
    let cache = common::cache();
    let prepared = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(prepare(&scenario, &cache, Platform::Tdx))
        .expect("a TD prediction");
    assert_eq!(prepared.resolved.vm.vsock_host, qemu::VsockHost::Kernel);
    assert_eq!(
        prepared.resolved.vm.unsupported_reason().is_some(),
        !Path::new(qemu::vm::VHOST_VSOCK_DEVICE).exists()
    );
    assert_eq!(prepared.prediction.platform, Platform::Tdx);
    assert!(prepared
        .prediction
        .events
        .iter()
        .any(|e| e.label == "acpi:etc/acpi/tables"));
}

use common::fixture;

/// The real GCE TD capture (COS 113), packed as the agent would record it.
fn gce_td_record() -> agent::record::Record {
    let mut record = agent::record::Record::default();
    record.push(
        "ccel/data",
        fixture("tdx-ccel/go-tdx-guest-cos-113/ccel_data.dat"),
    );
    record.push(
        "tdx/quote",
        fixture("tdx-ccel/go-tdx-guest-cos-113/cos-113-tdx-quote.dat"),
    );
    record
}

/// The nightly TD lane's judge (`run::judge`, which `mrlab run --backend tdx` and e2e with
/// `MRLAB_BACKEND=tdx` call on a TD's serial log) on a real TD's record as the agent writes
/// it to the serial console: it reaches a verdict with the TD judge. The capture is a GCE
/// COS disk boot on Google's firmware, not the scenario's VM, so the verdict is a fail that
/// names the first diverging event and reports the TD's registers, not an error about a
/// missing TPM log.
#[test]
fn td_record_is_judged_by_the_td_judge() {
    let scenario = Scenario::load(&common::scenario_path("kernel-smoke")).unwrap();
    let cache = common::cache();
    let prepared = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(prepare(&scenario, &cache, measure::Platform::Tdx))
        .unwrap();
    let record = gce_td_record();
    let serial = format!(
        "[    1.0] boot noise\n{}\nreboot: Power down\n",
        agent::record::encode(&record)
    );
    let dir = tempfile::tempdir().unwrap();
    let report = run::judge(&prepared, "kernel-smoke", serial.as_bytes(), dir.path()).unwrap();
    assert_eq!(report.backend, "tdx");
    assert_eq!(report.verdict, Verdict::Fail, "{:?}", report.reason);
    let first = report.first_divergence.as_ref().expect("first divergence");
    let label = first.label.as_deref().expect("a predicted event's label");
    let register = first.register.as_deref().expect("a register");
    assert!(["rtmr0", "rtmr1", "rtmr2"].contains(&register), "{first:?}");
    assert_eq!(
        report.reason.as_deref(),
        Some(
            format!(
                "first divergence: {:?} `{label}` in {register}",
                first.outcome
            )
            .as_str()
        )
    );
    assert!(report.events.matched > 0 && report.events.mismatched > 0);
    // The registers compared are the quote's.
    let actual: Vec<(&str, &str)> = report
        .registers
        .iter()
        .map(|r| (r.name.as_str(), r.actual.as_deref().unwrap()))
        .collect();
    // expected.json of the fixture: the quote's MRTD and RTMR0.
    assert_eq!(
        actual[0],
        ("mrtd", "dae67181d3d65e073ad8f95b7907d5e927bfe9761c9ff3e9b89734a45d8954dba41394c7717cb2735396c1d04231f94a")
    );
    assert_eq!(
        actual[1],
        ("rtmr0", "3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752afd17f6")
    );
    assert!(report.registers.iter().all(|r| !r.matches));
    // The same record read back from the results folder judges the same way.
    let again = judge_record(
        &prepared,
        "kernel-smoke",
        &recorded::record_from_dir(dir.path()).unwrap(),
    )
    .unwrap();
    assert_eq!(again.verdict, Verdict::Fail);
    assert_eq!(again.reason, report.reason);

    // A vTPM record (no CCEL) given to the TD judge is an error that says what is missing.
    let mut vtpm = agent::record::Record::default();
    vtpm.push("tpm/binary_bios_measurements", vec![0u8; 8]);
    let err = mrlab::error::chain(&judge_record(&prepared, "kernel-smoke", &vtpm).unwrap_err());
    assert!(err.starts_with("no ccel/data"), "{err}");
}

#[test]
fn vtpm_vsock_falls_back_to_the_daemon_and_a_td_never_does() {
    let cache = common::cache();
    let s = Scenario::parse(
        "name = \"x\"\n[[devices]]\nkind = \"vhost-vsock\"\ncid = 3\n",
        Path::new("scenarios/x.toml"),
    )
    .expect("scenario");
    let vtpm = resolve::resolve(&s, &cache, true)
        .expect("resolves")
        .vm
        .vsock_host;
    if Path::new(qemu::vm::VHOST_VSOCK_DEVICE).exists() {
        assert_eq!(vtpm, qemu::VsockHost::Kernel);
    } else {
        assert_eq!(
            vtpm,
            qemu::VsockHost::User {
                daemon: resolve::vsock_daemon(&cache)
            }
        );
    }
    let td = resolve::resolve(&s, &cache, false)
        .expect("resolves")
        .vm
        .vsock_host;
    assert_eq!(td, qemu::VsockHost::Kernel);
}

/// GRUB 2.06 is pinned but refused for a shim + GRUB boot, saying why (no event log reaches
/// Linux), before any disk is built or QEMU started; 2.12 resolves with its quirk row.
#[test]
fn grub_206_is_refused_with_the_reason_and_212_resolves() {
    let cache = images::Cache::open(&images::workspace_root()).expect("lock");
    let scenario = |package: &str| {
        Scenario::parse(
            &format!(
                "name = \"g\"\nboot = \"grub\"\nkernel = \"kernel-6.12\"\n[grub]\npackage = \"{package}\"\n"
            ),
            Path::new("scenarios/g.toml"),
        )
        .expect("scenario")
    };
    let err = resolve::resolve(&scenario("grub-2.06"), &cache, true).expect_err("2.06 is refused");
    // The reason is the error's source (a ResolveError names scenario and key).
    let err = mrlab::error::chain(&err);
    assert!(err.contains("key `grub.package`"), "{err}");
    assert!(err.contains("TPMEventLog"), "{err}");
    let resolved = resolve::resolve(&scenario("grub-2.12"), &cache, true).expect("2.12");
    assert_eq!(resolved.quirks.grub_config_reads, 2);
    assert!(resolved.quirks.rows.contains(&"grub-config-measured-twice"));
}
