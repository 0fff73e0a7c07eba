//! Benchmark of how a member catches up, and of the log's bound, on loopback servers,
//! beside a plain baseline measured in the same run:
//! - the log's bound: the most rounds any member keeps while a long series of appends runs
//!   with `pg_paxos.log_retention` set;
//! - catch-up from the log: a member that was down learns and applies the rounds it missed
//!   (rounds per second);
//! - a state copy (a join) of a table several times larger than `shared_buffers`, beside
//!   `COPY ... TO STDOUT` piped into `COPY ... FROM STDIN` of the same table between the same
//!   two servers, with the peak memory of the backends doing the work on each side, for
//!   tables of several sizes (memory that does not grow with the table's size).
//!
//! Every figure is the median of several runs.
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use cluster::tokio_postgres::Client;
use cluster::{Cluster, ClusterOptions};

#[derive(Parser, Debug)]
#[command(about = "Benchmark catch-up from the log and state copies against plain COPY")]
struct Args {
    /// Rounds the member misses before it catches up.
    #[arg(long, default_value_t = 10_000)]
    rounds: usize,
    /// Appends made while the log's bound is watched (0: skip that part).
    #[arg(long, default_value_t = 50_000)]
    bound_rounds: usize,
    /// `pg_paxos.log_retention` while the log's bound is watched.
    #[arg(long, default_value_t = 1_000)]
    retention: usize,
    /// Table sizes to copy, in megabytes of COPY text.
    #[arg(long, value_delimiter = ',', default_values_t = [32, 128])]
    mb: Vec<usize>,
    /// Runs per measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const SHARED_BUFFERS_MB: usize = 16;
const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Rounds per second at which a member that was down learns and applies what it missed.
async fn catch_up(rounds: usize, runs: usize) -> Result<Vec<f64>> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        name: "bench-catchup".into(),
        ..ClusterOptions::default()
    })?;
    let (clients, _) = cluster::group::form(&cluster, "catchup").await?;
    let mut rates = Vec::new();
    for run in 0..runs {
        cluster.stop(2)?;
        eprintln!(
            "  catch-up run {}/{runs}: appending {rounds} rounds ...",
            run + 1
        );
        append(&cluster, 2, "catchup", rounds).await?;
        let target: i64 = clients[0]
            .query_one("SELECT paxos_max_group_round('catchup')", &[])
            .await?
            .get(0);
        cluster.restart(2)?;
        let node2 = cluster.node(2).connect().await?;
        let before: i64 = node2
            .query_one(
                "SELECT last_applied_round FROM pgp_metadata.\"group\" WHERE group_id = 'catchup'",
                &[],
            )
            .await?
            .get(0);
        let started = Instant::now();
        node2
            .query_one("SELECT paxos_apply_log('bench', 'catchup', $1)", &[&target])
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        rates.push((target - before) as f64 / seconds);
    }
    Ok(rates)
}

/// Makes `rounds` appends to `group` from 8 sessions spread over the first `nodes` nodes.
async fn append(cluster: &Cluster, nodes: usize, group: &str, rounds: usize) -> Result<()> {
    let writers: Vec<Client> = futures_join(
        (0..8)
            .map(|i| cluster.node(i % nodes).connect())
            .collect::<Vec<_>>(),
    )
    .await?;
    let per_writer = rounds.div_ceil(writers.len());
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|client| {
            let group = group.to_owned();
            tokio::spawn(async move {
                for _ in 0..per_writer {
                    client
                        .query_one("SELECT paxos_append('bench', $1, 'v')", &[&group])
                        .await?;
                }
                Ok::<_, cluster::tokio_postgres::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// The most rows of the log each member keeps while `rounds` appends run with `retention`.
async fn log_bound(rounds: usize, retention: usize) -> Result<Vec<i64>> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        name: "bench-bound".into(),
        extra_conf: vec![format!("pg_paxos.log_retention = {retention}")],
        ..ClusterOptions::default()
    })?;
    let (clients, _) = cluster::group::form(&cluster, "bound").await?;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = done.clone();
    let watcher = tokio::spawn(async move {
        let mut most = vec![0i64; clients.len()];
        while !watching.load(std::sync::atomic::Ordering::Relaxed) {
            for (i, client) in clients.iter().enumerate() {
                let kept: i64 = client
                    .query_one("SELECT count(*) FROM pgp_metadata.round", &[])
                    .await?
                    .get(0);
                most[i] = most[i].max(kept);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok::<_, cluster::tokio_postgres::Error>(most)
    });
    append(&cluster, 3, "bound", rounds).await?;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(watcher.await??)
}

/// Connects every future's client, in order.
async fn futures_join<F>(connecting: Vec<F>) -> Result<Vec<Client>>
where
    F: std::future::Future<Output = std::result::Result<Client, cluster::Error>>,
{
    let mut clients = Vec::new();
    for c in connecting {
        clients.push(c.await?);
    }
    Ok(clients)
}

/// The resident memory (kB) of a process, 0 once it is gone.
fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples the resident memory of the backends on `client`'s server whose query matches
/// `pattern`, until `done` is set; returns the highest seen (kB).
fn watch_memory(
    client: Client,
    pattern: &'static str,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(rows) = client
                .query(
                    "SELECT pid FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
                    &[&pattern],
                )
                .await
            {
                for row in rows {
                    peak = peak.max(rss_kb(row.get(0)));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    })
}

/// One measurement of a table of `mb` megabytes: (COPY | COPY seconds, state copy seconds,
/// peak kB of the loading backend for each, peak kB of the member's COPY TO backend).
async fn copy_once(mb: usize, run: usize) -> Result<(f64, f64, u64, u64, u64)> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 2,
        name: format!("bench-copy-{mb}-{run}"),
        extra_conf: vec![format!("shared_buffers = '{SHARED_BUFFERS_MB}MB'")],
        ..ClusterOptions::default()
    })?;
    let a = cluster.node(0).connect().await?;
    let b = cluster.node(1).connect().await?;
    let table = "CREATE TABLE big (k bigint PRIMARY KEY, v text NOT NULL)";
    for client in [&a, &b] {
        client.batch_execute("CREATE EXTENSION pg_paxos").await?;
        client.batch_execute(table).await?;
    }
    b.batch_execute("CREATE TABLE big_plain (k bigint PRIMARY KEY, v text NOT NULL)")
        .await?;
    // About 100 bytes of COPY text per row.
    let rows = (mb * 1024 * 1024 / 100) as i64;
    a.batch_execute(&format!(
        "INSERT INTO big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, {rows}) g"
    ))
    .await?;
    a.batch_execute("VACUUM ANALYZE big").await?;
    let (own_a, own_b) = (cluster.node(0).connstr(), cluster.node(1).connstr());
    a.execute("SELECT paxos_create_group('copy', $1)", &[&own_a])
        .await?;
    a.execute("SELECT paxos_replicate_table('copy', 'big')", &[])
        .await?;

    // The baseline: COPY TO STDOUT on one server piped into COPY FROM STDIN on the other,
    // by two psql processes, as a DBA would copy a table.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = watch_memory(
        cluster.node(1).connect().await?,
        "COPY big_plain%",
        done.clone(),
    );
    let started = Instant::now();
    let pipe = format!(
        "{psql} -X -v ON_ERROR_STOP=1 -d '{own_a}' -c 'COPY big (k, v) TO STDOUT' | \
         {psql} -X -q -v ON_ERROR_STOP=1 -d '{own_b}' -c 'COPY big_plain (k, v) FROM STDIN'",
        psql = PSQL
    );
    let piped = tokio::process::Command::new("bash")
        .args(["-o", "pipefail", "-c", &pipe])
        .status()
        .await?;
    if !piped.success() {
        return Err(format!("the COPY pipe failed: {piped}").into());
    }
    let plain = started.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let plain_peak = loader.await?;

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = watch_memory(
        cluster.node(1).connect().await?,
        "%paxos_become_learner%",
        done.clone(),
    );
    let member = watch_memory(
        cluster.node(0).connect().await?,
        "COPY %TO STDOUT%",
        done.clone(),
    );
    let started = Instant::now();
    b.execute("SELECT paxos_join_group('copy', $1, $2)", &[&own_a, &own_b])
        .await?;
    let state = started.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (state_peak, member_peak) = (loader.await?, member.await?);
    let copied: i64 = b.query_one("SELECT count(*) FROM big", &[]).await?.get(0);
    if copied != rows {
        return Err(format!("the state copy holds {copied} rows of {rows}").into());
    }
    Ok((plain, state, plain_peak, state_peak, member_peak))
}

async fn run(args: Args) -> Result<()> {
    if args.runs == 0 || args.rounds == 0 || args.mb.contains(&0) {
        return Err("--runs, --rounds and every --mb value must be at least 1".into());
    }
    if args.bound_rounds > 0 {
        eprintln!(
            "the log's bound: {} appends on 3 nodes, pg_paxos.log_retention = {} ...",
            args.bound_rounds, args.retention
        );
        let started = Instant::now();
        let most = log_bound(args.bound_rounds, args.retention).await?;
        println!(
            "the log's bound: {} appends in {:.0} s with pg_paxos.log_retention = {}: at most \
             {most:?} rounds kept on the members (sampled every 100 ms)",
            args.bound_rounds,
            started.elapsed().as_secs_f64(),
            args.retention
        );
        println!();
    }
    eprintln!(
        "catch-up from the log: 3 nodes, one down while {} rounds are appended",
        args.rounds
    );
    let rates = catch_up(args.rounds, args.runs).await?;
    println!(
        "catch-up from the log: {:.0} rounds/s (median of {} runs; target >= 10,000)",
        median(rates),
        args.runs
    );
    println!();
    println!(
        "state copy (join) vs psql COPY TO STDOUT | psql COPY FROM STDIN between the same 2 \
         servers, shared_buffers = {SHARED_BUFFERS_MB}MB, median of {} runs",
        args.runs
    );
    println!(
        "{:>6}  {:>10}  {:>12}  {:>7}  {:>14}  {:>14}  {:>15}",
        "MB",
        "plain s",
        "state copy s",
        "ratio",
        "plain load MB",
        "state load MB",
        "member COPY MB"
    );
    for &mb in &args.mb {
        let mut results = Vec::new();
        for run in 0..args.runs {
            eprintln!("  {mb} MB, run {}/{} ...", run + 1, args.runs);
            results.push(copy_once(mb, run).await?);
        }
        let pick =
            |f: fn(&(f64, f64, u64, u64, u64)) -> f64| median(results.iter().map(f).collect());
        let (plain, state) = (pick(|r| r.0), pick(|r| r.1));
        println!(
            "{mb:>6}  {plain:>10.2}  {state:>12.2}  {:>6.2}x  {:>14.1}  {:>14.1}  {:>15.1}",
            state / plain,
            pick(|r| r.2 as f64) / 1024.0,
            pick(|r| r.3 as f64) / 1024.0,
            pick(|r| r.4 as f64) / 1024.0,
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e:?}");
            ExitCode::FAILURE
        }
    }
}
