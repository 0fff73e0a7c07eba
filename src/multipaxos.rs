//! The Multi-Paxos log as one node's proposer sees it: single-decree Paxos for a round, phase
//! 1 for a range of rounds, phase 2 for a batch of rounds, learning and catching up. Who
//! proposes what, under which leadership, is `leader`'s business.
//!
//! Invariants kept here:
//! - a round is proposed only with the voters of that round, which are known because every
//!   earlier round is known first (membership changes take effect one round later);
//! - a proposer moves past a round only once it knows the value chosen there, so its own
//!   value is never chosen twice;
//! - everything durable is written by the endpoints (this node's own included, over its own
//!   connection), never by the caller's transaction, so no endpoint ever waits for it.
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use paxos_core::{majority, Ballot, Command, Membership, Proposer};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::catalog;
use crate::error::{PaxosError, Result};
use crate::gucs;
use crate::ids;
use crate::messages::*;
use crate::peers::{self, endpoint_sql, parse};

/// How many decisions one catch-up request returns at most.
const CATCH_UP_BATCH: i64 = 1000;
const BACKOFF_BASE: Duration = Duration::from_micros(500);
const BACKOFF_MAX_DOUBLINGS: u32 = 6;

/// What a proposer on this node knows about a group while it works on it.
pub struct Log {
    pub group: String,
    self_connection: String,
    membership: Membership,
    /// Every round up to here is chosen and recorded on this node.
    learned_through: i64,
    owner: String,
}

impl Log {
    pub fn open(group: &str, proposer: &str) -> Result<Log> {
        let info = catalog::require_group(group)?;
        let learned_through = catalog::learned_through(group)?;
        Ok(Log {
            group: group.to_owned(),
            self_connection: info.self_connection,
            membership: catalog::membership(group)?,
            learned_through,
            owner: ids::ballot_owner(proposer),
        })
    }

    pub fn learned_through(&self) -> i64 {
        self.learned_through
    }

    /// The members that vote on `round`.
    pub fn voters(&self, round: i64) -> Vec<String> {
        self.membership
            .voters(round)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Everyone who should hear about `round`: its voters and this node.
    fn learners(&self, round: i64) -> Vec<String> {
        let mut learners = self.voters(round);
        if !learners.contains(&self.self_connection) {
            learners.push(self.self_connection.clone());
        }
        learners
    }

    /// Takes the decision of round `learned_through + 1` into account; the in-memory view
    /// only ever advances in round order, so membership changes are applied in order.
    pub fn note(&mut self, decision: &Decision) {
        if decision.round != self.learned_through + 1 {
            return;
        }
        match decision.entry.kind {
            EntryKind::Join => {
                self.membership.join(
                    decision.entry.value.as_deref().unwrap_or(""),
                    decision.round,
                );
            }
            EntryKind::Leave => {
                self.membership.leave(
                    decision.entry.value.as_deref().unwrap_or(""),
                    decision.round,
                );
            }
            EntryKind::Value
            | EntryKind::Noop
            | EntryKind::Sql
            | EntryKind::Replicate
            | EntryKind::Drop => {}
        }
        self.learned_through = decision.round;
    }

    /// Runs single-decree Paxos for `round` until some value is chosen there, and tells the
    /// members. Returns the decision and the highest round any acceptor reported.
    pub fn decide(&mut self, round: i64, entry: &Entry) -> Result<(Decision, i64)> {
        let voters = self.voters(round);
        if voters.is_empty() {
            return Err(PaxosError::RoundOutOfReach {
                group: self.group.clone(),
                round,
                reason: "no member votes on it".into(),
            });
        }
        let mut proposer = Proposer::new(self.fresh_ballot(1), voters.len(), entry.clone());
        let mut command = proposer.start();
        let mut max_round = round;
        let mut attempts = 0u32;
        let mut last_majority = Instant::now();
        loop {
            command = match command {
                Command::Prepare { ballot } => {
                    let request = PrepareRequest {
                        group: self.group.clone(),
                        round,
                        ballot: ballot.clone(),
                    };
                    let phase = self.phase(
                        "paxos_prepare",
                        &request,
                        &voters,
                        |i, reply: PrepareResponse| {
                            max_round = max_round.max(reply.max_round);
                            proposer.on_prepare_reply(i, &ballot, reply.reply)
                        },
                    );
                    self.after_phase(phase, &voters, round, &mut last_majority, &mut proposer)?
                }
                Command::Accept { ballot, value } => {
                    let request = AcceptRequest {
                        group: self.group.clone(),
                        first_round: round,
                        ballot: ballot.clone(),
                        entries: vec![value],
                        chosen_through: None,
                    };
                    let phase = self.phase(
                        "paxos_accept",
                        &request,
                        &voters,
                        |i, reply: AcceptResponse| {
                            let reply = reply.into_iter().next()?;
                            proposer.on_accept_reply(i, &ballot, reply)
                        },
                    );
                    self.after_phase(phase, &voters, round, &mut last_majority, &mut proposer)?
                }
                Command::Chosen { ballot, value } => {
                    let decision = Decision {
                        round,
                        ballot,
                        entry: value,
                    };
                    // The decision stands whatever happens here, but this node takes the
                    // round as known only once its own catalog holds it: appliers read it
                    // from there, and would otherwise move past a round they cannot see.
                    self.learn(std::slice::from_ref(&decision))?;
                    self.note(&decision);
                    return Ok((decision, max_round));
                }
                Command::Backoff => {
                    attempts += 1;
                    peers::sleep(backoff(attempts));
                    proposer.retry()
                }
            };
        }
    }

    /// A ballot numbered `number`. Ballots of equal number are ordered by proposer: a random
    /// prefix per ballot makes that order a fair draw, so no node wins every tie (the owner
    /// part keeps it unique).
    pub fn fresh_ballot(&self, number: i64) -> Ballot {
        Ballot::new(
            number,
            format!("{:08x}:{}", ids::random_u64() as u32, self.owner),
        )
    }

    /// Phase 1 for every round from `from` on at once, with the voters of `from`: returns the
    /// ballot a majority promised and, per round, the highest-ballot value they reported
    /// accepted there. Retries with higher ballots (after a randomized pause) until promised,
    /// or fails once no majority answered for pg_paxos.request_timeout.
    pub fn prepare_range(&self, from: i64, mut number: i64) -> Result<(Ballot, Reports)> {
        let voters = self.voters(from);
        let needed = majority(voters.len());
        let mut attempts = 0u32;
        let mut last_majority = Instant::now();
        loop {
            let ballot = Ballot::new(number, ids::node_ballot_owner());
            let request = PrepareFromRequest {
                group: self.group.clone(),
                from_round: from,
                ballot: ballot.clone(),
                leader: Some(self.self_connection.clone()),
            };
            let requests = to_each(&voters, "paxos_prepare_from", &request);
            let (mut promised, mut refused, mut failures) = (0, 0, Vec::new());
            let mut reports = Reports::new();
            let mut beat: Option<Ballot> = None;
            peers::exchange(&requests, |i, reply| {
                match reply.and_then(|t| parse::<PrepareFromResponse>(&t)) {
                    Ok(PrepareFromResponse {
                        reply: RangeReply::Promise { accepted },
                        ..
                    }) => {
                        promised += 1;
                        for r in accepted {
                            keep_highest(&mut reports, r);
                        }
                    }
                    Ok(PrepareFromResponse {
                        reply: RangeReply::Reject { promised },
                        ..
                    }) => {
                        refused += 1;
                        beat = beat.take().max(Some(promised));
                    }
                    Err(reason) => failures.push(format!("{}: {reason}", voters[i])),
                }
                if promised >= needed || refused > voters.len() - needed {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            if promised >= needed {
                return Ok((ballot, reports));
            }
            if promised + refused >= needed {
                last_majority = Instant::now();
            } else if last_majority.elapsed() >= gucs::request_timeout() {
                return Err(PaxosError::NoMajority {
                    group: self.group.clone(),
                    round: from,
                    answered: promised + refused,
                    members: voters.len(),
                    needed,
                    failures,
                });
            }
            number = beat.map_or(number + 1, |b| number.max(b.number + 1));
            attempts += 1;
            peers::sleep(backoff(attempts));
        }
    }

    /// Phase 2 for `entries` at rounds `first, first + 1, ...` in one request, under a ballot
    /// a majority promised for them. The voters of `first` vote on every one of them, so the
    /// entries before the last must not change membership. The request also carries what the
    /// leadership vouches for, `chosen_through` (see `AcceptRequest`).
    pub fn accept_batch(
        &self,
        ballot: &Ballot,
        first: i64,
        entries: &[Entry],
        chosen_through: Option<i64>,
    ) -> Result<Batch> {
        let voters = self.voters(first);
        let needed = majority(voters.len());
        let mut proposers: Vec<Proposer<Entry>> = entries
            .iter()
            .map(|e| Proposer::prepared(ballot.clone(), voters.len(), e.clone()))
            .collect();
        for p in &mut proposers {
            p.start();
        }
        let request = AcceptRequest {
            group: self.group.clone(),
            first_round: first,
            ballot: ballot.clone(),
            entries: entries.to_vec(),
            chosen_through,
        };
        let requests = to_each(&voters, "paxos_accept", &request);
        let mut decided: Vec<Option<Decision>> = vec![None; entries.len()];
        let (mut lost, mut answered, mut failures) = (false, 0, Vec::new());
        peers::exchange(&requests, |i, reply| {
            match reply.and_then(|t| parse::<AcceptResponse>(&t)) {
                Ok(replies) if replies.len() == entries.len() => {
                    answered += 1;
                    for (k, reply) in replies.into_iter().enumerate() {
                        if decided[k].is_some() {
                            continue;
                        }
                        match proposers[k].on_accept_reply(i, ballot, reply) {
                            Some(Command::Chosen { ballot, value }) => {
                                decided[k] = Some(Decision {
                                    round: first + k as i64,
                                    ballot,
                                    entry: value,
                                })
                            }
                            Some(_) => lost = true,
                            None => {}
                        }
                    }
                }
                Ok(_) => failures.push(format!("{}: answered for other rounds", voters[i])),
                Err(reason) => failures.push(format!("{}: {reason}", voters[i])),
            }
            if lost || decided.iter().all(Option::is_some) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if decided.iter().all(Option::is_some) {
            return Ok(Batch::Decided(decided.into_iter().flatten().collect()));
        }
        if lost || answered >= needed {
            return Ok(Batch::Lost);
        }
        Err(PaxosError::NoMajority {
            group: self.group.clone(),
            round: first,
            answered,
            members: voters.len(),
            needed,
            failures,
        })
    }

    /// Sends one phase's request to the voters and feeds replies to `handle` until it returns
    /// a command. Returns that command (if any), how many answered, and why the others failed.
    fn phase<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        endpoint: &str,
        request: &Req,
        voters: &[String],
        mut handle: impl FnMut(usize, Rep) -> Option<Command<Entry>>,
    ) -> Phase {
        let requests = to_each(voters, endpoint, request);
        let mut phase = Phase {
            command: None,
            answered: 0,
            failures: Vec::new(),
        };
        peers::exchange(&requests, |i, reply| {
            match reply.and_then(|text| parse::<Rep>(&text)) {
                Ok(reply) => {
                    phase.answered += 1;
                    phase.command = handle(i, reply);
                }
                Err(reason) => phase.failures.push(format!("{}: {reason}", voters[i])),
            }
            if phase.command.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        phase
    }

    /// The next command after a phase; fails once no majority has answered for longer than
    /// pg_paxos.request_timeout.
    fn after_phase(
        &self,
        phase: Phase,
        voters: &[String],
        round: i64,
        last_majority: &mut Instant,
        proposer: &mut Proposer<Entry>,
    ) -> Result<Command<Entry>> {
        let needed = majority(voters.len());
        if phase.answered >= needed || phase.command.is_some() {
            *last_majority = Instant::now();
        } else if last_majority.elapsed() >= gucs::request_timeout() {
            return Err(PaxosError::NoMajority {
                group: self.group.clone(),
                round,
                answered: phase.answered,
                members: voters.len(),
                needed,
                failures: phase.failures,
            });
        }
        Ok(phase.command.unwrap_or_else(|| proposer.on_silence()))
    }

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

    /// Takes rounds up to `round` as known without reading them: the caller knows they
    /// were all decided and that none changes membership.
    pub fn skip_to(&mut self, round: i64) {
        self.learned_through = self.learned_through.max(round);
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
            let best = decided_prefix(from, answers, needed);
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

/// Per round, the highest-ballot value that phase 1 found accepted there.
pub type Reports = std::collections::BTreeMap<i64, (Ballot, Entry)>;

fn keep_highest(reports: &mut Reports, r: Reported) {
    match reports.get(&r.round) {
        Some((ballot, _)) if *ballot >= r.ballot => {}
        _ => {
            reports.insert(r.round, (r.ballot, r.entry));
        }
    }
}

/// What came of proposing entries at consecutive rounds under a promised ballot.
pub enum Batch {
    /// Every round is decided: with the entry proposed there, or with one an acceptor knew
    /// was chosen there before.
    Decided(Vec<Decision>),
    /// A higher ballot came first: any of the rounds may still end up with its entry, or not.
    Lost,
}

struct Phase {
    command: Option<Command<Entry>>,
    answered: usize,
    failures: Vec<String>,
}

/// The same endpoint call for each of `members`.
pub fn to_each(
    members: &[String],
    function: &str,
    request: &impl Serialize,
) -> Vec<(String, String)> {
    let sql = endpoint_sql(function, request);
    members.iter().map(|m| (m.clone(), sql.clone())).collect()
}

/// The decisions of rounds `from, from + 1, ...` without a gap that `answers` show: rounds
/// some member recorded as chosen (agreement makes them all the same), and rounds where
/// `needed` members (a majority of the voters of `from`) accepted one value under one
/// ballot, which is what chosen means. The second rule stops at the first membership
/// change, after which the voters may differ.
fn decided_prefix(from: i64, answers: Vec<ChosenResponse>, needed: usize) -> Vec<Decision> {
    use std::collections::{BTreeMap, HashMap};
    let mut chosen: BTreeMap<i64, Decision> = BTreeMap::new();
    let mut votes: HashMap<(i64, Ballot, String), (usize, Decision)> = HashMap::new();
    for answer in answers {
        for d in answer.chosen {
            chosen.entry(d.round).or_insert(d);
        }
        for d in answer.accepted {
            let key = (d.round, d.ballot.clone(), d.entry.id.clone());
            votes.entry(key).or_insert((0, d)).0 += 1;
        }
    }
    let mut by_majority: BTreeMap<i64, Decision> = BTreeMap::new();
    for (count, d) in votes.into_values() {
        if count >= needed {
            by_majority.insert(d.round, d);
        }
    }
    let mut prefix = Vec::new();
    let mut same_voters = true;
    for round in from.. {
        let decision = match chosen.remove(&round) {
            Some(d) => d,
            None => match by_majority.remove(&round).filter(|_| same_voters) {
                Some(d) => d,
                None => break,
            },
        };
        if decision.entry.kind.changes_membership() {
            same_voters = false;
        }
        prefix.push(decision);
    }
    prefix
}

/// Randomized exponential backoff, so competing proposers stop colliding.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE * 2u32.pow(attempt.min(BACKOFF_MAX_DOUBLINGS));
    let fraction = (ids::random_u64() % 1000) as u32;
    ceiling * fraction / 1000
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
        assert_eq!(rounds(&decided_prefix(5, answers, 2)), [(5, "a"), (6, "b")]);
    }

    #[test]
    fn a_minority_acceptance_is_not_a_decision() {
        let answers = vec![
            answer(vec![], vec![value(5, 1, "a")]),
            answer(vec![], vec![value(5, 1, "a")]),
        ];
        assert!(decided_prefix(5, answers, 3).is_empty());
    }

    #[test]
    fn the_prefix_stops_at_a_gap() {
        let answers = vec![answer(vec![value(5, 1, "a"), value(7, 1, "c")], vec![])];
        assert_eq!(rounds(&decided_prefix(5, answers, 2)), [(5, "a")]);
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
        assert_eq!(rounds(&decided_prefix(5, answers, 2)), [(5, "a"), (6, "j")]);
        let recorded = vec![
            answer(vec![value(7, 1, "c")], vec![]),
            answer(
                vec![value(5, 1, "a"), decision(6, 1, "j", EntryKind::Join)],
                vec![],
            ),
        ];
        assert_eq!(
            rounds(&decided_prefix(5, recorded, 2)).len(),
            3,
            "recorded as chosen"
        );
    }
}
