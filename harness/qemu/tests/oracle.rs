//! The fw_cfg oracle against stock QEMU (7.2 on the project's machines) and OVMF 2022.11.

mod common;

use common::{kernel, ovmf};
use qemu::{dump_fw_cfg, Boot, Device, FirmwarePci, Vm};
use std::collections::BTreeMap;
use std::time::Instant;

fn vm(tpm: bool) -> Vm {
    let mut vm = Vm::new(
        ovmf(),
        2,
        2 << 30,
        Boot::Kernel {
            kernel: kernel(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
        },
    );
    vm.tpm = tpm;
    vm.devices = vec![
        Device::Net {
            id: "net0".into(),
            mac: None,
        },
        Device::Vsock { guest_cid: 3 },
        Device::PcieRootPort { chassis: 1 },
    ];
    vm
}

fn le32(b: &[u8], at: usize) -> u32 {
    let s = b.get(at..at + 4).expect("in bounds");
    u32::from_le_bytes([s[0], s[1], s[2], s[3]])
}

/// The table-loader's ADD_CHECKSUM commands (QEMU `hw/acpi/bios-linker-loader.c`: 128-byte
/// entries, command 3 = {u32 cmd, char file[56], u32 result_offset, u32 start, u32 length}):
/// (file, start, length, result_offset).
fn checksum_commands(loader: &[u8]) -> Vec<(String, usize, usize, usize)> {
    assert_eq!(
        loader.len() % 128,
        0,
        "table-loader is a whole number of 128-byte commands"
    );
    let mut out = Vec::new();
    for entry in loader.chunks(128) {
        if le32(entry, 0) == 3 {
            let name = &entry[4..60];
            let end = name.iter().position(|&b| b == 0).unwrap_or(56);
            let file = String::from_utf8(name[..end].to_vec()).expect("utf-8 file name");
            out.push((
                file,
                le32(entry, 64) as usize,
                le32(entry, 68) as usize,
                le32(entry, 60) as usize,
            ));
        }
    }
    out
}

fn check_acpi(files: &BTreeMap<String, Vec<u8>>, expect_tpm: bool) -> Vec<String> {
    let rsdp = &files["etc/acpi/rsdp"];
    assert_eq!(&rsdp[..8], b"RSD PTR ", "RSDP signature");
    let tables = &files["etc/acpi/tables"];
    let mut signatures = Vec::new();
    for (file, start, length, result) in checksum_commands(&files["etc/table-loader"]) {
        let blob = &files[&file];
        let region = blob
            .get(start..start + length)
            .expect("checksum region inside its file");
        assert!(
            result >= start && result < start + length,
            "checksum byte inside its region"
        );
        // QEMU leaves the checksum byte zero for the firmware to fill in
        // (bios_linker_loader_add_checksum), so the region sums to 0 only once it is set.
        assert_eq!(blob[result], 0, "{file}@{start}: checksum byte not zeroed");
        if file == "etc/acpi/tables" {
            let sig = String::from_utf8(region[..4].to_vec()).expect("ascii signature");
            assert!(
                sig.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()),
                "{sig}"
            );
            assert_eq!(
                le32(region, 4) as usize,
                length,
                "{sig}: header length vs loader length"
            );
            let fixed = region.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
            // The firmware writes 0 - sum, so patched tables sum to zero; check the arithmetic
            // holds by applying it here on the unpatched bytes.
            let mut patched = region.to_vec();
            patched[result - start] = 0u8.wrapping_sub(fixed);
            assert_eq!(patched.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            signatures.push(sig);
        } else {
            assert_eq!(file, "etc/acpi/rsdp");
        }
    }
    assert!(!tables.is_empty());
    for required in ["FACP", "DSDT", "APIC", "MCFG"] {
        assert!(
            signatures.iter().any(|s| s == required),
            "{required} missing: {signatures:?}"
        );
    }
    assert_eq!(
        signatures.iter().any(|s| s == "TPM2"),
        expect_tpm,
        "{signatures:?}"
    );
    signatures
}

#[tokio::test]
async fn oracle_is_deterministic_and_serves_valid_acpi() {
    let vm = vm(false);
    let start = Instant::now();
    let first = dump_fw_cfg(&vm, &common::qemu(), FirmwarePci::OVMF_2022_11)
        .await
        .expect("first dump");
    let first_time = start.elapsed();
    let start = Instant::now();
    let second = dump_fw_cfg(&vm, &common::qemu(), FirmwarePci::OVMF_2022_11)
        .await
        .expect("second dump");
    let second_time = start.elapsed();
    eprintln!(
        "fw_cfg dumps: {first_time:?}, {second_time:?}; files: {:?}",
        first
            .iter()
            .map(|(k, v)| (k.as_str(), v.len()))
            .collect::<Vec<_>>()
    );
    for name in [
        "etc/acpi/rsdp",
        "etc/acpi/tables",
        "etc/table-loader",
        "bootorder",
        "etc/e820",
    ] {
        assert!(first.contains_key(name), "{name} missing");
    }
    assert_eq!(first, second, "two dumps of the same VM differ");
    let signatures = check_acpi(&first, false);
    eprintln!("ACPI tables: {signatures:?}");

    // e820 (QEMU `hw/i386/e820_memory_layout.c`: 20-byte {u64 addr, u64 len, u32 type}):
    // 2 GiB fits below the q35 4 GiB split, so one RAM entry of exactly 2 GiB at 0.
    let e820 = &first["etc/e820"];
    let ram: Vec<(u64, u64)> = e820
        .chunks(20)
        .filter(|e| le32(e, 16) == 1)
        .map(|e| {
            (
                u64::from_le_bytes(e[0..8].try_into().unwrap()),
                u64::from_le_bytes(e[8..16].try_into().unwrap()),
            )
        })
        .collect();
    assert_eq!(ram, [(0, 2 << 30)]);

    // The MCFG base address is what the oracle programmed as PCIEXBAR (ACPI MCFG: 44-byte
    // header + 8 reserved, then u64 base).
    let tables = &first["etc/acpi/tables"];
    let loader = checksum_commands(&first["etc/table-loader"]);
    let (_, mcfg, _, _) = loader
        .iter()
        .find(|(f, s, _, _)| f == "etc/acpi/tables" && &tables[*s..*s + 4] == b"MCFG")
        .expect("MCFG");
    let base = u64::from_le_bytes(tables[mcfg + 44..mcfg + 52].try_into().unwrap());
    assert_eq!(base, 0xB000_0000);
}

#[tokio::test]
async fn oracle_with_tpm_serves_tpm2_table() {
    let files = dump_fw_cfg(&vm(true), &common::qemu(), FirmwarePci::OVMF_2025_02)
        .await
        .expect("dump with TPM");
    check_acpi(&files, true);
    assert!(
        files.contains_key("etc/tpm/log"),
        "{:?}",
        files.keys().collect::<Vec<_>>()
    );
}
