//! The option ROM reader on the ROM QEMU really serves a virtio-net NIC (from the managed
//! `qemu-7.2` root, so `images/fetch.sh` must have run) and on one edk2's EfiRom built: images,
//! drivers and their events against a real log, and every malformation an error, never a
//! panic. Here, not in the crate's unit tests, because it reads the image cache.

use measure::optionrom::*;
use measure::{EventType, Input, Platforms};

/// Debian ipxe-qemu's ROM, which QEMU 7.2 finds for `virtio-net-pci` (default romfile
/// `efi-virtio.rom`, searched in /usr/lib/ipxe/qemu among QEMU's data dirs): the copy in
/// the managed `qemu-7.2` root (images/fetch.sh), the same on every host.
const VIRTIO_ROM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../.cache/roots/qemu-7.2/usr/lib/ipxe/qemu/efi-virtio.rom"
);
/// The EV_EFI_BOOT_SERVICES_DRIVER event OVMF 2022.11 logged on a vTPM for that ROM on a
/// virtio-net-pci NIC ("PciRoot(0x0)/Pci(0x1,0x0)/Offset(0x12800,0x3cdff)", 0x2a5c8 bytes).
const VIRTIO_DRIVER_SHA384: &str = "023467d65d283e7acfb49cb91434c6675149b105536ff84f088efa68fce7a73a59c972a98b2e32a230723534e88ae07a";
/// sha384sum of bytes 0x12838..0x3ce00 of that ROM: the driver file as stored.
const VIRTIO_FILE_SHA384: &str = "5671c30f3bc0511a56fff9acf8cfeb59e3ad6a880169295b32c8b44f1995e457dc36225dd6527cb7aaffbc85e722bbaf";
/// edk2's EfiRom (BaseTools, edk2-stable202211, built from source) run as
/// `EfiRom -f 0x1af4 -i 0x1000 -ec virtio.efi` on that driver file: one EFI image,
/// UEFI-compressed.
const COMPRESSED_ROM: &[u8] = include_bytes!("../src/optionrom/testdata/virtio-efirom-ec.rom");

fn virtio_rom() -> Vec<u8> {
    std::fs::read(VIRTIO_ROM).unwrap_or_else(|e| panic!("{VIRTIO_ROM}: {e} (run images/fetch.sh)"))
}

fn sha384_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha384};
    hex::encode(Sha384::digest(bytes))
}

#[test]
fn virtio_rom_chain() {
    let rom = virtio_rom();
    let images = images(&rom).unwrap();
    let summary: Vec<_> = images
        .iter()
        .map(|i| {
            (
                i.offset,
                i.bytes.len(),
                i.code_type,
                i.last,
                i.vendor_id,
                i.device_id,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, 0x12800, CODE_TYPE_PCAT, false, 0x1af4, 0x1041),
            (0x12800, 0x2a600, CODE_TYPE_EFI, true, 0x1af4, 0x1041),
        ]
    );
    assert_eq!(
        images[1].efi,
        Some(EfiRomHeader {
            efi_signature: EFI_ROM_SIGNATURE,
            subsystem: SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER,
            machine: MACHINE_X64,
            compression: COMPRESSION_NONE,
            initialization_size: 0x2a600,
            image_offset: 0x38,
        })
    );
    // The real event's device path: Offset(0x12800,0x3cdff).
    assert_eq!((images[1].offset, images[1].end()), (0x12800, 0x3cdff));
}

#[test]
fn virtio_driver_is_the_file_firmware_measured() {
    let rom = virtio_rom();
    let drivers = efi_drivers(&rom).unwrap();
    assert_eq!(drivers.len(), 1);
    let d = &drivers[0];
    // The real event's ImageLengthInMemory and device path offsets.
    assert_eq!(d.file.len(), 0x2a5c8);
    assert_eq!((d.rom_offset, d.rom_end), (0x12800, 0x3cdff));
    assert_eq!(sha384_hex(&d.file), VIRTIO_FILE_SHA384);
    assert!(!d.compressed);
    assert_eq!(d.pe_subsystem, SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER);
}

#[test]
fn virtio_driver_event_matches_the_real_log() {
    let events = driver_events(&virtio_rom(), "optionrom:virtio-net").unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.pcr, 2);
    assert_eq!(e.event_type, EventType::EFI_BOOT_SERVICES_DRIVER);
    assert_eq!(
        e.digests.sha384_hex().as_deref(),
        Some(VIRTIO_DRIVER_SHA384)
    );
    assert!(e.digests.sha256.is_some());
    assert_eq!(e.label, "optionrom:virtio-net");
    assert_eq!(e.varies_with, [Input::Devices, Input::QemuVersion]);
    assert_eq!(e.platforms, Platforms::VTPM);
    assert_eq!(e.data, None);
}

#[test]
fn compressed_rom_from_edk2_efirom_decompresses_to_the_measured_driver() {
    let images = images(COMPRESSED_ROM).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].efi.map(|e| e.compression), Some(COMPRESSION_UEFI));
    let drivers = efi_drivers(COMPRESSED_ROM).unwrap();
    assert_eq!(drivers.len(), 1);
    assert!(drivers[0].compressed);
    assert_eq!(sha384_hex(&drivers[0].file), VIRTIO_FILE_SHA384);
    let events = driver_events(COMPRESSED_ROM, "optionrom:virtio-net").unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].digests.sha384_hex().as_deref(),
        Some(VIRTIO_DRIVER_SHA384)
    );
}

#[test]
fn rom_without_efi_image_measures_nothing() {
    // The legacy image alone, flagged last.
    let rom = virtio_rom();
    let mut legacy = rom[..0x12800].to_vec();
    let pcir = 0x1c;
    legacy[pcir + 0x15] |= 0x80;
    assert_eq!(driver_events(&legacy, "x").unwrap(), []);
}

#[test]
fn skipped_images_follow_local_load_file2() {
    let rom = virtio_rom();
    let efi = 0x12800;
    for (field, value) in [
        (8, SUBSYSTEM_EFI_APPLICATION),
        (8, 13),
        (0xc, 2),
        (4, 0x0ef0),
    ] {
        let mut r = rom.clone();
        r[efi + field..efi + field + 2].copy_from_slice(&value.to_le_bytes());
        assert_eq!(
            efi_drivers(&r).unwrap(),
            [],
            "field {field:#x} = {value:#x}"
        );
    }
    // An IA32-tagged image is still loaded (and measured) by OVMF 2022.11.
    let mut r = rom.clone();
    r[efi + 0xa..efi + 0xc].copy_from_slice(&MACHINE_IA32.to_le_bytes());
    assert_eq!(efi_drivers(&r).unwrap().len(), 1);
}

#[test]
fn two_drivers_get_offset_labels() {
    // Chain the compressed ROM's image after the host ROM's (clear its last flag).
    let mut rom = virtio_rom();
    let pcir = 0x12800 + 0x1c;
    rom[pcir + 0x15] &= !0x80;
    rom.extend_from_slice(COMPRESSED_ROM);
    let events = driver_events(&rom, "nic").unwrap();
    let labels: Vec<_> = events.iter().map(|e| e.label.as_str()).collect();
    assert_eq!(labels, ["nic@0x12800", "nic@0x3ce00"]);
    assert!(events
        .iter()
        .all(|e| e.digests.sha384_hex().as_deref() == Some(VIRTIO_DRIVER_SHA384)));
}

/// The two PCR2 events OVMF 2022.11 logged (vTPM, QEMU 7.2, TCG) for one virtio-net NIC
/// whose romfile was built by edk2's EfiRom from: the host ROM's legacy image, the driver
/// with its COFF Machine set to IA32 (`-ec`), and the driver itself (`-ec`).
const FOREIGN_THEN_NATIVE_SHA384: [&str; 2] = [
    "94a5a45cb27ac13df7be5894e7c96021d40aa81ed835fead3c83dc45171aeb1b040f031cb9b63fe4b1619bccc9c7c24a",
    VIRTIO_DRIVER_SHA384,
];

#[test]
fn foreign_machine_images_are_measured_in_rom_order() {
    // The same files firmware received, laid out as: legacy, IA32-tagged driver
    // (uncompressed here: the measured file is the decompressed one), compressed driver.
    let mut rom = virtio_rom();
    let efi = 0x12800;
    rom[efi + 0xa..efi + 0xc].copy_from_slice(&MACHINE_IA32.to_le_bytes());
    let pe = efi + 0x38;
    let e_lfanew = u32::from_le_bytes(rom[pe + 0x3c..pe + 0x40].try_into().unwrap()) as usize;
    rom[pe + e_lfanew + 4..pe + e_lfanew + 6].copy_from_slice(&MACHINE_IA32.to_le_bytes());
    rom[efi + 0x1c + 0x15] &= !0x80;
    rom.extend_from_slice(COMPRESSED_ROM);
    let drivers = efi_drivers(&rom).unwrap();
    let machines: Vec<_> = drivers.iter().map(|d| (d.machine, d.compressed)).collect();
    assert_eq!(machines, [(MACHINE_IA32, false), (MACHINE_X64, true)]);
    let events = driver_events(&rom, "nic").unwrap();
    let digests: Vec<_> = events
        .iter()
        .map(|e| e.digests.sha384_hex().unwrap_or_default())
        .collect();
    assert_eq!(digests, FOREIGN_THEN_NATIVE_SHA384);
    assert!(events
        .iter()
        .all(|e| (e.pcr, e.event_type) == (2, EventType::EFI_BOOT_SERVICES_DRIVER)));
}

#[test]
fn structural_errors_name_the_field() {
    assert_eq!(
        images(&[0x55]),
        Err(OptionRomError::Truncated {
            what: "ROM header signature",
            offset: 0,
            need: 2,
            available: 1
        })
    );
    assert!(matches!(
        images(&[0; 512]),
        Err(OptionRomError::Invalid {
            what: "ROM header signature",
            offset: 0,
            ..
        })
    ));
    let rom = virtio_rom();
    let mut bad_pcir = rom.clone();
    bad_pcir[0x1c] = b'X';
    assert!(matches!(
        images(&bad_pcir),
        Err(OptionRomError::Invalid {
            what: "PCI data structure signature",
            offset: 0x1c,
            ..
        })
    ));
    assert!(matches!(
        images(&rom[..0x3c000]),
        Err(OptionRomError::Truncated {
            what: "ROM image (PCIR ImageLength)",
            offset: 0x12800,
            ..
        })
    ));
    let mut zero_len = rom.clone();
    zero_len[0x1c + 0x10..0x1c + 0x12].fill(0);
    assert!(matches!(
        images(&zero_len),
        Err(OptionRomError::Invalid {
            what: "PCIR ImageLength",
            ..
        })
    ));
    let mut bad_stream = COMPRESSED_ROM.to_vec();
    bad_stream[0x38 + 8..0x38 + 16].fill(0xff);
    assert!(matches!(
        driver_events(&bad_stream, "x"),
        Err(OptionRomError::Decompress { offset: 0, .. })
    ));
}

#[test]
fn truncations_and_bit_flips_never_panic() {
    let rom = virtio_rom();
    // The headers of both images and the start of the PE image, plus a spread of cuts.
    let header_bits = (0..0x60)
        .chain(0x12800..0x12900)
        .flat_map(|byte| (0..8).map(move |bit| (byte, bit)));
    for (byte, bit) in header_bits {
        let mut r = rom.clone();
        r[byte] ^= 1 << bit;
        let _ = driver_events(&r, "x");
    }
    for len in (0..rom.len())
        .step_by(0x1000)
        .chain([0x12801, 0x12818, 0x12838])
    {
        let _ = driver_events(&rom[..len], "x");
    }
    // The compressed stream: flips across the header, tables and data.
    for byte in (0x38..COMPRESSED_ROM.len()).step_by(97) {
        let mut r = COMPRESSED_ROM.to_vec();
        r[byte] ^= 0x10;
        let _ = driver_events(&r, "x");
    }
}
