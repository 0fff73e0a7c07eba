//! The leading member's side of leader leases: its proposer asks the voters for a lease on
//! its ballot before the one it holds runs out, and strong reads on this node use it.
use std::ops::ControlFlow;
use std::time::Duration;

use paxos_core::{lease, majority, Ballot};

use crate::error::Result;
use crate::gucs;
use crate::messages::{LeaseRequest, LeaseResponse};
use crate::multipaxos::{to_each, Log};
use crate::node::{self, Turn};
use crate::peers::{self, parse};

/// How long the proposer may sleep without letting a lease run out: a third of it.
pub fn renewal_interval() -> Option<Duration> {
    let duration = gucs::lease_duration_ns();
    (duration > 0).then(|| Duration::from_nanos(duration / 3))
}

/// How long a prepare refused because of another member's lease waits before it asks
/// again: a sixteenth of the lease, within 10 to 250 ms.
pub fn retry_pause() -> Duration {
    let sixteenth = Duration::from_nanos(gucs::lease_duration_ns() / 16);
    sixteenth.clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// Whether this node leads `group` and the lease it holds (if any) runs out within two
/// thirds of `pg_paxos.lease_duration`. Cheap: shared memory only.
pub fn renewal_due(group: &str) -> bool {
    let duration = gucs::lease_duration_ns();
    duration > 0 && crate::lease::renewal_due(group, duration) && node::leads(group)
}

/// Asks the voters for a lease on this node's leadership of `group`. Stops waiting as soon
/// as a majority granted.
pub fn renew(group: &str, proposer: &str) -> Result<()> {
    let duration = gucs::lease_duration_ns();
    let Some(held) = node::leadership(group) else {
        return Ok(());
    };
    let log = Log::open(group, proposer)?;
    let voters = log.voters(log.learned_through() + 1);
    if !held.serves(&voters) {
        // Membership changed: the next batch prepares anew, then this asks again.
        return Ok(());
    }
    let ballot = held.ballot();
    let needed = majority(voters.len());
    let mut granted = Vec::with_capacity(voters.len());
    let sent_at = crate::lease::now();
    ask(&log, &voters, ballot, duration / 1_000_000, |reply| {
        granted.extend(reply);
        granted.iter().filter(|g| **g > 0).count() >= needed
    });
    if let Some(until) = lease::held_until(sent_at, &granted, voters.len()) {
        crate::lease::hold(group, ballot, until);
    }
    Ok(())
}

/// Gives the node's leadership up and, with leases on, asks the voters to release what they
/// granted its ballot (paxos-core's `Grants::release`): the node starts no read under it any
/// more, so the next ballot, its own or another member's, need not wait for the grants to
/// run out. Waits for a majority's answers at most.
pub fn abdicate(log: &Log, turn: &Turn, ballot: &Ballot) {
    turn.abdicate();
    if gucs::lease_duration_ns() == 0 {
        return;
    }
    let voters = log.voters(log.learned_through() + 1);
    let needed = majority(voters.len());
    let mut answered = 0;
    ask(log, &voters, ballot, 0, |reply| {
        answered += usize::from(reply.is_some());
        answered >= needed
    });
}

/// Sends `paxos_lease` for `ballot` and `duration_ms` (0: a release) to `voters` (those of
/// the log's next round), and hands each member's answer (the nanoseconds it granted, `None`
/// when it did not answer) to `enough` until that says it has heard enough.
fn ask(
    log: &Log,
    voters: &[String],
    ballot: &Ballot,
    duration_ms: u64,
    mut enough: impl FnMut(Option<u64>) -> bool,
) {
    let request = LeaseRequest {
        group: log.group.clone(),
        ballot: ballot.clone(),
        duration_ms,
    };
    peers::exchange(&to_each(voters, "paxos_lease", &request), |_, reply| {
        let granted = reply.and_then(|t| parse::<LeaseResponse>(&t)).ok();
        if enough(granted.map(|r| r.granted_ms.saturating_mul(1_000_000))) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
}

/// The round a strong read on this node must see applied, when this node leads `group`
/// and holds a lease: every round its leadership knows of. `None` otherwise (ask a majority).
pub fn read_bound(group: &str) -> Option<i64> {
    if gucs::lease_duration_ns() == 0 {
        return None;
    }
    // The leadership first, then the clock: the lease must hold after the state was read.
    let held = node::leadership(group)?;
    crate::lease::holds(group, held.ballot()).then(|| held.highest_known())
}
