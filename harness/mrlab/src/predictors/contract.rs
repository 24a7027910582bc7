//! The predictor contract (`contract: 1`): what the harness gives a predictor and what it must
//! print.
//!
//! A predictor predicts a TD's MRTD and RTMR0–2 (RTMR3 optional) for one VM.
//!
//! - **Command** (`--predictor NAME=COMMAND`): the harness writes `inputs.json` (below) into
//!   `<results>/<scenario>/predictors/<NAME>/` and runs `sh -c 'COMMAND "$@"' NAME
//!   <that inputs.json>`, i.e. COMMAND with the path appended as its last argument, in its own
//!   process group, with a time limit of [`TIMEOUT`](super::exec::TIMEOUT). Exit status 0 and stdout one JSON object
//!   `{"mrtd": H, "rtmr0": H, "rtmr1": H, "rtmr2": H}` (each `H` 96 hex digits, the SHA-384
//!   register value; `"rtmr3"` optional; other keys ignored) is a prediction. Anything else (a
//!   non-zero exit, a bad document, the time limit) is an error naming the predictor.
//! - **dstack-mr** (`--predictor dstack-mr=PATH`): an adapter for `dstack-mr measure --json`
//!   (Dstack-TEE/dstack `dstack/dstack-mr/cli`). It writes the image folder dstack-mr reads
//!   (`metadata.json` naming `ovmf.fd`, `bzImage`, `initramfs.cpio`, symlinks to the VM's files)
//!   and maps the VM onto its flags. dstack-mr models one VM shape only, so:
//!   - a VM it cannot express at all (UKI or shim + GRUB boot, no initrd) makes the whole result
//!     `unsupported: <reason>`;
//!   - a VM whose ACPI it cannot express (device list other than dstack's, HPET on, QEMU older
//!     than 8.0, no serial port) keeps MRTD/RTMR1/RTMR2 and marks RTMR0 `unsupported`.
//!
//!   dstack-mr itself runs `dstack-acpi-tables` (dstack's QEMU build) from `PATH` for RTMR0; a
//!   host without it gets dstack-mr's own error.
//!
//! `inputs.json` (`"contract": 1`): `scenario`; `boot` (`kernel`, `uki` or `grub`); absolute paths
//! `firmware`, `kernel`, `initrd` (null when absent), `uki` (`{disk, bootloader, uki}` for a UKI
//! boot, else null), `grub` (for a shim + GRUB boot `{disk, esp, grub_cfg}`: the ESP's files by
//! their path on it, each the absolute path of its source, and grub.cfg's text; else null);
//! `cmdline`, the `-append` value QEMU hands the firmware (OVMF's loader appends
//! ` initrd=initrd` when there is an initrd, as both the builtin prediction and dstack-mr model);
//! `cpus`; `memory` in bytes; `machine` (`smm`, `hpet`, `pic`, `kernel_irqchip`,
//! `pci_hole64_size`, `acpi_pci_hotplug_with_bridge_support`, `phys_bits`; null = QEMU's default;
//! `numa_node0_memory_file`: all RAM and vCPUs in NUMA node 0, from a memory-backend-file); `serial`;
//! `devices` in command-line order, which decides PCI slots and so ACPI (`{kind: virtio-blk, id,
//! file, format, readonly}`, `{kind: virtio-net, id}`, `{kind: vhost-vsock, guest_cid}`, `{kind:
//! virtfs, id, mount_tag}`, `{kind: cdrom, file}`, `{kind: pcie-root-port, chassis}`, `{kind:
//! pxb-pcie, id, slot, numa_node, bus_nr}`); `qemu`
//! (`binary`, `version`, `data_dirs`, `env`); `ovmf_version`; `mrtd_page_order` (`single-pass` or `two-pass`, the
//! reference's order).

use super::exec::run_capture;
use super::{absolute, Prediction, PredictorError};
use crate::resolve::Resolved;
use measure::tdvf::PageOrder;
use measure::{Register, Registers};
use serde_json::{json, Value};
use std::path::Path;

/// Parse the contract's stdout document: each register by its name (`mrtd`, `rtmr0`…), RTMR3
/// optional (unknown when absent).
pub fn registers_from_json(stdout: &[u8]) -> Result<Registers, PredictorError> {
    let doc: serde_json::Map<String, Value> =
        serde_json::from_slice(stdout).map_err(PredictorError::NotJson)?;
    let mut registers = Registers::default();
    for register in Register::ALL {
        let name = register.name();
        let Some(value) = doc.get(name) else {
            if register == Register::Rtmr3 {
                registers = registers.without(register);
                continue;
            }
            return Err(PredictorError::Missing(name.to_string()));
        };
        let text = value.as_str().ok_or_else(|| PredictorError::NotAString {
            name: name.to_string(),
            value: value.to_string(),
        })?;
        let bytes = hex::decode(text).map_err(|source| PredictorError::NotHex {
            name: name.to_string(),
            source,
        })?;
        let len = bytes.len();
        let value = <[u8; 48]>::try_from(bytes).map_err(|_| PredictorError::Length {
            name: name.to_string(),
            len,
        })?;
        registers.set(register, value);
    }
    Ok(registers)
}

/// Run a command predictor: `inputs.json` in `dir`, then `sh -c "COMMAND \"$@\"" NAME
/// inputs.json`, whose stdout is the registers document.
pub(super) async fn predict(
    command: &str,
    name: &str,
    resolved: &Resolved,
    order: PageOrder,
    dir: &Path,
) -> Prediction {
    let inputs = dir.join("inputs.json");
    let doc = inputs_json(resolved, order);
    let text = serde_json::to_string_pretty(&doc).expect("inputs serialize");
    if let Err(e) = std::fs::write(&inputs, text).map_err(PredictorError::io(&inputs)) {
        return e.into();
    }
    let argv = vec![
        "-c".to_string(),
        format!("{command} \"$@\""),
        name.to_string(),
        absolute(&inputs).display().to_string(),
    ];
    match run_capture(Path::new("sh"), &argv, &[], dir)
        .await
        .and_then(|stdout| registers_from_json(&stdout))
    {
        Ok(registers) => Prediction::Registers {
            registers: Box::new(registers),
            unsupported: Vec::new(),
        },
        Err(e) => e.into(),
    }
}

/// The generic contract's `inputs.json` for the TD VM of `resolved`.
pub fn inputs_json(resolved: &Resolved, order: PageOrder) -> Value {
    use qemu::vm::Boot;
    let vm = &resolved.vm;
    let path = |p: &Path| absolute(p).display().to_string();
    let cmdline_override = resolved.scenario.predict.cmdline.clone();
    let (boot, kernel, initrd, cmdline, uki) = match (&vm.boot, &resolved.uki) {
        (
            Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            },
            _,
        ) => (
            "kernel",
            Some(path(kernel)),
            initrd.as_deref().map(path),
            Some(cmdline_override.unwrap_or_else(|| cmdline.clone())),
            Value::Null,
        ),
        (Boot::Disk, uki) => (
            if resolved.grub.is_some() { "grub" } else { "uki" },
            None,
            None,
            cmdline_override,
            uki.as_ref().map_or(Value::Null, |u| {
                json!({"disk": path(&u.disk), "bootloader": path(&u.bootloader), "uki": path(&u.uki)})
            }),
        ),
    };
    json!({
        "contract": 1,
        "scenario": resolved.scenario.name,
        "boot": boot,
        "firmware": path(&vm.firmware),
        "kernel": kernel,
        "initrd": initrd,
        "uki": uki,
        "grub": grub_json(resolved),
        "cmdline": cmdline,
        "cpus": vm.cpus,
        "memory": vm.memory,
        "machine": crate::resolve::machine_json(&vm.machine),
        "serial": vm.serial,
        "devices": devices_json(vm),
        "qemu": qemu_json(resolved),
        "ovmf_version": resolved.ovmf_version.map(|v| v.to_string()),
        "mrtd_page_order": order.name(),
    })
}

/// A shim + GRUB boot's ESP: its files by their path on it, and grub.cfg's text.
fn grub_json(resolved: &Resolved) -> Value {
    let path = |p: &Path| absolute(p).display().to_string();
    resolved.grub.as_ref().map_or(Value::Null, |g| {
        json!({
            "disk": path(&g.disk),
            "esp": {
                "EFI/BOOT/BOOTX64.EFI": path(&g.shim),
                "EFI/BOOT/grubx64.efi": path(&g.grub),
                "vmlinuz": path(&g.kernel),
                "initrd.img": path(&g.initrd),
            },
            "grub_cfg": g.grub_cfg,
        })
    })
}

/// The VM's devices, each with what a predictor needs of it: the shared view plus the files a
/// predictor reads.
fn devices_json(vm: &qemu::vm::Vm) -> Vec<Value> {
    use qemu::vm::Device;
    let path = |p: &Path| absolute(p).display().to_string();
    vm.devices
        .iter()
        .map(|d| {
            let mut json = crate::resolve::device_json(d);
            match d {
                Device::Disk(disk) => json.insert("file".into(), path(&disk.file).into()),
                Device::Cdrom { file } => json.insert("file".into(), path(file).into()),
                _ => None,
            };
            Value::Object(json)
        })
        .collect()
}

/// The QEMU binary: how to start it and its version.
fn qemu_json(resolved: &Resolved) -> Value {
    json!({
        "binary": resolved.qemu_binary.program.display().to_string(),
        // How to start it: a managed QEMU runs through its root's own loader, so `binary`
        // alone may not start on this host. Append QEMU's own arguments to this.
        "command": std::iter::once(resolved.qemu_binary.executable().display().to_string())
            .chain(resolved.qemu_binary.leading_args())
            .collect::<Vec<_>>(),
        // An extracted QEMU runs with these `-L` dirs first and this environment.
        "data_dirs": resolved.qemu_binary.data_dirs.iter()
            .map(|d| d.display().to_string()).collect::<Vec<_>>(),
        "env": resolved.qemu_binary.env.iter()
            .map(|(k, v)| (k.clone(), Value::from(v.display().to_string())))
            .collect::<serde_json::Map<String, Value>>(),
        "version": resolved.qemu_version.map(|v| v.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_output_is_checked() {
        let h = |b: u8| hex::encode([b; 48]);
        let ok = format!(
            r#"{{"mrtd":"{}","rtmr0":"{}","rtmr1":"{}","rtmr2":"{}","extra":1}}"#,
            h(1),
            h(2),
            h(3),
            h(4)
        );
        let regs = registers_from_json(ok.as_bytes()).unwrap();
        assert_eq!(
            (
                regs.get(Register::Mrtd)[0],
                regs.get(Register::Rtmr2)[47],
                regs.known(Register::Rtmr3)
            ),
            (1, 4, None)
        );
        let short = ok.replace(&h(3), "abcd");
        assert_eq!(
            registers_from_json(short.as_bytes())
                .unwrap_err()
                .to_string(),
            "`rtmr1`: 2 bytes, expected 48 (SHA-384)"
        );
        let missing = format!(r#"{{"mrtd":"{}"}}"#, h(1));
        assert!(registers_from_json(missing.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("no `rtmr0`"));
        assert!(registers_from_json(b"MRTD: 00").is_err());
    }
}
