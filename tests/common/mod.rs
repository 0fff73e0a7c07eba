//! Helpers shared by the multi-node tests: forming groups and reading logs.
#![allow(dead_code)] // each test binary uses its own subset

use std::time::Duration;

use cluster::{Cluster, ClusterOptions};
use tokio_postgres::Client;

pub const GROUP: &str = "g";

pub fn start(name: &str, nodes: usize) -> Cluster {
    Cluster::start(ClusterOptions {
        nodes,
        preload_pg_paxos: true,
        extra_conf: vec![],
        name: name.to_owned(),
    })
    .unwrap_or_else(|e| panic!("starting {nodes} nodes: {e}"))
}

pub async fn connect(cluster: &Cluster, node: usize) -> Client {
    cluster
        .node(node)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to node {node}: {e}"))
}

/// Creates the extension everywhere and a group with every node as a member: node 0 founds
/// it, node i joins through node i-1.
pub async fn form_group(cluster: &Cluster) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..cluster.nodes().len() {
        let client = connect(cluster, i).await;
        client
            .batch_execute("CREATE EXTENSION pg_paxos")
            .await
            .expect("CREATE EXTENSION");
        let own = cluster.node(i).connstr();
        if i == 0 {
            client
                .execute("SELECT paxos_create_group($1, $2)", &[&GROUP, &own])
                .await
                .expect("create group");
        } else {
            let existing = cluster.node(i - 1).connstr();
            client
                .query_one(
                    "SELECT paxos_join_group($1, $2, $3)",
                    &[&GROUP, &existing, &own],
                )
                .await
                .unwrap_or_else(|e| panic!("node {i} joining: {e}"));
        }
        clients.push(client);
    }
    clients
}

/// One chosen log entry as every node must agree on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub round: i64,
    pub kind: String,
    pub value: Option<String>,
}

/// Applies the log up to the group's highest round on this node, then reads it.
pub async fn applied_log(client: &Client) -> Vec<LogEntry> {
    client
        .query_one(
            "SELECT paxos_apply_log('test', $1, paxos_max_group_round($1))",
            &[&GROUP],
        )
        .await
        .expect("apply log");
    read_log(client).await
}

pub async fn read_log(client: &Client) -> Vec<LogEntry> {
    client
        .query(
            "SELECT round_num, value_kind, value FROM pgp_metadata.round \
             WHERE group_id = $1 AND chosen ORDER BY round_num",
            &[&GROUP],
        )
        .await
        .expect("read log")
        .iter()
        .map(|row| LogEntry {
            round: row.get(0),
            kind: row.get(1),
            value: row.get(2),
        })
        .collect()
}

/// Asserts the log is gap-free from round 0 and identical on every client.
pub fn assert_same_gap_free_logs(logs: &[Vec<LogEntry>]) {
    let first = &logs[0];
    for (i, entry) in first.iter().enumerate() {
        assert_eq!(
            entry.round, i as i64,
            "the log has a gap before round {}",
            entry.round
        );
    }
    for (node, log) in logs.iter().enumerate().skip(1) {
        assert_eq!(log, first, "node {node}'s log differs from node 0's");
    }
}

pub async fn append(client: &Client, value: &str) -> Result<i64, tokio_postgres::Error> {
    client
        .query_one("SELECT paxos_append('test', $1, $2)", &[&GROUP, &value])
        .await
        .map(|row| row.get(0))
}

/// Retries `f` until it succeeds or `limit` passes: for a node that just restarted.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = std::time::Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if start.elapsed() > limit => panic!("still failing after {limit:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
