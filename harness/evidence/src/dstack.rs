//! dstack's JSON evidence: a document `{"quote": hex, "event_log": "<JSON array as a string>",
//! "vm_config": "<JSON as a string>", ...}` whose event log records are
//! `{"imr", "event_type", "digest", "event", "event_payload"}`. `imr` i is RTMR i (no CCEL +1).
//! Runtime events (type 0x08000001) are hashed from their name and payload (dstack's rule,
//! checked here): `SHA384(le32(0x08000001) ‖ ":" ‖ event ‖ ":" ‖ payload)`. dstack's guest agent
//! leaves that digest empty in GetQuote responses (its verifier recomputes it), so an empty or
//! absent runtime digest is computed; a stated one must equal the computed one.

use crate::alg::HashAlg;
use crate::error::{Error, Result};
use crate::log::{conventional_pcr, model_digests, EventLog, Format, LogEvent};
use measure::{Event, EventType, Platforms, Register};
use serde::Deserialize;
use sha2::{Digest, Sha384};

/// dstack's runtime event type.
pub const RUNTIME_EVENT_TYPE: u32 = 0x0800_0001;

/// The parts of a dstack evidence document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The TDX quote bytes (decode with [`crate::quote::parse`]).
    pub quote: Vec<u8>,
    pub event_log: EventLog,
    pub vm_config: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawEvent {
    imr: u32,
    event_type: u32,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    event: String,
    #[serde(default)]
    event_payload: String,
}

/// Accept a string holding JSON or a JSON value itself (dstack nests documents as strings).
fn nested(value: &serde_json::Value) -> Result<serde_json::Value> {
    match value {
        serde_json::Value::String(s) => {
            serde_json::from_str(s).map_err(|e| Error::Json(format!("nested JSON string: {e}")))
        }
        other => Ok(other.clone()),
    }
}

fn hex_field(s: &str, field: &'static str, index: usize) -> Result<Vec<u8>> {
    hex::decode(s).map_err(|e| Error::Invalid {
        field,
        offset: index,
        reason: format!("event {index}: {e}"),
    })
}

/// The digest dstack logs for a runtime event.
pub fn runtime_digest(event: &str, payload: &[u8]) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(RUNTIME_EVENT_TYPE.to_le_bytes());
    h.update(b":");
    h.update(event.as_bytes());
    h.update(b":");
    h.update(payload);
    h.finalize().into()
}

/// Parse a dstack event log: the bare JSON array, or a document with an `event_log` member.
pub fn parse_event_log(bytes: &[u8]) -> Result<EventLog> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::Json(e.to_string()))?;
    let array = match value.get("event_log") {
        Some(inner) => nested(inner)?,
        None => value,
    };
    events_from_json(array)
}

/// Parse a full dstack document (quote + event log + vm_config).
pub fn parse_document(bytes: &[u8]) -> Result<Document> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::Json(e.to_string()))?;
    let field = |name: &'static str| {
        value.get(name).ok_or(Error::WrongFormat {
            expected: "dstack document",
            reason: format!("no \"{name}\" member"),
        })
    };
    let quote_hex = field("quote")?.as_str().ok_or(Error::WrongFormat {
        expected: "dstack document",
        reason: "\"quote\" is not a hex string".into(),
    })?;
    let quote = hex_field(quote_hex, "quote", 0)?;
    let event_log = events_from_json(nested(field("event_log")?)?)?;
    let vm_config = value.get("vm_config").map(nested).transpose()?;
    Ok(Document {
        quote,
        event_log,
        vm_config,
    })
}

fn events_from_json(array: serde_json::Value) -> Result<EventLog> {
    let raw: Vec<RawEvent> =
        serde_json::from_value(array).map_err(|e| Error::Json(format!("event_log: {e}")))?;
    if raw.is_empty() {
        return Err(Error::WrongFormat {
            expected: "dstack event log",
            reason: "the event_log array is empty".into(),
        });
    }
    let mut events = Vec::with_capacity(raw.len());
    for (index, r) in raw.into_iter().enumerate() {
        // imr i is RTMR i, i.e. MR index i + 1.
        let register =
            Register::from_mr_index(r.imr.saturating_add(1)).ok_or(Error::IndexOutOfRange {
                record: index,
                offset: index,
                index: r.imr,
                max: 3,
                format: "dstack-json imr",
            })?;
        let payload = hex_field(&r.event_payload, "event_payload", index)?;
        let stated = r
            .digest
            .as_deref()
            .filter(|d| !(d.is_empty() && r.event_type == RUNTIME_EVENT_TYPE))
            .map(|d| hex_field(d, "digest", index))
            .transpose()?;
        let digest = if r.event_type == RUNTIME_EVENT_TYPE {
            let computed = runtime_digest(&r.event, &payload);
            if let Some(stated) = stated.as_ref().filter(|s| s.as_slice() != computed) {
                return Err(Error::DigestMismatch {
                    index,
                    rule: "SHA384(le32(0x08000001) || ':' || event || ':' || payload)",
                    stated: hex::encode(stated),
                    computed: hex::encode(computed),
                });
            }
            computed.to_vec()
        } else {
            stated.ok_or(Error::Invalid {
                field: "digest",
                offset: index,
                reason: format!("event {index} (type {:#x}) has no digest", r.event_type),
            })?
        };
        if digest.len() != 48 {
            return Err(Error::Invalid {
                field: "digest",
                offset: index,
                reason: format!("event {index}: {} bytes, SHA-384 needs 48", digest.len()),
            });
        }
        // Runtime events log their name and payload; firmware events log the payload.
        let data = if r.event_type == RUNTIME_EVENT_TYPE {
            let mut d = r.event.clone().into_bytes();
            d.push(b':');
            d.extend_from_slice(&payload);
            d
        } else {
            payload
        };
        let digests = vec![(HashAlg::SHA384, digest)];
        events.push(LogEvent {
            record: index,
            offset: index,
            index: r.imr,
            register: Some(register),
            event: Event {
                pcr: conventional_pcr(register),
                event_type: EventType(r.event_type),
                digests: model_digests(&digests),
                data: Some(data),
                label: String::new(),
                varies_with: Vec::new(),
                platforms: Platforms::TDX,
            },
            digests,
        });
    }
    Ok(EventLog {
        format: Format::DstackJson,
        spec_id: None,
        events,
        padding: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/tdx-json-eventlog/dstack-gpu-64g/quote-report.json"
    );

    /// The fixture's document with every runtime event's `digest` replaced by `digest`, as
    /// dstack's guest agent writes GetQuote responses (it leaves them empty).
    fn with_runtime_digests(digest: &str) -> Vec<u8> {
        let mut doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(FIXTURE).unwrap()).unwrap();
        let mut events: serde_json::Value =
            serde_json::from_str(doc["event_log"].as_str().unwrap()).unwrap();
        let mut blanked = 0;
        for e in events.as_array_mut().unwrap() {
            if e["event_type"] == RUNTIME_EVENT_TYPE {
                e["digest"] = digest.into();
                blanked += 1;
            }
        }
        assert_eq!(blanked, 8, "the fixture's RTMR3 runtime events");
        doc["event_log"] = events.to_string().into();
        serde_json::to_vec(&doc).unwrap()
    }

    /// The registers of the fixture's signed quote (expected.json, `pair:` basis).
    fn quote_registers() -> Vec<String> {
        let expected: serde_json::Value = serde_json::from_slice(
            &std::fs::read(FIXTURE.replace("quote-report.json", "expected.json")).unwrap(),
        )
        .unwrap();
        (0..4)
            .map(|i| {
                expected["expect"]["quote"][format!("rtmr{i}")]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn empty_runtime_digests_are_computed_and_replay_to_the_quote() {
        let doc = parse_document(&with_runtime_digests("")).unwrap();
        let registers = doc.event_log.replay_rtmrs();
        let replayed: Vec<String> = [
            Register::Rtmr0,
            Register::Rtmr1,
            Register::Rtmr2,
            Register::Rtmr3,
        ]
        .into_iter()
        .map(|r| hex::encode(registers.get(r)))
        .collect();
        assert_eq!(replayed, quote_registers());
        // The bare event log array (no document around it) takes the same rule.
        let log = parse_event_log(&with_runtime_digests("")).unwrap();
        assert_eq!(log.events.len(), 28);
    }

    #[test]
    fn a_wrong_runtime_digest_is_still_an_error() {
        let wrong = "00".repeat(48);
        let err = parse_document(&with_runtime_digests(&wrong)).unwrap_err();
        assert!(
            matches!(&err, Error::DigestMismatch { index: 20, stated, .. } if *stated == wrong),
            "{err}"
        );
    }

    #[test]
    fn an_empty_digest_on_a_firmware_event_is_an_error() {
        let mut doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(FIXTURE).unwrap()).unwrap();
        let mut events: serde_json::Value =
            serde_json::from_str(doc["event_log"].as_str().unwrap()).unwrap();
        events[0]["digest"] = "".into();
        doc["event_log"] = events.to_string().into();
        let err = parse_document(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("0 bytes, SHA-384 needs 48"),
            "{err}"
        );
    }
}
