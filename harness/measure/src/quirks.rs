//! Version-dependent firmware, QEMU and systemd behaviour, as data.
//!
//! Every behaviour that changed between versions is one row in [`ROWS`]: which component, which
//! versions, what it sets and why (the upstream change). `Quirks::resolve` applies the rows that
//! match the versions in use.

use std::fmt;

/// Which component a row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Ovmf,
    Qemu,
    SystemdStub,
    /// systemd-boot; resolved from the same systemd version as the stub (one package ships both).
    SystemdBoot,
    /// Debian's signed GRUB (grub-efi-amd64-signed); applied by [`Quirks::with_grub`].
    Grub,
}

/// A `major.minor` version as the packages name them (OVMF `2022.11`, QEMU `7.2`, systemd `257`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32);

impl Version {
    /// Parse the leading `major[.minor]` of a version string (`2025.02-8+deb13u1` → 2025.2,
    /// `1:10.0.2+ds-2` → 10.0, `257.13-1` → 257.13).
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.split_once(':').map_or(text, |(_, rest)| rest);
        let mut parts = text.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
        Some(Version(major, minor))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// How the firmware holds the `SecureBoot` variable when Secure Boot is not enrolled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecureBootVar {
    /// Not set: measured with empty data.
    Absent,
    /// Set to `00` (disabled).
    Disabled,
}

/// What OVMF measures as EV_S_CRTM_VERSION into PCR0 on vTPM (its PcdFirmwareVersionString).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrtmVersion {
    /// This string (edk2-stable202211 builds: empty).
    Known(String),
    /// The firmware build's version string ([`crate::smbios::FirmwareStrings::version`]).
    FirmwareVersionString,
    /// Not known: PCR0 is then only partly predicted.
    Unknown,
}

/// Where OVMF puts the PCI Express MMCONFIG window and how it places the 64-bit aperture, which
/// the fw_cfg oracle must program as the firmware does before it reads ACPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OvmfPciLayout {
    /// edk2-stable202211: `PcdPciExpressBaseAddress|0xB0000000`.
    Stable202211,
    /// edk2-stable202502: `PcdPciExpressBaseAddress|0xE0000000`, E820 reservations avoided.
    Stable202502,
}

/// The resolved behaviour for one combination of versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quirks {
    pub secure_boot: SecureBootVar,
    /// The chipset layout OVMF programs (the oracle programs the same before reading ACPI).
    pub ovmf_pci_layout: OvmfPciLayout,
    /// UTF-16 `PcdFirmwareVersionString` measured as EV_S_CRTM_VERSION into PCR0 on vTPM.
    pub crtm_version: CrtmVersion,
    /// OVMF measures the fw_cfg ACPI blobs ("ACPI DATA") into PCR1 with a TPM too, not only in a TD.
    pub acpi_measured_on_vtpm: bool,
    /// OVMF's `-kernel` loader appends ` initrd=initrd` to LoadOptions when an initrd is given.
    pub kernel_load_options_initrd: bool,
    /// ... and puts it first instead (`initrd=initrd ` + command line).
    pub kernel_load_options_initrd_first: bool,
    /// The boot manager menu OVMF registers as Boot0000; with `BootManagerMenuApp` it also
    /// registers "EFI Firmware Setup" (UiApp) as Boot0001, and its shell option is an app
    /// (LOAD_OPTION_CATEGORY_APP).
    pub boot_menu: crate::devpath::ovmf::BootManagerMenu,
    /// OVMF measures its SMBIOS table into PCR1 at ReadyToBoot (EV_EFI_HANDOFF_TABLES).
    pub smbios_measured: bool,
    /// The network boot options OVMF registers per NIC, in order (a UKI boot lists them).
    pub ovmf_network_boot_options: &'static [crate::devpath::ovmf::NetworkBoot],
    /// At ReadyToBoot a TD gets one separator, in RTMR1 only (PCR1's is folded into the early
    /// RTMR0 separator).
    pub td_ready_to_boot_separator_rtmr1_only: bool,
    /// systemd-stub: the UKI sections it measures into PCR11 (name, then data), in this order.
    pub stub_measured_sections: &'static [&'static str],
    /// systemd-stub wraps `.osrel` in a `/.extra/os-release` cpio appended to the initrd it hands
    /// to the kernel (so the initrd the kernel measures is not the `.initrd` section alone).
    pub stub_initrd_osrel_cpio: bool,
    /// systemd-boot measures `loader/loader.conf` (EV_EVENT_TAG, PCR5) when it exists.
    pub boot_measures_loader_conf: bool,
    /// systemd-boot measures the firmware's SMBIOS type 1, 2 and 11 structures into PCR1.
    pub boot_measures_smbios: bool,
    /// The firmware measures (PCR4) the kernel systemd-stub loads from `.linux`.
    pub stub_kernel_measured_by_firmware: bool,
    /// systemd-boot passes a UKI's `.cmdline` as its LoadOptions and measures it into PCR12; the
    /// stub, seeing LoadOptions, measures them into PCR12 again.
    pub boot_passes_uki_cmdline: bool,
    /// The order QEMU adds the TDVF pages to a TD in, which MRTD hashes.
    pub mrtd_page_order: crate::tdvf::PageOrder,
    /// QEMU of this version has TDX builds, whose ACPI tables TD predictors (dstack-mr) model.
    pub qemu_has_tdx_builds: bool,
    /// QEMU's TDX needs guest RAM as an explicit `memory-backend` named by `-machine` (the
    /// pre-upstream TDX builds), rather than upstream's implicit one.
    pub tdx_named_memory_backend: bool,
    /// QEMU serves a `-kernel` image a second time, unpatched, as fw_cfg file `etc/boot/kernel`.
    pub qemu_serves_unpatched_kernel: bool,
    /// OVMF's `-kernel` loader takes fw_cfg file `etc/boot/kernel` when QEMU serves it, instead of
    /// the setup and kernel items QEMU patched.
    pub ovmf_prefers_unpatched_kernel: bool,
    /// In a TD, OVMF measures the fw_cfg items it caches early into RTMR0 (see
    /// [`crate::fwcfg`]).
    pub td_measures_fw_cfg_items: bool,
    /// QEMU leaves the `-kernel` setup header unpatched for a confidential guest: in a TD the
    /// setup and kernel items are the file as given.
    pub qemu_coco_kernel_unpatched: bool,
    /// How often GRUB's verifier measures grub.cfg into PCR9 (0: this GRUB is not predicted).
    pub grub_config_reads: usize,
    /// The ids of the rows that made this value, in table order: reports list them so that a
    /// version bump shows which rules changed.
    pub rows: Vec<&'static str>,
}

/// systemd v252 `src/boot/efi/tpm-pcr.c` `unified_sections[]` without `.pcrsig` (the stub never
/// measures the signature of the expected measurements).
pub const STUB_SECTIONS_252: &[&str] = &[
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
];
/// systemd v254 `src/fundamental/tpm-pcr.c` `unified_sections[]` without `.pcrsig`: v252's list
/// with `.uname` and `.sbat` after `.dtb` (the order of the section-name strings in Debian's
/// 254.26 `linuxx64.efi.stub`, and the order its PCR11 events were observed in).
pub const STUB_SECTIONS_254: &[&str] = &[
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".uname", ".sbat", ".pcrpkey",
];
/// systemd v257 `src/fundamental/uki.c` `unified_sections[]` without `.pcrsig`
/// (`unified_section_measure`).
pub const STUB_SECTIONS_257: &[&str] = &[
    ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".sbat",
    ".pcrpkey", ".profile", ".dtbauto", ".hwids",
];

use crate::devpath::ovmf::NetworkBoot;

/// Per NIC: iPXE's PXEv4 (its option ROM), then edk2's PXEv4, PXEv6, HTTPv4, HTTPv6. Observed
/// on a vTPM UKI boot of Debian's OVMF 2022.11 with two virtio-net NICs (Boot0002–Boot000B).
const NETWORK_BOOT_2022_11: &[NetworkBoot] = &[
    NetworkBoot::IpxeMac,
    NetworkBoot::PxeIpv4,
    NetworkBoot::PxeIpv6,
    NetworkBoot::HttpIpv4,
    NetworkBoot::HttpIpv6,
];
const NETWORK_BOOT_IPXE_ONLY: &[NetworkBoot] = &[NetworkBoot::IpxeMac];

impl Quirks {
    /// The defaults rows override: edk2-stable202211 and systemd v252 behaviour.
    fn baseline() -> Quirks {
        Quirks {
            secure_boot: SecureBootVar::Disabled,
            ovmf_pci_layout: OvmfPciLayout::Stable202211,
            crtm_version: CrtmVersion::Known(String::new()),
            acpi_measured_on_vtpm: false,
            kernel_load_options_initrd: true,
            kernel_load_options_initrd_first: false,
            boot_menu: crate::devpath::ovmf::BootManagerMenu::UiApp,
            smbios_measured: false,
            ovmf_network_boot_options: NETWORK_BOOT_2022_11,
            td_ready_to_boot_separator_rtmr1_only: true,
            stub_measured_sections: STUB_SECTIONS_252,
            stub_initrd_osrel_cpio: false,
            boot_measures_loader_conf: false,
            boot_measures_smbios: false,
            stub_kernel_measured_by_firmware: true,
            boot_passes_uki_cmdline: true,
            mrtd_page_order: crate::tdvf::PageOrder::SinglePass,
            qemu_has_tdx_builds: false,
            tdx_named_memory_backend: false,
            qemu_serves_unpatched_kernel: false,
            ovmf_prefers_unpatched_kernel: false,
            td_measures_fw_cfg_items: false,
            qemu_coco_kernel_unpatched: false,
            grub_config_reads: 0,
            rows: Vec::new(),
        }
    }

    /// OVMF measures (Authenticode, PCR4 / RTMR1) the `-kernel` image exactly as the file was
    /// given, not as QEMU patched its setup header: both sides of the change are in use.
    pub fn kernel_measured_unpatched(&self) -> bool {
        self.qemu_serves_unpatched_kernel && self.ovmf_prefers_unpatched_kernel
    }

    /// Whether the prediction needs the firmware build's strings (its CRTM version or SMBIOS
    /// type 0, see [`crate::smbios::FirmwareStrings`]).
    pub fn needs_firmware_strings(&self) -> bool {
        self.smbios_measured || self.crtm_version == CrtmVersion::FirmwareVersionString
    }

    /// The same on `platform`: a TD on a QEMU that does not patch a confidential guest's
    /// kernel also loads the file as given, whichever fw_cfg items OVMF takes it from.
    pub fn kernel_measured_unpatched_on(&self, platform: crate::Platform) -> bool {
        self.kernel_measured_unpatched()
            || (platform == crate::Platform::Tdx && self.qemu_coco_kernel_unpatched)
    }

    /// Apply every row matching the versions. A component whose version is unknown matches no
    /// rows, so its baseline stays.
    pub fn resolve(
        ovmf: Option<Version>,
        qemu: Option<Version>,
        systemd: Option<Version>,
    ) -> Quirks {
        let mut q = Quirks::baseline();
        for row in Quirks::applied(ovmf, qemu, systemd) {
            (row.apply)(&mut q);
            q.rows.push(row.id);
        }
        q
    }

    /// These quirks with the rows of GRUB `grub` applied (a shim + GRUB boot).
    pub fn with_grub(mut self, grub: Option<Version>) -> Quirks {
        for row in Quirks::applied_grub(grub) {
            (row.apply)(&mut self);
            self.rows.push(row.id);
        }
        self
    }

    /// The GRUB rows matching `grub`, in table order.
    pub fn applied_grub(grub: Option<Version>) -> Vec<&'static Row> {
        ROWS.iter()
            .filter(|row| row.component == Component::Grub)
            .filter(|row| {
                grub.is_some_and(|v| {
                    row.since.is_none_or(|s| v >= s) && row.until.is_none_or(|u| v < u)
                })
            })
            .collect()
    }

    /// The rows matching the versions, in table order (what `resolve` applies; also for reports).
    pub fn applied(
        ovmf: Option<Version>,
        qemu: Option<Version>,
        systemd: Option<Version>,
    ) -> Vec<&'static Row> {
        ROWS.iter()
            .filter(|row| {
                let version = match row.component {
                    Component::Ovmf => ovmf,
                    Component::Qemu => qemu,
                    Component::SystemdStub | Component::SystemdBoot => systemd,
                    Component::Grub => None,
                };
                version.is_some_and(|v| {
                    row.since.is_none_or(|s| v >= s) && row.until.is_none_or(|u| v < u)
                })
            })
            .collect()
    }
}

/// One version-dependent behaviour.
pub struct Row {
    pub id: &'static str,
    pub component: Component,
    /// First version with the behaviour (inclusive).
    pub since: Option<Version>,
    /// First version without it (exclusive).
    pub until: Option<Version>,
    pub apply: fn(&mut Quirks),
    /// The upstream behaviour, where it lives, and how we confirmed it.
    pub reason: &'static str,
}

pub static ROWS: &[Row] = &[
    Row {
        id: "grub-config-measured-twice",
        component: Component::Grub,
        since: Some(Version(2, 12)),
        until: None,
        apply: |q| q.grub_config_reads = 2,
        reason: "Debian's signed GRUB 2.12 (2.12-9+deb13u4) logs its grub.cfg into PCR9 twice, \
                 the same path and digest back to back, before the first grub_cmd \
                 (harness/fixtures/grub/grub-2.12-ovmf-2022.11.tcg2, events 29-30). Its TPM \
                 verifier (grub-core/commands/tpm.c grub_tpm_verify_write) measures each \
                 read-for-verification of a file; which two opens of normal/main.c's \
                 read_config_file path cause it was not pinned down in the source, so the \
                 count is a measured fact of this build. GRUB 2.06 is not predicted (resolve \
                 refuses it: its boot gives Linux no TPMEventLog table, so no vtpm run could \
                 check a prediction).",
    },
    Row {
        id: "ovmf-pciexbar-0xe0000000",
        component: Component::Ovmf,
        since: Some(Version(2023, 0)),
        until: None,
        apply: |q| q.ovmf_pci_layout = OvmfPciLayout::Stable202502,
        reason: "OvmfPkg/OvmfPkgX64.dsc sets PcdPciExpressBaseAddress to 0xB0000000 at \
                 edk2-stable202211 and to 0xE0000000 at edk2-stable202502, whose PlatformInitLib \
                 MemDetect.c also keeps the 64-bit aperture clear of E820 reservations \
                 (qemu::fwcfg::FirmwarePci). The two are the releases pinned here; the cut at \
                 the first release after 2022.11 is where the harness has always put it, the \
                 releases 2023.02–2024.11 are not verified.",
    },
    Row {
        id: "qemu-8-tdx-two-pass-mrtd",
        component: Component::Qemu,
        since: Some(Version(8, 0)),
        until: Some(Version(9, 0)),
        apply: |q| q.mrtd_page_order = crate::tdvf::PageOrder::TwoPass,
        reason: "The QEMU 8.x TDX builds (Canonical's 8.2) add every TDVF section's pages first \
                 and extend them after (TDH.MEM.PAGE.ADD, then TDH.MR.EXTEND per section), so \
                 MRTD hashes each section in two passes; ≥ 9.0 interleaves them. dstack-mr's \
                 `versioned_options` defaults two_pass_add_pages to exactly 8.0 ≤ v < 9.0.",
    },
    Row {
        id: "qemu-8-tdx-builds",
        component: Component::Qemu,
        since: Some(Version(8, 0)),
        until: None,
        apply: |q| q.qemu_has_tdx_builds = true,
        reason: "The first QEMU with TDX is the 8.x line of pre-upstream builds (Canonical's \
                 8.2, canonical/tdx); upstream TDX landed in 10.1 (docs/system/i386/tdx.rst). \
                 dstack-mr's `--qemu-version` selects the ACPI tables of those TDX builds, from \
                 8.0 on; an older QEMU's tables are not among them.",
    },
    Row {
        id: "qemu-pre-upstream-tdx-memory-backend",
        component: Component::Qemu,
        since: Some(Version(8, 0)),
        until: Some(Version(10, 1)),
        apply: |q| q.tdx_named_memory_backend = true,
        reason: "Upstream TDX landed in QEMU 10.1 (docs/system/i386/tdx.rst: no memory backend \
                 needed); the earlier TDX builds (Canonical 8.2, canonical/tdx guest-tools \
                 run_td) name a memory-backend-ram in -machine memory-backend=.",
    },
    Row {
        id: "ovmf-secureboot-absent",
        component: Component::Ovmf,
        since: Some(Version(2023, 0)),
        until: None,
        apply: |q| q.secure_boot = SecureBootVar::Absent,
        reason: "Debian's OVMF 2025.02 no longer sets SecureBoot=00 when Secure Boot is not \
                 enrolled: PCR7/RTMR0 measures it with empty data (9dc3a1f8…, also in dstack's \
                 TD capture); 2022.11 measures `00`. Confirmed on vTPM boots of both packages.",
    },
    Row {
        id: "ovmf-crtm-version-unknown",
        component: Component::Ovmf,
        since: Some(Version(2023, 0)),
        until: Some(Version(2025, 5)),
        apply: |q| q.crtm_version = CrtmVersion::Unknown,
        reason: "Debian's OVMF 2025.02 sets PcdFirmwareVersionString to the package version, \
                 measured as EV_S_CRTM_VERSION in PCR0; 2022.11 measures an empty string. \
                 PCR0 is vTPM-only and partly predicted, so we do not guess the string.",
    },
    Row {
        id: "ovmf-acpi-measured-with-tpm",
        component: Component::Ovmf,
        since: Some(Version(2023, 0)),
        until: None,
        apply: |q| q.acpi_measured_on_vtpm = true,
        reason: "OvmfPkg/AcpiPlatformDxe QemuFwCfgAcpi.c measures each fw_cfg ACPI blob as \
                 EV_PLATFORM_CONFIG_FLAGS \"ACPI DATA\" into PCR1 with any TCG2 protocol, not \
                 only in a TD (observed: four events on vTPM with 2025.02, none with 2022.11).",
    },
    Row {
        id: "systemd-stub-254-sections",
        component: Component::SystemdStub,
        since: Some(Version(254, 0)),
        until: Some(Version(257, 0)),
        apply: |q| q.stub_measured_sections = STUB_SECTIONS_254,
        reason: "systemd v254 added .uname and .sbat to `unified_sections[]` (src/fundamental/\
                 tpm-pcr.c); the stub measures them after .dtb. Observed: stub 254.26 \
                 (bookworm-backports) logs .uname and .sbat name/data pairs after .initrd, and \
                 nothing else new. 255 and 256 are not verified and take this list.",
    },
    Row {
        id: "systemd-stub-257-sections",
        component: Component::SystemdStub,
        since: Some(Version(257, 0)),
        until: None,
        apply: |q| q.stub_measured_sections = STUB_SECTIONS_257,
        reason: "systemd-stub measures the UKI sections of `unified_sections[]` (src/fundamental/\
                 uki.c) except .pcrsig; v257 added .ucode, .uname, .sbat, .profile, .dtbauto, \
                 .hwids to v254's list. Observed: stub 257 logs .uname and .sbat pairs, stub 252 \
                 none.",
    },
    Row {
        id: "systemd-stub-osrel-initrd",
        component: Component::SystemdStub,
        since: Some(Version(257, 0)),
        until: None,
        apply: |q| q.stub_initrd_osrel_cpio = true,
        reason: "systemd-stub v257 `generate_embedded_initrds` packs .osrel as \
                 /.extra/os-release (cpio, dir 0555, file 0444, unmeasured) and `combine_initrds` \
                 appends it to .initrd, 4-byte aligned. Observed: the initrd read back from guest \
                 memory is .initrd plus a 416-byte cpio, and its digest is the PCR9 `Linux \
                 initrd` event; stubs 252 and 254 pass .initrd alone (observed).",
    },
    Row {
        id: "systemd-boot-loader-conf-measured",
        component: Component::SystemdBoot,
        since: Some(Version(257, 0)),
        until: None,
        apply: |q| q.boot_measures_loader_conf = true,
        reason: "systemd-boot measures loader/loader.conf as EV_EVENT_TAG 0xf5bc582a \
                 (\"loader.conf\") into PCR5 (docs/TPM2_PCR_MEASUREMENTS.md). Observed with \
                 257, absent with 252 and 254; 255–256 not verified.",
    },
    Row {
        id: "systemd-boot-uki-cmdline-not-passed",
        component: Component::SystemdBoot,
        since: Some(Version(257, 0)),
        until: None,
        apply: |q| q.boot_passes_uki_cmdline = false,
        reason: "systemd-boot 252 passes a type #2 entry's .cmdline as LoadOptions and measures \
                 it into PCR12 (EV_IPL), and stub 252 measures the passed LoadOptions into PCR12 \
                 again: two identical PCR12 events observed. systemd-boot 257 passes none (the \
                 .cmdline is measured with the sections): PCR12 stays empty. 254 behaves as 252 \
                 (two PCR12 events observed); 255–256 not verified.",
    },
    Row {
        id: "qemu-boot-kernel-file",
        component: Component::Qemu,
        since: Some(Version(10, 0)),
        until: None,
        apply: |q| q.qemu_serves_unpatched_kernel = true,
        reason: "QEMU 10.0 hw/i386/x86-common.c `x86_load_linux` adds fw_cfg file \
                 \"etc/boot/kernel\": the -kernel image without the setup header patches \
                 (Gerd Hoffmann, Message-ID 20240905141211.1253307-5-kraxel@redhat.com: for \
                 secure boot of direct-boot kernels), beside the patched FW_CFG_SETUP_DATA/KERNEL_DATA items. Observed: \
                 the 10.0 oracle lists it (8222656 bytes = Debian's vmlinuz-6.1.0-50), 7.2 does not.",
    },
    Row {
        id: "ovmf-boot-kernel-file-preferred",
        component: Component::Ovmf,
        since: Some(Version(2025, 2)),
        until: None,
        apply: |q| q.ovmf_prefers_unpatched_kernel = true,
        reason: "edk2-stable202502 OvmfPkg/QemuKernelLoaderFsDxe (tianocore/edk2 PR #10628, \
                 \"add support for named blobs\") fetches the kernel from fw_cfg file \
                 etc/boot/kernel if present, else from the patched setup+kernel items. Observed \
                 with QEMU 10.0 + OVMF 2025.02: the PCR4 kernel event is the Authenticode \
                 SHA-384 of the vmlinuz file itself (0fbfe6ff…, whose SHA-256 matches the \
                 digest in Debian's signature); with QEMU 7.2, or OVMF 2022.11, the patched one.",
    },
    Row {
        id: "ovmf-crtm-version-is-firmware-version",
        component: Component::Ovmf,
        since: Some(Version(2025, 5)),
        until: None,
        apply: |q| q.crtm_version = CrtmVersion::FirmwareVersionString,
        reason: "Debian builds OVMF with PcdFirmwareVersionString set to the package version, \
                 which edk2's Tcg2Pei measures as EV_S_CRTM_VERSION into PCR0. Observed with \
                 2026.08+ds-2: the event holds \"2026.08+ds-2\", the same string as OVMF's SMBIOS \
                 type 0 BiosVersion. 2025.02 keeps ovmf-crtm-version-unknown (not re-verified).",
    },
    Row {
        id: "ovmf-smbios-measured",
        component: Component::Ovmf,
        since: Some(Version(2025, 5)),
        until: None,
        apply: |q| q.smbios_measured = true,
        reason: "edk2-stable202505 \"OvmfPkg: Enable Smbios measurement\" (cd76265f1a) adds \
                 MdeModulePkg SmbiosMeasurementDxe to OvmfPkgX64: at ReadyToBoot it measures the \
                 SMBIOS table, filtered by mSmbiosFilterStandardTableBlackList, into PCR1 as \
                 EV_EFI_HANDOFF_TABLES (see measure::smbios). Observed with 2026.08: one event \
                 after the -kernel image, before BootOrder, equal to the prediction; 2025.02 \
                 logs none.",
    },
    Row {
        id: "ovmf-boot-manager-menu-app",
        component: Component::Ovmf,
        since: Some(Version(2025, 5)),
        until: None,
        apply: |q| q.boot_menu = crate::devpath::ovmf::BootManagerMenu::BootManagerMenuApp,
        reason: "edk2-stable202505 9d9e3a2ba8 \"OvmfPkg: use BootManagerMenuApp as \
                 BootManagerMenu\", d433b4c8e4 \"Register UiApp as an optional boot option\" \
                 (\"EFI Firmware Setup\", ACTIVE|CATEGORY_APP) and 896907b53b \"Disable autoboot \
                 for EFI Shell\" (CATEGORY_APP). Observed with 2026.08: BootOrder [0000,0001] on \
                 -kernel (Boot0000 \"BootManagerMenuApp\" 0x109, Boot0001 \"EFI Firmware Setup\" \
                 0x101), [0000..0003] on a disk boot with the shell at 0x101.",
    },
    Row {
        id: "ovmf-network-boot-ipxe-only",
        component: Component::Ovmf,
        since: Some(Version(2023, 0)),
        until: None,
        apply: |q| q.ovmf_network_boot_options = NETWORK_BOOT_IPXE_ONLY,
        reason: "Debian's OVMF 2025.02 registers one network boot option per NIC, iPXE's \
                 \"UEFI PXEv4 (MAC:…)\" on `…/MAC(m)` from QEMU's efi-virtio.rom, and none of \
                 edk2's NetworkPkg PXE/HTTP options that 2022.11 adds after it. Observed on vTPM \
                 UKI boots with two virtio-net NICs, 2025.02 and 2026.08 alike.",
    },
    Row {
        id: "ovmf-kernel-initrd-option-first",
        component: Component::Ovmf,
        since: Some(Version(2025, 8)),
        until: None,
        apply: |q| q.kernel_load_options_initrd_first = true,
        reason: "edk2-stable202508 a2ac0fea49 \"[QemuLoadImageLib] Prefix initrd=initrd in \
                 cmdline\" (tianocore/edk2 PR #11115, X86QemuLoadImageLib): LoadOptions are \
                 \"initrd=initrd \" + the command line, so arguments after \"--\" reach init \
                 intact; 2022.11 and 2025.02 append \" initrd=initrd\" (observed on vTPM boots of \
                 both). Observed with 2026.08: the Linux LoadOptions event of -kernel boots.",
    },
    Row {
        id: "systemd-boot-smbios-measured",
        component: Component::SystemdBoot,
        since: Some(Version(262, 0)),
        until: None,
        apply: |q| q.boot_measures_smbios = true,
        reason: "systemd-boot measures SMBIOS type 1 (Wake-up Type zeroed), type 2 and each type \
                 11 into PCR1 as EV_EVENT_TAG \"smbios:typeN\" (docs/TPM2_PCR_MEASUREMENTS.md, \
                 tags 0xd5cb7cbc/0xe0d47bc8/0xc0b3bd23). Observed with 262.1 on QEMU's tables \
                 (type 1 only): one event after systemd-boot's image, equal to the prediction; \
                 absent with 257. 258–261 not verified.",
    },
    Row {
        id: "systemd-stub-kernel-not-measured-by-firmware",
        component: Component::SystemdStub,
        since: Some(Version(262, 0)),
        until: None,
        apply: |q| q.stub_kernel_measured_by_firmware = false,
        reason: "systemd-stub 257 starts the .linux kernel with LoadImage on a \
                 VenMedia(STUB_PAYLOAD_GUID) path and OVMF measures it into PCR4 (observed); with \
                 stub 262.1 the log has no such event (observed: PCR4 holds systemd-boot and the \
                 UKI only, PCR9 still the Linux LoadOptions and initrd). The kernel is still \
                 measured as the .linux section in PCR11. 258–261 not verified.",
    },
    Row {
        id: "ovmf-td-fw-cfg-items-measured",
        component: Component::Ovmf,
        since: Some(Version(2025, 5)),
        until: None,
        apply: |q| q.td_measures_fw_cfg_items = true,
        reason: "edk2 fb56dc78ef (\"OvmfPkg/QemuFwCfgLib: Support Cache FwCfg with optional \
                 measurement\"), first in edk2-stable202505: OvmfPkg/Library/QemuFwCfgLib/\
                 QemuFwCfgCacheInit.c caches etc/extra-pci-roots, BootMenu, etc/boot-menu-wait, \
                 etc/reserved-memory-end, opt/ovmf/X-PciMmio64Mb and bootorder and, when \
                 TdIsEnabled (), measures each one present into PCR1/RTMR0 as \
                 EV_PLATFORM_CONFIG_FLAGS \"QEMU FW CFG\" + name. Read at edk2-stable202605 \
                 (blob d3220c8f, unchanged since 202505; the 202608 tag Debian's 2026.08 is \
                 built from is not in our edk2 mirror, whose pull refs to 2026-08-08 do not \
                 touch the file). TD only: not on vTPM, and not yet seen in a real TD log.",
    },
    Row {
        id: "qemu-coco-kernel-header-unpatched",
        component: Component::Qemu,
        since: Some(Version(10, 2)),
        until: None,
        apply: |q| q.qemu_coco_kernel_unpatched = true,
        reason: "QEMU a7542a38f399 (\"x86/loader: Don't update kernel header for CoCo VMs\", \
                 first in 10.2.0): hw/i386/x86-common.c `x86_load_linux` copies its patched \
                 setup header into FW_CFG_SETUP_DATA only when the machine has no \
                 confidential-guest-support (before: only without SEV). In a TD the setup and \
                 kernel items are then the file's bytes, equal to etc/boot/kernel, so RTMR1's \
                 kernel event is the file's Authenticode digest even with an OVMF that reads \
                 the items (2022.11). Our oracle runs no TD, so the TD prediction takes \
                 etc/boot/kernel; not yet seen in a real TD log.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_like_debian_names_them() {
        assert_eq!(Version::parse("2025.02-8+deb13u1"), Some(Version(2025, 2)));
        assert_eq!(
            Version::parse("1:10.0.2+ds-2+deb13u1~bpo12+1"),
            Some(Version(10, 0))
        );
        assert_eq!(Version::parse("257.13-1~deb13u1"), Some(Version(257, 13)));
        assert_eq!(Version::parse("x"), None);
    }

    #[test]
    fn rows_resolve_by_version() {
        let old = Quirks::resolve(Some(Version(2022, 11)), None, None);
        assert_eq!(old.secure_boot, SecureBootVar::Disabled);
        assert!(!old.acpi_measured_on_vtpm);
        let new = Quirks::resolve(Some(Version(2025, 2)), None, None);
        assert_eq!(new.secure_boot, SecureBootVar::Absent);
        assert!(new.acpi_measured_on_vtpm);
        assert!(!old.kernel_load_options_initrd_first && !new.kernel_load_options_initrd_first);
        let ovmf2026 = Quirks::resolve(Some(Version(2026, 8)), None, None);
        assert!(ovmf2026.kernel_load_options_initrd_first);
        assert_eq!(Quirks::applied(Some(Version(2025, 2)), None, None).len(), 6);
        assert_eq!(
            new.rows,
            [
                "ovmf-pciexbar-0xe0000000",
                "ovmf-secureboot-absent",
                "ovmf-crtm-version-unknown",
                "ovmf-acpi-measured-with-tpm",
                "ovmf-boot-kernel-file-preferred",
                "ovmf-network-boot-ipxe-only",
            ]
        );
        assert!(old.rows.is_empty());
        assert_eq!(old.ovmf_pci_layout, OvmfPciLayout::Stable202211);
        assert_eq!(new.ovmf_pci_layout, OvmfPciLayout::Stable202502);
        assert_eq!(new.crtm_version, CrtmVersion::Unknown);
        assert!(!new.smbios_measured && !new.kernel_load_options_initrd_first);
        use crate::devpath::ovmf::BootManagerMenu;
        assert_eq!(new.boot_menu, BootManagerMenu::UiApp);
        assert!(!new.needs_firmware_strings() && !old.needs_firmware_strings());
        let newest = Quirks::resolve(Some(Version(2026, 8)), None, None);
        assert_eq!(newest.crtm_version, CrtmVersion::FirmwareVersionString);
        assert!(newest.smbios_measured && newest.kernel_load_options_initrd_first);
        assert_eq!(newest.boot_menu, BootManagerMenu::BootManagerMenuApp);
        assert!(newest.needs_firmware_strings());
        assert_eq!(newest.secure_boot, SecureBootVar::Absent);
        assert_eq!(old.ovmf_network_boot_options.len(), 5);
        assert_eq!(new.ovmf_network_boot_options, NETWORK_BOOT_IPXE_ONLY);
        let stub252 = Quirks::resolve(None, None, Some(Version(252, 39)));
        assert_eq!(stub252.stub_measured_sections, STUB_SECTIONS_252);
        assert!(stub252.boot_passes_uki_cmdline && !stub252.stub_initrd_osrel_cpio);
        let stub254 = Quirks::resolve(None, None, Some(Version(254, 26)));
        assert_eq!(stub254.stub_measured_sections, STUB_SECTIONS_254);
        assert!(stub254.boot_passes_uki_cmdline && !stub254.boot_measures_loader_conf);
        let stub257 = Quirks::resolve(None, None, Some(Version(257, 13)));
        assert_eq!(stub257.stub_measured_sections, STUB_SECTIONS_257);
        assert!(stub257.stub_initrd_osrel_cpio && stub257.boot_measures_loader_conf);
        assert!(!stub257.boot_passes_uki_cmdline);
        assert!(!stub257.boot_measures_smbios && stub257.stub_kernel_measured_by_firmware);
        let stub262 = Quirks::resolve(None, None, Some(Version(262, 1)));
        assert_eq!(stub262.stub_measured_sections, STUB_SECTIONS_257);
        assert!(stub262.boot_measures_smbios && !stub262.stub_kernel_measured_by_firmware);
        assert!(stub262.boot_measures_loader_conf && stub262.stub_initrd_osrel_cpio);
        use crate::tdvf::PageOrder;
        let qemu = |major, minor| Quirks::resolve(None, Some(Version(major, minor)), None);
        assert_eq!(qemu(7, 2).mrtd_page_order, PageOrder::SinglePass);
        assert_eq!(qemu(8, 2).mrtd_page_order, PageOrder::TwoPass);
        assert_eq!(qemu(9, 2).mrtd_page_order, PageOrder::SinglePass);
        assert!(qemu(8, 2).tdx_named_memory_backend && qemu(9, 2).tdx_named_memory_backend);
        assert!(!qemu(10, 1).tdx_named_memory_backend);
        assert!(!qemu(7, 2).qemu_has_tdx_builds && qemu(8, 0).qemu_has_tdx_builds);
        assert!(qemu(11, 1).qemu_has_tdx_builds);
        for row in ROWS {
            assert!(!row.reason.is_empty(), "{} has no reason", row.id);
        }
        // The unpatched -kernel image is measured only when QEMU serves it and OVMF takes it.
        let both =
            |ovmf, qemu| Quirks::resolve(Some(ovmf), Some(qemu), None).kernel_measured_unpatched();
        assert!(both(Version(2025, 2), Version(10, 0)));
        assert!(!both(Version(2025, 2), Version(7, 2)));
        assert!(!both(Version(2022, 11), Version(10, 0)));
        assert!(!Quirks::resolve(Some(Version(2025, 2)), None, None).kernel_measured_unpatched());
        // A TD on QEMU ≥ 10.2 loads the file as given whatever the OVMF; vTPM does not.
        use crate::Platform;
        let on = |ovmf, qemu, platform| {
            Quirks::resolve(Some(ovmf), Some(qemu), None).kernel_measured_unpatched_on(platform)
        };
        assert!(on(Version(2022, 11), Version(10, 2), Platform::Tdx));
        assert!(!on(Version(2022, 11), Version(10, 2), Platform::Vtpm));
        assert!(!on(Version(2022, 11), Version(10, 1), Platform::Tdx));
        assert!(on(Version(2025, 2), Version(10, 0), Platform::Vtpm));
        // The TD fw_cfg items: edk2-stable202505 on.
        let ovmf = |v| Quirks::resolve(Some(v), None, None).td_measures_fw_cfg_items;
        assert!(!ovmf(Version(2025, 2)) && ovmf(Version(2025, 5)) && ovmf(Version(2026, 8)));
    }
}
