//! The event model: one measured event, the registers it lands in, and folding events into
//! register values.

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256, Sha384};
use std::fmt;

/// A TD measurement register. vTPM PCRs map onto these (see [`Register::from_pcr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Register {
    Mrtd,
    Rtmr0,
    Rtmr1,
    Rtmr2,
    Rtmr3,
}

impl Register {
    pub const ALL: [Register; 5] = [
        Register::Mrtd,
        Register::Rtmr0,
        Register::Rtmr1,
        Register::Rtmr2,
        Register::Rtmr3,
    ];

    /// TD mapping of TCG PCRs (edk2 TdTcg2Dxe `MapPcrToMrIndex`): PCR0 → MRTD, PCR1,7 → RTMR0,
    /// PCR2–6 → RTMR1, PCR8–15 → RTMR2. Other PCRs have no TD register.
    pub fn from_pcr(pcr: u32) -> Option<Register> {
        match pcr {
            0 => Some(Register::Mrtd),
            1 | 7 => Some(Register::Rtmr0),
            2..=6 => Some(Register::Rtmr1),
            8..=15 => Some(Register::Rtmr2),
            _ => None,
        }
    }

    /// CCEL stores the MR index: 0 = MRTD, 1 = RTMR0 … 4 = RTMR3.
    pub fn from_mr_index(index: u32) -> Option<Register> {
        Register::ALL.get(index as usize).copied()
    }

    pub fn mr_index(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        match self {
            Register::Mrtd => "mrtd",
            Register::Rtmr0 => "rtmr0",
            Register::Rtmr1 => "rtmr1",
            Register::Rtmr2 => "rtmr2",
            Register::Rtmr3 => "rtmr3",
        }
    }
}

impl fmt::Display for Register {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A TCG event type (TCG PC Client PFP, section 10.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventType(pub u32);

impl EventType {
    pub const PREBOOT_CERT: EventType = EventType(0x0);
    pub const POST_CODE: EventType = EventType(0x1);
    pub const NO_ACTION: EventType = EventType(0x3);
    pub const SEPARATOR: EventType = EventType(0x4);
    pub const ACTION: EventType = EventType(0x5);
    pub const EVENT_TAG: EventType = EventType(0x6);
    pub const S_CRTM_CONTENTS: EventType = EventType(0x7);
    pub const S_CRTM_VERSION: EventType = EventType(0x8);
    pub const CPU_MICROCODE: EventType = EventType(0x9);
    pub const PLATFORM_CONFIG_FLAGS: EventType = EventType(0xa);
    pub const TABLE_OF_DEVICES: EventType = EventType(0xb);
    pub const COMPACT_HASH: EventType = EventType(0xc);
    pub const IPL: EventType = EventType(0xd);
    pub const IPL_PARTITION_DATA: EventType = EventType(0xe);
    pub const NONHOST_CODE: EventType = EventType(0xf);
    pub const NONHOST_CONFIG: EventType = EventType(0x10);
    pub const NONHOST_INFO: EventType = EventType(0x11);
    pub const OMIT_BOOT_DEVICE_EVENTS: EventType = EventType(0x12);
    pub const EFI_VARIABLE_DRIVER_CONFIG: EventType = EventType(0x8000_0001);
    pub const EFI_VARIABLE_BOOT: EventType = EventType(0x8000_0002);
    pub const EFI_BOOT_SERVICES_APPLICATION: EventType = EventType(0x8000_0003);
    pub const EFI_BOOT_SERVICES_DRIVER: EventType = EventType(0x8000_0004);
    pub const EFI_RUNTIME_SERVICES_DRIVER: EventType = EventType(0x8000_0005);
    pub const EFI_GPT_EVENT: EventType = EventType(0x8000_0006);
    pub const EFI_ACTION: EventType = EventType(0x8000_0007);
    pub const EFI_PLATFORM_FIRMWARE_BLOB: EventType = EventType(0x8000_0008);
    pub const EFI_HANDOFF_TABLES: EventType = EventType(0x8000_0009);
    pub const EFI_PLATFORM_FIRMWARE_BLOB2: EventType = EventType(0x8000_000a);
    pub const EFI_HANDOFF_TABLES2: EventType = EventType(0x8000_000b);
    pub const EFI_VARIABLE_BOOT2: EventType = EventType(0x8000_000c);
    pub const EFI_HCRTM_EVENT: EventType = EventType(0x8000_0010);
    pub const EFI_VARIABLE_AUTHORITY: EventType = EventType(0x8000_00e0);
    pub const EFI_SPDM_FIRMWARE_BLOB: EventType = EventType(0x8000_00e1);
    pub const EFI_SPDM_FIRMWARE_CONFIG: EventType = EventType(0x8000_00e2);

    /// The spec's name without the `EV_` prefix, or `UNKNOWN`.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x0 => "EV_PREBOOT_CERT",
            0x1 => "EV_POST_CODE",
            0x2 => "EV_UNUSED",
            0x3 => "EV_NO_ACTION",
            0x4 => "EV_SEPARATOR",
            0x5 => "EV_ACTION",
            0x6 => "EV_EVENT_TAG",
            0x7 => "EV_S_CRTM_CONTENTS",
            0x8 => "EV_S_CRTM_VERSION",
            0x9 => "EV_CPU_MICROCODE",
            0xa => "EV_PLATFORM_CONFIG_FLAGS",
            0xb => "EV_TABLE_OF_DEVICES",
            0xc => "EV_COMPACT_HASH",
            0xd => "EV_IPL",
            0xe => "EV_IPL_PARTITION_DATA",
            0xf => "EV_NONHOST_CODE",
            0x10 => "EV_NONHOST_CONFIG",
            0x11 => "EV_NONHOST_INFO",
            0x12 => "EV_OMIT_BOOT_DEVICE_EVENTS",
            0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
            0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
            0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
            0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
            0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
            0x8000_0006 => "EV_EFI_GPT_EVENT",
            0x8000_0007 => "EV_EFI_ACTION",
            0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
            0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
            0x8000_000a => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
            0x8000_000b => "EV_EFI_HANDOFF_TABLES2",
            0x8000_000c => "EV_EFI_VARIABLE_BOOT2",
            0x8000_0010 => "EV_EFI_HCRTM_EVENT",
            0x8000_00e0 => "EV_EFI_VARIABLE_AUTHORITY",
            0x8000_00e1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
            0x8000_00e2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
            _ => "UNKNOWN",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The digests of one event in the banks mrlab compares. A vTPM log carries both banks; a CCEL
/// carries SHA-384 only. `None` means "this source has no such bank", never "unknown value".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Digests {
    pub sha256: Option<[u8; 32]>,
    pub sha384: Option<[u8; 48]>,
}

impl Digests {
    /// Both banks over the same bytes: what firmware does for a measured event. A large input
    /// (an initrd, a disk) is hashed in both banks at once, on two threads ([`DigestsHasher`]).
    pub fn of(data: &[u8]) -> Digests {
        let mut hasher = Digests::hasher();
        hasher.update(data);
        hasher.finish()
    }

    /// [`Digests::of`] for input that arrives in pieces (a large file read a chunk at a time,
    /// so that it never sits in memory whole): feed every piece in order, then `finish`.
    pub fn hasher() -> DigestsHasher {
        DigestsHasher {
            sha256: Sha256::new(),
            sha384: Sha384::new(),
        }
    }

    pub fn sha384_hex(&self) -> Option<String> {
        self.sha384.map(hex::encode)
    }

    pub fn sha256_hex(&self) -> Option<String> {
        self.sha256.map(hex::encode)
    }

    /// True when every bank present on both sides is equal and at least one bank is shared.
    /// Two events with no bank in common cannot be said to match.
    pub fn agree(&self, other: &Digests) -> bool {
        let mut shared = false;
        if let (Some(a), Some(b)) = (self.sha256, other.sha256) {
            if a != b {
                return false;
            }
            shared = true;
        }
        if let (Some(a), Some(b)) = (self.sha384, other.sha384) {
            if a != b {
                return false;
            }
            shared = true;
        }
        shared
    }
}

/// Where an event occurs. Some events are vTPM-only (PCR0 firmware volume blobs) or TDX-only
/// (TD HOB, CFV).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Tdx,
    Vtpm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Platforms {
    pub tdx: bool,
    pub vtpm: bool,
}

impl Platforms {
    pub const BOTH: Platforms = Platforms {
        tdx: true,
        vtpm: true,
    };
    pub const TDX: Platforms = Platforms {
        tdx: true,
        vtpm: false,
    };
    pub const VTPM: Platforms = Platforms {
        tdx: false,
        vtpm: true,
    };

    pub fn contains(self, platform: Platform) -> bool {
        match platform {
            Platform::Tdx => self.tdx,
            Platform::Vtpm => self.vtpm,
        }
    }
}

/// An input that can change an event's digest: what a diff names when the event diverges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    Memory,
    Cpus,
    Devices,
    Acpi,
    QemuVersion,
    OvmfVersion,
    Firmware,
    SecureBoot,
    BootOrder,
    Kernel,
    Initrd,
    Cmdline,
    Disk,
    Bootloader,
    Uki,
    SystemdVersion,
}

/// One measured event, predicted or read from a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// TCG PCR index. For CCEL events it is derived from the MR index (RTMR0 → 1, RTMR1 → 2,
    /// RTMR2 → 8, RTMR3 → 16 by convention) since the CCEL does not store it.
    pub pcr: u32,
    pub event_type: EventType,
    pub digests: Digests,
    /// The event data as logged, when known.
    pub data: Option<Vec<u8>>,
    /// Stable name (`td_hob`, `efi:SecureBoot`, `pe:kernel`, `linux:cmdline`, …); empty for a
    /// log event nobody named yet.
    pub label: String,
    pub varies_with: Vec<Input>,
    pub platforms: Platforms,
}

impl Event {
    /// An event whose digest is taken over `measured` and whose logged data is `data`.
    pub fn measured(
        pcr: u32,
        event_type: EventType,
        label: impl Into<String>,
        measured: &[u8],
        data: Option<Vec<u8>>,
    ) -> Event {
        Event {
            pcr,
            event_type,
            digests: Digests::of(measured),
            data,
            label: label.into(),
            varies_with: Vec::new(),
            platforms: Platforms::BOTH,
        }
    }

    /// An event whose logged data is exactly what was hashed (actions, separators, variables).
    pub fn hashed_data(
        pcr: u32,
        event_type: EventType,
        label: impl Into<String>,
        data: Vec<u8>,
    ) -> Event {
        let digests = Digests::of(&data);
        Event {
            pcr,
            event_type,
            digests,
            data: Some(data),
            label: label.into(),
            varies_with: Vec::new(),
            platforms: Platforms::BOTH,
        }
    }

    pub fn varies_with(mut self, inputs: &[Input]) -> Event {
        self.varies_with.extend_from_slice(inputs);
        self
    }

    pub fn on(mut self, platforms: Platforms) -> Event {
        self.platforms = platforms;
        self
    }

    /// The TD register this event lands in, if any.
    pub fn register(&self) -> Option<Register> {
        Register::from_pcr(self.pcr)
    }

    /// Whether the event extends a register (EV_NO_ACTION never does).
    pub fn extends(&self) -> bool {
        self.event_type != EventType::NO_ACTION
    }
}

/// Both banks of [`Digests`] over bytes fed piece by piece ([`Digests::hasher`]).
pub struct DigestsHasher {
    sha256: Sha256,
    sha384: Sha384,
}

impl DigestsHasher {
    /// Hashes `piece` in both banks, on two threads when it is large enough to pay for one:
    /// each bank is then one core's sequential work.
    pub fn update(&mut self, piece: &[u8]) {
        const PARALLEL_FROM: usize = 1 << 20;
        let (sha256, sha384) = (&mut self.sha256, &mut self.sha384);
        if piece.len() < PARALLEL_FROM {
            sha256.update(piece);
            sha384.update(piece);
            return;
        }
        std::thread::scope(|scope| {
            scope.spawn(|| sha256.update(piece));
            sha384.update(piece);
        });
    }

    pub fn finish(self) -> Digests {
        Digests {
            sha256: Some(self.sha256.finalize().into()),
            sha384: Some(self.sha384.finalize().into()),
        }
    }
}

/// A TD's register set: MRTD and RTMR0–3, indexed by [`Register`]. Folding events starts each
/// register at 48 zero bytes (`R = SHA384(R ‖ digest)`); a quote, a TDREPORT or a prediction
/// gives all five. A register can also be unknown: the predictor contract lets a predictor
/// leave RTMR3 out (`predictors/contract.rs` in mrlab), and an unknown register is compared with
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registers {
    values: [[u8; 48]; 5],
    known: [bool; 5],
}

impl Default for Registers {
    fn default() -> Registers {
        Registers {
            values: [[0; 48]; 5],
            known: [true; 5],
        }
    }
}

impl Registers {
    /// A TD's registers as a quote's or a TDREPORT's TDINFO lays them out: MRTD, then RTMR0–3.
    pub fn td(mrtd: [u8; 48], rtmrs: [[u8; 48]; 4]) -> Registers {
        let [rtmr0, rtmr1, rtmr2, rtmr3] = rtmrs;
        Registers {
            values: [mrtd, rtmr0, rtmr1, rtmr2, rtmr3],
            known: [true; 5],
        }
    }

    /// Fold the SHA-384 digests of the events into RTMRs. Events with no SHA-384 digest or no TD
    /// register are skipped; MRTD is never extended from a log.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Registers {
        let mut regs = Registers::default();
        for event in events {
            let (Some(register), Some(digest)) = (event.register(), event.digests.sha384) else {
                continue;
            };
            if register == Register::Mrtd || !event.extends() {
                continue;
            }
            regs.extend(register, &digest);
        }
        regs
    }

    pub fn extend(&mut self, register: Register, digest: &[u8; 48]) {
        let slot = &mut self.values[register as usize];
        *slot = extend_sha384(slot, digest);
    }

    /// Sets a register to a value measured apart from the log (MRTD, from the firmware).
    pub fn set(&mut self, register: Register, value: [u8; 48]) {
        self.values[register as usize] = value;
        self.known[register as usize] = true;
    }

    /// The same set with `register` unknown.
    pub fn without(mut self, register: Register) -> Registers {
        self.values[register as usize] = [0; 48];
        self.known[register as usize] = false;
        self
    }

    /// A register's value; an unknown one reads as zeros (see [`Registers::known`]).
    pub fn get(&self, register: Register) -> [u8; 48] {
        self.values[register as usize]
    }

    /// A register's value, `None` when it is unknown.
    pub fn known(&self, register: Register) -> Option<[u8; 48]> {
        self.known[register as usize].then_some(self.values[register as usize])
    }
}

/// `SHA384(old ‖ digest)`.
pub fn extend_sha384(old: &[u8; 48], digest: &[u8; 48]) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(old);
    h.update(digest);
    h.finalize().into()
}

/// `SHA256(old ‖ digest)`.
pub fn extend_sha256(old: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(old);
    h.update(digest);
    h.finalize().into()
}

/// Serialize a byte array as lower-case hex.
pub fn serialize_hex<S: Serializer, T: AsRef<[u8]>>(bytes: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_banks_of_a_large_input_are_its_digests_whole_or_in_pieces() {
        // 2 MiB of zeros, past the two-thread threshold: `head -c 2097152 /dev/zero | sha256sum`
        // and `| sha384sum` (GNU coreutils 9.1); whole, then as a small piece, a large one and
        // the rest.
        let zeros = vec![0u8; 2 << 20];
        let mut hasher = Digests::hasher();
        for piece in [
            &zeros[..100],
            &zeros[100..(1 << 20) + 100],
            &zeros[(1 << 20) + 100..],
        ] {
            hasher.update(piece);
        }
        for d in [Digests::of(&zeros), hasher.finish()] {
            assert_eq!(
                d.sha256_hex().unwrap(),
                "5647f05ec18958947d32874eeb788fa396a05d0bab7c1b71f112ceb7e9b31eee"
            );
            assert_eq!(
                d.sha384_hex().unwrap(),
                "6f71dee19ba3fbdc5c15e857c98727eb91c318321c1c8d5a716a6b5d1b0404acb2a62fd975562545701013ec7f99329f"
            );
        }
    }

    #[test]
    fn pcr_mapping_follows_tdtcg2dxe() {
        assert_eq!(Register::from_pcr(0), Some(Register::Mrtd));
        assert_eq!(Register::from_pcr(1), Some(Register::Rtmr0));
        assert_eq!(Register::from_pcr(7), Some(Register::Rtmr0));
        for pcr in 2..=6 {
            assert_eq!(Register::from_pcr(pcr), Some(Register::Rtmr1));
        }
        for pcr in 8..=15 {
            assert_eq!(Register::from_pcr(pcr), Some(Register::Rtmr2));
        }
        assert_eq!(Register::from_pcr(16), None);
        assert_eq!(Register::from_mr_index(1), Some(Register::Rtmr0));
        assert_eq!(Register::from_mr_index(5), None);
    }

    #[test]
    fn fold_skips_no_action_and_extends_in_order() {
        let sep = Event::hashed_data(1, EventType::SEPARATOR, "separator", vec![0; 4]);
        let noop = Event::hashed_data(1, EventType::NO_ACTION, "spec_id", vec![1, 2, 3]);
        let regs = Registers::fold([&noop, &sep]);
        let expected = extend_sha384(&[0; 48], &Sha384::digest([0u8; 4]).into());
        assert_eq!(regs.get(Register::Rtmr0), expected);
        assert_eq!(regs.get(Register::Rtmr1), [0; 48]);
    }

    #[test]
    fn a_td_set_is_in_tdinfo_order_and_a_register_can_be_unknown() {
        let regs = Registers::td([1; 48], [[2; 48], [3; 48], [4; 48], [5; 48]]);
        let values: Vec<u8> = Register::ALL.iter().map(|&r| regs.get(r)[0]).collect();
        assert_eq!(values, [1, 2, 3, 4, 5]);
        let partial = regs.clone().without(Register::Rtmr3);
        assert_eq!(partial.known(Register::Rtmr3), None);
        assert_eq!(partial.known(Register::Rtmr2), Some([4; 48]));
        assert_ne!(partial, regs);
        let mut set = Registers::default().without(Register::Mrtd);
        set.set(Register::Mrtd, [9; 48]);
        assert_eq!(set.known(Register::Mrtd), Some([9; 48]));
    }

    #[test]
    fn digests_agree_needs_a_shared_bank() {
        let a = Digests::of(b"x");
        let only384 = Digests {
            sha256: None,
            sha384: a.sha384,
        };
        assert!(a.agree(&only384));
        assert!(!a.agree(&Digests::default()));
        assert!(!a.agree(&Digests::of(b"y")));
    }
}
