//! Property tests of paxos-core: acceptor invariants under arbitrary inputs, agreement under
//! randomly scheduled, lost and duplicated messages, the ordering of `Ballot::above`, and the
//! range promise rules of a multi-round acceptor under arbitrary inputs.

use std::collections::BTreeSet;

use paxos_core::{
    accept_batch, majority, prepare_from, AcceptReply, Acceptor, Ballot, BatchReply, Command,
    PrepareFrom, PrepareReply, Proposer, RangePromise,
};
use proptest::prelude::*;

type Val = u32;

fn ballot() -> impl Strategy<Value = Ballot> {
    (0i64..6, prop::sample::select(vec!["a", "b", "c"])).prop_map(|(n, p)| Ballot::new(n, p))
}

// ---------------------------------------------------------------------------------------------
// (a) One acceptor, arbitrary inputs.

#[derive(Clone, Debug)]
enum Op {
    Prepare(Ballot),
    Accept(Ballot, Val),
    Learn(Ballot, Val),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => ballot().prop_map(Op::Prepare),
        4 => (ballot(), 0..3u32).prop_map(|(b, v)| Op::Accept(b, v)),
        // Rarer, so that most runs spend a while undecided before they learn.
        1 => (ballot(), 0..3u32).prop_map(|(b, v)| Op::Learn(b, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn acceptor_keeps_its_invariants(ops in prop::collection::vec(op(), 0..40)) {
        let mut a = Acceptor::<Val>::default();
        for op in ops {
            let before = a.clone();
            match &op {
                Op::Prepare(b) => {
                    let reply = a.on_prepare(b);
                    let expected = match (&before.accepted, before.chosen, &before.promised) {
                        (Some((cb, cv)), true, _) => PrepareReply::Chosen(cb.clone(), *cv),
                        (_, _, Some(p)) if p > b => PrepareReply::Reject { promised: p.clone() },
                        _ => PrepareReply::Promise { accepted: before.accepted.clone() },
                    };
                    prop_assert_eq!(&reply, &expected);
                    if let PrepareReply::Promise { .. } = reply {
                        prop_assert_eq!(a.promised.as_ref(), Some(b));
                    } else {
                        prop_assert_eq!(&a, &before, "a refusal changes nothing");
                    }
                }
                Op::Accept(b, v) => {
                    let reply = a.on_accept(b, *v);
                    let expected = match (&before.accepted, before.chosen, &before.promised) {
                        (Some((cb, cv)), true, _) => AcceptReply::Chosen(cb.clone(), *cv),
                        (_, _, Some(p)) if p > b => AcceptReply::Reject { promised: p.clone() },
                        _ => AcceptReply::Accepted,
                    };
                    prop_assert_eq!(&reply, &expected);
                    if reply == AcceptReply::Accepted {
                        prop_assert_eq!(&a.accepted, &Some((b.clone(), *v)));
                    } else {
                        prop_assert_eq!(&a, &before, "a refusal changes nothing");
                    }
                }
                Op::Learn(b, v) => {
                    a.on_learn(b, *v);
                    prop_assert!(a.chosen);
                    if !before.chosen {
                        prop_assert_eq!(&a.accepted, &Some((b.clone(), *v)));
                    }
                }
            }
            prop_assert!(a.promised >= before.promised, "promise lowered by {:?}", op);
            if let Some((accepted, _)) = &a.accepted {
                prop_assert!(
                    a.promised.as_ref().is_some_and(|p| accepted <= p),
                    "accepted above the promise after {:?}: {:?}", op, a
                );
            }
            if before.chosen {
                prop_assert!(a.chosen);
                prop_assert_eq!(&a.accepted, &before.accepted, "chosen value changed by {:?}", op);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) Proposers and acceptors under a random scheduler.

#[derive(Clone, Debug)]
enum Msg {
    Prepare {
        to: usize,
        from: usize,
        ballot: Ballot,
    },
    Accept {
        to: usize,
        from: usize,
        ballot: Ballot,
        value: Val,
    },
    Learn {
        to: usize,
        ballot: Ballot,
        value: Val,
    },
    PrepareReply {
        to: usize,
        from: usize,
        ballot: Ballot,
        reply: PrepareReply<Val>,
    },
    AcceptReply {
        to: usize,
        from: usize,
        ballot: Ballot,
        reply: AcceptReply<Val>,
    },
}

struct Driver {
    proposer: Proposer<Val>,
    retries_left: u8,
    done: bool,
    /// Test-only sabotage: hide previously accepted values from the proposer.
    forget_accepted: bool,
}

/// A whole round: acceptors, proposer drivers, and the messages in flight. The scheduler picks
/// any message in flight (so the network reorders freely), may drop it or deliver it and keep
/// a copy (duplication), and may time out any proposer, which then retries while it can.
struct Sim {
    acceptors: Vec<Acceptor<Val>>,
    /// Every (ballot, value) each acceptor ever accepted: `accepted` keeps only the latest.
    voted: Vec<BTreeSet<(Ballot, Val)>>,
    drivers: Vec<Driver>,
    net: Vec<Msg>,
    /// Every `Command::Chosen` emitted.
    chosen: Vec<(Ballot, Val)>,
}

impl Sim {
    fn new(acceptors: usize, proposers: &[(i64, u8)], forget_accepted: bool) -> Sim {
        let mut sim = Sim {
            acceptors: vec![Acceptor::default(); acceptors],
            voted: vec![BTreeSet::new(); acceptors],
            drivers: Vec::new(),
            net: Vec::new(),
            chosen: Vec::new(),
        };
        for (i, (number, retries)) in proposers.iter().enumerate() {
            let ballot = Ballot::new(*number, format!("p{i}"));
            let mut proposer = Proposer::new(ballot, acceptors, 100 + i as Val);
            let cmd = proposer.start();
            sim.drivers.push(Driver {
                proposer,
                retries_left: *retries,
                done: false,
                forget_accepted,
            });
            sim.execute(i, cmd);
        }
        sim
    }

    fn execute(&mut self, p: usize, cmd: Command<Val>) {
        let n = self.acceptors.len();
        match cmd {
            Command::Prepare { ballot } => self.net.extend((0..n).map(|to| Msg::Prepare {
                to,
                from: p,
                ballot: ballot.clone(),
            })),
            Command::Accept { ballot, value } => self.net.extend((0..n).map(|to| Msg::Accept {
                to,
                from: p,
                ballot: ballot.clone(),
                value,
            })),
            Command::Chosen { ballot, value } => {
                assert!(!self.drivers[p].done, "Chosen emitted twice");
                self.drivers[p].done = true;
                self.chosen.push((ballot.clone(), value));
                self.net.extend((0..n).map(|to| Msg::Learn {
                    to,
                    ballot: ballot.clone(),
                    value,
                }));
            }
            // The scheduler's timeouts perform the retries.
            Command::Backoff => {}
        }
    }

    fn deliver(&mut self, msg: Msg) {
        let (p, cmd) = match msg {
            Msg::Prepare { to, from, ballot } => {
                let reply = self.acceptors[to].on_prepare(&ballot);
                self.net.push(Msg::PrepareReply {
                    to: from,
                    from: to,
                    ballot,
                    reply,
                });
                return;
            }
            Msg::Accept {
                to,
                from,
                ballot,
                value,
            } => {
                let reply = self.acceptors[to].on_accept(&ballot, value);
                if reply == AcceptReply::Accepted {
                    self.voted[to].insert((ballot.clone(), value));
                }
                self.net.push(Msg::AcceptReply {
                    to: from,
                    from: to,
                    ballot,
                    reply,
                });
                return;
            }
            Msg::Learn { to, ballot, value } => {
                self.acceptors[to].on_learn(&ballot, value);
                return;
            }
            Msg::PrepareReply {
                to,
                from,
                ballot,
                reply,
            } => {
                let d = &mut self.drivers[to];
                if d.done {
                    return;
                }
                let reply = match reply {
                    PrepareReply::Promise { .. } if d.forget_accepted => {
                        PrepareReply::Promise { accepted: None }
                    }
                    reply => reply,
                };
                (to, d.proposer.on_prepare_reply(from, &ballot, reply))
            }
            Msg::AcceptReply {
                to,
                from,
                ballot,
                reply,
            } => {
                let d = &mut self.drivers[to];
                if d.done {
                    return;
                }
                (to, d.proposer.on_accept_reply(from, &ballot, reply))
            }
        };
        if let Some(cmd) = cmd {
            self.execute(p, cmd);
        }
    }

    fn timeout(&mut self, p: usize) {
        let d = &mut self.drivers[p];
        if d.done || d.retries_left == 0 {
            return;
        }
        assert_eq!(d.proposer.on_silence(), Command::Backoff);
        d.retries_left -= 1;
        let cmd = d.proposer.retry();
        self.execute(p, cmd);
    }

    /// One scheduling decision, taken from `choice`.
    fn step(&mut self, choice: u32) {
        let kind = choice % 8;
        let pick = (choice / 8) as usize;
        if kind == 0 || self.net.is_empty() {
            self.timeout(pick % self.drivers.len());
            return;
        }
        let i = pick % self.net.len();
        match kind {
            1 => {
                self.net.swap_remove(i);
            }
            2 => self.deliver(self.net[i].clone()),
            _ => {
                let msg = self.net.swap_remove(i);
                self.deliver(msg);
            }
        }
    }

    /// (ballot, value) pairs accepted by a majority at some point: the chosen proposals.
    fn majority_chosen(&self) -> BTreeSet<(Ballot, Val)> {
        let all: BTreeSet<&(Ballot, Val)> = self.voted.iter().flatten().collect();
        all.into_iter()
            .filter(|vote| {
                self.voted.iter().filter(|v| v.contains(*vote)).count()
                    >= majority(self.acceptors.len())
            })
            .cloned()
            .collect()
    }

    /// Agreement, checked after every step. Returns a description of the violation, if any.
    fn violation(&self) -> Option<String> {
        let chosen = self.majority_chosen();
        let learned = self
            .acceptors
            .iter()
            .filter(|a| a.chosen)
            .filter_map(|a| a.accepted.clone());
        let values: BTreeSet<Val> = chosen
            .iter()
            .cloned()
            .chain(self.chosen.iter().cloned())
            .chain(learned)
            .map(|(_, v)| v)
            .collect();
        if values.len() > 1 {
            return Some(format!(
                "two values chosen: majorities {chosen:?}, Chosen commands {:?}",
                self.chosen
            ));
        }
        if let Some(c) = self.chosen.iter().find(|c| !chosen.contains(*c)) {
            return Some(format!("Chosen {c:?} without a majority: {chosen:?}"));
        }
        None
    }
}

fn run(sim: &mut Sim, choices: &[u32]) -> Result<(), String> {
    for (i, c) in choices.iter().enumerate() {
        sim.step(*c);
        if let Some(v) = sim.violation() {
            return Err(format!("after step {i}: {v}"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn no_two_values_are_chosen(
        acceptors in prop::sample::select(vec![3usize, 5]),
        proposers in prop::collection::vec((0i64..3, 0u8..4), 1..=2),
        choices in prop::collection::vec(any::<u32>(), 0..400),
    ) {
        let mut sim = Sim::new(acceptors, &proposers, false);
        if let Err(violation) = run(&mut sim, &choices) {
            prop_assert!(false, "{}", violation);
        }
    }
}

/// The scheduler is not vacuous: without loss or retries it reaches a decision.
#[test]
fn simulation_reaches_a_decision() {
    for acceptors in [3, 5] {
        let mut sim = Sim::new(acceptors, &[(1, 0), (1, 0)], false);
        // Kind 3 delivers and removes; `pick` walks the network.
        let choices: Vec<u32> = (0..500).map(|i| 3 + 8 * i).collect();
        run(&mut sim, &choices).unwrap();
        assert!(!sim.majority_chosen().is_empty());
        assert!(sim.drivers.iter().any(|d| d.done));
    }
}

/// The agreement check can fail: a driver that hides accepted values from its proposer is
/// caught within a few thousand random schedules.
#[test]
fn simulation_catches_a_proposer_that_ignores_accepted_values() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        // xorshift64: deterministic, so a failure here is reproducible.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as u32
    };
    let caught = (0..5000).any(|_| {
        let mut sim = Sim::new(3, &[(1, 1), (1, 1)], true);
        let choices: Vec<u32> = (0..200).map(|_| next()).collect();
        run(&mut sim, &choices).is_err()
    });
    assert!(caught, "no schedule exposed the broken proposer");
}

// ---------------------------------------------------------------------------------------------
// (c) Ballot::above.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    /// `above(x, p)` is the lowest ballot of `p` that is higher than `x`, for every ballot
    /// acceptors take (`Ballot::is_valid`).
    #[test]
    fn above_is_the_lowest_higher_ballot_of_its_proposer(
        number in prop_oneof![0..=Ballot::MAX_NUMBER, 0i64..3, (Ballot::MAX_NUMBER - 3)..=Ballot::MAX_NUMBER],
        proposer in "[a-c]{0,3}",
        p in "[a-c]{0,3}",
    ) {
        let x = Ballot::new(number, proposer);
        let above = Ballot::above(&x, p.clone());
        prop_assert!(above > x);
        prop_assert_eq!(&above.proposer, &p);
        prop_assert!(above.number - x.number <= 1);
        if above.number > x.number {
            // Same number, same proposer would not be higher.
            prop_assert!(Ballot::new(x.number, p) <= x);
        }
    }
}

/// At the top of the valid range a higher ballot still exists: acceptors refuse numbers
/// above `Ballot::MAX_NUMBER`, so `above` never overflows.
#[test]
fn above_the_highest_valid_number() {
    let x = Ballot::new(Ballot::MAX_NUMBER, "b");
    assert!(x.is_valid());
    assert!(Ballot::above(&x, "a") > x);
    assert!(!Ballot::new(Ballot::MAX_NUMBER + 1, "a").is_valid());
    assert!(!Ballot::new(-1, "a").is_valid());
}

// ---------------------------------------------------------------------------------------------
// (d) One multi-round acceptor with a range promise, arbitrary inputs, driven as the
// extension drives it: a per-round vote applies the range promise first; a range prepare
// looks at the highest per-round promise from its first round on.

const RANGE_ROUNDS: usize = 4;

#[derive(Clone, Debug)]
enum RangeOp {
    PrepareFrom(usize, Ballot),
    Prepare(usize, Ballot),
    Accept(usize, Ballot, Val),
    Batch(usize, Ballot, Vec<Val>),
    Learn(usize, Ballot, Val),
}

fn range_op() -> impl Strategy<Value = RangeOp> {
    let round = 0..RANGE_ROUNDS;
    prop_oneof![
        3 => (0..=RANGE_ROUNDS, ballot()).prop_map(|(f, b)| RangeOp::PrepareFrom(f, b)),
        2 => (round.clone(), ballot()).prop_map(|(r, b)| RangeOp::Prepare(r, b)),
        2 => (round.clone(), ballot(), 0..3u32).prop_map(|(r, b, v)| RangeOp::Accept(r, b, v)),
        3 => (round.clone(), ballot(), prop::collection::vec(0..3u32, 1..=RANGE_ROUNDS))
            .prop_map(|(r, b, mut vs)| {
                vs.truncate(RANGE_ROUNDS - r);
                RangeOp::Batch(r, b, vs)
            }),
        1 => (round, ballot(), 0..3u32).prop_map(|(r, b, v)| RangeOp::Learn(r, b, v)),
    ]
}

/// The promise a round votes under: its own, or the range promise covering it if higher.
fn effective(range: &Option<RangePromise>, round: usize, state: &Acceptor<Val>) -> Option<Ballot> {
    let covering = range
        .as_ref()
        .filter(|r| r.covers(round as i64))
        .map(|r| r.ballot.clone());
    state.promised.clone().max(covering)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// No promise, per round or per range, is ever broken: a round's effective promise never
    /// falls, nothing is accepted or promised below it, a range promise only grows, a batch is
    /// all or nothing, and a decided round never changes.
    #[test]
    fn range_promises_are_never_broken(ops in prop::collection::vec(range_op(), 0..40)) {
        let mut range: Option<RangePromise> = None;
        let mut rounds: Vec<Acceptor<Val>> = vec![Acceptor::default(); RANGE_ROUNDS];
        for op in ops {
            let (range_before, before) = (range.clone(), rounds.clone());
            let eff_before: Vec<_> =
                (0..RANGE_ROUNDS).map(|r| effective(&range, r, &before[r])).collect();
            match &op {
                RangeOp::PrepareFrom(from, b) => {
                    let highest = rounds[*from..].iter().filter_map(|s| s.promised.as_ref()).max();
                    match prepare_from(range.as_ref(), highest, *from as i64, b) {
                        PrepareFrom::Promise(promise) => {
                            for (r, eff) in eff_before.iter().enumerate().skip(*from) {
                                prop_assert!(
                                    eff.as_ref().is_none_or(|p| p <= b),
                                    "promised {} at round {} over {:?}", b, r, eff
                                );
                            }
                            prop_assert_eq!(&promise.ballot, b);
                            prop_assert!(promise.from <= *from as i64);
                            range = Some(promise);
                        }
                        PrepareFrom::Reject { promised } => {
                            prop_assert!(promised > *b);
                            // Either a round asked for, or the range promise: it also covers
                            // rounds beyond those modelled here.
                            let by_range = range_before.as_ref().map(|r| &r.ballot);
                            prop_assert!(
                                by_range == Some(&promised)
                                    || eff_before[*from..].contains(&Some(promised.clone()))
                            );
                        }
                    }
                }
                RangeOp::Prepare(r, b) => {
                    if let Some(range) = &range {
                        range.apply(*r as i64, &mut rounds[*r]);
                    }
                    if let PrepareReply::Promise { .. } = rounds[*r].on_prepare(b) {
                        prop_assert!(eff_before[*r].as_ref().is_none_or(|p| p <= b));
                    }
                }
                RangeOp::Accept(r, b, v) => {
                    if let Some(range) = &range {
                        range.apply(*r as i64, &mut rounds[*r]);
                    }
                    if rounds[*r].on_accept(b, *v) == AcceptReply::Accepted {
                        prop_assert!(eff_before[*r].as_ref().is_none_or(|p| p <= b));
                    }
                }
                RangeOp::Batch(first, b, values) => {
                    let end = first + values.len();
                    let reply =
                        accept_batch(range.as_ref(), *first as i64, &mut rounds[*first..end], b, values.clone());
                    match reply {
                        BatchReply::Voted(replies) => {
                            prop_assert_eq!(replies.len(), values.len());
                            for (i, reply) in replies.iter().enumerate() {
                                let r = first + i;
                                if before[r].chosen {
                                    prop_assert!(matches!(reply, AcceptReply::Chosen(..)));
                                } else {
                                    prop_assert_eq!(reply, &AcceptReply::Accepted);
                                    prop_assert!(eff_before[r].as_ref().is_none_or(|p| p <= b));
                                    prop_assert_eq!(&rounds[r].accepted, &Some((b.clone(), values[i])));
                                }
                            }
                        }
                        BatchReply::Reject { promised } => {
                            prop_assert!(promised > *b);
                            prop_assert_eq!(&rounds, &before, "a refused batch changes nothing");
                        }
                    }
                }
                RangeOp::Learn(r, b, v) => rounds[*r].on_learn(b, *v),
            }
            if let (Some(old), Some(new)) = (&range_before, &range) {
                prop_assert!(new.ballot >= old.ballot && new.from <= old.from);
            }
            for r in 0..RANGE_ROUNDS {
                let eff = effective(&range, r, &rounds[r]);
                prop_assert!(eff >= eff_before[r], "round {} promise lowered by {:?}", r, op);
                if let Some((accepted, _)) = &rounds[r].accepted {
                    if !rounds[r].chosen {
                        prop_assert!(eff.as_ref().is_some_and(|p| accepted <= p));
                    }
                }
                if before[r].chosen {
                    prop_assert_eq!(&rounds[r].accepted, &before[r].accepted);
                }
            }
        }
    }
}
