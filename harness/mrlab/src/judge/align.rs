//! Align a predicted event log with the one read from the guest, PCR by PCR, and find the first
//! divergence. Pure: events in, alignment out.
//!
//! A PCR is either *fully predicted* (every event in it is predicted, so an extra event in the
//! log is a divergence) or *partially predicted* (the predicted events must appear in order, other
//! events — e.g. PCR0 firmware volume blobs — are not judged).

use crate::report::{Counts, Outcome};
use measure::Event;
use std::collections::BTreeSet;

/// One aligned pair. `predicted` and `actual` index the slices given to [`align`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub pcr: u32,
    pub outcome: Outcome,
    pub predicted: Option<usize>,
    pub actual: Option<usize>,
}

#[derive(Clone, Debug, Default)]
pub struct Alignment {
    /// Entries in log order (a missing event sits where it should have been).
    pub entries: Vec<Entry>,
}

impl Alignment {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for e in &self.entries {
            match e.outcome {
                Outcome::Matched => c.matched += 1,
                Outcome::Mismatched => c.mismatched += 1,
                Outcome::Missing => c.missing += 1,
                Outcome::Unexpected => c.unexpected += 1,
            }
        }
        c
    }

    pub fn first_divergence(&self) -> Option<&Entry> {
        self.entries.iter().find(|e| e.outcome != Outcome::Matched)
    }

    /// For an unexpected (missing) entry, the missing (unexpected) one of the same PCR that holds
    /// the same event: the event is there, but out of order. `predicted` and `actual` are the
    /// slices given to [`align`].
    pub fn out_of_order(
        &self,
        entry: &Entry,
        predicted: &[Event],
        actual: &[Event],
    ) -> Option<&Entry> {
        let other = match entry.outcome {
            Outcome::Unexpected => Outcome::Missing,
            Outcome::Missing => Outcome::Unexpected,
            _ => return None,
        };
        self.entries
            .iter()
            .filter(|e| e.pcr == entry.pcr && e.outcome == other)
            .find(|e| {
                let (p, a) = match other {
                    Outcome::Missing => (e.predicted, entry.actual),
                    _ => (entry.predicted, e.actual),
                };
                matches!((p, a), (Some(p), Some(a)) if same_event(&predicted[p], &actual[a]))
            })
    }
}

/// The same event: same type and every digest bank both sides have is equal.
pub fn same_event(predicted: &Event, actual: &Event) -> bool {
    predicted.event_type == actual.event_type && predicted.digests.agree(&actual.digests)
}

/// Align `predicted` with `actual` (both in log order; EV_NO_ACTION records in `actual` are not
/// judged). `full_pcrs` lists the fully predicted PCRs.
pub fn align(predicted: &[Event], actual: &[Event], full_pcrs: &BTreeSet<u32>) -> Alignment {
    let pcrs: BTreeSet<u32> = predicted
        .iter()
        .map(|e| e.pcr)
        .chain(full_pcrs.iter().copied())
        .collect();
    // (position in log, entry): position orders entries across PCRs.
    let mut placed: Vec<(f64, Entry)> = Vec::new();
    for pcr in pcrs {
        let p: Vec<usize> = (0..predicted.len())
            .filter(|&i| predicted[i].pcr == pcr)
            .collect();
        let a: Vec<usize> = (0..actual.len())
            .filter(|&j| actual[j].pcr == pcr && actual[j].extends())
            .collect();
        let full = full_pcrs.contains(&pcr);
        for entry in align_one(pcr, predicted, &p, actual, &a, full) {
            let position = match entry.actual {
                Some(j) => j as f64,
                // A missing event belongs just after the last aligned actual event of its PCR.
                None => {
                    placed
                        .iter()
                        .filter(|(_, e)| e.pcr == pcr && e.actual.is_some())
                        .map(|(pos, _)| *pos)
                        .fold(-1.0, f64::max)
                        + 0.5
                }
            };
            placed.push((position, entry));
        }
    }
    placed.sort_by(|x, y| x.0.total_cmp(&y.0));
    Alignment {
        entries: placed.into_iter().map(|(_, e)| e).collect(),
    }
}

fn align_one(
    pcr: u32,
    pe: &[Event],
    p: &[usize],
    ae: &[Event],
    a: &[usize],
    full: bool,
) -> Vec<Entry> {
    let entry = |outcome, predicted, actual| Entry {
        pcr,
        outcome,
        predicted,
        actual,
    };
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < p.len() && j < a.len() {
        let (pi, aj) = (&pe[p[i]], &ae[a[j]]);
        if same_event(pi, aj) {
            out.push(entry(Outcome::Matched, Some(p[i]), Some(a[j])));
            i += 1;
            j += 1;
            continue;
        }
        // Where does the predicted event appear later in the log, and the actual one later in
        // the prediction? The nearer resynchronisation wins.
        let later_actual = (j + 1..a.len()).find(|&k| same_event(pi, &ae[a[k]]));
        let later_predicted = (i + 1..p.len()).find(|&l| same_event(&pe[p[l]], aj));
        match (later_actual, later_predicted) {
            (Some(k), l) if l.is_none_or(|l| k - j <= l - i) => {
                for &skipped in &a[j..k] {
                    if full {
                        out.push(entry(Outcome::Unexpected, None, Some(skipped)));
                    }
                }
                j = k;
            }
            (_, Some(l)) => {
                for &skipped in &p[i..l] {
                    out.push(entry(Outcome::Missing, Some(skipped), None));
                }
                i = l;
            }
            _ if full || pi.event_type == aj.event_type => {
                // Neither reappears: the two stand in the same place but differ.
                out.push(entry(Outcome::Mismatched, Some(p[i]), Some(a[j])));
                i += 1;
                j += 1;
            }
            _ => j += 1, // partial PCR: an event we do not predict
        }
    }
    for &rest in &p[i..] {
        out.push(entry(Outcome::Missing, Some(rest), None));
    }
    if full {
        for &rest in &a[j..] {
            out.push(entry(Outcome::Unexpected, None, Some(rest)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use measure::EventType;

    fn ev(pcr: u32, t: EventType, data: &str) -> Event {
        Event::hashed_data(pcr, t, data, data.as_bytes().to_vec())
    }

    fn outcomes(al: &Alignment) -> Vec<(u32, Outcome)> {
        al.entries.iter().map(|e| (e.pcr, e.outcome)).collect()
    }

    #[test]
    fn identical_logs_match() {
        let log = vec![
            ev(7, EventType::EFI_VARIABLE_DRIVER_CONFIG, "pk"),
            ev(4, EventType::EFI_ACTION, "call"),
        ];
        let al = align(&log, &log, &BTreeSet::from([4, 7]));
        assert_eq!(
            al.counts(),
            Counts {
                matched: 2,
                ..Counts::default()
            }
        );
        assert!(al.first_divergence().is_none());
    }

    #[test]
    fn changed_digest_is_a_mismatch_in_log_order() {
        let predicted = vec![
            ev(4, EventType::EFI_ACTION, "call"),
            ev(9, EventType::EVENT_TAG, "cmdline A"),
        ];
        let actual = vec![
            ev(4, EventType::EFI_ACTION, "call"),
            ev(9, EventType::EVENT_TAG, "cmdline B"),
        ];
        let al = align(&predicted, &actual, &BTreeSet::from([4, 9]));
        let first = al.first_divergence().unwrap();
        assert_eq!((first.pcr, first.outcome), (9, Outcome::Mismatched));
        assert_eq!((first.predicted, first.actual), (Some(1), Some(1)));
    }

    #[test]
    fn extra_and_missing_events_resynchronise() {
        let predicted = vec![
            ev(1, EventType::EFI_VARIABLE_BOOT, "order"),
            ev(1, EventType::EFI_VARIABLE_BOOT, "boot0000"),
            ev(1, EventType::SEPARATOR, "sep"),
        ];
        let actual = vec![
            ev(1, EventType::PLATFORM_CONFIG_FLAGS, "acpi"),
            ev(1, EventType::EFI_VARIABLE_BOOT, "order"),
            ev(1, EventType::SEPARATOR, "sep"),
        ];
        let al = align(&predicted, &actual, &BTreeSet::from([1]));
        assert_eq!(
            outcomes(&al),
            vec![
                (1, Outcome::Unexpected),
                (1, Outcome::Matched),
                (1, Outcome::Missing),
                (1, Outcome::Matched)
            ]
        );
        assert_eq!(al.first_divergence().unwrap().actual, Some(0));
    }

    #[test]
    fn partial_pcr_ignores_unpredicted_events_but_not_missing_ones() {
        let predicted = vec![ev(0, EventType::SEPARATOR, "sep")];
        let actual = vec![
            ev(0, EventType::EFI_PLATFORM_FIRMWARE_BLOB, "fv"),
            ev(0, EventType::SEPARATOR, "sep"),
        ];
        let al = align(&predicted, &actual, &BTreeSet::new());
        assert_eq!(outcomes(&al), vec![(0, Outcome::Matched)]);

        let al = align(&predicted, &actual[..1], &BTreeSet::new());
        assert_eq!(outcomes(&al), vec![(0, Outcome::Missing)]);
    }

    #[test]
    fn a_swapped_pair_is_found_out_of_order() {
        let predicted = vec![
            ev(7, EventType::EFI_VARIABLE_DRIVER_CONFIG, "pk"),
            ev(7, EventType::EFI_VARIABLE_DRIVER_CONFIG, "kek"),
            ev(7, EventType::SEPARATOR, "sep"),
        ];
        let actual = vec![
            predicted[1].clone(),
            predicted[0].clone(),
            predicted[2].clone(),
        ];
        let al = align(&predicted, &actual, &BTreeSet::from([7]));
        let first = al.first_divergence().unwrap();
        assert_eq!(
            (first.outcome, first.actual),
            (Outcome::Unexpected, Some(0))
        );
        let other = al.out_of_order(first, &predicted, &actual).unwrap();
        assert_eq!(
            (other.outcome, other.predicted),
            (Outcome::Missing, Some(1))
        );

        // An extra event has no counterpart.
        let extra = vec![
            predicted[0].clone(),
            ev(7, EventType::IPL, "extra"),
            predicted[1].clone(),
            predicted[2].clone(),
        ];
        let al = align(&predicted, &extra, &BTreeSet::from([7]));
        let first = al.first_divergence().unwrap();
        assert_eq!(first.outcome, Outcome::Unexpected);
        assert!(al.out_of_order(first, &predicted, &extra).is_none());
    }

    #[test]
    fn empty_log_against_prediction_is_all_missing() {
        let predicted = vec![ev(7, EventType::SEPARATOR, "sep")];
        let al = align(&predicted, &[], &BTreeSet::from([7]));
        assert_eq!(al.counts().missing, 1);
    }

    #[test]
    fn no_action_records_are_not_judged() {
        let actual = vec![
            ev(0, EventType::NO_ACTION, "spec id"),
            ev(7, EventType::SEPARATOR, "sep"),
        ];
        let predicted = vec![ev(7, EventType::SEPARATOR, "sep")];
        let al = align(&predicted, &actual, &BTreeSet::from([0, 7]));
        assert_eq!(
            al.counts(),
            Counts {
                matched: 1,
                ..Counts::default()
            }
        );
    }
}
