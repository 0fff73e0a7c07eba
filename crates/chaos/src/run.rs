//! One seeded run: a cluster, the workload on every member under the nemesis, then healing,
//! convergence and the checks.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use cluster::group::LogEntry;
use cluster::tokio_postgres::Client;
use cluster::{Cluster, ClusterOptions};

use crate::proxy::{Partitions, Proxy};
use crate::workload::{self, Recorder, GROUP, TABLES};
use crate::{nemesis, register};

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub nodes: usize,
    /// How long the workload and the nemesis run.
    pub duration: Duration,
    pub clients_per_node: usize,
    /// Registers; fewer keys mean more contention and longer per-key histories.
    pub keys: i32,
    /// postgresql.conf lines for every member.
    pub settings: Vec<String>,
}

/// What a run did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    pub operations: usize,
    pub failed: usize,
    pub unknown: usize,
    pub faults: Vec<String>,
    pub anomalies: Vec<String>,
    pub sample_errors: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} on {} nodes: {} operations ({} failed, {} with unknown outcome), {} \
             faults, {} anomalies",
            self.seed,
            self.nodes,
            self.operations,
            self.failed,
            self.unknown,
            self.faults.len(),
            self.anomalies.len()
        )?;
        for fault in &self.faults {
            writeln!(f, "  fault {fault}")?;
        }
        for error in &self.sample_errors {
            writeln!(f, "  e.g. {error}")?;
        }
        for anomaly in &self.anomalies {
            writeln!(f, "ANOMALY (replay with --seed {}): {anomaly}", self.seed)?;
        }
        Ok(())
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Runs `config` on a new cluster named `name`; the cluster is gone when this returns.
/// A failure to run says why, with its causes (a database error's message, say).
pub fn run(name: &str, config: &Config) -> Result<Report, Failure> {
    run_on_cluster(name, config).map_err(|error| {
        let mut why = error.to_string();
        let mut cause = error.source();
        while let Some(c) = cause {
            why = format!("{why}: {c}");
            cause = c.source();
        }
        why.into()
    })
}

fn run_on_cluster(name: &str, config: &Config) -> Result<Report, Failure> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: config.nodes,
        name: name.to_owned(),
        extra_conf: config.settings.clone(),
        ..ClusterOptions::default()
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let partitions = Partitions::default();
    let _proxies = runtime.block_on(set_up(&cluster, config, &partitions))?;
    let start = Instant::now();
    let deadline = start + config.duration;
    let recorder = Recorder::new(start, config.keys);
    let steps = nemesis::schedule(config.seed, config.nodes, config.duration);
    let faults = std::thread::scope(|scope| {
        let nemesis = scope.spawn(|| nemesis::run(&cluster, &partitions, &steps, start, deadline));
        runtime.block_on(async {
            let clients = (0..config.nodes * config.clients_per_node).map(|i| {
                workload::client(
                    &cluster,
                    i % config.nodes,
                    i as u64,
                    config.seed,
                    deadline,
                    &recorder,
                )
            });
            futures_util::future::join_all(clients).await;
        });
        nemesis.join().expect("the nemesis thread")
    });
    let sessions = runtime.block_on(converge(&cluster))?;
    runtime.block_on(workload::final_reads(&sessions[0], &recorder))?;
    let mut anomalies = runtime.block_on(compare_members(&sessions))?;
    let observed = recorder.into_observed();
    let contents = runtime.block_on(contents(&sessions[0]))?;
    anomalies.extend(check_set(&observed, &contents.elements));
    anomalies.extend(check_failed_writes(&observed));
    anomalies.extend(check_log(&observed, &contents.log));
    anomalies.extend(
        register::check(&observed.registers)
            .into_iter()
            .map(|a| a.to_string()),
    );
    anomalies.extend(crashes(&cluster));
    if !anomalies.is_empty() {
        cluster.keep_on_drop();
        anomalies.push(format!(
            "the cluster's data and logs are kept in {}",
            cluster.base_dir().display()
        ));
    }
    Ok(Report {
        seed: config.seed,
        nodes: config.nodes,
        operations: observed.operations(),
        failed: observed.failures,
        unknown: observed.unknowns,
        faults,
        anomalies,
        sample_errors: observed.sample_errors,
    })
}

/// Forms the group with every member reached through its proxy, and creates and fills the
/// replicated tables. Returns the proxies, which live as long as the run.
async fn set_up(
    cluster: &Cluster,
    config: &Config,
    partitions: &Partitions,
) -> Result<Vec<Proxy>, Failure> {
    let members: std::collections::HashMap<String, usize> = cluster
        .nodes()
        .iter()
        .map(|node| (node.node_id.clone(), node.index))
        .collect();
    let mut proxies = Vec::new();
    for node in cluster.nodes() {
        proxies
            .push(Proxy::start(node.index, node.port, members.clone(), partitions.clone()).await?);
    }
    let through = |i: usize| {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            proxies[i].port
        )
    };
    let mut clients = Vec::new();
    for i in 0..cluster.nodes().len() {
        let client = cluster.node(i).connect().await?;
        client.batch_execute("CREATE EXTENSION pg_paxos").await?;
        if i == 0 {
            client
                .execute("SELECT paxos_create_group($1, $2)", &[&GROUP, &through(0)])
                .await?;
        } else {
            client
                .execute(
                    "SELECT paxos_join_group($1, $2, $3)",
                    &[&GROUP, &through(i - 1), &through(i)],
                )
                .await?;
        }
        client.batch_execute(TABLES).await?;
        clients.push(client);
    }
    for table in ["registers", "elements"] {
        clients[0]
            .execute(
                "SELECT paxos_replicate_table($1, $2::text::regclass)",
                &[&GROUP, &table],
            )
            .await?;
    }
    clients[0]
        .execute(
            "INSERT INTO registers SELECT k, 0 FROM generate_series(1, $1) k",
            &[&config.keys],
        )
        .await?;
    Ok(proxies)
}

/// Connects to every member (all healed), ends the workload's sessions that outlived their
/// clients (a client gives up on a paused server, but its backend goes on when resumed, and
/// may still append), then has every member apply the log through one and the same round.
async fn converge(cluster: &Cluster) -> Result<Vec<Client>, Failure> {
    let mut sessions = Vec::new();
    for i in 0..cluster.nodes().len() {
        let limit = Instant::now() + Duration::from_secs(60);
        let session = loop {
            match cluster.node(i).connect().await {
                Ok(session) => break session,
                Err(e) if Instant::now() > limit => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        session
            .batch_execute("SET statement_timeout = '60s'")
            .await?;
        sessions.push(session);
    }
    for session in &sessions {
        session
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
                 AND application_name NOT LIKE 'pg_paxos %'",
            )
            .await?;
    }
    let mut through = None;
    for _ in 0..5 {
        let mut applied = Vec::new();
        for session in &sessions {
            applied.push(apply(session, through).await?);
        }
        let highest = applied.iter().copied().max().unwrap_or(-1);
        if applied.iter().all(|&a| a == highest) {
            return Ok(sessions);
        }
        through = Some(highest);
    }
    Err("the members did not reach one applied round".into())
}

/// Has `session`'s member apply the log through `through`, or the group's highest round;
/// retries for a while, as a member may still be electing a leader or catching up.
async fn apply(session: &Client, through: Option<i64>) -> Result<i64, Failure> {
    let limit = Instant::now() + Duration::from_secs(60);
    loop {
        let applied = session
            .query_one(
                "SELECT paxos_apply_log('chaos', $1, coalesce($2, paxos_max_group_round($1)))",
                &[&GROUP, &through],
            )
            .await;
        match applied {
            Ok(row) => return Ok(row.get(0)),
            Err(e) if Instant::now() > limit => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// A member's replicated tables and log.
#[derive(PartialEq, Eq, Debug)]
struct Contents {
    registers: Vec<(i32, i64)>,
    elements: BTreeSet<i64>,
    log: Vec<LogEntry>,
}

async fn contents(session: &Client) -> Result<Contents, Failure> {
    let registers = session
        .query("SELECT k, v FROM registers ORDER BY k", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let elements = session
        .query("SELECT e FROM elements", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let log = cluster::group::read_log(session, GROUP).await?;
    Ok(Contents {
        registers,
        elements,
        log,
    })
}

/// Every member must hold the same tables and the same log, without gaps.
async fn compare_members(sessions: &[Client]) -> Result<Vec<String>, Failure> {
    let mut anomalies = Vec::new();
    let first = contents(&sessions[0]).await?;
    for (i, LogEntry { round, .. }) in first.log.iter().enumerate() {
        if *round != i as i64 {
            anomalies.push(format!("node0's log has a gap before round {round}"));
            break;
        }
    }
    for (node, session) in sessions.iter().enumerate().skip(1) {
        let other = contents(session).await?;
        if other.registers != first.registers {
            anomalies.push(format!("node{node}'s registers differ from node0's"));
        }
        if other.elements != first.elements {
            let only_here: Vec<_> = other.elements.difference(&first.elements).collect();
            let missing: Vec<_> = first.elements.difference(&other.elements).collect();
            anomalies.push(format!(
                "node{node}'s elements differ from node0's: only on node{node} {only_here:?}, \
                 missing there {missing:?}"
            ));
        }
        if other.log != first.log {
            let at = first
                .log
                .iter()
                .zip(&other.log)
                .find(|(a, b)| a != b)
                .map(|(a, _)| a.round);
            anomalies.push(format!(
                "node{node}'s log differs from node0's (first at {at:?})"
            ));
        }
    }
    Ok(anomalies)
}

/// No register shows a value whose write or swap was reported as a definite failure.
fn check_failed_writes(observed: &workload::Observed) -> Vec<String> {
    let mut anomalies = Vec::new();
    for event in &observed.registers {
        if let Some((_, register::Ret::Read(value))) = event.returned {
            if let Some(error) = observed.register_failed.get(&value) {
                anomalies.push(format!(
                    "key {} read {value} at {:.3}s, written by an operation that failed \
                     definitely: {error}",
                    event.key,
                    event.invoked.as_secs_f64()
                ));
            }
        }
    }
    anomalies
}

/// Every acknowledged insert is there; nothing is there that was not attempted, or that
/// was reported as failed.
fn check_set(observed: &workload::Observed, elements: &BTreeSet<i64>) -> Vec<String> {
    let mut anomalies = Vec::new();
    let lost: Vec<_> = observed.inserted.difference(elements).collect();
    if !lost.is_empty() {
        anomalies.push(format!("acknowledged inserts missing: {lost:?}"));
    }
    let failed: Vec<_> = observed.insert_failed.intersection(elements).collect();
    if !failed.is_empty() {
        anomalies.push(format!(
            "inserts reported as failed took effect: {failed:?}"
        ));
    }
    let attempted: BTreeSet<i64> = observed
        .inserted
        .union(&observed.insert_unknown)
        .copied()
        .collect();
    let invented: Vec<_> = elements.difference(&attempted).collect();
    if !invented.is_empty() {
        anomalies.push(format!("elements nobody inserted: {invented:?}"));
    }
    anomalies
}

/// Every acknowledged append is in the log once, at its round; no value is there twice, or
/// after a definite failure.
fn check_log(observed: &workload::Observed, log: &[LogEntry]) -> Vec<String> {
    let mut anomalies = Vec::new();
    let mut rounds: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for LogEntry { round, kind, value } in log {
        if let (Some(value), "value") = (value, kind.as_str()) {
            rounds.entry(value.as_str()).or_default().push(*round);
        }
    }
    for (value, at) in &rounds {
        if at.len() > 1 {
            anomalies.push(format!(
                "{value} is in the log {} times: rounds {at:?}",
                at.len()
            ));
        }
        if observed.append_failed.contains(*value) {
            anomalies.push(format!("{value} was reported as failed but is in the log"));
        }
    }
    for (value, round) in &observed.appended {
        if rounds.get(value.as_str()).map(|r| r.as_slice()) != Some(&[*round][..]) {
            anomalies.push(format!(
                "{value} was acknowledged at round {round} but the log has it at {:?}",
                rounds.get(value.as_str())
            ));
        }
    }
    anomalies
}

/// Server log lines showing a crash that the nemesis did not cause (it only sends SIGKILL
/// and SIGSTOP).
fn crashes(cluster: &Cluster) -> Vec<String> {
    let mut found = Vec::new();
    for (i, node) in cluster.nodes().iter().enumerate() {
        let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
        for line in log.lines() {
            let crash = line.contains("PANIC:")
                || line.contains("non-unwinding panic")
                || (line.contains("terminated by signal") && !line.contains("signal 9"));
            if crash {
                found.push(format!("node{i} crashed: {line}"));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use register::{Event, Op, Ret};

    fn read(value: i64) -> Event {
        Event {
            client: 1,
            key: 3,
            op: Op::Read,
            invoked: Duration::from_millis(10),
            returned: Some((Duration::from_millis(11), Ret::Read(value))),
        }
    }

    #[test]
    fn a_read_of_a_value_whose_write_failed_is_reported_with_its_error() {
        let mut observed = workload::Observed::default();
        observed
            .register_failed
            .insert(8_000_522, "42P01 relation gone".to_owned());
        observed.registers.push(read(7));
        assert!(check_failed_writes(&observed).is_empty());
        observed.registers.push(read(8_000_522));
        let anomalies = check_failed_writes(&observed);
        assert_eq!(anomalies.len(), 1);
        assert!(
            anomalies[0].contains("42P01 relation gone"),
            "{anomalies:?}"
        );
    }
}
