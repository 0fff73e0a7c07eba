//! Phase 2 for consecutive rounds in one request, under a ballot promised for them.

use std::ops::ControlFlow;

use paxos_core::{majority, AcceptReply, Ballot, Command, Proposer};

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
        self.send_batch(ballot, first, entries, chosen_through)
            .outcome()
    }

    /// Sends what [`Log::accept_batch`] sends, and returns at once: the answers are counted
    /// by [`BatchInFlight::outcome`], so that later batches can go out meanwhile.
    pub fn send_batch(
        &self,
        ballot: &Ballot,
        first: i64,
        entries: &[Entry],
        chosen_through: Option<i64>,
    ) -> BatchInFlight {
        let voters = self.voters(first);
        let request = AcceptRequest {
            group: self.group.clone(),
            first_round: first,
            ballot: ballot.clone(),
            entries: entries.to_vec(),
            chosen_through,
        };
        let sent = peers::send(&to_each(&voters, "paxos_accept", &request));
        crate::status::count(&self.group, crate::status::Event::Batch);
        BatchInFlight::new(&self.group, ballot, first, entries, voters, sent)
    }
}

/// An accept request of [`Log::send_batch`] whose answers are still to be counted.
pub struct BatchInFlight {
    group: String,
    ballot: Ballot,
    first: i64,
    voters: Vec<String>,
    sent: peers::Sent,
    /// Per round, counts the votes.
    proposers: Vec<Proposer<Entry>>,
    decided: Vec<Option<Decision>>,
    lost: bool,
    answered: usize,
    failures: Vec<String>,
}

impl BatchInFlight {
    fn new(
        group: &str,
        ballot: &Ballot,
        first: i64,
        entries: &[Entry],
        voters: Vec<String>,
        sent: peers::Sent,
    ) -> Self {
        let mut proposers: Vec<Proposer<Entry>> = entries
            .iter()
            .map(|e| Proposer::prepared(ballot.clone(), voters.len(), e.clone()))
            .collect();
        for p in &mut proposers {
            p.start();
        }
        BatchInFlight {
            group: group.to_owned(),
            ballot: ballot.clone(),
            first,
            voters,
            sent,
            decided: vec![None; entries.len()],
            proposers,
            lost: false,
            answered: 0,
            failures: Vec::new(),
        }
    }

    /// The rounds the batch went to.
    pub fn rounds(&self) -> std::ops::RangeInclusive<i64> {
        self.first..=self.first + self.decided.len() as i64 - 1
    }

    /// Counts the answers until every round is decided, a higher ballot shows, or no
    /// majority can answer any more; or, returning `false` then, until `stop` holds.
    /// `true` once the outcome is known.
    pub fn wait_until(&mut self, stop: Option<&dyn Fn() -> bool>) -> bool {
        let BatchInFlight {
            group,
            ballot,
            first,
            voters,
            sent,
            proposers,
            decided,
            lost,
            answered,
            failures,
        } = self;
        let count = decided.len();
        sent.collect_until(
            |i, reply| {
                match reply.and_then(|t| parse::<AcceptResponse>(&t)) {
                    Ok(replies) if replies.len() == count => {
                        *answered += 1;
                        if replies.iter().all(|r| matches!(r, AcceptReply::Accepted)) {
                            let last = *first + count as i64 - 1;
                            crate::status::counters::acknowledged(group, &voters[i], last);
                        }
                        for (k, reply) in replies.into_iter().enumerate() {
                            if decided[k].is_some() {
                                continue;
                            }
                            match proposers[k].on_accept_reply(i, ballot, reply) {
                                Some(Command::Chosen { ballot, value }) => {
                                    decided[k] = Some(Decision {
                                        round: *first + k as i64,
                                        ballot,
                                        entry: value,
                                    })
                                }
                                Some(_) => *lost = true,
                                None => {}
                            }
                        }
                    }
                    Ok(_) => failures.push(format!("{}: answered for other rounds", voters[i])),
                    Err(reason) => failures.push(format!("{}: {reason}", voters[i])),
                }
                if *lost || decided.iter().all(Option::is_some) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
            stop,
        )
    }

    /// Waits for the batch's outcome (see [`BatchInFlight::wait_until`]).
    pub fn outcome(mut self) -> Result<Batch> {
        self.wait_until(None);
        if self.decided.iter().all(Option::is_some) {
            return Ok(Batch::Decided(self.decided.into_iter().flatten().collect()));
        }
        let needed = majority(self.voters.len());
        if self.lost || self.answered >= needed {
            return Ok(Batch::Lost);
        }
        Err(PaxosError::NoMajority {
            group: self.group,
            round: self.first,
            answered: self.answered,
            members: self.voters.len(),
            needed,
            failures: self.failures,
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
