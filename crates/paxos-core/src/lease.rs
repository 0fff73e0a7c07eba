//! Leader leases: the leading member serves strong reads from its own applied state,
//! without asking a majority first.
//!
//! Times are nanoseconds of the caller's monotonic clock; each side only compares its own.
//!
//! - **Acceptor**: it grants the leader's ballot a lease only while it has promised that
//!   ballot for the leader's range and nothing higher at any round it covers
//!   ([`Grants::grant`]). Until the grant runs out, counted by its own clock from when the
//!   request arrived, it refuses every prepare it would otherwise promise to another ballot,
//!   per round or per range, reporting the lease's ballot as the one it promised
//!   ([`Grants::refusal`]). Grants are not durable: for the longest lease it grants after a
//!   restart, it refuses such prepares for any ballot but the one its range promise held
//!   when it restarted, the only ballot a forgotten grant can be for (a grant holds the
//!   range promise where it is).
//! - **Contenders get their turn**: once it refused a prepare because of a grant, the
//!   acceptor does not renew that grant, so another member that must lead (a membership
//!   change proposed there, a leader it cannot reach) does once the lease ran out.
//! - **Leader**: the lease runs from when it *sent* the requests, for the shortest duration
//!   among a majority of grants, less a drift allowance ([`held_until`]).
//! - **Release**: a leader that gave its ballot up, and no longer starts reads under it,
//!   asks the voters to end its grants ([`Grants::release`]), so that its own next ballot,
//!   or another member's, need not wait for them to run out. A read that began under the
//!   ballot before may miss what is chosen after the release: it is concurrent with it.
//!
//! While the lease runs, no other ballot completes phase 1 (its majority would include an
//! acceptor bound by a grant), so every round decided in the group was decided under the
//! leader's ballot, before its range (rounds it had learned), or was reported to it by its
//! range prepare: rounds it knows of ([`crate::RangeLeader::highest_known`]). A read that
//! waits until its node applied all of them sees every write acknowledged before it began.
//!
//! **Clock assumption**: while a lease runs, the members' monotonic clocks advance at rates
//! that differ by less than [`DRIFT_DIVISOR`]'s share, and a member that stops (a restart)
//! starts its clock anew. Refusing a prepare is safe for Paxos itself whatever the clocks do
//! (it is a message left unanswered); only lease reads depend on the assumption.

use serde::{Deserialize, Serialize};

use crate::{majority, Ballot, RangePromise};

/// The leader counts a grant of `d` as `d - d / DRIFT_DIVISOR`.
pub const DRIFT_DIVISOR: u64 = 10;

/// What one acceptor granted, and since when it runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grants {
    /// When this acceptor (re)started.
    started: u64,
    /// The ballot of the range promise when the acceptor first looked at it after
    /// starting (`Some(None)`: it had none); `None` until then.
    at_start: Option<Option<Ballot>>,
    /// The ballot holding a lease here, and until when.
    granted: Option<(Ballot, u64)>,
    /// Whether a prepare was refused because of the running grant: it is not renewed.
    contended: bool,
}

impl Grants {
    pub fn new(started: u64) -> Self {
        Grants {
            started,
            at_start: None,
            granted: None,
            contended: false,
        }
    }

    /// Takes note of the acceptor's range promise, before any decision on a promise or a
    /// grant: the first one seen after starting is the one it restarted with. That holds
    /// only because every change of the range promise goes through [`Grants::refusal`]
    /// first; a new path that changes it must call that too, or the restart rule breaks.
    fn observe(&mut self, range: Option<&RangePromise>) {
        if self.at_start.is_none() {
            self.at_start = Some(range.map(|r| r.ballot.clone()));
        }
    }

    /// Grants `ballot` a lease for `requested`, capped at `longest` (this acceptor's
    /// setting; 0 grants nothing), when the acceptor's range promise is `ballot` and no
    /// round it covers promised more (`highest_round_promise`, as for
    /// [`crate::prepare_from`]). Returns the duration granted, 0 for none. A grant running
    /// for another ballot is never cut short, and a contended one never renewed.
    pub fn grant(
        &mut self,
        now: u64,
        ballot: &Ballot,
        requested: u64,
        longest: u64,
        range: Option<&RangePromise>,
        highest_round_promise: Option<&Ballot>,
    ) -> u64 {
        self.observe(range);
        let duration = requested.min(longest);
        let promised = range.is_some_and(|r| r.ballot == *ballot)
            && highest_round_promise.is_none_or(|h| h <= ballot);
        if !self.running(now) {
            self.contended = false;
        }
        if duration == 0 || !promised || self.held_by_other(now, ballot) || self.contended {
            return 0;
        }
        let until = now.saturating_add(duration);
        let until = match &self.granted {
            Some((held, earlier)) if held == ballot => until.max(*earlier),
            _ => until,
        };
        self.granted = Some((ballot.clone(), until));
        duration
    }

    /// The ballot a prepare under `ballot`, which the acceptor would otherwise promise, is
    /// refused for (to be reported as promised), `range` being the acceptor's range promise:
    /// the ballot of a grant still running, or, less than `longest` after a restart, the
    /// ballot the acceptor restarted with. `None`: promise it.
    pub fn refusal(
        &mut self,
        now: u64,
        ballot: &Ballot,
        longest: u64,
        range: Option<&RangePromise>,
    ) -> Option<Ballot> {
        self.observe(range);
        if let Some((held, _)) = self
            .granted
            .as_ref()
            .filter(|_| self.held_by_other(now, ballot))
        {
            self.contended = true;
            return Some(held.clone());
        }
        let restarting = longest > 0 && now < self.started.saturating_add(longest);
        match &self.at_start {
            Some(Some(held)) if restarting && held != ballot => Some(held.clone()),
            _ => None,
        }
    }

    /// [`Grants::refusal`] for a prepare of one round: only rounds the range promise covers
    /// are refused. Below it, a grant's leader had learned every round before it prepared,
    /// so another ballot can only choose the same values again there.
    pub fn round_refusal(
        &mut self,
        now: u64,
        ballot: &Ballot,
        longest: u64,
        range: Option<&RangePromise>,
        round: i64,
    ) -> Option<Ballot> {
        if !range.is_some_and(|r| r.covers(round)) {
            self.observe(range);
            return None;
        }
        self.refusal(now, ballot, longest, range)
    }

    /// Ends what binds this acceptor to `ballot`, whose leader gave it up and reads under it
    /// no more: a grant to it, and the restart rule when it is the ballot the acceptor
    /// restarted with (a forgotten grant can only have been to it).
    pub fn release(&mut self, ballot: &Ballot) {
        if matches!(&self.granted, Some((held, _)) if held == ballot) {
            self.granted = None;
            self.contended = false;
        }
        if matches!(&self.at_start, Some(Some(held)) if held == ballot) {
            self.at_start = Some(None);
        }
    }

    /// When the grant running here ends (0 without one).
    pub fn runs_until(&self) -> u64 {
        self.granted.as_ref().map_or(0, |(_, until)| *until)
    }

    fn running(&self, now: u64) -> bool {
        now < self.runs_until()
    }

    fn held_by_other(&self, now: u64, ballot: &Ballot) -> bool {
        matches!(&self.granted, Some((held, until)) if held != ballot && now < *until)
    }
}

/// Until when a leader holds its lease, having sent its requests at `sent_at` to `voters`
/// members of which those in `granted` answered with the durations they granted (0 for a
/// refusal). `None` without a majority of grants.
pub fn held_until(sent_at: u64, granted: &[u64], voters: usize) -> Option<u64> {
    let mut durations: Vec<u64> = granted.iter().copied().filter(|d| *d > 0).collect();
    durations.sort_unstable_by(|a, b| b.cmp(a));
    let needed = majority(voters);
    let shortest = *durations.get(needed.checked_sub(1)?)?;
    Some(sent_at.saturating_add(shortest - shortest / DRIFT_DIVISOR))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: i64, p: &str) -> Ballot {
        Ballot::new(n, p)
    }

    fn promise(n: i64, p: &str) -> RangePromise {
        RangePromise {
            from: 0,
            ballot: b(n, p),
        }
    }

    #[test]
    fn grants_only_the_ballot_promised_for_the_range() {
        let mut grants = Grants::new(0);
        let now = 1_000;
        assert_eq!(grants.grant(now, &b(2, "x"), 50, 100, None, None), 0);
        assert_eq!(
            grants.grant(now, &b(2, "x"), 50, 100, Some(&promise(3, "y")), None),
            0
        );
        let higher_round = b(4, "z");
        let range = promise(2, "x");
        assert_eq!(
            grants.grant(now, &b(2, "x"), 50, 100, Some(&range), Some(&higher_round)),
            0
        );
        assert_eq!(
            grants.grant(now, &b(2, "x"), 500, 100, Some(&range), Some(&b(2, "x"))),
            100
        );
        assert_eq!(grants.grant(now, &b(2, "x"), 50, 0, Some(&range), None), 0);
    }

    #[test]
    fn a_grant_refuses_other_ballots_until_it_runs_out() {
        let mut grants = Grants::new(0);
        let range = promise(2, "x");
        let r = Some(&range);
        assert_eq!(grants.grant(1_000, &b(2, "x"), 100, 100, r, None), 100);
        assert_eq!(grants.refusal(1_099, &b(3, "y"), 100, r), Some(b(2, "x")));
        assert_eq!(grants.refusal(1_050, &b(2, "x"), 100, r), None);
        assert_eq!(grants.refusal(1_100, &b(3, "y"), 100, r), None);
    }

    #[test]
    fn a_grant_is_neither_taken_over_nor_cut_short() {
        let mut grants = Grants::new(0);
        let range = promise(2, "x");
        grants.grant(1_000, &b(2, "x"), 100, 100, Some(&range), None);
        let other = promise(3, "y");
        assert_eq!(
            grants.grant(1_050, &b(3, "y"), 100, 100, Some(&other), None),
            0
        );
        grants.grant(1_010, &b(2, "x"), 10, 100, Some(&range), None);
        assert_eq!(
            grants.refusal(1_099, &b(3, "y"), 100, Some(&range)),
            Some(b(2, "x"))
        );
    }

    #[test]
    fn a_contended_grant_is_not_renewed_until_it_ran_out() {
        let mut grants = Grants::new(0);
        let range = promise(2, "x");
        grants.grant(1_000, &b(2, "x"), 100, 100, Some(&range), None);
        assert!(grants
            .refusal(1_010, &b(3, "y"), 100, Some(&range))
            .is_some());
        assert_eq!(
            grants.grant(1_050, &b(2, "x"), 100, 100, Some(&range), None),
            0
        );
        assert_eq!(grants.refusal(1_100, &b(3, "y"), 100, Some(&range)), None);
        // Once it ran out, the ballot promised then may hold one again.
        let taken = promise(3, "y");
        assert_eq!(
            grants.grant(1_101, &b(3, "y"), 100, 100, Some(&taken), None),
            100
        );
    }

    #[test]
    fn a_released_ballot_binds_no_more() {
        let range = promise(2, "x");
        let mut grants = Grants::new(0);
        grants.grant(1_000, &b(2, "x"), 100, 100, Some(&range), None);
        grants.release(&b(1, "x"));
        assert_eq!(
            grants.refusal(1_010, &b(3, "y"), 100, Some(&range)),
            Some(b(2, "x"))
        );
        grants.release(&b(2, "x"));
        assert_eq!(grants.refusal(1_020, &b(3, "y"), 100, Some(&range)), None);
        assert_eq!(grants.runs_until(), 0);
        // After a restart, the ballot it restarted with.
        let mut restarted = Grants::new(5_000);
        assert!(restarted
            .refusal(5_001, &b(3, "y"), 100, Some(&range))
            .is_some());
        restarted.release(&b(2, "x"));
        assert_eq!(
            restarted.refusal(5_002, &b(3, "y"), 100, Some(&range)),
            None
        );
    }

    #[test]
    fn a_round_prepare_is_refused_only_where_the_range_promise_reaches() {
        let mut grants = Grants::new(0);
        let range = RangePromise {
            from: 7,
            ballot: b(2, "x"),
        };
        grants.grant(1_000, &b(2, "x"), 100, 100, Some(&range), None);
        let r = Some(&range);
        assert_eq!(
            grants.round_refusal(1_050, &b(3, "y"), 100, r, 7),
            Some(b(2, "x"))
        );
        assert_eq!(grants.round_refusal(1_050, &b(3, "y"), 100, r, 6), None);
        assert_eq!(grants.round_refusal(1_050, &b(3, "y"), 100, None, 7), None);
    }

    #[test]
    fn a_restarted_acceptor_promises_no_other_ballot_for_the_longest_lease() {
        let held = promise(2, "x");
        let mut grants = Grants::new(5_000);
        assert_eq!(
            grants.refusal(5_099, &b(3, "y"), 100, Some(&held)),
            Some(b(2, "x"))
        );
        assert_eq!(grants.refusal(5_099, &b(2, "x"), 100, Some(&held)), None);
        assert_eq!(grants.refusal(5_100, &b(3, "y"), 100, Some(&held)), None);
        assert_eq!(grants.refusal(5_001, &b(3, "y"), 0, Some(&held)), None);
        // The ballot it restarted with counts, not a promise made since.
        let later = promise(3, "y");
        assert_eq!(
            grants.refusal(5_050, &b(4, "z"), 100, Some(&later)),
            Some(b(2, "x"))
        );
        assert_eq!(grants.refusal(5_050, &b(2, "x"), 100, Some(&later)), None);
        // Without a range promise at restart, no grant can have been forgotten.
        let mut fresh = Grants::new(5_000);
        assert_eq!(fresh.refusal(5_001, &b(3, "y"), 100, None), None);
        assert_eq!(fresh.refusal(5_002, &b(4, "z"), 100, Some(&later)), None);
    }

    #[test]
    fn a_leader_holds_the_shortest_grant_of_a_majority_from_when_it_sent() {
        assert_eq!(held_until(1_000, &[100, 0, 50], 3), Some(1_045));
        assert_eq!(held_until(1_000, &[100, 200, 50], 3), Some(1_090));
        assert_eq!(held_until(1_000, &[100, 0, 0], 3), None);
        assert_eq!(held_until(1_000, &[100, 100], 5), None);
        assert_eq!(held_until(1_000, &[], 1), None);
    }
}
