//! Where OVMF puts the 64-bit PCI resources of a q35 VM, computed from the VM description.
//!
//! Why it matters: QEMU's DSDT `_CRS` of the PCI host bridge describes the 64-bit PCI hole
//! from the 64-bit ranges the firmware had decoding on when it first read `etc/acpi/tables`
//! (QEMU 7.2 `hw/pci-host/q35.c` `q35_host_get_pci_hole64_start_value`/`_end`, over
//! `hw/pci/pci.c` `pci_bus_get_w64_range`: every root-bus function with memory decoding
//! enabled contributes its 64-bit BARs and, for a bridge, its prefetchable window). The hole
//! starts at the lowest such address and ends at `max(ROUND_UP(start + pci-hole64-size,
//! 1 GiB), highest end)`; with no such range QEMU uses its own default start. OVMF's
//! `AcpiPlatformDxe` (`EnablePciDecoding`) turns decoding on for every PCI function right
//! before it fetches the tables, so every 64-bit resource counts. Nothing 32-bit enters
//! q35's tables: the 32-bit hole follows PCIEXBAR (`mch_update_pciexbar`), not the BARs.
//!
//! The rule, from the edk2 sources of both builds (`edk2-stable202211`, `edk2-stable202502`):
//! - Aperture (`OvmfPkg/Library/PlatformInitLib/MemDetect.c`): `PlatformGetFirstNonAddress`
//!   puts a `PcdPciMmio64Size` (32 GiB, `OvmfPkgX64.dsc`) window above the highest E820 RAM
//!   address, 1 GiB- and naturally aligned. `PlatformAddressWidthFromCpuid` trusts the CPU's
//!   phys-bits (QEMU quirk: ≥ 41, or exactly 40 on AMD, 36/39 on Intel); when trusted,
//!   `PlatformDynamicMmioWindow` replaces the window by the top eighth of the physical
//!   address space, if that is larger and lies above the classic base. 2025.02 then moves it
//!   below any E820 entry it overlaps (`PlatformReservationConflictCB`): on an AMD CPU with
//!   ≥ 40 phys-bits QEMU reserves the HyperTransport range [1 TiB − 12 GiB, 1 TiB)
//!   (`hw/i386/pc.c` `pc_memory_init`), which the dynamic window of a 40-bit CPU overlaps.
//! - Requests: each virtio-pci function has one 64-bit prefetchable BAR 4 of 16 KiB (four
//!   4 KiB capability regions, `hw/virtio/virtio-pci.c`). A hotplug-capable pcie-root-port
//!   with nothing behind it asks only for the padding of `OvmfPkg/PciHotPlugInitDxe`
//!   (`GetResourcePadding`): a prefetchable window of `PcdPciMmio64Size >> 8` rounded up to
//!   a power of two when that size (the dynamic one) exceeds 32 GiB.
//! - Placement (`MdeModulePkg/Bus/Pci/PciBusDxe/PciResourceSupport.c`, `PciHostBridgeDxe`):
//!   OVMF's host bridge combines MEM/PMEM (`PciHostBridgeUtilityLib`), so all these land in
//!   one 64-bit list, sorted by alignment, largest first; `InsertResourceNode` puts a node
//!   before equals and the PMEM64 → MEM64 merge re-inserts them, so equals keep bus order.
//!   The root bridge allocates the whole list bottom-up at the aperture base aligned to its
//!   largest alignment (`AllocateResource`), each node at the next offset aligned to its own.
//!   Observed on QEMU 7.2 TCG (`info pci` after boot): one virtio-net → BAR 4 at
//!   0xe0_0000_0000 (2022.11); virtio-blk, -net, -9p → 0xc0_0000_0000, +0x4000, +0x8000
//!   (2025.02); virtio-blk, two root ports, virtio-net → windows 0xe0_0000_0000 and
//!   0xe0_2000_0000 of 512 MiB, BAR 4s at 0xe0_4000_0000 and +0x4000 (2022.11; 0xc0… on
//!   2025.02). With these programmed, the oracle's tables equal the guests' (`mrlab run`
//!   acpi_blobs rows; for the root ports, the DSDT OVMF installed in guest memory).

use crate::vm::{Device, Vm};

/// What a firmware build does to place the 64-bit PCI aperture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mmio64Rule {
    /// Classic window, replaced by the dynamic window when phys-bits is trusted
    /// (edk2-stable202211).
    DynamicWindow,
    /// As [`Mmio64Rule::DynamicWindow`], then moved below any E820 entry the dynamic window
    /// overlaps (edk2-stable202502).
    DynamicWindowBelowE820Conflicts,
}

/// The guest CPU's identity as OVMF's `PlatformAddressWidthFromCpuid` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestCpu {
    /// CPUID vendor "AuthenticAMD" (else treated as Intel).
    pub amd: bool,
    /// CPUID 0x80000008 EAX[7:0].
    pub phys_bits: u8,
    /// CPUID 0x80000001 EDX bit 26 (1 GiB pages); without it OVMF caps phys-bits at 40.
    pub page_1g: bool,
}

impl GuestCpu {
    /// QEMU's TCG default CPU model `qemu64` (`target/i386/cpu.c`: vendor AMD,
    /// `TCG_PHYS_ADDR_BITS` 40, no pdpe1gb), which the oracle and the TCG boots run.
    pub const QEMU64_TCG: GuestCpu = GuestCpu {
        amd: true,
        phys_bits: 40,
        page_1g: false,
    };

    /// The CPU the oracle and the TCG boots of `vm` run: `qemu64`, with `vm`'s phys-bits.
    pub fn qemu64_tcg(vm: &Vm) -> GuestCpu {
        GuestCpu {
            phys_bits: vm.machine.phys_bits.unwrap_or(Self::QEMU64_TCG.phys_bits),
            ..Self::QEMU64_TCG
        }
    }
}

const GIB: u64 = 1 << 30;
/// `hw/i386/pc.c` `AMD_HT_START`/`AMD_HT_SIZE`.
const AMD_HT_START: u64 = 0xfd_0000_0000;
const AMD_HT_SIZE: u64 = 0x3_0000_0000;
/// `hw/virtio/virtio-pci.c`: modern memory BAR index and size (4 × 4 KiB regions).
pub const VIRTIO_MODERN_BAR: u8 = 4;
pub const VIRTIO_MODERN_BAR_SIZE: u64 = 0x4000;
/// `OvmfPkg/PciHotPlugInitDxe`: the default prefetchable padding applies above this size.
const HOTPLUG_PREF_PADDING_THRESHOLD: u64 = 32 * GIB;

/// One QEMU E820 entry (`hw/i386/e820_memory_layout.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub address: u64,
    pub length: u64,
    /// 1 = RAM, 2 = reserved.
    pub kind: u32,
}

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("PCI layout: {count} PCI devices on the root bus, more than its 30 free slots")]
    TooManyDevices { count: usize },
    #[error(
        "PCI layout: slot {slot:#x} of the root bus is taken by an earlier device or is not \
         free for a device (0x01-0x1e)"
    )]
    SlotTaken { slot: u8 },
    #[error(
        "PCI layout: with a {hole64_size:#x}-byte hole64 QEMU moves the {above:#x} bytes of RAM \
         above 4 GiB to 1 TiB, past its AMD HyperTransport range: OVMF's aperture over RAM above \
         1 TiB is not modelled (a VM with at most 2 GiB of RAM, all below 4 GiB, is)"
    )]
    RamRelocatedAbove1Tib { above: u64, hole64_size: u64 },
    #[error(
        "PCI layout: {needed:#x} bytes of 64-bit resources do not fit the aperture \
         [{base:#x}, +{size:#x})"
    )]
    ApertureFull { needed: u64, base: u64, size: u64 },
}

/// QEMU 7.2 q35 RAM split (`hw/i386/pc_q35.c` `pc_q35_init`): (below 4 GiB, above 4 GiB).
pub fn q35_ram_split(memory: u64) -> (u64, u64) {
    let lowmem = if memory >= 0xb000_0000 {
        0x8000_0000
    } else {
        0xb000_0000
    };
    if memory >= lowmem {
        (lowmem, memory - lowmem)
    } else {
        (memory, 0)
    }
}

/// Where QEMU maps RAM above 4 GiB (`hw/i386/pc.c` `pc_memory_init`, QEMU ≥ 7.1 machine
/// types): on an AMD CPU, at 1 TiB when the highest address in use — the 64-bit PCI hole's
/// end, `ROUND_UP(4 GiB + RAM above 4 GiB, 1 GiB) + hole64 - 1` (`pc_max_used_gpa`) — reaches
/// the HyperTransport range; else at 4 GiB. QEMU then refuses to start unless phys-bits
/// covers the hole's end from the new start ("phys-bits too low").
pub fn q35_above_4g_start(memory: u64, hole64_size: u64, cpu: GuestCpu) -> u64 {
    let (_, above) = q35_ram_split(memory);
    let max_used = align_up((1u64 << 32) + above, GIB)
        .saturating_add(hole64_size)
        .saturating_sub(1);
    if cpu.amd && max_used >= AMD_HT_START {
        AMD_HT_START + AMD_HT_SIZE
    } else {
        1 << 32
    }
}

/// QEMU 7.2's E820 table (`etc/e820`) for a q35 VM with `memory` bytes, a `hole64_size` PCI
/// hole and no memory hotplug, in QEMU's order (`pc_memory_init`: the HyperTransport
/// reservation first).
pub fn q35_e820(memory: u64, hole64_size: u64, cpu: GuestCpu) -> Vec<E820Entry> {
    let (below, above) = q35_ram_split(memory);
    let mut table = Vec::new();
    if cpu.amd && cpu.phys_bits >= 40 {
        table.push(E820Entry {
            address: AMD_HT_START,
            length: AMD_HT_SIZE,
            kind: E820_RESERVED,
        });
    }
    table.push(E820Entry {
        address: 0,
        length: below,
        kind: E820_RAM,
    });
    if above > 0 {
        table.push(E820Entry {
            address: q35_above_4g_start(memory, hole64_size, cpu),
            length: above,
            kind: E820_RAM,
        });
    }
    table
}

/// The 64-bit PCI host aperture OVMF's PlatformInitLib sets (`PcdPciMmio64Base/Size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aperture {
    pub base: u64,
    pub size: u64,
}

fn align_up(value: u64, alignment: u64) -> u64 {
    value.div_ceil(alignment) * alignment
}

/// `PlatformAddressWidthInitialization` for a q35 VM without `etc/hardware-info`,
/// `etc/reserved-memory-end` or `opt/ovmf/X-PciMmio64Mb` (the oracle checks they are absent).
/// `hole64_size` is QEMU's `pci-hole64-size`, needed only to rule out QEMU's relocation of
/// RAM above 1 TiB.
pub fn mmio64_aperture(
    memory: u64,
    hole64_size: u64,
    cpu: GuestCpu,
    pcd_mmio64_size: u64,
    rule: Mmio64Rule,
) -> Result<Aperture, LayoutError> {
    let e820 = q35_e820(memory, hole64_size, cpu);
    let ram_end = e820
        .iter()
        .filter(|e| e.kind == E820_RAM)
        .map(|e| e.address + e.length)
        .fold(1u64 << 32, u64::max);
    // Relocation with no RAM above 4 GiB changes only QEMU's default hole start, which the
    // oracle's QEMU computes itself.
    let (_, above) = q35_ram_split(memory);
    if above > 0 && q35_above_4g_start(memory, hole64_size, cpu) != 1 << 32 {
        return Err(LayoutError::RamRelocatedAbove1Tib { above, hole64_size });
    }
    // PlatformGetFirstNonAddress: the classic window.
    let size = align_up(pcd_mmio64_size, GIB);
    let natural = 1u64 << (63 - size.leading_zeros());
    let mut aperture = Aperture {
        base: align_up(align_up(ram_end, GIB), natural),
        size,
    };
    // PlatformAddressWidthFromCpuid with the QEMU quirk, then PlatformDynamicMmioWindow.
    let trusted = cpu.phys_bits >= 41
        || (cpu.amd && cpu.phys_bits == 40)
        || (!cpu.amd && matches!(cpu.phys_bits, 36 | 39));
    if !trusted {
        return Ok(aperture);
    }
    // 2022.11 caps at 47 bits, 2025.02 at 46 (4-level paging), both at 40 without 1 GiB
    // pages. A trusted width is at least 36, so the shifts below cannot underflow.
    let mut phys_bits = cpu.phys_bits.min(match rule {
        Mmio64Rule::DynamicWindow => 47,
        Mmio64Rule::DynamicWindowBelowE820Conflicts => 46,
    });
    if !cpu.page_1g {
        phys_bits = phys_bits.min(40);
    }
    let space = 1u64 << phys_bits;
    let dynamic = 1u64 << (phys_bits - 3);
    if aperture.size < dynamic && aperture.base + dynamic < space {
        aperture = Aperture {
            base: space - dynamic,
            size: dynamic,
        };
        if rule == Mmio64Rule::DynamicWindowBelowE820Conflicts {
            for entry in &e820 {
                let start = entry.address.max(aperture.base);
                let end = (entry.address + entry.length).min(aperture.base + aperture.size);
                if start < end {
                    aperture.base =
                        entry.address.wrapping_sub(aperture.size) & !(aperture.size - 1);
                }
            }
        }
    }
    Ok(aperture)
}

/// What a 64-bit assignment programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mem64Kind {
    /// A 64-bit memory BAR of an endpoint (config offset 0x10 + 4 × index).
    Bar { index: u8 },
    /// The prefetchable window of a PCI bridge (0x24..0x2c).
    PrefetchableWindow,
}

/// One 64-bit resource at its address, on root-bus `slot`, function 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mem64Assignment {
    pub slot: u8,
    pub kind: Mem64Kind,
    pub address: u64,
    pub size: u64,
}

/// What a root-bus PCI function of `device` is, if it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootBusFunction {
    /// virtio-blk, -net, -9p, vhost-vsock (or the oracle's virtio-rng stand-in).
    Virtio,
    PcieRootPort,
    /// A pxb-pcie expander: a host bridge function without BARs, so no 64-bit resource.
    PcieExpander,
}

pub fn root_bus_function(device: &Device) -> Option<RootBusFunction> {
    match device {
        Device::Disk(_) | Device::Net { .. } | Device::Vsock { .. } | Device::Share(_) => {
            Some(RootBusFunction::Virtio)
        }
        Device::PcieRootPort { .. } => Some(RootBusFunction::PcieRootPort),
        Device::PcieExpander { .. } => Some(RootBusFunction::PcieExpander),
        Device::Cdrom { .. } => None,
    }
}

/// The last root-bus slot a device can take: 1f holds the ICH9 functions.
const LAST_FREE_SLOT: u8 = 0x1e;

/// Root-bus slots in device order: QEMU gives each device without `addr=` the lowest free
/// slot at the moment it creates it, in command-line order (`hw/pci/pci.c`
/// `do_pci_register_device`), and with `-nodefaults` only 00.0 (MCH) and 1f.x (ICH9) are
/// taken; a device with its own slot (an expander) takes that one, and QEMU refuses it if an
/// earlier device already took it.
pub fn root_bus_slots(vm: &Vm) -> Result<Vec<(u8, RootBusFunction)>, LayoutError> {
    Ok(slots_by_device(&vm.devices)?
        .into_iter()
        .flatten()
        .collect())
}

/// The root-bus slot of `devices[index]` by the same rule as [`root_bus_slots`]; `None` for an
/// index past the end, a device with no slot of its own (a `-cdrom`) or a layout QEMU refuses.
pub fn root_bus_slot(devices: &[Device], index: usize) -> Option<u8> {
    let (slot, _) = slots_by_device(devices).ok()?.into_iter().nth(index)??;
    Some(slot)
}

/// [`root_bus_slots`]' rule, one entry per device (`None` for one off the root bus).
fn slots_by_device(devices: &[Device]) -> Result<Vec<Option<(u8, RootBusFunction)>>, LayoutError> {
    let mut taken = [false; LAST_FREE_SLOT as usize + 1];
    taken[0] = true;
    let mut slots = Vec::new();
    for device in devices {
        let Some(function) = root_bus_function(device) else {
            slots.push(None);
            continue;
        };
        let slot = match device {
            Device::PcieExpander { slot, .. } => {
                if taken.get(*slot as usize) != Some(&false) {
                    return Err(LayoutError::SlotTaken { slot: *slot });
                }
                *slot
            }
            _ => match taken.iter().position(|t| !t) {
                Some(free) => free as u8,
                None => {
                    return Err(LayoutError::TooManyDevices {
                        count: devices.iter().filter_map(root_bus_function).count(),
                    })
                }
            },
        };
        taken[slot as usize] = true;
        slots.push(Some((slot, function)));
    }
    Ok(slots)
}

/// Every 64-bit resource OVMF assigns on the root bus of `vm`, in address order.
pub fn mem64_layout(
    vm: &Vm,
    cpu: GuestCpu,
    pcd_mmio64_size: u64,
    rule: Mmio64Rule,
) -> Result<Vec<Mem64Assignment>, LayoutError> {
    let hole64_size = vm
        .machine
        .pci_hole64_size
        .unwrap_or(Q35_HOLE64_SIZE_DEFAULT);
    let aperture = mmio64_aperture(vm.memory, hole64_size, cpu, pcd_mmio64_size, rule)?;
    let hotplug_padding = (aperture.size > HOTPLUG_PREF_PADDING_THRESHOLD)
        .then(|| (aperture.size >> 8).next_power_of_two());
    let mut requests: Vec<Mem64Assignment> = Vec::new();
    for (slot, function) in root_bus_slots(vm)? {
        let (kind, size) = match function {
            RootBusFunction::Virtio => (
                Mem64Kind::Bar {
                    index: VIRTIO_MODERN_BAR,
                },
                VIRTIO_MODERN_BAR_SIZE,
            ),
            RootBusFunction::PcieRootPort => match hotplug_padding {
                Some(size) => (Mem64Kind::PrefetchableWindow, size),
                None => continue,
            },
            RootBusFunction::PcieExpander => continue,
        };
        requests.push(Mem64Assignment {
            slot,
            kind,
            address: 0,
            size,
        });
    }
    // Every request is a power of two aligned to its size: a stable sort, largest first.
    requests.sort_by_key(|r| std::cmp::Reverse(r.size));
    let Some(largest) = requests.first().map(|r| r.size) else {
        return Ok(requests);
    };
    let mut next = align_up(aperture.base, largest);
    for request in &mut requests {
        request.address = align_up(next, request.size);
        next = request.address + request.size;
    }
    if next > aperture.base + aperture.size {
        return Err(LayoutError::ApertureFull {
            needed: next - aperture.base,
            base: aperture.base,
            size: aperture.size,
        });
    }
    Ok(requests)
}

/// `hw/pci-host/q35.c` `Q35_PCI_HOST_HOLE64_SIZE_DEFAULT`.
pub const Q35_HOLE64_SIZE_DEFAULT: u64 = 1 << 35;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::Boot;

    const PCD_MMIO64_SIZE: u64 = 0x8_0000_0000;

    #[test]
    fn root_bus_slots_follow_device_order_and_skip_the_cdrom() {
        let disk = Device::readonly_raw_disk("esp", "/esp.raw");
        let cdrom = Device::Cdrom {
            file: "/x.iso".into(),
        };
        let net = net("net0");
        // The real UKI boots put the ESP first and OVMF logged Pci(0x1,0x0) for it.
        assert_eq!(root_bus_slot(&[disk.clone(), net.clone()], 0), Some(1));
        assert_eq!(root_bus_slot(&[net.clone(), disk.clone()], 1), Some(2));
        let devices = [cdrom, net, disk];
        assert_eq!(root_bus_slot(&devices, 2), Some(2));
        assert_eq!(root_bus_slot(&devices, 0), None);
        assert_eq!(root_bus_slot(&devices, 3), None);
        // The same slots as the layout's.
        let slots: Vec<u8> = root_bus_slots(&vm(1 << 30, devices.to_vec()))
            .unwrap()
            .into_iter()
            .map(|(slot, _)| slot)
            .collect();
        assert_eq!(slots, [1, 2]);
    }

    fn vm(memory: u64, devices: Vec<Device>) -> Vm {
        let mut vm = Vm::new("/fw.fd", 1, memory, Boot::Disk);
        vm.devices = devices;
        vm
    }

    fn net(id: &str) -> Device {
        Device::Net {
            id: id.into(),
            mac: None,
        }
    }

    fn bar4(slot: u8, address: u64) -> Mem64Assignment {
        Mem64Assignment {
            slot,
            kind: Mem64Kind::Bar { index: 4 },
            address,
            size: 0x4000,
        }
    }

    // Expected addresses: BAR 4 / window addresses that QEMU 7.2 `info pci` showed after the
    // real OVMF builds booted these VMs under TCG (module doc), and the DSDT QWordMemory
    // minimum of the tables those guests read (0xE000000000 for nic-1/disk-1/virtfs/
    // dstack-like on 2022.11, 0xC000000000 for ovmf2025-nic-2/-dstack-like).

    #[test]
    fn ovmf_2022_11_one_nic_at_the_dynamic_window() {
        let layout = mem64_layout(
            &vm(1 << 30, vec![net("n0")]),
            GuestCpu::QEMU64_TCG,
            PCD_MMIO64_SIZE,
            Mmio64Rule::DynamicWindow,
        )
        .expect("layout");
        assert_eq!(layout, [bar4(1, 0xe0_0000_0000)]);
    }

    #[test]
    fn ovmf_2025_02_moves_the_window_below_the_hypertransport_hole() {
        let devices = vec![
            Device::readonly_raw_disk("hd1", "/d.img"),
            net("n0"),
            Device::Share(crate::vm::Share {
                id: "virtfs0".into(),
                path: "/s".into(),
                mount_tag: "host-shared".into(),
                readonly: true,
                security_model: "mapped".into(),
            }),
        ];
        let layout = mem64_layout(
            &vm(4 << 30, devices),
            GuestCpu::QEMU64_TCG,
            PCD_MMIO64_SIZE,
            Mmio64Rule::DynamicWindowBelowE820Conflicts,
        )
        .expect("layout");
        assert_eq!(
            layout,
            [
                bar4(1, 0xc0_0000_0000),
                bar4(2, 0xc0_0000_4000),
                bar4(3, 0xc0_0000_8000)
            ]
        );
    }

    /// `info pci` on QEMU 7.2 with dstack's expander after three virtio functions: the
    /// expander at device 16, the others at 1, 2, 3, and one added after it at 4.
    #[test]
    fn an_expander_keeps_its_own_slot_and_the_others_fill_from_the_lowest() {
        let expander = crate::vm::dstack_hugepages_expander();
        let mut vm = vm(
            2 << 30,
            vec![
                net("net0"),
                net("net1"),
                net("net2"),
                expander.clone(),
                net("net3"),
            ],
        );
        assert_eq!(
            root_bus_slots(&vm).unwrap(),
            [
                (1, RootBusFunction::Virtio),
                (2, RootBusFunction::Virtio),
                (3, RootBusFunction::Virtio),
                (0x10, RootBusFunction::PcieExpander),
                (4, RootBusFunction::Virtio),
            ]
        );
        // No 64-bit resource for the expander.
        let layout = mem64_layout(
            &vm,
            GuestCpu::QEMU64_TCG,
            PCD_MMIO64_SIZE,
            Mmio64Rule::DynamicWindow,
        )
        .unwrap();
        assert_eq!(
            layout.iter().map(|a| a.slot).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        // Fifteen functions before it take slots 1..=0xf and 0x10: QEMU refuses the expander.
        vm.devices = (0..16).map(|i| net(&format!("net{i}"))).collect();
        vm.devices.push(expander);
        assert!(matches!(
            root_bus_slots(&vm),
            Err(LayoutError::SlotTaken { slot: 0x10 })
        ));
    }

    #[test]
    fn root_port_padding_windows_come_first() {
        // The DSDT these layouts give in the oracle equals, but for the checksum the
        // table-loader fills in, the DSDT OVMF installed in the real guest's memory.
        let devices = vec![
            Device::readonly_raw_disk("hd1", "/d.img"),
            Device::PcieRootPort { chassis: 1 },
            Device::PcieRootPort { chassis: 2 },
            net("n0"),
        ];
        let window = |slot, address| Mem64Assignment {
            slot,
            kind: Mem64Kind::PrefetchableWindow,
            address,
            size: 512 << 20,
        };
        for (rule, base) in [
            (Mmio64Rule::DynamicWindow, 0xe0_0000_0000),
            (Mmio64Rule::DynamicWindowBelowE820Conflicts, 0xc0_0000_0000),
        ] {
            let layout = mem64_layout(
                &vm(1 << 30, devices.clone()),
                GuestCpu::QEMU64_TCG,
                PCD_MMIO64_SIZE,
                rule,
            )
            .expect("layout");
            assert_eq!(
                layout,
                [
                    window(2, base),
                    window(3, base + 0x2000_0000),
                    bar4(1, base + 0x4000_0000),
                    bar4(4, base + 0x4000_4000)
                ],
                "{rule:?}"
            );
        }
    }

    #[test]
    fn untrusted_phys_bits_keep_the_classic_window() {
        // 6 GiB of RAM → 2 GiB above 4 GiB, ends at 6 GiB; the 32 GiB window is naturally
        // aligned to 32 GiB (MemDetect.c), and 40 bits on Intel are not trusted.
        let cpu = GuestCpu {
            amd: false,
            phys_bits: 40,
            page_1g: true,
        };
        let aperture = mmio64_aperture(
            6 << 30,
            Q35_HOLE64_SIZE_DEFAULT,
            cpu,
            PCD_MMIO64_SIZE,
            Mmio64Rule::DynamicWindowBelowE820Conflicts,
        )
        .expect("aperture");
        assert_eq!(
            aperture,
            Aperture {
                base: 0x8_0000_0000,
                size: 0x8_0000_0000
            }
        );
    }

    #[test]
    fn q35_splits_ram_at_2g_from_2_75g() {
        assert_eq!(q35_ram_split(0xafff_f000), (0xafff_f000, 0));
        assert_eq!(q35_ram_split(4 << 30), (2 << 30, 2 << 30));
    }

    /// `pc_max_used_gpa` against `AMD_HT_START` (hw/i386/pc.c): a 2 GiB VM (no RAM above
    /// 4 GiB) relocates from a hole of 1012 GiB + 1 byte on; an Intel CPU never does.
    #[test]
    fn large_holes_move_ram_above_4g_to_1tib_on_amd_only() {
        let amd = GuestCpu {
            phys_bits: 46,
            ..GuestCpu::QEMU64_TCG
        };
        let below_ht = AMD_HT_START - (4 << 30);
        assert_eq!(q35_above_4g_start(2 << 30, below_ht, amd), 1 << 32);
        assert_eq!(q35_above_4g_start(2 << 30, below_ht + 1, amd), 1 << 40);
        assert_eq!(q35_above_4g_start(2 << 30, 16 << 40, amd), 1 << 40);
        let intel = GuestCpu { amd: false, ..amd };
        assert_eq!(q35_above_4g_start(2 << 30, 16 << 40, intel), 1 << 32);
        // 2 GiB below 4 GiB only: the E820 is the same either way, and the aperture is OVMF's
        // 40-bit dynamic window (qemu64 has no 1 GiB pages).
        assert_eq!(q35_e820(2 << 30, 16 << 40, amd), q35_e820(2 << 30, 0, amd));
        let aperture = mmio64_aperture(
            2 << 30,
            16 << 40,
            amd,
            PCD_MMIO64_SIZE,
            Mmio64Rule::DynamicWindow,
        )
        .expect("aperture");
        assert_eq!(aperture.base, 0xe0_0000_0000);
        // RAM above 4 GiB moved to 1 TiB is refused, not guessed.
        assert_eq!(
            mmio64_aperture(
                4 << 30,
                16 << 40,
                amd,
                PCD_MMIO64_SIZE,
                Mmio64Rule::DynamicWindow
            ),
            Err(LayoutError::RamRelocatedAbove1Tib {
                above: 2 << 30,
                hole64_size: 16 << 40
            })
        );
    }
}
