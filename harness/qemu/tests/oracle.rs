//! The fw_cfg oracle against the managed QEMU 7.2 and OVMF 2022.11.

mod common;

use common::{kernel, ovmf, vsock_daemon};
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

/// PCI configuration mechanism #1 (`0xcf8`/`0xcfc`), as firmware uses it.
async fn config_read32(qtest: &mut qemu::qtest::Qtest, slot: u8, offset: u8) -> u32 {
    let address = 0x8000_0000 | (u32::from(slot) << 11) | u32::from(offset & 0xfc);
    qtest.outl(0xcf8, address).await.expect("outl");
    qtest.inl(0xcfc).await.expect("inl")
}

async fn config_write32(qtest: &mut qemu::qtest::Qtest, slot: u8, offset: u8, value: u32) {
    let address = 0x8000_0000 | (u32::from(slot) << 11) | u32::from(offset & 0xfc);
    qtest.outl(0xcf8, address).await.expect("outl");
    qtest.outl(0xcfc, value).await.expect("outl");
}

/// The identity of the function at `slot` (vendor:device, class, subsystem) and, separately,
/// its shape as firmware and QEMU's ACPI builder see it: header type, interrupt pin, each BAR's
/// kind and size (probed as firmware does), and the capability list with each virtio
/// capability's (type, BAR, offset, length) and the MSI-X table size.
async fn pci_function(qtest: &mut qemu::qtest::Qtest, slot: u8) -> (Vec<String>, Vec<String>) {
    let id = config_read32(qtest, slot, 0x00).await;
    let class = config_read32(qtest, slot, 0x08).await;
    let subsystem = config_read32(qtest, slot, 0x2c).await;
    let identity = vec![
        format!("id {:04x}:{:04x}", id & 0xffff, id >> 16),
        format!("class {:06x} rev {:02x}", class >> 8, class & 0xff),
        format!(
            "subsystem {:04x}:{:04x}",
            subsystem & 0xffff,
            subsystem >> 16
        ),
    ];
    let mut shape = Vec::new();
    let header = config_read32(qtest, slot, 0x0c).await;
    let status = config_read32(qtest, slot, 0x04).await >> 16;
    let interrupt = config_read32(qtest, slot, 0x3c).await;
    shape.push(format!(
        "header type {:02x}, status {status:04x}, interrupt pin {}",
        (header >> 16) & 0xff,
        (interrupt >> 8) & 0xff
    ));
    let mut bar = 0u8;
    while bar < 6 {
        let offset = 0x10 + 4 * bar;
        let original = config_read32(qtest, slot, offset).await;
        config_write32(qtest, slot, offset, u32::MAX).await;
        let mask = config_read32(qtest, slot, offset).await;
        config_write32(qtest, slot, offset, original).await;
        if mask == 0 {
            shape.push(format!("BAR {bar}: none"));
            bar += 1;
        } else if mask & 1 == 1 {
            let size = (!(mask & !0x3)).wrapping_add(1) & 0xffff;
            shape.push(format!("BAR {bar}: I/O {size:#x}"));
            bar += 1;
        } else if mask & 0x6 == 0x4 {
            let high_offset = offset + 4;
            let high_original = config_read32(qtest, slot, high_offset).await;
            config_write32(qtest, slot, high_offset, u32::MAX).await;
            let high = config_read32(qtest, slot, high_offset).await;
            config_write32(qtest, slot, high_offset, high_original).await;
            let size = (!(u64::from(mask & !0xf) | u64::from(high) << 32)).wrapping_add(1);
            let prefetch = if mask & 0x8 != 0 { " prefetchable" } else { "" };
            shape.push(format!("BAR {bar}: 64-bit{prefetch} memory {size:#x}"));
            bar += 2;
        } else {
            let size = (!(mask & !0xf)).wrapping_add(1);
            shape.push(format!("BAR {bar}: 32-bit memory {size:#x}"));
            bar += 1;
        }
    }
    let mut pointer = (config_read32(qtest, slot, 0x34).await & 0xfc) as u8;
    while pointer != 0 {
        let head = config_read32(qtest, slot, pointer).await;
        let cap_id = head & 0xff;
        match cap_id {
            0x09 => {
                let bar_field = config_read32(qtest, slot, pointer + 4).await;
                let offset = config_read32(qtest, slot, pointer + 8).await;
                let length = config_read32(qtest, slot, pointer + 12).await;
                shape.push(format!(
                    "virtio cap type {} in BAR {} at {offset:#x}, {length:#x} bytes",
                    (head >> 24) & 0xff,
                    bar_field & 0xff
                ));
            }
            0x11 => shape.push(format!("MSI-X, {} vectors", ((head >> 16) & 0x7ff) + 1)),
            other => shape.push(format!("capability {other:#04x}")),
        }
        pointer = ((head >> 8) & 0xfc) as u8;
    }
    (identity, shape)
}

/// The oracle's stand-in for vhost-vsock presents the same PCI function as the real device,
/// but for its identity: vhost-user-vsock-pci (served by the vhost-device-vsock daemon) is read
/// from QEMU, and it equals vhost-vsock-pci by QEMU's source (see `qemu::vm::VsockHost`).
/// Only the identity differs, which QEMU's ACPI builder does not read for a root-bus endpoint
/// (it looks at hotpluggability, bridges and VGA/ISA-bridge classes only).
#[tokio::test]
async fn oracle_stand_in_has_the_shape_of_a_real_virtio_vsock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = qemu::RunDir::new(dir.path());
    let daemon_socket = dir.path().join("vhost-user-vsock.sock");
    let mut daemon = qemu::process::Group::spawn(
        "vhost-device-vsock",
        &vsock_daemon(),
        &[
            "--vm".into(),
            format!(
                "guest-cid=3,socket={},uds-path={}",
                daemon_socket.display(),
                dir.path().join("vsock.uds").display()
            ),
        ],
        &dir.path().join("daemon.log"),
    )
    .expect("daemon");
    qemu::process::wait_for_socket(
        &daemon_socket,
        &mut daemon,
        std::time::Duration::from_secs(10),
    )
    .await
    .expect("daemon socket");
    let listener = tokio::net::UnixListener::bind(run.qtest_socket()).expect("qtest socket");
    let mut command = common::qemu().tokio_command();
    command.args([
        "-nodefaults",
        "-display",
        "none",
        "-accel",
        "tcg",
        "-S",
        "-machine",
        "q35,memory-backend=mem0",
        "-object",
        "memory-backend-memfd,id=mem0,size=256M,share=on",
        "-m",
        "256M",
        "-qtest",
        &format!("unix:{}", run.qtest_socket().display()),
        "-chardev",
        &format!("socket,id=vsock0,path={}", daemon_socket.display()),
        "-device",
        "vhost-user-vsock-pci,chardev=vsock0,addr=01.0",
        "-device",
        &format!("{},addr=02.0", qemu::argv::oracle_stand_in()),
    ]);
    let mut qemu =
        qemu::process::Group::spawn_command("qemu", command, &run.stderr_log()).expect("qemu");
    let (stream, _) = listener.accept().await.expect("qtest connection");
    let mut qtest = qemu::qtest::Qtest::new(stream);
    let (vsock_identity, vsock_shape) = pci_function(&mut qtest, 1).await;
    let (stand_in_identity, stand_in_shape) = pci_function(&mut qtest, 2).await;
    drop(qtest);
    let _ = qemu.kill().await;
    let _ = daemon.kill().await;
    eprintln!("vhost-user-vsock-pci: {vsock_identity:?} {vsock_shape:#?}");
    eprintln!("stand-in: {stand_in_identity:?} {stand_in_shape:#?}");
    // QEMU's source: PCI_VENDOR_ID_REDHAT_QUMRANET, modern-only virtio id 0x1040 + 19 (vsock),
    // PCI_CLASS_COMMUNICATION_OTHER; Linux in the vTPM guest reports the same
    // ("[1af4:1053] type 00 class 0x078000").
    assert_eq!(vsock_identity[0], "id 1af4:1053");
    assert_eq!(vsock_identity[1], "class 078000 rev 01");
    assert_eq!(stand_in_shape, vsock_shape);
}
