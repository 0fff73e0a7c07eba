//! Short seeded fault-injection runs (crates/chaos): crashes and pauses of a minority while
//! clients on every member use registers, a set and the raw log; no anomaly may show.
//! `cargo run -p chaos --bin pg_paxos_soak` runs the long version.
use std::time::Duration;

use chaos::{run, Config};

fn seeded_run(seed: u64, nodes: usize) {
    let config = Config {
        seed,
        nodes,
        duration: Duration::from_secs(15),
        clients_per_node: 2,
        keys: 6,
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
    seeded_run(1, 3);
}

#[test]
fn seed_2_on_3_nodes() {
    seeded_run(2, 3);
}

#[test]
fn seed_3_on_5_nodes() {
    seeded_run(3, 5);
}
