//! Error chains as a human reads them (`mrlab`'s `main`, `error::chain`): each cause follows
//! once. A message that also prints its own source (the old `"fw_cfg oracle: {0}"` over a
//! `#[from]`) shows that cause twice. These walk real chains: files that are missing or
//! corrupt, a QEMU that cannot start, through the stages that report them.

mod common;

use measure::Platform;
use mrlab::error::chain;
use mrlab::scenario::Scenario;
use std::error::Error;

/// The first error of `e`'s chain whose own message holds its source's message.
fn repeated_cause(e: &dyn Error) -> Option<String> {
    let mut current = e;
    while let Some(source) = current.source() {
        let (own, cause) = (current.to_string(), source.to_string());
        if own.contains(&cause) {
            return Some(format!("{own:?} repeats its cause {cause:?}"));
        }
        current = source;
    }
    None
}

/// `e`'s chain as one line, after checking that no cause repeats.
fn each_cause_once(e: &dyn Error) -> String {
    let text = chain(e);
    if let Some(repeat) = repeated_cause(e) {
        panic!("{repeat}, in: {text}");
    }
    text
}

/// The check fails on the doubled form these errors had.
#[test]
fn a_message_that_prints_its_source_is_caught() {
    #[derive(Debug, thiserror::Error)]
    enum OldOracleError {
        #[error("fw_cfg oracle: {0}")]
        Swtpm(#[from] qemu::swtpm::SwtpmError),
    }
    let spawn = || qemu::swtpm::SwtpmError::Spawn {
        program: "swtpm",
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    };
    let old = OldOracleError::from(spawn());
    assert!(repeated_cause(&old).is_some(), "{}", chain(&old));
    assert_eq!(
        chain(&old),
        "fw_cfg oracle: cannot run swtpm: cannot run swtpm: entity not found"
    );
    // The same cause through today's errors, as a boot of `mrlab run` reports it.
    let now = qemu::OracleError::from(spawn());
    assert_eq!(
        each_cause_once(&now),
        "fw_cfg oracle: cannot run swtpm: entity not found"
    );
}

fn kernel_smoke_with(line: &str) -> Scenario {
    let path = common::scenario_path("kernel-smoke");
    let text = std::fs::read_to_string(&path).unwrap() + line + "\n";
    Scenario::parse(&text, &path).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn a_missing_firmware_file_through_prepare() {
    let mut scenario = kernel_smoke_with("");
    scenario.firmware = "/no/such/OVMF.fd".into();
    let e = runtime()
        .block_on(mrlab::prepare::prepare(
            &scenario,
            &common::cache(),
            Platform::Vtpm,
        ))
        .err()
        .expect("no firmware, no preparation");
    assert_eq!(
        each_cause_once(&e),
        "scenario kernel-smoke: key `firmware`: /no/such/OVMF.fd: no such file"
    );
}

/// The fw_cfg oracle's QEMU that cannot start: the io error once, under the oracle's words.
#[test]
fn a_qemu_that_cannot_start_through_the_oracle() {
    let scenario = kernel_smoke_with("");
    let mut resolved = mrlab::resolve::resolve(&scenario, &common::cache(), false).unwrap();
    resolved.qemu_binary = qemu::QemuBinary::at("/no/such/qemu-system-x86_64");
    let e = runtime()
        .block_on(mrlab::prepare::prepare_resolved(resolved, Platform::Tdx))
        .err()
        .expect("no QEMU, no oracle");
    let text = each_cause_once(&e);
    assert!(
        text.starts_with("fw_cfg oracle: cannot start /no/such/qemu-system-x86_64: "),
        "{text}"
    );
    assert_eq!(text.matches("fw_cfg oracle").count(), 1, "{text}");
}

/// Recorded evidence that is missing or corrupt names the folder or entry, then the cause.
#[test]
fn a_missing_or_corrupt_record_through_recorded() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("no-such-results");
    let e = mrlab::recorded::record_from_dir(&missing).unwrap_err();
    let text = each_cause_once(&e);
    assert!(
        text.starts_with(&format!(
            "{}: cannot list the evidence folder: ",
            missing.display()
        )),
        "{text}"
    );

    let ccel = root.path().join("evidence/ccel");
    std::fs::create_dir_all(&ccel).unwrap();
    std::fs::write(ccel.join("data"), b"not a CCEL").unwrap();
    let record = mrlab::recorded::record_from_dir(root.path()).unwrap();
    let e = mrlab::recorded::TdEvidence::from_record(&record)
        .err()
        .expect("a corrupt CCEL");
    let text = each_cause_once(&e);
    assert!(text.starts_with("ccel/data: "), "{text}");
    assert!(
        e.source().is_some(),
        "the parser's error is the cause: {text}"
    );
}

/// A snapshot folder without a manifest, or with one that is not JSON.
#[test]
fn a_missing_or_corrupt_manifest_through_snapshot() {
    let scenario = kernel_smoke_with("");
    let cache = common::cache();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join(mrlab::snapshot::MANIFEST);
    let prepare = || {
        mrlab::snapshot::prepare(&scenario, &cache, Platform::Vtpm, dir.path())
            .err()
            .expect("refused")
    };
    let text = each_cause_once(&prepare());
    assert!(
        text.starts_with(&format!("{}: ", manifest.display())),
        "{text}"
    );
    std::fs::write(&manifest, "{ not json").unwrap();
    let text = each_cause_once(&prepare());
    assert!(
        text.starts_with(&format!("{}: not JSON: ", manifest.display())),
        "{text}"
    );
}
