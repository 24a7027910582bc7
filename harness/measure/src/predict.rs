//! The predicted event log of a boot, in the order the firmware emits it.
//!
//! Inputs are bytes and facts (firmware image, the kernel as QEMU hands it to the firmware, the
//! initrd, the command line, the fw_cfg ACPI blobs, the resolved quirks); the output is every
//! event with its PCR, type, digests, label and what it varies with, plus which PCRs the
//! prediction covers completely. Registers are folded from these events, never predicted apart.

use crate::devpath::ovmf::{boot_manager_menu, BootManagerMenu};
use crate::event::{Event, EventType, Input, Platform, Platforms};
use crate::quirks::{Quirks, SecureBootVar};
use crate::uefi::{self, EfiAction, SecureBootVariable};
use crate::{pe, tdvf};
use std::collections::BTreeSet;

/// A direct kernel boot (`-kernel`): OVMF loads the kernel QEMU hands over in fw_cfg.
pub struct KernelBoot<'a> {
    /// The kernel exactly as the firmware reads it from fw_cfg (setup header as QEMU patched it,
    /// then the rest of the bzImage).
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    pub cmdline: &'a str,
}

pub enum Boot<'a> {
    Kernel(KernelBoot<'a>),
}

pub struct Inputs<'a> {
    pub platform: Platform,
    pub quirks: &'a Quirks,
    /// The firmware image (TDVF metadata, CFV) — used on TDX.
    pub firmware: &'a [u8],
    pub memory: u64,
    /// fw_cfg ACPI blobs (name, bytes) in the order OVMF's QemuFwCfgAcpi measures them (see
    /// [`crate::acpi::measured_blobs`]); measured in a TD, and on vTPM where the quirk says so.
    pub acpi_blobs: Vec<(String, &'a [u8])>,
    pub boot: Boot<'a>,
}

#[derive(Clone, Debug)]
pub struct Prediction {
    pub platform: Platform,
    pub events: Vec<Event>,
    /// PCRs (vTPM) whose every event is predicted; others are only partly predicted and get
    /// no register value.
    pub full_pcrs: BTreeSet<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("firmware: {0}")]
    Firmware(#[from] tdvf::TdvfError),
    #[error("kernel image: {0}")]
    Kernel(#[from] pe::PeError),
    #[error("boot option: {0}")]
    DevicePath(#[from] crate::devpath::DevicePathError),
}

/// Predict the event log of one boot.
pub fn predict(inputs: &Inputs) -> Result<Prediction, PredictError> {
    let Boot::Kernel(kernel) = &inputs.boot;
    let q = inputs.quirks;
    let mut events = Vec::new();

    // PCR0 (vTPM only; in a TD PCR0 is MRTD, not logged).
    if let Some(version) = &q.crtm_version {
        let mut data = uefi::utf16le(version);
        data.extend_from_slice(&[0, 0]);
        events.push(
            Event::hashed_data(0, EventType::S_CRTM_VERSION, "crtm:version", data)
                .varies_with(&[Input::OvmfVersion])
                .on(Platforms::VTPM),
        );
    }

    // RTMR0 in a TD starts with the TD HOB and the CFV (TdxHelperLib).
    if inputs.platform == Platform::Tdx {
        let tdvf = tdvf::Tdvf::parse(inputs.firmware)?;
        events.push(tdvf::td_hob_event(&tdvf, inputs.memory)?);
        events.push(tdvf::cfv_event(&tdvf, inputs.firmware)?);
    }

    // PCR7: Secure Boot configuration, then its separator.
    for variable in SecureBootVariable::ALL {
        let data: &[u8] = match (variable, q.secure_boot) {
            (SecureBootVariable::SecureBoot, SecureBootVar::Disabled) => &[0],
            _ => &[],
        };
        events.push(uefi::secure_boot_variable(variable, data));
    }
    events.push(uefi::separator(7));

    // PCR1: the fw_cfg ACPI blobs (QemuFwCfgAcpi), in a TD always, on vTPM per quirk.
    let acpi_platforms = if q.acpi_measured_on_vtpm {
        Platforms::BOTH
    } else {
        Platforms::TDX
    };
    for (name, blob) in &inputs.acpi_blobs {
        events.push(
            Event::measured(
                1,
                EventType::PLATFORM_CONFIG_FLAGS,
                format!("acpi:{name}"),
                blob,
                Some(b"ACPI DATA".to_vec()),
            )
            .varies_with(&[
                Input::Acpi,
                Input::Devices,
                Input::Memory,
                Input::Cpus,
                Input::QemuVersion,
            ])
            .on(acpi_platforms),
        );
    }

    // PCR4: the kernel image, loaded before ReadyToBoot by the -kernel path.
    let kernel_digests = pe::authenticode(kernel.kernel)?;
    events.push(Event {
        pcr: 4,
        event_type: EventType::EFI_BOOT_SERVICES_APPLICATION,
        digests: kernel_digests,
        data: None,
        label: "pe:kernel".into(),
        // QEMU writes the initrd address and size into the setup header it hands over.
        varies_with: vec![Input::Kernel, Input::Initrd, Input::Memory, Input::QemuVersion],
        platforms: Platforms::BOTH,
    });

    // PCR1: BootOrder and the one boot option OVMF registers for -kernel boot (UiApp).
    events.push(uefi::boot_order(&[0]));
    let uiapp = boot_manager_menu(BootManagerMenu::UiApp).encode()?;
    events.push(uefi::boot_option(0, &uiapp));

    // ReadyToBoot: the action, then separators.
    events.push(uefi::efi_action(EfiAction::CallingEfiApplication));
    for pcr in 0..=6 {
        let platforms = match pcr {
            // A TD logs one ReadyToBoot separator, into RTMR1 (see the quirk).
            4 if q.td_ready_to_boot_separator_rtmr1_only => Platforms::BOTH,
            _ if q.td_ready_to_boot_separator_rtmr1_only => Platforms::VTPM,
            _ => Platforms::BOTH,
        };
        events.push(uefi::separator(pcr).on(platforms));
    }

    // PCR9 (RTMR2): what the Linux EFI stub measures: LoadOptions, then the initrd.
    let mut load_options = kernel.cmdline.to_string();
    if kernel.initrd.is_some() && q.kernel_load_options_initrd {
        load_options.push_str(" initrd=initrd");
    }
    let mut load_options = uefi::utf16le(&load_options);
    load_options.extend_from_slice(&[0, 0]);
    events.push(tagged_event(
        "linux:cmdline",
        LINUX_EFI_LOAD_OPTIONS_TAG,
        b"LOADED_IMAGE::LoadOptions\0",
        &load_options,
        &[Input::Cmdline],
    ));
    if let Some(initrd) = kernel.initrd {
        events.push(tagged_event(
            "linux:initrd",
            LINUX_EFI_INITRD_TAG,
            b"Linux initrd\0",
            initrd,
            &[Input::Initrd],
        ));
    }

    // PCR5: ExitBootServices.
    events.push(uefi::efi_action(EfiAction::ExitBootServicesInvocation));
    events.push(uefi::efi_action(
        EfiAction::ExitBootServicesReturnedWithSuccess,
    ));

    let events: Vec<Event> = events
        .into_iter()
        .filter(|e| e.platforms.contains(inputs.platform))
        .collect();
    let full_pcrs = match inputs.platform {
        // PCR0 also holds firmware volume blobs we do not predict.
        Platform::Vtpm => (1..=9).filter(|&p| p != 8).collect(),
        Platform::Tdx => (1..=15).collect(),
    };
    Ok(Prediction {
        platform: inputs.platform,
        events,
        full_pcrs,
    })
}

/// Linux `drivers/firmware/efi/libstub/efi-stub-helper.c`: tagged event ids.
const LINUX_EFI_INITRD_TAG: u32 = 0x8F3B_22EC;
const LINUX_EFI_LOAD_OPTIONS_TAG: u32 = 0x8F3B_22ED;

/// EV_EVENT_TAG in PCR9: TCG_PCClientTaggedEvent { id, size, description }, digest over the
/// measured bytes.
fn tagged_event(
    label: &str,
    id: u32,
    description: &[u8],
    measured: &[u8],
    varies: &[Input],
) -> Event {
    let mut data = id.to_le_bytes().to_vec();
    data.extend_from_slice(&(description.len() as u32).to_le_bytes());
    data.extend_from_slice(description);
    Event::measured(9, EventType::EVENT_TAG, label, measured, Some(data)).varies_with(varies)
}
