//! The nemesis: a seeded schedule of faults on a minority of the members, applied to a
//! running cluster and always healed. Faults: crash (SIGKILL of every server process) and
//! restart; pause (SIGSTOP: the node hangs, its connections stay open) and resume; isolation
//! (the member's links to every other member are cut both ways, see `proxy`); and mixes of
//! them on different members.
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
    /// Cut off from the members that are not isolated with it, both ways, until the fault
    /// ends.
    Isolate,
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
        let count = rng.random_range(1..=minority.max(1));
        let mut members: Vec<usize> = (0..nodes).collect();
        let mut faults = Vec::new();
        for _ in 0..count {
            let node = members.remove(rng.random_range(0..members.len()));
            let fault = match rng.random_range(0..3) {
                0 => Fault::Crash,
                1 => Fault::Pause,
                _ => Fault::Isolate,
            };
            faults.push((node, fault));
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
        let isolated: Vec<usize> = step
            .faults
            .iter()
            .filter(|(_, f)| *f == Fault::Isolate)
            .map(|(node, _)| *node)
            .collect();
        if !isolated.is_empty() {
            partitions.isolate(&isolated, cluster.nodes().len());
        }
        for &(node, fault) in &step.faults {
            let result = match fault {
                Fault::Crash => cluster.kill(node),
                Fault::Pause => cluster.pause(node),
                Fault::Isolate => Ok(()),
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

/// Undoes `faults`; a failure to restart is retried once, then reported by a panic (the run
/// cannot be judged without its members).
pub fn heal(cluster: &Cluster, faults: &[(usize, Fault)]) {
    for &(node, fault) in faults {
        match fault {
            Fault::Pause => cluster.resume(node).expect("resume a paused member"),
            Fault::Isolate => {}
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
}
