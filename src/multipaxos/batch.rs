//! Phase 2 for consecutive rounds in one request, under a ballot promised for them.

use std::ops::ControlFlow;

use paxos_core::{majority, Ballot, Command, Proposer};

use super::{to_each, Log};
use crate::error::{PaxosError, Result};
use crate::messages::{AcceptRequest, AcceptResponse, Decision, Entry};
use crate::peers::{self, parse};

impl Log {
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
}

/// What came of proposing entries at consecutive rounds under a promised ballot.
pub enum Batch {
    /// Every round is decided: with the entry proposed there, or with one an acceptor knew
    /// was chosen there before.
    Decided(Vec<Decision>),
    /// A higher ballot came first: any of the rounds may still end up with its entry, or not.
    Lost,
}
