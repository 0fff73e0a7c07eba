//! Pipelining: on the member that leads, the proposer sends its next batch while earlier
//! ones are still out, up to `pg_paxos.pipeline_depth` at once, instead of waiting for
//! each to be decided (the default, 1, waits).
//!
//! - Each batch takes its rounds from the leadership after those of the batches in flight
//!   (paxos-core's `RangeLeader::next_round`, told which rounds this process awaits), and
//!   its accept vouches only for rounds already reported decided, never for one in flight.
//! - Batches end in the order they went out: each one's decisions are reported to the
//!   leadership, recorded in the log and handed to their authors before the next one's.
//! - Once a batch is not decided (a higher ballot, no majority), no new batch goes out; the
//!   ones in flight end first, then the entries of lost batches are proposed again one
//!   batch at a time, exactly as without pipelining.
//! - While the oldest batch is out and fewer than that are, the proposer looks every
//!   half millisecond whether a session posted (its latch), and sends what was posted.
//! - Acceptors serve one connection's requests in order, so a batch sent while another is
//!   out is voted on as soon as the previous vote commits, without waiting for a round trip.
use std::collections::VecDeque;

use super::{lead, not_sent, record, report, settle, worker::PROPOSER, LOST, MAX_BATCH};
use crate::error::{PaxosError, Result};
use crate::messages::{Decision, Entry};
use crate::multipaxos::{Batch, BatchInFlight, Log};
use crate::node::{Failure, Taken, Turn};
use paxos_core::Ballot;
use pgrx::pg_sys;

/// A batch that went out, with the entries it carries for other backends.
struct Flight {
    taken: Vec<Taken>,
    ballot: Ballot,
    batch: BatchInFlight,
}

/// Entries to propose again once nothing is in flight: of a batch that was not decided, or
/// whose rounds were decided with other values (with the rounds it went to), or of one that
/// could not go out pipelined.
struct Leftover {
    taken: Vec<Taken>,
    entries: Vec<Entry>,
    rounds: Option<std::ops::RangeInclusive<i64>>,
}

/// Why a batch did not go out.
enum Unsent {
    Later(Leftover),
    Failed(Vec<Taken>, PaxosError),
}

/// Sends `first` and every entry posted meanwhile, in batches, keeping up to
/// `pg_paxos.pipeline_depth` in flight, until nothing is waiting and every batch has ended.
pub fn run(group: &str, turn: &Turn, first: Vec<Taken>) -> Result<()> {
    let mut log = match Log::open(group, PROPOSER) {
        Ok(log) => log,
        Err(error) => {
            turn.finish(first, |_| Err(not_sent(&error)));
            return Err(error);
        }
    };
    let mut flights: VecDeque<Flight> = VecDeque::new();
    let mut leftovers: Vec<Leftover> = Vec::new();
    let mut next = Some(first);
    let mut failed: Option<PaxosError> = None;
    let depth = crate::gucs::pipeline_depth();
    loop {
        if let Some(taken) = next.take() {
            match send(&mut log, turn, taken, &flights) {
                Ok(flight) => flights.push_back(flight),
                Err(Unsent::Later(leftover)) => leftovers.push(leftover),
                Err(Unsent::Failed(taken, error)) => {
                    let failure = not_sent(&error);
                    turn.finish(taken, |_| Err(failure.clone()));
                    failed = Some(error);
                }
            }
        }
        let sending = failed.is_none() && leftovers.is_empty() && flights.len() < depth;
        if sending {
            let more = turn.take_posted(MAX_BATCH);
            if !more.is_empty() {
                next = Some(more);
                continue;
            }
        }
        let Some(oldest) = flights.front_mut() else {
            break;
        };
        // Sessions wake the proposer when they post: then the next batch goes out at once.
        let posted = || woken();
        if !oldest
            .batch
            .wait_until(sending.then_some(&posted as &dyn Fn() -> bool))
        {
            // SAFETY: this process's own latch; what it signalled is looked at next.
            unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
            continue;
        }
        let flight = flights.pop_front().expect("the oldest batch is there");
        if let Some(leftover) = land(&mut log, turn, flight) {
            leftovers.push(leftover);
        }
    }
    for leftover in leftovers {
        again(&mut log, turn, leftover);
    }
    failed.map_or(Ok(()), Err)
}

/// Sends `taken` as the next batch, after the rounds of the batches in `flights`.
fn send(
    log: &mut Log,
    turn: &Turn,
    taken: Vec<Taken>,
    flights: &VecDeque<Flight>,
) -> std::result::Result<Flight, Unsent> {
    let awaiting = |round: i64| flights.iter().any(|f| f.batch.rounds().contains(&round));
    let (mut held, first) = match lead(log, turn, &awaiting) {
        Ok(led) => led,
        // The entries never left: `lead` sends only what earlier ballots left behind.
        Err(error) => return Err(Unsent::Failed(taken, error)),
    };
    let entries: Vec<Entry> = taken.iter().map(|t| t.entry.clone()).collect();
    let bound = (first..)
        .zip(&entries)
        .all(|(round, e)| held.propose(round, e.id.clone()).as_ref() == Some(&e.id));
    if !bound {
        // A round there carries a value an earlier ballot left, which only `lead` knows:
        // the sequential path deals with it once the batches in flight have ended.
        super::lease::abdicate(log, turn, held.ballot());
        return Err(Unsent::Later(Leftover {
            taken,
            entries,
            rounds: None,
        }));
    }
    turn.lead(&held);
    let ballot = held.ballot().clone();
    let batch = log.send_batch(&ballot, first, &entries, held.chosen_through());
    Ok(Flight {
        taken,
        ballot,
        batch,
    })
}

/// Waits for the oldest batch's outcome, reports it to the leadership (if it is still the
/// one the batch went under) and hands the chosen entries to their authors. Returns what
/// must be proposed again.
fn land(log: &mut Log, turn: &Turn, flight: Flight) -> Option<Leftover> {
    let Flight {
        taken,
        ballot,
        batch,
    } = flight;
    let rounds = batch.rounds();
    let outcome = batch.outcome();
    let current = turn.leadership();
    if let Some(mut held) = current.filter(|h| *h.ballot() == ballot) {
        report(log, turn, &mut held, *rounds.end(), &outcome);
    }
    match outcome {
        Ok(Batch::Decided(decisions)) => {
            record(log, &decisions);
            // A round an acceptor knew decided otherwise was not this batch's to take: its
            // entry goes again, later.
            let (chosen, again): (Vec<Taken>, Vec<Taken>) = taken
                .into_iter()
                .partition(|t| decisions.iter().any(|d| d.entry.id == t.entry.id));
            turn.finish(chosen, |e| chosen_at(&decisions, e));
            (!again.is_empty()).then(|| Leftover {
                entries: again.iter().map(|t| t.entry.clone()).collect(),
                taken: again,
                rounds: Some(rounds),
            })
        }
        Ok(Batch::Lost) => {
            let entries = taken.iter().map(|t| t.entry.clone()).collect();
            Some(Leftover {
                taken,
                entries,
                rounds: Some(rounds),
            })
        }
        Err(error) => {
            let reason = format!("the batch it was proposed in failed: {error}");
            turn.finish(taken, |_| Err(Failure::Unknown(reason.clone())));
            None
        }
    }
}

/// Proposes `leftover`'s entries again, through the sequential path, once every round
/// they went to is decided (so that none is chosen twice), as `propose_until_decided` does.
fn again(log: &mut Log, turn: &Turn, leftover: Leftover) {
    let Leftover {
        taken,
        mut entries,
        rounds,
    } = leftover;
    let mut chosen = std::collections::HashMap::new();
    let outcome = (|| {
        if let Some(rounds) = rounds {
            log.learn_through(*rounds.end())?;
            let decisions: Vec<Decision> = rounds
                .filter_map(|r| log.decision(r).transpose())
                .collect::<Result<_>>()?;
            settle(&decisions, &mut entries, &mut chosen);
        }
        let mut sent = true;
        super::propose_until_decided(log, turn, entries, &mut sent)
    })();
    match outcome {
        Ok(rounds) => {
            chosen.extend(rounds);
            turn.finish(taken, |e| match chosen.get(&e.id) {
                Some(round) => Ok(*round),
                None => Err(Failure::Unknown(LOST.to_owned())),
            });
        }
        Err(error) => {
            let reason = format!("the batch it was proposed in failed: {error}");
            turn.finish(taken, |_| Err(Failure::Unknown(reason.clone())));
        }
    }
}

fn chosen_at(decisions: &[Decision], entry: &Entry) -> std::result::Result<i64, Failure> {
    match decisions.iter().find(|d| d.entry.id == entry.id) {
        Some(d) => Ok(d.round),
        None => Err(Failure::Unknown(LOST.to_owned())),
    }
}

/// Whether this process's latch was set since it was last reset.
fn woken() -> bool {
    // SAFETY: MyLatch is this process's own latch, set up before any of its code runs.
    unsafe { (*pg_sys::MyLatch).is_set != 0 }
}
