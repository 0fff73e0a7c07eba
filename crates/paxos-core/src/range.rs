//! Multi-Paxos with a stable leader: phase 1 once for every round from some round on
//! ("Paxos Made Simple", section 3), then phase 2 alone for each round.
//!
//! An acceptor keeps, beside its per-round [`Acceptor`] states, one [`RangePromise`]: "I
//! promised `ballot` for every round >= `from`". Invariants kept here:
//! - **a range promise binds every round it covers**: every per-round vote (prepare, accept,
//!   batched accept) first raises the round's promise to the range promise
//!   ([`RangePromise::apply`]), so a round never votes below a range promise it made;
//! - **a range promise never undercuts a round**: [`prepare_from`] refuses a ballot below the
//!   current range promise or below any per-round promise at a covered round, so a promise
//!   once made, per round or per range, is never broken;
//! - **a range promise only grows**: its ballot never decreases and its `from` never rises,
//!   so a round, once covered, stays covered by at least that ballot;
//! - **a batched accept is atomic**: every round of the batch votes, or none changes
//!   ([`accept_batch`]);
//! - **one ballot, one value per round**: a leader binds each round's value once under its
//!   ballot ([`RangeLeader`]): the highest-ballot value that the majority of promises
//!   reported there, else the first value the leader proposes there; re-proposing the round
//!   under that ballot yields the bound value again.
//! - **a leader vouches only for rounds where its ballot holds nothing but the chosen
//!   value**: [`RangeLeader::chosen_through`] covers only rounds it proposed at and saw
//!   decided under its ballot with the bound value, or saw decided before it proposed there
//!   (it then never does); once a round it proposed at is decided any other way, it proposes
//!   nothing more ([`RangeLeader::on_decided`]).
//!
//! Why per-round single-decree Paxos stays safe next to all this: a range promise is, for
//! each round it covers, an ordinary phase-1 promise; the leader's proposals are ordinary
//! phase-2 proposals justified by a majority of those promises. A gap left by a crashed
//! leader can therefore be filled by plain per-round Paxos with a higher ballot.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{AcceptReply, Acceptor, Ballot};

/// An acceptor's promise of `ballot` for every round from `from` on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangePromise {
    pub from: i64,
    pub ballot: Ballot,
}

impl RangePromise {
    /// Whether this promise binds `round`.
    pub fn covers(&self, round: i64) -> bool {
        round >= self.from
    }

    /// Raises `state`'s promise to this one when it covers `round`. Call it on a round's
    /// state before every per-round vote there: the acceptor stores per-round promises only
    /// when a round votes, and a vote must never ignore a range promise it made.
    pub fn apply<V>(&self, round: i64, state: &mut Acceptor<V>) {
        if self.covers(round) && state.promised.as_ref().is_none_or(|p| *p < self.ballot) {
            state.promised = Some(self.ballot.clone());
        }
    }
}

/// An acceptor's decision on a prepare for every round from some round on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PrepareFrom {
    /// Store this range promise, then reply with every (round, ballot, value) accepted at
    /// the rounds the prepare asked for.
    Promise(RangePromise),
    /// A promise higher than the requested ballot binds some requested round. Nothing changes.
    Reject { promised: Ballot },
}

/// Phase 1b for every round from `from` on, under `ballot`.
///
/// `highest_round_promise` is the highest per-round promise among rounds `>= from` (rounds
/// without a state have none). The prepare is refused if that or the current range promise
/// is higher than `ballot`: either would be a promise broken. Otherwise the new range
/// promise starts at the lower of both `from`s: keeping older rounds covered, now by a
/// higher ballot, only restricts the acceptor further, while dropping them would lower
/// their promise. Asking again with the ballot already promised is answered again (the
/// ballot belongs to one proposer only, so this is that proposer retrying).
pub fn prepare_from(
    current: Option<&RangePromise>,
    highest_round_promise: Option<&Ballot>,
    from: i64,
    ballot: &Ballot,
) -> PrepareFrom {
    let highest = current.map(|p| &p.ballot).max(highest_round_promise);
    if let Some(promised) = highest.filter(|h| *h > ballot) {
        return PrepareFrom::Reject {
            promised: promised.clone(),
        };
    }
    PrepareFrom::Promise(RangePromise {
        from: current.map_or(from, |p| p.from.min(from)),
        ballot: ballot.clone(),
    })
}

/// An acceptor's answer to an accept carrying several consecutive rounds under one ballot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BatchReply<V> {
    /// Every round voted, in order: [`AcceptReply::Accepted`], or [`AcceptReply::Chosen`]
    /// for a round this acceptor already knows decided (left unchanged, as
    /// [`Acceptor::on_accept`] does).
    Voted(Vec<AcceptReply<V>>),
    /// Some undecided round had promised a higher ballot (the highest such is reported).
    /// No round changed.
    Reject { promised: Ballot },
}

/// Phase 2b for rounds `first_round..first_round + states.len()` at once: `states[i]` is
/// the state of round `first_round + i` and `values[i]` the value proposed there.
///
/// Atomic, so that one durable write records the whole batch and a leader never has to
/// reason about half a batch: first every round is checked against its own promise and
/// the range promise, then either every round votes or none changes.
///
/// # Panics
/// If `states` and `values` differ in length: the caller built a malformed batch.
pub fn accept_batch<V: Clone + PartialEq>(
    range: Option<&RangePromise>,
    first_round: i64,
    states: &mut [Acceptor<V>],
    ballot: &Ballot,
    values: Vec<V>,
) -> BatchReply<V> {
    assert_eq!(states.len(), values.len(), "one value per round of a batch");
    let mut refused: Option<&Ballot> = None;
    for (round, state) in (first_round..).zip(states.iter()) {
        if state.chosen {
            continue;
        }
        let range = range.filter(|r| r.covers(round)).map(|r| &r.ballot);
        if let Some(promised) = state.promised.as_ref().max(range).filter(|p| *p > ballot) {
            refused = refused.max(Some(promised));
        }
    }
    if let Some(promised) = refused {
        return BatchReply::Reject {
            promised: promised.clone(),
        };
    }
    let replies = (first_round..)
        .zip(states.iter_mut())
        .zip(values)
        .map(|((round, state), value)| {
            if let Some(range) = range {
                range.apply(round, state);
            }
            state.on_accept(ballot, value)
        })
        .collect();
    BatchReply::Voted(replies)
}

/// A leader that a majority promised `ballot` for every round from `from` on: what it may
/// propose at each such round under that ballot, without phase 1.
///
/// Each round's value is bound once: to the highest-ballot value the promises reported
/// there, else to the first value proposed there. Paxos requires that one ballot never
/// carries two values at one round: two acceptors could then accept different values
/// under the same ballot, and a later proposer that hears of both could pick the wrong
/// one after the other was chosen.
///
/// A node shares one leadership among the processes that propose for it, one at a time:
/// each takes the rounds of its batches from [`RangeLeader::next_round`], proposes there,
/// and reports every decision it learns; one process may have several batches in flight
/// (pipelining), and must report each before it lets the leadership go. It is
/// serialisable so that the node can keep it between them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeLeader<V> {
    ballot: Ballot,
    from: i64,
    bound: BTreeMap<i64, V>,
    /// The rounds [`RangeLeader::propose`] gave a value for.
    proposed: BTreeSet<i64>,
    /// The first round the leadership covered, before any [`RangeLeader::forget_through`].
    first: i64,
    /// Every round from `first` through here is vouched for: decided under the ballot with
    /// its bound value, or decided before being proposed (and then never proposed).
    vouched_through: i64,
    /// Rounds vouched for beyond a gap above `vouched_through`.
    vouched_beyond: BTreeSet<i64>,
    /// The members whose promises it holds: the voters of `from` when it was prepared.
    voters: Vec<String>,
    abandoned: bool,
}

impl<V: Clone> RangeLeader<V> {
    /// Leadership after a majority of `voters`, the members that vote on round `from`,
    /// promised `ballot` from `from` on. `reported` holds every (round, ballot, value)
    /// accepted there that those promises reported; reports below `from` are ignored.
    pub fn new(
        ballot: Ballot,
        from: i64,
        voters: Vec<String>,
        reported: impl IntoIterator<Item = (i64, Ballot, V)>,
    ) -> Self {
        let mut highest: BTreeMap<i64, (Ballot, V)> = BTreeMap::new();
        for (round, accepted, value) in reported {
            if round < from {
                continue;
            }
            match highest.get(&round) {
                Some((b, _)) if *b >= accepted => {}
                _ => {
                    highest.insert(round, (accepted, value));
                }
            }
        }
        let bound = highest.into_iter().map(|(r, (_, v))| (r, v)).collect();
        RangeLeader {
            ballot,
            from,
            bound,
            proposed: BTreeSet::new(),
            first: from,
            vouched_through: from - 1,
            vouched_beyond: BTreeSet::new(),
            voters: sorted(voters),
            abandoned: false,
        }
    }

    pub fn ballot(&self) -> &Ballot {
        &self.ballot
    }

    /// Whether this leadership lets the leader propose at `round` without phase 1.
    pub fn covers(&self, round: i64) -> bool {
        round >= self.from
    }

    /// The value to propose at `round` under [`RangeLeader::ballot`]: the value bound there,
    /// or `own`, which is then bound. `None` when `round` is not covered (run phase 1), was
    /// decided before the leader proposed there, or the leadership was abandoned.
    pub fn propose(&mut self, round: i64, own: V) -> Option<V> {
        let decided_without_us = self.is_vouched(round) && !self.proposed.contains(&round);
        if !self.covers(round) || self.abandoned || decided_without_us {
            return None;
        }
        self.proposed.insert(round);
        Some(self.bound.entry(round).or_insert(own).clone())
    }

    fn is_vouched(&self, round: i64) -> bool {
        round <= self.vouched_through || self.vouched_beyond.contains(&round)
    }

    /// The first round of the next batch, for a caller that knows every round through
    /// `known_through` decided (however it learned them) and still awaits the outcome of the
    /// rounds for which `awaiting` holds: the batches it has in flight under this
    /// leadership (pipelining). `None`, and the leadership is abandoned, when some other
    /// round it proposed at was never reported decided ([`RangeLeader::on_decided`]):
    /// whoever proposed there stopped before hearing the outcome, another ballot may have
    /// decided it, and an acceptor may still hold this ballot's value there, which a later
    /// [`RangeLeader::chosen_through`] would then mark chosen. That the caller knows the
    /// round decided says nothing about under which ballot; for the same reason a round it
    /// awaits is vouched for only once reported, however the caller learned it.
    ///
    /// Known rounds it never proposed at are decided before it did: they are vouched for,
    /// up to the first round awaited, and the batch goes after them and after every round
    /// already used.
    ///
    /// `voters` are the members that vote on `known_through + 1`. When they are not those
    /// whose promises it holds, a membership change was decided since it was prepared, and
    /// a majority of the new voters need not include any member that promised: it is
    /// abandoned too (see [`RangeLeader::serves`]).
    pub fn next_round(
        &mut self,
        known_through: i64,
        voters: &[String],
        awaiting: impl Fn(i64) -> bool,
    ) -> Option<i64> {
        let unreported: Vec<i64> = (self.proposed.iter().copied())
            .filter(|r| !self.is_vouched(*r))
            .collect();
        let forgotten = self.vouched_through < self.from - 1;
        let lost = forgotten || unreported.iter().any(|r| !awaiting(*r));
        if lost || !self.serves(voters) {
            self.abandoned = true;
        }
        if self.abandoned {
            return None;
        }
        let vouchable = unreported
            .first()
            .map_or(known_through, |r| known_through.min(r - 1));
        if vouchable > self.vouched_through {
            self.vouched_through = vouchable;
            self.vouched_beyond = self.vouched_beyond.split_off(&(vouchable + 1));
            while self.vouched_beyond.remove(&(self.vouched_through + 1)) {
                self.vouched_through += 1;
            }
        }
        let used = self.proposed.iter().chain(&self.vouched_beyond).max();
        Some(
            (known_through + 1)
                .max(self.vouched_through + 1)
                .max(self.from)
                .max(used.map_or(i64::MIN, |r| r + 1)),
        )
    }

    /// The highest round this leadership knows anything of: rounds before its range (its
    /// node had learned them when it prepared), rounds its prepare found accepted, rounds it
    /// proposed at, rounds it saw decided. While its lease holds, no round above it was
    /// decided (see [`crate::lease`]).
    pub fn highest_known(&self) -> i64 {
        let beyond = self.vouched_beyond.iter().next_back();
        let bound = self.bound.keys().next_back();
        let proposed = self.proposed.iter().next_back();
        [beyond, bound, proposed]
            .into_iter()
            .flatten()
            .copied()
            .fold((self.from - 1).max(self.vouched_through), i64::max)
    }

    /// Whether `voters` (the members that vote on some round) are exactly those whose
    /// promises the leadership holds: only then may it propose there, or ask them for a
    /// lease ([`crate::lease`]).
    pub fn serves(&self, voters: &[String]) -> bool {
        self.voters == sorted(voters.to_vec())
    }

    /// Takes note that a membership change was decided at `round`. The rounds after it
    /// have other voters than those that promised the ballot, so the leadership ends there;
    /// and since it may go on only after a round it covers, it is given up for good. A
    /// change before its range is already in its voters.
    pub fn on_membership_change(&mut self, round: i64) {
        if round >= self.first {
            self.abandoned = true;
        }
    }

    /// Gives the leadership up for good, as when a batch's outcome stays unknown.
    pub fn abandon(&mut self) {
        self.abandoned = true;
    }

    /// Forgets bindings of rounds up to `round`, once known chosen: nobody proposes there
    /// again. The leadership then covers only later rounds. Report their decisions to
    /// [`RangeLeader::on_decided`] first: [`RangeLeader::chosen_through`] never covers a
    /// round forgotten unconfirmed.
    pub fn forget_through(&mut self, round: i64) {
        self.bound = self.bound.split_off(&(round + 1));
        self.proposed = self.proposed.split_off(&(round + 1));
        self.from = self.from.max(round + 1);
    }
}

fn sorted(mut voters: Vec<String>) -> Vec<String> {
    voters.sort_unstable();
    voters.dedup();
    voters
}

impl<V: Clone + PartialEq> RangeLeader<V> {
    /// Takes note that `round` was decided as `value` under `ballot`, however the leader
    /// learned it (accept replies, a `Chosen` answer, a catch-up). Returns whether the leader
    /// may go on proposing under its ballot: only while every round it proposed at was
    /// decided under that ballot with the bound value. Otherwise an acceptor may hold a value
    /// accepted under the leader's ballot that was not chosen, and a later
    /// [`RangeLeader::chosen_through`] over it would mark it chosen; the leadership is then
    /// abandoned for good (run a range prepare with a higher ballot).
    ///
    /// A round decided before the leader proposed there holds nothing under its ballot; the
    /// leader will not propose there any more. A round it does not cover changes nothing.
    pub fn on_decided(&mut self, round: i64, ballot: &Ballot, value: &V) -> bool {
        if !self.covers(round) {
            return !self.abandoned;
        }
        let decided_as_proposed = *ballot == self.ballot && self.bound.get(&round) == Some(value);
        if decided_as_proposed || !self.proposed.contains(&round) {
            self.vouch(round);
        } else {
            self.abandoned = true;
        }
        !self.abandoned
    }

    fn vouch(&mut self, round: i64) {
        if round <= self.vouched_through {
            return;
        }
        self.vouched_beyond.insert(round);
        while self.vouched_beyond.remove(&(self.vouched_through + 1)) {
            self.vouched_through += 1;
        }
    }

    /// Whether [`RangeLeader::on_decided`] ended the leadership.
    pub fn is_abandoned(&self) -> bool {
        self.abandoned
    }

    /// The `chosen_through` an accept under [`RangeLeader::ballot`] may carry: the last of
    /// the rounds, from the first one this leadership covered, that were all decided, under
    /// the ballot with their bound values where the leader proposed. Every value accepted
    /// under the ballot up to there is the chosen one: rounds before the leadership or
    /// decided before it proposed there never see the ballot, and later proposals under it
    /// at a round decided under it carry the chosen value again. `None` when no round is
    /// vouched for yet.
    pub fn chosen_through(&self) -> Option<i64> {
        (self.vouched_through >= self.first).then_some(self.vouched_through)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: i64, p: &str) -> Ballot {
        Ballot::new(n, p)
    }

    fn range(from: i64, ballot: Ballot) -> RangePromise {
        RangePromise { from, ballot }
    }

    #[test]
    fn a_range_promise_raises_only_the_rounds_it_covers() {
        let r = range(5, b(3, "x"));
        let mut below = Acceptor::<&str>::default();
        r.apply(4, &mut below);
        assert_eq!(below.promised, None);
        let mut covered = Acceptor::<&str>::default();
        r.apply(5, &mut covered);
        assert_eq!(covered.promised, Some(b(3, "x")));
        let mut higher = Acceptor::<&str> {
            promised: Some(b(4, "y")),
            ..Acceptor::default()
        };
        r.apply(6, &mut higher);
        assert_eq!(higher.promised, Some(b(4, "y")));
    }

    #[test]
    fn a_covered_round_rejects_per_round_votes_below_the_range_promise() {
        let r = range(0, b(3, "x"));
        let mut state = Acceptor::default();
        r.apply(1, &mut state);
        assert_eq!(
            state.on_accept(&b(2, "y"), "v"),
            AcceptReply::Reject {
                promised: b(3, "x")
            }
        );
        assert_eq!(state.on_accept(&b(3, "x"), "v"), AcceptReply::Accepted);
    }

    #[test]
    fn the_first_range_prepare_is_promised() {
        assert_eq!(
            prepare_from(None, None, 7, &b(1, "x")),
            PrepareFrom::Promise(range(7, b(1, "x")))
        );
    }

    #[test]
    fn a_range_prepare_below_the_range_promise_is_rejected() {
        let current = range(0, b(5, "x"));
        assert_eq!(
            prepare_from(Some(&current), None, 3, &b(4, "y")),
            PrepareFrom::Reject {
                promised: b(5, "x")
            }
        );
        assert_eq!(
            prepare_from(Some(&current), None, 3, &b(5, "w")),
            PrepareFrom::Reject {
                promised: b(5, "x")
            }
        );
    }

    #[test]
    fn a_range_prepare_below_a_covered_round_promise_is_rejected() {
        let current = range(0, b(1, "x"));
        assert_eq!(
            prepare_from(Some(&current), Some(&b(6, "z")), 0, &b(2, "y")),
            PrepareFrom::Reject {
                promised: b(6, "z")
            }
        );
        assert_eq!(
            prepare_from(None, Some(&b(6, "z")), 0, &b(2, "y")),
            PrepareFrom::Reject {
                promised: b(6, "z")
            }
        );
    }

    #[test]
    fn the_same_ballot_is_promised_again() {
        let current = range(2, b(5, "x"));
        assert_eq!(
            prepare_from(Some(&current), Some(&b(5, "x")), 2, &b(5, "x")),
            PrepareFrom::Promise(current.clone())
        );
    }

    #[test]
    fn a_higher_range_prepare_keeps_earlier_rounds_covered() {
        let current = range(2, b(5, "x"));
        assert_eq!(
            prepare_from(Some(&current), Some(&b(5, "z")), 9, &b(6, "y")),
            PrepareFrom::Promise(range(2, b(6, "y")))
        );
        assert_eq!(
            prepare_from(Some(&current), None, 0, &b(6, "y")),
            PrepareFrom::Promise(range(0, b(6, "y")))
        );
    }

    #[test]
    fn a_batch_is_accepted_at_every_round() {
        let r = range(0, b(2, "x"));
        let mut states = vec![Acceptor::default(), Acceptor::default()];
        assert_eq!(
            accept_batch(Some(&r), 4, &mut states, &b(2, "x"), vec!["a", "b"]),
            BatchReply::Voted(vec![AcceptReply::Accepted, AcceptReply::Accepted])
        );
        assert_eq!(states[0].accepted, Some((b(2, "x"), "a")));
        assert_eq!(states[1].accepted, Some((b(2, "x"), "b")));
    }

    #[test]
    fn one_higher_round_promise_rejects_the_whole_batch() {
        let mut states = vec![
            Acceptor::default(),
            Acceptor {
                promised: Some(b(3, "z")),
                ..Acceptor::default()
            },
        ];
        let before = states.clone();
        assert_eq!(
            accept_batch(None, 0, &mut states, &b(2, "x"), vec!["a", "b"]),
            BatchReply::Reject {
                promised: b(3, "z")
            }
        );
        assert_eq!(states, before);
    }

    #[test]
    fn a_higher_range_promise_rejects_the_batch_at_covered_rounds_only() {
        let r = range(1, b(3, "z"));
        let mut states = vec![Acceptor::default(), Acceptor::default()];
        // Rounds 0 and 1: round 1 is covered.
        assert_eq!(
            accept_batch(Some(&r), 0, &mut states, &b(2, "x"), vec!["a", "b"]),
            BatchReply::Reject {
                promised: b(3, "z")
            }
        );
        assert_eq!(states, vec![Acceptor::default(), Acceptor::default()]);
        // Rounds -2 and -1: neither is.
        assert_eq!(
            accept_batch(Some(&r), -2, &mut states, &b(2, "x"), vec!["a", "b"]),
            BatchReply::Voted(vec![AcceptReply::Accepted, AcceptReply::Accepted])
        );
    }

    #[test]
    fn a_batch_leaves_decided_rounds_alone() {
        let mut decided = Acceptor::default();
        decided.on_learn(&b(9, "z"), "old");
        let mut states = vec![decided.clone(), Acceptor::default()];
        assert_eq!(
            accept_batch(None, 0, &mut states, &b(2, "x"), vec!["a", "b"]),
            BatchReply::Voted(vec![
                AcceptReply::Chosen(b(9, "z"), "old"),
                AcceptReply::Accepted
            ])
        );
        assert_eq!(states[0], decided);
        assert_eq!(states[1].accepted, Some((b(2, "x"), "b")));
    }

    #[test]
    fn a_leader_proposes_the_highest_reported_value_else_its_own() {
        let reported = [
            (3, b(1, "y"), "low"),
            (3, b(2, "z"), "high"),
            (3, b(1, "w"), "lower"),
            (1, b(7, "z"), "before the range"),
        ];
        let mut leader = RangeLeader::new(b(4, "x"), 2, Vec::new(), reported);
        assert_eq!(leader.ballot(), &b(4, "x"));
        assert_eq!(leader.propose(1, "own"), None);
        assert_eq!(leader.propose(2, "own"), Some("own"));
        assert_eq!(leader.propose(3, "own"), Some("high"));
    }

    #[test]
    fn a_leader_never_binds_two_values_to_one_round() {
        let mut leader = RangeLeader::new(b(4, "x"), 0, Vec::new(), []);
        assert_eq!(leader.propose(5, "first"), Some("first"));
        assert_eq!(leader.propose(5, "second"), Some("first"));
        assert_eq!(leader.propose(6, "second"), Some("second"));
    }

    #[test]
    fn a_leader_stops_covering_rounds_it_forgot() {
        let mut leader = RangeLeader::new(b(4, "x"), 0, Vec::new(), []);
        leader.propose(3, "a");
        leader.propose(4, "b");
        leader.forget_through(3);
        assert!(!leader.covers(3));
        assert_eq!(leader.propose(3, "c"), None);
        assert_eq!(leader.propose(4, "c"), Some("b"));
    }

    #[test]
    fn chosen_through_covers_the_rounds_decided_under_the_ballot_without_a_gap() {
        let mut leader = RangeLeader::new(b(4, "x"), 3, Vec::new(), []);
        for round in 3..6 {
            leader.propose(round, "v");
        }
        assert_eq!(leader.chosen_through(), None);
        assert!(leader.on_decided(4, &b(4, "x"), &"v"));
        assert_eq!(leader.chosen_through(), None, "round 3 is still open");
        assert!(leader.on_decided(3, &b(4, "x"), &"v"));
        assert_eq!(leader.chosen_through(), Some(4));
        assert!(leader.on_decided(3, &b(4, "x"), &"v"), "told twice");
        assert!(leader.on_decided(5, &b(4, "x"), &"v"));
        assert_eq!(leader.chosen_through(), Some(5));
    }

    #[test]
    fn a_round_decided_under_another_ballot_ends_the_leadership() {
        let mut leader = RangeLeader::new(b(4, "x"), 0, Vec::new(), []);
        leader.propose(0, "a");
        leader.propose(1, "b");
        assert!(leader.on_decided(0, &b(4, "x"), &"a"));
        assert!(!leader.on_decided(1, &b(5, "y"), &"c"));
        assert!(leader.is_abandoned());
        assert_eq!(leader.propose(2, "d"), None);
        assert_eq!(
            leader.chosen_through(),
            Some(0),
            "round 1 is not vouched for"
        );
        assert!(
            !leader.on_decided(2, &b(4, "x"), &"d"),
            "abandoned for good"
        );
    }

    #[test]
    fn the_same_value_under_another_ballot_also_ends_the_leadership() {
        // Another proposer may have adopted the value: the leader's own acceptance of it
        // under its ballot was still not chosen.
        let mut leader = RangeLeader::new(b(4, "x"), 0, Vec::new(), []);
        leader.propose(0, "a");
        assert!(!leader.on_decided(0, &b(6, "y"), &"a"));
        assert_eq!(leader.chosen_through(), None);
    }

    #[test]
    fn a_round_decided_before_the_leader_proposed_there_is_closed_to_it() {
        let mut leader = RangeLeader::new(b(4, "x"), 2, Vec::new(), [(3, b(1, "y"), "reported")]);
        assert!(leader.on_decided(1, &b(9, "z"), &"w"), "not covered");
        assert!(leader.on_decided(2, &b(9, "z"), &"w"));
        assert!(
            leader.on_decided(3, &b(9, "z"), &"w"),
            "bound but not proposed"
        );
        assert_eq!(leader.chosen_through(), Some(3));
        assert_eq!(leader.propose(3, "own"), None);
        assert_eq!(leader.propose(4, "own"), Some("own"));
        assert!(!leader.is_abandoned());
    }

    #[test]
    fn forgetting_a_round_never_lets_chosen_through_cover_it() {
        let mut leader = RangeLeader::new(b(4, "x"), 0, Vec::new(), []);
        leader.propose(0, "a");
        leader.propose(1, "b");
        leader.forget_through(0);
        assert!(leader.on_decided(1, &b(4, "x"), &"b"));
        assert_eq!(leader.chosen_through(), None);
    }

    #[test]
    fn a_round_proposed_and_never_reported_ends_the_leadership() {
        // A process proposed at round 10 and stopped; the node then learned round 10 from the
        // members. It may have been decided under another ballot while an acceptor holds this
        // ballot's value there: vouching for it would have that value marked chosen.
        let mut leader = RangeLeader::new(b(4, "x"), 10, Vec::new(), []);
        assert_eq!(leader.next_round(9, &[], |_| false), Some(10));
        assert_eq!(leader.propose(10, "a"), Some("a"));
        assert_eq!(leader.next_round(10, &[], |_| false), None);
        assert!(leader.is_abandoned());
        assert_eq!(leader.chosen_through(), None);
        assert_eq!(leader.propose(11, "b"), None);
    }

    #[test]
    fn a_forgotten_round_never_reported_ends_the_leadership() {
        let mut leader = RangeLeader::new(b(4, "x"), 0, Vec::new(), []);
        leader.propose(0, "a");
        leader.forget_through(0);
        assert_eq!(leader.next_round(0, &[], |_| false), None);
    }

    #[test]
    fn the_next_batch_goes_after_the_rounds_used_and_the_rounds_known() {
        let mut leader = RangeLeader::new(b(4, "x"), 5, Vec::new(), []);
        assert_eq!(leader.next_round(4, &[], |_| false), Some(5));
        leader.propose(5, "a");
        leader.propose(6, "b");
        assert!(leader.on_decided(5, &b(4, "x"), &"a"));
        assert!(leader.on_decided(6, &b(4, "x"), &"b"));
        assert_eq!(
            leader.next_round(4, &[], |_| false),
            Some(7),
            "after the rounds it used"
        );
        assert_eq!(leader.chosen_through(), Some(6));
        assert_eq!(
            leader.next_round(9, &[], |_| false),
            Some(10),
            "after the rounds known decided"
        );
        assert_eq!(
            leader.chosen_through(),
            Some(9),
            "known and never proposed at"
        );
        assert_eq!(
            leader.propose(8, "c"),
            None,
            "decided before it proposed there"
        );
        leader.forget_through(9);
        assert_eq!(leader.next_round(9, &[], |_| false), Some(10));
        assert!(!leader.is_abandoned());
    }

    #[test]
    fn a_pipelined_batch_goes_after_the_batches_in_flight() {
        let mut leader = RangeLeader::new(b(4, "x"), 10, Vec::new(), []);
        assert_eq!(leader.next_round(9, &[], |_| false), Some(10));
        leader.propose(10, "a");
        leader.propose(11, "b");
        let in_flight = |r: i64| (10..=11).contains(&r);
        // The node learned round 10 (say, its applier caught up): still not vouched for,
        // since only the batch's own replies say under which ballot it was decided.
        assert_eq!(leader.next_round(10, &[], in_flight), Some(12));
        assert_eq!(leader.chosen_through(), None);
        leader.propose(12, "c");
        assert!(leader.on_decided(11, &b(4, "x"), &"b"));
        assert_eq!(leader.chosen_through(), None, "round 10 is still out");
        assert!(leader.on_decided(10, &b(4, "x"), &"a"));
        assert_eq!(leader.chosen_through(), Some(11));
        assert_eq!(leader.next_round(11, &[], |r| r == 12), Some(13));
        assert!(!leader.is_abandoned());
    }

    #[test]
    fn a_batch_in_flight_decided_otherwise_ends_the_leadership() {
        let mut leader = RangeLeader::new(b(4, "x"), 0, Vec::new(), []);
        leader.propose(0, "a");
        leader.propose(1, "b");
        assert_eq!(leader.next_round(-1, &[], |r| r <= 1), Some(2));
        assert!(!leader.on_decided(0, &b(5, "y"), &"z"));
        assert_eq!(leader.next_round(1, &[], |r| r <= 1), None);
    }

    #[test]
    fn a_batch_nobody_awaits_any_more_ends_the_leadership() {
        // The process that had it in flight died: its rounds are unreported for good.
        let mut leader = RangeLeader::new(b(4, "x"), 0, Vec::new(), []);
        leader.propose(0, "a");
        assert_eq!(leader.next_round(-1, &[], |r| r == 0), Some(1));
        leader.propose(1, "b");
        assert!(leader.on_decided(1, &b(4, "x"), &"b"));
        assert_eq!(leader.next_round(1, &[], |_| false), None);
        assert_eq!(leader.chosen_through(), None);
    }

    #[test]
    fn a_leadership_knows_every_round_it_found_proposed_or_saw_decided() {
        let mut leader = RangeLeader::new(b(4, "x"), 10, Vec::new(), [(13, b(2, "y"), "r")]);
        assert_eq!(leader.highest_known(), 13, "reported by its prepare");
        assert_eq!(leader.next_round(9, &[], |_| false), Some(10));
        leader.propose(10, "a");
        assert!(leader.on_decided(16, &b(3, "y"), &"z"));
        assert_eq!(leader.highest_known(), 16, "seen decided");
        leader.propose(17, "b");
        assert_eq!(leader.highest_known(), 17, "proposed at");
        assert!(leader.on_decided(10, &b(4, "x"), &"a"));
        leader.forget_through(17);
        assert_eq!(leader.highest_known(), 17, "forgotten rounds stay known");
        assert_eq!(
            RangeLeader::<&str>::new(b(4, "x"), 10, Vec::new(), []).highest_known(),
            9
        );
    }

    #[test]
    fn a_leadership_survives_being_stored() {
        let mut leader =
            RangeLeader::new(b(4, "x"), 5, Vec::new(), [(6, b(2, "y"), "r".to_owned())]);
        leader.propose(5, "a".to_owned());
        let text = serde_json::to_string(&leader).expect("serialisable");
        let stored: RangeLeader<String> = serde_json::from_str(&text).expect("readable");
        assert_eq!(stored, leader);
    }

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_leadership_serves_only_the_voters_that_promised_it() {
        let promised = members(&["b", "a", "c"]);
        let mut leader = RangeLeader::new(b(4, "x"), 10, promised, []);
        assert!(leader.serves(&members(&["a", "b", "c"])), "in any order");
        assert!(!leader.serves(&members(&["a", "b", "c", "d"])));
        assert_eq!(
            leader.next_round(9, &members(&["c", "a", "b"]), |_| false),
            Some(10)
        );
        leader.propose(10, "a");
        assert!(leader.on_decided(10, &b(4, "x"), &"a"));
        // A join decided elsewhere, learned by the caller: round 12 has a fourth voter.
        assert_eq!(
            leader.next_round(11, &members(&["a", "b", "c", "d"]), |_| false),
            None,
            "a majority of the new voters need not hold a promise"
        );
        assert!(leader.is_abandoned());
    }

    #[test]
    fn a_membership_change_it_decided_ends_the_leadership() {
        let voters = members(&["a", "b", "c"]);
        let mut leader = RangeLeader::new(b(4, "x"), 10, voters.clone(), []);
        leader.on_membership_change(9);
        assert!(
            !leader.is_abandoned(),
            "a change before its range is in its voters"
        );
        assert_eq!(leader.next_round(9, &voters, |_| false), Some(10));
        leader.propose(10, "leave d");
        assert!(leader.on_decided(10, &b(4, "x"), &"leave d"));
        leader.on_membership_change(10);
        assert!(leader.is_abandoned());
        assert_eq!(
            leader.next_round(10, &voters, |_| false),
            None,
            "not even while the caller's voters are not yet the new ones"
        );
    }
}
