//! The dstack-mr adapter (`--predictor dstack-mr=PATH`): the VM as the flags and image folder
//! of `dstack-mr measure --json` (Dstack-TEE/dstack `dstack/dstack-mr/cli`), and which
//! registers dstack-mr cannot model for it.

use super::contract::registers_from_json;
use super::exec::run_capture;
use super::{absolute, Prediction, PredictorError};
use crate::resolve::Resolved;
use measure::tdvf::PageOrder;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A dstack-mr invocation for one VM: its image folder and argv.
#[derive(Debug, PartialEq, Eq)]
pub struct DstackMrPlan {
    pub image_dir: PathBuf,
    /// `metadata.json` (dstack-types `ImageInfo`).
    pub metadata: Value,
    /// (name in the image folder, target).
    pub links: Vec<(&'static str, PathBuf)>,
    pub argv: Vec<String>,
    /// Registers dstack-mr computes for a different VM than this one, and why.
    pub unsupported: Vec<(&'static str, String)>,
}

impl DstackMrPlan {
    pub(super) fn write_image(&self) -> Result<(), PredictorError> {
        let dir = &self.image_dir;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(PredictorError::io(dir))?;
        for (name, target) in &self.links {
            let link = dir.join(name);
            std::os::unix::fs::symlink(absolute(target), &link)
                .map_err(PredictorError::io(&link))?;
        }
        let path = dir.join("metadata.json");
        let text = serde_json::to_string_pretty(&self.metadata).expect("metadata serializes");
        std::fs::write(&path, text).map_err(PredictorError::io(&path))
    }
}

/// Run dstack-mr at `path` on the VM of `resolved` (`oracle`: its fw_cfg dump).
pub(super) async fn predict(
    path: &Path,
    resolved: &Resolved,
    oracle: &BTreeMap<String, Vec<u8>>,
    order: PageOrder,
    dir: &Path,
) -> Prediction {
    let plan = match dstack_mr_plan(resolved, order, dir) {
        Ok(plan) => plan,
        Err(why) => return Prediction::Unsupported(why),
    };
    if let Err(e) = plan.write_image() {
        return e.into();
    }
    // dstack-mr logs through tracing to stdout; keep stdout for the JSON.
    let mut env = vec![("RUST_LOG".to_string(), "off".to_string())];
    if plan.unsupported.iter().any(|(r, _)| *r == "rtmr0") {
        // RTMR0 is not compared, but dstack-mr computes it before anything else and
        // needs `dstack-acpi-tables` for that. Stand in this VM's own tables (from the
        // oracle), so MRTD/RTMR1/RTMR2, which do not depend on ACPI, still come out.
        match stand_in_acpi_tables(oracle, dir) {
            Ok(path) => env.push(("PATH".into(), path)),
            Err(e) => return e.into(),
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    match run_capture(path, &plan.argv, &env, dir)
        .await
        .and_then(|stdout| registers_from_json(&stdout))
    {
        Ok(registers) => Prediction::Registers {
            registers: Box::new(registers),
            unsupported: plan.unsupported,
        },
        Err(e) => e.into(),
    }
}

/// A `dstack-acpi-tables` that prints `etc/acpi/tables` from `oracle`, first on a `PATH` it
/// returns.
fn stand_in_acpi_tables(
    oracle: &BTreeMap<String, Vec<u8>>,
    dir: &Path,
) -> Result<String, PredictorError> {
    use std::os::unix::fs::PermissionsExt;
    let tables = oracle
        .get("etc/acpi/tables")
        .ok_or(PredictorError::NoAcpiTables)?;
    let bin = absolute(dir).join("stand-in-bin");
    std::fs::create_dir_all(&bin).map_err(PredictorError::io(&bin))?;
    let blob = bin.join("etc-acpi-tables.bin");
    std::fs::write(&blob, tables).map_err(PredictorError::io(&blob))?;
    let script = bin.join("dstack-acpi-tables");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec cat '{}'\n", blob.display()),
    )
    .and_then(|()| std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)))
    .map_err(PredictorError::io(&script))?;
    let path = std::env::var("PATH").unwrap_or_default();
    Ok(format!("{}:{path}", bin.display()))
}

/// The VM as dstack-mr's flags: `Err` when dstack-mr cannot express it at all.
pub fn dstack_mr_plan(
    resolved: &Resolved,
    order: PageOrder,
    dir: &Path,
) -> Result<DstackMrPlan, String> {
    let vm = &resolved.vm;
    let qemu::vm::Boot::Kernel {
        kernel,
        initrd,
        cmdline,
    } = &vm.boot
    else {
        return Err(match resolved.grub {
            Some(_) => {
                "dstack-mr models -kernel direct boot only, this VM boots shim + GRUB from a disk"
            }
            None => "dstack-mr models -kernel direct boot only, this VM boots a UKI",
        }
        .into());
    };
    let initrd = initrd
        .as_ref()
        .ok_or("dstack-mr needs an initrd (it measures one into RTMR2)")?;
    if vm.tpm {
        return Err("dstack-mr does not model a TPM device (`swtpm` is unsupported there)".into());
    }
    let cmdline = resolved
        .scenario
        .predict
        .cmdline
        .clone()
        .unwrap_or_else(|| cmdline.clone());
    // dstack-mr appends " initrd=initrd" itself, as OVMF's -kernel loader does.
    let metadata = json!({
        "cmdline": cmdline,
        "kernel": "bzImage",
        "initrd": "initramfs.cpio",
        "bios": "ovmf.fd",
    });
    let links = vec![
        ("ovmf.fd", vm.firmware.clone()),
        ("bzImage", kernel.clone()),
        ("initramfs.cpio", initrd.clone()),
    ];
    let shape = dstack_shape(vm);
    let (acpi_problems, qemu_version) = acpi_problems(resolved, shape.as_ref().err());
    let unsupported = if acpi_problems.is_empty() {
        Vec::new()
    } else {
        vec![("rtmr0", acpi_problems.join("; "))]
    };
    let argv = argv(vm, order, shape.unwrap_or_default(), qemu_version, dir);
    Ok(DstackMrPlan {
        image_dir: dir.join("image"),
        metadata,
        links,
        argv,
        unsupported,
    })
}

/// Why dstack-mr's VM has other ACPI tables (so another RTMR0) than this one, and the QEMU
/// version to give dstack-mr when it models this VM's.
fn acpi_problems(
    resolved: &Resolved,
    shape_problem: Option<&String>,
) -> (Vec<String>, Option<String>) {
    let vm = &resolved.vm;
    let mut acpi_problems: Vec<String> = shape_problem.into_iter().cloned().collect();
    if vm.machine.hpet != Some(false) {
        acpi_problems.push("dstack-mr's VM has hpet=off, this one has the HPET".to_string());
    }
    if !vm.serial {
        acpi_problems.push("dstack-mr's VM has a serial port, this one has none".to_string());
    }
    // Which QEMU versions dstack-mr models: quirk row qemu-8-tdx-builds.
    let qemu_version = match resolved.qemu_version {
        Some(v) if resolved.quirks.qemu_has_tdx_builds => Some(format!("{}.{}.0", v.0, v.1)),
        Some(v) => {
            acpi_problems.push(format!(
                "dstack-mr models the ACPI of QEMU >= 8.0 (TDX), this VM's QEMU is {v}"
            ));
            None
        }
        None => {
            acpi_problems.push("this VM's QEMU version is unknown".to_string());
            None
        }
    };
    (acpi_problems, qemu_version)
}

/// `dstack-mr measure --json … metadata.json` for this VM.
fn argv(
    vm: &qemu::vm::Vm,
    order: PageOrder,
    shape: DstackShape,
    qemu_version: Option<String>,
    dir: &Path,
) -> Vec<String> {
    let m = &vm.machine;
    let flag = |b: bool| if b { "true" } else { "false" }.to_string();
    let mut argv: Vec<String> = vec![
        "measure".into(),
        "--json".into(),
        "--cpu".into(),
        vm.cpus.to_string(),
        "--memory".into(),
        vm.memory.to_string(),
        "--two-pass-add-pages".into(),
        flag(order == PageOrder::TwoPass),
        // QEMU's own default when the VM leaves it unset: the i8259 PIC is on (what the
        // fw_cfg oracle of this VM served).
        "--pic".into(),
        flag(m.pic.unwrap_or(true)),
        // QEMU refuses SMM for a TD (tdx-guest turns `smm=auto` off).
        "--smm".into(),
        flag(m.smm.unwrap_or(false)),
        "--hotplug-off".into(),
        flag(m.acpi_pci_hotplug_with_bridge_support == Some(false)),
        "--num-nics".into(),
        shape.nics.to_string(),
        "--num-verity-volumes".into(),
        shape.verity_volumes.to_string(),
        "--root-verity".into(),
        flag(shape.root_verity),
    ];
    if let Some(size) = m.pci_hole64_size {
        argv.extend(["--pci-hole64-size".into(), size.to_string()]);
    }
    // A flag (clap `bool`): NUMA node 0 from a memory-backend-file, as `qemu::vm::NumaMemory`.
    if m.numa.is_some() {
        argv.push("--hugepages".into());
    }
    if let Some(v) = qemu_version {
        argv.extend(["--qemu-version".into(), v]);
    }
    argv.push(
        absolute(dir)
            .join("image/metadata.json")
            .display()
            .to_string(),
    );
    argv
}

/// The parameters of dstack-mr's device layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DstackShape {
    pub nics: usize,
    pub verity_volumes: usize,
    /// The rootfs is a virtio-blk verity disk (`hd0`), not a `-cdrom`.
    pub root_verity: bool,
}

/// Match the VM's PCI devices against dstack-mr's layout (`acpi.rs`): virtio-blk `hd1`, N
/// virtio-blk verity volumes, N virtio-net, vhost-vsock, 9p `host-shared`, then the rootfs
/// (virtio-blk `hd0`, or a `-cdrom`, which takes no PCI slot). dstack-vmm puts `hd0` first
/// instead (`qemu::vm::DstackLayout`); identical virtio-blk functions make both orders give
/// the same slots per device class, so both are accepted. dstack-mr's CLI cannot express a
/// disk host share, PCIe root ports without GPUs, or a TPM.
pub fn dstack_shape(vm: &qemu::vm::Vm) -> Result<DstackShape, String> {
    use qemu::vm::Device;
    let cdrom = vm
        .devices
        .iter()
        .filter(|d| matches!(d, Device::Cdrom { .. }))
        .count();
    if cdrom > 1 {
        return Err(format!(
            "dstack-mr's VM has at most one cdrom, this one has {cdrom}"
        ));
    }
    let kinds: Vec<char> = vm
        .devices
        .iter()
        .filter_map(|d| match d {
            Device::Disk(_) => Some('b'),
            Device::Net { .. } => Some('n'),
            Device::Vsock { .. } => Some('v'),
            Device::Share(_) => Some('s'),
            Device::PcieRootPort { .. } => Some('r'),
            // dstack-mr adds its expander only with GPUs (`acpi.rs` `create_tables`).
            Device::PcieExpander { .. } => Some('x'),
            Device::Cdrom { .. } => None,
        })
        .collect();
    let text: String = kinds.iter().collect();
    let describe = || {
        let these = if kinds.is_empty() {
            "none".to_string()
        } else {
            format!(
                "[{}]",
                kinds
                    .iter()
                    .map(|k| match k {
                        'b' => "blk",
                        'n' => "net",
                        'v' => "vsock",
                        's' => "9p",
                        'x' => "pxb-pcie",
                        _ => "root-port",
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        format!(
            "dstack-mr's VM has PCI devices blk, blk×volumes, net×N, vsock, 9p[, blk rootfs]; \
             this one has {these}"
        )
    };
    let blks = text.chars().take_while(|&c| c == 'b').count();
    let rest = &text[blks..];
    let nics = rest.chars().take_while(|&c| c == 'n').count();
    let tail = &rest[nics..];
    let root_verity = cdrom == 0;
    // Blk disks before the NICs: hd1 and the volumes, plus hd0 when it comes first.
    let leading_root = match tail {
        "vs" => root_verity,
        "vsb" if root_verity => false,
        _ => return Err(describe()),
    };
    let before_volumes = 1 + usize::from(leading_root);
    if blks < before_volumes {
        return Err(describe());
    }
    Ok(DstackShape {
        nics,
        verity_volumes: blks - before_volumes,
        root_verity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use qemu::vm::{Boot, Device, Share, Vm};

    fn blk(id: &str) -> Device {
        Device::readonly_raw_disk(id, "/d")
    }

    fn net(i: usize) -> Device {
        Device::Net {
            id: format!("net{i}"),
            mac: None,
        }
    }

    fn share() -> Device {
        Device::Share(Share {
            id: "virtfs0".into(),
            path: "/s".into(),
            mount_tag: "host-shared".into(),
            readonly: true,
            security_model: "none".into(),
        })
    }

    fn vm(devices: Vec<Device>) -> Vm {
        let mut vm = Vm::new("/fw", 1, 1 << 30, Boot::Disk);
        vm.devices = devices;
        vm
    }

    #[test]
    fn dstack_shapes_are_recognised_in_both_orders() {
        let vsock = Device::Vsock { guest_cid: 3 };
        // dstack-vmm order: hd0, hd1, vol0, net0, net1, vsock, 9p.
        let vmm = vm(vec![
            blk("hd0"),
            blk("hd1"),
            blk("vol0"),
            net(0),
            net(1),
            vsock.clone(),
            share(),
        ]);
        let want = DstackShape {
            nics: 2,
            verity_volumes: 1,
            root_verity: true,
        };
        assert_eq!(dstack_shape(&vmm), Ok(want));
        // dstack-mr's own order: hd1, vol0, net0, net1, vsock, 9p, hd0.
        let mr = vm(vec![
            blk("hd1"),
            blk("vol0"),
            net(0),
            net(1),
            vsock.clone(),
            share(),
            blk("hd0"),
        ]);
        assert_eq!(dstack_shape(&mr), Ok(want));
        // An ISO rootfs: cdrom, hd1, net0, vsock, 9p.
        let iso = vm(vec![
            Device::Cdrom { file: "/i".into() },
            blk("hd1"),
            net(0),
            vsock.clone(),
            share(),
        ]);
        assert_eq!(
            dstack_shape(&iso),
            Ok(DstackShape {
                nics: 1,
                verity_volumes: 0,
                root_verity: false
            })
        );
    }

    #[test]
    fn other_device_lists_are_not_dstack_shapes() {
        // The repo's dstack-like scenario (no vsock on this kind of host) and a bare VM.
        let like = vm(vec![blk("disk0"), net(1), share()]);
        let why = dstack_shape(&like).unwrap_err();
        assert!(why.contains("[blk, net, 9p]"), "{why}");
        assert!(dstack_shape(&vm(vec![])).is_err());
        // Root ports alone (no GPU) have no dstack-mr flag.
        let ports = vm(vec![
            blk("hd0"),
            blk("hd1"),
            net(0),
            Device::Vsock { guest_cid: 3 },
            share(),
            Device::PcieRootPort { chassis: 1 },
        ]);
        assert!(dstack_shape(&ports).is_err());
        // A disk host share (hd2) is not expressible through `dstack-mr measure`.
        let hd2 = vm(vec![
            blk("hd0"),
            blk("hd1"),
            net(0),
            Device::Vsock { guest_cid: 3 },
            blk("hd2"),
        ]);
        assert!(dstack_shape(&hd2).is_err());
        // dstack-vmm's hugepages expander without GPUs: dstack-mr adds one only with GPUs.
        let hugepages = vm(vec![
            blk("hd0"),
            blk("hd1"),
            net(0),
            Device::Vsock { guest_cid: 3 },
            share(),
            qemu::vm::dstack_hugepages_expander(),
        ]);
        let why = dstack_shape(&hugepages).unwrap_err();
        assert!(
            why.contains("[blk, blk, net, vsock, 9p, pxb-pcie]"),
            "{why}"
        );
    }
}
