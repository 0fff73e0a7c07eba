//! Learning: recording decisions on the members, fetching them (catch-up), deciding the
//! rounds nobody finished, and the highest round accepted in the group.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use paxos_core::{decided_by_reports, majority, RoundReport};

use super::{to_each, Log};
use crate::catalog;
use crate::error::{PaxosError, Result};
use crate::ids;
use crate::messages::{
    ChosenRequest, ChosenResponse, Decision, Entry, EntryKind, LearnRequest, LearnResponse,
    MaxRoundRequest, MaxRoundResponse,
};
use crate::peers::{self, parse};

/// How many decisions one catch-up request returns at most.
const CATCH_UP_BATCH: i64 = 1000;

impl Log {
    /// Records decisions on every learner of the first one, waiting for this node and a
    /// majority of the voters, never for a member that does not answer. Returns how far this
    /// node's own catalog now knows the log without a gap.
    pub fn learn(&self, decisions: &[Decision]) -> Result<i64> {
        let Some(first) = decisions.first() else {
            return Ok(self.learned_through);
        };
        let learners = self.learners(first.round);
        let needed = majority(self.voters(first.round).len());
        let request = LearnRequest {
            group: self.group.clone(),
            decisions: decisions.to_vec(),
        };
        let requests = to_each(&learners, "paxos_learn", &request);
        let mut answered = 0;
        let mut own: Option<std::result::Result<LearnResponse, peers::Failure>> = None;
        peers::exchange(&requests, |i, reply| {
            answered += 1;
            if learners[i] == self.self_connection {
                own = Some(reply.and_then(|text| parse(&text)));
            }
            if own.is_some() && answered >= needed {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        match own {
            Some(Ok(reply)) => Ok(reply.learned_through),
            Some(Err(reason)) => Err(PaxosError::Peer {
                connection: crate::connstr::redact(&self.self_connection),
                reason: format!("this node could not record what it learned: {reason}"),
            }),
            None => Err(PaxosError::Peer {
                connection: crate::connstr::redact(&self.self_connection),
                reason: "this node did not answer".into(),
            }),
        }
    }

    /// Fetches the decisions of rounds `learned_through+1 ..= through` that some voter
    /// knows, and records them here. Returns how far the log is now known without a gap.
    pub fn catch_up(&mut self, through: i64) -> Result<i64> {
        while self.learned_through < through {
            let from = self.learned_through + 1;
            let request = ChosenRequest {
                group: self.group.clone(),
                from_round: from,
                through_round: through,
                limit: CATCH_UP_BATCH,
            };
            let voters = self.voters(from);
            let requests = to_each(&voters, "paxos_chosen", &request);
            // What a majority's answers show decided, never waiting for a hung member; a
            // round they do not show decided is decided again by learn_through, which
            // recovers the value a majority accepted.
            let needed = majority(voters.len());
            let mut answers = Vec::new();
            let mut forgotten = None;
            let mut dropped = None;
            peers::exchange(&requests, |i, reply| {
                if let Ok(answer) = reply.and_then(|t| parse::<ChosenResponse>(&t)) {
                    dropped = dropped.or(answer.dropped_at);
                    if let Some(through) = answer.compacted_through.filter(|t| *t >= from) {
                        forgotten = Some((voters[i].clone(), through));
                    }
                    answers.push(answer);
                }
                if answers.len() >= needed {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            let best = decided_prefix(from, answers, voters.len());
            if best.is_empty() {
                // The group ended, and what this node misses is gone with it.
                if let Some(round) = dropped {
                    return Err(PaxosError::Dropped {
                        group: self.group.clone(),
                        round,
                    });
                }
                // The round is chosen, and applied where it was forgotten: only a copy of
                // such a member's state brings this node past it.
                if let Some((member, through)) = forgotten {
                    return Err(PaxosError::Compacted {
                        group: self.group.clone(),
                        round: from,
                        through,
                        member: crate::connstr::redact(&member),
                        donor: Some(member),
                    });
                }
                break;
            }
            let durable = self.learn(&best)?;
            for decision in &best {
                self.note(decision);
            }
            // What this node's catalog holds, not just what this call has seen.
            self.learned_through = self.learned_through.min(durable.max(from - 1));
            if durable < from {
                break;
            }
        }
        Ok(self.learned_through)
    }

    /// The highest round accepted by any of a majority of the voters: no round above it was
    /// chosen when this call began.
    pub fn max_group_round(&mut self) -> Result<i64> {
        let round = self.learned_through + 1;
        let mut voters = self.voters(round);
        let (members, needed) = (voters.len(), majority(voters.len()));
        let (mut answered, mut max_round, mut failures) = (0, self.learned_through, Vec::new());
        // This node's own answer is read here rather than over a connection to itself,
        // where the statement's snapshot is fresh: it was taken after the caller began, so
        // it sees every vote committed here before.
        if voters.contains(&self.self_connection) && !uses_transaction_snapshot() {
            max_round = max_round.max(catalog::max_accepted_round(&self.group)?);
            answered += 1;
            voters.retain(|v| *v != self.self_connection);
        }
        let requests = to_each(
            &voters,
            "paxos_max_round",
            &MaxRoundRequest {
                group: self.group.clone(),
            },
        );
        if answered < needed {
            peers::exchange(&requests, |i, reply| {
                match reply.and_then(|t| parse::<MaxRoundResponse>(&t)) {
                    Ok(r) => {
                        answered += 1;
                        max_round = max_round.max(r.max_round);
                    }
                    Err(reason) => failures.push(format!("{}: {reason}", voters[i])),
                }
                if answered >= needed {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
        }
        if answered < needed {
            return Err(PaxosError::NoMajority {
                group: self.group.clone(),
                round,
                answered,
                members,
                needed,
                failures,
            });
        }
        Ok(max_round)
    }

    /// Makes sure every round up to `through` is decided and known here: fetched from the
    /// members when some know it, otherwise decided (an unfinished round keeps a value a
    /// proposer got accepted, or becomes a no-op).
    pub fn learn_through(&mut self, through: i64) -> Result<()> {
        while self.catch_up(through)? < through {
            let noop = Entry {
                id: ids::proposal_id(),
                kind: EntryKind::Noop,
                value: None,
            };
            self.decide(self.learned_through + 1, &noop)?;
        }
        Ok(())
    }

    /// Makes every round up to `through` known here: learned from the members, or decided
    /// when abandoned. A round above every round accepted in the group is refused.
    pub fn know_through(&mut self, through: i64) -> Result<()> {
        if self.catch_up(through)? >= through {
            return Ok(());
        }
        let highest = self.max_group_round()?;
        if through > highest {
            return Err(PaxosError::RoundOutOfReach {
                group: self.group.clone(),
                round: through,
                reason: format!("the highest round accepted in the group is {highest}"),
            });
        }
        self.learn_through(through)
    }

    /// The decision of a round this node already knows.
    pub fn decision(&self, round: i64) -> Result<Option<Decision>> {
        let decision = catalog::decisions(&self.group, round, round, 1)?
            .into_iter()
            .next();
        let through = catalog::compacted_through(&self.group)?;
        if decision.is_none() && paxos_core::compaction::refuses(round, through) {
            return Err(PaxosError::Compacted {
                group: self.group.clone(),
                round,
                through,
                member: "this node".into(),
                donor: None,
            });
        }
        Ok(decision)
    }
}

/// The decisions of rounds `from, from + 1, ...` without a gap that `answers` show, by
/// paxos-core's `decided_by_reports` over the `voters` of `from`: rounds some member
/// recorded as chosen, and rounds where a majority accepted one value under one ballot.
/// The second rule stops at the first membership change, after which the voters may
/// differ.
fn decided_prefix(from: i64, answers: Vec<ChosenResponse>, voters: usize) -> Vec<Decision> {
    let mut reports: BTreeMap<i64, Vec<(usize, RoundReport<Entry>)>> = BTreeMap::new();
    for (voter, answer) in answers.into_iter().enumerate() {
        let chosen = answer.chosen.into_iter().map(|d| (d, true));
        for (d, chosen) in chosen.chain(answer.accepted.into_iter().map(|d| (d, false))) {
            let report = if chosen {
                RoundReport::Chosen(d.ballot, d.entry)
            } else {
                RoundReport::Accepted(d.ballot, d.entry)
            };
            reports.entry(d.round).or_default().push((voter, report));
        }
    }
    let mut prefix = Vec::new();
    let mut same_voters = true;
    for round in from.. {
        let Some(reports) = reports.remove(&round) else {
            break;
        };
        let usable = reports
            .into_iter()
            .filter(|(_, r)| same_voters || matches!(r, RoundReport::Chosen(..)));
        let Some((ballot, entry)) = decided_by_reports(usable, voters) else {
            break;
        };
        if entry.kind.changes_membership() {
            same_voters = false;
        }
        prefix.push(Decision {
            round,
            ballot,
            entry,
        });
    }
    prefix
}

/// Whether statements of this transaction read its first snapshot (REPEATABLE READ and
/// SERIALIZABLE), which may predate the statement.
fn uses_transaction_snapshot() -> bool {
    // SAFETY: a plain global of the transaction machinery.
    unsafe { pgrx::pg_sys::XactIsoLevel >= pgrx::pg_sys::XACT_REPEATABLE_READ as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxos_core::Ballot;

    fn decision(round: i64, ballot: i64, id: &str, kind: EntryKind) -> Decision {
        Decision {
            round,
            ballot: Ballot::new(ballot, "p"),
            entry: Entry {
                id: id.into(),
                kind,
                value: Some(id.into()),
            },
        }
    }

    fn value(round: i64, ballot: i64, id: &str) -> Decision {
        decision(round, ballot, id, EntryKind::Value)
    }

    fn answer(chosen: Vec<Decision>, accepted: Vec<Decision>) -> ChosenResponse {
        ChosenResponse {
            chosen,
            accepted,
            compacted_through: None,
            dropped_at: None,
        }
    }

    fn rounds(prefix: &[Decision]) -> Vec<(i64, &str)> {
        prefix
            .iter()
            .map(|d| (d.round, d.entry.id.as_str()))
            .collect()
    }

    #[test]
    fn a_value_a_majority_accepted_under_one_ballot_is_decided() {
        let answers = vec![
            answer(
                vec![value(5, 1, "a")],
                vec![value(6, 2, "b"), value(7, 2, "c")],
            ),
            answer(
                vec![],
                vec![value(5, 1, "a"), value(6, 2, "b"), value(7, 3, "c")],
            ),
        ];
        // Round 7: accepted twice, but under two ballots: not known to be chosen.
        assert_eq!(rounds(&decided_prefix(5, answers, 3)), [(5, "a"), (6, "b")]);
    }

    #[test]
    fn a_minority_acceptance_is_not_a_decision() {
        let answers = vec![
            answer(vec![], vec![value(5, 1, "a")]),
            answer(vec![], vec![value(5, 1, "a")]),
        ];
        assert!(decided_prefix(5, answers, 5).is_empty());
    }

    #[test]
    fn the_prefix_stops_at_a_gap() {
        let answers = vec![answer(vec![value(5, 1, "a"), value(7, 1, "c")], vec![])];
        assert_eq!(rounds(&decided_prefix(5, answers, 3)), [(5, "a")]);
    }

    #[test]
    fn majorities_count_only_until_the_voters_change() {
        let join = decision(6, 1, "j", EntryKind::Join);
        let answers = vec![
            answer(
                vec![],
                vec![value(5, 1, "a"), join.clone(), value(7, 1, "c")],
            ),
            answer(vec![], vec![value(5, 1, "a"), join, value(7, 1, "c")]),
        ];
        // Round 7 has other voters: a majority of the old ones proves nothing there.
        assert_eq!(rounds(&decided_prefix(5, answers, 3)), [(5, "a"), (6, "j")]);
        let recorded = vec![
            answer(vec![value(7, 1, "c")], vec![]),
            answer(
                vec![value(5, 1, "a"), decision(6, 1, "j", EntryKind::Join)],
                vec![],
            ),
        ];
        assert_eq!(
            rounds(&decided_prefix(5, recorded, 3)).len(),
            3,
            "recorded as chosen"
        );
    }
}
