//! The status views: `pgp_metadata.paxos_group_status` and `paxos_member_status`, read by a
//! monitoring role (`pg_monitor`), on a group that appends, replicates, fails a write and
//! loses a member.
mod common;

use common::*;
use tokio_postgres::Client;

/// This member's row of the group view, as (role, applied_round, appends, batches,
/// leadership_changes, apply_errors).
async fn group_row(watcher: &Client) -> (String, i64, i64, i64, i64, i64) {
    let row = watcher
        .query_one(
            "SELECT role, applied_round, appends, batches, leadership_changes, apply_errors \
             FROM pgp_metadata.paxos_group_status WHERE group_id = $1",
            &[&GROUP],
        )
        .await
        .expect("the group view");
    (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    )
}

async fn watcher_on(cluster: &cluster::Cluster, node: usize) -> Client {
    cluster
        .node(node)
        .connect_as("watcher")
        .await
        .expect("the monitoring role connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitoring_role_reads_the_group_and_its_members() {
    let cluster = start("status", 3);
    let clients = form_group(&cluster).await;
    for client in &clients {
        client
            .batch_execute(
                "CREATE ROLE watcher LOGIN IN ROLE pg_monitor; \
                 CREATE ROLE nobody LOGIN; \
                 CREATE TABLE kv (k int PRIMARY KEY, v text)",
            )
            .await
            .unwrap();
    }
    replicate(&clients[0], "kv").await.expect("replicating kv");
    for (i, client) in clients.iter().enumerate() {
        for n in 0..3 {
            append(client, &format!("{i}.{n}")).await.expect("append");
        }
        client
            .execute("INSERT INTO kv VALUES ($1, 'x')", &[&(i as i32)])
            .await
            .expect("a replicated write");
    }
    // A write every member refuses alike: its author gets the error, the others skip it.
    let duplicate = clients[1]
        .execute("INSERT INTO kv VALUES (0, 'again')", &[])
        .await;
    assert_eq!(sqlstate(&duplicate).as_deref(), Some("23505"));
    let highest = max_group_round(&clients[0]).await;
    for client in &clients {
        apply_all(client).await;
    }

    let mut leaders = Vec::new();
    for i in 0..3 {
        let watcher = watcher_on(&cluster, i).await;
        let (role, applied, appends, batches, changes, apply_errors) = group_row(&watcher).await;
        assert!(applied >= highest, "node {i} applied through {applied}");
        // Three appends and one write chosen from each member; the refused write too.
        let own = if i == 1 { 5 } else { 4 } + if i == 0 { 1 } else { 0 };
        assert!(
            appends >= own,
            "node {i} counted {appends} appends, made {own}"
        );
        if role == "leader" {
            leaders.push(i);
            assert!(
                batches > 0 && changes > 0,
                "the leader sent batches under its ballot"
            );
        } else {
            assert_eq!(role, "follower");
        }
        // The refused write failed alike on the members that did not write it.
        if i != 1 {
            assert!(apply_errors >= 1, "node {i} counted no apply error");
        }
        let members = watcher
            .query(
                "SELECT is_self, reachable, round_trip_ms \
                 FROM pgp_metadata.paxos_member_status WHERE group_id = $1",
                &[&GROUP],
            )
            .await
            .unwrap();
        assert_eq!(members.len(), 3);
        for m in &members {
            assert_eq!(
                m.get::<_, Option<bool>>(1),
                Some(true),
                "node {i}: reachable"
            );
            if !m.get::<_, bool>(0) {
                let rtt: Option<f64> = m.get(2);
                assert!(rtt.is_some_and(|ms| ms > 0.0), "node {i}: a round trip");
            }
        }
    }
    assert_eq!(leaders.len(), 1, "one member leads: {leaders:?}");
    let leader = leaders[0];

    // The leader knows how far each member accepted; one that is gone shows as unreachable.
    let gone = (leader + 1) % 3;
    cluster.stop(gone).unwrap();
    append(&clients[leader], "without one")
        .await
        .expect("a majority remains");
    let watcher = watcher_on(&cluster, leader).await;
    let gone_port = format!("port={}", cluster.node(gone).port);
    let rows = watcher
        .query(
            "SELECT connection, reachable, failures, last_error, acknowledged_round, lag_rounds \
             FROM pgp_metadata.paxos_member_status WHERE group_id = $1 AND NOT is_self",
            &[&GROUP],
        )
        .await
        .unwrap();
    for row in rows {
        let connection: String = row.get(0);
        let acknowledged: Option<i64> = row.get(4);
        let lag: Option<i64> = row.get(5);
        if connection.contains(&gone_port) {
            assert_eq!(row.get::<_, Option<bool>>(1), Some(false), "{connection}");
            assert!(row.get::<_, i64>(2) > 0, "its failures are counted");
            assert!(
                row.get::<_, Option<String>>(3).is_some(),
                "and the last one shown"
            );
            assert!(
                lag.is_some_and(|l| l >= 1),
                "it missed the last append: {lag:?}"
            );
        } else {
            assert_eq!(row.get::<_, Option<bool>>(1), Some(true), "{connection}");
            assert!(
                acknowledged.is_some_and(|a| a >= highest),
                "{connection}: {acknowledged:?}"
            );
        }
    }

    // A role without pg_monitor reads nothing.
    let nobody = cluster.node(leader).connect_as("nobody").await.unwrap();
    for view in ["paxos_group_status", "paxos_member_status"] {
        let refused = nobody
            .query(&format!("SELECT * FROM pgp_metadata.{view}"), &[])
            .await;
        assert_eq!(sqlstate(&refused).as_deref(), Some("42501"), "{view}");
    }
}
