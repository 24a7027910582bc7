use super::*;
use crate::event::Register;
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
            .map(|r| (r.address, r.end()))
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

// --- synthetic images ---------------------------------------------------------------------

const SYNTH_LEN: usize = 0x4000;
const SYNTH_META_AT: usize = 0x3000;

/// A section entry as stored: data offset, raw size, address, memory size, type, attributes.
type RawSection = (u32, u32, u64, u64, u32, u32);

/// A minimal TDVF image: two image pages (BFV, measured, and CFV), a TD_HOB and a TempMem,
/// metadata at 0x3000, GUIDed table at the end.
fn synth_sections() -> Vec<RawSection> {
    vec![
        (0x0000, 0x2000, 0xffff_e000, 0x2000, 0, 1),
        (0x2000, 0x1000, 0xffff_d000, 0x1000, 1, 0),
        (0, 0, 0x80_9000, 0x2000, 2, 0),
        (0, 0, 0x80_0000, 0x6000, 3, 0),
    ]
}

fn raw_section(&(off, raw, addr, size, ty, attr): &RawSection) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&off.to_le_bytes());
    out.extend_from_slice(&raw.to_le_bytes());
    out.extend_from_slice(&addr.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&attr.to_le_bytes());
    out
}

fn synth_image(sections: &[RawSection]) -> Vec<u8> {
    let mut image = vec![0u8; SYNTH_LEN];
    for (i, b) in image[..0x3000].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let mut meta = Vec::new();
    meta.extend_from_slice(b"TDVF");
    meta.extend_from_slice(&(16 + 32 * sections.len() as u32).to_le_bytes());
    meta.extend_from_slice(&1u32.to_le_bytes());
    meta.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for s in sections {
        meta.extend(raw_section(s));
    }
    image[SYNTH_META_AT..SYNTH_META_AT + meta.len()].copy_from_slice(&meta);

    // Table: [u32 offset, u16 22, TDX GUID] [u16 40, footer GUID] then 32 bytes.
    let mut table = Vec::new();
    table.extend_from_slice(&((SYNTH_LEN - SYNTH_META_AT) as u32).to_le_bytes());
    table.extend_from_slice(&22u16.to_le_bytes());
    table.extend_from_slice(&TDX_METADATA_OFFSET_GUID);
    table.extend_from_slice(&40u16.to_le_bytes());
    table.extend_from_slice(&TABLE_FOOTER_GUID);
    let at = SYNTH_LEN - 32 - table.len();
    image[at..SYNTH_LEN - 32].copy_from_slice(&table);
    image
}

#[test]
fn synthetic_image_parses_field_by_field() {
    let image = synth_image(&synth_sections());
    let tdvf = Tdvf::parse(&image).unwrap();
    assert_eq!(tdvf.metadata_offset, SYNTH_META_AT);
    assert_eq!(tdvf.sections.len(), 4);
    let bfv = &tdvf.sections[0];
    assert_eq!(
        (
            bfv.data_offset,
            bfv.raw_data_size,
            bfv.memory_address,
            bfv.memory_data_size
        ),
        (0, 0x2000, 0xffff_e000, 0x2000)
    );
    assert_eq!(bfv.section_type, SectionType::Bfv);
    assert!(bfv.attributes.mr_extend());
    assert_eq!(tdvf.sections[3].section_type, SectionType::TempMem);
}

/// The TDX module's MRTD transcript, written out block by block from the ABI description.
fn page_add_block(gpa: u64) -> Vec<u8> {
    let mut b = b"MEM.PAGE.ADD".to_vec();
    b.resize(16, 0);
    b.extend_from_slice(&gpa.to_le_bytes());
    b.resize(128, 0);
    b
}

fn extend_blocks(gpa: u64, page: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..16 {
        let mut b = b"MR.EXTEND".to_vec();
        b.resize(16, 0);
        b.extend_from_slice(&(gpa + i * 256).to_le_bytes());
        b.resize(128, 0);
        out.extend(b);
        out.extend_from_slice(&page[i as usize * 256..(i as usize + 1) * 256]);
    }
    out
}

#[test]
fn mrtd_transcripts_follow_the_page_order() {
    let image = synth_image(&synth_sections());
    let tdvf = Tdvf::parse(&image).unwrap();
    let (p0, p1) = (&image[..0x1000], &image[0x1000..0x2000]);
    let rest = |t: &mut Vec<u8>| {
        t.extend(page_add_block(0xffff_d000)); // CFV: added, not extended
        for gpa in [0x80_9000, 0x80_a000] {
            t.extend(page_add_block(gpa));
        }
        for p in 0..6 {
            t.extend(page_add_block(0x80_0000 + p * 0x1000));
        }
    };
    let mut single = Vec::new();
    single.extend(page_add_block(0xffff_e000));
    single.extend(extend_blocks(0xffff_e000, p0));
    single.extend(page_add_block(0xffff_f000));
    single.extend(extend_blocks(0xffff_f000, p1));
    rest(&mut single);
    let mut two = Vec::new();
    two.extend(page_add_block(0xffff_e000));
    two.extend(page_add_block(0xffff_f000));
    two.extend(extend_blocks(0xffff_e000, p0));
    two.extend(extend_blocks(0xffff_f000, p1));
    rest(&mut two);

    let want_single: [u8; 48] = Sha384::digest(&single).into();
    let want_two: [u8; 48] = Sha384::digest(&two).into();
    assert_eq!(
        mrtd(&tdvf, &image, PageOrder::SinglePass).unwrap(),
        want_single
    );
    assert_eq!(mrtd(&tdvf, &image, PageOrder::TwoPass).unwrap(), want_two);
    assert_eq!(
        mrtd(&tdvf, &image[1..], PageOrder::SinglePass),
        Err(TdvfError::ImageMismatch {
            expected: SYNTH_LEN,
            found: SYNTH_LEN - 1
        })
    );
}

#[test]
fn extending_a_generated_section_is_refused() {
    let mut sections = synth_sections();
    sections[2].5 = 1; // MR_EXTEND on TD_HOB
    let image = synth_image(&sections);
    let tdvf = Tdvf::parse(&image).unwrap();
    assert_eq!(
        mrtd(&tdvf, &image, PageOrder::SinglePass),
        Err(TdvfError::ExtendOfGeneratedSection {
            index: 2,
            section_type: SectionType::TdHob
        })
    );
}

fn parse_err(image: &[u8]) -> TdvfError {
    Tdvf::parse(image).expect_err("malformed image parsed")
}

fn with_section(i: usize, f: impl FnOnce(&mut RawSection)) -> Vec<u8> {
    let mut sections = synth_sections();
    f(&mut sections[i]);
    synth_image(&sections)
}

#[test]
fn each_malformation_has_its_error() {
    let good = synth_image(&synth_sections());
    let footer_at = SYNTH_LEN - 48;
    let table_len_at = footer_at - 2;
    let entry_len_at = table_len_at - 18;
    let offset_at = entry_len_at - 4;

    assert_eq!(parse_err(&good[..40]), TdvfError::TooSmall { len: 40 });
    assert_eq!(parse_err(&[]), TdvfError::TooSmall { len: 0 });

    let mut bad = good.clone();
    bad[footer_at] ^= 1;
    assert_eq!(parse_err(&bad), TdvfError::NoFooter { offset: footer_at });
    // Truncating the image moves the footer: no footer where QEMU looks.
    assert!(matches!(
        parse_err(&good[..SYNTH_LEN - 1]),
        TdvfError::NoFooter { .. }
    ));

    let mut bad = good.clone();
    bad[table_len_at..table_len_at + 2].copy_from_slice(&10u16.to_le_bytes());
    assert!(matches!(
        parse_err(&bad),
        TdvfError::BadTableLength { length: 10, .. }
    ));

    let mut bad = good.clone();
    bad[entry_len_at..entry_len_at + 2].copy_from_slice(&23u16.to_le_bytes());
    assert_eq!(
        parse_err(&bad),
        TdvfError::BadEntryLength {
            offset: entry_len_at,
            length: 23,
            remaining: 22
        }
    );
    let mut bad = good.clone();
    bad[entry_len_at..entry_len_at + 2].copy_from_slice(&3u16.to_le_bytes());
    assert!(matches!(
        parse_err(&bad),
        TdvfError::BadEntryLength { length: 3, .. }
    ));

    let mut bad = good.clone();
    bad[entry_len_at + 2] ^= 1; // the entry's GUID
    assert_eq!(parse_err(&bad), TdvfError::NoMetadataOffset);

    let mut bad = good.clone();
    bad[offset_at..offset_at + 4].copy_from_slice(&(SYNTH_LEN as u32 + 1).to_le_bytes());
    assert!(matches!(
        parse_err(&bad),
        TdvfError::MetadataOffsetOutOfRange { .. }
    ));
    let mut bad = good.clone();
    bad[offset_at..offset_at + 4].copy_from_slice(&8u32.to_le_bytes());
    assert!(matches!(
        parse_err(&bad),
        TdvfError::MetadataOutOfImage { .. }
    ));

    let mut bad = good.clone();
    bad[SYNTH_META_AT] = b'X';
    assert_eq!(
        parse_err(&bad),
        TdvfError::BadSignature {
            offset: SYNTH_META_AT,
            found: *b"XDVF"
        }
    );
    let mut bad = good.clone();
    bad[SYNTH_META_AT + 8] = 2;
    assert!(matches!(
        parse_err(&bad),
        TdvfError::UnsupportedVersion { found: 2, .. }
    ));
    let mut bad = good.clone();
    bad[SYNTH_META_AT + 4] += 1;
    assert!(matches!(
        parse_err(&bad),
        TdvfError::BadMetadataLength { .. }
    ));
    let mut bad = good.clone();
    bad[SYNTH_META_AT + 12..SYNTH_META_AT + 16].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        parse_err(&bad),
        TdvfError::TooFewSections { found: 1, .. }
    ));
    let mut bad = good.clone();
    bad[SYNTH_META_AT + 12..SYNTH_META_AT + 16].copy_from_slice(&200u32.to_le_bytes());
    bad[SYNTH_META_AT + 4..SYNTH_META_AT + 8].copy_from_slice(&(16 + 32 * 200u32).to_le_bytes());
    assert!(matches!(
        parse_err(&bad),
        TdvfError::MetadataOutOfImage { .. }
    ));

    assert_eq!(
        parse_err(&with_section(1, |s| s.4 = 9)),
        TdvfError::UnknownSectionType { index: 1, found: 9 }
    );
    assert_eq!(
        parse_err(&with_section(1, |s| s.4 = 5)),
        TdvfError::UnsupportedSectionType {
            index: 1,
            section_type: SectionType::Payload
        }
    );
    assert!(matches!(
        parse_err(&with_section(1, |s| s.1 = 0x2000)),
        TdvfError::RawLargerThanMemory { index: 1, .. }
    ));
    assert!(matches!(
        parse_err(&with_section(2, |s| s.2 += 8)),
        TdvfError::UnalignedAddress { index: 2, .. }
    ));
    assert!(matches!(
        parse_err(&with_section(2, |s| s.3 += 8)),
        TdvfError::UnalignedSize { index: 2, .. }
    ));
    assert!(matches!(
        parse_err(&with_section(1, |s| s.0 += 8)),
        TdvfError::UnalignedDataOffset { index: 1, .. }
    ));
    assert!(matches!(
        parse_err(&with_section(2, |s| s.2 = !0xfff)),
        TdvfError::AddressOverflow { index: 2, .. }
    ));
    assert!(matches!(
        parse_err(&with_section(1, |s| s.1 = 0)),
        TdvfError::MissingRawData { index: 1, .. }
    ));
    assert!(matches!(
        parse_err(&with_section(3, |s| s.1 = 0x1000)),
        TdvfError::UnexpectedRawData { index: 3, .. }
    ));
    assert!(matches!(
        parse_err(&with_section(1, |s| s.0 = 0x4000)),
        TdvfError::SectionOutOfImage { index: 1, .. }
    ));
    assert!(matches!(
        parse_err(&with_section(3, |s| s.3 = 1 << 33)),
        TdvfError::TooMuchMemory { .. }
    ));
    let mut bad = good.clone();
    bad[SYNTH_META_AT + 12..SYNTH_META_AT + 16].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(
        parse_err(&bad),
        TdvfError::TooManySections { found: 1000, .. }
    ));

    // A TD_HOB too small for the list QEMU writes.
    let image = with_section(2, |s| s.3 = 0x1000);
    let tdvf = Tdvf::parse(&image).unwrap();
    assert!(td_hob(&tdvf, 2 * GIB).is_ok());
    let mut sections = synth_sections();
    sections[2].3 = 0x1000;
    // 70 one-page TempMem sections with gaps: over 140 ranges, more than 4 KiB of HOBs.
    sections.extend((0..70).map(|i| (0, 0, 0x100_0000 + i * 0x2000, 0x1000, 3, 0)));
    let tdvf = Tdvf {
        image_len: SYNTH_LEN,
        metadata_offset: SYNTH_META_AT,
        version: 1,
        sections: sections
            .iter()
            .enumerate()
            .map(|(i, s)| parse_section(i, &raw_section(s), SYNTH_LEN).unwrap())
            .collect(),
    };
    assert!(matches!(
        td_hob(&tdvf, 2 * GIB),
        Err(TdvfError::HobOverrun {
            capacity: 0x1000,
            ..
        })
    ));

    // No CFV section.
    let image = with_section(1, |s| *s = (0, 0, 0x90_0000, 0x1000, 3, 0));
    let tdvf = Tdvf::parse(&image).unwrap();
    assert_eq!(
        cfv(&tdvf, &image),
        Err(TdvfError::NoSection(SectionType::Cfv))
    );
}

#[test]
fn truncations_and_bit_flips_never_panic() {
    // Synthetic image: every truncation and every single-bit flip of the metadata region
    // and the table; then the real image's tail.
    let good = synth_image(&synth_sections());
    let exercise = |image: &[u8]| {
        if let Ok(tdvf) = Tdvf::parse(image) {
            // A flipped size bit can ask for gigabytes of page adds: hash only small layouts.
            if tdvf.sections.iter().map(Section::pages).sum::<u64>() <= 64 {
                let _ = mrtd(&tdvf, image, PageOrder::SinglePass);
                let _ = mrtd(&tdvf, image, PageOrder::TwoPass);
            }
            let _ = td_hob(&tdvf, 2 * GIB);
            let _ = td_hob(&tdvf, 64 * GIB);
            let _ = cfv_event(&tdvf, image);
        }
    };
    for len in 0..good.len() {
        exercise(&good[..len]);
    }
    let mut flipped = good.clone();
    let regions = [
        SYNTH_META_AT..SYNTH_META_AT + 16 + 4 * 32,
        SYNTH_LEN - 32 - 40..SYNTH_LEN,
    ];
    for region in regions {
        for byte in region {
            for bit in 0..8 {
                flipped[byte] ^= 1 << bit;
                exercise(&flipped);
                flipped[byte] ^= 1 << bit;
            }
        }
    }

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
