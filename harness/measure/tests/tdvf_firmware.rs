//! TDVF metadata, MRTD, TD HOB and CFV of the pinned Debian OVMF images (`.cache/debs`, so
//! `images/fetch.sh` must have run) against the dstack TD capture in harness/fixtures and
//! dstack-mr's MRTDs. Here, not in the crate's unit tests (which use synthetic images), because
//! they read the image cache.

use measure::event::Register;
use measure::tdvf::*;
use measure::{EventType, Input, Platforms};
use sha2::{Digest, Sha384};
use std::path::PathBuf;

const GIB: u64 = 1 << 30;

fn debs(id: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/debs")).join(id)
}

fn ovmf(id: &str) -> Vec<u8> {
    let path = debs(id).join("usr/share/ovmf/OVMF.fd");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}: run images/fetch.sh", path.display()))
}

/// One event of the dstack capture's JSON event log.
struct CaptureEvent {
    imr: u64,
    event_type: u64,
    digest: Vec<u8>,
    payload: Vec<u8>,
}

struct Capture {
    mrtd: Vec<u8>,
    memory: u64,
    events: Vec<CaptureEvent>,
}

fn dstack_capture() -> Capture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/tdx-json-eventlog/dstack-gpu-64g/quote-report.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let log: serde_json::Value =
        serde_json::from_str(doc["event_log"].as_str().expect("event_log string")).unwrap();
    let events = log
        .as_array()
        .expect("event_log array")
        .iter()
        .map(|e| CaptureEvent {
            imr: e["imr"].as_u64().unwrap(),
            event_type: e["event_type"].as_u64().unwrap(),
            digest: hex::decode(e["digest"].as_str().unwrap()).unwrap(),
            payload: hex::decode(e["event_payload"].as_str().unwrap()).unwrap(),
        })
        .collect();
    let vm_config: serde_json::Value =
        serde_json::from_str(doc["vm_config"].as_str().expect("vm_config string")).unwrap();
    // TD quote v4: 48-byte header, then TD report body; MRTD is at body offset 136.
    let quote = hex::decode(doc["quote"].as_str().unwrap()).unwrap();
    Capture {
        mrtd: quote[48 + 136..48 + 136 + 48].to_vec(),
        memory: vm_config["memory_size"].as_u64().unwrap(),
        events,
    }
}

/// The capture's RTMR0 (imr 0) events, in order.
fn rtmr0_events(capture: &Capture) -> Vec<&CaptureEvent> {
    capture.events.iter().filter(|e| e.imr == 0).collect()
}

#[test]
fn debian_firmware_parses_with_the_four_qemu_section_types() {
    for id in ["ovmf-2022.11", "ovmf-2025.02"] {
        let image = ovmf(id);
        let tdvf = Tdvf::parse(&image).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(tdvf.version, 1, "{id}");
        let types: Vec<_> = tdvf.sections.iter().map(|s| s.section_type).collect();
        for wanted in [
            SectionType::Bfv,
            SectionType::Cfv,
            SectionType::TdHob,
            SectionType::TempMem,
        ] {
            assert!(types.contains(&wanted), "{id}: no {wanted} in {types:?}");
        }
        // Only the boot firmware volume is measured into MRTD; nothing asks for PAGE.AUG, so
        // QEMU's "add every section" and the spec's PAGE_AUG rule agree on these images.
        for s in &tdvf.sections {
            assert_eq!(
                s.attributes.mr_extend(),
                s.section_type == SectionType::Bfv,
                "{id}: section {}",
                s.index
            );
            assert!(!s.attributes.page_aug(), "{id}: section {}", s.index);
        }
        // The code volume ends at 4 GiB: the reset vector sits at 0xfffffff0.
        let bfv = tdvf.section(SectionType::Bfv).unwrap();
        assert_eq!(bfv.memory_address + bfv.memory_data_size, 1 << 32, "{id}");
        // BFV and CFV are the image itself: together they cover every byte of it.
        let cfv = tdvf.section(SectionType::Cfv).unwrap();
        assert_eq!(
            u64::from(cfv.raw_data_size) + u64::from(bfv.raw_data_size),
            image.len() as u64,
            "{id}"
        );
    }
}

#[test]
fn td_hob_section_is_where_the_capture_says_the_hob_list_is() {
    // The capture's TD HOB event data ends with the VendorTable pointer: the HOB address.
    let capture = dstack_capture();
    let payload = &rtmr0_events(&capture)[0].payload;
    let address = u64::from_le_bytes(payload[payload.len() - 8..].try_into().unwrap());
    for id in ["ovmf-2022.11", "ovmf-2025.02"] {
        let tdvf = Tdvf::parse(&ovmf(id)).unwrap();
        assert_eq!(
            tdvf.section(SectionType::TdHob).unwrap().memory_address,
            address,
            "{id}"
        );
    }
}

#[test]
fn td_hob_at_64g_equals_the_dstack_capture() {
    let capture = dstack_capture();
    assert_eq!(capture.memory, 64 * GIB);
    let first = rtmr0_events(&capture)[0];
    assert_eq!(
        first.event_type,
        u64::from(EventType::EFI_HANDOFF_TABLES2.0)
    );

    let tdvf = Tdvf::parse(&ovmf("ovmf-2022.11")).unwrap();
    let event = td_hob_event(&tdvf, capture.memory).unwrap();
    assert_eq!(event.digests.sha384.unwrap().to_vec(), first.digest);
    assert_eq!(event.data.as_deref(), Some(&first.payload[..]));
    assert_eq!(event.event_type.0 as u64, first.event_type);
    assert_eq!(event.register(), Some(Register::Rtmr0));
    assert_eq!(event.platforms, Platforms::TDX);
    assert!(event.varies_with.contains(&Input::Memory));

    // 2025.02 has a smaller TempMem region (0x811000 vs 0x810000): another HOB.
    let tdvf_2025 = Tdvf::parse(&ovmf("ovmf-2025.02")).unwrap();
    let other = td_hob_event(&tdvf_2025, capture.memory).unwrap();
    assert_ne!(other.digests.sha384.unwrap().to_vec(), first.digest);
}

#[test]
fn cfv_of_2025_02_equals_the_dstack_capture() {
    let capture = dstack_capture();
    let second = rtmr0_events(&capture)[1];
    assert_eq!(
        second.event_type,
        u64::from(EventType::EFI_PLATFORM_FIRMWARE_BLOB2.0)
    );
    let image = ovmf("ovmf-2025.02");
    let tdvf = Tdvf::parse(&image).unwrap();
    let event = cfv_event(&tdvf, &image).unwrap();
    assert_eq!(event.digests.sha384.unwrap().to_vec(), second.digest);
    assert_eq!(event.data.as_deref(), Some(&second.payload[..]));
    assert_eq!(event.label, "cfv");
    assert_eq!(event.platforms, Platforms::TDX);

    // 2022.11 has a 128 KiB variable store at 0xffe00000: a different CFV event.
    let image = ovmf("ovmf-2022.11");
    let tdvf = Tdvf::parse(&image).unwrap();
    let event = cfv_event(&tdvf, &image).unwrap();
    assert_ne!(event.digests.sha384.unwrap().to_vec(), second.digest);
    assert_eq!(cfv(&tdvf, &image).unwrap().len(), 0x20000);
}

#[test]
fn td_hob_changes_across_the_q35_memory_split() {
    let tdvf = Tdvf::parse(&ovmf("ovmf-2022.11")).unwrap();
    let sizes = [GIB, 2 * GIB, 11 * GIB / 4, 4 * GIB, 64 * GIB];
    let digests: Vec<_> = sizes
        .iter()
        .map(|m| Sha384::digest(td_hob(&tdvf, *m).unwrap()))
        .collect();
    for i in 0..digests.len() {
        for j in i + 1..digests.len() {
            assert_ne!(digests[i], digests[j], "{} vs {}", sizes[i], sizes[j]);
        }
    }

    let unaccepted = |memory| -> Vec<(u64, u64)> {
        ram_ranges(&tdvf, memory)
            .unwrap()
            .into_iter()
            .filter(|r| !r.accepted)
            .map(|r| (r.address, r.address + r.length))
            .collect()
    };
    // Below 2.75 GiB all RAM is low.
    assert_eq!(unaccepted(2 * GIB).last(), Some(&(0x820000, 2 * GIB)));
    assert_eq!(
        unaccepted(2 * GIB + 1).last(),
        Some(&(0x820000, 2 * GIB + 1))
    );
    // From 2.75 GiB on, low RAM stops at 2 GiB and the rest starts at 4 GiB.
    let split = unaccepted(0xb000_0000);
    assert_eq!(
        &split[split.len() - 2..],
        &[(0x820000, 2 * GIB), (4 * GIB, 4 * GIB + 0x3000_0000)]
    );
    let below = unaccepted(0xb000_0000 - PAGE_SIZE);
    assert_eq!(below.last(), Some(&(0x820000, 0xb000_0000 - PAGE_SIZE)));

    // The measured bytes stop before the end-of-list HOB; the list's PHIT points past it.
    let list = td_hob_list(&tdvf, 2 * GIB).unwrap();
    let measured = td_hob(&tdvf, 2 * GIB).unwrap();
    assert_eq!(&list[..measured.len()], &measured[..]);
    assert_eq!(&list[measured.len()..], &[0xff, 0xff, 8, 0, 0, 0, 0, 0]);
    let end = u64::from_le_bytes(list[48..56].try_into().unwrap());
    assert_eq!(end, 0x809000 + list.len() as u64);
}

#[test]
fn td_hob_rejects_memory_that_cannot_hold_the_sections() {
    let tdvf = Tdvf::parse(&ovmf("ovmf-2022.11")).unwrap();
    assert!(matches!(
        td_hob(&tdvf, 4 << 20),
        Err(TdvfError::SectionOutsideRam { .. })
    ));
    assert_eq!(td_hob(&tdvf, 0), Err(TdvfError::BadMemorySize(0)));
    assert!(td_hob(&tdvf, u64::MAX).is_err());
}

#[test]
fn mrtd_orders_differ_and_neither_matches_the_capture_firmware() {
    let capture = dstack_capture();
    let mut seen = Vec::new();
    for id in ["ovmf-2022.11", "ovmf-2025.02"] {
        let image = ovmf(id);
        let tdvf = Tdvf::parse(&image).unwrap();
        let single = mrtd(&tdvf, &image, PageOrder::SinglePass).unwrap();
        let two = mrtd(&tdvf, &image, PageOrder::TwoPass).unwrap();
        assert_ne!(single, two, "{id}");
        // The capture's TD ran another OVMF build (its TD HOB layout is 2022.11's, its CFV
        // 2025.02's): its MRTD is neither of ours.
        assert_ne!(single.to_vec(), capture.mrtd, "{id}");
        assert_ne!(two.to_vec(), capture.mrtd, "{id}");
        seen.extend([single, two]);
    }
    assert_ne!(seen[0], seen[2]);

    // MRTD covers the code volume: one flipped BFV byte changes it, a flipped CFV byte does
    // not (the CFV is added unmeasured).
    let mut image = ovmf("ovmf-2022.11");
    let tdvf = Tdvf::parse(&image).unwrap();
    let bfv = tdvf.section(SectionType::Bfv).unwrap().data_offset as usize;
    let cfv_at = tdvf.section(SectionType::Cfv).unwrap().data_offset as usize;
    image[cfv_at + 100] ^= 1;
    assert_eq!(mrtd(&tdvf, &image, PageOrder::SinglePass).unwrap(), seen[0]);
    image[bfv + 0x1000] ^= 1;
    assert_ne!(mrtd(&tdvf, &image, PageOrder::SinglePass).unwrap(), seen[0]);
}

/// Positive ground truth: MRTD of each pinned OVMF in both page orders, as computed by an
/// independent implementation, dstack-mr (Dstack-TEE/dstack `dstack/dstack-mr`, commit
/// 312dc605ebaaf93372534ffb135ea011533d28e9, built from source outside this repository).
/// Obtained with `dstack-mr measure --json --two-pass-add-pages {false,true} --memory 2G --cpu 1
/// <dir>/metadata.json`, the metadata's `bios` naming the pinned `usr/share/ovmf/OVMF.fd`
/// (MRTD depends on the firmware image and the page order only; its RTMR0 needed a
/// `dstack-acpi-tables` on PATH, for which any tables do). The image digests pin which build
/// the values are for.
#[test]
fn mrtd_of_pinned_ovmf_equals_dstack_mr() {
    use sha2::Sha256;
    let cases = [
        (
            "ovmf-2022.11",
            "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773",
            "4c7206f0f483c524f12c366c711e9049030a8d47c471ee5aa9c4999a08de4057fb887fed0744d5631a212967fb231c47",
            "acccbcc870a381adab0d3919d90a7f268ac3b0364771f202ed4bb4e892d045b33db3b32e6924cba830a724eed443f7e1",
        ),
        (
            "ovmf-2025.02",
            "14954040cc754ade0c625ac3470ea46d4c14318b5b1396de4ef77090203d76db",
            "bdc6fb145880f06f30c8b346b8dce2a99d9351b56892df22f80fcf6574caa9f9c31df8e8576d53b4d0cd1c3f28910e11",
            "456f07902150d008bb913c3e1e84e9297f735a6c83cd2a957a1f0a8bbedb06df188e3837ae48d32c73d473d097dc0db2",
        ),
    ];
    for (id, image_sha256, single_pass, two_pass) in cases {
        let image = ovmf(id);
        assert_eq!(
            hex::encode(Sha256::digest(&image)),
            image_sha256,
            "{id}: not the image measured"
        );
        let tdvf = Tdvf::parse(&image).unwrap();
        let single = mrtd(&tdvf, &image, PageOrder::SinglePass).unwrap();
        let two = mrtd(&tdvf, &image, PageOrder::TwoPass).unwrap();
        assert_eq!(hex::encode(single), single_pass, "{id} single-pass");
        assert_eq!(hex::encode(two), two_pass, "{id} two-pass");
    }
}

/// The real images' metadata and table, flipped bit by bit and cut: errors, never a panic.
#[test]
fn real_image_flips_and_cuts_never_panic() {
    let real = ovmf("ovmf-2022.11");
    let tdvf = Tdvf::parse(&real).unwrap();
    let meta = tdvf.metadata_offset;
    let mut flipped = real.clone();
    for byte in (meta..meta + 16 + 32 * tdvf.sections.len()).chain(real.len() - 200..real.len()) {
        for bit in 0..8 {
            flipped[byte] ^= 1 << bit;
            if let Ok(t) = Tdvf::parse(&flipped) {
                let _ = td_hob(&t, 2 * GIB);
                let _ = cfv(&t, &flipped);
            }
            flipped[byte] ^= 1 << bit;
        }
    }
    for cut in [
        1,
        31,
        32,
        48,
        50,
        100,
        0x1000,
        real.len() / 2,
        real.len() - 1,
    ] {
        assert!(Tdvf::parse(&real[..real.len() - cut]).is_err(), "cut {cut}");
        if let Ok(t) = Tdvf::parse(&real[cut..]) {
            let _ = mrtd(&t, &real[cut..], PageOrder::TwoPass);
        }
    }
}
