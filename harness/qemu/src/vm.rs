//! The one description of a VM that drives both its QEMU command line and its prediction.
//!
//! PCI addresses are left to QEMU: with `-nodefaults` the q35 root bus has only the MCH
//! (00.0) and the ICH9 functions (1f.x), and QEMU gives each `-device` without `addr=` the
//! lowest free slot in command-line order. The order of [`Vm::devices`] therefore decides the
//! slots, and so the ACPI tables, exactly as dstack-vmm's own command line does; explicit
//! addresses would make the harness's layout diverge from the layouts it is meant to predict.

use std::path::{Path, PathBuf};

/// The host kernel's vhost-vsock device node.
pub const VHOST_VSOCK_DEVICE: &str = "/dev/vhost-vsock";

/// q35 machine options. `None` leaves QEMU's default, which may differ between QEMU versions
/// (e.g. `pic`); the prediction side resolves defaults through its quirks table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    pub smm: Option<bool>,
    pub hpet: Option<bool>,
    pub pic: Option<bool>,
    pub kernel_irqchip: Option<KernelIrqchip>,
    /// `-global q35-pcihost.pci-hole64-size=…`, in bytes.
    pub pci_hole64_size: Option<u64>,
    /// `-global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=…`; changes the DSDT.
    pub acpi_pci_hotplug_with_bridge_support: Option<bool>,
    /// The guest CPU's physical address width (`-cpu …,phys-bits=N`); `None` keeps the CPU
    /// model's (TCG's `qemu64`: 40). A TD ignores it: its width is the TD's GPAW.
    pub phys_bits: Option<u8>,
    /// Guest RAM as NUMA node 0 from a file backend instead of anonymous memory: dstack's
    /// `hugepages`. Declaring a node adds an SRAT and the CPUs' `_PXM` in the DSDT.
    pub numa: Option<NumaMemory>,
}

/// One NUMA node (id 0) holding every vCPU and all guest RAM, the RAM a
/// `memory-backend-file` QEMU creates in the folder `mem_path`, as dstack-vmm's
/// `configure_hugepage_memory` builds it for a VM without GPUs (Dstack-TEE/dstack
/// `dstack/vmm/src/app/qemu.rs`; `app.rs` `hugepage_numa_nodes` gives node 0 then).
///
/// `mem_path` is a folder, as dstack's `/dev/hugepages` is: QEMU makes its file there with
/// `mkstemp` (`qemu_back_mem.<region>.XXXXXX`) and unlinks it at once (`file_ram_open` in
/// `softmmu/physmem.c`, `system/physmem.c` from QEMU 8.2), so no file outlives the
/// VM however it ends. The guest sees the node's size and CPUs, not the page size or the folder's
/// file system, so a tmpfs folder stands in for hugetlbfs where a host has no hugepages. The
/// host-side options dstack adds (`prealloc=yes`, `host-nodes=0,policy=bind`) decide where the
/// host's pages come from, not what the guest sees, and are left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumaMemory {
    pub mem_path: PathBuf,
}

impl NumaMemory {
    /// dstack-vmm's hugetlbfs mount on a TD host; tmpfs `/dev/shm` for a vTPM VM, which needs
    /// no hugepages reserved on the host.
    pub fn for_host(vtpm: bool) -> NumaMemory {
        NumaMemory {
            mem_path: if vtpm { "/dev/shm" } else { "/dev/hugepages" }.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelIrqchip {
    On,
    Off,
    Split,
}

impl KernelIrqchip {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelIrqchip::On => "on",
            KernelIrqchip::Off => "off",
            KernelIrqchip::Split => "split",
        }
    }
}

/// What the firmware boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// QEMU `-kernel` direct boot (OVMF loads the kernel from fw_cfg).
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
    /// The firmware boots from the devices (e.g. an ESP on a disk).
    Disk,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// A virtio-blk disk (`-drive if=none` + `-device virtio-blk-pci`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// The drive id (dstack uses `hd0`, `hd1`, `hd2`, `vol<N>`).
    pub id: String,
    pub file: PathBuf,
    pub format: DiskFormat,
    pub readonly: bool,
    pub serial: Option<String>,
}

/// A 9p share (`-virtfs local,…`), which QEMU turns into a virtio-9p-pci device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub id: String,
    pub path: PathBuf,
    pub mount_tag: String,
    pub readonly: bool,
    /// `mapped`, `none`, `passthrough` or `mapped-xattr`.
    pub security_model: String,
}

/// One guest device. Each PCI device takes the next free root-bus slot in list order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    Disk(Disk),
    /// virtio-net-pci on a user-mode (slirp) netdev with this id.
    Net {
        id: String,
        mac: Option<String>,
    },
    /// virtio-vsock: `vhost-vsock-pci`, or `vhost-user-vsock-pci` where the host backs it with
    /// a vhost-user daemon ([`Vm::vsock_host`]); both present the same PCI function.
    Vsock {
        guest_cid: u32,
    },
    Share(Share),
    /// `-cdrom`: an IDE CD on the ICH9 AHCI controller (00:1f.2), so no PCI slot of its own.
    Cdrom {
        file: PathBuf,
    },
    /// pcie-root-port `pci.<chassis>` on pcie.0.
    PcieRootPort {
        chassis: u8,
    },
    /// A PCIe expander bridge (`pxb-pcie`) on pcie.0 at a fixed `slot`, opening root bus
    /// `bus_nr` in NUMA node `numa_node`: dstack-vmm adds one per NUMA node with `hugepages`,
    /// GPUs or not. On the root bus it is a host bridge function (1b36:000b) without BARs; with
    /// nothing behind it OVMF finds no device on its bus, and QEMU's DSDT describes it as
    /// `PC<bus_nr>` with `_PXM`.
    PcieExpander {
        id: String,
        slot: u8,
        numa_node: u32,
        bus_nr: u8,
    },
}

impl Device {
    /// A read-only raw disk, the form dstack uses for rootfs and volumes.
    pub fn readonly_raw_disk(id: &str, file: impl Into<PathBuf>) -> Device {
        Device::Disk(Disk {
            id: id.to_string(),
            file: file.into(),
            format: DiskFormat::Raw,
            readonly: true,
            serial: None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    pub machine: Machine,
    pub cpus: u32,
    /// Guest RAM in bytes.
    pub memory: u64,
    pub firmware: PathBuf,
    pub boot: Boot,
    pub devices: Vec<Device>,
    /// An ISA serial port (COM1) wired to a file. It appears in the DSDT, so it is part of
    /// the VM, not of the harness.
    pub serial: bool,
    /// A TPM 2.0 (tpm-tis backed by swtpm). It adds a TPM2 ACPI table and `etc/tpm/log`.
    pub tpm: bool,
    /// How the host backs a [`Device::Vsock`] (the guest sees the same device either way).
    pub vsock_host: VsockHost,
}

/// How the host backs a VM's virtio-vsock device.
///
/// `vhost-vsock-pci` (`hw/virtio/vhost-vsock-pci.c`) and `vhost-user-vsock-pci`
/// (`hw/virtio/vhost-user-vsock-pci.c`) are the same PCI function: both are a virtio-pci proxy
/// with vendor/device 1af4:1053 (`PCI_DEVICE_ID_VIRTIO_VSOCK`, modern-only: both call
/// `virtio_pci_force_virtio_1`, vhost-vsock on machine types ≥ 5.1), class 0x0780
/// (`PCI_CLASS_COMMUNICATION_OTHER`), 3 MSI-X vectors and the three vsock virtqueues; only the
/// backend behind the queues differs. So what a vTPM run verifies with the vhost-user device
/// (ACPI tables, BAR placement) holds for the TD's vhost-vsock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum VsockHost {
    /// The host kernel's vhost-vsock (`/dev/vhost-vsock`): `vhost-vsock-pci`.
    #[default]
    Kernel,
    /// rust-vmm's `vhost-device-vsock` daemon at this path serves `vhost-user-vsock-pci`; guest
    /// RAM then comes from a shared memfd backend (`-machine memory-backend=`), which the
    /// daemon maps. No NUMA node is declared, so no SRAT appears.
    User { daemon: PathBuf },
}

impl Vm {
    /// A q35 VM with QEMU's machine defaults, a serial console and no devices.
    pub fn new(firmware: impl Into<PathBuf>, cpus: u32, memory: u64, boot: Boot) -> Vm {
        Vm {
            machine: Machine::default(),
            cpus,
            memory,
            firmware: firmware.into(),
            boot,
            devices: Vec::new(),
            serial: true,
            tpm: false,
            vsock_host: VsockHost::Kernel,
        }
    }

    /// Each NIC's MAC, in device order: its own `mac`, or the one QEMU gives a NIC without one
    /// (net/net.c `qemu_macaddr_default_if_unset`: 52:54:00:12:34:56, the last byte counting up
    /// per such NIC in creation order; it skips addresses other NICs already use, which the
    /// count here does not model, so an explicit MAC in that range is refused).
    pub fn nic_macs(&self) -> Result<Vec<[u8; 6]>, String> {
        let mut next_default = 0u8;
        self.devices
            .iter()
            .filter_map(|d| match d {
                Device::Net { mac, .. } => Some(mac),
                _ => None,
            })
            .map(|mac| match mac {
                Some(text) => {
                    let bytes: Vec<u8> = text
                        .split(':')
                        .map(|b| u8::from_str_radix(b, 16))
                        .collect::<Result<_, _>>()
                        .map_err(|_| format!("MAC {text:?} is not six hex bytes"))?;
                    let mac: [u8; 6] = bytes
                        .try_into()
                        .map_err(|_| format!("MAC {text:?} is not six hex bytes"))?;
                    if mac[..5] == [0x52, 0x54, 0x00, 0x12, 0x34] {
                        return Err(format!("MAC {text}: in QEMU's default range"));
                    }
                    Ok(mac)
                }
                None => {
                    let last = 0x56u8.checked_add(next_default).ok_or("too many NICs")?;
                    next_default += 1;
                    Ok([0x52, 0x54, 0x00, 0x12, 0x34, last])
                }
            })
            .collect()
    }

    /// Why this host cannot instantiate the VM, if it cannot; the runner skips it visibly.
    pub fn unsupported_reason(&self) -> Option<String> {
        self.unsupported_reason_on(Path::new(VHOST_VSOCK_DEVICE))
    }

    pub fn vsock_count(&self) -> usize {
        self.devices
            .iter()
            .filter(|d| matches!(d, Device::Vsock { .. }))
            .count()
    }

    pub fn has_vsock(&self) -> bool {
        self.vsock_count() > 0
    }

    fn unsupported_reason_on(&self, vhost_vsock: &Path) -> Option<String> {
        if let Some(numa) = self.machine.numa.as_ref().filter(|n| !n.mem_path.is_dir()) {
            return Some(format!(
                "the NUMA node's memory file needs the folder {}, absent on this host",
                numa.mem_path.display()
            ));
        }
        if !self.has_vsock() {
            return None;
        }
        match &self.vsock_host {
            VsockHost::Kernel if !vhost_vsock.exists() => Some(format!(
                "vhost-vsock needs {}, absent on this host",
                vhost_vsock.display()
            )),
            VsockHost::User { daemon } if !daemon.is_file() => Some(format!(
                "vhost-user-vsock needs the vhost-device-vsock daemon, not found at {} (ci/setup-host.sh installs it)",
                daemon.display()
            )),
            _ => None,
        }
    }
}

/// dstack-vmm's first (and, without GPUs, only) hugepages expander: `pcie.node0` at
/// `addr=10` and `bus_nr=5`. dstack-vmm writes the address `0xa + index` in decimal, and QEMU
/// reads `addr=` as hex (`hw/core/qdev-properties-system.c` `set_pci_devfn`: `strtoul(…, 16)`),
/// so the expander sits in slot 0x10, as `info pci` shows (device 16).
pub fn dstack_hugepages_expander() -> Device {
    Device::PcieExpander {
        id: "pcie.node0".into(),
        slot: 0x10,
        numa_node: 0,
        bus_nr: 5,
    }
}

/// How dstack-vmm delivers shared files to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DstackHostShare {
    /// `-virtfs …,mount_tag=host-shared,id=virtfs0`.
    NinePFs { path: PathBuf, readonly: bool },
    /// A read-only raw disk `hd2`.
    Disk { file: PathBuf },
}

/// How dstack-vmm attaches the root filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DstackRootfs {
    /// A dm-verity image as read-only raw virtio disk `hd0` (image versions ≥ 0.5.0).
    Verity(PathBuf),
    /// An ISO as `-cdrom` (older images).
    Iso(PathBuf),
}

/// The inputs of dstack-vmm's device layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DstackLayout {
    pub rootfs: DstackRootfs,
    /// The writable data disk `hd1` (qcow2).
    pub data_disk: PathBuf,
    pub verity_volumes: Vec<PathBuf>,
    pub nics: usize,
    pub guest_cid: u32,
    pub host_share: DstackHostShare,
    /// GPUs and NVSwitches each sit behind their own pcie-root-port; here only the ports.
    pub root_ports: u8,
    /// dstack's `hugepages`: the PCIe expander of NUMA node 0 (RAM itself: [`Machine::numa`]).
    pub hugepages: bool,
}

impl DstackLayout {
    /// dstack-vmm's device order, from `QemuCommandBuilder::build` in
    /// Dstack-TEE/dstack `dstack/vmm/src/app/qemu.rs`: rootfs (hd0 verity disk or cdrom),
    /// data disk hd1, verity volumes vol<N>, NICs net<N>, (TPM,) vsock, host share (9p
    /// virtfs0 or disk hd2), the hugepages expander (`configure_hugepage_memory`), then root
    /// ports for passthrough devices.
    ///
    /// dstack-mr's ACPI model (`dstack/dstack-mr/src/acpi.rs`) emits hd0/cdrom last instead;
    /// all these disks are identical virtio-blk functions and a cdrom takes no PCI slot, so
    /// both orders give the same slots per device class and the same ACPI tables.
    pub fn devices(&self) -> Vec<Device> {
        let mut devices = Vec::new();
        match &self.rootfs {
            DstackRootfs::Verity(file) => devices.push(Device::readonly_raw_disk("hd0", file)),
            DstackRootfs::Iso(file) => devices.push(Device::Cdrom { file: file.clone() }),
        }
        devices.push(Device::Disk(Disk {
            id: "hd1".into(),
            file: self.data_disk.clone(),
            format: DiskFormat::Qcow2,
            readonly: false,
            serial: None,
        }));
        for (index, volume) in self.verity_volumes.iter().enumerate() {
            devices.push(Device::readonly_raw_disk(&format!("vol{index}"), volume));
        }
        for index in 0..self.nics {
            devices.push(Device::Net {
                id: format!("net{index}"),
                mac: None,
            });
        }
        devices.push(Device::Vsock {
            guest_cid: self.guest_cid,
        });
        match &self.host_share {
            DstackHostShare::NinePFs { path, readonly } => devices.push(Device::Share(Share {
                id: "virtfs0".into(),
                path: path.clone(),
                mount_tag: "host-shared".into(),
                readonly: *readonly,
                security_model: "mapped".into(),
            })),
            DstackHostShare::Disk { file } => devices.push(Device::readonly_raw_disk("hd2", file)),
        }
        if self.hugepages {
            devices.push(dstack_hugepages_expander());
        }
        for chassis in 1..=self.root_ports {
            devices.push(Device::PcieRootPort { chassis });
        }
        devices
    }

    /// dstack-vmm's machine options for a TD: `q35,kernel-irqchip=split,hpet=off` (the
    /// confidential-guest-support part comes from the backend).
    pub fn machine(hotplug_off: bool, pci_hole64_size: Option<u64>) -> Machine {
        Machine {
            hpet: Some(false),
            kernel_irqchip: Some(KernelIrqchip::Split),
            pci_hole64_size,
            acpi_pci_hotplug_with_bridge_support: hotplug_off.then_some(false),
            ..Machine::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nics_without_a_mac_get_qemus_defaults_in_order() {
        let mut vm = Vm::new("/fw", 1, 1 << 30, Boot::Disk);
        for (id, mac) in [
            ("net0", None),
            ("net1", Some("02:00:00:00:00:01")),
            ("net2", None),
        ] {
            vm.devices.push(Device::Net {
                id: id.into(),
                mac: mac.map(Into::into),
            });
        }
        assert_eq!(
            vm.nic_macs().unwrap(),
            [
                [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
                [0x02, 0x00, 0x00, 0x00, 0x00, 0x01],
                [0x52, 0x54, 0x00, 0x12, 0x34, 0x57]
            ]
        );
        vm.devices.push(Device::Net {
            id: "net3".into(),
            mac: Some("52:54:00:12:34:58".into()),
        });
        assert!(vm.nic_macs().is_err());
    }

    #[test]
    fn vsock_is_unsupported_without_the_device_node() {
        let mut vm = Vm::new("/fw.fd", 1, 1 << 30, Boot::Disk);
        assert_eq!(
            vm.unsupported_reason_on(Path::new("/nonexistent/vsock")),
            None
        );
        vm.devices.push(Device::Vsock { guest_cid: 3 });
        assert_eq!(
            vm.unsupported_reason_on(Path::new("/nonexistent/vsock"))
                .as_deref(),
            Some("vhost-vsock needs /nonexistent/vsock, absent on this host")
        );
        assert_eq!(vm.unsupported_reason_on(Path::new("/")), None);

        vm.vsock_host = VsockHost::User {
            daemon: "/nonexistent/vhost-device-vsock".into(),
        };
        assert_eq!(
            vm.unsupported_reason_on(Path::new("/nonexistent/vsock"))
                .as_deref(),
            Some("vhost-user-vsock needs the vhost-device-vsock daemon, not found at /nonexistent/vhost-device-vsock (ci/setup-host.sh installs it)")
        );
        vm.vsock_host = VsockHost::User {
            daemon: std::env::current_exe().expect("test binary"),
        };
        assert_eq!(
            vm.unsupported_reason_on(Path::new("/nonexistent/vsock")),
            None
        );
    }

    #[test]
    fn dstack_order_follows_dstack_vmm() {
        let layout = DstackLayout {
            rootfs: DstackRootfs::Verity("/img/rootfs.verity".into()),
            data_disk: "/w/hda.img".into(),
            verity_volumes: vec!["/v/a".into()],
            nics: 2,
            guest_cid: 7,
            host_share: DstackHostShare::NinePFs {
                path: "/w/shared".into(),
                readonly: true,
            },
            root_ports: 1,
            hugepages: true,
        };
        let kinds: Vec<String> = layout
            .devices()
            .iter()
            .map(|d| match d {
                Device::Disk(disk) => disk.id.clone(),
                Device::Net { id, .. } => id.clone(),
                Device::Vsock { guest_cid } => format!("vsock{guest_cid}"),
                Device::Share(share) => share.id.clone(),
                Device::Cdrom { .. } => "cdrom".into(),
                Device::PcieRootPort { chassis } => format!("pci.{chassis}"),
                Device::PcieExpander { id, .. } => id.clone(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "hd0",
                "hd1",
                "vol0",
                "net0",
                "net1",
                "vsock7",
                "virtfs0",
                "pcie.node0",
                "pci.1"
            ]
        );
    }
}
