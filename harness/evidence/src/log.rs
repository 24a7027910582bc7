//! One entry point for event logs: [`parse`] reads TPM TCG2 (crypto-agile), TCG 1.2, TDX CCEL
//! and dstack JSON logs into an [`EventLog`] of [`LogEvent`]s, each carrying a
//! [`measure::Event`], and replays them to PCR banks or RTMRs.

use crate::alg::HashAlg;
use crate::error::{Error, Result};
use crate::tcg::{self, Records, SpecId, STARTUP_LOCALITY};
use measure::{Digests, Event, EventType, Platforms, Register, Registers};
use std::fmt;
use std::str::FromStr;

/// Number of PCRs in a PC Client TPM.
pub const PCR_COUNT: usize = 24;

/// Highest CCEL MR index: 4 = RTMR3.
const CCEL_MAX_MR_INDEX: u32 = 4;
/// Highest PC Client PCR index.
const TPM_MAX_PCR: u32 = PCR_COUNT as u32 - 1;

/// A log format. `Auto` is only an input to [`parse`]; a parsed log always names its format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Auto,
    /// TPM crypto-agile log (`binary_bios_measurements`).
    Tcg2,
    /// TPM 1.2 SHA-1 log, no Spec ID Event03 header.
    Tcg1,
    /// TDX CCEL: crypto-agile, SHA-384 only, MR index (1 = RTMR0 … 4 = RTMR3) in the PCR field.
    Ccel,
    /// dstack's JSON event log (`imr` 0..3 = RTMR0..3), bare array or full document.
    DstackJson,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Tcg2 => "tcg2",
            Format::Tcg1 => "tcg1",
            Format::Ccel => "ccel",
            Format::DstackJson => "dstack-json",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Format, String> {
        match s {
            "auto" => Ok(Format::Auto),
            "tcg2" => Ok(Format::Tcg2),
            "tcg1" => Ok(Format::Tcg1),
            "ccel" => Ok(Format::Ccel),
            "dstack-json" | "json" => Ok(Format::DstackJson),
            other => Err(format!(
                "unknown log format {other:?} (expected auto, tcg2, tcg1, ccel or dstack-json)"
            )),
        }
    }
}

/// Fill after the last record of a fixed-size log area (CCEL areas are 0xFF or 0x00 filled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Padding {
    /// Offset of the first fill byte = bytes used by records.
    pub log_bytes: usize,
    pub padding_bytes: usize,
    pub byte: u8,
}

/// One record of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    /// Record number in the input; the Spec ID header of a crypto-agile log is record 0.
    pub record: usize,
    /// Byte offset of the record (JSON: array position).
    pub offset: usize,
    /// The index as logged: PCR (TPM), MR index 1..4 (CCEL), `imr` 0..3 (dstack JSON).
    pub index: u32,
    /// The TD register the record extends (TPM logs: the TD mapping of the PCR).
    pub register: Option<Register>,
    /// The record in the shared event model. CCEL and dstack events get `pcr` by the
    /// convention RTMR0 → 1, RTMR1 → 2, RTMR2 → 8, RTMR3 → 16 (see [`conventional_pcr`]).
    pub event: Event,
    /// Every digest of the record, in log order.
    pub digests: Vec<(HashAlg, Vec<u8>)>,
}

impl LogEvent {
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    }
}

/// One PCR bank replayed from a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrBank {
    pub alg: HashAlg,
    pub pcrs: [Vec<u8>; PCR_COUNT],
}

/// A parsed log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLog {
    pub format: Format,
    /// The Spec ID Event03 header of crypto-agile logs (kept out of `events`).
    pub spec_id: Option<SpecId>,
    /// Every record after the header, in log order.
    pub events: Vec<LogEvent>,
    pub padding: Option<Padding>,
}

/// The PCR an event in a TD register gets in the event model (MRTD → 0).
pub fn conventional_pcr(register: Register) -> u32 {
    match register {
        Register::Mrtd => 0,
        Register::Rtmr0 => 1,
        Register::Rtmr1 => 2,
        Register::Rtmr2 => 8,
        Register::Rtmr3 => 16,
    }
}

/// `Digests` of the banks the event model compares, from a full digest list.
pub(crate) fn model_digests(digests: &[(HashAlg, Vec<u8>)]) -> Digests {
    let find = |alg| {
        digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    };
    Digests {
        sha256: find(HashAlg::SHA256).and_then(|d| d.try_into().ok()),
        sha384: find(HashAlg::SHA384).and_then(|d| d.try_into().ok()),
    }
}

impl EventLog {
    /// Records in the file, counting the Spec ID header of crypto-agile logs, not the fill.
    pub fn record_count(&self) -> usize {
        self.events.len() + usize::from(self.spec_id.is_some())
    }

    /// The locality of a `StartupLocality` `EV_NO_ACTION` record in PCR 0, if any.
    pub fn startup_locality(&self) -> Option<u8> {
        self.events.iter().find_map(|e| {
            let data = e.event.data.as_deref()?;
            let is_locality = e.index == 0
                && e.event.event_type == EventType::NO_ACTION
                && data.starts_with(STARTUP_LOCALITY);
            if is_locality {
                data.get(STARTUP_LOCALITY.len()).copied()
            } else {
                None
            }
        })
    }

    /// The banks this log carries: the declared ones (crypto-agile), SHA-1 (TCG 1.2) or SHA-384
    /// (dstack JSON).
    pub fn banks(&self) -> Vec<HashAlg> {
        match (&self.spec_id, self.format) {
            (Some(spec_id), _) => spec_id.algorithms.iter().map(|(a, _)| *a).collect(),
            (None, Format::Tcg1) => vec![HashAlg::SHA1],
            (None, _) => vec![HashAlg::SHA384],
        }
    }

    /// Replay every bank this crate can hash into 24 PCR values, indexed by `event.pcr` (for
    /// CCEL and dstack logs that is the conventional PCR of the RTMR). Each PCR starts at zero,
    /// PCR 0 at `00..0<locality>` after a StartupLocality record; `EV_NO_ACTION` never extends.
    pub fn replay_pcrs(&self) -> Vec<PcrBank> {
        let locality = self.startup_locality();
        self.banks()
            .into_iter()
            .filter(|alg| alg.can_replay())
            .filter_map(|alg| {
                let size = alg.digest_size()?;
                let mut pcrs: [Vec<u8>; PCR_COUNT] = std::array::from_fn(|_| vec![0u8; size]);
                if let Some(locality) = locality {
                    if let Some(last) = pcrs[0].last_mut() {
                        *last = locality;
                    }
                }
                for e in self.events.iter().filter(|e| e.event.extends()) {
                    let (Some(slot), Some(digest)) =
                        (pcrs.get_mut(e.event.pcr as usize), e.digest(alg))
                    else {
                        continue;
                    };
                    if let Some(next) = alg.extend(slot, digest) {
                        *slot = next;
                    }
                }
                Some(PcrBank { alg, pcrs })
            })
            .collect()
    }

    /// Replay the SHA-384 digests into RTMR0–3 by each record's register (for TPM logs the TD
    /// mapping of the PCR). MRTD is never extended from a log; `EV_NO_ACTION` never extends.
    pub fn replay_rtmrs(&self) -> Registers {
        let mut regs = Registers::default();
        for e in self.events.iter().filter(|e| e.event.extends()) {
            let (Some(register), Some(digest)) = (e.register, e.event.digests.sha384) else {
                continue;
            };
            if register != Register::Mrtd {
                regs.extend(register, &digest);
            }
        }
        regs
    }

    /// The records as event-model events, in log order.
    pub fn measure_events(&self) -> Vec<Event> {
        self.events.iter().map(|e| e.event.clone()).collect()
    }
}

/// Parse an event log. `Format::Auto` picks: JSON (leading `{` or `[`) → dstack JSON; a Spec ID
/// Event03 header → CCEL when the only bank is SHA-384 and every record is in MR index 1..4,
/// else TCG2; otherwise TCG 1.2.
pub fn parse(bytes: &[u8], format: Format) -> Result<EventLog> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    if let Some(first) = bytes.first().filter(|b| **b == 0x00 || **b == 0xff) {
        if bytes.iter().all(|b| b == first) {
            return Err(Error::WrongFormat {
                expected: "event log",
                reason: format!(
                    "all {} bytes are {first:#04x} (an empty log area)",
                    bytes.len()
                ),
            });
        }
    }
    match format {
        Format::Auto => {
            if looks_like_json(bytes) {
                parse(bytes, Format::DstackJson)
            } else if tcg::is_crypto_agile(bytes) {
                let records = tcg::parse_crypto_agile(bytes, TPM_MAX_PCR, "tcg2")?;
                let format = if is_ccel_shaped(&records) {
                    Format::Ccel
                } else {
                    Format::Tcg2
                };
                Ok(from_records(records, format))
            } else {
                parse(bytes, Format::Tcg1)
            }
        }
        Format::Tcg2 => Ok(from_records(
            tcg::parse_crypto_agile(bytes, TPM_MAX_PCR, "tcg2")?,
            Format::Tcg2,
        )),
        Format::Ccel => Ok(from_records(
            tcg::parse_crypto_agile(bytes, CCEL_MAX_MR_INDEX, "ccel")?,
            Format::Ccel,
        )),
        Format::Tcg1 => Ok(from_records(tcg::parse_legacy(bytes)?, Format::Tcg1)),
        Format::DstackJson => crate::dstack::parse_event_log(bytes),
    }
}

fn looks_like_json(bytes: &[u8]) -> bool {
    matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{') | Some(b'[')
    )
}

/// A TDX CCEL: SHA-384 is the only bank and every record is in MR index 1..=4 (a TPM log always
/// has PCR 0 records, a CCEL never logs into MRTD).
fn is_ccel_shaped(records: &Records) -> bool {
    let sha384_only = records
        .spec_id
        .as_ref()
        .is_some_and(|s| s.algorithms == [(HashAlg::SHA384, 48)]);
    sha384_only
        && !records.records.is_empty()
        && records
            .records
            .iter()
            .all(|r| (1..=CCEL_MAX_MR_INDEX).contains(&r.index))
}

fn from_records(records: Records, format: Format) -> EventLog {
    let first_record = usize::from(records.spec_id.is_some());
    let events = records
        .records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let (register, pcr, platforms) = if format == Format::Ccel {
                let register = Register::from_mr_index(r.index);
                let pcr = register.map(conventional_pcr).unwrap_or(r.index);
                (register, pcr, Platforms::TDX)
            } else {
                (Register::from_pcr(r.index), r.index, Platforms::VTPM)
            };
            let event = Event {
                pcr,
                event_type: EventType(r.event_type),
                digests: model_digests(&r.digests),
                data: Some(r.data),
                label: String::new(),
                varies_with: Vec::new(),
                platforms,
            };
            LogEvent {
                record: first_record + i,
                offset: r.offset,
                index: r.index,
                register,
                event,
                digests: r.digests,
            }
        })
        .collect();
    EventLog {
        format,
        spec_id: records.spec_id,
        events,
        padding: records.padding,
    }
}
