//! Benchmark of pg_paxos on a 3-node loopback group, beside a plain local INSERT measured in
//! the same run on the same machine: paxos_append, a single-row INSERT into a replicated
//! table, and the latency a strong read adds over a local read of the same table. Prints
//! throughput, latency percentiles and per-client counts (starvation shows there); every
//! figure is the median of several runs.
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cluster::tokio_postgres::Client;
use cluster::{group, Cluster, ClusterOptions};

const GROUP: &str = "bench";

#[derive(Parser, Debug)]
#[command(about = "Benchmark pg_paxos appends against a plain local INSERT")]
struct Args {
    /// Seconds each measured run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runs per configuration; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Client counts to measure, spread round-robin over the three nodes.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16])]
    clients: Vec<usize>,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What one run measured.
struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    counts: Vec<usize>,
}

#[derive(Clone, Copy)]
enum Workload {
    /// `INSERT INTO plain_insert` on the leading node only: the local baseline.
    PlainInsert,
    /// `paxos_append` from clients spread round-robin over all nodes, the leader first.
    Append,
    /// `paxos_append` from clients on a node that does not lead: each append goes to the
    /// leader and back.
    Forwarded,
    /// A single-row INSERT into a replicated table, from clients spread like `Append`.
    Replicated,
    /// A one-row read of a replicated table on a node that does not lead, with
    /// `pg_paxos.consistency_model = optimistic`: what this node has applied.
    LocalRead,
    /// The same read with the default, strong consistency.
    StrongRead,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::PlainInsert => "plain",
            Workload::Append => "append",
            Workload::Forwarded => "forwarded",
            Workload::Replicated => "replicated",
            Workload::LocalRead => "local read",
            Workload::StrongRead => "strong read",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Workload::PlainInsert => "INSERT INTO plain_insert (v) VALUES ($1)",
            Workload::Append | Workload::Forwarded => "SELECT paxos_append('bench', 'bench', $1)",
            Workload::Replicated => "INSERT INTO replicated_insert (v) VALUES ($1)",
            Workload::LocalRead | Workload::StrongRead => {
                "SELECT v FROM replicated_read WHERE k = 1 AND $1::text IS NOT NULL"
            }
        }
    }

    fn setup(self) -> &'static str {
        match self {
            Workload::LocalRead => "SET pg_paxos.consistency_model = optimistic",
            _ => "SET pg_paxos.consistency_model = strong",
        }
    }

    /// The node of the `i`-th client.
    fn node(self, i: usize, leader: usize, nodes: usize) -> usize {
        match self {
            Workload::PlainInsert => leader,
            Workload::Append | Workload::Replicated => (leader + i) % nodes,
            Workload::Forwarded | Workload::LocalRead | Workload::StrongRead => {
                (leader + 1) % nodes
            }
        }
    }
}

async fn measure(
    cluster: &Cluster,
    workload: Workload,
    leader: usize,
    clients: usize,
    seconds: u64,
) -> Result<Run> {
    let mut sessions: Vec<Arc<Client>> = Vec::new();
    for i in 0..clients {
        let node = workload.node(i, leader, cluster.nodes().len());
        sessions.push(Arc::new(cluster.node(node).connect().await?));
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            tokio::spawn(async move {
                client
                    .batch_execute(workload.setup())
                    .await
                    .map_err(|e| e.to_string())?;
                let statement = client
                    .prepare(workload.sql())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let value = format!("c{i}-{}", latencies.len());
                    let started = Instant::now();
                    client
                        .execute(&statement, &[&value])
                        .await
                        .map_err(|e| format!("{} client {i}: {e:?}", workload.name()))?;
                    latencies.push(started.elapsed());
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut counts = Vec::new();
    for task in tasks {
        let latencies = task.await??;
        counts.push(latencies.len());
        all.extend(latencies);
    }
    all.sort_unstable();
    let percentile = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Ok(Run {
        per_second: all.len() as f64 / seconds as f64,
        p50: percentile(0.50),
        p99: percentile(0.99),
        counts,
    })
}

fn median<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[values.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

async fn run(args: Args) -> Result<()> {
    if args.runs == 0 || args.seconds == 0 || args.clients.contains(&0) {
        return Err("--runs, --seconds and every --clients value must be at least 1".into());
    }
    eprintln!("starting a 3-node group on 127.0.0.1 ...");
    let cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        name: "bench".into(),
        ..ClusterOptions::default()
    })?;
    let (clients, _) = group::form(&cluster, GROUP).await?;
    let leading: Option<String> = clients[0]
        .query_one(
            "SELECT leader_connection FROM pgp_metadata.promise WHERE group_id = $1",
            &[&GROUP],
        )
        .await?
        .get(0);
    let leader = (0..cluster.nodes().len())
        .find(|&i| leading.as_deref() == Some(cluster.node(i).connstr().as_str()))
        .ok_or("no node leads the group after forming it")?;
    clients[leader]
        .batch_execute("CREATE TABLE plain_insert (id bigserial PRIMARY KEY, v text)")
        .await?;
    for client in &clients {
        client
            .batch_execute(
                "CREATE TABLE replicated_insert (id bigserial PRIMARY KEY, v text); \
                 CREATE TABLE replicated_read (k int PRIMARY KEY, v text)",
            )
            .await?;
    }
    for table in ["replicated_insert", "replicated_read"] {
        clients[leader]
            .execute(
                "SELECT paxos_replicate_table($1, $2::text::regclass)",
                &[&GROUP, &table],
            )
            .await?;
    }
    clients[leader]
        .batch_execute("INSERT INTO replicated_read VALUES (1, 'one')")
        .await?;
    println!(
        "{} s per run, median of {} runs; pg_paxos: 3 nodes, clients spread round-robin from \
         the leading node (node {leader}); forwarded: the clients on another node; plain: \
         INSERT on the leading node",
        args.seconds, args.runs
    );
    println!(
        "{:>7}  {:>9}  {:>11}  {:>8}  {:>8}  {:>11}  {:>10}  {:>9}  per-client counts (last run)",
        "clients",
        "workload",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "plain ops/s",
        "throughput",
        "p50 ratio"
    );
    for &n in &args.clients {
        let mut workloads = vec![
            Workload::PlainInsert,
            Workload::Append,
            Workload::Replicated,
        ];
        if n == 1 {
            workloads.push(Workload::Forwarded);
        }
        let mut results = Vec::new();
        for &workload in &workloads {
            let mut runs = Vec::new();
            for r in 0..args.runs {
                eprintln!(
                    "  {n} clients, {}, run {}/{} ...",
                    workload.name(),
                    r + 1,
                    args.runs
                );
                runs.push(measure(&cluster, workload, leader, n, args.seconds).await?);
            }
            results.push(runs);
        }
        let summary = |runs: &[Run]| {
            (
                median(runs.iter().map(|r| r.per_second).collect()),
                median(runs.iter().map(|r| r.p50).collect()),
                median(runs.iter().map(|r| r.p99).collect()),
            )
        };
        let (plain_rate, plain_p50, plain_p99) = summary(&results[0]);
        println!(
            "{n:>7}  {:>9}  {:>11.0}  {:>8}  {:>8}  {:>11}  {:>10}  {:>9}  -",
            "plain",
            plain_rate,
            ms(plain_p50),
            ms(plain_p99),
            "",
            "",
            ""
        );
        for (workload, runs) in workloads.iter().zip(&results).skip(1) {
            let (rate, p50, p99) = summary(runs);
            let last = runs.last().map(|r| r.counts.clone()).unwrap_or_default();
            println!(
                "{n:>7}  {:>9}  {:>11.0}  {:>8}  {:>8}  {:>11.0}  {:>9.3}x  {:>8.1}x  {:?}",
                workload.name(),
                rate,
                ms(p50),
                ms(p99),
                plain_rate,
                rate / plain_rate,
                p50.as_secs_f64() / plain_p50.as_secs_f64(),
                last
            );
        }
    }
    println!();
    println!(
        "reads of a one-row replicated table on node {}, 1 client: {:>9}  {:>8}  {:>8}  {:>9}",
        (leader + 1) % cluster.nodes().len(),
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p50 ratio"
    );
    let mut local_p50 = None;
    for workload in [Workload::LocalRead, Workload::StrongRead] {
        let mut runs = Vec::new();
        for r in 0..args.runs {
            eprintln!(
                "  1 client, {}, run {}/{} ...",
                workload.name(),
                r + 1,
                args.runs
            );
            runs.push(measure(&cluster, workload, leader, 1, args.seconds).await?);
        }
        let rate = median(runs.iter().map(|r| r.per_second).collect());
        let p50 = median(runs.iter().map(|r| r.p50).collect());
        let p99 = median(runs.iter().map(|r| r.p99).collect());
        let base = *local_p50.get_or_insert(p50);
        println!(
            "{:>57}  {:>9.0}  {:>8}  {:>8}  {:>8.1}x",
            workload.name(),
            rate,
            ms(p50),
            ms(p99),
            p50.as_secs_f64() / base.as_secs_f64()
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}
