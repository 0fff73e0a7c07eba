//! Short seeded fault-injection runs (crates/chaos): crashes, pauses, cut and slow links and
//! bridges while clients on every member use registers, a set and the raw log; no anomaly
//! may show.
//! `cargo run -p chaos --bin pg_paxos_soak` runs the long version.
use std::time::Duration;

use chaos::nemesis::{schedule, Fault};
use chaos::{run, Config};

const SEEDS: [(u64, usize); 3] = [(1, 3), (2, 3), (3, 5)];
const DURATION: Duration = Duration::from_secs(15);

fn seeded_run(seed: u64, nodes: usize) {
    seeded_run_with(seed, nodes, &[]);
}

fn seeded_run_with(seed: u64, nodes: usize, settings: &[&str]) {
    let config = Config {
        seed,
        nodes,
        duration: DURATION,
        clients_per_node: 2,
        keys: 6,
        settings: settings.iter().map(|s| s.to_string()).collect(),
    };
    let report = run(&format!("chaos{seed}"), &config)
        .unwrap_or_else(|e| panic!("seed {seed} on {nodes} nodes could not run: {e}"));
    println!("{report}");
    assert!(report.anomalies.is_empty(), "{report}");
    assert!(!report.faults.is_empty(), "no fault was injected: {report}");
    assert!(
        report.operations >= 50,
        "too few operations to judge: {report}"
    );
}

#[test]
fn seed_1_on_3_nodes() {
    let (seed, nodes) = SEEDS[0];
    seeded_run(seed, nodes);
}

#[test]
fn seed_2_on_3_nodes() {
    let (seed, nodes) = SEEDS[1];
    seeded_run(seed, nodes);
}

#[test]
fn seed_3_on_5_nodes() {
    let (seed, nodes) = SEEDS[2];
    seeded_run(seed, nodes);
}

/// Seed 1's faults with two batches in flight on the leading member.
#[test]
fn seed_1_on_3_nodes_pipelined() {
    let (seed, nodes) = SEEDS[0];
    seeded_run_with(seed, nodes, &["pg_paxos.pipeline_depth = 2"]);
}

/// Seed 2's faults with leader leases: strong reads on the leading member are served on
/// its lease, through pauses, partitions and crashes of the leader.
#[test]
fn seed_2_on_3_nodes_leased() {
    let (seed, nodes) = SEEDS[1];
    seeded_run_with(seed, nodes, &["pg_paxos.lease_duration = '1s'"]);
}

#[test]
fn the_seeds_use_every_kind_of_fault() {
    let mut kinds: Vec<String> = SEEDS
        .iter()
        .flat_map(|&(seed, nodes)| schedule(seed, nodes, DURATION))
        .filter(|step| step.at < DURATION)
        .flat_map(|step| step.faults)
        .map(|(_, fault)| match fault {
            Fault::Slow(_) => "Slow".to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        ["Bridge", "Crash", "Deafen", "Isolate", "Mute", "Pause", "Slow"]
    );
}
