//! What the log makes durable is not waited for twice: a transaction of captured writes
//! alone commits without waiting for this node's disk, and a crash that loses such commits
//! loses nothing, since the applier applies their entries again from the log. A
//! transaction that also did work of its own still waits for the disk.
//!
//! The nodes run with the WAL writer's longest delay, so that a commit that did not wait is
//! still in memory when the node is killed right after it.
mod common;

use std::time::Duration;

use common::*;
use tokio_postgres::Client;

const WRITES: i32 = 20;

/// A one-node group (every vote is this node's, made durable before the write runs) with a
/// replicated table `kv`, which draws from a sequence of its own as the apply puts it in
/// step, and an ordinary table `local_note`.
async fn one_node_group(name: &str) -> (TestCluster, Client) {
    let cluster = start_with(name, 1, &["wal_writer_delay = '10s'"]);
    let client = form_group(&cluster).await.remove(0);
    client
        .batch_execute(
            "CREATE TABLE kv (k int PRIMARY KEY, v text, n bigserial); \
             CREATE TABLE local_note (k int PRIMARY KEY)",
        )
        .await
        .unwrap();
    replicate(&client, "kv").await.expect("replicate");
    (cluster, client)
}

/// The round the node's applier started at after its restart, from its server log.
fn applier_restarted_at(cluster: &cluster::Cluster) -> i64 {
    let log = std::fs::read_to_string(cluster.node(0).log_path()).unwrap();
    let line = log
        .lines()
        .rfind(|l| l.contains("pg_paxos applier of group") && l.contains("started at round"))
        .expect("the applier started")
        .to_owned();
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Kills the node, restarts it and returns a session once its applier started again.
async fn crash_and_restart(cluster: &cluster::Cluster) -> Client {
    let before = std::fs::read_to_string(cluster.node(0).log_path())
        .unwrap()
        .matches("started at round")
        .count();
    cluster.kill(0).expect("kill -9");
    cluster.restart(0).expect("restart");
    eventually(Duration::from_secs(30), || async {
        let log = std::fs::read_to_string(cluster.node(0).log_path()).unwrap();
        (log.matches("started at round").count() > before)
            .then_some(())
            .ok_or_else(|| "the applier has not started again".to_string())
    })
    .await;
    connect(cluster, 0).await
}

async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_alone_do_not_wait_for_the_disk_and_a_crash_loses_none_of_them() {
    let (cluster, mut client) = one_node_group("asynccommit").await;
    // The node is killed right after the last write is acknowledged. Something else may
    // flush the WAL in between (the WAL writer once a page fills), so the crash is tried a
    // few times; a commit that waited for the disk would never be lost.
    let mut lost = Vec::new();
    for attempt in 0..4 {
        for k in 0..WRITES {
            client
                .execute(
                    "INSERT INTO kv VALUES ($1, 'acknowledged')",
                    &[&(attempt * WRITES + k)],
                )
                .await
                .expect("a write");
        }
        client = crash_and_restart(&cluster).await;
        let restarted_at = applier_restarted_at(&cluster);
        let last_round: i64 = client
            .query_one("SELECT paxos_max_group_round($1)", &[&GROUP])
            .await
            .unwrap()
            .get(0);
        // Every acknowledged write is back, once: the applier applied again what the
        // crash took (a strong read waits for it).
        assert_eq!(
            count(&client, "kv").await,
            ((attempt + 1) * WRITES) as i64,
            "attempt {attempt}: every write is back"
        );
        let applied: i64 = client
            .query_one(
                "SELECT last_applied_round FROM pgp_metadata.\"group\" WHERE group_id = $1",
                &[&GROUP],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            applied, last_round,
            "attempt {attempt}: applied through the log"
        );
        if restarted_at < last_round {
            lost.push(last_round - restarted_at);
            break;
        }
    }
    // The last writes' commits were in memory only: the applied position went back with
    // them.
    println!("commits lost by the crash: {lost:?}");
    assert!(
        !lost.is_empty(),
        "no crash lost a commit: they waited for the disk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_with_work_of_its_own_still_waits_for_the_disk() {
    let (cluster, client) = one_node_group("synccommit").await;
    for k in 0..WRITES {
        client
            .batch_execute(&format!(
                "DO $$ BEGIN \
                   INSERT INTO kv VALUES ({k}, 'with a note'); \
                   INSERT INTO local_note VALUES ({k}); \
                 END $$"
            ))
            .await
            .expect("a write with a local note");
    }
    let client = crash_and_restart(&cluster).await;
    assert_eq!(
        count(&client, "local_note").await,
        WRITES as i64,
        "the notes, which the log does not hold, survived the crash"
    );
    assert_eq!(count(&client, "kv").await, WRITES as i64);
}
