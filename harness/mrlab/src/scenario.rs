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
    /// shim + GRUB boot: the packages and extra grub.cfg lines.
    /// Only with `boot = "grub"`; left out, [`GrubOptions::default`].
    #[serde(default)]
    pub grub: Option<GrubOptions>,
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
    /// OVMF → shim → GRUB → vmlinuz from an ESP the harness writes (`[grub]`).
    Grub,
}

/// The `[grub]` table of a shim + GRUB boot.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrubOptions {
    /// grub-efi-amd64-signed package id (`grub-2.12`, `grub-2.06`).
    #[serde(default = "default_grub")]
    pub package: String,
    /// shim-signed package id.
    #[serde(default = "default_shim")]
    pub shim: String,
    /// Lines grub.cfg runs before it loads the kernel (`set timeout=0`, `insmod part_gpt`, …).
    #[serde(default)]
    pub lines: Vec<String>,
}

impl Default for GrubOptions {
    fn default() -> Self {
        GrubOptions {
            package: default_grub(),
            shim: default_shim(),
            lines: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MachineOptions {
    pub smm: Option<bool>,
    pub hpet: Option<bool>,
    pub pic: Option<bool>,
    pub pci_hole64_size: Option<String>,
    pub acpi_pci_hotplug: Option<bool>,
    /// The guest CPU's physical address width (QEMU `phys-bits`, 32–52).
    pub phys_bits: Option<u8>,
    /// Guest RAM as NUMA node 0 from a file backend (dstack's `hugepages` memory, see
    /// `qemu::vm::NumaMemory`): hugetlbfs on a TD host, a tmpfs folder on vtpm.
    #[serde(default)]
    pub hugepages: bool,
}

/// QEMU's accepted `phys-bits` (`target/i386/cpu.c`: 32 to `TARGET_PHYS_ADDR_SPACE_BITS`).
const PHYS_BITS: std::ops::RangeInclusive<u8> = 32..=52;

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
    /// GPUs and NVSwitches dstack passes through (vfio-pci): refused, see [`Scenario::parse`].
    #[serde(default)]
    pub gpus: u32,
    #[serde(default)]
    pub nvswitches: u32,
    /// dstack's `hugepages`: RAM as NUMA node 0 from a file backend and the node's PCIe
    /// expander (`qemu::vm::dstack_hugepages_expander`); memory must be whole GiB.
    #[serde(default)]
    pub hugepages: bool,
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
            gpus: 0,
            nvswitches: 0,
            hugepages: false,
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
    /// shim + GRUB boot: predict grub.cfg as written with these `[grub]` lines.
    pub grub_lines: Option<Vec<String>>,
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
fn default_grub() -> String {
    "grub-2.12".into()
}
fn default_shim() -> String {
    "shim-16.1".into()
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
    #[error("{path}: cannot read scenario")]
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
        let invalid = |(key, message): (&'static str, String)| ScenarioError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        check_values(&scenario).map_err(invalid)?;
        check_grub(&scenario).map_err(invalid)?;
        check_preset(&scenario).map_err(invalid)?;
        scenario.dir = path.parent().map(Path::to_owned).unwrap_or_default();
        Ok(scenario)
    }
}

/// The scenario's values within their ranges: the key and the problem otherwise.
fn check_values(scenario: &Scenario) -> Result<(), (&'static str, String)> {
    if let Err(why) = check_name(&scenario.name) {
        return Err(("name", why.to_string()));
    }
    if !(1..=512).contains(&scenario.cpus) {
        return Err(("cpus", "must be between 1 and 512".into()));
    }
    if scenario.memory < (128 << 20) {
        return Err(("memory", "must be at least 128M".into()));
    }
    if scenario.memory > MAX_MEMORY {
        return Err(("memory", "must be at most 4T".into()));
    }
    if !(1..=MAX_TIMEOUT_S).contains(&scenario.timeout_s) {
        return Err((
            "timeout_s",
            format!("must be between 1 and {MAX_TIMEOUT_S} (a day)"),
        ));
    }
    // QEMU gets the command line as one argv string, which cannot hold a NUL.
    if scenario.cmdline.contains('\0') {
        return Err(("cmdline", "contains a NUL byte".into()));
    }
    if scenario
        .predict
        .cmdline
        .as_deref()
        .is_some_and(|c| c.contains('\0'))
    {
        return Err(("predict.cmdline", "contains a NUL byte".into()));
    }
    if scenario
        .machine
        .phys_bits
        .is_some_and(|bits| !PHYS_BITS.contains(&bits))
    {
        return Err((
            "machine.phys_bits",
            "must be between 32 and 52 (QEMU's phys-bits)".into(),
        ));
    }
    for device in &scenario.devices {
        if let Device::Virtfs { tag } = device {
            check_mount_tag(tag).map_err(|why| ("devices", why.to_string()))?;
        }
    }
    Ok(())
}

/// `[grub]` and `[predict] grub_lines` belong to a shim + GRUB boot, one grub.cfg line each.
fn check_grub(scenario: &Scenario) -> Result<(), (&'static str, String)> {
    // One entry is one grub.cfg line: a line break would add lines unseen.
    let one_line_each = |lines: &[String]| !lines.iter().any(|l| l.contains(['\n', '\r', '\0']));
    let broken = "a line holds a line break or a NUL byte: give each line on its own";
    let grub_boot = scenario.boot == BootMode::Grub;
    if let Some(grub) = &scenario.grub {
        if !grub_boot {
            return Err((
                "grub",
                "only a `boot = \"grub\"` scenario has a [grub] table".into(),
            ));
        }
        if !one_line_each(&grub.lines) {
            return Err(("grub.lines", broken.into()));
        }
    }
    if let Some(lines) = &scenario.predict.grub_lines {
        if !grub_boot {
            return Err((
                "predict.grub_lines",
                "only a `boot = \"grub\"` scenario has grub.cfg lines".into(),
            ));
        }
        if !one_line_each(lines) {
            return Err(("predict.grub_lines", broken.into()));
        }
    }
    Ok(())
}

/// `preset` and `[dstack]` together, and what the preset cannot do (yet).
fn check_preset(scenario: &Scenario) -> Result<(), (&'static str, String)> {
    match scenario.preset {
        Some(Preset::Dstack) => {
            if !scenario.devices.is_empty() {
                return Err((
                    "devices",
                    "the `dstack` preset sets the devices; shape them under [dstack]".into(),
                ));
            }
            if scenario.boot != BootMode::Kernel {
                return Err((
                    "preset",
                    "dstack boots with -kernel, not from a disk".into(),
                ));
            }
            let preset = scenario.dstack.clone().unwrap_or_default();
            if preset.gpus > 0 || preset.nvswitches > 0 {
                return Err((
                    "dstack",
                    "GPUs and NVSwitches are vfio-pci passthrough of host devices, which \
                     cannot be created here; `root_ports = N` gives the pcie-root-port each \
                     sits behind (what ACPI and the PCI layout see of them)"
                        .into(),
                ));
            }
            if preset.hugepages && !scenario.memory.is_multiple_of(1 << 30) {
                return Err((
                    "memory",
                    "with `hugepages` dstack-vmm gives the VM whole GiB (it truncates the \
                     memory to GiB, `configure_hugepage_memory`): set a whole number of GiB"
                        .into(),
                ));
            }
        }
        None if scenario.dstack.is_some() => {
            return Err(("dstack", "needs `preset = \"dstack\"`".into()));
        }
        None => {}
    }
    Ok(())
}

/// The most memory a scenario may give its VM (QEMU's q35 takes more, no host here has it).
const MAX_MEMORY: u64 = 4 << 40;
/// The longest boot timeout, in seconds: a day.
const MAX_TIMEOUT_S: u64 = 86_400;

/// The longest scenario name: it names a folder, and a file name has at most 255 bytes.
const MAX_NAME_LEN: usize = 128;

/// What is wrong with one value of a scenario (its name, a virtfs tag, a size); the key is
/// named by the error that carries it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("must not be empty")]
    EmptyName,
    #[error("is longer than {MAX_NAME_LEN} bytes")]
    LongName,
    #[error(
        "{name:?} has {bad:?}: use letters, digits, '.', '_' and '-' (it names the results folder)"
    )]
    NameCharacter { name: String, bad: char },
    #[error("{0:?} starts with '.': it names the results folder")]
    HiddenName(String),
    #[error("virtfs tag {0:?}: use letters, digits, '.', '_' and '-' (it is a QEMU option value)")]
    MountTag(String),
    #[error("`{text}`: unknown unit `{unit}` (use K, M, G or T)")]
    SizeUnit { text: String, unit: String },
    #[error("`{0}`: more than 2^64 bytes")]
    SizeTooBig(String),
    #[error("`{0}`: not a size (examples: 2G, 2048M, 2.75G)")]
    NotASize(String),
    #[error("`{0}`: not a whole number of bytes")]
    NotWholeBytes(String),
}

/// A scenario's name names its results folder, its JUnit test case and its snapshot: letters,
/// digits, `.`, `_` and `-` only, not starting with `.` (so no `.`, `..` or hidden folder).
pub fn check_name(name: &str) -> Result<(), ValueError> {
    if name.is_empty() {
        return Err(ValueError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ValueError::LongName);
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ValueError::NameCharacter {
            name: name.to_string(),
            bad,
        });
    }
    if name.starts_with('.') {
        return Err(ValueError::HiddenName(name.to_string()));
    }
    Ok(())
}

/// A virtfs `tag` goes into QEMU's `-virtfs …,mount_tag=TAG,…`: letters, digits, `.`, `_` and
/// `-` only, so it can never end the value and add an option (`t,path=/` would share `/`).
fn check_mount_tag(tag: &str) -> Result<(), ValueError> {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if tag.is_empty() || !tag.chars().all(safe) {
        return Err(ValueError::MountTag(tag.to_string()));
    }
    Ok(())
}

/// Parse `2G`, `2048M`, `2.75G`, `512K` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, ValueError> {
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
            return Err(ValueError::SizeUnit {
                text: text.to_string(),
                unit: unit.to_string(),
            })
        }
    };
    let too_big = || ValueError::SizeTooBig(text.to_string());
    // Whole numbers exactly; a fraction (2.75G) through f64, which is exact for such sizes.
    if let Ok(whole) = number.trim().parse::<u64>() {
        return whole.checked_mul(1u64 << shift).ok_or_else(too_big);
    }
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| ValueError::NotASize(text.to_string()))?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 0.0 && bytes.fract() == 0.0) {
        return Err(ValueError::NotWholeBytes(text.to_string()));
    }
    // 2^64 as f64; `as u64` would saturate at u64::MAX.
    if bytes >= 18_446_744_073_709_551_616.0 {
        return Err(too_big());
    }
    Ok(bytes as u64)
}

/// A size is a string (`"2G"`) or a byte count; anything else (a negative number, a float, a
/// table) is refused naming what was expected.
fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct SizeVisitor;
    impl serde::de::Visitor<'_> for SizeVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a size such as \"2G\" or \"2048M\", or a whole number of bytes")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("{v}: a size cannot be negative")))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
            parse_size(v).map_err(E::custom)
        }
    }
    d.deserialize_any(SizeVisitor)
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
    fn grub_table_defaults_and_its_refusals() {
        let s = parse("name = \"g\"\nboot = \"grub\"").unwrap();
        assert_eq!(s.boot, BootMode::Grub);
        assert_eq!(s.grub, None);
        let s =
            parse("name = \"g\"\nboot = \"grub\"\n[grub]\nlines = [\"set timeout=0\"]").unwrap();
        let grub = s.grub.unwrap();
        assert_eq!(
            (grub.package.as_str(), grub.shim.as_str()),
            ("grub-2.12", "shim-16.1")
        );
        assert_eq!(grub.lines, ["set timeout=0"]);
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert!(err("name = \"g\"\n[grub]\nlines = []").contains("key `grub`"));
        let two = err("name = \"g\"\nboot = \"grub\"\n[grub]\nlines = [\"set a=1\\nboot\"]");
        assert!(two.contains("key `grub.lines`"), "{two}");
        assert!(err("name = \"g\"\nboot = \"grub\"\n[grub]\nline = []").contains("unknown field"));
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
    fn names_that_would_leave_or_clobber_the_results_folder_are_refused() {
        for bad in [
            "../../x",
            "/abs",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "tab\tname",
            "nul\u{0}",
            "esc\u{1b}[31m",
            "sp ace",
            "",
        ] {
            let text = format!("name = {}", toml::Value::String(bad.into()));
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains("key `name`"), "{bad:?}: {e}");
        }
        let long = "n".repeat(129);
        assert!(parse(&format!("name = \"{long}\"")).is_err());
        for good in ["kernel-smoke", "qemu10.0_x", "A1"] {
            assert_eq!(parse(&format!("name = \"{good}\"")).unwrap().name, good);
        }
    }

    #[test]
    fn virtfs_tags_that_could_add_a_qemu_option_are_refused() {
        for bad in ["t,path=/", "t=x", "", "a b"] {
            let text = format!(
                "name = \"a\"\n[[devices]]\nkind = \"virtfs\"\ntag = {}",
                toml::Value::String(bad.into())
            );
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains("key `devices`: virtfs tag"), "{bad:?}: {e}");
        }
        assert!(parse("name = \"a\"\n[[devices]]\nkind = \"virtfs\"\ntag = \"share_1\"").is_ok());
    }

    #[test]
    fn dstack_gpus_and_nvswitches_are_refused_with_the_reason() {
        for (key, why) in [
            ("gpus = 1", "cannot be created here"),
            ("nvswitches = 2", "cannot be created here"),
        ] {
            let e = parse(&format!(
                "name = \"a\"\npreset = \"dstack\"\n[dstack]\n{key}"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains("key `dstack`") && e.contains(why), "{key}: {e}");
        }
        assert!(parse("name = \"a\"\npreset = \"dstack\"\n[dstack]\nroot_ports = 2").is_ok());
    }

    #[test]
    fn dstack_hugepages_need_whole_gib() {
        let text = |memory: &str| {
            format!("name = \"a\"\nmemory = \"{memory}\"\npreset = \"dstack\"\n[dstack]\nhugepages = true")
        };
        let e = parse(&text("2560M")).unwrap_err().to_string();
        assert!(
            e.contains("key `memory`") && e.contains("whole number of GiB"),
            "{e}"
        );
        assert!(parse(&text("3G")).unwrap().dstack.unwrap().hugepages);
    }

    #[test]
    fn phys_bits_outside_qemus_range_are_refused() {
        for bad in [31, 53] {
            let e = parse(&format!("name = \"a\"\n[machine]\nphys_bits = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("key `machine.phys_bits`: must be between 32 and 52"),
                "{e}"
            );
        }
        let ok = parse("name = \"a\"\n[machine]\nphys_bits = 46").unwrap();
        assert_eq!(ok.machine.phys_bits, Some(46));
    }

    #[test]
    fn sizes_and_timeouts_out_of_range_are_clear_errors() {
        let e = parse("name = \"a\"\ncmdline = \"console=ttyS0\\u0000x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `cmdline`: contains a NUL byte"), "{e}");
        let e = parse("name = \"a\"\nmemory = -1").unwrap_err().to_string();
        assert!(e.contains("-1: a size cannot be negative"), "{e}");
        let e = parse("name = \"a\"\nmemory = 1.5").unwrap_err().to_string();
        assert!(e.contains("a size such as"), "{e}");
        let e = parse("name = \"a\"\nmemory = \"16777216T\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 2^64 bytes"), "{e}");
        let e = parse("name = \"a\"\nmemory = \"8T\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be at most 4T"), "{e}");
        let e = parse("name = \"a\"\ntimeout_s = 9223372036854775807")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`timeout_s`: must be between 1 and 86400"),
            "{e}"
        );
        assert_eq!(parse_size("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(parse_size("2.75G"), Ok(2_952_790_016));
        assert_eq!(
            parse("name = \"a\"\nmemory = 2147483648").unwrap().memory,
            2 << 30
        );
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
