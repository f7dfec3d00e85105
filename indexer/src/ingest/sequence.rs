//! Per-engine sequence numbers: whether a message continues the stream, restarts it (the
//! engine restarted: what it held is gone), or follows a gap (missed messages: replay them
//! if the engine offers replay, else forget the engine and re-learn it). Pure state machine.

use std::collections::HashMap;

use crate::types::PodId;

/// What to do with a message, given its engine's last sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first message seen, or the next one: apply it.
    Apply,
    /// The sequence went backwards: the engine restarted; clear it, then apply.
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
    /// What `seq` means for `pod`. `can_replay`: the engine offers replay and it was not
    /// tried for this message yet.
    pub fn step(&self, pod: &PodId, seq: u64, can_replay: bool) -> Step {
        match self.0.get(pod).copied() {
            None => Step::Apply,
            Some(last) if seq <= last => Step::Restarted { last },
            Some(last) if seq > last + 1 && can_replay => Step::Replay {
                from: last + 1,
                to: seq,
            },
            Some(last) if seq > last + 1 => Step::Unrepaired { last },
            Some(_) => Step::Apply,
        }
    }

    /// `seq` was applied for `pod`.
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

    #[test]
    fn next_restart_and_gaps() {
        let pod = PodId::new("10.0.0.1:8000");
        let mut s = Sequences::default();
        assert_eq!(s.step(&pod, 7, true), Step::Apply);
        s.record(&pod, 7);
        assert_eq!(s.step(&pod, 8, true), Step::Apply);
        assert_eq!(s.step(&pod, 7, true), Step::Restarted { last: 7 });
        assert_eq!(s.step(&pod, 0, false), Step::Restarted { last: 7 });
        assert_eq!(s.step(&pod, 10, true), Step::Replay { from: 8, to: 10 });
        assert_eq!(s.step(&pod, 10, false), Step::Unrepaired { last: 7 });
        s.forget(&pod);
        assert_eq!(s.step(&pod, 0, true), Step::Apply);
    }
}
