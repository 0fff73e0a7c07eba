use std::collections::BTreeSet;

use crate::{majority, AcceptReply, Ballot, PrepareReply};

/// What the driver of a [`Proposer`] must do next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Command<V> {
    /// Send prepare(ballot) to every voting member.
    Prepare { ballot: Ballot },
    /// Send accept(ballot, value) to every voting member.
    Accept { ballot: Ballot, value: V },
    /// `value` is chosen: tell every member, and stop.
    Chosen { ballot: Ballot, value: V },
    /// This ballot cannot succeed. Wait a randomized delay, then call [`Proposer::retry`].
    Backoff,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Phase<V> {
    Preparing,
    Accepting(V),
    Done,
}

/// A single-decree Paxos proposer for one round, as a state machine.
///
/// Members are numbered `0..members`. The driver sends the messages a [`Command`] asks for,
/// feeds every reply back tagged with the ballot it answers (replies to older ballots are
/// ignored), and calls [`Proposer::on_silence`] when no more replies can arrive for the
/// current phase. Safety (Lamport, "Paxos Made Simple", 2.2): phase 2 proposes the value of
/// the highest-ballot acceptance reported by a majority of promises, or the proposer's own
/// value when there is none.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Proposer<V> {
    proposer: String,
    members: usize,
    own_value: V,
    ballot: Ballot,
    phase: Phase<V>,
    granted: BTreeSet<usize>,
    refused: BTreeSet<usize>,
    highest_accepted: Option<(Ballot, V)>,
    highest_seen: Ballot,
}

impl<V: Clone + PartialEq> Proposer<V> {
    /// A proposer that will first try `ballot`; call [`Proposer::start`] to begin.
    pub fn new(ballot: Ballot, members: usize, own_value: V) -> Self {
        Proposer {
            proposer: ballot.proposer.clone(),
            members,
            own_value,
            highest_seen: ballot.clone(),
            ballot,
            phase: Phase::Preparing,
            granted: BTreeSet::new(),
            refused: BTreeSet::new(),
            highest_accepted: None,
        }
    }

    pub fn ballot(&self) -> &Ballot {
        &self.ballot
    }

    /// A proposer whose phase 1 for `ballot` was already done: a majority promised `ballot`
    /// for a range of rounds at once and reported what they had accepted there (Multi-Paxos,
    /// "Paxos Made Simple" section 3). `value` must be the highest-ballot value reported for
    /// this round, or any value when none was. [`Proposer::start`] then begins at phase 2;
    /// a rejection falls back to a full phase 1 with a higher ballot.
    pub fn prepared(ballot: Ballot, members: usize, value: V) -> Self {
        let mut proposer = Proposer::new(ballot, members, value.clone());
        proposer.phase = Phase::Accepting(value);
        proposer
    }

    pub fn start(&mut self) -> Command<V> {
        match &self.phase {
            Phase::Accepting(value) => Command::Accept {
                ballot: self.ballot.clone(),
                value: value.clone(),
            },
            _ => Command::Prepare {
                ballot: self.ballot.clone(),
            },
        }
    }

    /// Phase 1 again, with a ballot above every ballot seen so far.
    pub fn retry(&mut self) -> Command<V> {
        self.ballot = Ballot::above(&self.highest_seen, self.proposer.clone());
        self.highest_seen = self.ballot.clone();
        self.phase = Phase::Preparing;
        self.granted.clear();
        self.refused.clear();
        self.highest_accepted = None;
        self.start()
    }

    pub fn on_prepare_reply(
        &mut self,
        from: usize,
        ballot: &Ballot,
        reply: PrepareReply<V>,
    ) -> Option<Command<V>> {
        if *ballot != self.ballot || self.phase != Phase::Preparing || from >= self.members {
            return None;
        }
        match reply {
            PrepareReply::Chosen(ballot, value) => Some(self.finish(ballot, value)),
            PrepareReply::Reject { promised } => self.refuse(from, promised),
            PrepareReply::Promise { accepted } => {
                if let Some((b, v)) = accepted {
                    if self.highest_accepted.as_ref().is_none_or(|(hb, _)| b > *hb) {
                        self.highest_accepted = Some((b, v));
                    }
                }
                self.granted.insert(from);
                if self.granted.len() < majority(self.members) {
                    return None;
                }
                let value = match &self.highest_accepted {
                    Some((_, v)) => v.clone(),
                    None => self.own_value.clone(),
                };
                self.phase = Phase::Accepting(value.clone());
                self.granted.clear();
                self.refused.clear();
                Some(Command::Accept {
                    ballot: self.ballot.clone(),
                    value,
                })
            }
        }
    }

    pub fn on_accept_reply(
        &mut self,
        from: usize,
        ballot: &Ballot,
        reply: AcceptReply<V>,
    ) -> Option<Command<V>> {
        let Phase::Accepting(value) = &self.phase else {
            return None;
        };
        if *ballot != self.ballot || from >= self.members {
            return None;
        }
        match reply {
            AcceptReply::Chosen(ballot, value) => Some(self.finish(ballot, value)),
            AcceptReply::Reject { promised } => self.refuse(from, promised),
            AcceptReply::Accepted => {
                let value = value.clone();
                self.granted.insert(from);
                if self.granted.len() < majority(self.members) {
                    return None;
                }
                Some(self.finish(self.ballot.clone(), value))
            }
        }
    }

    /// No more replies will come for the current phase (timeouts, lost connections).
    pub fn on_silence(&mut self) -> Command<V> {
        match &self.phase {
            Phase::Done => panic!("on_silence after the value was chosen"),
            _ => Command::Backoff,
        }
    }

    fn refuse(&mut self, from: usize, promised: Ballot) -> Option<Command<V>> {
        if promised > self.highest_seen {
            self.highest_seen = promised;
        }
        self.refused.insert(from);
        // Give up on this ballot as soon as a majority can no longer grant it.
        if self.members - self.refused.len() < majority(self.members) {
            Some(Command::Backoff)
        } else {
            None
        }
    }

    fn finish(&mut self, ballot: Ballot, value: V) -> Command<V> {
        self.phase = Phase::Done;
        Command::Chosen { ballot, value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: i64, p: &str) -> Ballot {
        Ballot::new(n, p)
    }

    fn promise(accepted: Option<(Ballot, &'static str)>) -> PrepareReply<&'static str> {
        PrepareReply::Promise { accepted }
    }

    #[test]
    fn free_round_chooses_own_value_after_two_majorities() {
        let mut p = Proposer::new(b(1, "p"), 3, "mine");
        assert_eq!(p.start(), Command::Prepare { ballot: b(1, "p") });
        assert_eq!(p.on_prepare_reply(0, &b(1, "p"), promise(None)), None);
        assert_eq!(
            p.on_prepare_reply(2, &b(1, "p"), promise(None)),
            Some(Command::Accept {
                ballot: b(1, "p"),
                value: "mine"
            })
        );
        // A late promise after phase 2 began changes nothing.
        assert_eq!(p.on_prepare_reply(1, &b(1, "p"), promise(None)), None);
        assert_eq!(
            p.on_accept_reply(1, &b(1, "p"), AcceptReply::Accepted),
            None
        );
        assert_eq!(
            p.on_accept_reply(1, &b(1, "p"), AcceptReply::Accepted),
            None,
            "a duplicated reply is not a second vote"
        );
        assert_eq!(
            p.on_accept_reply(0, &b(1, "p"), AcceptReply::Accepted),
            Some(Command::Chosen {
                ballot: b(1, "p"),
                value: "mine"
            })
        );
    }

    #[test]
    fn adopts_the_highest_accepted_value_among_promises() {
        let mut p = Proposer::new(b(5, "p"), 5, "mine");
        p.start();
        p.on_prepare_reply(0, &b(5, "p"), promise(Some((b(2, "x"), "old"))));
        p.on_prepare_reply(1, &b(5, "p"), promise(Some((b(3, "a"), "newer"))));
        assert_eq!(
            p.on_prepare_reply(4, &b(5, "p"), promise(None)),
            Some(Command::Accept {
                ballot: b(5, "p"),
                value: "newer"
            })
        );
    }

    #[test]
    fn ties_in_number_are_broken_by_proposer_not_value() {
        let mut p = Proposer::new(b(9, "p"), 3, "mine");
        p.start();
        p.on_prepare_reply(0, &b(9, "p"), promise(Some((b(4, "b"), "from-b"))));
        assert_eq!(
            p.on_prepare_reply(1, &b(9, "p"), promise(Some((b(4, "a"), "from-a")))),
            Some(Command::Accept {
                ballot: b(9, "p"),
                value: "from-b"
            })
        );
    }

    #[test]
    fn backs_off_when_a_majority_refuses_and_retries_above_what_it_saw() {
        let mut p = Proposer::new(b(1, "p"), 3, "mine");
        p.start();
        assert_eq!(
            p.on_prepare_reply(
                0,
                &b(1, "p"),
                PrepareReply::Reject {
                    promised: b(7, "q")
                }
            ),
            None
        );
        assert_eq!(
            p.on_prepare_reply(
                1,
                &b(1, "p"),
                PrepareReply::Reject {
                    promised: b(3, "r")
                }
            ),
            Some(Command::Backoff)
        );
        assert_eq!(p.retry(), Command::Prepare { ballot: b(8, "p") });
        assert!(p.ballot() > &b(7, "q"));
    }

    #[test]
    fn replies_to_an_older_ballot_are_ignored() {
        let mut p = Proposer::new(b(1, "p"), 3, "mine");
        p.start();
        p.retry();
        assert_eq!(p.on_prepare_reply(0, &b(1, "p"), promise(None)), None);
        assert_eq!(p.on_prepare_reply(1, &b(1, "p"), promise(None)), None);
        assert_eq!(
            p.on_prepare_reply(0, &b(2, "p"), promise(None)),
            None,
            "only one promise for the current ballot so far"
        );
    }

    #[test]
    fn a_reported_chosen_value_ends_the_round_at_once() {
        let mut p = Proposer::new(b(1, "p"), 3, "mine");
        p.start();
        assert_eq!(
            p.on_prepare_reply(2, &b(1, "p"), PrepareReply::Chosen(b(1, "q"), "theirs")),
            Some(Command::Chosen {
                ballot: b(1, "q"),
                value: "theirs"
            })
        );
    }

    #[test]
    fn a_prepared_proposer_starts_at_phase_two_and_falls_back_to_phase_one() {
        let mut p = Proposer::prepared(b(4, "p"), 3, "reported");
        assert_eq!(
            p.start(),
            Command::Accept {
                ballot: b(4, "p"),
                value: "reported"
            }
        );
        p.on_accept_reply(
            0,
            &b(4, "p"),
            AcceptReply::Reject {
                promised: b(6, "q"),
            },
        );
        assert_eq!(
            p.on_accept_reply(
                1,
                &b(4, "p"),
                AcceptReply::Reject {
                    promised: b(5, "q")
                }
            ),
            Some(Command::Backoff)
        );
        assert_eq!(p.retry(), Command::Prepare { ballot: b(7, "p") });
    }

    #[test]
    fn silence_means_backoff() {
        let mut p = Proposer::new(b(1, "p"), 3, "mine");
        p.start();
        p.on_prepare_reply(0, &b(1, "p"), promise(None));
        assert_eq!(p.on_silence(), Command::Backoff);
    }
}
