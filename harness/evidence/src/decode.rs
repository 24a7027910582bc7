//! Human-readable descriptions of well-known event data, for tables and for matching by eye.
//! Every decoder is total: data that does not have the expected shape is described by its size
//! and a printable prefix, never a panic.
//!
//! Layouts: TCG PC Client PFP section 10 (UEFI_VARIABLE_DATA, UEFI_IMAGE_LOAD_EVENT,
//! UEFI_GPT_DATA, UEFI_PLATFORM_FIRMWARE_BLOB(2), UEFI_HANDOFF_TABLE_POINTERS(2),
//! TCG_PCClientTaggedEvent, StartupLocality, SP800-155), UEFI spec (EFI_LOAD_OPTION, device
//! paths, GPT), Linux `drivers/firmware/efi/libstub/efistub.h` (tagged event ids).

use crate::tcg::{SPEC_ID_EVENT03, STARTUP_LOCALITY};
use measure::reader::Reader;
use measure::{Event, EventType};
use std::fmt::Write;

/// Linux EFI stub tagged event: the initrd (`INITRD_EVENT_TAG_ID`).
pub const LINUX_INITRD_TAG: u32 = 0x8F3B_22EC;
/// Linux EFI stub tagged event: the command line (`LOAD_OPTIONS_EVENT_TAG_ID`).
pub const LINUX_LOAD_OPTIONS_TAG: u32 = 0x8F3B_22ED;
/// dstack runtime event type (name + payload).
const DSTACK_RUNTIME: u32 = crate::dstack::RUNTIME_EVENT_TYPE;

/// The event type's name: the TCG name, or `DSTACK_RUNTIME_EVENT` for dstack's runtime type.
pub fn type_name(event_type: EventType) -> &'static str {
    match event_type {
        EventType(DSTACK_RUNTIME) => "DSTACK_RUNTIME_EVENT",
        other => other.name(),
    }
}

/// A one-line description of the event's data.
pub fn describe(event: &Event) -> String {
    let Some(data) = event.data.as_deref() else {
        return "(no data)".into();
    };
    let t = event.event_type;
    let described = match t {
        EventType::NO_ACTION => no_action(data),
        EventType::SEPARATOR => separator(data),
        EventType::ACTION | EventType::EFI_ACTION => Some(format!("\"{}\"", ascii(data))),
        // A version string (UTF-16 by the spec), or a GUID on some firmware.
        EventType::S_CRTM_VERSION if is_text(data) || data.iter().all(|b| *b == 0) => {
            Some(format!("\"{}\"", text(data)))
        }
        EventType::S_CRTM_VERSION => <[u8; 16]>::try_from(data)
            .ok()
            .map(|g| format!("version GUID {}", guid(&g))),
        EventType::PLATFORM_CONFIG_FLAGS if data.starts_with(QEMU_FW_CFG_TAG) => qemu_fw_cfg(data),
        EventType::PLATFORM_CONFIG_FLAGS
        | EventType::IPL
        | EventType::POST_CODE
        | EventType::S_CRTM_CONTENTS
        | EventType::NONHOST_INFO
            if is_text(data) =>
        {
            Some(format!("\"{}\"", text(data)))
        }
        EventType::POST_CODE
        | EventType::S_CRTM_CONTENTS
        | EventType::EFI_PLATFORM_FIRMWARE_BLOB => firmware_blob(data),
        EventType::EFI_PLATFORM_FIRMWARE_BLOB2 => firmware_blob2(data),
        EventType::EFI_VARIABLE_DRIVER_CONFIG
        | EventType::EFI_VARIABLE_BOOT
        | EventType::EFI_VARIABLE_BOOT2
        | EventType::EFI_VARIABLE_AUTHORITY => variable(data),
        EventType::EFI_BOOT_SERVICES_APPLICATION
        | EventType::EFI_BOOT_SERVICES_DRIVER
        | EventType::EFI_RUNTIME_SERVICES_DRIVER => image_load(data),
        EventType::EFI_GPT_EVENT => gpt(data),
        EventType::EVENT_TAG => tagged(data),
        EventType::EFI_HANDOFF_TABLES => handoff_tables(data),
        EventType::EFI_HANDOFF_TABLES2 => handoff_tables2(data),
        EventType(DSTACK_RUNTIME) => dstack_runtime(data),
        _ => None,
    };
    described.unwrap_or_else(|| fallback(data))
}

/// edk2 QemuFwCfgCacheInit.c `FW_CFG_EVENT`: this tag, then the item's 56-byte name.
const QEMU_FW_CFG_TAG: &[u8] = b"QEMU FW CFG\0";

/// The fw_cfg item an OVMF ≥ edk2-stable202505 TD measured (`QEMU FW CFG "bootorder"`).
fn qemu_fw_cfg(data: &[u8]) -> Option<String> {
    let name = data.strip_prefix(QEMU_FW_CFG_TAG)?;
    if name.len() != 56 {
        return None;
    }
    Some(format!("QEMU FW CFG \"{}\"", ascii(name)))
}

/// Size and a printable rendering: text when it is text, else a hex prefix.
fn fallback(data: &[u8]) -> String {
    if data.is_empty() {
        "(empty)".into()
    } else if is_text(data) {
        format!("\"{}\"", text(data))
    } else {
        let prefix = &data[..data.len().min(16)];
        let more = if data.len() > 16 { "…" } else { "" };
        format!("{} bytes: {}{more}", data.len(), hex::encode(prefix))
    }
}

/// ASCII, NUL-terminated or not, with control characters escaped.
fn ascii(data: &[u8]) -> String {
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end])
        .escape_debug()
        .to_string()
}

/// UTF-16LE (when every other byte is zero) or ASCII text, NUL-trimmed.
fn text(data: &[u8]) -> String {
    if looks_utf16(data) {
        utf16(data).escape_debug().to_string()
    } else {
        ascii(data)
    }
}

fn looks_utf16(data: &[u8]) -> bool {
    data.len() >= 2
        && data.len().is_multiple_of(2)
        && data.iter().skip(1).step_by(2).all(|b| *b == 0)
}

fn is_text(data: &[u8]) -> bool {
    let narrow: Vec<u8> = if looks_utf16(data) {
        data.iter().step_by(2).copied().collect()
    } else {
        data.to_vec()
    };
    let trimmed = narrow.strip_suffix(&[0]).unwrap_or(&narrow);
    !trimmed.is_empty()
        && trimmed
            .iter()
            .all(|b| b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// UTF-16LE up to the first NUL.
fn utf16(data: &[u8]) -> String {
    let units = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0);
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// An EFI_GUID in registry form (first three fields little-endian).
pub fn guid(b: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{}-{}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    )
}

fn guid_name(g: &str) -> Option<&'static str> {
    Some(match g {
        "8be4df61-93ca-11d2-aa0d-00e098032b8c" => "EFI_GLOBAL_VARIABLE",
        "d719b2cb-3d3a-4596-a3bc-dad00e67656f" => "EFI_IMAGE_SECURITY_DATABASE",
        "605dab50-e046-4300-abb6-3dd810dd8b23" => "SHIM_LOCK",
        "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f" => "LOADER (systemd)",
        "eb9d2d31-2d88-11d3-9a16-0090273fc14d" => "SMBIOS_TABLE",
        "f2fd1544-9794-4a2c-992e-e5bbcf20e394" => "SMBIOS3_TABLE",
        "8868e871-e4f1-11d3-bc22-0080c73c8881" => "ACPI_20_TABLE",
        "eb9d2d30-2d88-11d3-9a16-0090273fc14d" => "ACPI_TABLE",
        _ => return None,
    })
}

fn guid_text(b: &[u8; 16]) -> String {
    let g = guid(b);
    match guid_name(&g) {
        Some(name) => name.to_string(),
        None => g,
    }
}

fn no_action(data: &[u8]) -> Option<String> {
    if data.starts_with(SPEC_ID_EVENT03) {
        return Some("Spec ID Event03 header".into());
    }
    if data.starts_with(STARTUP_LOCALITY) {
        let locality = data.get(STARTUP_LOCALITY.len())?;
        return Some(format!("StartupLocality {locality}"));
    }
    if data.starts_with(b"SP800-155 Event") {
        // The signature is 16 bytes ("SP800-155 Event\0", "...Event2", "...Event3"); the
        // platform manufacturer id follows.
        let sig = ascii(data.get(..16)?);
        let vendor = Reader::at(data, 16).u32("vendor id").ok();
        return Some(match vendor {
            Some(v) => format!("{sig} (platform manufacturer id {v:#x})"),
            None => sig,
        });
    }
    None
}

fn separator(data: &[u8]) -> Option<String> {
    let value = u32::from_le_bytes(data.try_into().ok()?);
    Some(match value {
        0 => "separator".into(),
        0xffff_ffff => "separator (error: 0xffffffff)".into(),
        other => format!("separator {other:#x}"),
    })
}

fn firmware_blob(data: &[u8]) -> Option<String> {
    if data.len() != 16 {
        return None;
    }
    let mut r = Reader::new(data);
    let base = r.u64("base").ok()?;
    let len = r.u64("length").ok()?;
    Some(format!("firmware blob at {base:#x}, {len:#x} bytes"))
}

fn firmware_blob2(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let n = r.u8("description size").ok()?;
    let desc = r.bytes(n as usize, "description").ok()?;
    let base = r.u64("base").ok()?;
    let len = r.u64("length").ok()?;
    Some(format!("\"{}\" at {base:#x}, {len:#x} bytes", text(desc)))
}

/// UEFI_VARIABLE_DATA: VariableName GUID, UnicodeNameLength u64, VariableDataLength u64, name,
/// data.
fn variable(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let vendor: [u8; 16] = r.array("VariableName").ok()?;
    let name_chars = r.u64("UnicodeNameLength").ok()?;
    let data_len = r.u64("VariableDataLength").ok()?;
    let name_bytes = usize::try_from(name_chars).ok()?.checked_mul(2)?;
    let name = utf16(r.bytes(name_bytes, "UnicodeName").ok()?);
    let value = r
        .bytes(usize::try_from(data_len).ok()?, "VariableData")
        .ok()?;
    let mut out = format!("{}:{} ({data_len} bytes)", guid_text(&vendor), name);
    if is_boot_entry(&name) {
        if let Some(option) = load_option(value) {
            let _ = write!(out, " {option}");
        }
    } else if name == "BootOrder" {
        let order: Vec<String> = value
            .chunks_exact(2)
            .map(|c| format!("{:04X}", u16::from_le_bytes([c[0], c[1]])))
            .collect();
        let _ = write!(out, " [{}]", order.join(","));
    } else if value.len() == 1 {
        let _ = write!(out, " = {}", value[0]);
    }
    Some(out)
}

fn is_boot_entry(name: &str) -> bool {
    name.len() == 8 && name.starts_with("Boot") && name[4..].chars().all(|c| c.is_ascii_hexdigit())
}

/// EFI_LOAD_OPTION: Attributes u32, FilePathListLength u16, Description (UTF-16, NUL),
/// FilePathList, OptionalData.
pub fn load_option(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let attributes = r.u32("Attributes").ok()?;
    let path_len = r.u16("FilePathListLength").ok()?;
    let rest = r.rest();
    let units = rest.chunks_exact(2).position(|c| c == [0, 0])?;
    let desc = utf16(&rest[..units * 2]);
    let mut r = Reader::at(rest, units * 2 + 2);
    let path = r.bytes(path_len as usize, "FilePathList").ok()?;
    let optional = r.rest();
    let mut out = format!(
        "\"{}\" {} attrs {attributes:#x}",
        desc.escape_debug(),
        device_path(path)
    );
    if !optional.is_empty() {
        let _ = write!(out, " +{} bytes optional data", optional.len());
    }
    Some(out)
}

/// UEFI device path to text, in the spirit of edk2's DevicePathToText for the common nodes.
pub fn device_path(data: &[u8]) -> String {
    let mut nodes: Vec<String> = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let mut r = Reader::at(data, pos);
        let (Ok(t), Ok(sub), Ok(len)) = (r.u8("type"), r.u8("subtype"), r.u16("length")) else {
            nodes.push(format!("<truncated node at {pos}>"));
            break;
        };
        let len = len as usize;
        let Some(body) = data.get(pos + 4..pos + len).filter(|_| len >= 4) else {
            nodes.push(format!("<bad node length {len} at {pos}>"));
            break;
        };
        match (t, sub) {
            (0x7f, 0xff) => break,
            (0x7f, 0x01) => nodes.push(",".into()),
            _ => nodes.push(node_text(t, sub, body)),
        }
        pos += len;
    }
    if nodes.is_empty() {
        return "(empty device path)".into();
    }
    nodes.join("/").replace("/,/", ",")
}

fn node_text(t: u8, sub: u8, body: &[u8]) -> String {
    let mut r = Reader::new(body);
    let g = |b: &[u8]| -> Option<String> { Some(guid(b.get(..16)?.try_into().ok()?)) };
    let text = match (t, sub) {
        (1, 1) => (|| Some(format!("Pci({:#x},{:#x})", body.get(1)?, body.first()?)))(),
        (1, 3) => (|| {
            r.u32("type").ok()?;
            Some(format!(
                "MemoryMapped({:#x},{:#x})",
                r.u64("start").ok()?,
                r.u64("end").ok()?
            ))
        })(),
        (1, 4) => g(body).map(|g| format!("VenHw({g})")),
        (2, 1) => (|| {
            let hid = r.u32("hid").ok()?;
            let uid = r.u32("uid").ok()?;
            Some(match hid {
                0x0a03_41d0 => format!("PciRoot({uid:#x})"),
                0x0a08_41d0 => format!("PcieRoot({uid:#x})"),
                h if h & 0xffff == 0x41d0 => format!("Acpi(PNP{:04X},{uid:#x})", h >> 16),
                h => format!("Acpi({h:#x},{uid:#x})"),
            })
        })(),
        (3, 2) => (|| {
            Some(format!(
                "Scsi({:#x},{:#x})",
                r.u16("pun").ok()?,
                r.u16("lun").ok()?
            ))
        })(),
        (3, 5) => (|| Some(format!("USB({:#x},{:#x})", body.first()?, body.get(1)?)))(),
        (3, 10) => g(body).map(|g| format!("VenMsg({g})")),
        (3, 11) => body.get(..6).map(|m| format!("MAC({})", hex::encode(m))),
        (3, 12) => body
            .get(..4)
            .map(|a| format!("IPv4({}.{}.{}.{})", a[0], a[1], a[2], a[3])),
        (3, 18) => (|| {
            Some(format!(
                "Sata({:#x},{:#x},{:#x})",
                r.u16("hba port").ok()?,
                r.u16("pmp").ok()?,
                r.u16("lun").ok()?
            ))
        })(),
        (3, 23) => (|| {
            let nsid = r.u32("nsid").ok()?;
            Some(format!(
                "NVMe({nsid:#x},{})",
                hex::encode(r.bytes(8, "eui").ok()?)
            ))
        })(),
        (3, 24) => Some(format!("Uri({})", ascii(body))),
        (4, 1) => (|| {
            let part = r.u32("partition").ok()?;
            let start = r.u64("start").ok()?;
            let size = r.u64("size").ok()?;
            let sig: [u8; 16] = r.array("signature").ok()?;
            r.u8("format").ok()?;
            let sig_type = r.u8("signature type").ok()?;
            let sig_text = match sig_type {
                2 => format!("GPT,{}", guid(&sig)),
                1 => format!(
                    "MBR,{:#010x}",
                    u32::from_le_bytes([sig[0], sig[1], sig[2], sig[3]])
                ),
                _ => "?".into(),
            };
            Some(format!("HD({part},{sig_text},{start:#x},{size:#x})"))
        })(),
        (4, 2) => (|| {
            Some(format!(
                "CDROM({:#x},{:#x},{:#x})",
                r.u32("entry").ok()?,
                r.u64("start").ok()?,
                r.u64("size").ok()?
            ))
        })(),
        (4, 3) => g(body).map(|g| format!("VenMedia({g})")),
        (4, 4) => Some(utf16(body)),
        (4, 6) => g(body).map(|g| format!("FvFile({g})")),
        (4, 7) => g(body).map(|g| format!("Fv({g})")),
        (4, 8) => (|| {
            r.u32("reserved").ok()?;
            Some(format!(
                "Offset({:#x},{:#x})",
                r.u64("start").ok()?,
                r.u64("end").ok()?
            ))
        })(),
        (5, 1) => (|| Some(format!("BBS({:#x})", r.u16("device type").ok()?)))(),
        _ => None,
    };
    text.unwrap_or_else(|| format!("Path({t},{sub},{})", hex::encode(body)))
}

/// UEFI_IMAGE_LOAD_EVENT: location, length, link-time address, device path length, path.
fn image_load(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let location = r.u64("ImageLocationInMemory").ok()?;
    let length = r.u64("ImageLengthInMemory").ok()?;
    r.u64("ImageLinkTimeAddress").ok()?;
    let path_len = r.u64("LengthOfDevicePath").ok()?;
    let path = r
        .bytes(usize::try_from(path_len).ok()?, "DevicePath")
        .ok()?;
    Some(format!(
        "image at {location:#x}, {length:#x} bytes, {}",
        device_path(path)
    ))
}

/// UEFI_GPT_DATA: EFI_PARTITION_TABLE_HEADER (92 bytes), NumberOfPartitions u64, entries.
fn gpt(data: &[u8]) -> Option<String> {
    const HEADER: usize = 92;
    let mut r = Reader::new(data);
    if r.bytes(8, "signature").ok()? != b"EFI PART" {
        return None;
    }
    let mut h = Reader::at(data, 56);
    let disk: [u8; 16] = h.array("DiskGUID").ok()?;
    h.u64("PartitionEntryLBA").ok()?;
    h.u32("NumberOfPartitionEntries").ok()?;
    let entry_size = h.u32("SizeOfPartitionEntry").ok()? as usize;
    let mut r = Reader::at(data, HEADER);
    let count = r.u64("NumberOfPartitions").ok()?;
    let mut names = Vec::new();
    if entry_size >= 128 {
        for _ in 0..count.min(128) {
            let Ok(entry) = r.bytes(entry_size, "partition entry") else {
                break;
            };
            // Unnamed partitions are shown by their type GUID.
            let name = utf16(&entry[56..128]);
            names.push(match <[u8; 16]>::try_from(&entry[..16]) {
                Ok(type_guid) if name.is_empty() => format!("type {}", guid(&type_guid)),
                _ => format!("\"{}\"", name.escape_debug()),
            });
        }
    }
    Some(format!(
        "GPT disk {}, {count} partitions: {}",
        guid(&disk),
        names.join(", ")
    ))
}

/// TCG_PCClientTaggedEvent: taggedEventID u32, taggedEventDataSize u32, data.
fn tagged(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let id = r.u32("taggedEventID").ok()?;
    let tag_data = r.sized32("taggedEventData").ok()?;
    let name = match id {
        LINUX_INITRD_TAG => "Linux initrd tag",
        LINUX_LOAD_OPTIONS_TAG => "Linux LoadOptions tag",
        _ => "tag",
    };
    Some(format!("{name} {id:#x}: {}", fallback(tag_data)))
}

/// UEFI_HANDOFF_TABLE_POINTERS: NumberOfTables u64, then (VendorGuid, VendorTable pointer).
fn handoff_tables(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let count = r.u64("NumberOfTables").ok()?;
    tables(count, &mut r)
}

/// UEFI_HANDOFF_TABLE_POINTERS2: description size u8, description, then the table list.
fn handoff_tables2(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let n = r.u8("TableDescriptionSize").ok()?;
    let desc = text(r.bytes(n as usize, "TableDescription").ok()?);
    let count = r.u64("NumberOfTables").ok()?;
    Some(format!("\"{desc}\" {}", tables(count, &mut r)?))
}

fn tables(count: u64, r: &mut Reader) -> Option<String> {
    let mut out = Vec::new();
    for _ in 0..count.min(64) {
        let g: [u8; 16] = r.array("VendorGuid").ok()?;
        let ptr = r.u64("VendorTable").ok()?;
        out.push(format!("{} at {ptr:#x}", guid_text(&g)));
    }
    Some(format!("{count} tables: {}", out.join(", ")))
}

/// dstack runtime event data as this crate stores it: `name:payload`.
fn dstack_runtime(data: &[u8]) -> Option<String> {
    let colon = data.iter().position(|b| *b == b':')?;
    let name = ascii(&data[..colon]);
    let payload = &data[colon + 1..];
    Some(format!("dstack {name}: {}", fallback(payload)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use measure::Digests;

    fn ev(event_type: EventType, data: &[u8]) -> Event {
        Event {
            pcr: 1,
            event_type,
            digests: Digests::default(),
            data: Some(data.to_vec()),
            label: String::new(),
            varies_with: Vec::new(),
            platforms: measure::Platforms::BOTH,
        }
    }

    #[test]
    fn dstack_runtime_type_has_a_name() {
        assert_eq!(type_name(EventType(0x0800_0001)), "DSTACK_RUNTIME_EVENT");
        assert_eq!(type_name(EventType::SEPARATOR), "EV_SEPARATOR");
    }

    #[test]
    fn guid_is_mixed_endian() {
        // EFI_GLOBAL_VARIABLE as it is stored on disk.
        let bytes = hex::decode("61dfe48bca93d211aa0d00e098032b8c").unwrap();
        assert_eq!(
            guid(&bytes.try_into().unwrap()),
            "8be4df61-93ca-11d2-aa0d-00e098032b8c"
        );
    }

    #[test]
    fn qemu_fw_cfg_events_name_their_item() {
        let mut data = b"QEMU FW CFG\0bootorder".to_vec();
        data.resize(12 + 56, 0);
        assert_eq!(
            describe(&ev(EventType::PLATFORM_CONFIG_FLAGS, &data)),
            "QEMU FW CFG \"bootorder\""
        );
        // A truncated name field is not taken for one.
        assert!(describe(&ev(EventType::PLATFORM_CONFIG_FLAGS, &data[..40])).contains("bytes"));
        assert_eq!(
            describe(&ev(EventType::PLATFORM_CONFIG_FLAGS, b"ACPI DATA")),
            "\"ACPI DATA\""
        );
    }

    #[test]
    fn separators_and_actions() {
        assert_eq!(describe(&ev(EventType::SEPARATOR, &[0; 4])), "separator");
        assert_eq!(
            describe(&ev(
                EventType::EFI_ACTION,
                b"Calling EFI Application from Boot Option"
            )),
            "\"Calling EFI Application from Boot Option\""
        );
    }

    #[test]
    fn garbage_never_panics() {
        for t in [
            0u32,
            1,
            3,
            4,
            5,
            6,
            7,
            8,
            0xa,
            0xd,
            0x8000_0001,
            0x8000_0002,
            0x8000_0003,
            0x8000_0006,
            0x8000_0008,
            0x8000_0009,
            0x8000_000a,
            0x8000_000b,
            0x8000_000c,
            0x8000_00e0,
            0x0800_0001,
        ] {
            for len in 0..200 {
                let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
                let _ = describe(&ev(EventType(t), &data));
                let ff = vec![0xff; len];
                let _ = describe(&ev(EventType(t), &ff));
            }
        }
    }
}
