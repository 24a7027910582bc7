//! The fw_cfg ACPI blobs OVMF measures: QemuFwCfgAcpi (OvmfPkg/AcpiPlatformDxe) walks QEMU's
//! `etc/table-loader` script and measures each blob an ALLOCATE command names, in script order,
//! as EV_PLATFORM_CONFIG_FLAGS "ACPI DATA".

use std::collections::BTreeMap;

/// QEMU `hw/acpi/bios-linker-loader.c`: each command is 128 bytes; command 1 = ALLOCATE with a
/// 56-byte NUL-padded file name right after the command word.
const COMMAND_LEN: usize = 128;
const ALLOCATE: u32 = 1;
const FILE_LEN: usize = 56;

/// File names of the ALLOCATE commands of a table-loader script, in order. Malformed or
/// unknown commands are skipped: the script comes from QEMU, and an empty result leaves the
/// prediction without ACPI events, which the comparison then reports as missing events.
pub fn allocated_files(table_loader: &[u8]) -> Vec<String> {
    table_loader
        .chunks_exact(COMMAND_LEN)
        .filter(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) == ALLOCATE)
        .map(|c| {
            let name = &c[4..4 + FILE_LEN];
            let end = name.iter().position(|&b| b == 0).unwrap_or(FILE_LEN);
            String::from_utf8_lossy(&name[..end]).into_owned()
        })
        .collect()
}

/// The blobs measured, in measurement order, looked up in a fw_cfg dump.
pub fn measured_blobs<'a>(
    table_loader: &[u8],
    files: &'a BTreeMap<String, Vec<u8>>,
) -> Vec<&'a [u8]> {
    allocated_files(table_loader)
        .iter()
        .filter_map(|name| files.get(name).map(Vec::as_slice))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(kind: u32, name: &str) -> Vec<u8> {
        let mut c = vec![0u8; COMMAND_LEN];
        c[..4].copy_from_slice(&kind.to_le_bytes());
        c[4..4 + name.len()].copy_from_slice(name.as_bytes());
        c
    }

    #[test]
    fn allocate_commands_in_order() {
        let mut script = command(ALLOCATE, "etc/acpi/rsdp");
        script.extend(command(2, "etc/acpi/tables"));
        script.extend(command(ALLOCATE, "etc/acpi/tables"));
        script.extend([1, 2, 3]);
        assert_eq!(
            allocated_files(&script),
            vec!["etc/acpi/rsdp", "etc/acpi/tables"]
        );
    }
}
