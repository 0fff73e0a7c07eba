//! Helpers shared by the multi-node tests: forming groups and reading logs.
#![allow(dead_code)] // each test binary uses its own subset

use std::time::Duration;

pub use cluster::group::LogEntry;
use cluster::{Cluster, ClusterOptions};
use tokio_postgres::Client;

pub const GROUP: &str = "g";

/// A cluster whose server logs are checked for crashed backends when the test ends.
pub struct TestCluster(Cluster);

impl std::ops::Deref for TestCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.0
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // Backends exit after their clients are gone: give them a moment to.
        std::thread::sleep(Duration::from_millis(300));
        assert_no_crash(&self.0);
    }
}

/// Fails when any server log shows a backend that crashed or a PANIC.
pub fn assert_no_crash(cluster: &Cluster) {
    for (i, node) in cluster.nodes().iter().enumerate() {
        let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
        for line in log.lines() {
            assert!(
                !["terminated by signal", "PANIC:", "non-unwinding panic"]
                    .iter()
                    .any(|sign| line.contains(sign)),
                "node {i} crashed: {line}"
            );
        }
    }
}

pub fn start(name: &str, nodes: usize) -> TestCluster {
    start_with(name, nodes, &[])
}

/// `start` with lines added to every node's postgresql.conf.
pub fn start_with(name: &str, nodes: usize, conf: &[&str]) -> TestCluster {
    TestCluster(
        Cluster::start(ClusterOptions {
            nodes,
            preload_pg_paxos: true,
            extra_conf: conf.iter().map(|line| line.to_string()).collect(),
            name: name.to_owned(),
        })
        .unwrap_or_else(|e| panic!("starting {nodes} nodes: {e}")),
    )
}

pub async fn connect(cluster: &Cluster, node: usize) -> Client {
    cluster
        .node(node)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to node {node}: {e}"))
}

/// A group with every node as a member (see `cluster::group::form`).
pub async fn form_group(cluster: &Cluster) -> Vec<Client> {
    cluster::group::form(cluster, GROUP)
        .await
        .unwrap_or_else(|e| panic!("forming the group: {e}"))
        .0
}

pub async fn applied_log(client: &Client) -> Vec<LogEntry> {
    cluster::group::applied_log(client, GROUP)
        .await
        .expect("apply and read the log")
}

pub async fn read_log(client: &Client) -> Vec<LogEntry> {
    cluster::group::read_log(client, GROUP)
        .await
        .expect("read the log")
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

/// Applies on `client`'s member every round chosen so far.
pub async fn apply_all(client: &Client) {
    client
        .query_one(
            "SELECT paxos_apply_log('test', $1, paxos_max_group_round($1))",
            &[&GROUP],
        )
        .await
        .expect("apply the log");
}

/// Applies the whole log on every member, then compares every replicated table row for row,
/// and the recorded positions of their sequences.
pub async fn assert_replicas_identical(clients: &[Client]) {
    let tables: Vec<String> = clients[0]
        .query(
            "SELECT format('%I.%I', schema_name, table_name) FROM pgp_metadata.replicated_tables \
             ORDER BY 1",
            &[],
        )
        .await
        .expect("list replicated tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for client in clients {
        apply_all(client).await;
    }
    let mut queries: Vec<String> = tables
        .iter()
        .map(|t| format!("SELECT t::text FROM {t} t ORDER BY 1"))
        .collect();
    queries.push(
        "SELECT seq::text || '=' || coalesce(last_value::text, 'unused') \
         FROM pgp_metadata.sequences ORDER BY 1"
            .into(),
    );
    for query in queries {
        let mut first: Option<Vec<String>> = None;
        for (node, client) in clients.iter().enumerate() {
            let rows: Vec<String> = client
                .query(query.as_str(), &[])
                .await
                .unwrap_or_else(|e| panic!("{query}: {e}"))
                .iter()
                .map(|r| r.get(0))
                .collect();
            match &first {
                None => first = Some(rows),
                Some(expected) => assert_eq!(&rows, expected, "node {node} differs: {query}"),
            }
        }
    }
}

/// The SQLSTATE of a failed statement, if it failed.
pub fn sqlstate<T>(result: &Result<T, tokio_postgres::Error>) -> Option<String> {
    result
        .as_ref()
        .err()
        .and_then(|e| e.as_db_error().map(|d| d.code().code().to_owned()))
}

pub async fn create_everywhere(clients: &[Client], ddl: &str) {
    for client in clients {
        client.batch_execute(ddl).await.expect(ddl);
    }
}

pub async fn replicate(client: &Client, table: &str) -> Result<i64, tokio_postgres::Error> {
    client
        .query_one(
            "SELECT paxos_replicate_table($1, $2::text::regclass)",
            &[&GROUP, &table],
        )
        .await
        .map(|row| row.get(0))
}

/// The highest round a majority of the group accepted: what has been appended, whether or
/// not `client`'s node has voted on it or learned it yet.
pub async fn max_group_round(client: &Client) -> i64 {
    client
        .query_one("SELECT paxos_max_group_round($1)", &[&GROUP])
        .await
        .unwrap()
        .get(0)
}

pub async fn log_length(client: &Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM pgp_metadata.round", &[])
        .await
        .unwrap()
        .get(0)
}

/// The node that `client`'s node last promised to follow.
pub async fn leader_of(cluster: &cluster::Cluster, client: &tokio_postgres::Client) -> usize {
    let leader: Option<String> = client
        .query_one(
            "SELECT leader_connection FROM pgp_metadata.promise WHERE group_id = $1",
            &[&GROUP],
        )
        .await
        .unwrap()
        .get(0);
    (0..cluster.nodes().len())
        .find(|&i| leader.as_deref() == Some(cluster.node(i).connstr().as_str()))
        .unwrap_or_else(|| panic!("{leader:?} is not a node"))
}

/// The process id of the backend serving `session`.
pub async fn backend_pid(session: &Client) -> i32 {
    session
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits until backend `pid` has exited (its client is gone).
pub async fn until_backend_gone(observer: &Client, pid: i32) {
    eventually(Duration::from_secs(30), || async {
        let count: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if count == 0 {
            Ok(())
        } else {
            Err(format!("backend {pid} still runs"))
        }
    })
    .await
}

/// Cancels the statement backend `pid` runs.
pub async fn cancel_backend(observer: &Client, pid: i32) {
    let sent: bool = observer
        .query_one("SELECT pg_cancel_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(sent, "cancel backend {pid}");
}

/// The process id of the proposer of the group on `client`'s server.
pub async fn proposer_pid(client: &Client) -> Option<i32> {
    client
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_paxos proposer'",
            &[],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

/// How many members vote on the group now, as `client`'s member knows.
pub async fn voters(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pgp_metadata.host WHERE group_id = $1 AND max_round IS NULL",
            &[&GROUP],
        )
        .await
        .unwrap()
        .get(0)
}
