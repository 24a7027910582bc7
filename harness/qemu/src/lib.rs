//! QEMU for mrlab: one [`Vm`] value → QEMU arguments per backend, the fw_cfg oracle over
//! qtest, and supervised boots (process groups, timeouts, QMP, swtpm).

pub mod argv;
pub mod binary;
pub mod boot;
pub mod fwcfg;
pub mod pci;
pub mod process;
pub mod qtest;
pub mod swtpm;
pub mod vm;

pub use argv::{argv, run_sh, Accel, Backend, RunDir, TdxFlavour};
pub use binary::{Loader, QemuBinary};
pub use boot::{boot, probe_kvm_with, BootError, BootOptions, BootOutcome};
pub use fwcfg::{dump_fw_cfg, FirmwarePci, OracleError};
pub use vm::{
    Boot, Device, Disk, DiskFormat, DstackHostShare, DstackLayout, DstackRootfs, KernelIrqchip,
    Machine, Share, Vm, VsockHost,
};
