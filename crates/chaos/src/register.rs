//! Linearizability of registers with read, write and compare-and-set, one register per key.
//!
//! Linearizability is compositional: a history is linearizable when each key's part is, so
//! each key is checked on its own. The search is Wing & Gong's, with the memo of Lowe and of
//! Porcupine: walk the invocations and returns in real-time order; at an invocation, try to
//! take that operation effect now (if the register allows its result) unless the same set of
//! operations already led to the same register value; at the return of an operation not yet
//! taken, undo the last choice. An operation whose outcome is unknown (a timeout, 40003)
//! returns at the end of time with any result: it may take effect at any point after its
//! invocation, or, placed after everything, never be observed.
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

/// An operation on one register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Read,
    Write(i64),
    /// Sets `new` if the register holds `expected`.
    Cas {
        expected: i64,
        new: i64,
    },
}

/// What an operation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ret {
    Read(i64),
    Written,
    Swapped,
    NotSwapped,
}

/// The register's sequential behaviour: the value after `op`, if `op` could return `ret`
/// on a register holding `value` (`None` for `ret`: any result).
fn step(value: i64, op: Op, ret: Option<Ret>) -> Option<i64> {
    let (next, result) = match op {
        Op::Read => (value, Ret::Read(value)),
        Op::Write(v) => (v, Ret::Written),
        Op::Cas { expected, new } if value == expected => (new, Ret::Swapped),
        Op::Cas { .. } => (value, Ret::NotSwapped),
    };
    match ret {
        Some(ret) if ret != result => None,
        _ => Some(next),
    }
}

/// One operation of a history: who ran it on which key, when it was invoked, and when and
/// how it returned (`None`: unknown outcome).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The logical client; a client whose operation's outcome is unknown never runs another.
    pub client: u64,
    pub key: i64,
    pub op: Op,
    pub invoked: Duration,
    pub returned: Option<(Duration, Ret)>,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |d: Duration| format!("{:.3}s", d.as_secs_f64());
        match &self.returned {
            Some((t, ret)) => write!(
                f,
                "client {} key {}: {:?} from {} to {} -> {:?}",
                self.client,
                self.key,
                self.op,
                at(self.invoked),
                at(*t),
                ret
            ),
            None => write!(
                f,
                "client {} key {}: {:?} from {} -> unknown",
                self.client,
                self.key,
                self.op,
                at(self.invoked)
            ),
        }
    }
}

/// A key whose history is not linearizable, with the smallest part of it (found by removing
/// operations one at a time) that still is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub key: i64,
    /// The search gave up: neither shown linearizable nor not.
    pub undecided: bool,
    pub excerpt: Vec<Event>,
    /// The operations of the history that wrote a value the excerpt reads, when the excerpt
    /// left them out: a lone read of "a value nobody wrote" says little without them.
    pub writers: Vec<Event>,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {} is not linearizable; smallest failing excerpt:",
            self.key
        )?;
        for event in &self.excerpt {
            writeln!(f, "  {event}")?;
        }
        if !self.writers.is_empty() {
            writeln!(f, "writers of the values read there, left out of it:")?;
            for event in &self.writers {
                writeln!(f, "  {event}")?;
            }
        }
        Ok(())
    }
}

/// Checks every key of `history`; returns the keys that are not linearizable, or that the
/// search gave up on (as anomalies too: a run must not pass unchecked).
pub fn check(history: &[Event]) -> Vec<Anomaly> {
    let mut by_key: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    for event in history {
        by_key.entry(event.key).or_default().push(event.clone());
    }
    by_key
        .into_iter()
        .filter_map(|(key, events)| match linearizable(&events) {
            Some(true) => None,
            Some(false) => {
                let excerpt = shrink(events.clone());
                let writers = writers_left_out(&excerpt, &events);
                Some(Anomaly {
                    key,
                    undecided: false,
                    excerpt,
                    writers,
                })
            }
            None => Some(Anomaly {
                key,
                undecided: true,
                excerpt: events,
                writers: Vec::new(),
            }),
        })
        .collect()
}

/// The value an operation may leave in the register, other than the one it found.
fn written(op: Op) -> Option<i64> {
    match op {
        Op::Read => None,
        Op::Write(v) | Op::Cas { new: v, .. } => Some(v),
    }
}

/// The events of `history` that write a value some read of `excerpt` returned, and that
/// `excerpt` does not hold.
fn writers_left_out(excerpt: &[Event], history: &[Event]) -> Vec<Event> {
    let read: HashSet<i64> = excerpt
        .iter()
        .filter_map(|e| match e.returned {
            Some((_, Ret::Read(v))) => Some(v),
            _ => None,
        })
        .collect();
    history
        .iter()
        .filter(|e| written(e.op).is_some_and(|v| read.contains(&v)) && !excerpt.contains(e))
        .cloned()
        .collect()
}

/// How many search steps a key may take before the checker gives up on it.
const SEARCH_LIMIT: u64 = 50_000_000;

/// Whether one key's events are linearizable, from a register holding 0; `None` when the
/// search gave up (every unknown outcome doubles the ways to place operations).
pub fn linearizable(events: &[Event]) -> Option<bool> {
    // Invocations and returns in real-time order; at equal times invocations come first:
    // operations that merely touch are taken as concurrent (the clocks cannot tell), and an
    // operation's own invocation precedes its return. Unknown outcomes return after
    // everything.
    let mut points: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        points.push((event.invoked, true, i));
        let end = event.returned.map_or(Duration::MAX, |(at, _)| at);
        points.push((end, false, i));
    }
    points.sort_by_key(|&(at, call, i)| (at, !call, i));
    let mut list = Points::new(points.into_iter().map(|(_, call, i)| (call, i)).collect());

    let words = events.len().div_ceil(64);
    let mut taken = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, i64)> = HashSet::new();
    // The operations taken so far: (their invocation's point, the value before them).
    let mut stack: Vec<(usize, i64)> = Vec::new();
    let mut value = 0i64;
    let mut at = list.head;
    let mut steps = 0u64;
    while !list.is_empty() {
        steps += 1;
        if steps > SEARCH_LIMIT {
            return None;
        }
        let Some((call, i)) = list.get(at) else {
            return Some(false);
        };
        if !call {
            // An operation returned before it could take effect: undo the last choice.
            let Some((call_point, before)) = stack.pop() else {
                return Some(false);
            };
            let undone = list.points[call_point].1;
            taken[undone / 64] &= !(1 << (undone % 64));
            value = before;
            list.relink(list.return_of[undone]);
            list.relink(call_point);
            at = list.next[call_point];
            continue;
        }
        let event = &events[i];
        let after = step(value, event.op, event.returned.map(|(_, ret)| ret));
        if let Some(after) = after {
            taken[i / 64] |= 1 << (i % 64);
            if seen.insert((taken.clone(), after)) {
                stack.push((at, value));
                value = after;
                list.unlink(at);
                list.unlink(list.return_of[i]);
                at = list.head;
                continue;
            }
            taken[i / 64] &= !(1 << (i % 64));
        }
        at = list.next[at];
    }
    Some(true)
}

/// The invocation and return points still in play, as a doubly linked list in time order.
struct Points {
    points: Vec<(bool, usize)>,
    next: Vec<usize>,
    prev: Vec<Option<usize>>,
    head: usize,
    /// The return point of each operation.
    return_of: Vec<usize>,
}

impl Points {
    fn new(points: Vec<(bool, usize)>) -> Self {
        let n = points.len();
        let mut return_of = vec![0; n / 2];
        for (p, &(call, i)) in points.iter().enumerate() {
            if !call {
                return_of[i] = p;
            }
        }
        Points {
            next: (1..=n).collect(),
            prev: (0..n).map(|p| p.checked_sub(1)).collect(),
            head: 0,
            return_of,
            points,
        }
    }

    fn is_empty(&self) -> bool {
        self.head >= self.points.len()
    }

    fn get(&self, p: usize) -> Option<(bool, usize)> {
        self.points.get(p).copied()
    }

    fn unlink(&mut self, p: usize) {
        match self.prev[p] {
            None => self.head = self.next[p],
            Some(before) => self.next[before] = self.next[p],
        }
        if let Some(after) = self.next.get(p).copied().filter(|&a| a < self.points.len()) {
            self.prev[after] = self.prev[p];
        }
    }

    /// Undoes `unlink(p)`; links are restored in the reverse order of their removal.
    fn relink(&mut self, p: usize) {
        match self.prev[p] {
            None => self.head = p,
            Some(before) => self.next[before] = p,
        }
        if let Some(after) = self.next.get(p).copied().filter(|&a| a < self.points.len()) {
            self.prev[after] = Some(p);
        }
    }
}

/// Removes operations while the rest stays non-linearizable.
fn shrink(mut events: Vec<Event>) -> Vec<Event> {
    let mut i = 0;
    while i < events.len() {
        let mut without = events.clone();
        without.remove(i);
        if linearizable(&without) == Some(false) {
            events = without;
        } else {
            i += 1;
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn done(client: u64, op: Op, from: u64, to: u64, ret: Ret) -> Event {
        Event {
            client,
            key: 1,
            op,
            invoked: ms(from),
            returned: Some((ms(to), ret)),
        }
    }

    fn unknown(client: u64, op: Op, from: u64) -> Event {
        Event {
            client,
            key: 1,
            op,
            invoked: ms(from),
            returned: None,
        }
    }

    #[test]
    fn a_sequential_history_that_follows_the_register_is_linearizable() {
        let history = [
            done(1, Op::Write(5), 0, 1, Ret::Written),
            done(2, Op::Read, 2, 3, Ret::Read(5)),
            done(
                1,
                Op::Cas {
                    expected: 5,
                    new: 6,
                },
                4,
                5,
                Ret::Swapped,
            ),
            done(
                2,
                Op::Cas {
                    expected: 5,
                    new: 7,
                },
                6,
                7,
                Ret::NotSwapped,
            ),
            done(3, Op::Read, 8, 9, Ret::Read(6)),
        ];
        assert!(check(&history).is_empty());
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        let history = [
            done(1, Op::Write(1), 0, 10, Ret::Written),
            done(2, Op::Read, 1, 9, Ret::Read(1)),
            done(3, Op::Read, 2, 8, Ret::Read(0)),
        ];
        assert!(check(&history).is_empty());
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_caught() {
        let history = [
            done(1, Op::Write(1), 0, 1, Ret::Written),
            done(2, Op::Read, 2, 3, Ret::Read(0)),
        ];
        let anomalies = check(&history);
        assert_eq!(anomalies.len(), 1);
        assert_eq!(anomalies[0].excerpt.len(), 2);
    }

    #[test]
    fn two_successful_swaps_from_the_same_value_are_caught() {
        let history = [
            done(
                1,
                Op::Cas {
                    expected: 0,
                    new: 1,
                },
                0,
                5,
                Ret::Swapped,
            ),
            done(
                2,
                Op::Cas {
                    expected: 0,
                    new: 2,
                },
                1,
                6,
                Ret::Swapped,
            ),
            done(3, Op::Read, 7, 8, Ret::Read(2)),
        ];
        let anomalies = check(&history);
        assert_eq!(anomalies.len(), 1, "{anomalies:?}");
        assert_eq!(
            anomalies[0].excerpt.len(),
            2,
            "the read is not needed to show it"
        );
    }

    #[test]
    fn a_read_that_goes_back_in_time_is_caught() {
        let history = [
            done(1, Op::Write(1), 0, 1, Ret::Written),
            done(1, Op::Write(2), 2, 10, Ret::Written),
            done(2, Op::Read, 3, 4, Ret::Read(2)),
            done(3, Op::Read, 5, 6, Ret::Read(1)),
        ];
        assert_eq!(check(&history).len(), 1);
    }

    #[test]
    fn an_unknown_write_may_or_may_not_have_happened() {
        let took_effect = [
            unknown(1, Op::Write(3), 0),
            done(2, Op::Read, 5, 6, Ret::Read(3)),
            done(2, Op::Read, 7, 8, Ret::Read(3)),
        ];
        assert!(check(&took_effect).is_empty());
        let did_not = [
            unknown(1, Op::Write(3), 0),
            done(2, Op::Read, 5, 6, Ret::Read(0)),
        ];
        assert!(check(&did_not).is_empty());
        let flip_flop = [
            unknown(1, Op::Write(3), 0),
            done(2, Op::Read, 5, 6, Ret::Read(3)),
            done(2, Op::Read, 7, 8, Ret::Read(0)),
        ];
        assert_eq!(
            check(&flip_flop).len(),
            1,
            "once seen, a write cannot vanish"
        );
    }

    #[test]
    fn a_value_nobody_wrote_is_caught() {
        let history = [done(1, Op::Read, 0, 1, Ret::Read(42))];
        let anomalies = check(&history);
        assert_eq!(anomalies.len(), 1);
        assert!(anomalies[0].writers.is_empty());
    }

    #[test]
    fn a_read_from_the_future_names_the_write_it_saw() {
        let write = done(
            2,
            Op::Cas {
                expected: 0,
                new: 7,
            },
            5,
            6,
            Ret::NotSwapped,
        );
        let history = [
            done(1, Op::Read, 0, 1, Ret::Read(7)),
            write.clone(),
            done(3, Op::Write(8), 2, 3, Ret::Written),
        ];
        let anomalies = check(&history);
        assert_eq!(anomalies.len(), 1);
        assert_eq!(
            anomalies[0].excerpt,
            [history[0].clone()],
            "the lone read is the smallest excerpt"
        );
        assert_eq!(anomalies[0].writers, [write]);
        assert!(anomalies[0]
            .to_string()
            .contains("Cas { expected: 0, new: 7 }"));
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut other = done(1, Op::Write(9), 0, 1, Ret::Written);
        other.key = 2;
        let history = [other, done(2, Op::Read, 2, 3, Ret::Read(0))];
        assert!(
            check(&history).is_empty(),
            "key 1 never saw the write to key 2"
        );
    }

    /// A long history made from a real sequential run: each operation takes effect at a
    /// distinct instant inside its own interval, and intervals overlap a lot.
    fn generated(seed: u64, operations: usize) -> Vec<Event> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut value = 0;
        let mut events = Vec::new();
        for k in 0..operations {
            let at = 1000 + 10 * k as u64;
            let op = match rng.random_range(0..3) {
                0 => Op::Read,
                1 => Op::Write(k as i64),
                _ => Op::Cas {
                    expected: if rng.random_bool(0.5) { value } else { -1 },
                    new: k as i64,
                },
            };
            let ret = {
                let after = step(value, op, None).unwrap();
                let ret = match op {
                    Op::Read => Ret::Read(value),
                    Op::Write(_) => Ret::Written,
                    Op::Cas { expected, .. } if expected == value => Ret::Swapped,
                    Op::Cas { .. } => Ret::NotSwapped,
                };
                value = after;
                ret
            };
            let invoked = ms(at - rng.random_range(0..40));
            let unknown = rng.random_bool(0.005) && !matches!(op, Op::Read);
            events.push(Event {
                client: k as u64,
                key: 1,
                op,
                invoked,
                returned: (!unknown).then(|| (ms(at + rng.random_range(0..40)), ret)),
            });
        }
        events
    }

    #[test]
    fn long_concurrent_histories_are_judged_quickly() {
        for seed in 0..2 {
            let history = generated(seed, 1500);
            let started = std::time::Instant::now();
            let found = check(&history);
            assert!(
                found.is_empty(),
                "seed {seed}: {}",
                found
                    .iter()
                    .map(|a| format!("undecided={} len={}", a.undecided, a.excerpt.len()))
                    .collect::<Vec<_>>()
                    .join(";")
            );
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "seed {seed} took long"
            );
        }
    }

    #[test]
    fn one_wrong_read_in_a_long_history_is_caught() {
        let mut history = generated(11, 2000);
        let read = history
            .iter()
            .rposition(|e| matches!(e.returned, Some((_, Ret::Read(_)))))
            .unwrap();
        if let Some((at, Ret::Read(v))) = history[read].returned {
            history[read].returned = Some((at, Ret::Read(v + 1_000_000)));
        }
        assert_eq!(check(&history).len(), 1);
    }

    /// Every order of the operations that respects real time, tried one by one.
    fn brute_force(events: &[Event]) -> bool {
        fn go(events: &[Event], done: &mut Vec<bool>, value: i64) -> bool {
            if done.iter().all(|d| *d) {
                return true;
            }
            for i in 0..events.len() {
                if done[i] {
                    continue;
                }
                // i may go next only if no pending operation returned before i was invoked.
                let blocked = (0..events.len()).any(|j| {
                    !done[j]
                        && j != i
                        && matches!(events[j].returned, Some((r, _)) if r < events[i].invoked)
                });
                if blocked {
                    continue;
                }
                if let Some(after) = step(value, events[i].op, events[i].returned.map(|(_, r)| r)) {
                    done[i] = true;
                    if go(events, done, after) {
                        return true;
                    }
                    done[i] = false;
                }
            }
            false
        }
        go(events, &mut vec![false; events.len()], 0)
    }

    #[test]
    fn the_search_agrees_with_brute_force_on_small_histories() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for case in 0..1500 {
            let n = rng.random_range(1..7);
            let events: Vec<Event> = (0..n)
                .map(|c| {
                    let op = match rng.random_range(0..3) {
                        0 => Op::Read,
                        1 => Op::Write(rng.random_range(0..3)),
                        _ => Op::Cas {
                            expected: rng.random_range(0..3),
                            new: rng.random_range(0..3),
                        },
                    };
                    let ret = match op {
                        Op::Read => Ret::Read(rng.random_range(0..3)),
                        Op::Write(_) => Ret::Written,
                        _ => {
                            if rng.random_bool(0.5) {
                                Ret::Swapped
                            } else {
                                Ret::NotSwapped
                            }
                        }
                    };
                    let from = rng.random_range(0..10);
                    let to = from + rng.random_range(0..10);
                    let unknown = rng.random_bool(0.2) && op != Op::Read;
                    Event {
                        client: c,
                        key: 1,
                        op,
                        invoked: ms(from),
                        returned: (!unknown).then(|| (ms(to), ret)),
                    }
                })
                .collect();
            assert_eq!(
                linearizable(&events),
                Some(brute_force(&events)),
                "case {case}: {events:#?}"
            );
        }
    }
}
