//! `Vm` → QEMU arguments per backend, and a shell script that re-runs a VM by hand.

use crate::binary::QemuBinary;
use crate::vm::{Boot, Device, Vm, VsockHost};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

/// Which QEMU the TDX command line is for: the flags differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdxFlavour {
    /// Upstream QEMU ≥ 10.1 (`docs/system/i386/tdx.rst`): `tdx-guest` object,
    /// `confidential-guest-support`, split irqchip; memory needs no explicit backend.
    Upstream,
    /// Canonical's QEMU 8.2 (Ubuntu 24.04, canonical/tdx `guest-tools/run_td`): as upstream
    /// plus an explicit `memory-backend-ram` named in `-machine memory-backend=`.
    Canonical82,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Any Linux: the VM plus a swtpm-backed tpm-tis when `Vm::tpm`; a vsock device as
    /// `Vm::vsock_host` says.
    Vtpm { accel: Accel },
    /// A TD on a TDX host; a vsock device is always the kernel's vhost-vsock (a TD's private
    /// memory cannot be shared with a vhost-user daemon).
    Tdx { flavour: TdxFlavour },
    /// The fw_cfg oracle: TCG, paused before the first instruction (`-S`), driven over qtest.
    /// Accelerator-only objects are left out; a vhost-vsock device is replaced by a stand-in
    /// that takes the same PCI slot (see [`oracle_stand_in`]).
    Oracle,
}

/// Where one VM's sockets, logs and state live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> RunDir {
        RunDir { path: path.into() }
    }
    pub fn serial_log(&self) -> PathBuf {
        self.path.join("serial.log")
    }
    pub fn stderr_log(&self) -> PathBuf {
        self.path.join("qemu.stderr")
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.path.join("qmp.sock")
    }
    pub fn qtest_socket(&self) -> PathBuf {
        self.path.join("qtest.sock")
    }
    pub fn swtpm_socket(&self) -> PathBuf {
        self.path.join("swtpm.sock")
    }
    pub fn swtpm_state(&self) -> PathBuf {
        self.path.join("tpm")
    }
    pub fn swtpm_log(&self) -> PathBuf {
        self.path.join("swtpm.log")
    }
    pub fn run_sh(&self) -> PathBuf {
        self.path.join("run.sh")
    }
    /// The vhost-user socket of the `index`th vsock device, served by the daemon.
    pub fn vsock_socket(&self, index: usize) -> PathBuf {
        self.path.join(format!("vhost-user-vsock{index}.sock"))
    }
    /// Where the daemon listens for host-side connections to the `index`th vsock device.
    pub fn vsock_uds(&self, index: usize) -> PathBuf {
        self.path.join(format!("vsock{index}.uds"))
    }
    pub fn vsock_log(&self) -> PathBuf {
        self.path.join("vhost-device-vsock.log")
    }
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// A path as the value of a QEMU `key=value,…` option: QemuOpts reads `,,` as one comma, so a
/// comma in the path cannot end the value and start an option of its own.
fn opt_path(path: &Path) -> String {
    path_str(path).replace(',', ",,")
}

/// `-m` value: MiB when whole, bytes otherwise.
fn memory_arg(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes.is_multiple_of(MIB) {
        format!("{}M", bytes / MIB)
    } else {
        format!("{bytes}B")
    }
}

fn on_off(value: bool) -> &'static str {
    if value {
        "on"
    } else {
        "off"
    }
}

/// The vhost-user daemon serving the VM's vsock devices on `backend`, if one is needed.
pub fn vsock_daemon<'a>(vm: &'a Vm, backend: &Backend) -> Option<&'a Path> {
    match (&vm.vsock_host, backend) {
        (VsockHost::User { daemon }, Backend::Vtpm { .. }) if vm.has_vsock() => Some(daemon),
        _ => None,
    }
}

/// The daemon's arguments: one `--vm` per vsock device, each with its guest CID, the socket
/// QEMU connects to and the host-side Unix socket.
pub fn vsock_daemon_args(vm: &Vm, run: &RunDir) -> Vec<String> {
    let mut args = Vec::new();
    let cids = vm.devices.iter().filter_map(|d| match d {
        Device::Vsock { guest_cid } => Some(*guest_cid),
        _ => None,
    });
    for (index, cid) in cids.enumerate() {
        args.push("--vm".to_string());
        args.push(format!(
            "guest-cid={cid},socket={},uds-path={}",
            path_str(&run.vsock_socket(index)),
            path_str(&run.vsock_uds(index))
        ));
    }
    args
}

/// The oracle cannot open `/dev/vhost-vsock` (absent on most hosts, and needless for fw_cfg)
/// nor reach a vhost-user daemon: a virtio-rng-pci shaped like virtio-vsock takes its slot.
/// Like `vhost-vsock-pci` and `vhost-user-vsock-pci` it is then modern-only (no legacy I/O
/// BAR 0; a transitional virtio-rng-pci has one of 32 bytes) with 3 MSI-X vectors (2 by
/// default): the same BARs, sizes and capabilities, read from QEMU in the test
/// `oracle_stand_in_has_the_shape_of_a_real_virtio_vsock`. Only its identity differs (1af4:1044,
/// class 0x00ff vs 1af4:1053, 0x0780), which QEMU's ACPI builder does not look at for a
/// root-bus endpoint (`build_append_pci_bus_devices`: hotpluggability, bridges, VGA and ISA
/// bridge classes).
pub fn oracle_stand_in() -> &'static str {
    "virtio-rng-pci,disable-legacy=on,vectors=3"
}

/// QEMU arguments (without the binary) for `vm` under `backend`, with sockets and logs in `run`.
///
/// Order: fixed flags, accelerator and CPU, machine and confidential-guest objects, SMP and
/// memory, firmware, globals, boot source, serial, control socket, then `vm.devices` in
/// order, then the TPM (an ISA device: its position decides no PCI slot).
pub fn argv(vm: &Vm, backend: &Backend, run: &RunDir) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);

    match backend {
        Backend::Vtpm { accel: Accel::Tcg } | Backend::Oracle => {
            push(&["-accel", "tcg"]);
            if let Some(bits) = vm.machine.phys_bits {
                push(&["-cpu", &format!("qemu64,phys-bits={bits}")]);
            }
        }
        Backend::Vtpm { accel: Accel::Kvm } => match vm.machine.phys_bits {
            Some(bits) => push(&["-accel", "kvm", "-cpu", &format!("host,phys-bits={bits}")]),
            None => push(&["-accel", "kvm", "-cpu", "host"]),
        },
        // The TDX module fixes a TD's address width (GPAW 48 or 52): `phys_bits` does not apply.
        Backend::Tdx { .. } => push(&["-accel", "kvm", "-cpu", "host"]),
    }
    if *backend == Backend::Oracle {
        push(&["-S"]);
    }

    let mut machine = String::from("q35");
    let m = &vm.machine;
    // A NUMA node names its own memory backend, which QEMU refuses beside
    // `-machine memory-backend=` ("mutually exclusive"): it then stands for the others below.
    let numa = m.numa.as_ref();
    if let Some(smm) = m.smm {
        machine += &format!(",smm={}", on_off(smm));
    }
    if let Some(hpet) = m.hpet {
        machine += &format!(",hpet={}", on_off(hpet));
    }
    if let Some(pic) = m.pic {
        machine += &format!(",pic={}", on_off(pic));
    }
    let irqchip = match backend {
        // A TD needs a split irqchip whatever the Vm says.
        Backend::Tdx { .. } => Some("split"),
        _ => m.kernel_irqchip.map(|k| k.as_str()),
    };
    if let Some(irqchip) = irqchip {
        machine += &format!(",kernel-irqchip={irqchip}");
    }
    if let Backend::Tdx { flavour } = backend {
        machine += ",confidential-guest-support=tdx";
        if *flavour == TdxFlavour::Canonical82 && numa.is_none() {
            machine += ",memory-backend=mem0";
        }
    }
    let vhost_user_vsock = vsock_daemon(vm, backend).is_some();
    if numa.is_none() && (*backend == Backend::Oracle || vhost_user_vsock) {
        // The oracle never runs the guest: map its RAM without reserving it, so a 64 GiB VM can
        // be asked about on a smaller host. A vhost-user daemon maps guest RAM itself, so it
        // must be a shared file. Neither changes fw_cfg content: without a NUMA node QEMU
        // builds no SRAT.
        machine += ",memory-backend=mem0";
    }
    push(&["-machine", &machine]);
    if let Some(numa) = numa {
        // The oracle maps the node's RAM without reserving it, as below: the backend's kind
        // is invisible to fw_cfg (SRAT gives the node's ranges, not how the host backs them).
        let ram = if *backend == Backend::Oracle {
            format!(
                "memory-backend-ram,id=mem0,size={},reserve=off",
                memory_arg(vm.memory)
            )
        } else {
            format!(
                "memory-backend-file,id=mem0,size={},mem-path={},share=on,prealloc=off",
                memory_arg(vm.memory),
                opt_path(&numa.mem_path)
            )
        };
        let cpus = vm.cpus.max(1);
        let node = format!("node,nodeid=0,cpus=0-{},memdev=mem0", cpus - 1);
        push(&["-object", &ram, "-numa", &node]);
    } else if *backend == Backend::Oracle {
        let ram = format!(
            "memory-backend-ram,id=mem0,size={},reserve=off",
            memory_arg(vm.memory)
        );
        push(&["-object", &ram]);
    } else if vhost_user_vsock {
        let ram = format!(
            "memory-backend-memfd,id=mem0,size={},share=on",
            memory_arg(vm.memory)
        );
        push(&["-object", &ram]);
    }
    if let Backend::Tdx { flavour } = backend {
        push(&["-object", "tdx-guest,id=tdx"]);
        if *flavour == TdxFlavour::Canonical82 && numa.is_none() {
            let backend = format!("memory-backend-ram,id=mem0,size={}", memory_arg(vm.memory));
            push(&["-object", &backend]);
        }
    }

    push(&["-smp", &vm.cpus.to_string(), "-m", &memory_arg(vm.memory)]);
    push(&["-bios", &path_str(&vm.firmware)]);
    if let Some(support) = m.acpi_pci_hotplug_with_bridge_support {
        let global = format!(
            "ICH9-LPC.acpi-pci-hotplug-with-bridge-support={}",
            on_off(support)
        );
        push(&["-global", &global]);
    }
    if let Some(size) = m.pci_hole64_size {
        push(&[
            "-global",
            &format!("q35-pcihost.pci-hole64-size=0x{size:x}"),
        ]);
    }

    if let Boot::Kernel {
        kernel,
        initrd,
        cmdline,
    } = &vm.boot
    {
        push(&["-kernel", &path_str(kernel)]);
        if let Some(initrd) = initrd {
            push(&["-initrd", &path_str(initrd)]);
        }
        push(&["-append", cmdline]);
    }

    if vm.serial {
        let chardev = format!("file,id=serial0,path={}", opt_path(&run.serial_log()));
        push(&["-chardev", &chardev, "-serial", "chardev:serial0"]);
    }
    match backend {
        Backend::Oracle => {
            // libqtest's arrangement: the harness listens, QEMU connects as a client.
            let qtest = format!("unix:{}", opt_path(&run.qtest_socket()));
            // Without `-qtest-log`, QEMU copies every command and reply to stderr (`qtest_server_init`,
            // softmmu/qtest.c, system/qtest.c since 8.2): megabytes of base64 per kernel written to the oracle's log.
            push(&["-qtest", &qtest, "-qtest-log", "none"]);
        }
        _ => {
            let qmp = format!("unix:{},server=on,wait=off", opt_path(&run.qmp_socket()));
            push(&["-qmp", &qmp]);
        }
    }

    let mut vsock_index = 0;
    for device in &vm.devices {
        if let (Device::Vsock { .. }, true) = (device, vhost_user_vsock) {
            let chardev = format!(
                "socket,id=vsock{vsock_index},path={}",
                path_str(&run.vsock_socket(vsock_index))
            );
            let dev = format!("vhost-user-vsock-pci,chardev=vsock{vsock_index}");
            push(&["-chardev", &chardev, "-device", &dev]);
            vsock_index += 1;
        } else {
            device_args(device, backend, &mut push);
        }
    }

    if vm.tpm {
        let chardev = format!("socket,id=chrtpm,path={}", opt_path(&run.swtpm_socket()));
        push(&["-chardev", &chardev]);
        push(&["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"]);
        push(&["-device", "tpm-tis,tpmdev=tpm0"]);
    }
    args
}

fn device_args(device: &Device, backend: &Backend, push: &mut impl FnMut(&[&str])) {
    match device {
        Device::Disk(disk) => {
            let mut drive = format!(
                "file={},if=none,id={},format={}",
                opt_path(&disk.file),
                disk.id,
                disk.format.as_str()
            );
            if disk.readonly {
                drive += ",readonly=on";
            }
            let mut dev = format!("virtio-blk-pci,drive={}", disk.id);
            if let Some(serial) = &disk.serial {
                dev += &format!(",serial={serial}");
            }
            push(&["-drive", &drive, "-device", &dev]);
        }
        Device::Net { id, mac } => {
            let mut dev = format!("virtio-net-pci,netdev={id}");
            if let Some(mac) = mac {
                dev += &format!(",mac={mac}");
            }
            push(&["-netdev", &format!("user,id={id}"), "-device", &dev]);
        }
        Device::Vsock { guest_cid } => {
            if *backend == Backend::Oracle {
                push(&["-device", oracle_stand_in()]);
            } else {
                push(&["-device", &format!("vhost-vsock-pci,guest-cid={guest_cid}")]);
            }
        }
        Device::Share(share) => {
            let virtfs = format!(
                "local,path={},mount_tag={},readonly={},security_model={},id={}",
                opt_path(&share.path),
                share.mount_tag,
                on_off(share.readonly),
                share.security_model,
                share.id
            );
            push(&["-virtfs", &virtfs]);
        }
        Device::Cdrom { file } => push(&["-cdrom", &path_str(file)]),
        Device::PcieRootPort { chassis } => {
            let dev = format!("pcie-root-port,id=pci.{chassis},bus=pcie.0,chassis={chassis}");
            push(&["-device", &dev]);
        }
        Device::PcieExpander {
            id,
            slot,
            numa_node,
            bus_nr,
        } => {
            // `addr=` is hex to QEMU; dstack-vmm writes it without `0x` (see
            // `vm::dstack_hugepages_expander`).
            let dev = format!(
                "pxb-pcie,id={id},bus=pcie.0,addr={slot:x},numa_node={numa_node},bus_nr={bus_nr}"
            );
            push(&["-device", &dev]);
        }
    }
}

/// The swtpm invocations the harness uses; `run_sh` writes the same ones. `swtpm_setup` makes
/// the state in `state` (a boot's run dir, or the manufactured state kept for many boots).
pub(crate) fn swtpm_setup_args(state: &Path) -> Vec<String> {
    vec![
        "--tpm2".into(),
        "--tpmstate".into(),
        path_str(state),
        "--pcr-banks".into(),
        "sha256,sha384".into(),
        "--overwrite".into(),
    ]
}

/// No `--flags startup-*`: OVMF's Tcg2Pei sends TPM2_Startup itself, and QEMU's emulator
/// backend sends CMD_INIT over the control channel. `--terminate` ends swtpm when QEMU's
/// connection closes, so a swtpm cannot outlive its VM.
pub(crate) fn swtpm_socket_args(run: &RunDir) -> Vec<String> {
    vec![
        "socket".into(),
        "--tpm2".into(),
        "--tpmstate".into(),
        format!("dir={}", path_str(&run.swtpm_state())),
        "--ctrl".into(),
        format!("type=unixio,path={}", path_str(&run.swtpm_socket())),
        "--log".into(),
        format!("file={}", path_str(&run.swtpm_log())),
        "--terminate".into(),
    ]
}

const RUN_PLACEHOLDER: &str = "\u{0}RUN\u{0}";

/// Quote one argument for `sh`, turning the run-dir placeholder into `${RUN}`.
fn sh_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_=,./:+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        return arg.to_string();
    }
    let pieces: Vec<String> = arg
        .split(RUN_PLACEHOLDER)
        .map(|piece| {
            let mut out = String::new();
            for c in piece.chars() {
                if matches!(c, '"' | '$' | '`' | '\\') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        })
        .collect();
    format!("\"{}\"", pieces.join("${RUN}"))
}

/// A shell script that re-runs the VM by hand: it makes a run dir (`$RUN`, or a fresh temp
/// dir), starts swtpm when the VM has a TPM on the vtpm backend, and runs QEMU with the same
/// arguments as the harness, serial going to `$RUN/serial.log`.
pub fn run_sh(vm: &Vm, backend: &Backend, qemu: &QemuBinary) -> String {
    let run = RunDir::new(RUN_PLACEHOLDER);
    let line = |program: &str, args: &[String]| {
        let mut words = vec![sh_quote(program)];
        words.extend(args.iter().map(|a| sh_quote(a)));
        words.join(" \\\n    ")
    };
    let mut script = String::from(
        "#!/bin/sh\n# Re-runs this VM by hand (written by mrlab). RUN: directory for sockets and logs.\nset -eu\nRUN=\"${RUN:-$(mktemp -d)}\"\necho \"run dir: ${RUN}\" >&2\n",
    );
    if vm.tpm && *backend != Backend::Oracle {
        script += "mkdir -p \"${RUN}/tpm\"\n";
        script += &line("swtpm_setup", &swtpm_setup_args(&run.swtpm_state()));
        script += " >\"${RUN}/swtpm_setup.log\"\n";
        script += &line("swtpm", &swtpm_socket_args(&run));
        script += " &\n";
        script += "while [ ! -S \"${RUN}/swtpm.sock\" ]; do sleep 0.05; done\n";
    }
    if let Some(daemon) = vsock_daemon(vm, backend) {
        // The daemon serves vhost-user vsock; it does not end with QEMU, so the script ends it.
        script += &line(&path_str(daemon), &vsock_daemon_args(vm, &run));
        script += " 2>\"${RUN}/vhost-device-vsock.log\" &\n";
        script += "VSOCK_DAEMON=$!\ntrap 'kill \"$VSOCK_DAEMON\"' EXIT\n";
        for index in 0..vm.vsock_count() {
            script += &format!(
                "while [ ! -S {} ]; do sleep 0.05; done\n",
                sh_quote(&path_str(&run.vsock_socket(index)))
            );
        }
    }
    for (key, value) in &qemu.env {
        script += &format!("export {key}={}\n", sh_quote(&path_str(value)));
    }
    let mut args = qemu.leading_args();
    args.extend(argv(vm, backend, &run));
    script += &line(&path_str(qemu.executable()), &args);
    script += "\n";
    script
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{Disk, DiskFormat, KernelIrqchip, Machine};

    fn kernel_vm() -> Vm {
        let mut vm = Vm::new(
            "/fw/OVMF.fd",
            2,
            2 << 30,
            Boot::Kernel {
                kernel: "/k/vmlinuz".into(),
                initrd: Some("/k/initrd".into()),
                cmdline: "console=ttyS0 panic=-1".into(),
            },
        );
        vm.tpm = true;
        vm.devices.push(Device::Disk(Disk {
            id: "hd1".into(),
            file: "/d/disk.qcow2".into(),
            format: DiskFormat::Qcow2,
            readonly: false,
            serial: Some("data".into()),
        }));
        vm.devices.push(Device::Net {
            id: "net0".into(),
            mac: None,
        });
        vm
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn vtpm_tcg_kernel_boot() {
        let args = argv(
            &kernel_vm(),
            &Backend::Vtpm { accel: Accel::Tcg },
            &RunDir::new("/r"),
        );
        let expected = strings(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-accel",
            "tcg",
            "-machine",
            "q35",
            "-smp",
            "2",
            "-m",
            "2048M",
            "-bios",
            "/fw/OVMF.fd",
            "-kernel",
            "/k/vmlinuz",
            "-initrd",
            "/k/initrd",
            "-append",
            "console=ttyS0 panic=-1",
            "-chardev",
            "file,id=serial0,path=/r/serial.log",
            "-serial",
            "chardev:serial0",
            "-qmp",
            "unix:/r/qmp.sock,server=on,wait=off",
            "-drive",
            "file=/d/disk.qcow2,if=none,id=hd1,format=qcow2",
            "-device",
            "virtio-blk-pci,drive=hd1,serial=data",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0",
            "-chardev",
            "socket,id=chrtpm,path=/r/swtpm.sock",
            "-tpmdev",
            "emulator,id=tpm0,chardev=chrtpm",
            "-device",
            "tpm-tis,tpmdev=tpm0",
        ]);
        assert_eq!(args, expected);
    }

    fn dstack_td() -> Vm {
        let mut vm = Vm::new("/fw/OVMF.fd", 4, 4 << 30, Boot::Disk);
        vm.machine = Machine {
            smm: Some(false),
            pic: Some(false),
            ..crate::vm::DstackLayout::machine(true, Some(0x80_0000_0000))
        };
        vm.devices = vec![
            Device::readonly_raw_disk("hd0", "/i/rootfs.verity"),
            Device::Vsock { guest_cid: 3 },
            Device::PcieRootPort { chassis: 1 },
        ];
        vm
    }

    #[test]
    fn tdx_upstream_and_canonical() {
        let run = RunDir::new("/r");
        let upstream = argv(
            &dstack_td(),
            &Backend::Tdx {
                flavour: TdxFlavour::Upstream,
            },
            &run,
        );
        let expected = strings(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-machine",
            "q35,smm=off,hpet=off,pic=off,kernel-irqchip=split,confidential-guest-support=tdx",
            "-object",
            "tdx-guest,id=tdx",
            "-smp",
            "4",
            "-m",
            "4096M",
            "-bios",
            "/fw/OVMF.fd",
            "-global",
            "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
            "-global",
            "q35-pcihost.pci-hole64-size=0x8000000000",
            "-chardev",
            "file,id=serial0,path=/r/serial.log",
            "-serial",
            "chardev:serial0",
            "-qmp",
            "unix:/r/qmp.sock,server=on,wait=off",
            "-drive",
            "file=/i/rootfs.verity,if=none,id=hd0,format=raw,readonly=on",
            "-device",
            "virtio-blk-pci,drive=hd0",
            "-device",
            "vhost-vsock-pci,guest-cid=3",
            "-device",
            "pcie-root-port,id=pci.1,bus=pcie.0,chassis=1",
        ]);
        assert_eq!(upstream, expected);

        let canonical = argv(
            &dstack_td(),
            &Backend::Tdx {
                flavour: TdxFlavour::Canonical82,
            },
            &run,
        );
        let pos = canonical
            .iter()
            .position(|a| a == "-machine")
            .expect("-machine");
        assert_eq!(
            canonical[pos + 1],
            "q35,smm=off,hpet=off,pic=off,kernel-irqchip=split,confidential-guest-support=tdx,memory-backend=mem0"
        );
        assert_eq!(
            canonical[pos + 2..pos + 6],
            strings(&[
                "-object",
                "tdx-guest,id=tdx",
                "-object",
                "memory-backend-ram,id=mem0,size=4096M"
            ])
        );
    }

    /// The boot and the oracle run the same CPU width; a TD keeps the width TDX gives it.
    #[test]
    fn phys_bits_reach_the_cpu_of_tcg_kvm_and_the_oracle_but_not_a_td() {
        let mut vm = kernel_vm();
        vm.machine.phys_bits = Some(46);
        let cpu = |vm: &Vm, backend: Backend| {
            let args = argv(vm, &backend, &RunDir::new("/r"));
            let at = args.iter().position(|a| a == "-cpu");
            at.map(|i| args[i + 1].clone())
        };
        let tcg = Backend::Vtpm { accel: Accel::Tcg };
        assert_eq!(cpu(&vm, tcg).as_deref(), Some("qemu64,phys-bits=46"));
        assert_eq!(
            cpu(&vm, Backend::Oracle).as_deref(),
            Some("qemu64,phys-bits=46")
        );
        let kvm = Backend::Vtpm { accel: Accel::Kvm };
        assert_eq!(cpu(&vm, kvm).as_deref(), Some("host,phys-bits=46"));
        let td = Backend::Tdx {
            flavour: TdxFlavour::Upstream,
        };
        assert_eq!(cpu(&vm, td).as_deref(), Some("host"));
        vm.machine.phys_bits = None;
        assert_eq!(cpu(&vm, tcg), None);
    }

    #[test]
    fn oracle_pauses_uses_qtest_and_stands_in_for_vsock() {
        let mut vm = dstack_td();
        vm.machine.kernel_irqchip = Some(KernelIrqchip::Split);
        let args = argv(&vm, &Backend::Oracle, &RunDir::new("/r"));
        assert_eq!(args[5..8], strings(&["-accel", "tcg", "-S"]));
        assert!(args
            .windows(2)
            .any(|w| w == ["-qtest", "unix:/r/qtest.sock"]));
        assert!(args.windows(2).any(|w| w == ["-qtest-log", "none"]));
        assert!(args
            .windows(2)
            .any(|w| w == ["-device", "virtio-rng-pci,disable-legacy=on,vectors=3"]));
        assert!(!args
            .iter()
            .any(|a| a.contains("tdx") || a.contains("vhost-vsock") || a == "-qmp"));
    }

    #[test]
    fn vhost_user_vsock_on_vtpm_shares_guest_ram_with_its_daemon() {
        let mut vm = kernel_vm();
        vm.devices = vec![Device::Vsock { guest_cid: 7 }];
        vm.vsock_host = VsockHost::User {
            daemon: "/t/vhost-device-vsock".into(),
        };
        let backend = Backend::Vtpm { accel: Accel::Tcg };
        let run = RunDir::new("/r");
        let args = argv(&vm, &backend, &run);
        let after = |flag: &str| -> Vec<&str> {
            args.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1].as_str())
                .collect()
        };
        assert_eq!(after("-machine"), ["q35,memory-backend=mem0"]);
        assert_eq!(
            after("-object"),
            ["memory-backend-memfd,id=mem0,size=2048M,share=on"]
        );
        assert!(args.windows(4).any(|w| w
            == [
                "-chardev",
                "socket,id=vsock0,path=/r/vhost-user-vsock0.sock",
                "-device",
                "vhost-user-vsock-pci,chardev=vsock0"
            ]));
        assert!(!args.iter().any(|a| a.contains("numa")));
        assert_eq!(
            vsock_daemon_args(&vm, &run),
            [
                "--vm",
                "guest-cid=7,socket=/r/vhost-user-vsock0.sock,uds-path=/r/vsock0.uds"
            ]
        );
        let script = run_sh(&vm, &backend, &QemuBinary::system());
        assert!(script.contains(
            "/t/vhost-device-vsock \\\n    --vm \\\n    \"guest-cid=7,socket=${RUN}/vhost-user-vsock0.sock,uds-path=${RUN}/vsock0.uds\" 2>\"${RUN}/vhost-device-vsock.log\" &\n"
        ));
        assert!(script.contains("while [ ! -S \"${RUN}/vhost-user-vsock0.sock\" ]"));

        // A TD and the oracle never use the daemon.
        let td = argv(
            &vm,
            &Backend::Tdx {
                flavour: TdxFlavour::Upstream,
            },
            &run,
        );
        assert!(td.iter().any(|a| a == "vhost-vsock-pci,guest-cid=7"));
        assert!(!td
            .iter()
            .any(|a| a.contains("vhost-user") || a.contains("memfd")));
        assert_eq!(vsock_daemon(&vm, &Backend::Oracle), None);
        assert!(!run_sh(&vm, &Backend::Oracle, &QemuBinary::system()).contains("vhost-device"));
    }

    /// dstack-vmm's hugepages layout for a VM without GPUs (`configure_hugepage_memory`):
    /// `-numa node,nodeid=0,cpus=0-{n-1},memdev=mem0`, a `memory-backend-file` `mem0` in the
    /// folder, and `pxb-pcie,id=pcie.node0,bus=pcie.0,addr=10,numa_node=0,bus_nr=5`.
    #[test]
    fn numa_memory_and_expander_follow_dstack_vmm_on_every_backend() {
        let mut vm = kernel_vm();
        vm.tpm = false;
        vm.machine.numa = Some(crate::vm::NumaMemory {
            mem_path: "/dev/shm".into(),
        });
        vm.devices = vec![
            Device::Vsock { guest_cid: 3 },
            crate::vm::dstack_hugepages_expander(),
        ];
        let run = RunDir::new("/r");
        let shape = |backend: Backend| -> Vec<String> {
            let args = argv(&vm, &backend, &run);
            let at = args.iter().position(|a| a == "-machine").unwrap();
            let end = args.iter().position(|a| a == "-bios").unwrap();
            let devices = args.iter().position(|a| a == "vhost-vsock-pci,guest-cid=3");
            let mut shape = args[at..end].to_vec();
            shape.extend(args[devices.map_or(args.len() - 2, |d| d + 1)..].to_vec());
            shape
        };
        let file = "memory-backend-file,id=mem0,size=2048M,mem-path=/dev/shm,share=on,prealloc=off";
        let node = "node,nodeid=0,cpus=0-1,memdev=mem0";
        let pxb = "pxb-pcie,id=pcie.node0,bus=pcie.0,addr=10,numa_node=0,bus_nr=5";
        assert_eq!(
            shape(Backend::Vtpm { accel: Accel::Tcg }),
            strings(&[
                "-machine", "q35", "-object", file, "-numa", node, "-smp", "2", "-m", "2048M",
                "-device", pxb,
            ])
        );
        // The oracle: the same node and expander, RAM mapped without reserving it, and no
        // `-machine memory-backend=` beside the node's memdev (QEMU refuses both).
        let oracle = argv(&vm, &Backend::Oracle, &run);
        let ram = "memory-backend-ram,id=mem0,size=2048M,reserve=off";
        assert!(oracle
            .windows(6)
            .any(|w| w == ["-machine", "q35", "-object", ram, "-numa", node]));
        assert_eq!(oracle[oracle.len() - 2..], strings(&["-device", pxb]));
        // A TD (both flavours) and a vhost-user vsock take the node's backend too.
        for backend in [
            Backend::Tdx {
                flavour: TdxFlavour::Upstream,
            },
            Backend::Tdx {
                flavour: TdxFlavour::Canonical82,
            },
        ] {
            let args = argv(&vm, &backend, &run);
            assert!(args
                .windows(4)
                .any(|w| w == ["-object", file, "-numa", node]));
            assert!(args
                .iter()
                .all(|a| !a.contains("memory-backend=") && !a.starts_with("memory-backend-ram")));
            assert_eq!(args[args.len() - 2..], strings(&["-device", pxb]));
        }
        vm.vsock_host = VsockHost::User {
            daemon: "/t/vhost-device-vsock".into(),
        };
        let args = argv(&vm, &Backend::Vtpm { accel: Accel::Tcg }, &run);
        assert!(args
            .windows(6)
            .any(|w| w == ["-machine", "q35", "-object", file, "-numa", node]));
        assert!(!args.iter().any(|a| a.contains("memfd")));
    }

    #[test]
    fn commas_in_paths_are_doubled_in_option_values() {
        let mut vm = kernel_vm();
        vm.devices.push(Device::Share(crate::vm::Share {
            id: "fs0".into(),
            path: "/s/a,path=/".into(),
            mount_tag: "t".into(),
            readonly: true,
            security_model: "none".into(),
        }));
        if let Device::Disk(disk) = &mut vm.devices[0] {
            disk.file = "/d/x,file=/etc/passwd".into();
        }
        let args = argv(
            &vm,
            &Backend::Vtpm { accel: Accel::Tcg },
            &RunDir::new("/r,s"),
        );
        let has = |a: &str| args.iter().any(|x| x == a);
        assert!(has(
            "file=/d/x,,file=/etc/passwd,if=none,id=hd1,format=qcow2"
        ));
        assert!(has(
            "local,path=/s/a,,path=/,mount_tag=t,readonly=on,security_model=none,id=fs0"
        ));
        assert!(has("file,id=serial0,path=/r,,s/serial.log"));
        assert!(has("unix:/r,,s/qmp.sock,server=on,wait=off"));
        assert!(has("socket,id=chrtpm,path=/r,,s/swtpm.sock"));
    }

    #[test]
    fn run_sh_quotes_and_starts_swtpm() {
        let mut vm = kernel_vm();
        vm.boot = Boot::Kernel {
            kernel: "/k/vmlinuz".into(),
            initrd: None,
            cmdline: "console=ttyS0 x=\"$HOME\"".into(),
        };
        let script = run_sh(
            &vm,
            &Backend::Vtpm { accel: Accel::Tcg },
            &QemuBinary {
                program: "/opt/qemu 10/qemu-system-x86_64".into(),
                loader: None,
                data_dirs: vec!["/opt/qemu 10/share".into()],
                env: vec![("QEMU_MODULE_DIR".into(), "/opt/qemu 10/modules".into())],
            },
        );
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(
            script.contains("swtpm_setup \\\n    --tpm2 \\\n    --tpmstate \\\n    \"${RUN}/tpm\"")
        );
        assert!(script.contains("\"type=unixio,path=${RUN}/swtpm.sock\""));
        assert!(script.contains("\"console=ttyS0 x=\\\"\\$HOME\\\"\""));
        assert!(script.contains("\"file,id=serial0,path=${RUN}/serial.log\""));
        assert!(!script.contains('\u{0}'));
        // The extracted QEMU's environment, then its data dir before every other argument.
        assert!(script.contains("export QEMU_MODULE_DIR=\"/opt/qemu 10/modules\"\n"));
        assert!(script.contains(
            "\"/opt/qemu 10/qemu-system-x86_64\" \\\n    -L \\\n    \"/opt/qemu 10/share\" \\\n    -nodefaults"
        ));
    }
}
