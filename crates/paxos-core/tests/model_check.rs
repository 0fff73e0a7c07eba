//! Exhaustive model check of paxos-core's own `Acceptor` and `Proposer` with stateright.
//!
//! The actors below only carry messages and drive timers; every protocol decision is taken by
//! the crate's real state machines, so the check covers the code the extension runs, not a
//! re-implementation of Paxos.
//!
//! The system: 3 acceptors and 2 proposers with distinct ids and values. The network is
//! unordered, duplicating (a sent message can be delivered any number of times, at any later
//! point) and lossy. A proposer's silence timer can fire at any moment; it then gives up on its
//! ballot (`on_silence` -> `Backoff`) and `retry`s with a higher one while its retry budget
//! lasts, then stops. A crashed proposer is a proposer that stops or whose messages are lost,
//! so both are covered without modelling crashes separately. Acceptor crashes are not modelled:
//! the extension makes acceptor state durable before replying, so a restarted acceptor is
//! indistinguishable from a slow one.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use paxos_core::{AcceptReply, Acceptor, Ballot, Command, PrepareReply, Proposer};
use stateright::actor::{
    model_timeout, Actor, ActorModel, ActorModelState, Id, LossyNetwork, Network, Out,
};
use stateright::{Checker, Expectation, HasDiscoveries, Model};

type Val = char;

const ACCEPTORS: usize = 3;

/// What travels between actors. The crate's reply enums are not `Ord`, which stateright
/// requires of messages, so replies are flattened here and rebuilt losslessly on receipt.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Msg {
    Prepare(Ballot),
    Accept(Ballot, Val),
    Learn(Ballot, Val),
    /// Replies are tagged with the ballot they answer.
    Promise(Ballot, Option<(Ballot, Val)>),
    PrepareRejected(Ballot, Ballot),
    PrepareChosen(Ballot, Ballot, Val),
    Accepted(Ballot),
    AcceptRejected(Ballot, Ballot),
    AcceptChosen(Ballot, Ballot, Val),
}

impl Msg {
    fn prepare_reply(ballot: Ballot, reply: PrepareReply<Val>) -> Msg {
        match reply {
            PrepareReply::Promise { accepted } => Msg::Promise(ballot, accepted),
            PrepareReply::Reject { promised } => Msg::PrepareRejected(ballot, promised),
            PrepareReply::Chosen(b, v) => Msg::PrepareChosen(ballot, b, v),
        }
    }

    fn accept_reply(ballot: Ballot, reply: AcceptReply<Val>) -> Msg {
        match reply {
            AcceptReply::Accepted => Msg::Accepted(ballot),
            AcceptReply::Reject { promised } => Msg::AcceptRejected(ballot, promised),
            AcceptReply::Chosen(b, v) => Msg::AcceptChosen(ballot, b, v),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    /// No more replies will come for the current phase.
    Silence,
}

#[derive(Clone)]
enum Node {
    Acceptor,
    Proposer {
        id: &'static str,
        value: Val,
        retries: u8,
        /// Deliberately broken driver for the negative test: strips the previously accepted
        /// values out of every promise before the proposer sees them.
        forget_accepted: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum NodeState {
    Acceptor {
        acceptor: Acceptor<Val>,
        /// Ghost: every (ballot, value) this acceptor ever voted for. `acceptor.accepted` keeps
        /// only the latest vote, but a value is chosen by any past majority.
        voted: BTreeSet<(Ballot, Val)>,
    },
    Proposer {
        proposer: Proposer<Val>,
        retries_left: u8,
        /// Ghost: the `Command::Chosen` this proposer emitted, if any.
        chosen: Option<(Ballot, Val)>,
    },
}

fn acceptor_ids() -> impl Iterator<Item = Id> {
    (0..ACCEPTORS).map(Id::from)
}

/// Carries out a proposer command. The silence timer stays armed while the round is open, so
/// `Backoff` needs no action here: the timer performs the retry.
fn execute(cmd: Command<Val>, chosen: &mut Option<(Ballot, Val)>, o: &mut Out<Node>) {
    match cmd {
        Command::Prepare { ballot } => {
            for a in acceptor_ids() {
                o.send(a, Msg::Prepare(ballot.clone()));
            }
            o.set_timer(Timer::Silence, model_timeout());
        }
        Command::Accept { ballot, value } => {
            for a in acceptor_ids() {
                o.send(a, Msg::Accept(ballot.clone(), value));
            }
        }
        Command::Chosen { ballot, value } => {
            *chosen = Some((ballot.clone(), value));
            for a in acceptor_ids() {
                o.send(a, Msg::Learn(ballot.clone(), value));
            }
            o.cancel_timer(Timer::Silence);
        }
        Command::Backoff => {}
    }
}

impl Actor for Node {
    type Msg = Msg;
    type State = NodeState;
    type Timer = Timer;
    type Random = ();
    type Storage = ();

    fn on_start(&self, _id: Id, _storage: &Option<()>, o: &mut Out<Self>) -> NodeState {
        match self {
            Node::Acceptor => NodeState::Acceptor {
                acceptor: Acceptor::default(),
                voted: BTreeSet::new(),
            },
            Node::Proposer {
                id, value, retries, ..
            } => {
                let mut proposer = Proposer::new(Ballot::new(1, *id), ACCEPTORS, *value);
                let mut chosen = None;
                execute(proposer.start(), &mut chosen, o);
                NodeState::Proposer {
                    proposer,
                    retries_left: *retries,
                    chosen,
                }
            }
        }
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<NodeState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match (self, &**state) {
            (Node::Acceptor, NodeState::Acceptor { acceptor, voted }) => {
                // Work on copies and store them only on change, so a redelivered message that
                // changes nothing does not count as a new state.
                let mut next = acceptor.clone();
                let mut next_voted = voted.clone();
                match msg {
                    Msg::Prepare(ballot) => {
                        let reply = next.on_prepare(&ballot);
                        o.send(src, Msg::prepare_reply(ballot, reply));
                    }
                    Msg::Accept(ballot, value) => {
                        let reply = next.on_accept(&ballot, value);
                        if reply == AcceptReply::Accepted {
                            next_voted.insert((ballot.clone(), value));
                        }
                        o.send(src, Msg::accept_reply(ballot, reply));
                    }
                    Msg::Learn(ballot, value) => next.on_learn(&ballot, value),
                    _ => return,
                }
                if next != *acceptor || next_voted != *voted {
                    *state.to_mut() = NodeState::Acceptor {
                        acceptor: next,
                        voted: next_voted,
                    };
                }
            }
            (
                Node::Proposer {
                    forget_accepted, ..
                },
                NodeState::Proposer {
                    proposer,
                    retries_left,
                    chosen,
                },
            ) => {
                if chosen.is_some() {
                    return;
                }
                let from = usize::from(src);
                let mut next = proposer.clone();
                let cmd = match msg {
                    Msg::Promise(ballot, accepted) => {
                        let accepted = if *forget_accepted { None } else { accepted };
                        next.on_prepare_reply(from, &ballot, PrepareReply::Promise { accepted })
                    }
                    Msg::PrepareRejected(ballot, promised) => {
                        next.on_prepare_reply(from, &ballot, PrepareReply::Reject { promised })
                    }
                    Msg::PrepareChosen(ballot, b, v) => {
                        next.on_prepare_reply(from, &ballot, PrepareReply::Chosen(b, v))
                    }
                    Msg::Accepted(ballot) => {
                        next.on_accept_reply(from, &ballot, AcceptReply::Accepted)
                    }
                    Msg::AcceptRejected(ballot, promised) => {
                        next.on_accept_reply(from, &ballot, AcceptReply::Reject { promised })
                    }
                    Msg::AcceptChosen(ballot, b, v) => {
                        next.on_accept_reply(from, &ballot, AcceptReply::Chosen(b, v))
                    }
                    _ => return,
                };
                if next == *proposer && cmd.is_none() {
                    return;
                }
                let mut next_chosen = None;
                if let Some(cmd) = cmd {
                    execute(cmd, &mut next_chosen, o);
                }
                *state.to_mut() = NodeState::Proposer {
                    proposer: next,
                    retries_left: *retries_left,
                    chosen: next_chosen,
                };
            }
            _ => unreachable!("actor and state kinds always match"),
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<NodeState>, _timer: &Timer, o: &mut Out<Self>) {
        let NodeState::Proposer {
            proposer,
            retries_left,
            chosen,
        } = &**state
        else {
            return;
        };
        if chosen.is_some() {
            return;
        }
        let mut next = proposer.clone();
        assert_eq!(next.on_silence(), Command::Backoff);
        if *retries_left == 0 {
            // Out of retries: the proposer stops, like a crashed one. The timer is not re-armed.
            return;
        }
        let mut next_chosen = None;
        execute(next.retry(), &mut next_chosen, o);
        *state.to_mut() = NodeState::Proposer {
            proposer: next,
            retries_left: retries_left - 1,
            chosen: next_chosen,
        };
    }
}

type State = ActorModelState<Node>;
type PaxosModel = ActorModel<Node, Vec<Val>>;

/// Ballots that a majority of acceptors voted for, with their value: the chosen proposals.
fn majority_chosen(state: &State) -> BTreeSet<(Ballot, Val)> {
    let mut votes: BTreeMap<&(Ballot, Val), usize> = BTreeMap::new();
    for s in &state.actor_states {
        if let NodeState::Acceptor { voted, .. } = &**s {
            for vote in voted {
                *votes.entry(vote).or_default() += 1;
            }
        }
    }
    votes
        .into_iter()
        .filter(|(_, n)| *n >= paxos_core::majority(ACCEPTORS))
        .map(|(vote, _)| vote.clone())
        .collect()
}

/// Every (ballot, value) reported as chosen: by a proposer's `Command::Chosen`, or recorded by
/// an acceptor that learned it.
fn reported_chosen(state: &State) -> Vec<(Ballot, Val)> {
    state
        .actor_states
        .iter()
        .filter_map(|s| match &**s {
            NodeState::Proposer { chosen, .. } => chosen.clone(),
            NodeState::Acceptor { acceptor, .. } if acceptor.chosen => acceptor.accepted.clone(),
            NodeState::Acceptor { .. } => None,
        })
        .collect()
}

fn all_values(state: &State) -> BTreeSet<Val> {
    majority_chosen(state)
        .into_iter()
        .chain(reported_chosen(state))
        .map(|(_, v)| v)
        .collect()
}

fn model(retries: u8, network: Network<Msg>, forget_accepted: bool) -> PaxosModel {
    let proposers = [("p1", 'A'), ("p2", 'B')];
    ActorModel::new(proposers.iter().map(|(_, v)| *v).collect::<Vec<_>>(), ())
        .actors((0..ACCEPTORS).map(|_| Node::Acceptor))
        .actors(proposers.iter().map(|(id, value)| Node::Proposer {
            id: *id,
            value: *value,
            retries,
            forget_accepted,
        }))
        .init_network(network)
        .lossy_network(LossyNetwork::Yes)
        .property(Expectation::Always, "agreement", |_, state| {
            all_values(state).len() <= 1
        })
        .property(
            Expectation::Always,
            "chosen reports are true",
            |_, state| {
                let chosen = majority_chosen(state);
                reported_chosen(state).iter().all(|c| chosen.contains(c))
            },
        )
        .property(Expectation::Always, "validity", |model, state| {
            all_values(state).iter().all(|v| model.cfg.contains(v))
        })
        // The `sometimes` properties show the check is not vacuous and reaches the paths
        // where safety is at stake.
        .property(Expectation::Sometimes, "a value is chosen", |_, state| {
            !majority_chosen(state).is_empty()
        })
        .property(
            Expectation::Sometimes,
            "both proposers learn the outcome",
            |_, state| {
                state.actor_states.iter().all(|s| match &**s {
                    NodeState::Proposer { chosen, .. } => chosen.is_some(),
                    NodeState::Acceptor { .. } => true,
                })
            },
        )
        .property(
            Expectation::Sometimes,
            "a value is chosen after a retry",
            |_, state| majority_chosen(state).iter().any(|(b, _)| b.number > 1),
        )
        .property(
            Expectation::Sometimes,
            "a proposer adopts another's accepted value",
            |_, state| {
                majority_chosen(state)
                    .iter()
                    .any(|(b, v)| (b.proposer == "p1") != (*v == 'A'))
            },
        )
}

fn check(name: &str, model: PaxosModel) -> usize {
    let started = Instant::now();
    let checker = model.checker().threads(2).spawn_bfs().join();
    checker.assert_properties();
    let states = checker.unique_state_count();
    println!(
        "{name}: {states} unique states, {} generated, max depth {}, {:?}",
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    states
}

// The pinned state counts are tripwires: they change whenever the protocol's observable
// behaviour changes (a new reply, a different transition). If you changed the protocol on
// purpose, confirm the properties still hold and update the number.

#[test]
fn duplicating_lossy_network_one_retry_each() {
    let states = check(
        "duplicating, 1 retry",
        model(1, Network::new_unordered_duplicating([]), false),
    );
    assert_eq!(states, 0);
}

#[test]
fn non_duplicating_lossy_network_two_retries_each() {
    let states = check(
        "non-duplicating, 2 retries",
        model(2, Network::new_unordered_nonduplicating([]), false),
    );
    assert_eq!(states, 0);
}

/// The checker must be able to fail: a driver that hides previously accepted values from its
/// proposer lets the second proposer overwrite a chosen value.
#[test]
fn checker_catches_a_proposer_that_ignores_accepted_values() {
    let checker = model(0, Network::new_unordered_duplicating([]), true)
        .checker()
        .threads(2)
        .finish_when(HasDiscoveries::AnyFailures)
        .spawn_bfs()
        .join();
    let path = checker
        .discovery("agreement")
        .expect("agreement violation not found");
    assert!(all_values(path.last_state()).len() > 1);
}

#[test]
#[ignore]
fn explore_tmp() {
    let retries: u8 = std::env::var("R").unwrap().parse().unwrap();
    let dup = std::env::var("DUP").unwrap() == "1";
    let lossy = std::env::var("LOSSY").unwrap() == "1";
    let forget = std::env::var("FORGET").unwrap() == "1";
    for depth in [
        6usize, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 40, 50,
    ] {
        let net = if dup {
            Network::new_unordered_duplicating([])
        } else {
            Network::new_unordered_nonduplicating([])
        };
        let started = Instant::now();
        let checker = model(retries, net, forget)
            .lossy_network(if lossy {
                LossyNetwork::Yes
            } else {
                LossyNetwork::No
            })
            .checker()
            .threads(2)
            .target_max_depth(depth)
            .timeout(std::time::Duration::from_secs(60))
            .spawn_bfs()
            .join();
        println!(
            "depth {depth}: {} unique, max {} {:?} agreement={}",
            checker.unique_state_count(),
            checker.max_depth(),
            started.elapsed(),
            checker.discovery("agreement").is_some()
        );
        if started.elapsed().as_secs() > 20 {
            break;
        }
    }
}
