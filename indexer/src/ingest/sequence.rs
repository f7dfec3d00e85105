//! Per-engine sequence numbers: whether a message continues the stream, restarts it (the
//! engine restarted: what it held is gone), or follows a gap (missed messages: replay them
//! if the engine offers replay, else forget the engine and re-learn it). Messages replayed
//! from the engine's buffer may repeat what was already applied: those are skipped. Pure
//! state machine.

use std::collections::HashMap;

use crate::types::PodId;

/// How a message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// On the live stream; `can_replay`: a gap may be replayed (the engine offers replay
    /// and it was not tried for this message yet).
    Live { can_replay: bool },
    /// From the engine's replay buffer: older than the live stream, possibly known already.
    Replayed,
}

/// What to do with a message, given its engine's last sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first message seen, or the next one: apply it.
    Apply,
    /// A replayed message already applied: skip it.
    Duplicate,
    /// The sequence went backwards on the live stream: the engine restarted; clear it,
    /// then apply.
    Restarted { last: u64 },
    /// Messages `from..to` were missed and replay can be asked: ask first, then apply.
    Replay { from: u64, to: u64 },
    /// Messages were missed and cannot be replayed: clear the engine (stale until it
    /// reports a full clear), then apply.
    Unrepaired { last: u64 },
}

/// Last sequence number applied, per engine.
#[derive(Debug, Default)]
pub struct Sequences(HashMap<PodId, u64>);

impl Sequences {
    /// What `seq` means for `pod`.
    pub fn step(&self, pod: &PodId, seq: u64, arrival: Arrival) -> Step {
        let Some(last) = self.0.get(pod).copied() else {
            return Step::Apply;
        };
        match arrival {
            Arrival::Replayed if seq <= last => Step::Duplicate,
            Arrival::Live { .. } if seq <= last => Step::Restarted { last },
            Arrival::Live { can_replay: true } if seq > last + 1 => Step::Replay {
                from: last + 1,
                to: seq,
            },
            _ if seq > last + 1 => Step::Unrepaired { last },
            _ => Step::Apply,
        }
    }

    /// `seq` was applied for `pod`.
    /// `pod`'s last applied sequence number, if any.
    pub fn last(&self, pod: &PodId) -> Option<u64> {
        self.0.get(pod).copied()
    }

    pub fn record(&mut self, pod: &PodId, seq: u64) {
        self.0.insert(pod.clone(), seq);
    }

    pub fn forget(&mut self, pod: &PodId) {
        self.0.remove(pod);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: Arrival = Arrival::Live { can_replay: true };
    const LIVE_NO_REPLAY: Arrival = Arrival::Live { can_replay: false };

    #[test]
    fn next_restart_and_gaps() {
        let pod = PodId::new("10.0.0.1:8000");
        let mut s = Sequences::default();
        assert_eq!(s.step(&pod, 7, LIVE), Step::Apply);
        s.record(&pod, 7);
        assert_eq!(s.step(&pod, 8, LIVE), Step::Apply);
        assert_eq!(s.step(&pod, 7, LIVE), Step::Restarted { last: 7 });
        assert_eq!(s.step(&pod, 0, LIVE_NO_REPLAY), Step::Restarted { last: 7 });
        assert_eq!(s.step(&pod, 10, LIVE), Step::Replay { from: 8, to: 10 });
        assert_eq!(
            s.step(&pod, 10, LIVE_NO_REPLAY),
            Step::Unrepaired { last: 7 }
        );
        s.forget(&pod);
        assert_eq!(s.step(&pod, 0, LIVE), Step::Apply);
    }

    #[test]
    fn replayed_messages_skip_what_is_known_and_never_restart() {
        let pod = PodId::new("10.0.0.1:8000");
        let mut s = Sequences::default();
        assert_eq!(s.step(&pod, 3, Arrival::Replayed), Step::Apply);
        s.record(&pod, 3);
        assert_eq!(s.step(&pod, 2, Arrival::Replayed), Step::Duplicate);
        assert_eq!(s.step(&pod, 3, Arrival::Replayed), Step::Duplicate);
        assert_eq!(s.step(&pod, 4, Arrival::Replayed), Step::Apply);
        assert_eq!(
            s.step(&pod, 9, Arrival::Replayed),
            Step::Unrepaired { last: 3 }
        );
    }
}
