//! The fw_cfg ACPI blobs OVMF measures: QemuFwCfgAcpi (OvmfPkg/AcpiPlatformDxe) measures the
//! `etc/table-loader` script itself, then each blob an ALLOCATE command names, in script order,
//! as EV_PLATFORM_CONFIG_FLAGS "ACPI DATA". (Observed on vTPM with OVMF 2025.02: four events,
//! loader, rsdp, tables, tpm/log; a TD has no tpm/log, hence three.)

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

/// Name of QEMU's linker/loader script in fw_cfg.
pub const TABLE_LOADER: &str = "etc/table-loader";

/// The blobs measured, in measurement order (loader first), looked up in a fw_cfg dump. Empty
/// when the dump has no loader (no ACPI).
pub fn measured_blobs(files: &BTreeMap<String, Vec<u8>>) -> Vec<(String, &[u8])> {
    let Some(loader) = files.get(TABLE_LOADER) else {
        return Vec::new();
    };
    std::iter::once(TABLE_LOADER.to_string())
        .chain(allocated_files(loader))
        .filter_map(|name| files.get(&name).map(|data| (name, data.as_slice())))
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

        let files: BTreeMap<String, Vec<u8>> = [
            (TABLE_LOADER.to_string(), script.clone()),
            ("etc/acpi/tables".to_string(), vec![7]),
        ]
        .into();
        let blobs = measured_blobs(&files);
        let measured: Vec<&str> = blobs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(measured, vec![TABLE_LOADER, "etc/acpi/tables"]);
    }
}
