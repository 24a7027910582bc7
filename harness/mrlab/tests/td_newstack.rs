//! The TD prediction on the newest stack, through `mrlab predict --platform tdx`: what OVMF
//! 2026.08 measures in a TD that 2025.02 does not.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Writes a `-kernel` scenario on `firmware` and `qemu` into `dir` and returns its TD prediction.
fn predict_td(dir: &Path, firmware: &str, qemu: &str) -> Value {
    let out = predict(dir, firmware, qemu, "tdx");
    assert!(
        out.status.success(),
        "mrlab predict {firmware} {qemu}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("predict --json")
}

fn predict(dir: &Path, firmware: &str, qemu: &str, platform: &str) -> std::process::Output {
    let name = format!("{firmware}-{qemu}");
    let scenario = dir.join(format!("{name}.toml"));
    std::fs::write(
        &scenario,
        format!(
            "name = \"{name}\"\nboot = \"kernel\"\ncpus = 1\nmemory = \"2G\"\n\
             firmware = \"{firmware}\"\nkernel = \"kernel-6.12\"\ninitrd = \"none\"\n\
             cmdline = \"console=ttyS0\"\nqemu = \"{qemu}\"\n"
        ),
    )
    .expect("write scenario");
    Command::new(env!("CARGO_BIN_EXE_mrlab"))
        .args(["predict", "--platform", platform, "--json"])
        .arg(&scenario)
        .output()
        .expect("run mrlab predict")
}

fn event<'a>(prediction: &'a Value, label: &str) -> &'a Value {
    prediction["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["label"] == label)
        .unwrap_or_else(|| panic!("no {label} event"))
}

fn events_labelled<'a>(prediction: &'a Value, prefix: &str) -> Vec<&'a Value> {
    prediction["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["label"].as_str().is_some_and(|l| l.starts_with(prefix)))
        .collect()
}

/// edk2 ≥ stable202505 measures the cached fw_cfg items into RTMR0 right after the TD HOB and
/// CFV (quirk ovmf-td-fw-cfg-items-measured); 2025.02 does not. This VM has no extra PCI
/// roots, boot menu wait, reserved memory end or PciMmio64 file: BootMenu (always read) and
/// bootorder are the two.
#[test]
fn fw_cfg_items_are_measured_by_ovmf_2026_08_and_not_by_2025_02() {
    let dir = tempfile::tempdir().expect("temp dir");
    let new = predict_td(dir.path(), "ovmf-2026.08", "qemu-11.1");
    let items = events_labelled(&new, "fw_cfg:");
    let labels: Vec<&str> = items.iter().map(|e| e["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["fw_cfg:BootMenu", "fw_cfg:bootorder"]);
    for e in &items {
        assert_eq!(e["register"], "rtmr0");
        assert_eq!(e["type"], "EV_PLATFORM_CONFIG_FLAGS");
    }
    assert_eq!(items[0]["data"], "QEMU FW CFG \"BootMenu\"");
    assert_eq!(items[1]["data"], "QEMU FW CFG \"bootorder\"");
    // BootMenu is QEMU's `-boot menu=` default, off: the u16 0, whose SHA-384 is that of two
    // zero bytes (the same as the BootOrder variable `00 00` of a -kernel boot).
    assert_eq!(
        items[0]["digest"],
        "1dd6f7b457ad880d840d41c961283bab688e94e4b59359ea45686581e90feccea3c624b1226113f824f315eb60ae0a7c"
    );
    // The bootorder of a -kernel VM without bootindex devices: the bytes every vtpm boot's guest
    // read back from fw_cfg (results/snapshots, e.g. kernel-smoke.snap `bootorder 53d3dbc0…`).
    assert_eq!(
        items[1]["digest"],
        "53d3dbc00691328371e74c1b1c77bdf1bf4ff79dd1b55222b694fe8341cd8b0adb3a9ab9286552c681272883b9b0fc1d"
    );
    // Right after the TD HOB and the CFV.
    let order: Vec<&str> = new["events"].as_array().unwrap()[..4]
        .iter()
        .map(|e| e["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["td_hob", "cfv", "fw_cfg:BootMenu", "fw_cfg:bootorder"]
    );

    let old = predict_td(dir.path(), "ovmf-2025.02", "qemu-10.0");
    assert!(events_labelled(&old, "fw_cfg:").is_empty());
    assert_ne!(new["registers"]["rtmr0"], Value::Null);
}

/// QEMU ≥ 10.2 no longer patches the setup header of a confidential guest's `-kernel` (quirk
/// qemu-coco-kernel-header-unpatched): with OVMF 2022.11, which reads the setup and kernel items,
/// RTMR1's kernel event is QEMU 10.0's patched image but QEMU 11.1's file as given, whose
/// Authenticode SHA-256 is the digest Debian's signature in that file signs.
#[test]
fn a_td_on_qemu_11_1_measures_the_kernel_file_as_given() {
    let dir = tempfile::tempdir().expect("temp dir");
    let patched = predict_td(dir.path(), "ovmf-2022.11", "qemu-10.0");
    let unpatched = predict_td(dir.path(), "ovmf-2022.11", "qemu-11.1");
    let (patched, unpatched) = (event(&patched, "pe:kernel"), event(&unpatched, "pe:kernel"));
    assert_eq!(unpatched["register"], "rtmr1");
    assert_ne!(patched["digest"], unpatched["digest"]);

    let cache = common::cache();
    let vmlinuz = std::fs::read(cache.kernel("kernel-6.12").expect("kernel-6.12").vmlinuz)
        .expect("read vmlinuz");
    let image = measure::pe::PeImage::parse(&vmlinuz).expect("vmlinuz is a PE image");
    let signed: Vec<String> = image
        .signed_digests()
        .expect("signature")
        .iter()
        .filter(|d| d.algorithm == measure::pe::DigestAlgorithm::Sha256)
        .map(|d| hex::encode(&d.digest))
        .collect();
    assert!(
        !signed.is_empty(),
        "Debian's vmlinuz carries a SHA-256 signature"
    );
    assert!(
        signed
            .iter()
            .any(|d| unpatched["digest_sha256"] == d.as_str()),
        "{signed:?} vs {}",
        unpatched["digest_sha256"]
    );
    assert!(!signed
        .iter()
        .any(|d| patched["digest_sha256"] == d.as_str()));
}

/// Debian's IntelTdx build (`OVMF.inteltdx.ms.fd`) enrolls the Microsoft keys in its CFV: the
/// TD prediction measures SecureBoot = 1 and PK, KEK, db, dbx with the store's bytes, not the
/// empty variables of the generic 2026.08 build; on vtpm the build is refused (no TPM).
#[test]
fn the_inteltdx_build_measures_its_enrolled_keys_and_is_refused_on_vtpm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tdx = predict_td(dir.path(), "ovmf-2026.08-inteltdx", "qemu-11.1");
    let generic = predict_td(dir.path(), "ovmf-2026.08", "qemu-11.1");

    let cache = common::cache();
    let image = std::fs::read(cache.firmware("ovmf-2026.08-inteltdx").expect("firmware"))
        .expect("read firmware");
    let tdvf = measure::tdvf::Tdvf::parse(&image).expect("TDVF metadata");
    let store = measure::varstore::variables(measure::tdvf::cfv(&tdvf, &image).expect("CFV"))
        .expect("variable store");
    let contains = |name: &str, text: &[u8]| {
        store
            .iter()
            .find(|((_, n), _)| n == name)
            .is_some_and(|(_, data)| data.windows(text.len()).any(|w| w == text))
    };
    // The certificates' subject names, as Microsoft issues them.
    assert!(contains("KEK", b"Microsoft Corporation KEK CA 2011"));
    assert!(contains("db", b"Microsoft Windows Production PCA 2011"));
    assert!(contains("db", b"Microsoft Corporation UEFI CA 2011"));

    let sha384 = |bytes: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha384::digest(bytes))
    };
    for (name, vendor) in [
        ("SecureBoot", measure::uefi::EFI_GLOBAL_VARIABLE),
        ("PK", measure::uefi::EFI_GLOBAL_VARIABLE),
        ("KEK", measure::uefi::EFI_GLOBAL_VARIABLE),
        ("db", measure::uefi::EFI_IMAGE_SECURITY_DATABASE),
        ("dbx", measure::uefi::EFI_IMAGE_SECURITY_DATABASE),
    ] {
        let data = if name == "SecureBoot" {
            vec![1]
        } else {
            store[&(vendor, name.to_string())].clone()
        };
        // UEFI_VARIABLE_DATA (TCG PC Client spec): GUID, name length, data length, UTF-16 name,
        // data.
        let mut logged = vendor.0.to_vec();
        logged.extend_from_slice(&(name.len() as u64).to_le_bytes());
        logged.extend_from_slice(&(data.len() as u64).to_le_bytes());
        logged.extend(name.encode_utf16().flat_map(u16::to_le_bytes));
        logged.extend_from_slice(&data);
        let label = format!("efi:{name}");
        assert_eq!(event(&tdx, &label)["digest"], sha384(&logged), "{label}");
        assert_ne!(
            event(&tdx, &label)["digest"],
            event(&generic, &label)["digest"]
        );
    }
    assert_eq!(tdx["registers"]["mrtd"].as_str().map(str::len), Some(96));

    let refused = predict(dir.path(), "ovmf-2026.08-inteltdx", "qemu-11.1", "vtpm");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("key `firmware`") && stderr.contains("no TPM driver"),
        "{stderr}"
    );
}

/// Every predicted TD event carries its verification status: the empty Secure Boot variables
/// of the generic build equal the dstack TD capture's (harness/fixtures), the fw_cfg items were
/// never seen by anything but this code, and the IntelTdx build's enrolled keys neither (its
/// SecureBoot = 01 is in a capture).
#[test]
fn every_td_event_says_how_far_it_is_verified() {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = |p: &Value, label: &str| event(p, label)["verification"].clone();
    let generic = predict_td(dir.path(), "ovmf-2026.08", "qemu-11.1");
    for e in generic["events"].as_array().unwrap() {
        assert!(
            ["verified-vtpm", "verified-capture", "unverified"]
                .contains(&e["verification"].as_str().unwrap_or_default()),
            "{e}"
        );
    }
    assert_eq!(status(&generic, "efi:SecureBoot"), "verified-capture");
    assert_eq!(status(&generic, "fw_cfg:BootMenu"), "unverified");
    assert_eq!(status(&generic, "fw_cfg:bootorder"), "unverified");
    assert_eq!(status(&generic, "linux:cmdline"), "verified-vtpm");
    let inteltdx = predict_td(dir.path(), "ovmf-2026.08-inteltdx", "qemu-11.1");
    // SecureBoot = 01 is the same event in any TD with Secure Boot on, and a capture has it.
    assert_eq!(status(&inteltdx, "efi:SecureBoot"), "verified-capture");
    for label in ["efi:PK", "efi:KEK", "efi:db", "efi:dbx"] {
        assert_eq!(status(&inteltdx, label), "unverified", "{label}");
    }
}

/// A second MRTD implementation, written from the TDX module's definition of the two SEAMCALLs
/// that extend it rather than from measure::tdvf: MRTD is one SHA-384 over, per 4 KiB page of
/// each TDVF section (metadata found through the OVMF GUIDed table at the end of the image),
/// a 128-byte TDH.MEM.PAGE.ADD record ("MEM.PAGE.ADD", GPA) and, for sections with MR_EXTEND,
/// per 256-byte chunk a TDH.MR.EXTEND record ("MR.EXTEND", GPA) followed by the chunk.
fn independent_mrtd(image: &[u8], two_pass: bool) -> String {
    use sha2::Digest;
    let u16_at = |at: usize| u16::from_le_bytes([image[at], image[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(image[at..at + 8].try_into().unwrap());
    // OVMF_TABLE_FOOTER_GUID 96b582de-1fb2-45f7-baea-a366c55a082d at end - 0x30; entries run
    // backwards, each `data, u16 length, GUID`; TDX_METADATA_OFFSET_GUID e47a6535-… holds the
    // metadata's distance from the end.
    let footer = image.len() - 0x30;
    let guid = |at: usize| &image[at..at + 16];
    assert_eq!(
        guid(footer),
        [
            0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
            0x08, 0x2d
        ]
    );
    let metadata_guid = [
        0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e,
        0xc2,
    ];
    let table_start = footer + 18 - u16_at(footer - 2);
    let mut end = footer - 2;
    let mut metadata = None;
    while end > table_start {
        let length = u16_at(end - 18);
        if guid(end - 16) == metadata_guid {
            metadata = Some(image.len() - u32_at(end - 22));
        }
        end -= length;
    }
    let metadata = metadata.expect("TDX metadata GUID in the OVMF table");
    assert_eq!(&image[metadata..metadata + 4], b"TDVF");
    let sections: Vec<(usize, usize, u64, u64, bool)> = (0..u32_at(metadata + 12))
        .map(|i| {
            let at = metadata + 16 + 32 * i;
            let attributes = u32_at(at + 28);
            (
                u32_at(at),
                u32_at(at + 4),
                u64_at(at + 8),
                u64_at(at + 16),
                attributes & 1 != 0,
            )
        })
        .collect();
    let mut mrtd = sha2::Sha384::new();
    let record = |mrtd: &mut sha2::Sha384, op: &[u8], gpa: u64| {
        let mut buf = [0u8; 128];
        buf[..op.len()].copy_from_slice(op);
        buf[16..24].copy_from_slice(&gpa.to_le_bytes());
        mrtd.update(buf);
    };
    let extend_page = |mrtd: &mut sha2::Sha384, data: &[u8], base: u64, page: u64| {
        for chunk in (page..page + 4096).step_by(256) {
            record(mrtd, b"MR.EXTEND", chunk);
            let at = (chunk - base) as usize;
            let mut bytes = [0u8; 256];
            let have = data.len().saturating_sub(at).min(256);
            bytes[..have].copy_from_slice(&data[at..at + have]);
            mrtd.update(bytes);
        }
    };
    for (offset, raw, base, size, extend) in sections {
        let data = &image[offset..offset + raw];
        let pages: Vec<u64> = (base..base + size).step_by(4096).collect();
        if two_pass {
            pages
                .iter()
                .for_each(|p| record(&mut mrtd, b"MEM.PAGE.ADD", *p));
            if extend {
                pages
                    .iter()
                    .for_each(|p| extend_page(&mut mrtd, data, base, *p));
            }
        } else {
            for p in pages {
                record(&mut mrtd, b"MEM.PAGE.ADD", p);
                if extend {
                    extend_page(&mut mrtd, data, base, p);
                }
            }
        }
    }
    hex::encode(mrtd.finalize())
}

/// `mrlab firmware` shows MRTD (both page orders), TD HOB and CFV for the generic 2026.08 build
/// and the IntelTdx build, and its MRTD equals the second implementation above.
#[test]
fn mrtd_of_both_2026_08_builds_equals_an_independent_computation() {
    let cache = common::cache();
    for id in ["ovmf-2026.08", "ovmf-2026.08-inteltdx"] {
        let path = cache.firmware(id).expect("firmware");
        let out = Command::new(env!("CARGO_BIN_EXE_mrlab"))
            .args(["firmware", "--json"])
            .arg(&path)
            .output()
            .expect("run mrlab firmware");
        assert!(out.status.success(), "{id}");
        let shown: Value = serde_json::from_slice(&out.stdout).expect("firmware --json");
        let image = std::fs::read(&path).expect("read firmware");
        assert_eq!(
            shown["mrtd"]["single_pass"],
            independent_mrtd(&image, false),
            "{id}"
        );
        assert_eq!(
            shown["mrtd"]["two_pass"],
            independent_mrtd(&image, true),
            "{id}"
        );
        assert_ne!(shown["td_hob"], Value::Null, "{id}");
        assert_ne!(shown["cfv"], Value::Null, "{id}");
    }
}
