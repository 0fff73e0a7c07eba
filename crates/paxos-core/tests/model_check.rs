//! Exhaustive model check of paxos-core's own `Acceptor` and `Proposer` with stateright.
//!
//! The actors below only carry messages and drive timers; every protocol decision is taken by
//! the crate's real state machines, so the check covers the code the extension runs, not a
//! re-implementation of Paxos.
//!
//! The system: 3 acceptors and 2 proposers with distinct ids and values. The network is
//! unordered; depending on the variant it also duplicates (a sent message can be delivered any
//! number of times, at any later point) or loses messages. A proposer's silence timer can fire
//! at any moment while it has retries left; it then gives up on its ballot (`on_silence` ->
//! `Backoff`) and `retry`s with a higher one. A crashed proposer is a proposer that stops or
//! whose messages are lost or delayed forever, so crashes need no modelling of their own.
//! Acceptor crashes are not modelled: the extension makes acceptor state durable before
//! replying, so a restarted acceptor is indistinguishable from a slow one.
//!
//! The variants with retries or loss take 10-25 s each in release builds and run only there;
//! debug builds run the others (about 20 s) and the negative test.

mod checking;

use std::borrow::Cow;
use std::collections::BTreeSet;

use checking::check;
use paxos_core::{AcceptReply, Acceptor, Ballot, Command, PrepareReply, Proposer};
use stateright::actor::{
    model_timeout, Actor, ActorModel, ActorModelAction, ActorModelState, Envelope, Id,
    LossyNetwork, Network, Out,
};
use stateright::{Checker, HasDiscoveries, Model, Property};

type Val = char;

const ACCEPTORS: usize = 3;

/// The proposers: distinct ids (so distinct ballots) and distinct values.
const PROPOSERS: [(&str, Val); 2] = [("p1", 'A'), ("p2", 'B')];

/// A ballot on the wire: its number and the index of its proposer in [`PROPOSERS`]. Messages
/// are cloned and hashed for every explored state, so they carry no heap data; the conversion
/// is lossless, and the state machines only ever see real [`Ballot`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct WireBallot(i64, u8);

impl From<&Ballot> for WireBallot {
    fn from(b: &Ballot) -> Self {
        let index = PROPOSERS
            .iter()
            .position(|(id, _)| *id == b.proposer)
            .expect("ballot of an unknown proposer");
        WireBallot(b.number, index as u8)
    }
}

impl From<WireBallot> for Ballot {
    fn from(WireBallot(number, index): WireBallot) -> Self {
        Ballot::new(number, PROPOSERS[usize::from(index)].0)
    }
}

fn wire(accepted: Option<(Ballot, Val)>) -> Option<(WireBallot, Val)> {
    accepted.map(|(b, v)| (WireBallot::from(&b), v))
}

/// What travels between actors. The crate's reply enums are not `Ord`, which stateright
/// requires of messages, so replies are flattened here and rebuilt losslessly on receipt.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Msg {
    Prepare(WireBallot),
    Accept(WireBallot, Val),
    Learn(WireBallot, Val),
    /// Replies are tagged with the ballot they answer.
    Promise(WireBallot, Option<(WireBallot, Val)>),
    PrepareRejected(WireBallot, WireBallot),
    PrepareChosen(WireBallot, WireBallot, Val),
    Accepted(WireBallot),
    AcceptRejected(WireBallot, WireBallot),
    AcceptChosen(WireBallot, WireBallot, Val),
}

impl Msg {
    fn prepare_reply(ballot: &Ballot, reply: PrepareReply<Val>) -> Msg {
        let ballot = ballot.into();
        match reply {
            PrepareReply::Promise { accepted } => Msg::Promise(ballot, wire(accepted)),
            PrepareReply::Reject { promised } => Msg::PrepareRejected(ballot, (&promised).into()),
            PrepareReply::Chosen(b, v) => Msg::PrepareChosen(ballot, (&b).into(), v),
        }
    }

    fn accept_reply(ballot: &Ballot, reply: AcceptReply<Val>) -> Msg {
        let ballot = ballot.into();
        match reply {
            AcceptReply::Accepted => Msg::Accepted(ballot),
            AcceptReply::Reject { promised } => Msg::AcceptRejected(ballot, (&promised).into()),
            AcceptReply::Chosen(b, v) => Msg::AcceptChosen(ballot, (&b).into(), v),
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
        index: usize,
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
        phase: Phase,
    },
}

/// The phase a proposer's driver is in, as known from the last command it carried out. The
/// proposer keeps its own phase private; this copy is a function of it, so adds no states.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Phase {
    Preparing,
    Accepting,
    /// Ghost: what the proposer's `Command::Chosen` reported.
    Chosen(Ballot, Val),
}

fn acceptor_ids() -> impl Iterator<Item = Id> {
    (0..ACCEPTORS).map(Id::from)
}

/// Carries out a proposer command and returns the phase it starts (`None`: unchanged).
///
/// The silence timer is armed with every new ballot while retries are left, and can then fire
/// at any moment, so `Backoff` needs no action here: the timer performs the retry. Without
/// retries left the timer is not armed: a proposer that gives up and stops is indistinguishable
/// from one whose replies are delayed forever, so it would only add states.
fn execute(cmd: Command<Val>, retries_left: u8, o: &mut Out<Node>) -> Option<Phase> {
    match cmd {
        Command::Prepare { ballot } => {
            for a in acceptor_ids() {
                o.send(a, Msg::Prepare((&ballot).into()));
            }
            if retries_left > 0 {
                o.set_timer(Timer::Silence, model_timeout());
            }
            Some(Phase::Preparing)
        }
        Command::Accept { ballot, value } => {
            for a in acceptor_ids() {
                o.send(a, Msg::Accept((&ballot).into(), value));
            }
            Some(Phase::Accepting)
        }
        Command::Chosen { ballot, value } => {
            for a in acceptor_ids() {
                o.send(a, Msg::Learn((&ballot).into(), value));
            }
            o.cancel_timer(Timer::Silence);
            Some(Phase::Chosen(ballot, value))
        }
        Command::Backoff => None,
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
            Node::Proposer { index, retries, .. } => {
                let (id, value) = PROPOSERS[*index];
                let mut proposer = Proposer::new(Ballot::new(1, id), ACCEPTORS, value);
                let phase = execute(proposer.start(), *retries, o);
                NodeState::Proposer {
                    proposer,
                    retries_left: *retries,
                    phase: phase.expect("a proposer starts by preparing"),
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
                        let ballot = ballot.into();
                        let reply = next.on_prepare(&ballot);
                        o.send(src, Msg::prepare_reply(&ballot, reply));
                    }
                    Msg::Accept(ballot, value) => {
                        let ballot: Ballot = ballot.into();
                        let reply = next.on_accept(&ballot, value);
                        if reply == AcceptReply::Accepted {
                            next_voted.insert((ballot.clone(), value));
                        }
                        o.send(src, Msg::accept_reply(&ballot, reply));
                    }
                    Msg::Learn(ballot, value) => next.on_learn(&ballot.into(), value),
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
                    phase,
                },
            ) => {
                if let Phase::Chosen(..) = phase {
                    return;
                }
                let from = usize::from(src);
                let mut next = proposer.clone();
                let cmd = match msg {
                    Msg::Promise(ballot, accepted) => {
                        let accepted = match accepted {
                            Some((b, v)) if !*forget_accepted => Some((b.into(), v)),
                            _ => None,
                        };
                        let reply = PrepareReply::Promise { accepted };
                        next.on_prepare_reply(from, &ballot.into(), reply)
                    }
                    Msg::PrepareRejected(ballot, promised) => {
                        let reply = PrepareReply::Reject {
                            promised: promised.into(),
                        };
                        next.on_prepare_reply(from, &ballot.into(), reply)
                    }
                    Msg::PrepareChosen(ballot, b, v) => {
                        let reply = PrepareReply::Chosen(b.into(), v);
                        next.on_prepare_reply(from, &ballot.into(), reply)
                    }
                    Msg::Accepted(ballot) => {
                        next.on_accept_reply(from, &ballot.into(), AcceptReply::Accepted)
                    }
                    Msg::AcceptRejected(ballot, promised) => {
                        let reply = AcceptReply::Reject {
                            promised: promised.into(),
                        };
                        next.on_accept_reply(from, &ballot.into(), reply)
                    }
                    Msg::AcceptChosen(ballot, b, v) => {
                        let reply = AcceptReply::Chosen(b.into(), v);
                        next.on_accept_reply(from, &ballot.into(), reply)
                    }
                    _ => return,
                };
                if next == *proposer && cmd.is_none() {
                    return;
                }
                let phase = cmd
                    .and_then(|cmd| execute(cmd, *retries_left, o))
                    .unwrap_or_else(|| phase.clone());
                *state.to_mut() = NodeState::Proposer {
                    proposer: next,
                    retries_left: *retries_left,
                    phase,
                };
            }
            _ => unreachable!("actor and state kinds always match"),
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<NodeState>, _timer: &Timer, o: &mut Out<Self>) {
        let NodeState::Proposer {
            proposer,
            retries_left,
            phase: Phase::Preparing | Phase::Accepting,
        } = &**state
        else {
            return;
        };
        let mut next = proposer.clone();
        assert_eq!(next.on_silence(), Command::Backoff);
        let retries_left = retries_left - 1;
        let phase = execute(next.retry(), retries_left, o);
        *state.to_mut() = NodeState::Proposer {
            proposer: next,
            retries_left,
            phase: phase.expect("a retry prepares"),
        };
    }
}

type State = ActorModelState<Node>;
type Action = ActorModelAction<Msg, Timer, ()>;

/// Ballots that a majority of acceptors voted for, with their value: the chosen proposals.
fn majority_chosen(state: &State) -> Vec<(&Ballot, Val)> {
    // Evaluated several times for every explored state, so it avoids allocating when nothing
    // is chosen yet.
    let voted: Vec<&BTreeSet<(Ballot, Val)>> = state
        .actor_states
        .iter()
        .filter_map(|s| match &**s {
            NodeState::Acceptor { voted, .. } => Some(voted),
            NodeState::Proposer { .. } => None,
        })
        .collect();
    let mut chosen = Vec::new();
    for (i, votes) in voted.iter().enumerate() {
        for vote in votes.iter() {
            let earlier = voted[..i].iter().any(|other| other.contains(vote));
            let count = 1 + voted[i + 1..].iter().filter(|o| o.contains(vote)).count();
            if !earlier && count >= paxos_core::majority(ACCEPTORS) {
                chosen.push((&vote.0, vote.1));
            }
        }
    }
    chosen
}

/// Every (ballot, value) reported as chosen: by a proposer's `Command::Chosen`, or recorded by
/// an acceptor that learned it.
fn reported_chosen(state: &State) -> impl Iterator<Item = (&Ballot, Val)> {
    state.actor_states.iter().filter_map(|s| match &**s {
        NodeState::Proposer {
            phase: Phase::Chosen(b, v),
            ..
        } => Some((b, *v)),
        NodeState::Proposer { .. } => None,
        NodeState::Acceptor { acceptor, .. } if acceptor.chosen => {
            acceptor.accepted.as_ref().map(|(b, v)| (b, *v))
        }
        NodeState::Acceptor { .. } => None,
    })
}

fn chosen_values(state: &State) -> BTreeSet<Val> {
    majority_chosen(state)
        .into_iter()
        .chain(reported_chosen(state))
        .map(|(_, v)| v)
        .collect()
}

/// Whether delivering `env` can never change anything again.
fn is_dead(state: &State, env: &Envelope<&Msg>) -> bool {
    let actor = |index: usize| &*state.actor_states[index];
    // A proposer ignores replies unless they answer its current ballot and phase; ballots only
    // grow and phases only advance, so an ignored reply stays ignored.
    let ignores = |proposer: &NodeState, ballot: WireBallot, preparing: bool| match proposer {
        NodeState::Proposer {
            proposer, phase, ..
        } => match phase {
            Phase::Preparing | Phase::Accepting if ballot != proposer.ballot().into() => true,
            Phase::Preparing => !preparing,
            Phase::Accepting => preparing,
            Phase::Chosen(..) => true,
        },
        NodeState::Acceptor { .. } => unreachable!("replies go to proposers"),
    };
    let owner = |b: WireBallot| actor(ACCEPTORS + usize::from(b.1));
    match (actor(usize::from(env.dst)), env.msg) {
        (p, Msg::Promise(b, _) | Msg::PrepareRejected(b, _) | Msg::PrepareChosen(b, ..)) => {
            ignores(p, *b, true)
        }
        (p, Msg::Accepted(b) | Msg::AcceptRejected(b, _) | Msg::AcceptChosen(b, ..)) => {
            ignores(p, *b, false)
        }
        (NodeState::Acceptor { acceptor, .. }, Msg::Learn(..)) => acceptor.chosen,
        // A request whose reply will be ignored is dead once it cannot change the acceptor.
        // Promises only grow, and an acceptor accepts nothing below its promise.
        (NodeState::Acceptor { acceptor, .. }, Msg::Prepare(b)) => {
            ignores(owner(*b), *b, true)
                && (acceptor.chosen || acceptor.promised >= Some(Ballot::from(*b)))
        }
        (NodeState::Acceptor { acceptor, .. }, Msg::Accept(b, v)) => {
            let ballot = Ballot::from(*b);
            ignores(owner(*b), *b, false)
                && (acceptor.chosen
                    || acceptor.promised > Some(ballot.clone())
                    || acceptor.accepted == Some((ballot, *v)))
        }
        (NodeState::Proposer { .. }, _) => unreachable!("requests go to acceptors"),
    }
}

/// The actor model, checked through a thin wrapper that canonicalizes each state it reaches.
/// Stateright's duplicating network remembers the last delivered message, and dead messages
/// (see [`is_dead`]) linger in the network; neither can influence any later step, yet both
/// make otherwise identical states distinct and multiply the state space many times over.
/// Forgetting them merges only states with identical futures, so no behaviour is lost.
struct Checked {
    model: ActorModel<Node>,
}

impl Checked {
    fn new(
        retries: [u8; 2],
        network: Network<Msg>,
        lossy: LossyNetwork,
        forget_accepted: bool,
    ) -> Self {
        let model = ActorModel::new((), ())
            .actors((0..ACCEPTORS).map(|_| Node::Acceptor))
            .actors((0..PROPOSERS.len()).map(|index| Node::Proposer {
                index,
                retries: retries[index],
                forget_accepted,
            }))
            .init_network(network)
            .lossy_network(lossy);
        Checked { model }
    }

    fn canonical(mut state: State) -> State {
        let dead: Vec<Envelope<Msg>> = state
            .network
            .iter_deliverable()
            .filter(|env| is_dead(&state, env))
            .map(|env| env.to_cloned_msg())
            .collect();
        checking::remove(&mut state.network, &dead);
        state
    }
}

impl Model for Checked {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        self.model.init_states()
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        self.model.actions(state, actions)
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        self.model.next_state(state, action).map(Checked::canonical)
    }

    fn format_action(&self, action: &Action) -> String {
        self.model.format_action(action)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("agreement", |_, state| chosen_values(state).len() <= 1),
            Property::always("chosen reports are true", |_, state| {
                let chosen = majority_chosen(state);
                reported_chosen(state).all(|c| chosen.contains(&c))
            }),
            Property::always("validity", |_, state| {
                chosen_values(state)
                    .iter()
                    .all(|v| PROPOSERS.iter().any(|(_, proposed)| proposed == v))
            }),
            // The `sometimes` properties show the check is not vacuous and reaches the paths
            // where safety is at stake.
            Property::sometimes("a value is chosen", |_, state| {
                !majority_chosen(state).is_empty()
            }),
            Property::sometimes("both proposers learn the outcome", |_, state: &State| {
                state.actor_states.iter().all(|s| match &**s {
                    NodeState::Proposer { phase, .. } => matches!(phase, Phase::Chosen(..)),
                    NodeState::Acceptor { .. } => true,
                })
            }),
            Property::sometimes("a proposer adopts another's accepted value", |_, state| {
                majority_chosen(state)
                    .iter()
                    .any(|(b, v)| (b.proposer == PROPOSERS[0].0) != (*v == PROPOSERS[0].1))
            }),
        ]
    }
}

// The pinned state counts are tripwires: they change whenever the protocol's observable
// behaviour changes (a new reply, a different transition). If you changed the protocol on
// purpose, confirm the properties still hold and update the number.
//
// Message loss only matters to the variant that says so: the properties look at actor states
// only, and losing a message is then indistinguishable from delaying it forever, which every
// variant explores. Loss multiplies the states, so it gets the smallest configuration.

#[test]
fn non_duplicating_network() {
    let states = check(
        "non-duplicating, no retries",
        Checked::new(
            [0, 0],
            Network::new_unordered_nonduplicating([]),
            LossyNetwork::No,
            false,
        ),
    );
    assert_eq!(states, 59_617);
}

#[test]
fn duplicating_network() {
    let states = check(
        "duplicating, no retries",
        Checked::new(
            [0, 0],
            Network::new_unordered_duplicating([]),
            LossyNetwork::No,
            false,
        ),
    );
    assert_eq!(states, 391_804);
}

// One retry for both proposers at once is 15 million states (minutes), so each proposer gets
// its retry in a separate run. The first proposer's retry outbids the second's initial ballot,
// the second's outbids that; both then race their older ballots still in flight.

#[test]
#[cfg_attr(debug_assertions, ignore = "exhaustive; run with --release")]
fn first_proposer_retries() {
    let states = check(
        "p1 retries once",
        Checked::new(
            [1, 0],
            Network::new_unordered_nonduplicating([]),
            LossyNetwork::No,
            false,
        ),
    );
    assert_eq!(states, 716_855);
}

#[test]
#[cfg_attr(debug_assertions, ignore = "exhaustive; run with --release")]
fn second_proposer_retries() {
    let states = check(
        "p2 retries once",
        Checked::new(
            [0, 1],
            Network::new_unordered_nonduplicating([]),
            LossyNetwork::No,
            false,
        ),
    );
    assert_eq!(states, 1_706_750);
}

#[test]
#[cfg_attr(debug_assertions, ignore = "exhaustive; run with --release")]
fn lossy_network() {
    let states = check(
        "lossy, no retries",
        Checked::new(
            [0, 0],
            Network::new_unordered_nonduplicating([]),
            LossyNetwork::Yes,
            false,
        ),
    );
    assert_eq!(states, 1_146_724);
}

/// The checker must be able to fail: a driver that hides previously accepted values from its
/// proposer lets the second proposer overwrite a chosen value.
#[test]
fn checker_catches_a_proposer_that_ignores_accepted_values() {
    let checker = Checked::new(
        [0, 0],
        Network::new_unordered_nonduplicating([]),
        LossyNetwork::No,
        true,
    )
    .checker()
    .threads(2)
    .finish_when(HasDiscoveries::AnyFailures)
    .spawn_bfs()
    .join();
    let path = checker
        .discovery("agreement")
        .expect("agreement violation not found");
    assert!(chosen_values(path.last_state()).len() > 1);
}
