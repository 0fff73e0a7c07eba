//! Agreement and the Multi-Paxos log on real 3-node groups, under concurrency.
mod common;

use std::collections::{BTreeMap, HashSet};

use common::*;
use futures_util::future::join_all;

/// Three nodes call paxos() for the same 50 rounds at once, each with its own value: for
/// every round all calls return the same value, and it is one of the proposals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_paxos_calls_agree_on_every_round() {
    let cluster = start("agree", 3);
    let clients = form_group(&cluster).await;
    let first = read_log(&clients[0]).await.len() as i64;
    let rounds = first..first + 50;
    let runs = clients.iter().enumerate().map(|(node, client)| {
        let rounds = rounds.clone();
        async move {
            let mut seen = Vec::new();
            for round in rounds {
                let mine = format!("node{node}-round{round}");
                let row = client
                    .query_one(
                        "SELECT accepted_value, value_changed FROM paxos('p', $1, $2, $3)",
                        &[&GROUP, &round, &mine],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("node {node} round {round}: {e}"));
                let chosen: Option<String> = row.get(0);
                let changed: bool = row.get(1);
                assert_eq!(changed, chosen.as_deref() != Some(mine.as_str()));
                seen.push((round, chosen));
            }
            seen
        }
    });
    let results = join_all(runs).await;
    let mut chosen: BTreeMap<i64, String> = BTreeMap::new();
    for seen in &results {
        for (round, value) in seen {
            let value = value.clone().expect("a proposed value is never NULL");
            let prefix = format!("-round{round}");
            assert!(
                value.starts_with("node") && value.ends_with(&prefix),
                "round {round} chose {value}, never proposed for it"
            );
            if let Some(other) = chosen.insert(*round, value.clone()) {
                assert_eq!(other, value, "two values chosen for round {round}");
            }
        }
    }
    assert_eq!(chosen.len(), 50);
    let logs = join_all(clients.iter().map(applied_log)).await;
    assert_same_gap_free_logs(&logs);
}

/// 300 appends spread over three nodes, two sessions each: every value lands exactly once,
/// at the round its append returned, and every node holds the same gap-free log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_land_exactly_once_in_one_gap_free_log() {
    let cluster = start("append", 3);
    let clients = form_group(&cluster).await;
    let mut sessions = Vec::new();
    for node in 0..3 {
        for _ in 0..2 {
            sessions.push((node, connect(&cluster, node).await));
        }
    }
    let writers = sessions
        .iter()
        .enumerate()
        .map(|(s, (node, client))| async move {
            let mut placed = Vec::new();
            for i in 0..50 {
                let value = format!("n{node}-s{s}-{i}");
                let round = append(client, &value)
                    .await
                    .unwrap_or_else(|e| panic!("{value}: {e}"));
                placed.push((round, value));
            }
            placed
        });
    let placed: Vec<(i64, String)> = join_all(writers).await.into_iter().flatten().collect();
    assert_eq!(placed.len(), 300);
    let logs = join_all(clients.iter().map(applied_log)).await;
    assert_same_gap_free_logs(&logs);
    let values: Vec<&LogEntry> = logs[0].iter().filter(|e| e.kind == "value").collect();
    assert_eq!(
        values.len(),
        300,
        "every append appears once, nothing else was appended"
    );
    let distinct: HashSet<&str> = values.iter().filter_map(|e| e.value.as_deref()).collect();
    assert_eq!(distinct.len(), 300, "no value appears twice");
    for (round, value) in &placed {
        assert_eq!(
            logs[0][*round as usize].value.as_deref(),
            Some(value.as_str()),
            "append returned round {round}"
        );
    }
}

/// A member that leaves stops voting after its leave round; the others go on as a group of
/// two, history keeps the old membership, and leaving again is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_leaves_and_the_rest_go_on() {
    let cluster = start("leave", 3);
    let clients = form_group(&cluster).await;
    append(&clients[0], "before").await.unwrap();
    let left: i64 = clients[2]
        .query_one("SELECT paxos_leave_group($1)", &[&GROUP])
        .await
        .expect("leave")
        .get(0);
    let groups: i64 = clients[2]
        .query_one("SELECT count(*) FROM pgp_metadata.\"group\"", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(groups, 0, "the node that left keeps nothing of the group");
    let again = clients[2]
        .query_one("SELECT paxos_leave_group($1)", &[&GROUP])
        .await
        .expect_err("leaving twice");
    assert_eq!(again.as_db_error().unwrap().code().code(), "42704");

    // Two members remain: both are needed now, and the third is no longer asked.
    cluster.kill(2).expect("kill the node that left");
    let round = append(&clients[1], "after")
        .await
        .expect("append without the node that left");
    assert!(round > left);
    // Members are derived from the log a node has learned: bring node 0 up to date first.
    let logs = futures_util::future::join_all(clients[..2].iter().map(applied_log)).await;
    assert_same_gap_free_logs(&logs);
    assert_eq!(logs[0][left as usize].kind, "leave");
    let hosts: Vec<(String, i64, Option<i64>)> = clients[0]
        .query(
            "SELECT connection, min_round, max_round FROM pgp_metadata.host ORDER BY min_round",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(hosts.len(), 3, "history keeps the member that left");
    assert_eq!(hosts[2].2, Some(left), "it voted up to its leave round");
}

/// Appends made at once on one node go out in batches: one acceptor transaction votes on
/// several rounds (rows written by one transaction share its xmin), and each value still
/// lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_on_one_node_are_batched() {
    let cluster = start("batch", 3);
    form_group(&cluster).await;
    // Node 1 leads after forming (node 2 joined through it).
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(connect(&cluster, 1).await);
    }
    let writers = sessions.iter().enumerate().map(|(s, client)| async move {
        for i in 0..25 {
            append(client, &format!("s{s}-{i}")).await.expect("append");
        }
    });
    futures_util::future::join_all(writers).await;
    let follower = connect(&cluster, 0).await;
    let log = applied_log(&follower).await;
    let values: Vec<_> = log.iter().filter_map(|e| e.value.clone()).collect();
    for s in 0..8 {
        for i in 0..25 {
            let value = format!("s{s}-{i}");
            assert_eq!(values.iter().filter(|v| **v == value).count(), 1, "{value}");
        }
    }
    // On a member that did not propose, rounds written by one transaction were voted on (or
    // learned) together.
    let shared: i64 = follower
        .query_one(
            "SELECT count(*) FROM (SELECT xmin::text FROM pgp_metadata.round \
             WHERE value_kind = 'value' GROUP BY 1 HAVING count(*) > 1) batches",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(shared > 0, "no two rounds were voted on in one transaction");
}
