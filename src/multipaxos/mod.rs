//! The Multi-Paxos log as one node's proposer sees it: the group's membership and what this
//! node knows of the log (`Log`), and the exchanges with the members, one module each:
//! - `single`: single-decree Paxos for one round;
//! - `range`: phase 1 for every round from some round on;
//! - `batch`: phase 2 for consecutive rounds in one request;
//! - `learning`: recording decisions, catching up, and the highest round accepted.
//!
//! Who proposes what, under which leadership, is `leader`'s business, and every rule of the
//! protocol is paxos-core's.
//!
//! Invariants kept here:
//! - a round is proposed only with the voters of that round, which are known because every
//!   earlier round is known first (membership changes take effect one round later);
//! - a proposer moves past a round only once it knows the value chosen there, so its own
//!   value is never chosen twice;
//! - everything durable is written by the endpoints (this node's own included, over its own
//!   connection), never by the caller's transaction, so no endpoint ever waits for it.
use std::time::Duration;

use paxos_core::{Ballot, Membership};
use serde::Serialize;

use crate::catalog;
use crate::error::Result;
use crate::ids;
use crate::messages::{Decision, EntryKind};
use crate::peers::endpoint_sql;

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

mod batch;
mod learning;
mod range;
mod single;

pub use batch::{Batch, BatchInFlight};

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

    /// A ballot numbered `number`. Ballots of equal number are ordered by proposer: a random
    /// prefix per ballot makes that order a fair draw, so no node wins every tie (the owner
    /// part keeps it unique).
    pub fn fresh_ballot(&self, number: i64) -> Ballot {
        Ballot::new(
            number,
            format!("{:08x}:{}", ids::random_u64() as u32, self.owner),
        )
    }

    /// Takes rounds up to `round` as known without reading them: the caller knows they
    /// were all decided and that none changes membership.
    pub fn skip_to(&mut self, round: i64) {
        self.learned_through = self.learned_through.max(round);
    }
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

/// Randomized exponential backoff, so competing proposers stop colliding.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE * 2u32.pow(attempt.min(BACKOFF_MAX_DOUBLINGS));
    let fraction = (ids::random_u64() % 1000) as u32;
    ceiling * fraction / 1000
}
