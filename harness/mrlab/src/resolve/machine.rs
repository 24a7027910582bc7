//! The q35 machine options: the scenario's `[machine]` over the defaults (or a preset's), and
//! the one JSON form of them.

use super::ResolveError;
use crate::scenario::Scenario;

/// The scenario's `[machine]` keys, each over what `machine` already holds, for a VM with
/// (`tpm`: vtpm) or without a vTPM.
pub(super) fn apply(
    machine: &mut qemu::Machine,
    scenario: &Scenario,
    tpm: bool,
) -> Result<(), ResolveError> {
    let m = &scenario.machine;
    machine.smm = m.smm.or(machine.smm);
    machine.hpet = m.hpet.or(machine.hpet);
    machine.pic = m.pic.or(machine.pic);
    machine.acpi_pci_hotplug_with_bridge_support = m.acpi_pci_hotplug;
    machine.phys_bits = m.phys_bits;
    let dstack_hugepages = scenario.dstack.as_ref().is_some_and(|d| d.hugepages);
    if m.hugepages || dstack_hugepages {
        machine.numa = Some(qemu::vm::NumaMemory::for_host(tpm));
    }
    if let Some(size) = &m.pci_hole64_size {
        let bytes = crate::scenario::parse_size(size)
            .map_err(|e| ResolveError::key(scenario, "machine.pci_hole64_size", e))?;
        machine.pci_hole64_size = Some(bytes);
    }
    Ok(())
}

/// The q35 machine options as both JSON contracts write them: a predictor's `inputs.json` and
/// an fw_cfg snapshot's manifest.
pub fn machine_json(m: &qemu::Machine) -> serde_json::Value {
    serde_json::json!({
        "smm": m.smm,
        "hpet": m.hpet,
        "pic": m.pic,
        "kernel_irqchip": m.kernel_irqchip.map(|k| k.as_str()),
        "pci_hole64_size": m.pci_hole64_size,
        "acpi_pci_hotplug_with_bridge_support": m.acpi_pci_hotplug_with_bridge_support,
        "phys_bits": m.phys_bits,
        "numa_node0_memory_file": m.numa.is_some(),
    })
}
