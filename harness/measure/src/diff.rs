//! Two predicted event logs side by side: which events appear, disappear or change between two
//! versions of a VM (another OVMF, another QEMU, another device set).
//!
//! Events are paired by PCR and label (the n-th event of a label in a PCR with the n-th on the
//! other side), so an event that moved within its PCR is the same event, and one whose type or
//! digests differ is a change.

use crate::event::Event;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the second log.
    Added,
    /// Only in the first log.
    Removed,
    /// In both, with another type or digest.
    Changed,
}

/// One event that is not the same in both logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change<'a> {
    pub kind: ChangeKind,
    pub a: Option<&'a Event>,
    pub b: Option<&'a Event>,
}

impl Change<'_> {
    /// The event as the newer side has it (the removed one for a removal).
    pub fn event(&self) -> &Event {
        self.b.or(self.a).expect("a change has at least one side")
    }
}

/// The changes from `a` to `b` (in `b`'s order, removals after, in `a`'s order) and how many
/// events are the same on both sides.
pub fn diff<'a>(a: &'a [Event], b: &'a [Event]) -> (Vec<Change<'a>>, usize) {
    let key = |events: &'a [Event], i: usize| {
        let e = &events[i];
        let nth = events[..i]
            .iter()
            .filter(|o| o.pcr == e.pcr && o.label == e.label)
            .count();
        (e.pcr, e.label.as_str(), nth)
    };
    let a_keys: Vec<_> = (0..a.len()).map(|i| key(a, i)).collect();
    let mut paired = vec![false; a.len()];
    let mut changes = Vec::new();
    let mut same = 0;
    for (j, eb) in b.iter().enumerate() {
        let k = key(b, j);
        match a_keys.iter().position(|ka| *ka == k) {
            Some(i) => {
                paired[i] = true;
                let ea = &a[i];
                if ea.event_type == eb.event_type && ea.digests == eb.digests {
                    same += 1;
                } else {
                    changes.push(Change {
                        kind: ChangeKind::Changed,
                        a: Some(ea),
                        b: Some(eb),
                    });
                }
            }
            None => changes.push(Change {
                kind: ChangeKind::Added,
                a: None,
                b: Some(eb),
            }),
        }
    }
    for (ea, _) in a.iter().zip(&paired).filter(|(_, p)| !**p) {
        changes.push(Change {
            kind: ChangeKind::Removed,
            a: Some(ea),
            b: None,
        });
    }
    (changes, same)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;

    fn ev(pcr: u32, label: &str, data: &str) -> Event {
        Event::hashed_data(pcr, EventType::IPL, label, data.as_bytes().to_vec())
    }

    #[test]
    fn events_pair_by_pcr_and_label_and_differences_are_listed() {
        let a = [
            ev(0, "crtm", "x"),
            ev(1, "order", "[0]"),
            ev(1, "sep", "s"),
            ev(9, "cmdline", "c initrd=initrd"),
            ev(4, "gone", "g"),
        ];
        let b = [
            ev(0, "crtm", "x"),
            ev(1, "smbios", "t"),
            ev(1, "order", "[0,1]"),
            ev(1, "sep", "s"),
            ev(9, "cmdline", "initrd=initrd c"),
        ];
        let (changes, same) = diff(&a, &b);
        assert_eq!(same, 2);
        let listed: Vec<(ChangeKind, &str)> = changes
            .iter()
            .map(|c| (c.kind, c.event().label.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                (ChangeKind::Added, "smbios"),
                (ChangeKind::Changed, "order"),
                (ChangeKind::Changed, "cmdline"),
                (ChangeKind::Removed, "gone"),
            ]
        );
        // The same log against itself has no change; another event type is a change.
        assert_eq!(diff(&a, &a), (Vec::new(), a.len()));
        let mut retyped = a.clone();
        retyped[0].event_type = EventType::S_CRTM_VERSION;
        assert_eq!(diff(&a, &retyped).0.len(), 1);
        // The same label twice in a PCR pairs in order.
        let twice = [ev(11, "s", "1"), ev(11, "s", "2")];
        let swapped = [ev(11, "s", "2"), ev(11, "s", "1")];
        assert_eq!(diff(&twice, &swapped).0.len(), 2);
    }
}
