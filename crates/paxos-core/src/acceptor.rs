use serde::{Deserialize, Serialize};

use crate::Ballot;

/// The durable state of one acceptor for one round (one single-decree Paxos instance).
///
/// Invariants kept by the transitions below:
/// - `promised` never decreases, and `accepted`'s ballot never exceeds `promised`;
/// - a value is accepted only under a ballot at least as high as every promise made;
/// - once `chosen`, the accepted value never changes again.
///
/// The caller must make the new state durable before it sends the reply.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Acceptor<V> {
    pub promised: Option<Ballot>,
    pub accepted: Option<(Ballot, V)>,
    pub chosen: bool,
}

/// An acceptor's answer to phase 1 (prepare).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PrepareReply<V> {
    /// The acceptor promised the ballot, and reports what it accepted before, if anything.
    Promise { accepted: Option<(Ballot, V)> },
    /// The acceptor had promised a higher ballot.
    Reject { promised: Ballot },
    /// The acceptor knows the round is decided, and under which ballot.
    Chosen(Ballot, V),
}

/// An acceptor's answer to phase 2 (accept).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AcceptReply<V> {
    Accepted,
    Reject { promised: Ballot },
    Chosen(Ballot, V),
}

impl<V> Default for Acceptor<V> {
    fn default() -> Self {
        Acceptor {
            promised: None,
            accepted: None,
            chosen: false,
        }
    }
}

impl<V: Clone + PartialEq> Acceptor<V> {
    fn chosen_value(&self) -> Option<(Ballot, V)> {
        match (&self.accepted, self.chosen) {
            (Some(accepted), true) => Some(accepted.clone()),
            _ => None,
        }
    }

    /// Phase 1b. A repeated prepare for the ballot already promised is answered again (the
    /// ballot belongs to one proposer only, so this is that proposer retrying).
    pub fn on_prepare(&mut self, ballot: &Ballot) -> PrepareReply<V> {
        if let Some((chosen, value)) = self.chosen_value() {
            return PrepareReply::Chosen(chosen, value);
        }
        match &self.promised {
            Some(promised) if promised > ballot => PrepareReply::Reject {
                promised: promised.clone(),
            },
            _ => {
                self.promised = Some(ballot.clone());
                PrepareReply::Promise {
                    accepted: self.accepted.clone(),
                }
            }
        }
    }

    /// Phase 2b.
    pub fn on_accept(&mut self, ballot: &Ballot, value: V) -> AcceptReply<V> {
        if let Some((chosen, value)) = self.chosen_value() {
            return AcceptReply::Chosen(chosen, value);
        }
        match &self.promised {
            Some(promised) if promised > ballot => AcceptReply::Reject {
                promised: promised.clone(),
            },
            _ => {
                self.promised = Some(ballot.clone());
                self.accepted = Some((ballot.clone(), value));
                AcceptReply::Accepted
            }
        }
    }

    /// A learner was told `value` was chosen under `ballot`. Recording it as accepted under
    /// that ballot is safe: every proposal above a chosen ballot carries the chosen value.
    pub fn on_learn(&mut self, ballot: &Ballot, value: V) {
        if self.chosen {
            return;
        }
        if self.promised.as_ref().is_none_or(|p| p < ballot) {
            self.promised = Some(ballot.clone());
        }
        self.accepted = Some((ballot.clone(), value));
        self.chosen = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: i64, p: &str) -> Ballot {
        Ballot::new(n, p)
    }

    #[test]
    fn promises_higher_and_rejects_lower_ballots() {
        let mut a = Acceptor::<&str>::default();
        assert_eq!(
            a.on_prepare(&b(2, "x")),
            PrepareReply::Promise { accepted: None }
        );
        assert_eq!(
            a.on_prepare(&b(1, "y")),
            PrepareReply::Reject {
                promised: b(2, "x")
            }
        );
        assert_eq!(
            a.on_prepare(&b(2, "w")),
            PrepareReply::Reject {
                promised: b(2, "x")
            }
        );
        assert_eq!(
            a.on_prepare(&b(2, "x")),
            PrepareReply::Promise { accepted: None }
        );
        assert_eq!(a.promised, Some(b(2, "x")));
    }

    #[test]
    fn accepts_only_at_or_above_the_promise_and_reports_it_later() {
        let mut a = Acceptor::default();
        a.on_prepare(&b(3, "x"));
        assert_eq!(
            a.on_accept(&b(2, "y"), "old"),
            AcceptReply::Reject {
                promised: b(3, "x")
            }
        );
        assert_eq!(a.accepted, None);
        assert_eq!(a.on_accept(&b(3, "x"), "v"), AcceptReply::Accepted);
        assert_eq!(
            a.on_prepare(&b(4, "z")),
            PrepareReply::Promise {
                accepted: Some((b(3, "x"), "v"))
            }
        );
    }

    #[test]
    fn accept_above_the_promise_raises_the_promise() {
        let mut a = Acceptor::default();
        assert_eq!(a.on_accept(&b(5, "x"), "v"), AcceptReply::Accepted);
        assert_eq!(a.promised, Some(b(5, "x")));
        assert_eq!(
            a.on_prepare(&b(4, "y")),
            PrepareReply::Reject {
                promised: b(5, "x")
            }
        );
    }

    #[test]
    fn a_chosen_value_is_final() {
        let mut a = Acceptor::default();
        a.on_accept(&b(1, "x"), "a");
        a.on_learn(&b(2, "y"), "b");
        assert_eq!(
            a.on_prepare(&b(9, "z")),
            PrepareReply::Chosen(b(2, "y"), "b")
        );
        assert_eq!(
            a.on_accept(&b(9, "z"), "c"),
            AcceptReply::Chosen(b(2, "y"), "b")
        );
        a.on_learn(&b(10, "z"), "c");
        assert_eq!(a.accepted, Some((b(2, "y"), "b")));
        assert_eq!(a.promised, Some(b(2, "y")));
    }

    #[test]
    fn learning_never_lowers_the_promise() {
        let mut a = Acceptor::default();
        a.on_prepare(&b(7, "x"));
        a.on_learn(&b(2, "y"), "v");
        assert_eq!(a.promised, Some(b(7, "x")));
        assert!(a.chosen);
    }
}
