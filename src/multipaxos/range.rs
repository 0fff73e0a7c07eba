//! Phase 1 for every round from some round on, once per leadership.

use std::ops::ControlFlow;
use std::time::Instant;

use paxos_core::{majority, Ballot};

use super::{backoff, to_each, Log};
use crate::error::{PaxosError, Result};
use crate::gucs;
use crate::ids;
use crate::messages::{Entry, PrepareFromRequest, PrepareFromResponse, RangeReply, Reported};
use crate::peers::{self, parse};

impl Log {
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
            // Refused by enough members that no majority can promise: they answered (a
            // lease's refusal lasts until it runs out, which it does once contended).
            if promised + refused >= needed || refused > voters.len() - needed {
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
            // A refusal that reports a lower ballot is a leader lease's: it lasts a while.
            let leased = beat.as_ref().is_some_and(|b| *b < ballot);
            number = beat.map_or(number + 1, |b| number.max(b.number + 1));
            attempts += 1;
            peers::sleep(if leased {
                crate::leader::lease::retry_pause()
            } else {
                backoff(attempts)
            });
        }
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
