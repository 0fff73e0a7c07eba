//! Benchmark of pg_paxos on loopback groups of 3 and 5 members, beside a plain local INSERT
//! measured in the same run on the same machine: paxos_append, a single-row INSERT into a
//! replicated table, and a point read of a replicated table, strong and local. For each
//! member count and client count it prints throughput, latency percentiles, per-client
//! counts (starvation shows there), the slowest client's p99 against the median client's
//! p50, the ratios to plain, and how many backends serve peers on the busiest member; every
//! figure is the median of several runs. With gnuplot installed it also draws a chart.
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cluster::tokio_postgres::Client;
use cluster::{group, Cluster, ClusterOptions};

const GROUP: &str = "bench";

#[derive(Parser, Debug)]
#[command(about = "Benchmark pg_paxos writes and reads against plain local statements")]
struct Args {
    /// Seconds each measured run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runs per configuration; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Client counts to measure, spread round-robin over the members.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16, 64])]
    clients: Vec<usize>,
    /// Group sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [3, 5])]
    members: Vec<usize>,
    /// Where the table of results goes (tab-separated), with the chart beside it (.png).
    #[arg(long, default_value = "target/bench/bench.tsv")]
    out: PathBuf,
    /// Only draw the chart again from the table at --out.
    #[arg(long)]
    chart_only: bool,
    /// Workloads to measure (all by default); ratios need the baseline measured too.
    #[arg(long, value_delimiter = ',', value_enum)]
    workloads: Vec<Workload>,
    /// A postgresql.conf line for every member (repeatable), to compare settings on one
    /// build: `--setting "pg_paxos.pipeline_depth = 2"`.
    #[arg(long = "setting")]
    settings: Vec<String>,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What one run measured.
struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    counts: Vec<usize>,
    /// The slowest client's p99 over the median client's p50.
    spread: f64,
    /// The most backends serving peers on one member, sampled during the run.
    peer_backends: i64,
}

#[derive(Clone, Copy, PartialEq, Debug, clap::ValueEnum)]
enum Workload {
    /// `INSERT INTO plain_insert` on the leading node only: the local baseline.
    #[value(name = "plain")]
    PlainInsert,
    /// `paxos_append` from clients spread round-robin over all members, the leader first.
    Append,
    /// A single-row INSERT into a replicated table, from clients spread like `Append`.
    Replicated,
    /// A point read of a replicated table with `pg_paxos.consistency_model = optimistic`
    /// on a member that does not lead: what it has applied, the local baseline for reads.
    #[value(name = "local-read")]
    LocalRead,
    /// The same read with the default, strong consistency.
    #[value(name = "strong-read")]
    StrongRead,
    /// `LocalRead` on the leading member: the baseline for reads there.
    #[value(name = "leader-local-read")]
    LeaderLocalRead,
    /// `StrongRead` on the leading member: served on its lease, without a round trip, when
    /// `pg_paxos.lease_duration` is set (`--setting`).
    #[value(name = "leader-strong-read")]
    LeaderStrongRead,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::PlainInsert => "plain",
            Workload::Append => "append",
            Workload::Replicated => "replicated",
            Workload::LocalRead => "local read",
            Workload::StrongRead => "strong read",
            Workload::LeaderLocalRead => "leader local read",
            Workload::LeaderStrongRead => "leader strong read",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Workload::PlainInsert => "INSERT INTO plain_insert (v) VALUES ($1)",
            Workload::Append => "SELECT paxos_append('bench', 'bench', $1)",
            Workload::Replicated => "INSERT INTO replicated_insert (v) VALUES ($1)",
            Workload::LocalRead
            | Workload::StrongRead
            | Workload::LeaderLocalRead
            | Workload::LeaderStrongRead => {
                "SELECT v FROM replicated_read WHERE k = 1 AND $1::text IS NOT NULL"
            }
        }
    }

    fn setup(self) -> &'static str {
        match self {
            Workload::LocalRead | Workload::LeaderLocalRead => {
                "SET pg_paxos.consistency_model = optimistic"
            }
            _ => "SET pg_paxos.consistency_model = strong",
        }
    }

    /// The node of the `i`-th client.
    fn node(self, i: usize, leader: usize, nodes: usize) -> usize {
        match self {
            Workload::PlainInsert | Workload::LeaderLocalRead | Workload::LeaderStrongRead => {
                leader
            }
            Workload::Append | Workload::Replicated => (leader + i) % nodes,
            Workload::LocalRead | Workload::StrongRead => (leader + 1) % nodes,
        }
    }

    /// The baseline its ratios are taken against.
    fn baseline(self) -> Option<Workload> {
        match self {
            Workload::PlainInsert | Workload::LocalRead | Workload::LeaderLocalRead => None,
            Workload::Append | Workload::Replicated => Some(Workload::PlainInsert),
            Workload::StrongRead => Some(Workload::LocalRead),
            Workload::LeaderStrongRead => Some(Workload::LeaderLocalRead),
        }
    }
}

const WORKLOADS: [Workload; 7] = [
    Workload::PlainInsert,
    Workload::Append,
    Workload::Replicated,
    Workload::LocalRead,
    Workload::StrongRead,
    Workload::LeaderLocalRead,
    Workload::LeaderStrongRead,
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// The most client backends on one node that serve other members (their application_name
/// is pg_paxos's).
async fn peer_backends(monitors: &[Client]) -> i64 {
    let mut most = 0;
    for monitor in monitors {
        let count: i64 = monitor
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
                 AND application_name LIKE 'pg\\_paxos %'",
                &[],
            )
            .await
            .map(|row| row.get(0))
            .unwrap_or(-1);
        most = most.max(count);
    }
    most
}

async fn measure(
    cluster: &Cluster,
    monitors: &[Client],
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
                        .map_err(|e| format!("{} client {i}: {e}", workload.name()))?;
                    latencies.push(started.elapsed());
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds) / 2).await;
    let peers = peer_backends(monitors).await;
    let mut all = Vec::new();
    let mut counts = Vec::new();
    let mut client_p50s = Vec::new();
    let mut worst_p99 = Duration::ZERO;
    for task in tasks {
        let mut latencies = task.await??;
        counts.push(latencies.len());
        if latencies.is_empty() {
            return Err(format!("{}: a client completed nothing", workload.name()).into());
        }
        latencies.sort_unstable();
        client_p50s.push(percentile(&latencies, 0.50));
        worst_p99 = worst_p99.max(percentile(&latencies, 0.99));
        all.extend(latencies);
    }
    all.sort_unstable();
    Ok(Run {
        per_second: all.len() as f64 / seconds as f64,
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        counts,
        spread: worst_p99.as_secs_f64() / median(client_p50s).as_secs_f64(),
        peer_backends: peers,
    })
}

fn median<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The medians of a configuration's runs.
struct Summary {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    spread: f64,
    peer_backends: i64,
    counts: Vec<usize>,
}

fn summarize(runs: &[Run]) -> Summary {
    Summary {
        per_second: median(runs.iter().map(|r| r.per_second).collect()),
        p50: median(runs.iter().map(|r| r.p50).collect()),
        p99: median(runs.iter().map(|r| r.p99).collect()),
        spread: median(runs.iter().map(|r| r.spread).collect()),
        peer_backends: median(runs.iter().map(|r| r.peer_backends).collect()),
        counts: runs.last().map(|r| r.counts.clone()).unwrap_or_default(),
    }
}

/// Starts a group of `members` on loopback with the benchmark's tables; returns the cluster,
/// a monitoring session per node and the leading node.
async fn start_group(members: usize, settings: &[String]) -> Result<(Cluster, Vec<Client>, usize)> {
    eprintln!("starting a {members}-member group on 127.0.0.1 ...");
    let cluster = Cluster::start(ClusterOptions {
        nodes: members,
        name: format!("bench{members}"),
        extra_conf: settings.to_vec(),
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
    Ok((cluster, clients, leader))
}

/// Draws throughput and p50 latency against clients, one line per member count and
/// workload, when gnuplot is installed (`scripts/bench` installs it). Its data (one block
/// per line) and script stay beside the table, to draw it again.
fn chart(table: &std::path::Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(table).ok()?;
    // (members, workload) -> rows of (clients, ops/s, p50 ms), in the table's order.
    let mut series: Vec<((String, String), Vec<String>)> = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 5 {
            continue;
        }
        let key = (f[0].to_owned(), f[2].to_owned());
        let row = format!("{} {} {}", f[1], f[3], f[4]);
        match series.iter_mut().find(|(k, _)| *k == key) {
            Some((_, rows)) => rows.push(row),
            None => series.push((key, vec![row])),
        }
    }
    let data = table.with_extension("dat");
    let blocks: Vec<String> = series.iter().map(|(_, rows)| rows.join("\n")).collect();
    std::fs::write(&data, blocks.join("\n\n\n") + "\n").ok()?;
    let png = table.with_extension("png");
    let mut script = format!(
        "set terminal pngcairo size 1400,640 font ',10'\nset output '{}'\n\
         set logscale x 2\nset logscale y 10\nset xrange [0.8:80]\nset xlabel 'clients'\n\
         set grid\nset key below maxrows 2\nset multiplot layout 1,2\n",
        png.display()
    );
    for (title, column) in [("throughput (ops/s)", 2), ("p50 latency (ms)", 3)] {
        let lines: Vec<String> = series
            .iter()
            .enumerate()
            .map(|(i, ((members, workload), _))| {
                format!(
                    "'{}' index {i} using 1:{column} with linespoints title '{workload}, \
                     {members} members'",
                    data.display()
                )
            })
            .collect();
        let _ = writeln!(script, "set title '{title}'\nplot {}", lines.join(", "));
    }
    script.push_str("unset multiplot\n");
    let script_path = table.with_extension("gp");
    std::fs::write(&script_path, script).ok()?;
    let output = std::process::Command::new("gnuplot")
        .arg(&script_path)
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!("gnuplot: {}", String::from_utf8_lossy(&output.stderr));
    }
    output.status.success().then_some(png)
}

fn report_chart(table: &std::path::Path) {
    match chart(table) {
        Some(png) => println!("chart: {}", png.display()),
        None => println!("chart: not drawn (gnuplot with the pngcairo terminal is missing)"),
    }
}

async fn run(args: Args) -> Result<()> {
    if args.chart_only {
        report_chart(&args.out);
        return Ok(());
    }
    if args.runs == 0 || args.seconds == 0 || args.clients.contains(&0) {
        return Err("--runs, --seconds and every --clients value must be at least 1".into());
    }
    if args.members.iter().any(|&m| m == 0 || m > 9) {
        return Err("every --members value must be 1 to 9".into());
    }
    println!(
        "{} s per run, median of {} runs; clients spread round-robin over the members from \
         the leading one; plain: INSERT on the leading member; reads on a member that does \
         not lead, leader reads on the leading one (strong against local)",
        args.seconds, args.runs
    );
    println!(
        "{:>7}  {:>7}  {:>18}  {:>9}  {:>8}  {:>8}  {:>9}  {:>9}  {:>10}  {:>10}  per-client counts (last run)",
        "members", "clients", "workload", "ops/s", "p50 ms", "p99 ms", "ops ratio", "p50 ratio",
        "p99/p50", "peer conns"
    );
    let mut table = String::from(
        "members\tclients\tworkload\tops_per_s\tp50_ms\tp99_ms\tops_ratio\tp50_ratio\tspread\tpeer_backends\n",
    );
    for &members in &args.members {
        let (cluster, monitors, leader) = start_group(members, &args.settings).await?;
        for &clients in &args.clients {
            let mut done: Vec<(Workload, Summary)> = Vec::new();
            for workload in WORKLOADS {
                let reads = workload.sql().starts_with("SELECT v");
                let wanted = args.workloads.is_empty() || args.workloads.contains(&workload);
                if !wanted || (reads && clients != 1) {
                    continue;
                }
                let mut runs = Vec::new();
                let mut failure = None;
                for r in 0..args.runs {
                    eprintln!(
                        "  {members} members, {clients} clients, {}, run {}/{} ...",
                        workload.name(),
                        r + 1,
                        args.runs
                    );
                    match measure(&cluster, &monitors, workload, leader, clients, args.seconds)
                        .await
                    {
                        Ok(run) => runs.push(run),
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
                if let Some(error) = failure {
                    println!(
                        "{members:>7}  {clients:>7}  {:>18}  failed: {error}",
                        workload.name()
                    );
                    continue;
                }
                let summary = summarize(&runs);
                let base = workload
                    .baseline()
                    .and_then(|b| done.iter().find(|(w, _)| *w == b))
                    .map(|(_, s)| s);
                let (ops_ratio, p50_ratio) = match base {
                    Some(b) => (
                        format!("{:.3}", summary.per_second / b.per_second),
                        format!("{:.1}", ms(summary.p50) / ms(b.p50)),
                    ),
                    None if workload.baseline().is_none() => ("1.000".into(), "1.0".into()),
                    None => ("-".into(), "-".into()),
                };
                let fields = [
                    members.to_string(),
                    clients.to_string(),
                    workload.name().to_owned(),
                    format!("{:.0}", summary.per_second),
                    format!("{:.3}", ms(summary.p50)),
                    format!("{:.3}", ms(summary.p99)),
                    ops_ratio,
                    p50_ratio,
                    format!("{:.1}", summary.spread),
                    summary.peer_backends.to_string(),
                ];
                let widths = [7, 7, 18, 9, 8, 8, 8, 8, 9, 10];
                let suffixes = ["", "", "", "", "", "", "x", "x", "x", ""];
                let mut line = String::new();
                for ((field, width), suffix) in fields.iter().zip(widths).zip(suffixes) {
                    let _ = write!(line, "{field:>width$}{suffix}  ");
                }
                println!("{line}{:?}", summary.counts);
                table.push_str(&fields.join("\t"));
                table.push('\n');
                done.push((workload, summary));
            }
        }
        drop(monitors);
        drop(cluster);
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &table)?;
    println!("\nresults: {}", args.out.display());
    report_chart(&args.out);
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
