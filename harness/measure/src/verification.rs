//! How far each predicted TD event has been checked against real firmware.
//!
//! No TDX host runs here, so a TD prediction is only as good as what has checked it: a vTPM boot
//! of the same VM (the same event logged by the same firmware into the TPM), or a real TD's
//! event log (the captures in `harness/fixtures`). Everything else is marked unverified, never
//! silently trusted.

use crate::event::Event;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verification {
    /// The same event (label and digest) was matched by a vTPM boot of this VM.
    VerifiedVtpm,
    /// Equal (register, type, digest) to an event of a real TD's log.
    VerifiedCapture,
    Unverified,
}

impl Verification {
    pub fn as_str(self) -> &'static str {
        match self {
            Verification::VerifiedVtpm => "verified-vtpm",
            Verification::VerifiedCapture => "verified-capture",
            Verification::Unverified => "unverified",
        }
    }
}

/// The status of each TD event, in order. `vtpm_matched` are the vTPM events a boot matched (or,
/// before a boot, the vTPM prediction a boot of this VM checks); `captured` are real TD log
/// events. A capture outranks a vTPM match: it is the TD itself.
pub fn td_statuses(td: &[Event], vtpm_matched: &[Event], captured: &[Event]) -> Vec<Verification> {
    td.iter()
        .map(|event| {
            let digest = event.digests.sha384;
            if digest.is_some()
                && captured.iter().any(|c| {
                    c.register() == event.register()
                        && c.event_type == event.event_type
                        && c.digests.sha384 == digest
                })
            {
                Verification::VerifiedCapture
            } else if event.platforms.vtpm
                && vtpm_matched
                    .iter()
                    .any(|v| v.label == event.label && v.digests.sha384 == digest)
            {
                Verification::VerifiedVtpm
            } else {
                Verification::Unverified
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, Platforms};

    #[test]
    fn capture_then_vtpm_then_unverified() {
        let ev = |label: &str, data: &[u8]| {
            Event::hashed_data(1, EventType::PLATFORM_CONFIG_FLAGS, label, data.to_vec())
        };
        let td = vec![
            ev("a", b"1"),
            ev("b", b"2"),
            ev("c", b"3").on(Platforms::TDX),
            ev("d", b"4"),
        ];
        // The capture has no labels: a's digest, under another name.
        let captured = vec![ev("", b"1")];
        // b as the vTPM saw it; d with another digest; c is TD-only, so a vTPM match of its
        // label says nothing.
        let vtpm = vec![ev("b", b"2"), ev("c", b"3"), ev("d", b"x")];
        assert_eq!(
            td_statuses(&td, &vtpm, &captured),
            [
                Verification::VerifiedCapture,
                Verification::VerifiedVtpm,
                Verification::Unverified,
                Verification::Unverified
            ]
        );
        // Another register is another event.
        let mut elsewhere = ev("", b"1");
        elsewhere.pcr = 4;
        assert_eq!(
            td_statuses(&td[..1], &[], &[elsewhere]),
            [Verification::Unverified]
        );
    }
}
