//! Prepare a scenario: resolve it to a VM, ask the fw_cfg oracle (that VM's own QEMU), and
//! predict its measurements. Nothing boots here.

use crate::input::{read, InputError, DISK, IMAGE};
use crate::resolve::{self, Resolved};
use crate::scenario::Scenario;
use measure::predict::{self, Boot, KernelBoot, Prediction, UkiBoot};
use measure::tdvf::{self, PageOrder};
use measure::{Event, Platform, Register, Registers};
use std::collections::BTreeMap;

/// A scenario ready to boot: its VM, the oracle's fw_cfg dump and the prediction.
pub struct Prepared {
    pub resolved: Resolved,
    pub oracle: BTreeMap<String, Vec<u8>>,
    pub prediction: Prediction,
    /// The events of this VM's TD prediction, which the report counts (the same events as
    /// `prediction` when preparing a TD), or why there is none (firmware without TDVF metadata).
    /// For a vTPM VM it is made from the vTPM VM's own fw_cfg, whose ACPI holds a TPM device:
    /// the events and labels are the TD's, an ACPI digest may not be.
    pub td_events: Result<Vec<Event>, String>,
}

/// Why a scenario could not be prepared: the file, the oracle or the prediction that failed,
/// with the lower error as `source()`.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Boxed: a resolve error is the largest by far, and every result of this stage carries its size.
    #[error(transparent)]
    Resolve(Box<resolve::ResolveError>),
    #[error(transparent)]
    Input(#[from] InputError),
    /// Its messages start with "fw_cfg oracle: ".
    #[error(transparent)]
    Oracle(#[from] qemu::OracleError),
    #[error(
        "fw_cfg oracle: QEMU {qemu} {} {}, but quirk qemu-boot-kernel-file expects {}",
        if *.served { "serves" } else { "does not serve" },
        qemu::fwcfg::BOOT_KERNEL_FILE,
        if *.served { "none" } else { "it" }
    )]
    KernelFileQuirk { qemu: String, served: bool },
    #[error("fw_cfg oracle: {0}")]
    NoKernel(String),
    #[error("{}", .path.display())]
    Firmware {
        path: std::path::PathBuf,
        #[source]
        source: tdvf::TdvfError,
    },
    #[error("MRTD")]
    Mrtd(#[source] tdvf::TdvfError),
    #[error("hashing the initrd")]
    HashingInitrd(#[source] tokio::task::JoinError),
    #[error("prediction")]
    Prediction(#[source] measure::predict::PredictError),
    #[error("a prediction thread")]
    PredictionThread(#[source] tokio::task::JoinError),
    #[error("the initrd's digests never reached the vTPM prediction (hashing it failed)")]
    InitrdNotShared,
    #[error("disk boot without a UKI or GRUB disk the harness built is not predicted")]
    UnpredictedDisk,
}

impl From<resolve::ResolveError> for PrepareError {
    fn from(e: resolve::ResolveError) -> PrepareError {
        PrepareError::Resolve(Box::new(e))
    }
}

/// The ACPI event of the blob the vTPM VM's TPM device adds (`etc/tpm/log`).
const TPM_LOG_ACPI_EVENT: &str = "acpi:etc/tpm/log";

/// The chipset values the scenario's firmware programs before reading ACPI (its PCIEXBAR).
pub fn firmware_pci(resolved: &Resolved) -> qemu::fwcfg::FirmwarePci {
    use measure::quirks::OvmfPciLayout;
    // Quirk ovmf-pciexbar-0xe0000000.
    match resolved.quirks.ovmf_pci_layout {
        OvmfPciLayout::Stable202211 => qemu::fwcfg::FirmwarePci::OVMF_2022_11,
        OvmfPciLayout::Stable202502 => qemu::fwcfg::FirmwarePci::OVMF_2025_02,
    }
}

/// The `-kernel` image OVMF loads and measures: QEMU's patched setup ‖ kernel items, or the
/// unpatched `etc/boot/kernel` file when this QEMU serves it and this OVMF prefers it (quirks
/// `qemu-boot-kernel-file`, `ovmf-boot-kernel-file-preferred`). The oracle must agree with the
/// QEMU row: a file the version says is absent (or the reverse) is an error, not a guess.
fn kernel_as_measured<'a>(
    resolved: &Resolved,
    oracle: &'a BTreeMap<String, Vec<u8>>,
    platform: Platform,
) -> Result<std::borrow::Cow<'a, [u8]>, PrepareError> {
    let served = oracle.get(qemu::fwcfg::BOOT_KERNEL_FILE);
    if served.is_some() != resolved.quirks.qemu_serves_unpatched_kernel {
        return Err(PrepareError::KernelFileQuirk {
            qemu: resolved
                .qemu_version
                .map_or("(unknown version)".into(), |v| v.to_string()),
            served: served.is_some(),
        });
    }
    match served {
        // Borrowed: the kernel is 8 MiB and more, and the oracle holds it already.
        Some(kernel) if resolved.quirks.kernel_measured_unpatched_on(platform) => {
            Ok(kernel.as_slice().into())
        }
        _ => qemu::fwcfg::kernel_as_loaded(oracle)
            .map(Into::into)
            .map_err(PrepareError::NoKernel),
    }
}

/// The builtin TD registers of a TD preparation: MRTD from the firmware in `order`, RTMRs
/// folded from the predicted events.
pub fn builtin_registers(prepared: &Prepared, order: PageOrder) -> Result<Registers, PrepareError> {
    let path = &prepared.resolved.vm.firmware;
    let firmware = crate::input::read(path, crate::input::FIRMWARE)?;
    let parsed = tdvf::Tdvf::parse(&firmware).map_err(|source| PrepareError::Firmware {
        path: path.clone(),
        source,
    })?;
    let mrtd = tdvf::mrtd(&parsed, &firmware, order).map_err(PrepareError::Mrtd)?;
    let mut regs = Registers::fold(&prepared.prediction.events);
    regs.set(Register::Mrtd, mrtd);
    Ok(regs)
}

/// A vTPM PCR folded from the predicted events that land in it, in one bank (`sha256` or
/// `sha384`), starting from zero. Empty when an event has no digest in that bank.
pub fn fold_pcr(events: &[Event], pcr: u32, bank: &str) -> Vec<u8> {
    use measure::event::{extend_sha256, extend_sha384};
    let mut events = events
        .iter()
        .filter(|e| e.pcr == pcr && e.extends() && e.platforms.contains(Platform::Vtpm));
    if bank == "sha256" {
        let mut value = [0u8; 32];
        for e in events.by_ref() {
            let Some(d) = e.digests.sha256 else {
                return Vec::new();
            };
            value = extend_sha256(&value, &d);
        }
        value.to_vec()
    } else {
        let mut value = [0u8; 48];
        for e in events {
            let Some(d) = e.digests.sha384 else {
                return Vec::new();
            };
            value = extend_sha384(&value, &d);
        }
        value.to_vec()
    }
}

/// Resolve, ask the oracle, predict for `platform` (a vTPM VM has a TPM device, which changes
/// ACPI; a TD has none). No guest runs, so a VM this host could not run (e.g. a TD's
/// vhost-vsock without `/dev/vhost-vsock`) is still predicted: the oracle stands in for what it
/// cannot start, and a prediction or an offline diagnosis needs no more.
pub async fn prepare(
    scenario: &Scenario,
    cache: &images::Cache,
    platform: Platform,
) -> Result<Box<Prepared>, PrepareError> {
    let resolved = resolve::resolve(scenario, cache, platform == Platform::Vtpm)?;
    prepare_resolved(resolved, platform).await
}

/// [`prepare`] for a TD and, beside it, the predicted events of the same scenario's vTPM VM,
/// which `mrlab predict --platform tdx` checks the TD's against. Both oracles run at once and
/// the initrd is hashed once meanwhile; each side predicts on a blocking thread as soon as its
/// own oracle is done (the vTPM VM's waits for swtpm, so the TD's prediction overlaps it). The
/// vTPM side may fail alone; the caller decides what that means.
pub async fn prepare_td_with_vtpm(
    scenario: &Scenario,
    cache: &images::Cache,
) -> Result<(Box<Prepared>, Result<Vec<Event>, PrepareError>), PrepareError> {
    let td = resolve::resolve(scenario, cache, false)?;
    let vtpm = resolve::resolve(scenario, cache, true);
    // The TD side hashes the initrd and hands the digests over; a TD side that fails first
    // drops the sender, and its error is the one returned.
    let (initrd_tx, initrd_rx) = tokio::sync::oneshot::channel();
    let td_side = async {
        let oracle = qemu::fwcfg::dump_fw_cfg(&td.vm, &td.qemu_binary, firmware_pci(&td));
        let (oracle, initrd) = tokio::join!(oracle, initrd_digests(&td));
        let initrd = initrd?;
        let _ = initrd_tx.send(initrd.clone());
        let oracle = oracle?;
        blocking(move || prepared_from(td, oracle, initrd, Platform::Tdx)).await
    };
    let vtpm_side = async {
        let vtpm = vtpm?;
        let oracle =
            qemu::fwcfg::dump_fw_cfg(&vtpm.vm, &vtpm.qemu_binary, firmware_pci(&vtpm)).await?;
        let initrd = initrd_rx.await.map_err(|_| PrepareError::InitrdNotShared)?;
        blocking(move || {
            predict_for(&vtpm, &oracle, initrd.as_ref(), Platform::Vtpm).map(|p| p.events)
        })
        .await
    };
    let (td, vtpm_events) = tokio::join!(td_side, vtpm_side);
    Ok((td?, vtpm_events))
}

/// Runs CPU-bound `work` (a prediction) on tokio's blocking pool, off the thread that drives
/// the oracles' sockets.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PrepareError> + Send + 'static,
) -> Result<T, PrepareError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(PrepareError::PredictionThread)?
}

/// [`prepare`] of a scenario already resolved: the oracle and the prediction, which a boot of
/// the same VM does not need, so `mrlab run` boots it meanwhile.
pub async fn prepare_resolved(
    resolved: Resolved,
    platform: Platform,
) -> Result<Box<Prepared>, PrepareError> {
    // The oracle: every fw_cfg file of this very VM, from the same QEMU binary. The initrd is
    // hashed meanwhile, once for both predictions below.
    let oracle =
        qemu::fwcfg::dump_fw_cfg(&resolved.vm, &resolved.qemu_binary, firmware_pci(&resolved));
    let (oracle, initrd) = tokio::join!(oracle, initrd_digests(&resolved));
    prepared_from(resolved, oracle?, initrd?, platform)
}

/// The prediction of a resolved VM from its fw_cfg files (the oracle's, or a snapshot's) and
/// its initrd's digests (read once for both predictions).
pub fn prepared_from(
    resolved: Resolved,
    oracle: BTreeMap<String, Vec<u8>>,
    initrd: Option<measure::Digests>,
    platform: Platform,
) -> Result<Box<Prepared>, PrepareError> {
    let prediction = predict_for(&resolved, &oracle, initrd.as_ref(), platform)?;
    let td_events = match platform {
        Platform::Tdx => Ok(prediction.events.clone()),
        // The vTPM VM's TPM device adds the `etc/tpm/log` ACPI blob, which a TD does not have.
        // Why there is none is a note of the report, so it is kept as its text.
        Platform::Vtpm => predict_for(&resolved, &oracle, initrd.as_ref(), Platform::Tdx)
            .map(|p| {
                p.events
                    .into_iter()
                    .filter(|e| e.label != TPM_LOG_ACPI_EVENT)
                    .collect()
            })
            .map_err(|e| crate::error::chain(&e)),
    };
    Ok(Box::new(Prepared {
        resolved,
        oracle,
        prediction,
        td_events,
    }))
}

/// The digests of a `-kernel` boot's initrd, read and hashed on a blocking thread so that it
/// overlaps the fw_cfg oracle's QEMU.
async fn initrd_digests(resolved: &Resolved) -> Result<Option<measure::Digests>, PrepareError> {
    let vm = resolved.vm.clone();
    Ok(
        tokio::task::spawn_blocking(move || read_initrd_digests(&vm))
            .await
            .map_err(PrepareError::HashingInitrd)??,
    )
}

/// Both banks' digests of the `-kernel` initrd, if the VM has one.
pub fn read_initrd_digests(vm: &qemu::Vm) -> Result<Option<measure::Digests>, InputError> {
    match &vm.boot {
        qemu::vm::Boot::Kernel {
            initrd: Some(path), ..
        } => {
            let mut hasher = measure::Digests::hasher();
            crate::input::read_in_pieces(path, DISK, |piece| hasher.update(piece))?;
            Ok(Some(hasher.finish()))
        }
        _ => Ok(None),
    }
}

/// The prediction for this VM: oracle blobs, the kernel as QEMU hands it to the firmware, and
/// the initrd's digests ([`read_initrd_digests`]) for a `-kernel` boot.
pub fn predict_for(
    resolved: &Resolved,
    oracle: &BTreeMap<String, Vec<u8>>,
    initrd: Option<&measure::Digests>,
    platform: Platform,
) -> Result<Prediction, PrepareError> {
    let firmware = crate::input::read(&resolved.vm.firmware, crate::input::FIRMWARE)?;
    let acpi_blobs = measure::acpi::measured_blobs(oracle);
    let roms: Vec<(String, Vec<u8>)> = resolved
        .option_roms
        .iter()
        .map(|(label, path)| read(path, IMAGE).map(|bytes| (label.clone(), bytes)))
        .collect::<Result<_, _>>()?;
    let option_roms: Vec<(String, &[u8])> = roms
        .iter()
        .map(|(l, b)| (l.clone(), b.as_slice()))
        .collect();
    let cmdline_override = resolved.scenario.predict.cmdline.as_deref();
    let predict = |boot| {
        let inputs = predict::Inputs {
            platform,
            quirks: &resolved.quirks,
            firmware: &firmware,
            memory: resolved.vm.memory,
            acpi_blobs: acpi_blobs.clone(),
            option_roms: option_roms.clone(),
            firmware_strings: resolved.firmware_strings.as_ref(),
            fw_cfg_files: oracle,
            fw_cfg_boot_menu: oracle.get(qemu::fwcfg::BOOT_MENU_ITEM).map(Vec::as_slice),
            boot,
        };
        predict::predict(&inputs).map_err(PrepareError::Prediction)
    };
    match (&resolved.vm.boot, &resolved.uki) {
        (qemu::vm::Boot::Kernel { cmdline, .. }, _) => {
            let kernel = kernel_as_measured(resolved, oracle, platform)?;
            predict(Boot::Kernel(KernelBoot {
                kernel: &kernel,
                initrd,
                cmdline: cmdline_override.unwrap_or(cmdline),
            }))
        }
        (qemu::vm::Boot::Disk, Some(uki)) => {
            let block_size = 512;
            let disk = crate::input::read_gpt_span(&uki.disk, block_size)?;
            let bootloader = read(&uki.bootloader, IMAGE)?;
            let image = read(&uki.uki, IMAGE)?;
            predict(Boot::Uki(UkiBoot {
                disk: &disk,
                block_size,
                disk_pci: uki.place.disk_pci.clone(),
                other_disks_pci: uki.place.other_disks_pci.clone(),
                nics: uki.place.nics.clone(),
                bootloader: &bootloader,
                loader_conf: uki.loader_conf.as_deref().map(str::as_bytes),
                uki: &image,
                cmdline_override,
            }))
        }
        (qemu::vm::Boot::Disk, None) => match &resolved.grub {
            Some(grub) => {
                predict(crate::prepare_grub::read_inputs(grub, &resolved.scenario.predict)?.boot())
            }
            None => Err(PrepareError::UnpredictedDisk),
        },
    }
}
