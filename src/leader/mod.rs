//! Appending to a group's log through one leader.
//!
//! - Appends wait for their group's turn on their node (see `node`), which its proposer
//!   (`worker`) takes while it runs: it sends every waiting entry in one batch. Without a
//!   proposer, the backend whose turn it is does.
//! - A batch made on a member that does not lead goes to the member that does, in one
//!   request, once (the leader never passes it on), so members do not take leadership from
//!   each other. On the leading node, a batch goes at consecutive rounds in one accept
//!   request.
//! - Leading is phase 1 for every round from the next one on, done once per ballot; the
//!   rounds where it finds values accepted under earlier ballots get those values first.
//! - What the leadership may do is paxos-core's `RangeLeader`, kept in shared memory between
//!   batches (see `node`): which rounds a batch goes at, which value each round carries,
//!   what an accept may vouch for as chosen, and when the ballot is given up. This module
//!   carries its decisions out.
//! - An entry moves to a later round only once every round it was proposed at is decided
//!   without it, so it is never chosen twice.
use std::collections::HashMap;

use paxos_core::RangeLeader;
use pgrx::prelude::*;

use crate::catalog;
use crate::error::{PaxosError, Result};
use crate::gucs;
use crate::ids;
use crate::messages::*;
use crate::multipaxos::{backoff, Batch, Log};
use crate::node::{self, Failure, Leadership, Taken, Turn, Waited};
use crate::peers::{self, endpoint_sql, parse, Delivery};
use crate::status::{self, Event};

pub mod lease;
mod pipeline;
pub mod worker;

/// The most entries one accept request carries.
const MAX_BATCH: usize = 64;
/// How many request timeouts a member keeps its appends after the leader failed to answer.
const FORWARD_PAUSE: u32 = 10;

thread_local! {
    /// How many times this backend let an entry out (to the leading member, or to this
    /// node's batches): an error raised before the count moves is an append that surely
    /// was not chosen.
    static SENDS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// See `SENDS`.
pub fn sends() -> u64 {
    SENDS.with(std::cell::Cell::get)
}

fn sending() {
    SENDS.with(|s| s.set(s.get() + 1));
}

/// Appends `entry` at the end of the group's log; returns the round it was chosen at.
pub fn append(group: &str, proposer: &str, entry: Entry) -> Result<i64> {
    catalog::require_group(group)?;
    // A membership change is decided here, by the member that makes it.
    let forwardable = !entry.kind.changes_membership();
    let mut outcomes = append_all(group, proposer, vec![entry], forwardable)?;
    let outcome = outcomes.remove(0);
    match &outcome {
        Ok(_) => status::count(group, Event::Append),
        Err(PaxosError::OutcomeUnknown { .. }) => status::count(group, Event::OutcomeUnknown),
        Err(_) => {}
    }
    outcome
}

/// Gets `entries` appended through this node's batches: its proposer's, or this backend's
/// own when its turn comes. One outcome per entry, in order.
fn append_all(
    group: &str,
    proposer: &str,
    entries: Vec<Entry>,
    forwardable: bool,
) -> Result<Vec<Result<i64>>> {
    sending();
    let mut posts = entries
        .iter()
        .map(|e| node::post(group, e, forwardable))
        .collect::<Result<Vec<_>>>()?;
    let mut outcomes = Vec::with_capacity(entries.len());
    for (entry, posted) in entries.into_iter().zip(&mut posts) {
        outcomes.push(match node::wait_for_turn(group, posted)? {
            Waited::Appended(round) => Ok(round),
            Waited::Failed(reason) => Err(PaxosError::OutcomeUnknown { reason }),
            Waited::NotSent { sqlstate, message } => {
                Err(PaxosError::OwnSession { sqlstate, message })
            }
            Waited::Turn(turn) => {
                // A membership change alters the voters of the rounds after it: it goes alone.
                let taken = if entry.kind.changes_membership() {
                    Vec::new()
                } else {
                    turn.take_posted(MAX_BATCH - 1)
                };
                let id = entry.id.clone();
                run_batch(group, proposer, &turn, Some((entry, forwardable)), taken)
                    .and_then(|mut rounds| own_outcome(rounds.remove(&id)))
            }
        });
    }
    Ok(outcomes)
}

fn own_outcome(outcome: Option<std::result::Result<i64, String>>) -> Result<i64> {
    match outcome {
        Some(Ok(round)) => Ok(round),
        Some(Err(reason)) => Err(PaxosError::OutcomeUnknown { reason }),
        None => Err(PaxosError::OutcomeUnknown {
            reason: LOST.to_owned(),
        }),
    }
}

const LOST: &str = "pg_paxos: the entry was lost from its batch";

/// Per entry id, the round it was chosen at, or why its outcome is unknown.
type Outcomes = HashMap<String, std::result::Result<i64, String>>;

/// Sends `own` (the entry of the backend whose turn it is, if any) and the entries `taken`
/// from other backends in one batch, and hands each taken entry its outcome.
fn run_batch(
    group: &str,
    proposer: &str,
    turn: &Turn,
    own: Option<(Entry, bool)>,
    taken: Vec<Taken>,
) -> Result<Outcomes> {
    let forwardable = own.as_ref().is_none_or(|(_, f)| *f) && taken.iter().all(|t| t.forwardable);
    let mut entries: Vec<Entry> = own.into_iter().map(|(e, _)| e).collect();
    entries.extend(taken.iter().map(|t| t.entry.clone()));
    let result = send(group, proposer, turn, entries, forwardable);
    match &result {
        Ok(outcomes) => turn.finish(taken, |e| match outcomes.get(&e.id) {
            Some(Ok(round)) => Ok(*round),
            Some(Err(reason)) => Err(Failure::Unknown(reason.clone())),
            None => Err(Failure::Unknown(LOST.to_owned())),
        }),
        Err(error @ PaxosError::OutcomeUnknown { .. }) => {
            let reason = format!("the batch it was proposed in failed: {error}");
            turn.finish(taken, |_| Err(Failure::Unknown(reason.clone())));
        }
        // Every error but that one comes before anything was sent (see `propose`).
        Err(error) => {
            let failure = not_sent(error);
            turn.finish(taken, |_| Err(failure.clone()));
        }
    }
    result
}

/// The failure of an entry whose batch failed before it was sent: `error`, as is.
fn not_sent(error: &PaxosError) -> Failure {
    Failure::NotSent {
        sqlstate: error.sqlstate_text(),
        message: error.to_string(),
    }
}

/// Gets `entries` chosen: through the member that leads when this node does not and they
/// may go there, else through this node's leadership.
fn send(
    group: &str,
    proposer: &str,
    turn: &Turn,
    entries: Vec<Entry>,
    forwardable: bool,
) -> Result<Outcomes> {
    if forwardable && node::forwarding_allowed(group) {
        if let (Some(leader), _) = catalog::leader(group)? {
            if let Some(outcomes) = forward(group, &leader, &entries)? {
                return Ok(outcomes);
            }
        }
    }
    let mut log = Log::open(group, proposer)?;
    let rounds = propose(&mut log, turn, entries)?;
    Ok(rounds
        .into_iter()
        .map(|(id, round)| (id, Ok(round)))
        .collect())
}

/// Sends the entries to the leading member, in one request. `None` when they never got
/// there.
fn forward(group: &str, leader: &str, entries: &[Entry]) -> Result<Option<Outcomes>> {
    let request = SubmitRequest {
        group: group.to_owned(),
        entries: entries.to_vec(),
    };
    let failure = match peers::deliver(leader, endpoint_sql("paxos_submit", &request)) {
        Delivery::Answer(text) => match parse::<SubmitResponse>(&text) {
            Ok(reply) if reply.outcomes.len() == entries.len() => {
                let outcomes = entries.iter().zip(reply.outcomes).map(|(e, o)| {
                    let outcome = match o {
                        Submitted::Chosen(round) => Ok(round),
                        Submitted::Unknown(reason) => Err(reason),
                    };
                    (e.id.clone(), outcome)
                });
                return Ok(Some(outcomes.collect()));
            }
            Ok(_) => Some("it answered for other entries".to_owned()),
            Err(reason) => Some(reason),
        },
        Delivery::Unknown(reason) => Some(reason),
        Delivery::NotSent => None,
    };
    node::suspend_forwarding(group, gucs::request_timeout() * FORWARD_PAUSE);
    match failure {
        None => Ok(None),
        Some(reason) => Err(PaxosError::OutcomeUnknown {
            reason: format!(
                "the leading member {} failed: {reason}",
                crate::connstr::redact(leader)
            ),
        }),
    }
}

/// What the group's proposer does with its turn: sends every entry waiting (see `worker`),
/// to the leading member, or, when this node leads, in overlapping batches (`pipeline`).
pub fn propose_waiting(group: &str, turn: &Turn) -> Result<()> {
    let taken = turn.take_posted(MAX_BATCH);
    if taken.is_empty() {
        return Ok(());
    }
    let forwardable = taken.iter().all(|t| t.forwardable);
    let elsewhere = match catalog::leader(group) {
        Ok((leader, _)) => leader.is_some(),
        Err(error) => {
            let failure = not_sent(&error);
            turn.finish(taken, |_| Err(failure.clone()));
            return Err(error);
        }
    };
    if forwardable && elsewhere && node::forwarding_allowed(group) {
        run_batch(group, worker::PROPOSER, turn, None, taken)?;
        return Ok(());
    }
    pipeline::run(group, turn, taken)
}

/// Proposes `pending` at the end of the log; returns the round each entry was chosen at.
/// Once an accept request carried the entries, a failure leaves their fate unknown (a
/// minority may have accepted them, and a later leader would then finish the round with
/// them): it is reported as such, never as a plain error.
fn propose(log: &mut Log, turn: &Turn, pending: Vec<Entry>) -> Result<HashMap<String, i64>> {
    let mut sent = false;
    propose_until_decided(log, turn, pending, &mut sent).map_err(|error| match error {
        PaxosError::OutcomeUnknown { .. } => error,
        _ if sent => PaxosError::OutcomeUnknown {
            reason: format!("it was sent to the members, then: {error}"),
        },
        _ => error,
    })
}

fn propose_until_decided(
    log: &mut Log,
    turn: &Turn,
    mut pending: Vec<Entry>,
    sent: &mut bool,
) -> Result<HashMap<String, i64>> {
    let mut rounds = HashMap::new();
    let mut attempts = 0u32;
    while !pending.is_empty() {
        let (mut held, first) = lead(log, turn, &|_| false)?;
        let last = first + pending.len() as i64 - 1;
        let own: Vec<&String> = pending.iter().map(|e| &e.id).collect();
        let bound: Option<Vec<String>> = (first..)
            .zip(&own)
            .map(|(round, id)| held.propose(round, (*id).clone()))
            .collect();
        if bound.is_none_or(|b| b.iter().zip(&own).any(|(b, id)| b != *id)) {
            // A round there must carry a value an earlier ballot left: only `lead` knows it.
            lease::abdicate(log, turn, held.ballot());
            continue;
        }
        turn.lead(&held);
        *sent = true;
        match accept(log, turn, &mut held, first, &pending)? {
            Batch::Decided(decisions) => {
                record(log, &decisions);
                settle(&decisions, &mut pending, &mut rounds);
            }
            Batch::Lost => {
                // Every round the batch went to is decided before any entry moves on.
                log.learn_through(last)?;
                let decisions: Vec<Decision> = (first..=last)
                    .filter_map(|r| log.decision(r).transpose())
                    .collect::<Result<_>>()?;
                settle(&decisions, &mut pending, &mut rounds);
                attempts += 1;
                peers::sleep(backoff(attempts));
            }
        }
    }
    Ok(rounds)
}

/// Phase 2 under the node's leadership, at rounds `first..` that it bound to `entries`. The
/// leadership hears every decision (paxos-core's `RangeLeader::on_decided`) and decides
/// whether the node goes on leading with its ballot; any other outcome (no majority, a
/// failure) gives the ballot up for good.
fn accept(
    log: &mut Log,
    turn: &Turn,
    held: &mut Leadership,
    first: i64,
    entries: &[Entry],
) -> Result<Batch> {
    let ballot = held.ballot().clone();
    let outcome = log.accept_batch(&ballot, first, entries, held.chosen_through());
    report(log, turn, held, first + entries.len() as i64 - 1, &outcome);
    outcome
}

/// Tells the leadership what came of its batch ending at round `last` (see `accept`).
fn report(log: &Log, turn: &Turn, held: &mut Leadership, last: i64, outcome: &Result<Batch>) {
    match outcome {
        Ok(Batch::Decided(decisions)) => {
            for d in decisions {
                held.on_decided(d.round, &d.ballot, &d.entry.id);
                if d.entry.kind.changes_membership() {
                    held.on_membership_change(d.round);
                }
            }
        }
        Ok(Batch::Lost) | Err(_) => held.abandon(),
    }
    if held.is_abandoned() {
        lease::abdicate(log, turn, held.ballot());
    } else {
        // Reported, so the leadership need not remember their values any more.
        held.forget_through(last);
        turn.lead(held);
        // The applier records them here, and tells the members if no batch follows.
        crate::applier::wake(&log.group);
    }
}

/// Takes the entries chosen in `decisions` out of `pending`.
fn settle(decisions: &[Decision], pending: &mut Vec<Entry>, rounds: &mut HashMap<String, i64>) {
    for d in decisions {
        if let Some(i) = pending.iter().position(|e| e.id == d.entry.id) {
            rounds.insert(d.entry.id.clone(), d.round);
            pending.remove(i);
        }
    }
}

/// Takes `decisions` into this log's view. A membership change is recorded on the members
/// before anything follows it, because they vote by it. Values are not sent anywhere: the
/// node's leadership vouches for them, the next accept request tells the acceptors
/// (`AcceptRequest::chosen_through`), and a member that needs them sooner sees that a
/// majority accepted them (catch_up).
fn record(log: &mut Log, decisions: &[Decision]) {
    if decisions.iter().any(|d| d.entry.kind.changes_membership()) {
        let _ = log.learn(decisions);
    }
    for d in decisions {
        log.note(d);
    }
}

/// The node's leadership, ready for a batch, and the round the batch goes at: the one it
/// holds when paxos-core's `RangeLeader::next_round` lets it go on, else a new one.
/// `awaiting` says which rounds this process has batches in flight at (see `pipeline`).
fn lead(log: &mut Log, turn: &Turn, awaiting: &dyn Fn(i64) -> bool) -> Result<(Leadership, i64)> {
    let mut attempts = 0u32;
    loop {
        let from = log.learned_through() + 1;
        let voters = log.voters(from);
        if let Some(mut held) = turn.leadership() {
            if let Some(first) = held.next_round(from - 1, &voters, awaiting) {
                // Rounds the leadership vouches for that this log has yet to record were
                // decided under it: the applier records them. (Rounds of batches still in
                // flight are not among them.)
                if let Some(vouched) = held.chosen_through() {
                    log.skip_to(vouched.min(first - 1));
                }
                return Ok((held, first));
            }
            lease::abdicate(log, turn, held.ballot());
        }
        let (_, promised) = catalog::leader(&log.group)?;
        let (ballot, reports) = log.prepare_range(from, promised + 1)?;
        status::count(&log.group, Event::LeadershipChange);
        let reported = reports
            .iter()
            .map(|(round, (accepted, entry))| (*round, accepted.clone(), entry.id.clone()));
        let mut held = RangeLeader::new(ballot, from, voters, reported);
        turn.lead(&held);
        if let Some(&last) = reports.keys().next_back() {
            // Values accepted under earlier ballots keep their rounds; a round where nothing
            // was accepted cannot have been chosen and becomes a no-op. One round at a time,
            // as any of them may change membership.
            log.catch_up(last)?;
            while log.learned_through() < last {
                let round = log.learned_through() + 1;
                let noop = noop();
                let Some(first) = held.next_round(round - 1, &log.voters(round), |_| false) else {
                    break;
                };
                let entry = match held.propose(first, noop.id.clone()) {
                    Some(id) if id == noop.id => noop,
                    Some(id) => match reports.get(&first).filter(|(_, e)| e.id == id) {
                        Some((_, reported)) => reported.clone(),
                        None => break,
                    },
                    None => break,
                };
                turn.lead(&held);
                match accept(log, turn, &mut held, first, std::slice::from_ref(&entry))? {
                    Batch::Decided(decisions) => record(log, &decisions),
                    Batch::Lost => {
                        attempts += 1;
                        peers::sleep(backoff(attempts));
                        break;
                    }
                }
            }
            if log.learned_through() < last {
                continue;
            }
        }
        let known = log.learned_through();
        if let Some(first) = held.next_round(known, &log.voters(known + 1), |_| false) {
            return Ok((held, first));
        }
    }
}

fn noop() -> Entry {
    Entry {
        id: ids::proposal_id(),
        kind: EntryKind::Noop,
        value: None,
    }
}

#[pg_schema]
mod pgp_metadata {
    use super::*;

    /// Appends entries made on another member, which takes this node for the leader.
    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_submit(request: &str) -> String {
        crate::acceptor::serve(request, |req: SubmitRequest| {
            catalog::require_group(&req.group)?;
            if req.entries.len() > MAX_BATCH {
                return Err(PaxosError::InvalidArgument {
                    what: "request",
                    reason: format!("it carries more than {MAX_BATCH} entries"),
                });
            }
            if req.entries.iter().any(|e| e.kind.changes_membership()) {
                return Err(PaxosError::InvalidArgument {
                    what: "entry",
                    reason: "membership changes are not sent to the leader".into(),
                });
            }
            let outcomes = append_all(&req.group, "forwarded", req.entries, false)?;
            let outcomes = outcomes.into_iter().map(|o| match o {
                Ok(round) => Submitted::Chosen(round),
                Err(error) => Submitted::Unknown(error.to_string()),
            });
            Ok(SubmitResponse {
                outcomes: outcomes.collect(),
            })
        })
    }
}
