//! The fw_cfg items OVMF caches early and, in a TD, measures into RTMR0 (edk2 ≥ stable202505).
//!
//! edk2 `OvmfPkg/Library/QemuFwCfgLib/QemuFwCfgCacheInit.c` (added by fb56dc78ef, "Support Cache
//! FwCfg with optional measurement", first in edk2-stable202505; the same blob d3220c8f through
//! edk2-stable202605) reads a fixed list of fw_cfg items once (`mCacheFwCfgList`), from
//! PlatformPei (generic OVMF) or PeilessStartup (IntelTdx), and when `TdIsEnabled ()` measures
//! each item marked for it with `TpmMeasureAndLogData (1, EV_PLATFORM_CONFIG_FLAGS, …)`: PCR1,
//! that is RTMR0, after the TD HOB and CFV of SEC and before any DXE event. The digest is taken
//! over the item's bytes; the logged data is `FW_CFG_EVENT`, the NUL-terminated "QEMU FW CFG"
//! followed by the 56-byte item name. A file item is taken only when QEMU serves it, non-empty,
//! and of the listed size where one is listed; the `BootMenu` item is a numbered one, always read.

use crate::event::{Event, EventType, Input, Platforms};
use std::collections::BTreeMap;

/// `EV_POSTCODE_INFO_QEMU_FW_CFG_DATA` with its NUL (`sizeof` of the literal).
pub const EVENT_TAG: &[u8; 12] = b"QEMU FW CFG\0";
/// `QEMU_FW_CFG_FNAME_SIZE`: the name field of an fw_cfg directory entry and of the event.
pub const NAME_SIZE: usize = 56;

/// `QemuFwCfgItemBootMenu` (OvmfPkg/Include/IndustryStandard/QemuFwCfg.h; QEMU `FW_CFG_BOOT_MENU`).
pub const BOOT_MENU_ITEM: u16 = 0x0e;

/// Where edk2 reads an item from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An fw_cfg file, found by name in the directory.
    File,
    /// A numbered item, read whatever the directory says (`QemuFwCfgItemBootMenu`, 0x0e).
    Item(u16),
}

/// One entry of `mCacheFwCfgList` that is measured (`NeedMeasure`), in list order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeasuredItem {
    pub name: &'static str,
    pub source: Source,
    /// The only size taken (0: any size but zero).
    pub size: u32,
}

/// The measured entries of `mCacheFwCfgList` (`etc/e820` and `etc/system-states` are cached
/// but not measured).
pub const MEASURED_ITEMS: [MeasuredItem; 6] = [
    MeasuredItem {
        name: "etc/extra-pci-roots",
        source: Source::File,
        size: 8,
    },
    MeasuredItem {
        name: "BootMenu",
        source: Source::Item(BOOT_MENU_ITEM),
        size: 2,
    },
    MeasuredItem {
        name: "etc/boot-menu-wait",
        source: Source::File,
        size: 2,
    },
    MeasuredItem {
        name: "etc/reserved-memory-end",
        source: Source::File,
        size: 8,
    },
    MeasuredItem {
        name: "opt/ovmf/X-PciMmio64Mb",
        source: Source::File,
        size: 0,
    },
    MeasuredItem {
        name: "bootorder",
        source: Source::File,
        size: 0,
    },
];

/// An item the firmware reads that the caller did not supply.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("fw_cfg item {name} (number {number:#x}) was not read: its value is measured in a TD")]
pub struct MissingItem {
    pub name: &'static str,
    pub number: u16,
}

/// The `FW_CFG_EVENT` logged for item `name`.
pub fn event_data(name: &str) -> Vec<u8> {
    let mut data = EVENT_TAG.to_vec();
    let mut field = name.as_bytes().to_vec();
    field.resize(NAME_SIZE, 0);
    data.extend_from_slice(&field);
    data
}

/// The item name in `FW_CFG_EVENT` data, if `data` is one.
pub fn parse_event_data(data: &[u8]) -> Option<&str> {
    let field = data.strip_prefix(EVENT_TAG.as_slice())?;
    if field.len() != NAME_SIZE {
        return None;
    }
    let end = field.iter().position(|b| *b == 0).unwrap_or(NAME_SIZE);
    std::str::from_utf8(&field[..end]).ok()
}

/// The RTMR0 events of the cached fw_cfg items, in the firmware's order. `files` are the fw_cfg
/// files QEMU serves (name → bytes); `numbered` gives a numbered item's bytes.
pub fn td_events<'a>(
    files: &BTreeMap<String, Vec<u8>>,
    numbered: impl Fn(u16) -> Option<&'a [u8]>,
) -> Result<Vec<Event>, MissingItem> {
    let mut events = Vec::new();
    for item in MEASURED_ITEMS {
        let value: &[u8] = match item.source {
            Source::File => match files.get(item.name) {
                Some(bytes)
                    if !bytes.is_empty()
                        && (item.size == 0 || bytes.len() == item.size as usize) =>
                {
                    bytes
                }
                _ => continue,
            },
            Source::Item(number) => {
                let bytes = numbered(number).ok_or(MissingItem {
                    name: item.name,
                    number,
                })?;
                // QemuFwCfgReadBytes reads the listed size from the item whatever it holds.
                bytes.get(..item.size as usize).ok_or(MissingItem {
                    name: item.name,
                    number,
                })?
            }
        };
        events.push(
            Event::measured(
                1,
                EventType::PLATFORM_CONFIG_FLAGS,
                format!("fw_cfg:{}", item.name),
                value,
                Some(event_data(item.name)),
            )
            .varies_with(&[Input::Devices, Input::Memory, Input::QemuVersion])
            .on(Platforms::TDX),
        );
    }
    Ok(events)
}

/// A short rendering of a measured item's value, for reports: numbers as numbers, text as text.
pub fn describe_value(name: &str, value: &[u8]) -> String {
    match (name, value.len()) {
        ("BootMenu" | "etc/boot-menu-wait", 2) => {
            u16::from_le_bytes([value[0], value[1]]).to_string()
        }
        ("etc/extra-pci-roots" | "etc/reserved-memory-end", 8) => {
            let n = u64::from_le_bytes(value.try_into().expect("8 bytes"));
            format!("{n:#x}")
        }
        _ => {
            let text = String::from_utf8_lossy(value);
            format!("{:?}", text.trim_end_matches('\0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(n, b)| (n.to_string(), b.to_vec()))
            .collect()
    }

    /// The event data is sizeof (FW_CFG_EVENT) = 12 + 56 bytes and names the item.
    #[test]
    fn event_data_is_the_tag_and_a_56_byte_name() {
        let data = event_data("bootorder");
        assert_eq!(data.len(), 68);
        assert_eq!(&data[..12], b"QEMU FW CFG\0");
        assert_eq!(&data[12..21], b"bootorder");
        assert!(data[21..].iter().all(|b| *b == 0));
        assert_eq!(parse_event_data(&data), Some("bootorder"));
        assert_eq!(parse_event_data(&data[..67]), None);
        assert_eq!(parse_event_data(b"ACPI DATA"), None);
    }

    #[test]
    fn items_are_taken_in_list_order_when_served_with_their_size() {
        let boot_menu = [0u8, 0];
        let served = files(&[
            ("bootorder", b"/pci@i0cf8/scsi@3/disk@0,0\n\0"),
            ("etc/reserved-memory-end", &0x1_8000_0000u64.to_le_bytes()),
            // Wrong size: edk2 skips it, so must we.
            ("etc/boot-menu-wait", &[1, 2, 3]),
            ("etc/e820", &[0; 20]),
            ("opt/ovmf/X-PciMmio64Mb", b""),
        ]);
        let events = td_events(&served, |n| (n == 0x0e).then_some(&boot_menu[..])).unwrap();
        let labels: Vec<&str> = events.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "fw_cfg:BootMenu",
                "fw_cfg:etc/reserved-memory-end",
                "fw_cfg:bootorder"
            ]
        );
        assert!(events
            .iter()
            .all(|e| e.pcr == 1 && e.event_type == EventType::PLATFORM_CONFIG_FLAGS));
        assert_eq!(
            events[2].digests,
            crate::Digests::of(b"/pci@i0cf8/scsi@3/disk@0,0\n\0")
        );
    }

    #[test]
    fn a_missing_boot_menu_item_is_an_error() {
        let err = td_events(&BTreeMap::new(), |_| None).unwrap_err();
        assert_eq!(err.name, "BootMenu");
        assert!(err.to_string().contains("0xe"));
    }

    #[test]
    fn values_read_as_numbers_or_text() {
        assert_eq!(describe_value("BootMenu", &[1, 0]), "1");
        assert_eq!(
            describe_value("etc/reserved-memory-end", &0x1_8000_0000u64.to_le_bytes()),
            "0x180000000"
        );
        assert_eq!(
            describe_value("bootorder", b"/rom@genroms/linuxboot_dma.bin\0"),
            "\"/rom@genroms/linuxboot_dma.bin\""
        );
    }
}
