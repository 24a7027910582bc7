//! The fw_cfg oracle: every fw_cfg file of a VM as QEMU serves it, read over qtest from a
//! paused TCG instance of the same VM.
//!
//! QEMU builds the ACPI blobs lazily on the first read of an ACPI fw_cfg file, from the state
//! of the machine at that moment. OVMF reads them after PEI has programmed the chipset, so
//! before reading, the oracle programs what OVMF's PlatformInitLib
//! (`PlatformMiscInitialization`, `PciExBarInitialization`) programs on Q35:
//! - ICH9 LPC (00:1f.0): PMBASE (0x40) = 0x600, PCI command I/O enable, ACPI_CNTL (0x44)
//!   ACPI_EN; QEMU's FADT/DSDT take the PM I/O base from there (`lpc_ich9.c`).
//! - ICH9 RCBA (0xf0) = 0xfed1c000 | enable.
//! - MCH (00:00.0) PCIEXBAR (0x60/0x64) = the firmware's `PcdPciExpressBaseAddress`, 256 MiB,
//!   enabled; QEMU's MCFG table and the 32-bit PCI hole in the DSDT `_CRS` follow it
//!   (`q35.c` `mch_update_pciexbar`). That base is a firmware build constant, hence
//!   [`FirmwarePci`].
//!
//! - The 64-bit PCI resources (virtio BAR 4, pcie-root-port prefetchable windows) where OVMF
//!   places them, with memory decoding on, as OVMF's `AcpiPlatformDxe` (`EnablePciDecoding`)
//!   has them when it fetches the tables: QEMU's DSDT `_CRS` 64-bit hole starts at the
//!   lowest of them. The addresses are computed from the VM description and the firmware
//!   build ([`crate::pci`], which names the edk2 and QEMU sources of the rule), never read
//!   back from a guest. Before programming, the oracle checks the inputs of that rule that
//!   QEMU serves in fw_cfg: its `etc/e820` equals the modelled table, and none of
//!   `etc/reserved-memory-end`, `etc/hardware-info`, `opt/ovmf/X-PciMmio64Mb` exists; and it
//!   checks each slot holds the function the model expects, with a 64-bit BAR 4 of the
//!   modelled size. 32-bit BARs, I/O, bridge bus numbers and 32-bit windows do not enter
//!   q35's tables and are left unprogrammed.

use crate::argv::{argv, Backend, RunDir};
use crate::binary::QemuBinary;
use crate::pci::{GuestCpu, LayoutError, Mem64Assignment, Mem64Kind, Mmio64Rule, RootBusFunction};
use crate::process::Group;
use crate::qtest::{Qtest, QtestError};
use crate::vm::Vm;
use std::collections::BTreeMap;
use std::time::Duration;

/// Chipset and PCI values a firmware build programs before reading ACPI blobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwarePci {
    /// `PcdPciExpressBaseAddress` (OvmfPkgX64.dsc).
    pub pciexbar_base: u32,
    /// `PcdPciMmio64Size` (OvmfPkgX64.dsc), the classic 64-bit aperture size.
    pub pci_mmio64_size: u64,
    /// How PlatformInitLib places the 64-bit aperture.
    pub mmio64_rule: Mmio64Rule,
}

impl FirmwarePci {
    /// edk2-stable202211 OvmfPkgX64.dsc: `PcdPciExpressBaseAddress|0xB0000000`,
    /// `PcdPciMmio64Size|0x800000000`; MemDetect.c has the dynamic window.
    pub const OVMF_2022_11: FirmwarePci = FirmwarePci {
        pciexbar_base: 0xB000_0000,
        pci_mmio64_size: 0x8_0000_0000,
        mmio64_rule: Mmio64Rule::DynamicWindow,
    };
    /// edk2-stable202502 OvmfPkgX64.dsc: `PcdPciExpressBaseAddress|0xE0000000`,
    /// `PcdPciMmio64Size|0x800000000`; MemDetect.c also avoids E820 reservations.
    pub const OVMF_2025_02: FirmwarePci = FirmwarePci {
        pciexbar_base: 0xE000_0000,
        pci_mmio64_size: 0x8_0000_0000,
        mmio64_rule: Mmio64Rule::DynamicWindowBelowE820Conflicts,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    #[error("fw_cfg oracle: cannot make its temp dir")]
    TempDir(#[source] std::io::Error),
    #[error("fw_cfg oracle: cannot listen on {socket}")]
    Listen {
        socket: String,
        source: std::io::Error,
    },
    #[error("fw_cfg oracle: cannot start {program}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("fw_cfg oracle")]
    Swtpm(#[from] crate::swtpm::SwtpmError),
    #[error("fw_cfg oracle: QEMU exited ({status}) before connecting to qtest; stderr: {stderr}")]
    QemuExited { status: String, stderr: String },
    #[error(
        "fw_cfg oracle: QEMU exited ({status}) while the oracle read fw_cfg; stderr: {stderr}"
    )]
    QemuStopped { status: String, stderr: String },
    #[error("fw_cfg oracle: QEMU did not connect to qtest within {0:?}")]
    ConnectTimeout(Duration),
    #[error("fw_cfg oracle")]
    Qtest(#[from] QtestError),
    #[error("fw_cfg oracle: selector 0 reads {found:02x?}, expected the signature \"QEMU\"")]
    Signature { found: Vec<u8> },
    #[error("fw_cfg oracle: FW_CFG_ID is {0:#x}: no DMA interface (bit 1)")]
    NoDma(u32),
    #[error("fw_cfg oracle: DMA read of selector {select:#x} failed (control {control:#x})")]
    Dma { select: u16, control: u32 },
    #[error("fw_cfg oracle: file directory: {0}")]
    Directory(String),
    #[error("fw_cfg oracle: the VM has {memory} bytes of RAM, too little for a {needed}-byte DMA buffer")]
    TooLittleMemory { memory: u64, needed: u64 },
    #[error("fw_cfg oracle")]
    Layout(#[from] LayoutError),
    #[error(
        "fw_cfg oracle: QEMU serves \"{0}\", which changes OVMF's 64-bit PCI aperture in a \
         way the PCI layout does not model"
    )]
    UnmodelledFile(&'static str),
    #[error("fw_cfg oracle: QEMU's etc/e820 is {found:x?}, the PCI layout assumed {expected:x?}")]
    E820 {
        found: Vec<(u64, u64, u32)>,
        expected: Vec<(u64, u64, u32)>,
    },
    #[error("fw_cfg oracle: slot {slot:#x} holds {found}, the PCI layout expected {expected}")]
    UnexpectedFunction {
        slot: u8,
        found: String,
        expected: String,
    },
}

const FW_CFG_PORT_SEL: u16 = 0x510;
const FW_CFG_PORT_DATA: u16 = 0x511;
const FW_CFG_PORT_DMA_HIGH: u16 = 0x514;
const FW_CFG_PORT_DMA_LOW: u16 = 0x518;
const FW_CFG_SIGNATURE: u16 = 0x00;
const FW_CFG_ID: u16 = 0x01;
const FW_CFG_FILE_DIR: u16 = 0x19;
const FW_CFG_DMA_CTL_ERROR: u32 = 0x01;
const FW_CFG_DMA_CTL_READ: u32 = 0x02;
const FW_CFG_DMA_CTL_SELECT: u32 = 0x08;
/// Guest RAM used for the DMA descriptor and the data buffer (below the 640 KiB hole).
const DMA_DESCRIPTOR: u64 = 0x1000;
const DMA_BUFFER: u64 = 0x10_0000;
const DMA_CHUNK: u32 = 0x10_0000;

const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
const PCI_CONFIG_DATA: u16 = 0xcfc;
/// Type-1 header prefetchable window registers (`include/standard-headers/linux/pci_regs.h`).
const PCI_PREF_MEMORY_BASE: u8 = 0x24;
const PCI_PREF_BASE_UPPER32: u8 = 0x28;
const PCI_PREF_LIMIT_UPPER32: u8 = 0x2c;
const PCI_PREF_RANGE_TYPE_64: u32 = 0x1;

/// fw_cfg files that change OVMF's 64-bit aperture (MemDetect.c) beyond the modelled rule.
const UNMODELLED_MMIO64_FILES: [&str; 3] = [
    "etc/reserved-memory-end",
    "etc/hardware-info",
    "opt/ovmf/X-PciMmio64Mb",
];

/// One entry of the fw_cfg file directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwCfgFile {
    pub name: String,
    pub select: u16,
    pub size: u32,
}

/// fw_cfg access over a qtest connection.
pub struct FwCfg<'a> {
    qtest: &'a mut Qtest,
}

fn pci_address(device: u8, function: u8, offset: u8) -> u32 {
    0x8000_0000 | (u32::from(device) << 11) | (u32::from(function) << 8) | u32::from(offset & 0xfc)
}

impl<'a> FwCfg<'a> {
    /// Checks the signature and the DMA interface.
    pub async fn open(qtest: &'a mut Qtest) -> Result<FwCfg<'a>, OracleError> {
        qtest.outw(FW_CFG_PORT_SEL, FW_CFG_SIGNATURE).await?;
        let mut signature = Vec::with_capacity(4);
        for _ in 0..4 {
            signature.push(qtest.inb(FW_CFG_PORT_DATA).await?);
        }
        if signature != b"QEMU" {
            return Err(OracleError::Signature { found: signature });
        }
        qtest.outw(FW_CFG_PORT_SEL, FW_CFG_ID).await?;
        let mut id = [0u8; 4];
        for byte in &mut id {
            *byte = qtest.inb(FW_CFG_PORT_DATA).await?;
        }
        let id = u32::from_le_bytes(id);
        if id & 0x2 == 0 {
            return Err(OracleError::NoDma(id));
        }
        Ok(FwCfg { qtest })
    }

    async fn pci_write32(
        &mut self,
        dev: u8,
        func: u8,
        off: u8,
        value: u32,
    ) -> Result<(), QtestError> {
        self.qtest
            .outl(PCI_CONFIG_ADDRESS, pci_address(dev, func, off))
            .await?;
        self.qtest.outl(PCI_CONFIG_DATA, value).await
    }

    async fn pci_read32(&mut self, dev: u8, func: u8, off: u8) -> Result<u32, QtestError> {
        self.qtest
            .outl(PCI_CONFIG_ADDRESS, pci_address(dev, func, off))
            .await?;
        self.qtest.inl(PCI_CONFIG_DATA).await
    }

    async fn pci_or8(&mut self, dev: u8, func: u8, off: u8, bits: u8) -> Result<(), QtestError> {
        let port = PCI_CONFIG_DATA + u16::from(off & 3);
        self.qtest
            .outl(PCI_CONFIG_ADDRESS, pci_address(dev, func, off))
            .await?;
        let value = self.qtest.inb(port).await?;
        self.qtest.outb(port, value | bits).await
    }

    /// What OVMF's PlatformInitLib programs on Q35 before ACPI tables are read (module doc).
    pub async fn program_chipset_like_ovmf(
        &mut self,
        firmware: FirmwarePci,
    ) -> Result<(), QtestError> {
        const LPC: (u8, u8) = (31, 0);
        const ICH9_PMBASE: u8 = 0x40;
        const ICH9_PMBASE_MASK: u32 = 0xff80; // bits 15..7
        const ICH9_PMBASE_VALUE: u32 = 0x600;
        const ICH9_ACPI_CNTL: u8 = 0x44;
        const ICH9_ACPI_CNTL_ACPI_EN: u8 = 0x80;
        const ICH9_RCBA: u8 = 0xf0;
        const ICH9_ROOT_COMPLEX_BASE: u32 = 0xfed1_c000;
        const MCH_PCIEXBAR_LOW: u8 = 0x60;
        const MCH_PCIEXBAR_HIGH: u8 = 0x64;
        const MCH_PCIEXBAR_EN: u32 = 0x1;

        let pmbase = self.pci_read32(LPC.0, LPC.1, ICH9_PMBASE).await?;
        let pmbase = (pmbase & !ICH9_PMBASE_MASK) | ICH9_PMBASE_VALUE;
        self.pci_write32(LPC.0, LPC.1, ICH9_PMBASE, pmbase).await?;
        self.pci_or8(LPC.0, LPC.1, 0x04, 0x01).await?; // PCI command: I/O space
        self.pci_or8(LPC.0, LPC.1, ICH9_ACPI_CNTL, ICH9_ACPI_CNTL_ACPI_EN)
            .await?;
        self.pci_write32(LPC.0, LPC.1, ICH9_RCBA, ICH9_ROOT_COMPLEX_BASE | 1)
            .await?;
        self.pci_write32(0, 0, MCH_PCIEXBAR_LOW, 0).await?;
        self.pci_write32(0, 0, MCH_PCIEXBAR_HIGH, 0).await?;
        // Length bits 2:1 = 0: 256 MiB, buses 0..255.
        self.pci_write32(
            0,
            0,
            MCH_PCIEXBAR_LOW,
            firmware.pciexbar_base | MCH_PCIEXBAR_EN,
        )
        .await
    }

    /// Checks the fw_cfg inputs of OVMF's aperture rule against what [`crate::pci`] assumes:
    /// `etc/e820` as modelled, and no file that moves or resizes the aperture.
    pub async fn check_mmio64_inputs(
        &mut self,
        vm: &Vm,
        cpu: GuestCpu,
        directory: &[FwCfgFile],
    ) -> Result<(), OracleError> {
        for name in UNMODELLED_MMIO64_FILES {
            if directory.iter().any(|f| f.name == name) {
                return Err(OracleError::UnmodelledFile(name));
            }
        }
        let hole64_size = vm
            .machine
            .pci_hole64_size
            .unwrap_or(crate::pci::Q35_HOLE64_SIZE_DEFAULT);
        let expected: Vec<(u64, u64, u32)> = crate::pci::q35_e820(vm.memory, hole64_size, cpu)
            .iter()
            .map(|e| (e.address, e.length, e.kind))
            .collect();
        let found = match directory.iter().find(|f| f.name == "etc/e820") {
            Some(file) => parse_e820(&self.read(file.select, file.size).await?),
            None => Vec::new(),
        };
        if found != expected {
            return Err(OracleError::E820 { found, expected });
        }
        Ok(())
    }

    /// Programs the 64-bit resources OVMF assigns to `vm` under `firmware` (see
    /// [`crate::pci::mem64_layout`]) and turns memory decoding on for their functions, after
    /// checking each slot holds what the layout expects.
    pub async fn program_mem64_like_ovmf(
        &mut self,
        vm: &Vm,
        cpu: GuestCpu,
        firmware: FirmwarePci,
    ) -> Result<(), OracleError> {
        let slots = crate::pci::root_bus_slots(vm)?;
        for (slot, function) in &slots {
            self.check_function(*slot, *function).await?;
        }
        let layout =
            crate::pci::mem64_layout(vm, cpu, firmware.pci_mmio64_size, firmware.mmio64_rule)?;
        for assignment in &layout {
            self.program_mem64(assignment).await?;
        }
        Ok(())
    }

    async fn check_function(
        &mut self,
        slot: u8,
        function: RootBusFunction,
    ) -> Result<(), OracleError> {
        const PCI_VENDOR_VIRTIO: u32 = 0x1af4;
        const PCI_CLASS_BRIDGE_PCI: u32 = 0x0604;
        let id = self.pci_read32(slot, 0, 0x00).await?;
        let class = self.pci_read32(slot, 0, 0x08).await? >> 16;
        let unexpected = |found: String| OracleError::UnexpectedFunction {
            slot,
            found,
            expected: format!("{function:?}"),
        };
        match function {
            RootBusFunction::Virtio => {
                if id & 0xffff != PCI_VENDOR_VIRTIO {
                    return Err(unexpected(format!("PCI ID {id:08x}")));
                }
                let size = self
                    .probe_bar64(slot, crate::pci::VIRTIO_MODERN_BAR)
                    .await?;
                if size != Some(crate::pci::VIRTIO_MODERN_BAR_SIZE) {
                    return Err(unexpected(format!(
                        "virtio {id:08x} with BAR 4 {}",
                        match size {
                            Some(size) => format!("64-bit of {size:#x} bytes"),
                            None => "not a 64-bit memory BAR".into(),
                        }
                    )));
                }
            }
            RootBusFunction::PcieExpander => {
                // `hw/pci-bridge/pci_expander_bridge.c`: Red Hat's PCI_DEVICE_ID_REDHAT_PXB_PCIE,
                // class PCI_CLASS_BRIDGE_HOST.
                const PXB_PCIE_ID: u32 = 0x000b_1b36;
                const PCI_CLASS_BRIDGE_HOST: u32 = 0x0600;
                if id != PXB_PCIE_ID || class != PCI_CLASS_BRIDGE_HOST {
                    return Err(unexpected(format!("PCI ID {id:08x}, class {class:04x}")));
                }
            }
            RootBusFunction::PcieRootPort => {
                let pref_base = self.pci_read32(slot, 0, PCI_PREF_MEMORY_BASE).await?;
                if class != PCI_CLASS_BRIDGE_PCI || pref_base & 0xf != PCI_PREF_RANGE_TYPE_64 {
                    return Err(unexpected(format!(
                        "PCI ID {id:08x}, class {class:04x}, prefetchable base {pref_base:08x}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The size of 64-bit memory BAR `index`, probed as firmware does (all ones, read back),
    /// or `None` when it is not a 64-bit memory BAR.
    async fn probe_bar64(&mut self, slot: u8, index: u8) -> Result<Option<u64>, QtestError> {
        let low = 0x10 + 4 * index;
        let original = self.pci_read32(slot, 0, low).await?;
        if original & 0x7 != 0x4 {
            return Ok(None);
        }
        self.pci_write32(slot, 0, low, u32::MAX).await?;
        self.pci_write32(slot, 0, low + 4, u32::MAX).await?;
        let mask = u64::from(self.pci_read32(slot, 0, low).await? & !0xf)
            | u64::from(self.pci_read32(slot, 0, low + 4).await?) << 32;
        Ok(Some((!mask).wrapping_add(1)))
    }

    async fn program_mem64(&mut self, assignment: &Mem64Assignment) -> Result<(), QtestError> {
        const PCI_COMMAND: u8 = 0x04;
        const PCI_COMMAND_MEMORY: u8 = 0x02;
        let slot = assignment.slot;
        let address = assignment.address;
        match assignment.kind {
            Mem64Kind::Bar { index } => {
                let low = 0x10 + 4 * index;
                self.pci_write32(slot, 0, low, address as u32).await?;
                self.pci_write32(slot, 0, low + 4, (address >> 32) as u32)
                    .await?;
            }
            Mem64Kind::PrefetchableWindow => {
                // Base and limit registers hold address bits 31:20 in bits 15:4.
                let limit = address + assignment.size - 1;
                let low =
                    ((address >> 16) as u32 & 0xfff0) | (((limit >> 16) as u32 & 0xfff0) << 16);
                self.pci_write32(slot, 0, PCI_PREF_MEMORY_BASE, low).await?;
                self.pci_write32(slot, 0, PCI_PREF_BASE_UPPER32, (address >> 32) as u32)
                    .await?;
                self.pci_write32(slot, 0, PCI_PREF_LIMIT_UPPER32, (limit >> 32) as u32)
                    .await?;
            }
        }
        self.pci_or8(slot, 0, PCI_COMMAND, PCI_COMMAND_MEMORY).await
    }

    /// Reads `len` bytes of item `select` from its start by DMA, through guest RAM.
    pub async fn read(&mut self, select: u16, len: u32) -> Result<Vec<u8>, OracleError> {
        let mut out = Vec::with_capacity(len as usize);
        let mut first = true;
        while out.len() < len as usize {
            let chunk = DMA_CHUNK.min(len - out.len() as u32);
            let mut control = FW_CFG_DMA_CTL_READ;
            if first {
                control |= (u32::from(select) << 16) | FW_CFG_DMA_CTL_SELECT;
            }
            first = false;
            let mut descriptor = Vec::with_capacity(16);
            descriptor.extend_from_slice(&control.to_be_bytes());
            descriptor.extend_from_slice(&chunk.to_be_bytes());
            descriptor.extend_from_slice(&DMA_BUFFER.to_be_bytes());
            self.qtest.memwrite(DMA_DESCRIPTOR, &descriptor).await?;
            // The DMA address register is big-endian and the low half starts the transfer;
            // an x86 `outl` is little-endian, hence the byte swaps (as libqos does).
            self.qtest
                .outl(
                    FW_CFG_PORT_DMA_HIGH,
                    ((DMA_DESCRIPTOR >> 32) as u32).swap_bytes(),
                )
                .await?;
            self.qtest
                .outl(FW_CFG_PORT_DMA_LOW, (DMA_DESCRIPTOR as u32).swap_bytes())
                .await?;
            let status = self.qtest.memread(DMA_DESCRIPTOR, 4).await?;
            let status = u32::from_be_bytes([status[0], status[1], status[2], status[3]]);
            if status & FW_CFG_DMA_CTL_ERROR != 0 || status != 0 {
                return Err(OracleError::Dma {
                    select,
                    control: status,
                });
            }
            self.qtest
                .memread_into(DMA_BUFFER, chunk as usize, &mut out)
                .await?;
        }
        Ok(out)
    }

    /// The file directory (selector 0x19): big-endian count, then 64-byte entries
    /// `{be32 size, be16 select, be16 reserved, char name[56]}`.
    pub async fn directory(&mut self) -> Result<Vec<FwCfgFile>, OracleError> {
        let count = self.read(FW_CFG_FILE_DIR, 4).await?;
        let count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]);
        let len = count
            .checked_mul(64)
            .and_then(|n| n.checked_add(4))
            .ok_or_else(|| OracleError::Directory(format!("count {count} overflows")))?;
        let dir = self.read(FW_CFG_FILE_DIR, len).await?;
        parse_directory(&dir)
    }
}

/// Parses a fw_cfg file directory blob.
pub fn parse_directory(dir: &[u8]) -> Result<Vec<FwCfgFile>, OracleError> {
    let count = dir
        .get(0..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| OracleError::Directory(format!("{} bytes, no count", dir.len())))?;
    let mut files = Vec::new();
    for index in 0..count as usize {
        let offset = 4 + index * 64;
        let entry = dir.get(offset..offset + 64).ok_or_else(|| {
            OracleError::Directory(format!(
                "entry {index} at offset {offset} runs past the {}-byte directory",
                dir.len()
            ))
        })?;
        let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let select = u16::from_be_bytes([entry[4], entry[5]]);
        let name = &entry[8..64];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let name = std::str::from_utf8(&name[..end]).map_err(|_| {
            OracleError::Directory(format!(
                "entry {index} at offset {offset}: name is not UTF-8"
            ))
        })?;
        files.push(FwCfgFile {
            name: name.to_string(),
            select,
            size,
        });
    }
    Ok(files)
}

/// QEMU's `etc/e820`: 20-byte little-endian entries `{u64 address, u64 length, u32 type}`;
/// a trailing partial entry is dropped (and then differs from any model).
fn parse_e820(blob: &[u8]) -> Vec<(u64, u64, u32)> {
    blob.chunks_exact(20)
        .map(|e| {
            let u64_at = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&e[at..at + 8]);
                u64::from_le_bytes(b)
            };
            (
                u64_at(0),
                u64_at(8),
                u32::from_le_bytes([e[16], e[17], e[18], e[19]]),
            )
        })
        .collect()
}

/// Every named fw_cfg file of `vm`, as QEMU serves it to firmware that programmed the chipset
/// like `firmware`. Runs `qemu_binary` paused under TCG in a fresh temp dir (with a swtpm when
/// the VM has a TPM, since QEMU's emulator backend talks to it at startup) and kills it after.
pub async fn dump_fw_cfg(
    vm: &Vm,
    qemu_binary: &QemuBinary,
    firmware: FirmwarePci,
) -> Result<BTreeMap<String, Vec<u8>>, OracleError> {
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
    let needed = u64::from(DMA_CHUNK) + DMA_BUFFER;
    if vm.memory < needed {
        return Err(OracleError::TooLittleMemory {
            memory: vm.memory,
            needed,
        });
    }
    let dir =
        crate::process::PrivateDir::new("mrlab-fwcfg-", None).map_err(OracleError::TempDir)?;
    let run = RunDir::new(dir.path());
    let listener = tokio::net::UnixListener::bind(run.qtest_socket()).map_err(|source| {
        OracleError::Listen {
            socket: run.qtest_socket().display().to_string(),
            source,
        }
    })?;
    let mut swtpm = None;
    if vm.tpm {
        swtpm = Some(
            crate::swtpm::start(&run, crate::swtpm::State::Empty, Duration::from_secs(10)).await?,
        );
    }
    let mut command = qemu_binary.tokio_command();
    command.args(argv(vm, &Backend::Oracle, &run));
    let mut qemu = Group::spawn_command("qemu", command, &run.stderr_log()).map_err(|source| {
        OracleError::Spawn {
            program: qemu_binary.program.display().to_string(),
            source,
        }
    })?;
    let stream = tokio::select! {
        accepted = listener.accept() => accepted.map(|(s, _)| s).map_err(|source| OracleError::Listen {
            socket: run.qtest_socket().display().to_string(),
            source,
        })?,
        status = qemu.wait() => {
            let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            let stderr = std::fs::read_to_string(run.stderr_log()).unwrap_or_default();
            return Err(OracleError::QemuExited { status, stderr: stderr.trim().to_string() });
        }
        _ = tokio::time::sleep(CONNECT_TIMEOUT) => return Err(OracleError::ConnectTimeout(CONNECT_TIMEOUT)),
    };
    let mut qtest = Qtest::new(stream);
    let mut result = read_all(&mut qtest, vm, firmware).await;
    drop(qtest);
    // QEMU connects to qtest before it creates devices, so a rejected device shows up as a
    // broken connection: report what QEMU said instead.
    if result.is_err() {
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), qemu.wait()).await {
            let stderr = std::fs::read_to_string(run.stderr_log()).unwrap_or_default();
            result = Err(OracleError::QemuStopped {
                status: status.to_string(),
                stderr: stderr.trim().to_string(),
            });
        }
    }
    // Killing reaps QEMU; the swtpm (--terminate) and the temp dir go with their drops.
    let _ = qemu.kill().await;
    if let Some(mut swtpm) = swtpm.take() {
        let _ = swtpm.kill().await;
    }
    result
}

async fn read_all(
    qtest: &mut Qtest,
    vm: &Vm,
    firmware: FirmwarePci,
) -> Result<BTreeMap<String, Vec<u8>>, OracleError> {
    // The oracle's QEMU runs TCG with the CPU the TCG boots run.
    let cpu = GuestCpu::qemu64_tcg(vm);
    let mut fw_cfg = FwCfg::open(qtest).await?;
    fw_cfg.program_chipset_like_ovmf(firmware).await?;
    let directory = fw_cfg.directory().await?;
    fw_cfg.check_mmio64_inputs(vm, cpu, &directory).await?;
    fw_cfg.program_mem64_like_ovmf(vm, cpu, firmware).await?;
    let mut files = BTreeMap::new();
    for file in directory {
        let data = fw_cfg.read(file.select, file.size).await?;
        files.insert(file.name, data);
    }
    // The -kernel blobs are numbered items, not files: OVMF's QemuKernelLoaderFsDxe serves
    // "kernel" as the setup part followed by the rest of the image, as QEMU patched it.
    for (name, size_item, data_item) in [
        (SETUP_ITEM, FW_CFG_SETUP_SIZE, FW_CFG_SETUP_DATA),
        (KERNEL_ITEM, FW_CFG_KERNEL_SIZE, FW_CFG_KERNEL_DATA),
    ] {
        let size = fw_cfg.read(size_item, 4).await?;
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
        if size > 0 {
            files.insert(name.to_string(), fw_cfg.read(data_item, size).await?);
        }
    }
    // OVMF ≥ edk2-stable202505 reads (and in a TD measures) the numbered BootMenu item.
    files.insert(
        BOOT_MENU_ITEM.to_string(),
        fw_cfg.read(FW_CFG_BOOT_MENU, 2).await?,
    );
    Ok(files)
}

/// Keys of the -kernel items in a [`dump_fw_cfg`] map (parenthesised: no fw_cfg file has them).
pub const SETUP_ITEM: &str = "(setup)";
pub const KERNEL_ITEM: &str = "(kernel)";
/// Key of the numbered item `FW_CFG_BOOT_MENU` (`-boot menu=`, a little-endian u16).
pub const BOOT_MENU_ITEM: &str = "(BootMenu)";
/// `include/standard-headers/linux/qemu_fw_cfg.h`.
const FW_CFG_KERNEL_SIZE: u16 = 0x08;
const FW_CFG_BOOT_MENU: u16 = 0x0e;
const FW_CFG_KERNEL_DATA: u16 = 0x11;
const FW_CFG_SETUP_SIZE: u16 = 0x17;
const FW_CFG_SETUP_DATA: u16 = 0x18;

/// fw_cfg file with the `-kernel` image as given, without QEMU's setup header patches
/// (QEMU ≥ 10.0, hw/i386/x86-common.c `x86_load_linux`).
pub const BOOT_KERNEL_FILE: &str = "etc/boot/kernel";

/// The kernel image exactly as the firmware loads it for `-kernel` boot: setup ‖ kernel.
pub fn kernel_as_loaded(files: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, String> {
    match (files.get(SETUP_ITEM), files.get(KERNEL_ITEM)) {
        (Some(setup), Some(kernel)) => Ok([setup.as_slice(), kernel.as_slice()].concat()),
        _ => Err("QEMU serves no -kernel image in fw_cfg (items 0x17/0x08 are empty)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_parses_and_rejects_truncation() {
        let mut dir = vec![0, 0, 0, 1];
        dir.extend_from_slice(&[0, 0, 0, 8, 0x00, 0x20, 0, 0]);
        let mut name = b"bootorder".to_vec();
        name.resize(56, 0);
        dir.extend_from_slice(&name);
        let files = parse_directory(&dir).expect("valid directory");
        assert_eq!(
            files,
            [FwCfgFile {
                name: "bootorder".into(),
                select: 0x20,
                size: 8
            }]
        );
        dir.truncate(40);
        let err = parse_directory(&dir).expect_err("truncated");
        assert!(err
            .to_string()
            .contains("entry 0 at offset 4 runs past the 40-byte directory"));
    }

    #[test]
    fn pci_config_address() {
        assert_eq!(pci_address(31, 0, 0x44), 0x8000_f844);
        assert_eq!(pci_address(0, 0, 0x60), 0x8000_0060);
    }
}
