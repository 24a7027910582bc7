//! Every set in harness/fixtures reproduces its expected.json. Data first: the sets are
//! discovered from the directory; each is checked by its `format` and the `expect` keys it has,
//! and the failure message names the set and the key.

use evidence::log::{parse, EventLog, Format};
use evidence::{ccel, dstack, quote, tdreport, HashAlg};
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures");

/// `expect` keys this test does not check, and why (reported when a set has them).
const UNCHECKED: &[(&str, &str)] = &[];

fn sets() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in std::fs::read_dir(FIXTURES).expect("harness/fixtures") {
        let kind = kind.unwrap().path();
        if !kind.is_dir() {
            continue;
        }
        for set in std::fs::read_dir(&kind).unwrap() {
            let set = set.unwrap().path();
            if set.join("expected.json").exists() {
                out.push(set);
            }
        }
    }
    out.sort();
    assert!(
        out.len() >= 29,
        "expected the fixture sets, found {}",
        out.len()
    );
    out
}

struct Set {
    dir: PathBuf,
    doc: Value,
}

impl Set {
    fn load(dir: &Path) -> Set {
        let doc =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        Set {
            dir: dir.to_path_buf(),
            doc,
        }
    }
    fn format(&self) -> &str {
        self.doc["format"].as_str().unwrap()
    }
    fn expect(&self) -> &serde_json::Map<String, Value> {
        self.doc["expect"].as_object().unwrap()
    }
    fn file(&self, role: &str) -> Option<Vec<u8>> {
        let f = self.doc["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["role"] == role)?;
        let bytes = std::fs::read(self.dir.join(f["name"].as_str().unwrap())).unwrap();
        assert_eq!(
            bytes.len() as u64,
            f["bytes"].as_u64().unwrap(),
            "file size of {}",
            f["name"]
        );
        Some(bytes)
    }
}

/// Collects mismatches for one set instead of stopping at the first.
#[derive(Default)]
struct Check {
    failures: Vec<String>,
    checked: Vec<String>,
}

impl Check {
    fn eq(&mut self, key: &str, expected: &Value, actual: &Value) {
        self.checked.push(key.to_string());
        if expected != actual {
            self.failures
                .push(format!("{key}: expected {expected}, got {actual}"));
        }
    }
    fn fail(&mut self, msg: String) {
        self.failures.push(msg);
    }
}

fn events_per_index(log: &EventLog) -> Value {
    let mut m: BTreeMap<u32, usize> = BTreeMap::new();
    for e in &log.events {
        *m.entry(e.index).or_default() += 1;
    }
    json!(m
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect::<serde_json::Map<_, _>>())
}

fn rtmrs(log: &EventLog) -> Value {
    let regs = log.replay_rtmrs();
    let mut m = serde_json::Map::new();
    for r in [
        measure::Register::Rtmr0,
        measure::Register::Rtmr1,
        measure::Register::Rtmr2,
        measure::Register::Rtmr3,
    ] {
        m.insert(r.name().into(), json!(hex::encode(regs.get(r))));
    }
    Value::Object(m)
}

fn check_registers(c: &mut Check, log: &EventLog, expected: &Value) {
    let expected = expected.as_object().unwrap();
    if expected.keys().any(|k| k.starts_with("rtmr")) {
        let actual = rtmrs(log);
        for (k, v) in expected {
            c.eq(&format!("registers.{k}"), v, &actual[k]);
        }
        return;
    }
    let banks = log.replay_pcrs();
    for (bank_key, pcrs) in expected {
        let alg = bank_key.strip_prefix("pcr-").unwrap();
        let Some(bank) = banks.iter().find(|b| b.alg.name() == alg) else {
            c.fail(format!(
                "registers.{bank_key}: log has no replayable {alg} bank"
            ));
            continue;
        };
        for (pcr, v) in pcrs.as_object().unwrap() {
            let i: usize = pcr.parse().unwrap();
            c.eq(
                &format!("registers.{bank_key}.{pcr}"),
                v,
                &json!(hex::encode(&bank.pcrs[i])),
            );
        }
    }
}

fn check_log(c: &mut Check, set: &Set, log: &EventLog) {
    let e = set.expect();
    if let Some(v) = e.get("registers") {
        check_registers(c, log, v);
    }
    if let Some(v) = e.get("event_count") {
        c.eq("event_count", v, &json!(log.record_count()));
    }
    if let Some(v) = e.get("events_per_index") {
        c.eq("events_per_index", v, &events_per_index(log));
    }
    if let Some(v) = e.get("spec_id") {
        let actual = log
            .spec_id
            .as_ref()
            .map(|s| s.to_json())
            .unwrap_or(Value::Null);
        c.eq("spec_id", v, &actual);
    }
    if let Some(v) = e.get("padding") {
        let actual = log.padding.map(|p| {
            json!({"log_bytes": p.log_bytes, "padding_bytes": p.padding_bytes,
                   "padding_byte": format!("{:#04x}", p.byte)})
        });
        c.eq("padding", v, &actual.unwrap_or(Value::Null));
    } else if set.format() != "dstack-json" {
        c.eq(
            "padding (absent)",
            &Value::Null,
            &json!(log.padding.map(|p| p.log_bytes)),
        );
    }
    let locality = log.startup_locality();
    match e.get("startup_locality") {
        Some(v) => c.eq("startup_locality", v, &json!(locality)),
        None => c.eq("startup_locality (absent)", &Value::Null, &json!(locality)),
    }
    if let Some(v) = e.get("pcr4_efi_boot_services_application_digests") {
        for (bank, expected) in v.as_object().unwrap() {
            let alg = log.banks().into_iter().find(|a| a.name() == *bank).unwrap();
            let actual: Vec<String> = log
                .events
                .iter()
                .filter(|e| {
                    e.index == 4
                        && e.event.event_type == measure::EventType::EFI_BOOT_SERVICES_APPLICATION
                })
                .map(|e| hex::encode(e.digest(alg).unwrap()))
                .collect();
            c.eq(
                &format!("pcr4_efi_boot_services_application_digests.{bank}"),
                expected,
                &json!(actual),
            );
        }
    }
    if let Some(v) = e.get("kernel_cmdline") {
        let cmdline = v.as_str().unwrap();
        let logged = format!("kernel_cmdline: {cmdline}");
        let found = log.events.iter().find(|e| {
            e.index == 8
                && e.event.event_type == measure::EventType::IPL
                && e.event.data.as_deref() == Some(logged.as_bytes())
        });
        match found {
            None => c.fail("kernel_cmdline: no PCR8 EV_IPL record with that command line".into()),
            Some(ev) => {
                let measured = cmdline.trim_end_matches('\0').as_bytes();
                let want = hex::encode(Sha256::digest(measured));
                c.eq(
                    "kernel_cmdline.sha256",
                    &json!(want),
                    &json!(ev.digest(HashAlg::SHA256).map(hex::encode)),
                );
            }
        }
    }
    if let Some(v) = e.get("warnings") {
        for w in v.as_array().unwrap() {
            let w = w.as_str().unwrap();
            let n: usize = w
                .strip_prefix("Event ")
                .and_then(|r| r.split('\'').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unknown warning shape {w}"));
            let ev = log.events.iter().find(|e| e.record == n).unwrap();
            let data = ev.event.data.as_deref().unwrap();
            let sha1 = Sha1::digest(data).to_vec();
            let sha256 = Sha256::digest(data).to_vec();
            let mismatch = ev.digest(HashAlg::SHA1) != Some(&sha1[..])
                && ev.digest(HashAlg::SHA256) != Some(&sha256[..]);
            c.eq(&format!("warnings[{w}]"), &json!(true), &json!(mismatch));
        }
    }
}

fn check_quote(c: &mut Check, expected: &Value, bytes: &[u8]) {
    match quote::parse(bytes) {
        Err(err) => c.fail(format!("quote: parse error {err}")),
        Ok(q) => {
            let mut actual = q.to_json();
            actual["signature"] = match quote::verify(bytes) {
                Ok(check) => check.to_json(),
                Err(err) => json!(format!("verify error: {err}")),
            };
            for (k, v) in expected.as_object().unwrap() {
                c.eq(&format!("quote.{k}"), v, &actual[k]);
            }
            // The register set a prediction is compared with holds the body's MRTD and RTMRs.
            let registers = q.body.td.registers();
            for r in measure::Register::ALL {
                let key = format!("quote.registers().{r}");
                c.eq(
                    &key,
                    &expected[r.name()],
                    &json!(hex::encode(registers.get(r))),
                );
            }
        }
    }
}

fn check_set(set: &Set) -> Check {
    let mut c = Check::default();
    let e = set.expect();
    if let Some(err) = e.get("error") {
        let format = match set.format() {
            "tcg1" => Format::Tcg1,
            "ccel" => Format::Ccel,
            _ => Format::Tcg2,
        };
        let bytes = set.file("eventlog").unwrap();
        for f in [format, Format::Auto] {
            if let Ok(log) = parse(&bytes, f) {
                c.fail(format!(
                    "error ({err}): {f} parsed {} events",
                    log.events.len()
                ));
            }
        }
        c.checked.push("error".into());
        return c;
    }
    match set.format() {
        fmt @ ("ccel" | "tcg2" | "tcg1") => {
            let bytes = set.file("eventlog").unwrap();
            let format: Format = fmt.parse().unwrap();
            match (parse(&bytes, format), parse(&bytes, Format::Auto)) {
                (Ok(log), Ok(auto)) => {
                    c.eq(
                        "auto-detected format",
                        &json!(fmt),
                        &json!(auto.format.name()),
                    );
                    check_log(&mut c, set, &log);
                }
                (Err(err), _) | (_, Err(err)) => c.fail(format!("parse: {err}")),
            }
            if let Some(v) = e.get("ccel_table") {
                match ccel::parse_table(&set.file("acpi-table").unwrap()) {
                    Ok(t) => c.eq("ccel_table", v, &t.to_json()),
                    Err(err) => c.fail(format!("ccel_table: {err}")),
                }
            }
            if let Some(v) = e.get("quote") {
                check_quote(&mut c, v, &set.file("quote").unwrap());
            }
        }
        "dstack-json" => {
            let bytes = set.file("quote+eventlog").unwrap();
            match dstack::parse_document(&bytes) {
                Err(err) => c.fail(format!("dstack document: {err}")),
                Ok(doc) => {
                    check_log(&mut c, set, &doc.event_log);
                    let auto = parse(&bytes, Format::Auto).map(|l| l.format.name());
                    c.eq(
                        "auto-detected format",
                        &json!("dstack-json"),
                        &json!(auto.ok()),
                    );
                    if let Some(v) = e.get("quote") {
                        check_quote(&mut c, v, &doc.quote);
                    }
                    if let Some(d) = e.get("dstack") {
                        check_dstack(&mut c, d, &doc);
                    }
                }
            }
        }
        "quote-v4" | "quote-v5" => {
            check_quote(&mut c, &e["quote"], &set.file("quote").unwrap());
        }
        "tdreport" => match tdreport::parse(&set.file("tdreport").unwrap()) {
            Err(err) => c.fail(format!("tdreport: {err}")),
            Ok(r) => {
                let actual = r.to_json();
                for (k, v) in e["tdreport"].as_object().unwrap() {
                    c.eq(&format!("tdreport.{k}"), v, &actual[k]);
                }
            }
        },
        other => c.fail(format!("unknown fixture format {other}")),
    }
    c
}

fn check_dstack(c: &mut Check, d: &Value, doc: &dstack::Document) {
    let log = &doc.event_log;
    c.eq(
        "dstack.runtime_event_type",
        &d["runtime_event_type"],
        &json!(format!("{:#010x}", dstack::RUNTIME_EVENT_TYPE)),
    );
    let runtime: Vec<Value> = log
        .events
        .iter()
        .filter(|e| e.event.event_type.0 == dstack::RUNTIME_EVENT_TYPE)
        .map(|e| {
            let data = e.event.data.as_deref().unwrap();
            let colon = data.iter().position(|b| *b == b':').unwrap();
            json!({
                "imr": e.index,
                "event": String::from_utf8_lossy(&data[..colon]),
                "payload": hex::encode(&data[colon + 1..]),
                "digest": hex::encode(e.digest(HashAlg::SHA384).unwrap()),
            })
        })
        .collect();
    c.eq(
        "dstack.runtime_events",
        &d["runtime_events"],
        &json!(runtime),
    );
    // Independent oracle for the rule: recompute each expected digest here.
    for ev in d["runtime_events"].as_array().unwrap() {
        let mut h = Sha384::new();
        h.update(0x0800_0001u32.to_le_bytes());
        h.update(format!(":{}:", ev["event"].as_str().unwrap()));
        h.update(hex::decode(ev["payload"].as_str().unwrap()).unwrap());
        c.eq(
            "dstack.runtime_digest_rule",
            &ev["digest"],
            &json!(hex::encode(h.finalize())),
        );
    }
    let acpi: Vec<Value> = log
        .events
        .iter()
        .filter(|e| e.index == 0 && e.event.event_type == measure::EventType::PLATFORM_CONFIG_FLAGS)
        .map(|e| json!({"event": "", "digest": hex::encode(e.digest(HashAlg::SHA384).unwrap())}))
        .collect();
    c.eq(
        "dstack.acpi_data_events_rtmr0",
        &d["acpi_data_events_rtmr0"],
        &json!(acpi),
    );
    c.eq(
        "dstack.vm_config",
        &d["vm_config"],
        doc.vm_config.as_ref().unwrap_or(&Value::Null),
    );
}

#[test]
fn every_fixture_set_reproduces_its_expected_json() {
    let mut failed = Vec::new();
    let mut coverage = Vec::new();
    for dir in sets() {
        let set = Set::load(&dir);
        let name = set.doc["set"].as_str().unwrap().to_string();
        let c = check_set(&set);
        for key in set.expect().keys() {
            let covered = c.checked.iter().any(|k| {
                k == key || k.starts_with(&format!("{key}.")) || k.starts_with(&format!("{key}["))
            });
            if !covered && !UNCHECKED.iter().any(|(k, _)| k == key) {
                failed.push(format!("{name}: expect key `{key}` was not checked"));
            }
        }
        coverage.push(format!("{name}: {} checks", c.checked.len()));
        failed.extend(c.failures.into_iter().map(|f| format!("{name}: {f}")));
    }
    println!("{}", coverage.join("\n"));
    assert!(
        failed.is_empty(),
        "fixture mismatches:\n{}",
        failed.join("\n")
    );
}
