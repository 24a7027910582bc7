//! Scenario files (`scenarios/*.toml`): what a user writes. Parsing is strict (unknown keys are
//! errors) and every error names the file and the key.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A parsed scenario, before resolution into a `qemu::Vm`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub boot: BootMode,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    #[serde(default = "default_memory", deserialize_with = "de_size")]
    pub memory: u64,
    /// Managed image id (`ovmf-2022.11`) or a file path.
    #[serde(default = "default_firmware")]
    pub firmware: String,
    /// Managed image id (`kernel-6.1`) or a file path.
    #[serde(default = "default_kernel")]
    pub kernel: String,
    /// `agent` (the harness initramfs) or a file path.
    #[serde(default = "default_initrd")]
    pub initrd: String,
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// UKI boot: the systemd-boot package whose systemd-stub the UKI is built with.
    #[serde(default = "default_stub")]
    pub stub: String,
    /// UKI boot: the systemd-boot package whose boot loader goes on the ESP; the stub's package
    /// when left out (one systemd version drives the quirks of both).
    #[serde(default)]
    pub bootloader: Option<String>,
    /// QEMU: a managed id (`qemu-7.2`, the default; `qemu-10.0`), `system` (qemu-system-x86_64 on
    /// PATH) or a path.
    #[serde(default = "default_qemu")]
    pub qemu: String,
    #[serde(default)]
    pub machine: MachineOptions,
    #[serde(default)]
    pub devices: Vec<Device>,
    /// `dstack`: the devices and machine options dstack-vmm gives a CVM, shaped by `[dstack]`,
    /// instead of `[[devices]]` (`[machine]` keys still apply on top).
    #[serde(default)]
    pub preset: Option<Preset>,
    /// The `dstack` preset's knobs (dstack-vmm's VM configuration).
    #[serde(default)]
    pub dstack: Option<DstackPreset>,
    /// Prediction-only overrides: the VM boots as described above, the prediction is made as if
    /// these values held. Used to check that a wrong prediction is caught.
    #[serde(default)]
    pub predict: PredictOverrides,
    /// Per-phase timeout for the boot, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    /// The folder of the scenario file: relative paths in it are relative to this.
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    #[default]
    Kernel,
    Uki,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MachineOptions {
    pub smm: Option<bool>,
    pub hpet: Option<bool>,
    pub pic: Option<bool>,
    pub pci_hole64_size: Option<String>,
    pub acpi_pci_hotplug: Option<bool>,
}

/// One device, in PCI order.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Device {
    VirtioBlk {
        /// Size of a blank raw disk made for the run, when `file` is not given.
        #[serde(default, deserialize_with = "de_opt_size")]
        size: Option<u64>,
        file: Option<PathBuf>,
    },
    VirtioNet {},
    VhostVsock {
        #[serde(default = "default_cid")]
        cid: u32,
    },
    Virtfs {
        tag: String,
    },
    PcieRootPort {},
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Dstack,
}

/// dstack-vmm's per-VM choices (Dstack-TEE/dstack `dstack/vmm/src/app/qemu.rs`). The disks are
/// blank: their contents are not measured in a `-kernel` boot, only their PCI functions are.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DstackPreset {
    /// `verity` (hd0, image versions ≥ 0.5.0) or `iso` (a CD-ROM, older images).
    #[serde(default)]
    pub rootfs: DstackRootfs,
    #[serde(default)]
    pub verity_volumes: u32,
    #[serde(default = "default_nics")]
    pub nics: u32,
    /// vhost-vsock (guest CID 3); dstack always has it, `false` only to run the rest of the
    /// layout on a host without `/dev/vhost-vsock`.
    #[serde(default = "default_true")]
    pub vsock: bool,
    /// `9p` (virtfs `host-shared`) or `disk` (read-only hd2).
    #[serde(default)]
    pub host_share: DstackHostShare,
    /// Empty pcie-root-ports, as dstack adds one per GPU/NVSwitch.
    #[serde(default)]
    pub root_ports: u8,
}

impl Default for DstackPreset {
    fn default() -> Self {
        DstackPreset {
            rootfs: DstackRootfs::default(),
            verity_volumes: 0,
            nics: default_nics(),
            vsock: true,
            host_share: DstackHostShare::default(),
            root_ports: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DstackRootfs {
    #[default]
    Verity,
    Iso,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum DstackHostShare {
    #[default]
    #[serde(rename = "9p")]
    NineP,
    #[serde(rename = "disk")]
    Disk,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PredictOverrides {
    pub cmdline: Option<String>,
}

fn default_cpus() -> u32 {
    1
}
fn default_memory() -> u64 {
    2 << 30
}
fn default_firmware() -> String {
    "ovmf-2022.11".into()
}
fn default_kernel() -> String {
    "kernel-6.1".into()
}
fn default_initrd() -> String {
    "agent".into()
}
fn default_cmdline() -> String {
    "console=ttyS0".into()
}
fn default_stub() -> String {
    "systemd-boot-257".into()
}
/// The managed bookworm QEMU: the same bytes on every host, so the default matrix and its
/// snapshots do not depend on which QEMU the host happens to have.
fn default_qemu() -> String {
    "qemu-7.2".into()
}
fn default_timeout() -> u64 {
    180
}
fn default_cid() -> u32 {
    3
}
fn default_nics() -> u32 {
    1
}
fn default_true() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read scenario: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Scenario::parse(&text, path)
    }

    /// Parse scenario text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let mut scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        let invalid = |key, message: &str| ScenarioError::Invalid {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        if scenario.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if !(1..=512).contains(&scenario.cpus) {
            return Err(invalid("cpus", "must be between 1 and 512"));
        }
        if scenario.memory < (128 << 20) {
            return Err(invalid("memory", "must be at least 128M"));
        }
        if scenario.timeout_s == 0 {
            return Err(invalid("timeout_s", "must be positive"));
        }
        match scenario.preset {
            Some(Preset::Dstack) => {
                if !scenario.devices.is_empty() {
                    return Err(invalid(
                        "devices",
                        "the `dstack` preset sets the devices; shape them under [dstack]",
                    ));
                }
                if scenario.boot == BootMode::Uki {
                    return Err(invalid("preset", "dstack boots with -kernel, not a UKI"));
                }
            }
            None if scenario.dstack.is_some() => {
                return Err(invalid("dstack", "needs `preset = \"dstack\"`"));
            }
            None => {}
        }
        scenario.dir = path.parent().map(Path::to_owned).unwrap_or_default();
        Ok(scenario)
    }
}

/// Parse `2G`, `2048M`, `2.75G`, `512K` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit
        .trim_end_matches(['i', 'B'])
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use K, M, G or T)"
            ))
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: not a size (examples: 2G, 2048M, 2.75G)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 0.0 && bytes.fract() == 0.0) {
        return Err(format!("`{text}`: not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Bytes(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(b) => Ok(b),
        Raw::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

fn de_opt_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_size(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("scenarios/x.toml"))
    }

    #[test]
    fn dstack_preset_takes_dstack_defaults_and_owns_the_devices() {
        let s = parse("name = \"d\"\npreset = \"dstack\"").unwrap();
        assert_eq!(s.preset, Some(Preset::Dstack));
        let d = s.dstack.unwrap_or_default();
        assert_eq!((d.nics, d.vsock, d.verity_volumes), (1, true, 0));
        assert_eq!(d.host_share, DstackHostShare::NineP);
        let s = parse(
            "name = \"d\"\npreset = \"dstack\"\n[dstack]\nhost_share = \"disk\"\nrootfs = \"iso\"",
        )
        .unwrap();
        let d = s.dstack.unwrap();
        assert_eq!(
            (d.host_share, d.rootfs),
            (DstackHostShare::Disk, DstackRootfs::Iso)
        );

        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert!(
            err("name = \"d\"\npreset = \"dstack\"\n[[devices]]\nkind = \"virtio-net\"")
                .contains("key `devices`: the `dstack` preset sets the devices")
        );
        assert!(err("name = \"d\"\n[dstack]\nnics = 2").contains("key `dstack`: needs `preset"));
        assert!(err("name = \"d\"\npreset = \"dstack\"\nboot = \"uki\"").contains("key `preset`"));
        assert!(err("name = \"d\"\npreset = \"dstak\"").contains("dstak"));
        assert!(err("name = \"d\"\npreset = \"dstack\"\n[dstack]\nnic = 2").contains("nic"));
    }

    #[test]
    fn minimal_scenario_takes_defaults() {
        let s = parse("name = \"kernel-smoke\"").unwrap();
        assert_eq!(s.boot, BootMode::Kernel);
        assert_eq!(s.memory, 2 << 30);
        assert_eq!(s.firmware, "ovmf-2022.11");
        assert_eq!(s.initrd, "agent");
    }

    #[test]
    fn uki_keys_default_to_systemd_257_for_stub_and_loader() {
        let s = parse("name = \"u\"\nboot = \"uki\"").unwrap();
        assert_eq!(s.boot, BootMode::Uki);
        assert_eq!(s.stub, "systemd-boot-257");
        assert_eq!(s.bootloader, None);
        let s = parse("name = \"u\"\nboot = \"uki\"\nstub = \"systemd-boot-252\"\nbootloader = \"systemd-boot-252\"")
            .unwrap();
        assert_eq!(s.stub, "systemd-boot-252");
        assert_eq!(s.bootloader.as_deref(), Some("systemd-boot-252"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2048M"), Ok(2 << 30));
        assert_eq!(parse_size("2.75G"), Ok(0xB000_0000));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert!(parse_size("2X").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = parse("name = \"a\"\nmemroy = \"2G\"")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("scenarios/x.toml:"), "{e}");
        assert!(e.contains("memroy"), "{e}");
        let e = parse("name = \"a\"\nmemory = \"2Q\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory") && e.contains("unknown unit"), "{e}");
        let e = parse("name = \"a\"\ncpus = 0").unwrap_err().to_string();
        assert!(e.contains("`cpus`"), "{e}");
        let e = parse("name = \"a\"\n[[devices]]\nkind = \"floppy\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("floppy"), "{e}");
    }

    #[test]
    fn devices_keep_their_order() {
        let s = parse(
            "name = \"a\"\n[[devices]]\nkind = \"virtio-net\"\n[[devices]]\nkind = \"virtio-blk\"\nsize = \"64M\"",
        )
        .unwrap();
        assert_eq!(
            s.devices,
            vec![
                Device::VirtioNet {},
                Device::VirtioBlk {
                    size: Some(64 << 20),
                    file: None
                }
            ]
        );
    }
}
