//! The nemesis: a seeded schedule of faults, applied to a running cluster one step at a time
//! and always healed. A step either strikes a minority of the members, each with one of:
//! crash (SIGKILL of every server process) and restart; pause (SIGSTOP: the node hangs, its
//! connections stay open) and resume; isolation (its links to every other member cut both
//! ways); a mute member (its links to the others cut, theirs to it kept) or a deaf one (the
//! reverse); a slow one (its links delayed) — or splits the group with a bridge. Links are
//! cut and slowed by the proxies (see `proxy`).
use std::fmt;
use std::time::{Duration, Instant};

use cluster::Cluster;

use crate::proxy::Partitions;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What happens to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then a restart when the fault ends.
    Crash,
    /// SIGSTOP, then SIGCONT when the fault ends.
    Pause,
    /// Cut off from the members that are not isolated with it, both ways.
    Isolate,
    /// Its requests to the other members are blackholed; theirs to it pass.
    Mute,
    /// The other members' requests to it are blackholed; its own to them pass.
    Deafen,
    /// Everything on its links to and from the others is held this many milliseconds.
    Slow(u64),
    /// The other members are split into two halves that reach each other only through this
    /// one: every member still has a majority in reach, but not the same one.
    Bridge,
}

/// One fault in the schedule: from `at` for `lasting`, on `members`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub at: Duration,
    pub lasting: Duration,
    pub faults: Vec<(usize, Fault)>,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what: Vec<String> = self
            .faults
            .iter()
            .map(|(node, fault)| format!("{fault:?} node{node}"))
            .collect();
        write!(
            f,
            "at {:.1}s for {:.1}s: {}",
            self.at.as_secs_f64(),
            self.lasting.as_secs_f64(),
            what.join(", ")
        )
    }
}

/// The faults of a run of `duration` on `nodes` members, from `seed`: one step at a time,
/// each on at most a minority, with quiet gaps between them.
pub fn schedule(seed: u64, nodes: usize, duration: Duration) -> Vec<Step> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7300);
    let minority = (nodes - 1) / 2;
    let mut steps = Vec::new();
    let mut at = Duration::from_millis(rng.random_range(300..1000));
    while at < duration {
        let lasting = Duration::from_millis(rng.random_range(400..2500));
        let mut faults = Vec::new();
        if rng.random_range(0..7) == 0 {
            faults.push((rng.random_range(0..nodes), Fault::Bridge));
        } else {
            let count = rng.random_range(1..=minority.max(1));
            let mut members: Vec<usize> = (0..nodes).collect();
            for _ in 0..count {
                let node = members.remove(rng.random_range(0..members.len()));
                let fault = match rng.random_range(0..6) {
                    0 => Fault::Crash,
                    1 => Fault::Pause,
                    2 => Fault::Isolate,
                    3 => Fault::Mute,
                    4 => Fault::Deafen,
                    _ => Fault::Slow(rng.random_range(20..400)),
                };
                faults.push((node, fault));
            }
        }
        steps.push(Step {
            at,
            lasting,
            faults,
        });
        at += lasting + Duration::from_millis(rng.random_range(300..1500));
    }
    steps
}

/// Applies `steps` to `cluster`, measured from `start`, healing each before the next; stops
/// at `deadline` with every member healed. Returns the steps applied.
pub fn run(
    cluster: &Cluster,
    partitions: &Partitions,
    steps: &[Step],
    start: Instant,
    deadline: Instant,
) -> Vec<String> {
    let mut applied = Vec::new();
    for step in steps {
        let begin = start + step.at;
        if begin >= deadline {
            break;
        }
        sleep_until(begin);
        let members = cluster.nodes().len();
        let isolated: Vec<usize> = step
            .faults
            .iter()
            .filter(|(_, f)| *f == Fault::Isolate)
            .map(|(node, _)| *node)
            .collect();
        if !isolated.is_empty() {
            partitions.isolate(&isolated, members);
        }
        for &(node, fault) in &step.faults {
            let result = match fault {
                Fault::Crash => cluster.kill(node),
                Fault::Pause => cluster.pause(node),
                link_fault => {
                    cut(partitions, node, link_fault, members);
                    Ok(())
                }
            };
            if let Err(e) = result {
                applied.push(format!("{step}: failed to inject: {e}"));
            }
        }
        applied.push(step.to_string());
        sleep_until((begin + step.lasting).min(deadline));
        partitions.heal();
        heal(cluster, &step.faults);
    }
    applied
}

/// Applies a fault on the links of `node` (isolations are applied together, by the caller).
fn cut(partitions: &Partitions, node: usize, fault: Fault, members: usize) {
    match fault {
        Fault::Mute => partitions.mute(node, members),
        Fault::Deafen => partitions.deafen(node, members),
        Fault::Slow(ms) => partitions.slow(node, Duration::from_millis(ms), members),
        Fault::Bridge => partitions.bridge(node, members),
        Fault::Crash | Fault::Pause | Fault::Isolate => {}
    }
}

/// Undoes `faults`; a failure to restart is retried once, then reported by a panic (the run
/// cannot be judged without its members).
pub fn heal(cluster: &Cluster, faults: &[(usize, Fault)]) {
    for &(node, fault) in faults {
        match fault {
            Fault::Pause => cluster.resume(node).expect("resume a paused member"),
            Fault::Isolate | Fault::Mute | Fault::Deafen | Fault::Slow(_) | Fault::Bridge => {}
            Fault::Crash => {
                if cluster.restart(node).is_err() {
                    std::thread::sleep(Duration::from_millis(500));
                    cluster.restart(node).expect("restart a crashed member");
                }
            }
        }
    }
}

fn sleep_until(when: Instant) {
    let now = Instant::now();
    if when > now {
        std::thread::sleep(when - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let a = schedule(7, 5, Duration::from_secs(30));
        assert_eq!(a, schedule(7, 5, Duration::from_secs(30)));
        assert_ne!(a, schedule(8, 5, Duration::from_secs(30)));
    }

    #[test]
    fn faults_hit_a_minority_one_step_at_a_time() {
        for seed in 0..50 {
            let steps = schedule(seed, 5, Duration::from_secs(60));
            assert!(!steps.is_empty());
            let mut end = Duration::ZERO;
            for step in &steps {
                assert!(!step.faults.is_empty() && step.faults.len() <= 2, "{step}");
                assert!(step.at >= end, "steps overlap: {step}");
                end = step.at + step.lasting;
            }
            let three = schedule(seed, 3, Duration::from_secs(60));
            assert!(three.iter().all(|s| s.faults.len() == 1));
        }
    }

    #[test]
    fn a_bridge_is_a_step_of_its_own_and_every_fault_is_scheduled() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..50 {
            for step in schedule(seed, 5, Duration::from_secs(60)) {
                for &(_, fault) in &step.faults {
                    if fault == Fault::Bridge {
                        assert_eq!(step.faults.len(), 1, "{step}");
                    }
                    seen.insert(std::mem::discriminant(&fault));
                }
            }
        }
        assert_eq!(seen.len(), 7, "some kind of fault is never scheduled");
    }
}
