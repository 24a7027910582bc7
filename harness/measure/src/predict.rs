//! The predicted event log of a boot, in the order the firmware emits it.
//!
//! Inputs are bytes and facts (firmware image, the kernel as QEMU hands it to the firmware, the
//! initrd, the command line — or, for a UKI boot, the disk image, systemd-boot, loader.conf and
//! the UKI —, the fw_cfg ACPI blobs, the resolved quirks); the output is every
//! event with its PCR, type, digests, label and what it varies with, plus which PCRs the
//! prediction covers completely. Registers are folded from these events, never predicted apart.

use crate::devpath::ovmf::{self, boot_manager_menu, BootManagerMenu};
use crate::devpath::{LOAD_OPTION_ACTIVE, LOAD_OPTION_CATEGORY_APP};
use crate::event::{Digests, Event, EventType, Input, Platform, Platforms};
use crate::quirks::{CrtmVersion, Quirks, SecureBootVar};
use crate::smbios::FirmwareStrings;
use crate::systemd::{self, Uki};
use crate::uefi::{self, EfiAction, SecureBootVariable};
use crate::{gpt, pe, tdvf};
use std::collections::{BTreeMap, BTreeSet};

/// A direct kernel boot (`-kernel`): OVMF loads the kernel QEMU hands over in fw_cfg.
pub struct KernelBoot<'a> {
    /// The kernel exactly as the firmware reads it from fw_cfg (setup header as QEMU patched it,
    /// then the rest of the bzImage).
    pub kernel: &'a [u8],
    /// The initrd's digests: all of it that is measured. The caller hashes it (a large file)
    /// while QEMU still runs the fw_cfg oracle, once for every prediction of the VM.
    pub initrd: Option<&'a Digests>,
    pub cmdline: &'a str,
}

/// UEFI boot from a disk: OVMF enumerates it ("UEFI Misc Device"), measures its GPT and starts
/// systemd-boot (`\EFI\BOOT\BOOTX64.EFI`), which starts the UKI, whose systemd-stub starts the
/// kernel in its `.linux` section.
pub struct UkiBoot<'a> {
    /// The disk image (its primary GPT is measured).
    pub disk: &'a [u8],
    pub block_size: u32,
    /// The disk's PCI path from the root bus, (device, function) per hop: the path of the boot
    /// option OVMF creates for it.
    pub disk_pci: Vec<(u8, u8)>,
    /// The PCI paths of the other disks, in the order OVMF enumerates them (root-bus slot
    /// order, after the boot disk): each gets a "UEFI Misc Device N" boot option before the
    /// shell's. None is tried, since the boot disk's option comes first.
    pub other_disks_pci: Vec<Vec<(u8, u8)>>,
    /// The NICs, in root-bus order. OVMF registers network boot options for each (see the
    /// quirks) after the disks' and before the shell's.
    pub nics: Vec<Nic>,
    /// systemd-boot as on the ESP.
    pub bootloader: &'a [u8],
    /// `loader/loader.conf` on the ESP, if there is one.
    pub loader_conf: Option<&'a [u8]>,
    /// The UKI systemd-boot starts.
    pub uki: &'a [u8],
    /// Prediction-only override of the UKI's `.cmdline` text.
    pub cmdline_override: Option<&'a str>,
}

/// A NIC as OVMF's network boot options name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    /// PCI path from the root bus, (device, function) per hop.
    pub pci: Vec<(u8, u8)>,
    pub mac: [u8; 6],
}

/// UEFI boot from a disk through Debian's signed shim and GRUB: OVMF enumerates the disk,
/// measures its GPT and starts shim (`\EFI\BOOT\BOOTX64.EFI`), which starts GRUB beside it;
/// GRUB reads `/EFI/debian/grub.cfg` and loads the kernel and initrd, whose EFI stub runs.
pub struct GrubBoot<'a> {
    /// The disk image (its primary GPT is measured).
    pub disk: &'a [u8],
    pub block_size: u32,
    /// As in [`UkiBoot`]: the boot options OVMF creates.
    pub disk_pci: Vec<(u8, u8)>,
    pub other_disks_pci: Vec<Vec<(u8, u8)>>,
    pub nics: Vec<Nic>,
    pub shim: &'a [u8],
    pub grub: &'a [u8],
    /// The ESP's files GRUB reads.
    pub files: crate::grub::GrubFiles<'a>,
}

pub enum Boot<'a> {
    Kernel(KernelBoot<'a>),
    Uki(UkiBoot<'a>),
    Grub(GrubBoot<'a>),
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
    /// PCI option ROMs (label, ROM bytes) in PCI slot order: OVMF loads and measures their EFI
    /// drivers during PCI enumeration (see [`crate::optionrom`]).
    pub option_roms: Vec<(String, &'a [u8])>,
    /// The firmware build's version, vendor and release date strings, where known (a managed
    /// OVMF package): its CRTM version and SMBIOS type 0.
    pub firmware_strings: Option<&'a FirmwareStrings>,
    /// Every fw_cfg file QEMU serves (name → bytes): the items OVMF caches and, in a TD, measures
    /// (see [`crate::fwcfg`]), and the SMBIOS structures OVMF and systemd-boot measure
    /// ([`crate::smbios::QEMU_TABLES_FILE`]).
    pub fw_cfg_files: &'a BTreeMap<String, Vec<u8>>,
    /// The numbered fw_cfg item `BootMenu` (0x0e) as QEMU serves it.
    pub fw_cfg_boot_menu: Option<&'a [u8]>,
    pub boot: Boot<'a>,
}

#[derive(Clone, Debug)]
pub struct Prediction {
    pub platform: Platform,
    pub events: Vec<Event>,
    /// PCRs whose every event is predicted and whose value is folded from the prediction. On
    /// vTPM these are PCR 0–15 less the [`Prediction::unpredicted`] ones.
    pub full_pcrs: BTreeSet<u32>,
    /// vTPM PCRs whose value is not predicted, each with the reason reports show. Their log
    /// events are still judged, except those of the types named.
    pub unpredicted: Vec<Unpredicted>,
}

/// A PCR the prediction declares it does not fold, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpredicted {
    pub pcr: u32,
    /// Log events of these types in this PCR are not predicted and not judged; any other event
    /// in it must be predicted.
    pub event_types: Vec<EventType>,
    pub reason: String,
}

impl Prediction {
    /// Whether a log event is judged against the prediction: every event is, except those of a
    /// type an [`Unpredicted`] PCR leaves out.
    pub fn judges(&self, event: &Event) -> bool {
        !self
            .unpredicted
            .iter()
            .any(|u| u.pcr == event.pcr && u.event_types.contains(&event.event_type))
    }
}

/// What a vTPM boot logs that we do not predict: PCR0's firmware volume blobs (and its CRTM
/// version string where the quirks do not know it), and PCR10's value.
fn vtpm_unpredicted(q: &Quirks) -> Vec<Unpredicted> {
    let mut pcr0_types = vec![
        EventType::EFI_PLATFORM_FIRMWARE_BLOB,
        EventType::EFI_PLATFORM_FIRMWARE_BLOB2,
    ];
    let mut pcr0_reason = String::from(
        "OVMF's PEI and DXE firmware volumes (EV_EFI_PLATFORM_FIRMWARE_BLOB) are measured as \
         decompressed in memory and not predicted",
    );
    if q.crtm_version == CrtmVersion::Unknown {
        pcr0_types.push(EventType::S_CRTM_VERSION);
        pcr0_reason.push_str(
            ", nor is this OVMF's version string (EV_S_CRTM_VERSION, quirk \
             ovmf-crtm-version-unknown)",
        );
    }
    pcr0_reason.push_str(
        "; in a TD PCR0 is MRTD, checked from the firmware image. Every other PCR0 event is \
         judged.",
    );
    vec![
        Unpredicted {
            pcr: 0,
            event_types: pcr0_types,
            reason: pcr0_reason,
        },
        Unpredicted {
            pcr: 10,
            event_types: Vec::new(),
            reason: "the kernel's IMA extends PCR10 (boot_aggregate) and logs it in its own \
                     measurement list, not the firmware log; a TD has no IMA register. Any \
                     firmware log event in PCR10 is still unexpected."
                .into(),
        },
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("firmware")]
    Firmware(#[from] tdvf::TdvfError),
    #[error("firmware variable store")]
    VarStore(#[from] crate::varstore::VarStoreError),
    #[error("fw_cfg")]
    FwCfg(#[from] crate::fwcfg::MissingItem),
    #[error("kernel image")]
    Kernel(#[from] pe::PeError),
    #[error("boot option")]
    DevicePath(#[from] crate::devpath::DevicePathError),
    #[error("boot disk")]
    Gpt(#[from] gpt::GptError),
    #[error("option ROM {label}")]
    OptionRom {
        label: String,
        source: crate::optionrom::OptionRomError,
    },
    #[error("{0} disks: more boot options than OVMF numbers")]
    TooManyDisks(usize),
    #[error("SMBIOS")]
    Smbios(#[from] crate::smbios::SmbiosError),
    #[error(
        "this OVMF measures {what} (quirk {quirk}), but {missing}: use a managed OVMF id from \
         images/packages.lock"
    )]
    FirmwareFact {
        what: &'static str,
        quirk: &'static str,
        missing: &'static str,
    },
    #[error("{what}")]
    Image {
        what: &'static str,
        source: pe::PeError,
    },
    #[error(transparent)]
    Grub(#[from] crate::grub::GrubError),
    #[error("grub.cfg runs no `linux /vmlinuz`: the kernel GRUB starts is not known")]
    GrubWithoutLinux,
}

fn image_err(what: &'static str) -> impl FnOnce(pe::PeError) -> PredictError {
    move |source| PredictError::Image { what, source }
}

/// Predict the event log of one boot.
pub fn predict(inputs: &Inputs) -> Result<Prediction, PredictError> {
    let q = inputs.quirks;
    let mut events = Vec::new();

    // PCR0 (vTPM only; in a TD PCR0 is MRTD, not logged).
    let crtm_version = match &q.crtm_version {
        CrtmVersion::Known(version) => Some(version.as_str()),
        CrtmVersion::FirmwareVersionString => Some(
            inputs
                .firmware_strings
                .ok_or(PredictError::FirmwareFact {
                    what: "its version string as EV_S_CRTM_VERSION",
                    quirk: "ovmf-crtm-version-is-firmware-version",
                    missing: "the firmware's version string is not known",
                })?
                .version
                .as_str(),
        ),
        CrtmVersion::Unknown => None,
    };
    if let Some(version) = crtm_version {
        let mut data = uefi::utf16le(version);
        data.extend_from_slice(&[0, 0]);
        events.push(
            Event::hashed_data(0, EventType::S_CRTM_VERSION, "crtm:version", data)
                .varies_with(&[Input::OvmfVersion])
                .on(Platforms::VTPM),
        );
    }

    // RTMR0 in a TD starts with the TD HOB and the CFV (TdxHelperLib).
    let mut enrolled = None;
    if inputs.platform == Platform::Tdx {
        let tdvf = tdvf::Tdvf::parse(inputs.firmware)?;
        enrolled = enrolled_keys(tdvf::cfv(&tdvf, inputs.firmware)?)?;
        events.push(tdvf::td_hob_event(&tdvf, inputs.memory)?);
        events.push(tdvf::cfv_event(&tdvf, inputs.firmware)?);
        // Then the fw_cfg items PlatformPei / PeilessStartup caches (edk2 ≥ stable202505).
        if q.td_measures_fw_cfg_items {
            let boot_menu = inputs.fw_cfg_boot_menu;
            events.extend(crate::fwcfg::td_events(inputs.fw_cfg_files, |number| {
                (number == crate::fwcfg::BOOT_MENU_ITEM)
                    .then_some(boot_menu)
                    .flatten()
            })?);
        }
    }

    // PCR7: Secure Boot configuration, then its separator.
    for variable in SecureBootVariable::ALL {
        let data: &[u8] = match (&enrolled, variable, q.secure_boot) {
            (Some(_), SecureBootVariable::SecureBoot, _) => &[1],
            (Some(store), _, _) => store.get(&variable).map_or(&[], Vec::as_slice),
            (None, SecureBootVariable::SecureBoot, SecureBootVar::Disabled) => &[0],
            _ => &[],
        };
        let mut event = uefi::secure_boot_variable(variable, data);
        if enrolled.is_some() {
            event.varies_with.push(Input::Firmware);
        }
        events.push(event);
    }
    events.push(uefi::separator(7));

    // PCR2: the EFI drivers of PCI option ROMs, per device in slot order (observed on vTPM right
    // after the PCR7 separator, before the boot events).
    for (label, rom) in &inputs.option_roms {
        let drivers = crate::optionrom::driver_events(rom, label).map_err(|source| {
            PredictError::OptionRom {
                label: label.clone(),
                source,
            }
        })?;
        events.extend(drivers);
    }

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

    // PCR1 at ReadyToBoot, before the boot variables: the SMBIOS table (SmbiosMeasurementDxe).
    let smbios_tables = inputs
        .fw_cfg_files
        .get(crate::smbios::QEMU_TABLES_FILE)
        .map(Vec::as_slice);
    let smbios = if q.smbios_measured {
        let missing = |missing| PredictError::FirmwareFact {
            what: "its SMBIOS table",
            quirk: "ovmf-smbios-measured",
            missing,
        };
        let tables =
            smbios_tables.ok_or_else(|| missing("QEMU's etc/smbios/smbios-tables is not known"))?;
        let strings = inputs
            .firmware_strings
            .ok_or_else(|| missing("the firmware's type 0 strings are not known"))?;
        Some(crate::smbios::handoff_event(&crate::smbios::ovmf_table(
            tables, strings,
        )?)?)
    } else {
        None
    };

    match &inputs.boot {
        Boot::Kernel(kernel) => {
            kernel_boot_events(kernel, q, inputs.platform, smbios, &mut events)?
        }
        Boot::Uki(uki) => uki_boot_events(uki, q, smbios, smbios_tables, &mut events)?,
        Boot::Grub(grub) => grub_boot_events(grub, q, smbios, &mut events)?,
    }
    // Every PCR 0–15 is predicted, events and value, but for the declared exceptions: a PCR
    // the boot does not touch (PCR8, 14, 15; PCR11–13 on -kernel boots) is predicted empty.
    let mut unpredicted = match inputs.platform {
        Platform::Vtpm => vtpm_unpredicted(q),
        Platform::Tdx => Vec::new(),
    };
    if enrolled.is_some() {
        unpredicted.push(Unpredicted {
            pcr: 7,
            event_types: vec![EventType::EFI_VARIABLE_AUTHORITY],
            reason: "this firmware enrolls Secure Boot keys: each image it verifies logs the db \
                     entry that allowed it (EV_EFI_VARIABLE_AUTHORITY), which is not predicted, \
                     so RTMR0 differs if any is logged; an image no db key signs does not load \
                     at all"
                .into(),
        });
    }
    let full_pcrs: BTreeSet<u32> = match inputs.platform {
        Platform::Vtpm => (0..=15)
            .filter(|p| unpredicted.iter().all(|u| u.pcr != *p))
            .collect(),
        Platform::Tdx => (1..=15).collect(),
    };

    let events: Vec<Event> = events
        .into_iter()
        .filter(|e| e.platforms.contains(inputs.platform))
        .collect();
    Ok(Prediction {
        platform: inputs.platform,
        events,
        full_pcrs,
        unpredicted,
    })
}

/// The Secure Boot keys a firmware image enrolls at build time: PK, KEK, db, dbx as its CFV's
/// variable store holds them, when it holds a PK; `None` for a store without one (Secure Boot
/// not enrolled: the quirks decide `SecureBoot`).
///
/// With a PK the platform is in user mode, and SecurityPkg AuthVariableLib
/// (`AuthVariableLibInitialize`) then creates `SecureBootEnable` = enabled when the store has
/// none, and `SecureBoot` = 1.
fn enrolled_keys(
    cfv: &[u8],
) -> Result<Option<BTreeMap<SecureBootVariable, Vec<u8>>>, PredictError> {
    let store = crate::varstore::variables(cfv)?;
    let key = |v: SecureBootVariable| (v.vendor(), v.name().to_string());
    if !store.contains_key(&key(SecureBootVariable::Pk)) {
        return Ok(None);
    }
    Ok(Some(
        SecureBootVariable::ALL
            .into_iter()
            .filter(|v| *v != SecureBootVariable::SecureBoot)
            .filter_map(|v| store.get(&key(v)).map(|data| (v, data.clone())))
            .collect(),
    ))
}

/// The -kernel path: OVMF loads the kernel before ReadyToBoot, then the Linux EFI stub runs.
fn kernel_boot_events(
    kernel: &KernelBoot,
    q: &Quirks,
    platform: Platform,
    smbios: Option<Event>,
    events: &mut Vec<Event>,
) -> Result<(), PredictError> {
    // PCR4: the kernel image, loaded before ReadyToBoot by the -kernel path.
    let kernel_digests = pe::authenticode(kernel.kernel)?;
    events.push(Event {
        pcr: 4,
        event_type: EventType::EFI_BOOT_SERVICES_APPLICATION,
        digests: kernel_digests,
        data: None,
        label: "pe:kernel".into(),
        // QEMU writes the initrd address and size into the setup header it hands over, unless
        // the firmware loads the unpatched image (then the QEMU version alone decides that).
        varies_with: if q.kernel_measured_unpatched_on(platform) {
            vec![Input::Kernel, Input::QemuVersion]
        } else {
            vec![
                Input::Kernel,
                Input::Initrd,
                Input::Memory,
                Input::QemuVersion,
            ]
        },
        platforms: Platforms::BOTH,
    });

    // PCR1: SMBIOS, BootOrder and the options OVMF registers for -kernel boot (its own).
    events.extend(smbios);
    let own = firmware_boot_options(q)?;
    events.push(uefi::boot_order(
        &(0..own.len() as u16).collect::<Vec<u16>>(),
    ));
    for (number, option) in (0u16..).zip(&own) {
        events.push(uefi::boot_option(number, option));
    }

    ready_to_boot(q, events);

    // PCR9 (RTMR2): what the Linux EFI stub measures: LoadOptions, then the initrd.
    events.push(load_options_event(&kernel_load_options(
        kernel.cmdline,
        kernel.initrd.is_some() && q.kernel_load_options_initrd,
        q.kernel_load_options_initrd_first,
    )));
    if let Some(initrd) = kernel.initrd {
        events.push(tagged_event_of(
            "linux:initrd",
            LINUX_EFI_INITRD_TAG,
            b"Linux initrd\0",
            initrd.clone(),
            &[Input::Initrd],
        ));
    }

    // PCR5: ExitBootServices.
    events.push(uefi::efi_action(EfiAction::ExitBootServicesInvocation));
    events.push(uefi::efi_action(
        EfiAction::ExitBootServicesReturnedWithSuccess,
    ));
    Ok(())
}

/// The boot options OVMF registers before any device's, encoded: its boot manager menu, and
/// with BootManagerMenuApp also "EFI Firmware Setup" (quirk `ovmf-boot-manager-menu-app`).
fn firmware_boot_options(q: &Quirks) -> Result<Vec<Vec<u8>>, PredictError> {
    let mut options = vec![boot_manager_menu(q.boot_menu).encode()?];
    if q.boot_menu == BootManagerMenu::BootManagerMenuApp {
        options.push(
            ovmf::fv_application(
                ovmf::UI_APP,
                "EFI Firmware Setup",
                LOAD_OPTION_ACTIVE | LOAD_OPTION_CATEGORY_APP,
            )
            .encode()?,
        );
    }
    Ok(options)
}

/// ReadyToBoot: the action, then separators.
fn ready_to_boot(q: &Quirks, events: &mut Vec<Event>) {
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
}

/// The LoadOptions OVMF gives a `-kernel` image (UTF-16LE with its NUL): the fw_cfg command
/// line and, with an initrd, `initrd=initrd` after it or before it (see the quirks).
///
/// OVMF formats them with `UnicodeSPrintAsciiFormat` `%a` (OvmfPkg/Library/X86QemuLoadImageLib),
/// which widens every byte of the command line to one CHAR16 (MdePkg BasePrintLib masks `%a`
/// characters with 0xff): nothing decodes UTF-8, so `ü` (C3 BC) becomes U+00C3 U+00BC and the
/// kernel shows `Ã¼` in /proc/cmdline.
fn kernel_load_options(cmdline: &str, initrd: bool, initrd_first: bool) -> Vec<u8> {
    let mut text: Vec<u8> = Vec::with_capacity(cmdline.len() + 16);
    match (initrd, initrd_first) {
        (false, _) => text.extend_from_slice(cmdline.as_bytes()),
        (true, true) => {
            text.extend_from_slice(b"initrd=initrd ");
            text.extend_from_slice(cmdline.as_bytes());
        }
        (true, false) => {
            text.extend_from_slice(cmdline.as_bytes());
            text.extend_from_slice(b" initrd=initrd");
        }
    }
    text.push(0);
    text.iter().flat_map(|&b| [b, 0]).collect()
}

/// `LOADED_IMAGE::LoadOptions` as the Linux EFI stub measures them: the firmware's bytes.
fn load_options_event(load_options: &[u8]) -> Event {
    tagged_event(
        "linux:cmdline",
        LINUX_EFI_LOAD_OPTIONS_TAG,
        b"LOADED_IMAGE::LoadOptions\0",
        load_options,
        &[Input::Cmdline],
    )
}

/// OVMF → systemd-boot → UKI → kernel from a disk.
fn uki_boot_events(
    boot: &UkiBoot,
    q: &Quirks,
    smbios: Option<Event>,
    smbios_tables: Option<&[u8]>,
    events: &mut Vec<Event>,
) -> Result<(), PredictError> {
    let uki = Uki::parse(boot.uki).map_err(image_err("UKI"))?;

    disk_boot_variables(
        &boot.disk_pci,
        &boot.other_disks_pci,
        &boot.nics,
        q,
        smbios,
        events,
    )?;

    // PCR5: the GPT of the disk the boot option names; PCR4: systemd-boot.
    events.push(gpt::gpt_event(boot.disk, boot.block_size)?);
    let mut bootloader = pe::boot_services_application("systemd-boot", boot.bootloader, None)
        .map_err(image_err("systemd-boot"))?;
    bootloader.varies_with = vec![Input::Bootloader, Input::SystemdVersion];
    events.push(bootloader);
    if q.boot_measures_smbios {
        let tables = smbios_tables.ok_or(PredictError::FirmwareFact {
            what: "the SMBIOS structures systemd-boot measures",
            quirk: "systemd-boot-smbios-measured",
            missing: "QEMU's etc/smbios/smbios-tables is not known",
        })?;
        events.extend(systemd::smbios_events(&crate::smbios::qemu_structures(
            tables,
        )?));
    }
    if let (true, Some(conf)) = (q.boot_measures_loader_conf, boot.loader_conf) {
        events.push(systemd::loader_conf_event(conf));
    }

    // PCR4: the UKI, started by systemd-boot.
    let mut uki_app =
        pe::boot_services_application("uki", boot.uki, None).map_err(image_err("UKI"))?;
    uki_app.varies_with = vec![Input::Uki, Input::Kernel, Input::Initrd, Input::Cmdline];
    events.push(uki_app);

    let section_cmdline = uki.cmdline().map_err(image_err("UKI"))?;
    let cmdline = systemd::mangle_cmdline(
        boot.cmdline_override
            .or(section_cmdline.as_deref())
            .unwrap_or_default(),
    );
    let passed = q.boot_passes_uki_cmdline && !cmdline.is_empty();
    if passed {
        events.push(systemd::load_options_event(
            "systemd-boot:cmdline",
            &cmdline,
        ));
    }
    // PCR11: the stub's sections; PCR12: the LoadOptions it was given.
    events.extend(
        systemd::stub_section_events(&uki, q, boot.cmdline_override).map_err(image_err("UKI"))?,
    );
    if passed {
        events.push(systemd::load_options_event("stub:cmdline", &cmdline));
    }

    // PCR4: the kernel the stub loads from `.linux`; PCR9: what the Linux EFI stub measures.
    let linux = uki.linux().map_err(image_err("UKI .linux"))?;
    if q.stub_kernel_measured_by_firmware {
        let mut kernel = pe::boot_services_application("kernel", &linux, None)
            .map_err(image_err("UKI .linux"))?;
        kernel.varies_with = vec![Input::Kernel];
        events.push(kernel);
    }
    // systemd-stub decodes the UTF-8 `.cmdline` to UTF-16 (efi-string.c `xstrn8_to_16`), unlike
    // OVMF's `-kernel` loader, which widens bytes.
    let mut load_options = uefi::utf16le(&cmdline);
    load_options.extend_from_slice(&[0, 0]);
    events.push(load_options_event(&load_options));
    let initrd = systemd::stub_initrd(&uki, q).map_err(image_err("UKI"))?;
    events.push(tagged_event_of(
        "linux:initrd",
        LINUX_EFI_INITRD_TAG,
        b"Linux initrd\0",
        Digests::of(&initrd),
        &[Input::Initrd, Input::SystemdVersion],
    ));

    // PCR5: ExitBootServices.
    events.push(uefi::efi_action(EfiAction::ExitBootServicesInvocation));
    events.push(uefi::efi_action(
        EfiAction::ExitBootServicesReturnedWithSuccess,
    ));
    Ok(())
}

/// PCR1 of a disk boot: SMBIOS, BootOrder and the options OVMF has at ReadyToBoot (its own, each
/// disk with the boot disk first, the NICs', the shell), then ReadyToBoot.
fn disk_boot_variables(
    disk_pci: &[(u8, u8)],
    other_disks_pci: &[Vec<(u8, u8)>],
    nics: &[Nic],
    q: &Quirks,
    smbios: Option<Event>,
    events: &mut Vec<Event>,
) -> Result<(), PredictError> {
    events.extend(smbios);
    let disks: Vec<&[(u8, u8)]> = std::iter::once(disk_pci)
        .chain(other_disks_pci.iter().map(Vec::as_slice))
        .collect();
    let own = firmware_boot_options(q)?;
    let mut options: Vec<crate::devpath::LoadOption> = disks
        .iter()
        .enumerate()
        .map(|(i, pci)| ovmf::misc_device(pci, i + 1))
        .collect();
    for nic in nics {
        options.extend(ovmf::network_boot_options(
            &nic.pci,
            nic.mac,
            q.ovmf_network_boot_options,
        ));
    }
    let shell_number = u16::try_from(own.len() + options.len())
        .map_err(|_| PredictError::TooManyDisks(disks.len()))?;
    events.push(uefi::boot_order(&(0..=shell_number).collect::<Vec<u16>>()));
    for (number, option) in (0u16..).zip(&own) {
        events.push(uefi::boot_option(number, option));
    }
    for (number, option) in (own.len() as u16..).zip(&options) {
        events.push(uefi::boot_option(number, &option.encode()?));
    }
    // edk2-stable202505 896907b53b makes the shell an app (no autoboot fallback).
    let shell_attributes = match q.boot_menu {
        BootManagerMenu::UiApp => LOAD_OPTION_ACTIVE,
        BootManagerMenu::BootManagerMenuApp => LOAD_OPTION_ACTIVE | LOAD_OPTION_CATEGORY_APP,
    };
    let shell =
        ovmf::fv_application(ovmf::UEFI_SHELL, "EFI Internal Shell", shell_attributes).encode()?;
    events.push(uefi::boot_option(shell_number, &shell));

    // ReadyToBoot (no image is loaded before it on this path).
    ready_to_boot(q, events);
    Ok(())
}

/// OVMF → shim → GRUB → kernel from a disk.
fn grub_boot_events(
    boot: &GrubBoot,
    q: &Quirks,
    smbios: Option<Event>,
    events: &mut Vec<Event>,
) -> Result<(), PredictError> {
    disk_boot_variables(
        &boot.disk_pci,
        &boot.other_disks_pci,
        &boot.nics,
        q,
        smbios,
        events,
    )?;
    // PCR5: the GPT; PCR4: shim; what shim logs (PCR14, PCR7); GRUB, which shim starts through
    // the firmware's LoadImage (measured by it).
    events.push(gpt::gpt_event(boot.disk, boot.block_size)?);
    let mut shim =
        pe::boot_services_application("shim", boot.shim, None).map_err(image_err("shim"))?;
    shim.varies_with = vec![Input::Bootloader];
    events.push(shim);
    events.extend(crate::grub::shim_events(boot.shim)?);
    let mut grub =
        pe::boot_services_application("grub", boot.grub, None).map_err(image_err("GRUB"))?;
    grub.varies_with = vec![Input::Bootloader];
    events.push(grub);

    // PCR8/9: GRUB's config, commands and files. GRUB loads the kernel itself: no PCR4 event.
    let (grub_events, linux_cmdline) = crate::grub::grub_events(&boot.files, q.grub_config_reads)?;
    events.extend(grub_events);
    let linux_cmdline = linux_cmdline.ok_or(PredictError::GrubWithoutLinux)?;

    // PCR9: what the Linux EFI stub measures: GRUB's LoadOptions (UTF-16 without a terminating
    // NUL, as the capture shows), and the initrd GRUB serves it.
    events.push(load_options_event(&uefi::utf16le(&linux_cmdline)));
    events.push(tagged_event_of(
        "linux:initrd",
        LINUX_EFI_INITRD_TAG,
        b"Linux initrd\0",
        boot.files.initrd.clone(),
        &[Input::Initrd],
    ));
    events.push(uefi::efi_action(EfiAction::ExitBootServicesInvocation));
    events.push(uefi::efi_action(
        EfiAction::ExitBootServicesReturnedWithSuccess,
    ));
    Ok(())
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
    tagged_event_of(label, id, description, Digests::of(measured), varies)
}

/// [`tagged_event`] of bytes already hashed.
fn tagged_event_of(
    label: &str,
    id: u32,
    description: &[u8],
    digests: Digests,
    varies: &[Input],
) -> Event {
    let mut data = id.to_le_bytes().to_vec();
    data.extend_from_slice(&(description.len() as u32).to_le_bytes());
    data.extend_from_slice(description);
    Event {
        pcr: 9,
        event_type: EventType::EVENT_TAG,
        digests,
        data: Some(data),
        label: label.into(),
        varies_with: Vec::new(),
        platforms: Platforms::BOTH,
    }
    .varies_with(varies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quirks::Version;

    /// The vTPM exceptions: PCR0's firmware volume blobs are not judged, its CRTM version only
    /// where the quirks do not know it; anything else in PCR0 or any event in PCR10 is.
    #[test]
    fn vtpm_prediction_judges_all_but_firmware_volumes() {
        let ev = |pcr, t| Event::hashed_data(pcr, t, "", b"x".to_vec());
        for (ovmf, crtm_judged) in [
            (Version(2022, 11), true),
            (Version(2025, 2), false),
            (Version(2026, 8), true),
        ] {
            let quirks = Quirks::resolve(Some(ovmf), None, None);
            let prediction = Prediction {
                platform: Platform::Vtpm,
                events: Vec::new(),
                full_pcrs: BTreeSet::new(),
                unpredicted: vtpm_unpredicted(&quirks),
            };
            assert!(!prediction.judges(&ev(0, EventType::EFI_PLATFORM_FIRMWARE_BLOB)));
            assert!(!prediction.judges(&ev(0, EventType::EFI_PLATFORM_FIRMWARE_BLOB2)));
            assert_eq!(
                prediction.judges(&ev(0, EventType::S_CRTM_VERSION)),
                crtm_judged
            );
            assert!(prediction.judges(&ev(0, EventType::IPL)));
            assert!(prediction.judges(&ev(10, EventType::IPL)));
            assert!(prediction.judges(&ev(8, EventType::EFI_PLATFORM_FIRMWARE_BLOB)));
            let pcrs: Vec<u32> = prediction.unpredicted.iter().map(|u| u.pcr).collect();
            assert_eq!(pcrs, [0, 10]);
        }
    }

    /// OVMF widens each command-line byte to a CHAR16 (`%a`), so UTF-8 `é` (C3 A9) is two
    /// characters, U+00C3 U+00A9; ` initrd=initrd` goes after the command line before
    /// edk2 PR #11115 and `initrd=initrd ` before it since.
    #[test]
    fn kernel_load_options_widen_bytes_around_the_initrd_option() {
        let widened = |text: &[u8]| -> Vec<u8> { text.iter().flat_map(|&b| [b, 0]).collect() };
        assert_eq!(
            kernel_load_options("é", false, false),
            [0xc3, 0, 0xa9, 0, 0, 0]
        );
        assert_eq!(
            kernel_load_options("a=é", true, false),
            widened(b"a=\xc3\xa9 initrd=initrd\0")
        );
        assert_eq!(
            kernel_load_options("a=é", true, true),
            widened(b"initrd=initrd a=\xc3\xa9\0")
        );
        // Not what a UTF-8 decoder would give (U+00E9 alone).
        assert_ne!(kernel_load_options("é", false, false), [0xe9, 0, 0, 0]);
    }

    /// An OVMF that measures its version string and SMBIOS table cannot be predicted without
    /// them: a clear error naming the quirk, never an event left out.
    #[test]
    fn missing_firmware_facts_are_errors_naming_the_quirk() {
        let quirks = Quirks::resolve(Some(Version(2026, 8)), Some(Version(7, 2)), None);
        let strings = FirmwareStrings {
            vendor: "v".into(),
            version: "2026.08+ds-2".into(),
            release_date: "09/26/2026".into(),
        };
        let files = |smbios_tables: Option<&[u8]>| -> BTreeMap<String, Vec<u8>> {
            smbios_tables
                .map(|t| (crate::smbios::QEMU_TABLES_FILE.to_string(), t.to_vec()))
                .into_iter()
                .collect()
        };
        let (empty_tables, no_tables, bad_tables) =
            (files(Some(&[])), files(None), files(Some(&[1, 2])));
        let inputs = |fw_cfg_files, firmware_strings| Inputs {
            platform: Platform::Vtpm,
            quirks: &quirks,
            firmware: &[],
            memory: 2 << 30,
            acpi_blobs: Vec::new(),
            option_roms: Vec::new(),
            firmware_strings,
            fw_cfg_files,
            fw_cfg_boot_menu: None,
            boot: Boot::Kernel(KernelBoot {
                kernel: b"not reached",
                initrd: None,
                cmdline: "",
            }),
        };
        let err = predict(&inputs(&empty_tables, None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ovmf-crtm-version-is-firmware-version"),
            "{err}"
        );
        let err = predict(&inputs(&no_tables, Some(&strings)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ovmf-smbios-measured") && err.contains("etc/smbios/smbios-tables"),
            "{err}"
        );
        // The SMBIOS parser's own error is the cause, not repeated in this one's message.
        let err = predict(&inputs(&bad_tables, Some(&strings))).unwrap_err();
        assert!(matches!(err, PredictError::Smbios(_)), "{err:?}");
        assert_eq!(err.to_string(), "SMBIOS");
    }
}
