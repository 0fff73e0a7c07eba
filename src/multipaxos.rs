//! The Multi-Paxos log: deciding rounds, appending, catching up and applying.
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
        leadership::forget_through(group, learned_through);
        Ok(Log {
            group: group.to_owned(),
            self_connection: info.self_connection,
            membership: catalog::membership(group)?,
            learned_through,
            owner: ids::ballot_owner(proposer),
        })
    }

    /// Opens the log to append to it, after this node's earlier proposers on the group are
    /// done (see `catalog::take_proposer_turn`), so it starts from what they appended.
    pub fn open_to_append(group: &str, proposer: &str) -> Result<Log> {
        catalog::require_group(group)?;
        catalog::take_proposer_turn(group)?;
        Log::open(group, proposer)
    }

    pub fn learned_through(&self) -> i64 {
        self.learned_through
    }

    fn voters(&self, round: i64) -> Vec<String> {
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
    fn note(&mut self, decision: &Decision) {
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
            EntryKind::Value | EntryKind::Noop => {}
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
        let mut proposer = match leadership::for_round(&self.group, round, &voters) {
            // Phase 1 is done for this round: propose the value already bound to it under
            // this ballot (reported by phase 1, or proposed before), else our entry.
            Some((ballot, bound)) => {
                let value = bound.unwrap_or_else(|| entry.clone());
                leadership::bind(&self.group, round, &ballot, &value);
                Proposer::prepared(ballot, voters.len(), value)
            }
            None => Proposer::new(self.fresh_ballot(1), voters.len(), entry.clone()),
        };
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
                        round,
                        ballot: ballot.clone(),
                        entry: value,
                    };
                    let phase = self.phase(
                        "paxos_accept",
                        &request,
                        &voters,
                        |i, reply: AcceptResponse| proposer.on_accept_reply(i, &ballot, reply),
                    );
                    self.after_phase(phase, &voters, round, &mut last_majority, &mut proposer)?
                }
                Command::Chosen { ballot, value } => {
                    let decision = Decision {
                        round,
                        ballot,
                        entry: value,
                    };
                    // The decision stands even if this node failed to record it: whoever
                    // needs it later fetches it again (catch_up).
                    let _ = self.learn(std::slice::from_ref(&decision));
                    self.note(&decision);
                    return Ok((decision, max_round));
                }
                Command::Backoff => {
                    leadership::lose(&self.group);
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
    fn fresh_ballot(&self, number: i64) -> Ballot {
        Ballot::new(
            number,
            format!("{:08x}:{}", ids::random_u64() as u32, self.owner),
        )
    }

    /// Tries to become this group's leader from the next round on: phase 1 for all rounds
    /// from there at once, so that each append needs only phase 2. Best effort: without a
    /// majority of promises, appends run full Paxos per round.
    fn lead(&mut self) {
        let from = self.learned_through + 1;
        let voters = self.voters(from);
        if voters.is_empty() || leadership::for_round(&self.group, from, &voters).is_some() {
            return;
        }
        let needed = majority(voters.len());
        let mut number = 1;
        // A second try only when a rejection told us which ballot to beat.
        for _ in 0..2 {
            let ballot = self.fresh_ballot(number);
            let request = PrepareFromRequest {
                group: self.group.clone(),
                from_round: from,
                ballot: ballot.clone(),
            };
            let requests = to_each(&voters, "paxos_prepare_from", &request);
            let (mut promised, mut refused) = (0, 0);
            let mut reported = std::collections::BTreeMap::new();
            let mut beat: Option<Ballot> = None;
            peers::exchange(&requests, |_, reply| {
                match reply
                    .and_then(|t| parse::<PrepareFromResponse>(&t))
                    .map(|r| r.reply)
                {
                    Ok(RangeReply::Promise { accepted }) => {
                        promised += 1;
                        for r in accepted {
                            leadership::keep_highest(&mut reported, r);
                        }
                    }
                    Ok(RangeReply::Reject { promised }) => {
                        refused += 1;
                        beat = beat.take().max(Some(promised));
                    }
                    Err(_) => {}
                }
                if promised >= needed || refused > voters.len() - needed {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            if promised >= needed {
                leadership::take(&self.group, ballot, from, voters, reported);
                return;
            }
            match beat {
                Some(higher) => number = higher.number + 1,
                None => return,
            }
        }
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
    fn learn(&self, decisions: &[Decision]) -> Result<i64> {
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
            // The longest gap-free run among a majority's answers, never waiting for a hung
            // member; a round none of them recorded as chosen is decided again by
            // learn_through, which recovers the value a majority accepted.
            let needed = majority(voters.len());
            let (mut best, mut answered): (Vec<Decision>, usize) = (Vec::new(), 0);
            peers::exchange(&requests, |_, reply| {
                if let Ok(decisions) = reply.and_then(|t| parse::<ChosenResponse>(&t)) {
                    answered += 1;
                    let run = gap_free_prefix(from, decisions);
                    if run.len() > best.len() {
                        best = run;
                    }
                }
                if answered >= needed {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            if best.is_empty() {
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

    /// Appends `entry` at the end of the log; returns the round it was chosen at.
    pub fn append(&mut self, entry: Entry) -> Result<i64> {
        loop {
            self.lead();
            // Every round below is known, so the voters of this one are too.
            let round = self.learned_through + 1;
            let (decision, max_round) = self.decide(round, &entry)?;
            if decision.entry.id == entry.id {
                return Ok(round);
            }
            if max_round > round {
                self.catch_up(max_round)?;
            }
        }
    }

    /// The highest round accepted by any of a majority of the voters: no round above it was
    /// chosen when this call began.
    pub fn max_group_round(&mut self) -> Result<i64> {
        let round = self.learned_through + 1;
        let voters = self.voters(round);
        let needed = majority(voters.len());
        let requests = to_each(
            &voters,
            "paxos_max_round",
            &MaxRoundRequest {
                group: self.group.clone(),
            },
        );
        let (mut answered, mut max_round, mut failures) = (0, self.learned_through, Vec::new());
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
        if answered < needed {
            return Err(PaxosError::NoMajority {
                group: self.group.clone(),
                round,
                answered,
                members: voters.len(),
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

    /// The decision of a round this node already knows.
    pub fn decision(&self, round: i64) -> Result<Option<Decision>> {
        Ok(catalog::decisions(&self.group, round, round, 1)?
            .into_iter()
            .next())
    }
}

struct Phase {
    command: Option<Command<Entry>>,
    answered: usize,
    failures: Vec<String>,
}

/// The same endpoint call for each of `members`.
fn to_each(members: &[String], function: &str, request: &impl Serialize) -> Vec<(String, String)> {
    let sql = endpoint_sql(function, request);
    members.iter().map(|m| (m.clone(), sql.clone())).collect()
}

fn gap_free_prefix(from: i64, decisions: Vec<Decision>) -> Vec<Decision> {
    decisions
        .into_iter()
        .enumerate()
        .take_while(|(i, d)| d.round == from + *i as i64)
        .map(|(_, d)| d)
        .collect()
}

/// Randomized exponential backoff, so competing proposers stop colliding.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE * 2u32.pow(attempt.min(BACKOFF_MAX_DOUBLINGS));
    let fraction = (ids::random_u64() % 1000) as u32;
    ceiling * fraction / 1000
}

/// This backend's leadership of groups: a ballot that a majority promised for every round
/// from `from` on, with what they reported accepted there. It holds until a rejection (a
/// higher ballot came) or until the voters change (a membership entry).
mod leadership {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, HashMap};

    use paxos_core::Ballot;

    use crate::messages::{Entry, Reported};

    struct Leadership {
        ballot: Ballot,
        from: i64,
        voters: Vec<String>,
        /// Per round, the value bound to it under `ballot`: the highest-ballot value phase 1
        /// reported there, or the value this backend proposed there.
        bound: BTreeMap<i64, (Ballot, Entry)>,
    }

    thread_local! {
        static LEADING: RefCell<HashMap<String, Leadership>> = RefCell::new(HashMap::new());
    }

    /// The ballot to propose `round` under without phase 1, and the value already bound to
    /// that round under it, when this backend leads for these voters.
    pub fn for_round(
        group: &str,
        round: i64,
        voters: &[String],
    ) -> Option<(Ballot, Option<Entry>)> {
        LEADING.with(|leading| {
            let leading = leading.borrow();
            let l = leading.get(group)?;
            (round >= l.from && l.voters == voters).then(|| {
                let bound = l.bound.get(&round).map(|(_, e)| e.clone());
                (l.ballot.clone(), bound)
            })
        })
    }

    /// Records that `value` is proposed at `round` under `ballot`: one ballot must never carry
    /// two values for one round, even when a later call decides that round again (its learn
    /// got lost).
    pub fn bind(group: &str, round: i64, ballot: &Ballot, value: &Entry) {
        LEADING.with(|leading| {
            if let Some(l) = leading.borrow_mut().get_mut(group) {
                l.bound.insert(round, (ballot.clone(), value.clone()));
            }
        });
    }

    /// Forgets bindings of rounds this node has recorded as chosen: nobody decides them again.
    pub fn forget_through(group: &str, round: i64) {
        LEADING.with(|leading| {
            if let Some(l) = leading.borrow_mut().get_mut(group) {
                l.bound = l.bound.split_off(&(round + 1));
            }
        });
    }

    pub fn keep_highest(reported: &mut BTreeMap<i64, (Ballot, Entry)>, r: Reported) {
        match reported.get(&r.round) {
            Some((ballot, _)) if *ballot >= r.ballot => {}
            _ => {
                reported.insert(r.round, (r.ballot, r.entry));
            }
        }
    }

    pub fn take(
        group: &str,
        ballot: Ballot,
        from: i64,
        voters: Vec<String>,
        reported: BTreeMap<i64, (Ballot, Entry)>,
    ) {
        let l = Leadership {
            ballot,
            from,
            voters,
            bound: reported,
        };
        LEADING.with(|leading| leading.borrow_mut().insert(group.to_owned(), l));
    }

    pub fn lose(group: &str) {
        LEADING.with(|leading| leading.borrow_mut().remove(group));
    }
}
