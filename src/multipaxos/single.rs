//! Single-decree Paxos for one round, through paxos-core's `Proposer`.

use std::ops::ControlFlow;
use std::time::Instant;

use paxos_core::{majority, Command, Proposer};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{backoff, to_each, Log};
use crate::error::{PaxosError, Result};
use crate::gucs;
use crate::messages::{
    AcceptRequest, AcceptResponse, Decision, Entry, PrepareRequest, PrepareResponse,
};
use crate::peers::{self, parse};

impl Log {
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
}

struct Phase {
    command: Option<Command<Entry>>,
    answered: usize,
    failures: Vec<String>,
}
