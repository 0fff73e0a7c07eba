//! Learning decisions without a message of their own: an accept request tells its acceptors
//! what the leader learned ([`mark_chosen_through`]), and a member that needs a round reads
//! it off what the voters report ([`decided_by_reports`]).
//!
//! The invariant both keep: **an acceptor marks a round chosen only with the value chosen
//! there, under the ballot it was chosen by**. Whoever reads a marked round (a prepare or
//! accept answered `Chosen`, a catch-up) takes it as decided without further checks, so one
//! false mark spreads.
//!
//! Marking through an accept request keeps it only under the leader's side of the contract
//! ([`RangeLeader::on_decided`](crate::RangeLeader::on_decided)): a leader keeps using its
//! ballot only while every round it proposed under it was decided under it, with the value
//! it proposed. Then every value accepted under that ballot at a decided round is the chosen
//! one. A leader that kept its ballot after one of its rounds was decided under another
//! ballot would get its own stale vote there marked chosen.

use crate::{majority, Acceptor, Ballot};
use serde::{Deserialize, Serialize};

/// Marks chosen every round up to `through` whose value was accepted under exactly `ballot`,
/// as an accept request carrying `chosen_through = through` under `ballot` asks; returns how
/// many rounds it marked. `states[i]` is the state of round `first_round + i`.
///
/// Apply it in the same durable write as the request's vote, whatever the vote (the claim
/// stays true after the leader lost its ballot). A value accepted under another ballot, even
/// an equal one, is left alone: only the leader's own ballot is vouched for.
pub fn mark_chosen_through<V>(
    states: &mut [Acceptor<V>],
    first_round: i64,
    ballot: &Ballot,
    through: i64,
) -> usize {
    let mut marked = 0;
    for (_, state) in (first_round..=through).zip(states.iter_mut()) {
        let under_ballot = matches!(&state.accepted, Some((b, _)) if b == ballot);
        if under_ballot && !state.chosen {
            state.chosen = true;
            marked += 1;
        }
    }
    marked
}

/// What one voter reports about one round when a member catches up.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RoundReport<V> {
    /// The voter accepted the value under the ballot, and has not marked the round chosen.
    Accepted(Ballot, V),
    /// The voter marked the round chosen: the value, and the ballot it was chosen under.
    Chosen(Ballot, V),
}

impl<V: Clone> RoundReport<V> {
    /// What an acceptor with `state` at a round reports there; `None` when it accepted nothing.
    pub fn of(state: &Acceptor<V>) -> Option<Self> {
        let (ballot, value) = state.accepted.clone()?;
        Some(if state.chosen {
            RoundReport::Chosen(ballot, value)
        } else {
            RoundReport::Accepted(ballot, value)
        })
    }
}

/// The decision at one round that `reports` show, if they show one: a round some voter
/// marked chosen, or a value a majority of the round's `voters` accepted under one ballot
/// (same number, same proposer), which is what chosen means.
///
/// Each report comes with the voter that made it. A voter counts once per vote, however
/// often it reported it (a retried or duplicated answer), and the reports may have been
/// read at different times: a vote once cast stays a fact. `voters` is how many vote on the
/// round, not how many answered. Equal values under different ballots are different votes:
/// a value can be accepted by a majority in total and still lose to another.
pub fn decided_by_reports<M: PartialEq, V: Clone + PartialEq>(
    reports: impl IntoIterator<Item = (M, RoundReport<V>)>,
    voters: usize,
) -> Option<(Ballot, V)> {
    let mut votes: Vec<(M, Ballot, V)> = Vec::new();
    for (voter, report) in reports {
        match report {
            RoundReport::Chosen(ballot, value) => return Some((ballot, value)),
            RoundReport::Accepted(ballot, value) => {
                let seen = votes
                    .iter()
                    .any(|(m, b, v)| *m == voter && *b == ballot && *v == value);
                if !seen {
                    votes.push((voter, ballot, value));
                }
            }
        }
    }
    votes.iter().find_map(|(_, ballot, value)| {
        let count = votes
            .iter()
            .filter(|(_, b, v)| b == ballot && v == value)
            .count();
        (count >= majority(voters)).then(|| (ballot.clone(), value.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: i64, p: &str) -> Ballot {
        Ballot::new(n, p)
    }

    fn accepted(ballot: Ballot, value: &'static str) -> Acceptor<&'static str> {
        Acceptor {
            promised: Some(ballot.clone()),
            accepted: Some((ballot, value)),
            chosen: false,
        }
    }

    #[test]
    fn marks_the_rounds_accepted_under_the_ballot_up_to_through() {
        let mut states = vec![
            accepted(b(2, "x"), "a"),
            accepted(b(1, "y"), "b"),
            Acceptor::default(),
            accepted(b(2, "x"), "c"),
            accepted(b(2, "x"), "d"),
        ];
        assert_eq!(mark_chosen_through(&mut states, 10, &b(2, "x"), 13), 2);
        let chosen: Vec<bool> = states.iter().map(|s| s.chosen).collect();
        assert_eq!(chosen, [true, false, false, true, false]);
        assert_eq!(states[0].accepted, Some((b(2, "x"), "a")));
    }

    #[test]
    fn an_equal_number_of_another_proposer_is_another_ballot() {
        let mut states = vec![accepted(b(2, "y"), "a")];
        assert_eq!(mark_chosen_through(&mut states, 0, &b(2, "x"), 0), 0);
        assert!(!states[0].chosen);
    }

    #[test]
    fn rounds_already_marked_or_beyond_through_are_left_alone() {
        let mut marked = accepted(b(1, "z"), "old");
        marked.chosen = true;
        let mut states = vec![marked.clone(), accepted(b(2, "x"), "new")];
        assert_eq!(mark_chosen_through(&mut states, 0, &b(1, "z"), 0), 0);
        assert_eq!(mark_chosen_through(&mut states, 0, &b(2, "x"), 0), 0);
        assert_eq!(states, vec![marked, accepted(b(2, "x"), "new")]);
        assert_eq!(mark_chosen_through(&mut states, 5, &b(2, "x"), 4), 0);
    }

    #[test]
    fn a_report_describes_the_state() {
        assert_eq!(RoundReport::of(&Acceptor::<&str>::default()), None);
        let mut state = accepted(b(1, "x"), "v");
        assert_eq!(
            RoundReport::of(&state),
            Some(RoundReport::Accepted(b(1, "x"), "v"))
        );
        state.chosen = true;
        assert_eq!(
            RoundReport::of(&state),
            Some(RoundReport::Chosen(b(1, "x"), "v"))
        );
    }

    #[test]
    fn one_marked_report_decides() {
        let reports = [
            (0, RoundReport::Accepted(b(3, "y"), "other")),
            (1, RoundReport::Chosen(b(2, "x"), "v")),
        ];
        assert_eq!(decided_by_reports(reports, 5), Some((b(2, "x"), "v")));
    }

    #[test]
    fn a_majority_under_one_ballot_decides() {
        let reports = [
            (0, RoundReport::Accepted(b(2, "x"), "v")),
            (1, RoundReport::Accepted(b(1, "y"), "w")),
            (2, RoundReport::Accepted(b(2, "x"), "v")),
        ];
        assert_eq!(decided_by_reports(reports, 3), Some((b(2, "x"), "v")));
    }

    #[test]
    fn a_minority_does_not_decide() {
        let reports = [
            (0, RoundReport::Accepted(b(2, "x"), "v")),
            (1, RoundReport::Accepted(b(2, "x"), "v")),
        ];
        assert_eq!(decided_by_reports(reports.clone(), 5), None);
        assert_eq!(decided_by_reports(reports, 3), Some((b(2, "x"), "v")));
    }

    #[test]
    fn equal_values_under_different_ballots_do_not_add_up() {
        let reports = [
            (0, RoundReport::Accepted(b(1, "x"), "v")),
            (1, RoundReport::Accepted(b(2, "y"), "v")),
            (2, RoundReport::Accepted(b(1, "y"), "v")),
        ];
        assert_eq!(decided_by_reports(reports, 3), None);
    }

    #[test]
    fn a_voter_counts_once_per_vote() {
        let reports = [
            (0, RoundReport::Accepted(b(1, "x"), "v")),
            (0, RoundReport::Accepted(b(1, "x"), "v")),
        ];
        assert_eq!(decided_by_reports(reports, 3), None);
        // Two reports of one voter read at different times are two facts about its votes.
        let reports = [
            (0, RoundReport::Accepted(b(1, "x"), "v")),
            (1, RoundReport::Accepted(b(1, "x"), "v")),
            (1, RoundReport::Accepted(b(4, "y"), "w")),
        ];
        assert_eq!(decided_by_reports(reports, 3), Some((b(1, "x"), "v")));
    }
}
