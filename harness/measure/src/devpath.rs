//! EFI device paths and EFI_LOAD_OPTION (UEFI spec 2.10, sections 10.3 and 3.1.3): encoding,
//! decoding and the text form edk2's DevicePathToText prints, plus the boot options OVMF
//! creates.
//!
//! OVMF's boot options (edk2 `MdeModulePkg/Library/UefiBootManagerLib` and
//! `OvmfPkg/Library/PlatformBootManagerLib`):
//! - the boot manager menu (`BmRegisterBootManagerMenu`): attributes ACTIVE|HIDDEN|CATEGORY_APP,
//!   description from the application's UI section (its BASE_NAME), path
//!   `Fv(DXEFV)/FvFile(app)`, no optional data. The app is `PcdBootManagerMenuFile`: UiApp in
//!   edk2-stable202211 (`OvmfPkgX64.dsc`), BootManagerMenuApp in later releases.
//! - `PlatformRegisterFvBootOption` ("EFI Firmware Setup", "EFI Internal Shell"): ACTIVE |
//!   CATEGORY_APP, the same FV path form, no optional data.
//! - enumerated block devices (`BmEnumerateBootOptions` → `BmGetBootDescription`): ACTIVE,
//!   description `"UEFI " + BmGetMiscDescription` ("Misc Device" for a PCI disk such as
//!   virtio-blk), duplicates suffixed `" 2"`, `" 3"`… (`BmMakeBootOptionDescriptionUnique`),
//!   path = the disk handle's full path `PciRoot(0x0)/Pci(d,f)…`, and optional data = the
//!   16-byte `mBmAutoCreateBootOptionGuid` that marks auto-created options.

use crate::reader::Reader;
use crate::uefi::{decode_utf16, utf16le, Guid, UefiError};
use std::fmt;

const HARDWARE: u8 = 0x01;
const ACPI: u8 = 0x02;
const MEDIA: u8 = 0x04;
const END: u8 = 0x7f;

const HW_PCI: u8 = 0x01;
const ACPI_DP: u8 = 0x01;
const MEDIA_HARD_DRIVE: u8 = 0x01;
const MEDIA_VENDOR: u8 = 0x03;
const MEDIA_FILE_PATH: u8 = 0x04;
const MEDIA_PIWG_FW_FILE: u8 = 0x06;
const MEDIA_PIWG_FW_VOL: u8 = 0x07;
const END_INSTANCE: u8 = 0x01;
const END_ENTIRE: u8 = 0xff;

/// `EISA_PNP_ID(0x0A03)`: a PCI root bridge (what OVMF's PciHostBridgeUtilityLib uses, on
/// q35 too).
pub const PNP0A03: u32 = 0x0A03_41D0;
/// `EISA_PNP_ID(0x0A08)`: a PCI Express root bridge.
pub const PNP0A08: u32 = 0x0A08_41D0;

/// One device path node. Nodes mrlab does not model are kept byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// ACPI_HID_DEVICE_PATH: `hid` is the compressed EISA id.
    Acpi { hid: u32, uid: u32 },
    /// PCI_DEVICE_PATH.
    Pci { device: u8, function: u8 },
    /// HARDDRIVE_DEVICE_PATH.
    HardDrive {
        partition_number: u32,
        partition_start: u64,
        partition_size: u64,
        signature: [u8; 16],
        /// 1 = MBR, 2 = GPT.
        partition_format: u8,
        /// 0 = none, 1 = MBR 32-bit signature, 2 = GUID.
        signature_type: u8,
    },
    /// VENDOR_DEVICE_PATH under the media type (e.g. OVMF's QEMU kernel loader file system).
    VendorMedia { guid: Guid, data: Vec<u8> },
    /// FILEPATH_DEVICE_PATH; stored without the terminating NUL.
    FilePath(String),
    /// MEDIA_FW_VOL_FILEPATH_DEVICE_PATH (PIWG firmware file).
    FvFile(Guid),
    /// MEDIA_FW_VOL_DEVICE_PATH (PIWG firmware volume).
    Fv(Guid),
    /// End of one instance of a multi-instance path (0x7f/0x01).
    EndInstance,
    Other {
        node_type: u8,
        sub_type: u8,
        data: Vec<u8>,
    },
}

impl Node {
    /// PciRoot(uid): the ACPI node of a PCI root bridge.
    pub fn pci_root(uid: u32) -> Node {
        Node::Acpi { hid: PNP0A03, uid }
    }

    fn type_and_body(&self) -> (u8, u8, Vec<u8>) {
        match self {
            Node::Acpi { hid, uid } => {
                let mut b = hid.to_le_bytes().to_vec();
                b.extend_from_slice(&uid.to_le_bytes());
                (ACPI, ACPI_DP, b)
            }
            // The spec orders Function before Device.
            Node::Pci { device, function } => (HARDWARE, HW_PCI, vec![*function, *device]),
            Node::HardDrive {
                partition_number,
                partition_start,
                partition_size,
                signature,
                partition_format,
                signature_type,
            } => {
                let mut b = partition_number.to_le_bytes().to_vec();
                b.extend_from_slice(&partition_start.to_le_bytes());
                b.extend_from_slice(&partition_size.to_le_bytes());
                b.extend_from_slice(signature);
                b.push(*partition_format);
                b.push(*signature_type);
                (MEDIA, MEDIA_HARD_DRIVE, b)
            }
            Node::VendorMedia { guid, data } => {
                let mut b = guid.0.to_vec();
                b.extend_from_slice(data);
                (MEDIA, MEDIA_VENDOR, b)
            }
            Node::FilePath(path) => {
                let mut b = utf16le(path);
                b.extend_from_slice(&[0, 0]);
                (MEDIA, MEDIA_FILE_PATH, b)
            }
            Node::FvFile(guid) => (MEDIA, MEDIA_PIWG_FW_FILE, guid.0.to_vec()),
            Node::Fv(guid) => (MEDIA, MEDIA_PIWG_FW_VOL, guid.0.to_vec()),
            Node::EndInstance => (END, END_INSTANCE, Vec::new()),
            Node::Other {
                node_type,
                sub_type,
                data,
            } => (*node_type, *sub_type, data.clone()),
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), DevicePathError> {
        let (node_type, sub_type, body) = self.type_and_body();
        let length = u16::try_from(body.len() + 4).map_err(|_| DevicePathError::NodeTooLong {
            node: self.to_string(),
            length: body.len() + 4,
        })?;
        out.push(node_type);
        out.push(sub_type);
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&body);
        Ok(())
    }

    fn decode(node_type: u8, sub_type: u8, body: &[u8], offset: usize) -> Result<Node, UefiError> {
        let fixed = |want: usize, what: &'static str| {
            if body.len() == want {
                Ok(())
            } else {
                Err(UefiError::Invalid {
                    what,
                    offset,
                    reason: format!("node length {} (want {})", body.len() + 4, want + 4),
                })
            }
        };
        let mut r = Reader::new(body);
        Ok(match (node_type, sub_type) {
            (ACPI, ACPI_DP) => {
                fixed(8, "ACPI device path node")?;
                Node::Acpi {
                    hid: r.u32("HID")?,
                    uid: r.u32("UID")?,
                }
            }
            (HARDWARE, HW_PCI) => {
                fixed(2, "PCI device path node")?;
                let function = r.u8("Function")?;
                Node::Pci {
                    device: r.u8("Device")?,
                    function,
                }
            }
            (MEDIA, MEDIA_HARD_DRIVE) => {
                fixed(38, "hard drive device path node")?;
                Node::HardDrive {
                    partition_number: r.u32("PartitionNumber")?,
                    partition_start: r.u64("PartitionStart")?,
                    partition_size: r.u64("PartitionSize")?,
                    signature: r.array("Signature")?,
                    partition_format: r.u8("MBRType")?,
                    signature_type: r.u8("SignatureType")?,
                }
            }
            (MEDIA, MEDIA_VENDOR) => Node::VendorMedia {
                guid: r.guid("vendor GUID").map_err(|_| UefiError::Invalid {
                    what: "vendor device path node",
                    offset,
                    reason: format!("node length {} is shorter than 20", body.len() + 4),
                })?,
                data: r.rest().to_vec(),
            },
            (MEDIA, MEDIA_FILE_PATH) => {
                let text = decode_utf16(body, "file path node", offset + 4)?;
                let Some(path) = text.strip_suffix('\0') else {
                    return Err(UefiError::Invalid {
                        what: "file path node",
                        offset,
                        reason: "path is not NUL-terminated".to_string(),
                    });
                };
                if path.contains('\0') {
                    return Err(UefiError::Invalid {
                        what: "file path node",
                        offset,
                        reason: "NUL inside the path".to_string(),
                    });
                }
                Node::FilePath(path.to_string())
            }
            (MEDIA, MEDIA_PIWG_FW_FILE) => {
                fixed(16, "FvFile device path node")?;
                Node::FvFile(r.guid("FvFileName")?)
            }
            (MEDIA, MEDIA_PIWG_FW_VOL) => {
                fixed(16, "Fv device path node")?;
                Node::Fv(r.guid("FvName")?)
            }
            (END, END_INSTANCE) => {
                fixed(0, "end-instance node")?;
                Node::EndInstance
            }
            _ => Node::Other {
                node_type,
                sub_type,
                data: body.to_vec(),
            },
        })
    }
}

impl fmt::Display for Node {
    /// The text form of edk2's `DevicePathToText` (display-only, not shortcut form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Acpi { hid, uid } if *hid == PNP0A03 => write!(f, "PciRoot({uid:#x})"),
            Node::Acpi { hid, uid } if *hid == PNP0A08 => write!(f, "PcieRoot({uid:#x})"),
            Node::Acpi { hid, uid } => {
                // EISA id: three 5-bit letters ('@' + n) then a 16-bit product number.
                let letters = [(hid >> 10) & 0x1f, (hid >> 5) & 0x1f, hid & 0x1f]
                    .map(|c| char::from(b'@' + c as u8));
                let product = hid >> 16;
                write!(
                    f,
                    "Acpi({}{}{}{product:04X},{uid:#x})",
                    letters[0], letters[1], letters[2]
                )
            }
            Node::Pci { device, function } => write!(f, "Pci({device:#x},{function:#x})"),
            Node::HardDrive {
                partition_number,
                partition_start,
                partition_size,
                signature,
                partition_format,
                signature_type,
            } => {
                let sig = match signature_type {
                    1 => format!(
                        "MBR,{:#x}",
                        u32::from_le_bytes([
                            signature[0],
                            signature[1],
                            signature[2],
                            signature[3]
                        ])
                    ),
                    2 => format!("GPT,{}", Guid(*signature)),
                    other => format!("{other},0"),
                };
                let _ = partition_format;
                write!(
                    f,
                    "HD({partition_number},{sig},{partition_start:#x},{partition_size:#x})"
                )
            }
            Node::VendorMedia { guid, data } if data.is_empty() => write!(f, "VenMedia({guid})"),
            Node::VendorMedia { guid, data } => {
                write!(f, "VenMedia({guid},{})", hex::encode_upper(data))
            }
            Node::FilePath(path) => f.write_str(path),
            Node::FvFile(guid) => write!(f, "FvFile({guid})"),
            Node::Fv(guid) => write!(f, "Fv({guid})"),
            Node::EndInstance => f.write_str(","),
            Node::Other {
                node_type,
                sub_type,
                data,
            } => write!(
                f,
                "Path({node_type},{sub_type},{})",
                hex::encode_upper(data)
            ),
        }
    }
}

/// A device path: nodes up to (not including) the End Entire node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevicePath {
    pub nodes: Vec<Node>,
}

impl DevicePath {
    pub fn new(nodes: Vec<Node>) -> DevicePath {
        DevicePath { nodes }
    }

    /// The nodes followed by End Entire (`7f ff 04 00`).
    pub fn encode(&self) -> Result<Vec<u8>, DevicePathError> {
        let mut out = Vec::new();
        for node in &self.nodes {
            node.encode_into(&mut out)?;
        }
        out.extend_from_slice(&[END, END_ENTIRE, 4, 0]);
        Ok(out)
    }

    /// Decode one device path from the start of `bytes`; returns it and the bytes it used
    /// (through its End Entire node).
    pub fn decode_prefix(bytes: &[u8]) -> Result<(DevicePath, usize), UefiError> {
        let mut r = Reader::new(bytes);
        let mut nodes = Vec::new();
        loop {
            let at = r.pos();
            let node_type = r.u8("device path node Type")?;
            let sub_type = r.u8("device path node SubType")?;
            let length = r.u16("device path node Length")? as usize;
            if length < 4 {
                return Err(UefiError::Invalid {
                    what: "device path node Length",
                    offset: at,
                    reason: format!("{length} is below the 4-byte header"),
                });
            }
            let body = r.bytes(length - 4, "device path node data")?;
            if node_type == END && sub_type == END_ENTIRE {
                if length != 4 {
                    return Err(UefiError::Invalid {
                        what: "end node",
                        offset: at,
                        reason: format!("length {length} (want 4)"),
                    });
                }
                return Ok((DevicePath { nodes }, r.pos()));
            }
            nodes.push(Node::decode(node_type, sub_type, body, at)?);
        }
    }

    /// Decode exactly one device path; bytes after its end node are an error.
    pub fn decode(bytes: &[u8]) -> Result<DevicePath, UefiError> {
        let (path, used) = DevicePath::decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(UefiError::Invalid {
                what: "device path",
                offset: used,
                reason: format!("{} bytes after the end node", bytes.len() - used),
            });
        }
        Ok(path)
    }
}

impl fmt::Display for DevicePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for node in &self.nodes {
            if !first && *node != Node::EndInstance {
                f.write_str("/")?;
            }
            first = *node == Node::EndInstance;
            write!(f, "{node}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DevicePathError {
    #[error("device path node {node} is {length} bytes, over the 65535 a node can hold")]
    NodeTooLong { node: String, length: usize },
    #[error("device path list is {0} bytes, over the 65535 FilePathListLength can hold")]
    ListTooLong(usize),
}

pub const LOAD_OPTION_ACTIVE: u32 = 0x0000_0001;
pub const LOAD_OPTION_HIDDEN: u32 = 0x0000_0008;
pub const LOAD_OPTION_CATEGORY_APP: u32 = 0x0000_0100;

/// EFI_LOAD_OPTION: the data of a `Boot####` variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOption {
    pub attributes: u32,
    /// Stored UTF-16 with a terminating NUL; here without it.
    pub description: String,
    /// FilePathList: the first path is the boot target; more are allowed.
    pub file_paths: Vec<DevicePath>,
    pub optional_data: Vec<u8>,
}

impl LoadOption {
    /// `Attributes ‖ FilePathListLength ‖ Description (UTF-16, NUL) ‖ FilePathList ‖
    /// OptionalData`.
    pub fn encode(&self) -> Result<Vec<u8>, DevicePathError> {
        let mut paths = Vec::new();
        for path in &self.file_paths {
            paths.extend_from_slice(&path.encode()?);
        }
        let paths_len =
            u16::try_from(paths.len()).map_err(|_| DevicePathError::ListTooLong(paths.len()))?;
        let mut out = self.attributes.to_le_bytes().to_vec();
        out.extend_from_slice(&paths_len.to_le_bytes());
        out.extend_from_slice(&utf16le(&self.description));
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&paths);
        out.extend_from_slice(&self.optional_data);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<LoadOption, UefiError> {
        let mut r = Reader::new(bytes);
        let attributes = r.u32("Attributes")?;
        let paths_len = r.u16("FilePathListLength")? as usize;
        let desc_at = r.pos();
        let mut units = Vec::new();
        loop {
            let unit = r.u16("Description")?;
            if unit == 0 {
                break;
            }
            units.push(unit);
        }
        let description = String::from_utf16(&units).map_err(|_| UefiError::Invalid {
            what: "Description",
            offset: desc_at,
            reason: "invalid UTF-16".to_string(),
        })?;
        let list_at = r.pos();
        let list = r.bytes(paths_len, "FilePathList")?;
        let mut file_paths = Vec::new();
        let mut used = 0;
        while used < list.len() {
            let (path, len) =
                DevicePath::decode_prefix(&list[used..]).map_err(|e| shift(e, list_at + used))?;
            file_paths.push(path);
            used += len;
        }
        Ok(LoadOption {
            attributes,
            description,
            file_paths,
            optional_data: r.rest().to_vec(),
        })
    }

    /// The first file path, the one the boot manager loads.
    pub fn path(&self) -> Option<&DevicePath> {
        self.file_paths.first()
    }
}

impl fmt::Display for LoadOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} attributes={:#x} path=",
            self.description, self.attributes
        )?;
        for (i, path) in self.file_paths.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{path}")?;
        }
        if !self.optional_data.is_empty() {
            write!(f, " optional={}", hex::encode(&self.optional_data))?;
        }
        Ok(())
    }
}

/// Report an error found inside a sub-slice at its offset in the enclosing buffer.
fn shift(error: UefiError, base: usize) -> UefiError {
    match error {
        UefiError::Truncated {
            what,
            offset,
            need,
            have,
        } => UefiError::Truncated {
            what,
            offset: offset + base,
            need,
            have,
        },
        UefiError::Invalid {
            what,
            offset,
            reason,
        } => UefiError::Invalid {
            what,
            offset: offset + base,
            reason,
        },
    }
}

/// Boot options as OVMF creates them, and the GUIDs they name.
pub mod ovmf {
    use super::*;

    /// `FvNameGuid` of `[FV.DXEFV]` in `OvmfPkg/OvmfPkgX64.fdf` (also IntelTdx's fdf).
    pub const DXEFV: Guid = Guid::from_fields(
        0x7CB8_BDC9,
        0xF8EB,
        0x4F34,
        [0xAA, 0xEA, 0x3E, 0xE4, 0xAF, 0x65, 0x16, 0xA1],
    );
    /// `MdeModulePkg/Application/UiApp/UiApp.inf` FILE_GUID (gUiAppFileGuid).
    pub const UI_APP: Guid = Guid::from_fields(
        0x462C_AA21,
        0x7614,
        0x4503,
        [0x83, 0x6E, 0x8A, 0xB6, 0xF4, 0x66, 0x23, 0x31],
    );
    /// `MdeModulePkg/Application/BootManagerMenuApp/BootManagerMenuApp.inf` FILE_GUID.
    pub const BOOT_MANAGER_MENU_APP: Guid = Guid::from_fields(
        0xEEC2_5BDC,
        0x67F2,
        0x4D95,
        [0xB1, 0xD5, 0xF8, 0x1B, 0x20, 0x39, 0xD1, 0x1D],
    );
    /// gUefiShellFileGuid (`ShellPkg/ShellPkg.dec`).
    pub const UEFI_SHELL: Guid = Guid::from_fields(
        0x7C04_A583,
        0x9E3E,
        0x4F1C,
        [0xAD, 0x65, 0xE0, 0x52, 0x68, 0xD0, 0xB4, 0xD1],
    );
    /// `mBmAutoCreateBootOptionGuid` (UefiBootManagerLib `BmBoot.c`): the optional data of
    /// every boot option the boot manager enumerated by itself.
    pub const AUTO_CREATE_BOOT_OPTION: Guid = Guid::from_fields(
        0x8108_AC4E,
        0x9F11,
        0x4D59,
        [0x85, 0x0E, 0xE2, 0x1A, 0x52, 0x2C, 0x59, 0xB2],
    );
    /// gQemuKernelLoaderFsMediaGuid (`OvmfPkg/OvmfPkg.dec`): the vendor media node of the
    /// file system through which OVMF serves `-kernel`/`-initrd`.
    pub const QEMU_KERNEL_LOADER_FS_MEDIA: Guid = Guid::from_fields(
        0x1428_F772,
        0xB64A,
        0x441E,
        [0xB8, 0xC3, 0x9E, 0xBD, 0xD7, 0xF8, 0x93, 0xC7],
    );

    /// Which application `PcdBootManagerMenuFile` names.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum BootManagerMenu {
        /// edk2-stable202211 and earlier OvmfPkgX64.dsc: UiApp, description "UiApp".
        UiApp,
        /// Later OvmfPkgX64.dsc: BootManagerMenuApp, description "BootManagerMenuApp".
        BootManagerMenuApp,
    }

    /// `Fv(DXEFV)/FvFile(file)`: an application in OVMF's DXE firmware volume.
    pub fn dxe_fv_file(file: Guid) -> DevicePath {
        DevicePath::new(vec![Node::Fv(DXEFV), Node::FvFile(file)])
    }

    /// The hidden boot manager menu option (Boot0000 in a fresh OVMF).
    pub fn boot_manager_menu(menu: BootManagerMenu) -> LoadOption {
        let (file, description) = match menu {
            BootManagerMenu::UiApp => (UI_APP, "UiApp"),
            BootManagerMenu::BootManagerMenuApp => (BOOT_MANAGER_MENU_APP, "BootManagerMenuApp"),
        };
        LoadOption {
            attributes: LOAD_OPTION_ACTIVE | LOAD_OPTION_HIDDEN | LOAD_OPTION_CATEGORY_APP,
            description: description.to_string(),
            file_paths: vec![dxe_fv_file(file)],
            optional_data: Vec::new(),
        }
    }

    /// `PlatformRegisterFvBootOption(file, description, attributes)`. edk2-stable202211
    /// registers "EFI Internal Shell" (UEFI_SHELL) with LOAD_OPTION_ACTIVE; later releases use
    /// ACTIVE | CATEGORY_APP for it and for "EFI Firmware Setup" (UiApp).
    pub fn fv_application(file: Guid, description: &str, attributes: u32) -> LoadOption {
        LoadOption {
            attributes,
            description: description.to_string(),
            file_paths: vec![dxe_fv_file(file)],
            optional_data: Vec::new(),
        }
    }

    /// `PciRoot(0x0)/Pci(d,f)/…`: `pci` lists (device, function) from the root bus down
    /// through bridges to the device.
    pub fn pci_path(pci: &[(u8, u8)]) -> DevicePath {
        let mut nodes = vec![Node::pci_root(0)];
        nodes.extend(
            pci.iter()
                .map(|&(device, function)| Node::Pci { device, function }),
        );
        DevicePath::new(nodes)
    }

    /// The description `BmMakeBootOptionDescriptionUnique` gives the `nth` (1-based) of several
    /// identically described options: the first keeps it, the next get `" 2"`, `" 3"`, ….
    pub fn unique_description(base: &str, nth: usize) -> String {
        if nth <= 1 {
            base.to_string()
        } else {
            format!("{base} {nth}")
        }
    }

    /// An auto-enumerated PCI disk (virtio-blk, or any block device whose path has no
    /// ATAPI/SATA/USB/SCSI/controller node): "UEFI Misc Device[ N]".
    pub fn misc_device(pci: &[(u8, u8)], nth: usize) -> LoadOption {
        LoadOption {
            attributes: LOAD_OPTION_ACTIVE,
            description: unique_description("UEFI Misc Device", nth),
            file_paths: vec![pci_path(pci)],
            optional_data: AUTO_CREATE_BOOT_OPTION.0.to_vec(),
        }
    }

    /// A network boot option OVMF's boot manager registers for a NIC: `BmEnumerateBootOptions`
    /// creates one per LoadFile handle (after the block devices), described by
    /// `BmGetNetworkDescription` (MdeModulePkg/Library/UefiBootManagerLib/BmBootDescription.c:
    /// `"PXE"` or `"HTTP"` by a Uri node, `v4`/`v6` by the IP node, then the MAC in `%02x`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum NetworkBoot {
        /// iPXE's LoadFile on the NIC's own path (QEMU's `efi-virtio.rom`): `…/MAC(m)`, PXEv4.
        IpxeMac,
        /// edk2 NetworkPkg UefiPxeBcDxe over IPv4: `…/MAC(m)/IPv4(0.0.0.0)`.
        PxeIpv4,
        /// UefiPxeBcDxe over IPv6: `…/MAC(m)/IPv6(::)` with prefix length 64.
        PxeIpv6,
        /// HttpBootDxe over IPv4: `…/MAC(m)/IPv4(0.0.0.0)/Uri()`.
        HttpIpv4,
        /// HttpBootDxe over IPv6: `…/MAC(m)/IPv6(::)/Uri()`.
        HttpIpv6,
    }

    const MESSAGING: u8 = 0x03;
    const MSG_MAC_ADDR: u8 = 0x0b;
    const MSG_IPV4: u8 = 0x0c;
    const MSG_IPV6: u8 = 0x0d;
    const MSG_URI: u8 = 0x18;
    /// `NET_IFTYPE_ETHERNET`.
    const IFTYPE_ETHERNET: u8 = 0x01;
    /// `IP6_PREFIX_LENGTH` of NetworkPkg's IPv6 nodes (observed: 0x40 in OVMF's options).
    const IPV6_PREFIX_LENGTH: u8 = 64;

    /// MAC_ADDR_DEVICE_PATH: the address in a 32-byte field, then the interface type.
    fn mac_node(mac: [u8; 6]) -> Node {
        let mut data = mac.to_vec();
        data.resize(32, 0);
        data.push(IFTYPE_ETHERNET);
        Node::Other {
            node_type: MESSAGING,
            sub_type: MSG_MAC_ADDR,
            data,
        }
    }

    /// IPv4_DEVICE_PATH with every address, port and flag zero (23 bytes of data).
    fn ipv4_node() -> Node {
        Node::Other {
            node_type: MESSAGING,
            sub_type: MSG_IPV4,
            data: vec![0; 23],
        }
    }

    /// IPv6_DEVICE_PATH: zero addresses, ports, protocol and origin, prefix length 64, zero
    /// gateway (56 bytes of data).
    fn ipv6_node() -> Node {
        let mut data = vec![0; 56];
        data[39] = IPV6_PREFIX_LENGTH;
        Node::Other {
            node_type: MESSAGING,
            sub_type: MSG_IPV6,
            data,
        }
    }

    fn uri_node() -> Node {
        Node::Other {
            node_type: MESSAGING,
            sub_type: MSG_URI,
            data: Vec::new(),
        }
    }

    /// The boot options of one NIC at `pci` with `mac`, in the order OVMF registers `kinds`;
    /// two PXEv4 options of one NIC share a description, so the second gets `" 2"`.
    pub fn network_boot_options(
        pci: &[(u8, u8)],
        mac: [u8; 6],
        kinds: &[NetworkBoot],
    ) -> Vec<LoadOption> {
        let mac_text: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        let mut seen: Vec<String> = Vec::new();
        kinds
            .iter()
            .map(|kind| {
                let (protocol, version, tail) = match kind {
                    NetworkBoot::IpxeMac => ("PXE", 4, vec![]),
                    NetworkBoot::PxeIpv4 => ("PXE", 4, vec![ipv4_node()]),
                    NetworkBoot::PxeIpv6 => ("PXE", 6, vec![ipv6_node()]),
                    NetworkBoot::HttpIpv4 => ("HTTP", 4, vec![ipv4_node(), uri_node()]),
                    NetworkBoot::HttpIpv6 => ("HTTP", 6, vec![ipv6_node(), uri_node()]),
                };
                let base = format!("UEFI {protocol}v{version} (MAC:{mac_text})");
                seen.push(base.clone());
                let nth = seen.iter().filter(|s| **s == base).count();
                let mut path = pci_path(pci);
                path.nodes.push(mac_node(mac));
                path.nodes.extend(tail);
                LoadOption {
                    attributes: LOAD_OPTION_ACTIVE,
                    description: unique_description(&base, nth),
                    file_paths: vec![path],
                    optional_data: AUTO_CREATE_BOOT_OPTION.0.to_vec(),
                }
            })
            .collect()
    }

    /// `VenMedia(QEMU kernel loader FS)/\<name>`: how OVMF's `-kernel` image appears in the
    /// UEFI_IMAGE_LOAD_EVENT of its measurement (`name` is `kernel`).
    pub fn kernel_loader_file(name: &str) -> DevicePath {
        DevicePath::new(vec![
            Node::VendorMedia {
                guid: QEMU_KERNEL_LOADER_FS_MEDIA,
                data: Vec::new(),
            },
            Node::FilePath(name.to_string()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::ovmf::*;
    use super::*;

    /// Boot0003 and Boot0006 as Debian's OVMF 2022.11 wrote them on a vTPM UKI boot with a
    /// virtio-net NIC at Pci(0x2,0x0) (MAC 52:54:00:12:34:56), from the PCR1 event data.
    #[test]
    fn network_boot_options_are_the_bytes_ovmf_wrote() {
        const BOOT0003: &str = "0100000056005500450046004900200050005800450076003400200028004d00410043003a00350032003500340030003000310032003300340035003600290020003200000002010c00d041030a00000000010106000002030b2500525400123456000000000000000000000000000000000000000000000000000001030c1b0000000000000000000000000000000000000000000000007fff04004eac0881119f594d850ee21a522c59b2";
        const BOOT0006: &str = "010000007b0055004500460049002000480054005400500076003600200028004d00410043003a003500320035003400300030003100320033003400350036002900000002010c00d041030a00000000010106000002030b2500525400123456000000000000000000000000000000000000000000000000000001030d3c000000000000000000000000000000000000000000000000000000000000000000000000000000004000000000000000000000000000000000031804007fff04004eac0881119f594d850ee21a522c59b2";
        let options = network_boot_options(
            &[(2, 0)],
            [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            &[
                NetworkBoot::IpxeMac,
                NetworkBoot::PxeIpv4,
                NetworkBoot::PxeIpv6,
                NetworkBoot::HttpIpv4,
                NetworkBoot::HttpIpv6,
            ],
        );
        assert_eq!(hex::encode(options[1].encode().unwrap()), BOOT0003);
        assert_eq!(hex::encode(options[4].encode().unwrap()), BOOT0006);
        assert_eq!(options[0].description, "UEFI PXEv4 (MAC:525400123456)");
        assert_eq!(options[1].description, "UEFI PXEv4 (MAC:525400123456) 2");
    }

    #[test]
    fn texts_follow_devicepathtotext() {
        assert_eq!(
            pci_path(&[(2, 3), (0, 0)]).to_string(),
            "PciRoot(0x0)/Pci(0x2,0x3)/Pci(0x0,0x0)"
        );
        assert_eq!(
            dxe_fv_file(UI_APP).to_string(),
            "Fv(7CB8BDC9-F8EB-4F34-AAEA-3EE4AF6516A1)/FvFile(462CAA21-7614-4503-836E-8AB6F4662331)"
        );
        let acpi = Node::Acpi {
            hid: 0x0501_41D0,
            uid: 1,
        };
        assert_eq!(acpi.to_string(), "Acpi(PNP0501,0x1)");
    }

    fn sample_option() -> LoadOption {
        LoadOption {
            attributes: LOAD_OPTION_ACTIVE,
            description: "Linux Boot Manager".to_string(),
            file_paths: vec![DevicePath::new(vec![
                Node::HardDrive {
                    partition_number: 1,
                    partition_start: 0x800,
                    partition_size: 0x10_0000,
                    signature: [7; 16],
                    partition_format: 2,
                    signature_type: 2,
                },
                Node::FilePath("\\EFI\\systemd\\systemd-bootx64.efi".to_string()),
            ])],
            optional_data: vec![1, 2, 3],
        }
    }

    #[test]
    fn load_option_round_trips() {
        let option = sample_option();
        let bytes = option.encode().unwrap();
        assert_eq!(LoadOption::decode(&bytes).unwrap(), option);
    }

    #[test]
    fn truncation_and_bit_flips_never_panic() {
        let bytes = sample_option().encode().unwrap();
        // Everything short of the description's NUL and the whole path list must fail; later
        // cuts only shorten the optional data.
        let path_list_end = bytes.len() - 3;
        for len in 0..path_list_end {
            assert!(LoadOption::decode(&bytes[..len]).is_err(), "length {len}");
        }
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let _ = LoadOption::decode(&flipped);
            let _ = DevicePath::decode(&flipped);
        }
        let path = sample_option().file_paths[0].encode().unwrap();
        for len in 0..path.len() {
            assert!(DevicePath::decode(&path[..len]).is_err(), "length {len}");
        }
    }

    #[test]
    fn zero_length_node_is_an_error_not_a_loop() {
        assert!(DevicePath::decode(&[4, 4, 0, 0]).is_err());
        assert!(DevicePath::decode(&[4, 6, 3, 0]).is_err());
    }
}
