use super::*;

const GIB: u64 = 1 << 30;

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
    // and the table (the real images: tests/tdvf_firmware.rs).
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
}
