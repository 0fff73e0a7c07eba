//! Exhaustive model check of membership changes through the log: joins and leaves (a node
//! leaving, or removed by another member) chosen at a round take effect at the next one
//! ([`Membership`]), and a proposer runs a round only with the voters that the decisions of
//! every earlier round give it. The race this covers is the one an operator meets when
//! replacing a lost member: the removal of one node and the join of another proposed at once.
//!
//! The system: 4 acceptors, of which `a0`, `a1` and `a2` vote from round 0 and `a3` does
//! not; 2 rounds; 2 proposers: `p1` appends the join of `a3`, `p2` the removal of `a2`.
//! Each runs single-decree Paxos ([`Proposer`]) round after round: it proposes its entry
//! if it is not chosen yet, learns the round's decision (its own entry or the other's, by a
//! majority of its accepts), and goes on to the next round with the voters [`Membership`]
//! derives from the decisions so far. So the race is decided at round 0, and the loser's
//! change is chosen at round 1 by the voters the winner's gives: {a0, a1, a2, a3} (3 of 4
//! needed) or {a0, a1} (both needed). Each proposer has one ballot per round, `p2`'s above
//! `p1`'s (ballots of one number are ordered by proposer): `p2` either wins round 0 or
//! adopts the join `p1` got accepted, and a proposer whose ballot is refused stops, which
//! safety does not mind (retries are covered by model_check.rs). The network is unordered
//! (a lost message is one delayed for ever, which safety cannot tell apart). As in the other models, the
//! actors only carry messages; every protocol decision is the crate's own code.
//!
//! The negative test runs round 1 with the voters of round 0, as a proposer would that did
//! not wait for round 0's decision (a leader batching rounds past a membership change): it
//! then takes 2 of {a0, a1, a2} for a choice where the join made 3 of 4 necessary.

mod checking;

use std::borrow::Cow;
use std::collections::BTreeSet;

use checking::check;
use paxos_core::{
    majority, AcceptReply, Acceptor, Ballot, Command, Member, Membership, PrepareReply, Proposer,
};
use stateright::actor::{
    Actor, ActorModel, ActorModelState, Envelope, Id, LossyNetwork, Network, Out,
};
use stateright::{Checker, HasDiscoveries, Model, Property};

const ACCEPTORS: usize = 4;
const ROUNDS: usize = 2;
/// The acceptors that vote from round 0.
const FOUNDERS: [u8; 3] = [0, 1, 2];

/// A log entry: a join or a leave of an acceptor (values other than membership changes
/// behave as in the other models).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Val {
    Join(u8),
    Leave(u8),
}

/// Per proposer: its id and the entries it appends, in order.
const PROPOSERS: [(&str, &[Val]); 2] = [("p1", &[Val::Join(3)]), ("p2", &[Val::Leave(2)])];

fn connection(acceptor: u8) -> String {
    format!("a{acceptor}")
}

/// A ballot on the wire: number and proposer index (see multi_round_model.rs).
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

/// Requests and replies, each with its round and ballot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Msg {
    Prepare(u8, WireBallot),
    Promise(u8, WireBallot, PrepareAnswer),
    Accept(u8, WireBallot, Val),
    Accepted(u8, WireBallot, AcceptAnswer),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum PrepareAnswer {
    Promise(Option<(WireBallot, Val)>),
    Reject(WireBallot),
    Chosen(WireBallot, Val),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum AcceptAnswer {
    Accepted,
    Reject(WireBallot),
    Chosen(WireBallot, Val),
}

impl From<PrepareReply<Val>> for PrepareAnswer {
    fn from(reply: PrepareReply<Val>) -> Self {
        match reply {
            PrepareReply::Promise { accepted } => {
                PrepareAnswer::Promise(accepted.map(|(b, v)| ((&b).into(), v)))
            }
            PrepareReply::Reject { promised } => PrepareAnswer::Reject((&promised).into()),
            PrepareReply::Chosen(b, v) => PrepareAnswer::Chosen((&b).into(), v),
        }
    }
}

impl From<PrepareAnswer> for PrepareReply<Val> {
    fn from(answer: PrepareAnswer) -> Self {
        match answer {
            PrepareAnswer::Promise(accepted) => PrepareReply::Promise {
                accepted: accepted.map(|(b, v)| (b.into(), v)),
            },
            PrepareAnswer::Reject(b) => PrepareReply::Reject { promised: b.into() },
            PrepareAnswer::Chosen(b, v) => PrepareReply::Chosen(b.into(), v),
        }
    }
}

impl From<AcceptReply<Val>> for AcceptAnswer {
    fn from(reply: AcceptReply<Val>) -> Self {
        match reply {
            AcceptReply::Accepted => AcceptAnswer::Accepted,
            AcceptReply::Reject { promised } => AcceptAnswer::Reject((&promised).into()),
            AcceptReply::Chosen(b, v) => AcceptAnswer::Chosen((&b).into(), v),
        }
    }
}

impl From<AcceptAnswer> for AcceptReply<Val> {
    fn from(answer: AcceptAnswer) -> Self {
        match answer {
            AcceptAnswer::Accepted => AcceptReply::Accepted,
            AcceptAnswer::Reject(b) => AcceptReply::Reject { promised: b.into() },
            AcceptAnswer::Chosen(b, v) => AcceptReply::Chosen(b.into(), v),
        }
    }
}

/// A broken variant, for the negative test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Bug {
    None,
    /// A proposer runs every round with the founders as voters, as one would that does not
    /// wait for the decisions before a round (a leader batching rounds past a membership
    /// change, say).
    StaleVoters,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Node {
    Acceptor,
    Proposer(usize, Bug),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Proposing {
    /// The decisions this proposer knows, round 0 first.
    decided: Vec<Val>,
    /// The voters it runs the current round with.
    voters: Vec<u8>,
    /// The single-decree instance of the current round; `None` once it has nothing left.
    proposer: Option<Proposer<Val>>,
}

// Boxing the larger variant would cost an allocation per state copy for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum NodeState {
    Acceptor(Vec<Acceptor<Val>>),
    Proposer(Proposing),
}

/// No timers: see the module's comment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {}

/// The voters of `round` given the decisions of the rounds before it, as paxos-core's
/// membership derives them.
fn voters_after(decided: &[Val], round: usize) -> Vec<u8> {
    let mut membership = Membership::new(
        FOUNDERS
            .iter()
            .map(|a| Member {
                connection: connection(*a),
                from_round: 0,
                until_round: None,
            })
            .collect(),
    );
    for (r, value) in decided.iter().enumerate().take(round) {
        match value {
            Val::Join(a) => membership.join(&connection(*a), r as i64),
            Val::Leave(a) => membership.leave(&connection(*a), r as i64),
        };
    }
    membership
        .voters(round as i64)
        .iter()
        .map(|c| c[1..].parse().expect("an acceptor's connection"))
        .collect()
}

fn pending(index: usize, decided: &[Val]) -> Option<Val> {
    PROPOSERS[index]
        .1
        .iter()
        .copied()
        .find(|v| !decided.contains(v))
}

fn send(voters: &[u8], msg: Msg, o: &mut Out<Node>) {
    for v in voters {
        o.send(Id::from(usize::from(*v)), msg.clone());
    }
}

/// Sends what `command` asks for at `round`; returns whether the round is decided.
fn carry_out(round: u8, voters: &[u8], command: Command<Val>, o: &mut Out<Node>) -> Option<Val> {
    match command {
        Command::Prepare { ballot } => send(voters, Msg::Prepare(round, (&ballot).into()), o),
        Command::Accept { ballot, value } => {
            send(voters, Msg::Accept(round, (&ballot).into(), value), o)
        }
        // Telling the acceptors is left out: it changes no vote (see model_check.rs for
        // learning), and a proposer that lost a round learns its value by its next ballot.
        Command::Chosen { value, .. } => return Some(value),
        Command::Backoff => {}
    }
    None
}

impl Node {
    /// Starts the round after `decided` with this proposer's next entry, if it has one.
    fn next_round(&self, decided: Vec<Val>, o: &mut Out<Node>) -> Proposing {
        let Node::Proposer(index, bug) = self else {
            unreachable!("only proposers run rounds")
        };
        let round = decided.len();
        let voters = match bug {
            Bug::None => voters_after(&decided, round),
            Bug::StaleVoters => FOUNDERS.to_vec(),
        };
        let proposer = (round < ROUNDS)
            .then(|| pending(*index, &decided))
            .flatten()
            .map(|value| {
                let mut proposer =
                    Proposer::new(Ballot::new(1, PROPOSERS[*index].0), voters.len(), value);
                carry_out(round as u8, &voters, proposer.start(), o);
                proposer
            });
        Proposing {
            decided,
            voters,
            proposer,
        }
    }

    /// Feeds a reply to the current round's instance; returns the proposer's next state.
    fn hear(
        &self,
        proposing: &Proposing,
        src: Id,
        msg: &Msg,
        o: &mut Out<Node>,
    ) -> Option<Proposing> {
        let round = proposing.decided.len() as u8;
        let mut proposer = proposing.proposer.clone()?;
        let from = proposing
            .voters
            .iter()
            .position(|v| usize::from(*v) == usize::from(src))?;
        let command = match msg {
            Msg::Promise(r, b, answer) if *r == round => {
                proposer.on_prepare_reply(from, &(*b).into(), answer.clone().into())
            }
            Msg::Accepted(r, b, answer) if *r == round => {
                proposer.on_accept_reply(from, &(*b).into(), answer.clone().into())
            }
            _ => None,
        };
        let Some(command) = command else {
            // A reply counted, or ignored.
            return (proposing.proposer.as_ref() != Some(&proposer)).then(|| Proposing {
                proposer: Some(proposer),
                ..proposing.clone()
            });
        };
        match carry_out(round, &proposing.voters, command, o) {
            Some(value) => {
                let mut decided = proposing.decided.clone();
                decided.push(value);
                Some(self.next_round(decided, o))
            }
            None => Some(Proposing {
                proposer: Some(proposer),
                ..proposing.clone()
            }),
        }
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
            Node::Acceptor => NodeState::Acceptor(vec![Acceptor::default(); ROUNDS]),
            Node::Proposer(..) => NodeState::Proposer(self.next_round(Vec::new(), o)),
        }
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<NodeState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match &**state {
            NodeState::Acceptor(rounds) => {
                let mut rounds = rounds.clone();
                match msg {
                    Msg::Prepare(r, b) => {
                        let reply = rounds[usize::from(r)].on_prepare(&b.into());
                        o.send(src, Msg::Promise(r, b, reply.into()));
                    }
                    Msg::Accept(r, b, v) => {
                        let reply = rounds[usize::from(r)].on_accept(&b.into(), v);
                        o.send(src, Msg::Accepted(r, b, reply.into()));
                    }
                    _ => return,
                }
                if rounds != *acceptor_rounds(state) {
                    *state.to_mut() = NodeState::Acceptor(rounds);
                }
            }
            NodeState::Proposer(proposing) => {
                if let Some(next) = self.hear(proposing, src, &msg, o) {
                    *state.to_mut() = NodeState::Proposer(next);
                }
            }
        }
    }
}

fn acceptor_rounds(state: &NodeState) -> &Vec<Acceptor<Val>> {
    match state {
        NodeState::Acceptor(rounds) => rounds,
        NodeState::Proposer(_) => unreachable!("an acceptor's state"),
    }
}

type State = ActorModelState<Node>;

/// The value each acceptor holds as accepted at `round`.
fn accepted_at(state: &State, round: usize) -> Vec<Option<Val>> {
    state.actor_states[..ACCEPTORS]
        .iter()
        .map(|s| acceptor_rounds(s)[round].accepted.as_ref().map(|(_, v)| *v))
        .collect()
}

/// The log as it is truly chosen: round by round, the value a majority of that round's true
/// voters (derived from the values truly chosen before it) holds, as far as there is one.
/// Once chosen, a value stays accepted by a majority (every later ballot carries it), so
/// the acceptors' current state tells.
fn truly_chosen(state: &State) -> Vec<Val> {
    let mut log = Vec::new();
    for round in 0..ROUNDS {
        let voters = voters_after(&log, round);
        let held = accepted_at(state, round);
        let mut counts = std::collections::BTreeMap::new();
        for v in &voters {
            if let Some(value) = held[usize::from(*v)] {
                *counts.entry(value).or_insert(0) += 1;
            }
        }
        match counts
            .into_iter()
            .find(|(_, n)| *n >= majority(voters.len()))
        {
            Some((value, _)) => log.push(value),
            None => break,
        }
    }
    log
}

/// What each proposer believes chosen.
fn reported(state: &State) -> impl Iterator<Item = &Vec<Val>> {
    state.actor_states[ACCEPTORS..].iter().map(|s| match &**s {
        NodeState::Proposer(p) => &p.decided,
        NodeState::Acceptor(_) => unreachable!("a proposer's state"),
    })
}

/// The model, with messages that can no longer change anything removed from each state's
/// network (as in multi_round_model.rs): replies a proposer ignores now, it ignores for
/// ever (its rounds and ballots only advance), and a request whose reply will be ignored
/// and whose delivery changes no vote is as good as lost.
struct Checked {
    model: ActorModel<Node>,
}

fn proposing(state: &State, index: usize) -> &Proposing {
    match &*state.actor_states[ACCEPTORS + index] {
        NodeState::Proposer(p) => p,
        NodeState::Acceptor(_) => unreachable!("a proposer's state"),
    }
}

impl Checked {
    fn new(bug: Bug) -> Self {
        let model = ActorModel::new((), ())
            .actors((0..ACCEPTORS).map(|_| Node::Acceptor))
            .actors((0..PROPOSERS.len()).map(|index| Node::Proposer(index, bug)))
            .init_network(Network::new_unordered_nonduplicating([]))
            .lossy_network(LossyNetwork::No);
        Checked { model }
    }

    fn is_dead(&self, state: &State, env: &Envelope<&Msg>) -> bool {
        let dst = usize::from(env.dst);
        match &*state.actor_states[dst] {
            NodeState::Acceptor(rounds) => {
                let (Msg::Prepare(r, b) | Msg::Accept(r, b, _)) = env.msg else {
                    return false;
                };
                let owner = proposing(state, usize::from(b.1));
                let listens = owner.decided.len() == usize::from(*r)
                    && owner
                        .proposer
                        .as_ref()
                        .is_some_and(|p| WireBallot::from(p.ballot()) == *b);
                let mut after = rounds[usize::from(*r)].clone();
                match env.msg {
                    Msg::Prepare(_, b) => drop(after.on_prepare(&(*b).into())),
                    Msg::Accept(_, b, v) => drop(after.on_accept(&(*b).into(), *v)),
                    _ => {}
                }
                !listens && after == rounds[usize::from(*r)]
            }
            NodeState::Proposer(p) => {
                let mut out = Out::new();
                self.model.actors[dst]
                    .hear(p, env.src, env.msg, &mut out)
                    .is_none()
                    && out.is_empty()
            }
        }
    }
}

impl Model for Checked {
    type State = State;
    type Action = stateright::actor::ActorModelAction<Msg, Timer, ()>;

    fn init_states(&self) -> Vec<State> {
        self.model.init_states()
    }

    fn actions(&self, state: &State, actions: &mut Vec<Self::Action>) {
        self.model.actions(state, actions)
    }

    fn next_state(&self, state: &State, action: Self::Action) -> Option<State> {
        let mut next = self.model.next_state(state, action)?;
        let dead: Vec<Envelope<Msg>> = next
            .network
            .iter_deliverable()
            .filter(|env| self.is_dead(&next, env))
            .map(|env| env.to_cloned_msg())
            .collect();
        checking::remove(&mut next.network, &dead);
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("proposers agree on every round", |_, state| {
                let logs: Vec<&Vec<Val>> = reported(state).collect();
                (0..ROUNDS).all(|round| {
                    let values: BTreeSet<Val> =
                        logs.iter().filter_map(|l| l.get(round).copied()).collect();
                    values.len() <= 1
                })
            }),
            Property::always(
                "what a proposer learns is chosen by the round's true voters",
                |_, state| {
                    let truth = truly_chosen(state);
                    reported(state).all(|log| {
                        log.len() <= truth.len() && log.iter().zip(&truth).all(|(a, b)| a == b)
                    })
                },
            ),
            // Not vacuous: the race goes both ways, and the loser's change is chosen by the
            // voters the winner's gives.
            Property::sometimes("the join wins the race", |_, state| {
                truly_chosen(state).first() == Some(&Val::Join(3))
            }),
            Property::sometimes("the removal wins the race", |_, state| {
                truly_chosen(state).first() == Some(&Val::Leave(2))
            }),
            Property::sometimes("both changes take effect", |_, state| {
                truly_chosen(state).len() == ROUNDS
            }),
        ]
    }
}

// The pinned state count is a tripwire (see multi_round_model.rs): it changes whenever the
// observable behaviour of the protocol does. About 80 s in release on two cores.
#[test]
#[cfg_attr(debug_assertions, ignore = "exhaustive; run with --release")]
fn a_removal_racing_a_join() {
    let states = check("a removal racing a join", Checked::new(Bug::None));
    assert_eq!(states, 959_972, "unique states");
}

#[test]
fn the_check_catches_a_proposer_with_stale_voters() {
    let checker = Checked::new(Bug::StaleVoters)
        .checker()
        .threads(1)
        .finish_when(HasDiscoveries::AnyFailures)
        .spawn_bfs()
        .join();
    let found = [
        "proposers agree on every round",
        "what a proposer learns is chosen by the round's true voters",
    ]
    .iter()
    .any(|p| checker.discovery(p).is_some());
    assert!(found, "the stale-voters variant goes unnoticed");
}
