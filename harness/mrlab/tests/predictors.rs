//! External predictors (`--predictor`): one real boot judged with a generic predictor that
//! agrees, then the same results folder re-judged through `mrlab diagnose` with predictors that
//! are wrong, crash or print garbage; and the dstack-mr adapter against a stub that records what
//! it was given (no boot: resolving and the fw_cfg oracle are enough).

mod common;

use measure::Register;
use mrlab::predictors::{self, Prediction, Predictor};
use mrlab::report::predictors::Status;
use mrlab::report::Verdict;
use mrlab::run::{self, Options};
use mrlab::scenario::Scenario;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{cache, data, scenario_path};

fn work(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("predictors")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A command predictor that asks the built `mrlab predict --platform tdx --json` and reshapes
/// it, optionally with one register wrong.
fn reshape(name: &str, scenario: &Path, extra: &str) -> String {
    format!(
        "{name}=python3 '{}' '{}' '{}' {extra}",
        data("predictors/reshape.py").display(),
        env!("CARGO_BIN_EXE_mrlab"),
        scenario.display()
    )
}

/// `mrlab diagnose --json` with one predictor: (exit code, the scenario's report).
fn diagnose(scenario: &Path, evidence: &Path, predictor: &str) -> (Option<i32>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_mrlab"))
        .args(["diagnose", "--json", "--scenario"])
        .arg(scenario)
        .arg("--evidence")
        .arg(evidence)
        .args(["--predictor", predictor])
        .output()
        .expect("run mrlab diagnose");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "diagnose printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), doc["scenarios"][0].clone())
}

#[test]
fn generic_predictors_agree_fail_or_error_by_name() {
    let path = scenario_path("kernel-smoke");
    let results = work("generic");
    let agrees: Predictor = reshape("reshape", &path, "").parse().unwrap();
    let opts = Options {
        results: results.clone(),
        platform: measure::Platform::Vtpm,
        accel: qemu::argv::Accel::Tcg,
        predictors: vec![agrees],
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(run::run_file(&path, &cache(), &opts)).report;
    assert_eq!(report.verdict, Verdict::Pass, "{:?}", report.reason);
    let [row] = report.predictors.as_slice() else {
        panic!("one predictor row: {:?}", report.predictors)
    };
    assert_eq!(
        (row.status, row.reference.as_str()),
        (Status::Match, "builtin (vtpm-verified)")
    );
    let names: Vec<&str> = row.registers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["mrtd", "rtmr0", "rtmr1", "rtmr2"]);
    assert!(row.registers.iter().all(|r| r.matches == Some(true)));
    // The predictor read the inputs the harness wrote for it, and the report keeps the rows.
    let inputs: Value = serde_json::from_slice(
        &std::fs::read(results.join("kernel-smoke/predictors/reshape/inputs.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (&inputs["cpus"], &inputs["memory"], &inputs["cmdline"]),
        (
            &Value::from(1),
            &Value::from(2u64 << 30),
            &Value::from("console=ttyS0")
        )
    );
    let saved = std::fs::read_to_string(results.join("kernel-smoke/report.json")).unwrap();
    assert!(saved.contains("\"predictors\""), "{saved}");

    // The same evidence, offline, with predictors that must not pass.
    let evidence = results.join("kernel-smoke");
    let (code, wrong) = diagnose(&path, &evidence, &reshape("wrong", &path, "--wrong rtmr1"));
    assert_eq!((code, wrong["verdict"].as_str()), (Some(1), Some("fail")));
    assert_eq!(
        wrong["reason"].as_str(),
        Some("predictor `wrong`: rtmr1 differs from builtin (vtpm-verified)")
    );
    let (code, crashed) = diagnose(&path, &evidence, "crashes=echo dying >&2; exit 1");
    assert_eq!(
        (code, crashed["verdict"].as_str()),
        (Some(1), Some("error"))
    );
    let why = crashed["reason"].as_str().unwrap();
    assert!(
        why.contains("predictor `crashes` failed") && why.contains("dying"),
        "{why}"
    );
    let (code, garbage) = diagnose(&path, &evidence, "garbage=echo MRTD: 00");
    assert_eq!(
        (code, garbage["verdict"].as_str()),
        (Some(1), Some("error"))
    );
    let why = garbage["reason"].as_str().unwrap();
    assert!(
        why.contains("predictor `garbage` failed") && why.contains("not a JSON object"),
        "{why}"
    );
}

fn stub() -> Predictor {
    format!(
        "dstack-mr={}",
        data("predictors/dstack-mr-stub.py").display()
    )
    .parse()
    .unwrap()
}

fn record(dir: &Path) -> Value {
    let path = dir.join("record.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// `--flag value` pairs of the stub's argv, and the positional metadata path last.
fn flags(argv: &Value) -> (BTreeMap<String, String>, String) {
    let argv: Vec<&str> = argv
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let (last, rest) = argv.split_last().unwrap();
    assert_eq!(&rest[..2], ["measure", "--json"], "{argv:?}");
    let map = rest[2..]
        .chunks(2)
        .map(|pair| (pair[0].to_string(), pair[1].to_string()))
        .collect();
    (map, last.to_string())
}

fn canonical(p: &Path) -> String {
    std::fs::canonicalize(p).unwrap().display().to_string()
}

/// The adapter maps a dstack-shaped VM onto dstack-mr's flags and image folder; the expected
/// values are read off tests/data/dstack-shaped.toml by hand.
#[test]
fn dstack_mr_adapter_maps_the_vm() {
    let scenario = Scenario::load(&data("dstack-shaped.toml")).unwrap();
    let resolved = mrlab::resolve::resolve(&scenario, &cache(), false).unwrap();
    let dir = work("dstack-shaped");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let oracle = BTreeMap::from([("etc/acpi/tables".to_string(), b"DSDT".to_vec())]);
    let prediction = rt.block_on(predictors::exec::predict(
        &stub(),
        &resolved,
        &oracle,
        measure::tdvf::PageOrder::SinglePass,
        &dir,
    ));
    let rec = record(&dir);
    let (flags, metadata_path) = flags(&rec["argv"]);
    let old_qemu = resolved
        .qemu_version
        .is_none_or(|v| v < measure::quirks::Version(8, 0));
    let mut want: BTreeMap<String, String> = [
        ("--cpu", "2"),
        ("--memory", "3221225472"),
        ("--two-pass-add-pages", "false"),
        ("--pic", "true"),
        ("--smm", "false"),
        ("--hotplug-off", "true"),
        ("--pci-hole64-size", "1073741824"),
        ("--num-nics", "2"),
        ("--num-verity-volumes", "1"),
        ("--root-verity", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(v) = resolved.qemu_version.filter(|_| !old_qemu) {
        want.insert("--qemu-version".into(), format!("{}.{}.0", v.0, v.1));
    }
    assert_eq!(flags, want);
    assert!(metadata_path.ends_with("/image/metadata.json"));
    assert_eq!(
        rec["metadata"]["cmdline"].as_str(),
        Some("console=ttyS0 dstack.rootfs_hash=00")
    );
    let qemu::vm::Boot::Kernel { kernel, initrd, .. } = &resolved.vm.boot else {
        panic!("kernel boot")
    };
    assert_eq!(
        rec["files"]["kernel"].as_str(),
        Some(canonical(kernel).as_str())
    );
    assert_eq!(
        rec["files"]["initrd"].as_str(),
        Some(canonical(initrd.as_deref().unwrap()).as_str())
    );
    assert_eq!(
        rec["files"]["bios"].as_str(),
        Some(canonical(&resolved.vm.firmware).as_str())
    );
    let Prediction::Registers {
        registers,
        unsupported,
    } = prediction
    else {
        panic!("{prediction:?}")
    };
    assert_eq!(
        (
            registers.get(Register::Mrtd),
            registers.get(Register::Rtmr2)
        ),
        ([0x11; 48], [0x44; 48])
    );
    if old_qemu {
        // The host's QEMU cannot run a TD: RTMR0 is dstack-mr's model of another VM, not
        // compared, and dstack-mr gets this VM's own tables to get that far.
        assert_eq!(unsupported.len(), 1, "{unsupported:?}");
        assert!(unsupported[0].1.contains("QEMU >= 8.0"), "{unsupported:?}");
        assert!(rec["acpi_tables_tool"]
            .as_str()
            .is_some_and(|p| p.contains("stand-in-bin")));
    } else {
        assert_eq!(unsupported, []);
    }

    // The generic contract's inputs for the same VM: devices in command-line order.
    let inputs = predictors::contract::inputs_json(&resolved, measure::tdvf::PageOrder::SinglePass);
    let kinds: Vec<&str> = inputs["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "virtio-blk",
            "virtio-blk",
            "virtio-blk",
            "virtio-net",
            "virtio-net",
            "vhost-vsock",
            "virtfs"
        ]
    );
    assert_eq!(inputs["machine"]["hpet"], Value::from(false));
    assert_eq!(inputs["memory"], Value::from(3u64 << 30));
}

/// A VM dstack-mr cannot express is `unsupported` (UKI) or keeps RTMR0 out of the comparison
/// (a device list other than dstack's), never a silent pass.
#[test]
fn dstack_mr_adapter_is_honest_about_what_it_cannot_model() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cache = cache();
    let like = Scenario::load(&scenario_path("dstack-like")).unwrap();
    let rows = rt.block_on(predictors::vs_builtin(
        &[stub()],
        &like,
        &cache,
        &work("dstack-like"),
    ));
    let [row] = rows.as_slice() else {
        panic!("{rows:?}")
    };
    // The stub's registers are made up, so MRTD etc. mismatch; RTMR0 is not compared.
    assert_eq!(row.status, Status::Mismatch, "{row:?}");
    let rtmr0 = &row.registers[1];
    assert_eq!((rtmr0.name.as_str(), rtmr0.matches), ("rtmr0", None));
    let why = rtmr0.unsupported.as_deref().unwrap();
    assert!(why.contains("this one has [blk, net, 9p]"), "{why}");

    let uki = Scenario::load(&scenario_path("uki-smoke")).unwrap();
    let resolved = mrlab::resolve::resolve(&uki, &cache, false).unwrap();
    let prediction = rt.block_on(predictors::exec::predict(
        &stub(),
        &resolved,
        &BTreeMap::new(),
        measure::tdvf::PageOrder::SinglePass,
        &work("uki"),
    ));
    assert_eq!(
        prediction,
        Prediction::Unsupported(
            "dstack-mr models -kernel direct boot only, this VM boots a UKI".into()
        )
    );

    let grub = Scenario::load(&scenario_path("grub-smoke")).unwrap();
    let resolved = mrlab::resolve::resolve(&grub, &cache, false).unwrap();
    let prediction = rt.block_on(predictors::exec::predict(
        &stub(),
        &resolved,
        &BTreeMap::new(),
        measure::tdvf::PageOrder::SinglePass,
        &work("grub"),
    ));
    assert_eq!(
        prediction,
        Prediction::Unsupported(
            "dstack-mr models -kernel direct boot only, this VM boots shim + GRUB from a disk"
                .into()
        )
    );
}

/// A shim + GRUB boot's `inputs.json` names every file on its ESP and carries grub.cfg's text,
/// which is what the disk holds.
#[test]
fn inputs_json_of_a_grub_boot_carries_the_esp() {
    let grub = Scenario::load(&scenario_path("grub-lines")).unwrap();
    let resolved = mrlab::resolve::resolve(&grub, &cache(), false).unwrap();
    let inputs = predictors::contract::inputs_json(&resolved, measure::tdvf::PageOrder::SinglePass);
    assert_eq!(inputs["boot"], "grub");
    let esp = inputs["grub"]["esp"].as_object().unwrap();
    let names: Vec<&str> = esp.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "EFI/BOOT/BOOTX64.EFI",
            "EFI/BOOT/grubx64.efi",
            "initrd.img",
            "vmlinuz"
        ]
    );
    for file in esp.values() {
        assert!(Path::new(file.as_str().unwrap()).is_file(), "{file}");
    }
    assert_eq!(
        inputs["grub"]["grub_cfg"],
        "set timeout=0\ninsmod part_gpt\necho mrlab: grub.cfg from the scenario\n\
         linux /vmlinuz console=ttyS0\ninitrd /initrd.img\nboot\n"
    );
    assert!(Path::new(inputs["grub"]["disk"].as_str().unwrap()).is_file());
}
