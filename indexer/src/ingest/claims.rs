//! What one message may not decide alone: that an engine has a new data-parallel rank,
//! serves another model, or restarted (its sequence went back, which wipes what it held).
//!
//! A message making such a claim is held, not applied, until the same pod's next message
//! continues it (the next sequence number, the same model): a real engine that restarted or
//! changed does exactly that, while a single forged or corrupted message is discarded when
//! the pod's real stream carries on, and counted. Held messages are applied once confirmed,
//! so a real change loses nothing. At most one message is held per pod, and pods are bounded
//! by the engines allowed times `--max-dp-ranks`, so holding costs bounded memory. Pure
//! state: the caller decides what a change is and applies what comes out.

use std::collections::HashMap;

use crate::types::PodId;

/// What to do with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<M> {
    /// Nothing claimed: apply it.
    Apply(M),
    /// A claim not yet confirmed: held.
    Hold,
    /// It continues the held claim: apply the held message, then this one.
    Confirmed { held: M, current: M },
}

struct Held<M> {
    seq: u64,
    model: Option<String>,
    message: M,
}

/// The held claims, one per pod at most.
pub struct Claims<M> {
    held: HashMap<PodId, Held<M>>,
}

impl<M> Default for Claims<M> {
    fn default() -> Self {
        Self {
            held: HashMap::new(),
        }
    }
}

/// A verdict, and whether an earlier held claim was discarded unconfirmed.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked<M> {
    pub verdict: Verdict<M>,
    pub discarded: bool,
}

impl<M> Claims<M> {
    /// Judge `pod`'s message `seq` naming `model`; `claims` says whether it would change
    /// what is known of the pod (new rank, other model, sequence going back).
    pub fn check(
        &mut self,
        pod: &PodId,
        seq: u64,
        model: Option<&str>,
        claims: bool,
        message: M,
    ) -> Checked<M> {
        let prior = self.held.remove(pod);
        if let Some(held) = prior {
            if held.seq.checked_add(1) == Some(seq) && held.model.as_deref() == model {
                return Checked {
                    verdict: Verdict::Confirmed {
                        held: held.message,
                        current: message,
                    },
                    discarded: false,
                };
            }
            return Checked {
                verdict: self.hold_if(pod, seq, model, claims, message),
                discarded: true,
            };
        }
        Checked {
            verdict: self.hold_if(pod, seq, model, claims, message),
            discarded: false,
        }
    }

    fn hold_if(
        &mut self,
        pod: &PodId,
        seq: u64,
        model: Option<&str>,
        claims: bool,
        message: M,
    ) -> Verdict<M> {
        if !claims {
            return Verdict::Apply(message);
        }
        self.held.insert(
            pod.clone(),
            Held {
                seq,
                model: model.map(str::to_owned),
                message,
            },
        );
        Verdict::Hold
    }

    /// Forget a pod (dropped engine).
    pub fn forget(&mut self, pod: &PodId) {
        self.held.remove(pod);
    }

    /// How many messages are held.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(rank: u32) -> PodId {
        PodId {
            endpoint: "10.0.0.5:8000".into(),
            dp_rank: rank,
        }
    }

    #[test]
    fn a_plain_message_is_applied() {
        let mut c = Claims::default();
        let r = c.check(&pod(0), 7, Some("m"), false, "a");
        assert_eq!(r.verdict, Verdict::Apply("a"));
        assert!(!r.discarded);
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn a_claim_needs_its_continuation() {
        let mut c = Claims::default();
        assert_eq!(
            c.check(&pod(3), 0, Some("m"), true, "a").verdict,
            Verdict::Hold
        );
        // Another pod's message does not confirm it.
        assert_eq!(
            c.check(&pod(0), 1, Some("m"), false, "x").verdict,
            Verdict::Apply("x")
        );
        assert_eq!(
            c.check(&pod(3), 1, Some("m"), true, "b").verdict,
            Verdict::Confirmed {
                held: "a",
                current: "b"
            }
        );
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn a_lone_claim_is_discarded_when_the_real_stream_goes_on() {
        let mut c = Claims::default();
        // A backwards sequence number while the engine is at 100.
        assert_eq!(
            c.check(&pod(0), 3, Some("m"), true, "forged").verdict,
            Verdict::Hold
        );
        let r = c.check(&pod(0), 101, Some("m"), false, "real");
        assert_eq!(r.verdict, Verdict::Apply("real"));
        assert!(r.discarded);
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn a_model_change_needs_two_messages_naming_it() {
        let mut c = Claims::default();
        assert_eq!(
            c.check(&pod(0), 5, Some("other"), true, "a").verdict,
            Verdict::Hold
        );
        // The next message names the old model: the claim was not confirmed.
        let r = c.check(&pod(0), 6, Some("m"), false, "b");
        assert_eq!(r.verdict, Verdict::Apply("b"));
        assert!(r.discarded);
        assert_eq!(
            c.check(&pod(0), 7, Some("other"), true, "c").verdict,
            Verdict::Hold
        );
        assert_eq!(
            c.check(&pod(0), 8, Some("other"), true, "d").verdict,
            Verdict::Confirmed {
                held: "c",
                current: "d"
            }
        );
    }
}
