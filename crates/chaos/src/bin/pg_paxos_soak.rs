//! The long run: seeded fault-injection runs back to back for a duration, with a summary.
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chaos::{run, Config};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Run pg_paxos fault-injection rounds for a while and summarize them")]
struct Args {
    /// Total time, in seconds.
    #[arg(long, default_value_t = 3600)]
    duration: u64,
    /// Seconds of faults and operations per run (each run starts a new cluster).
    #[arg(long, default_value_t = 60)]
    run_seconds: u64,
    /// First seed; each further run uses the next one. Replay one run with --runs 1.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this many runs (0: until the duration is spent).
    #[arg(long, default_value_t = 0)]
    runs: u64,
    /// Cluster sizes to alternate between.
    #[arg(long, value_delimiter = ',', default_values_t = [3, 5])]
    nodes: Vec<usize>,
    #[arg(long, default_value_t = 2)]
    clients_per_node: usize,
    #[arg(long, default_value_t = 8)]
    keys: i32,
    /// A postgresql.conf line for every member (repeatable).
    #[arg(long = "setting")]
    settings: Vec<String>,
}

/// Set by the first SIGINT or SIGTERM: no run starts after the current one.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn interrupt(signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // SAFETY: signal() is async-signal-safe; a second signal ends the process at once.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}

/// Lets the current run heal and stop its servers before the process ends.
fn finish_on_interrupt() {
    let handler = interrupt as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t;
    // SAFETY: installs a handler that only stores to an atomic and resets itself.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    finish_on_interrupt();
    if args.nodes.is_empty() || args.nodes.contains(&0) || args.keys < 1 {
        eprintln!("--nodes needs sizes of at least 1, --keys at least 1");
        return ExitCode::FAILURE;
    }
    let until = Instant::now() + Duration::from_secs(args.duration);
    let (mut runs, mut operations, mut faults, mut anomalies) = (0u64, 0usize, 0usize, 0usize);
    let mut seed = args.seed;
    while !INTERRUPTED.load(Ordering::SeqCst)
        && ((args.runs == 0 && Instant::now() < until) || runs < args.runs)
    {
        let config = Config {
            seed,
            nodes: args.nodes[(runs as usize) % args.nodes.len()],
            duration: Duration::from_secs(args.run_seconds),
            clients_per_node: args.clients_per_node,
            keys: args.keys,
            settings: args.settings.clone(),
        };
        match run("soak", &config) {
            Ok(report) => {
                print!("{report}");
                operations += report.operations;
                faults += report.faults.len();
                anomalies += report.anomalies.len();
            }
            Err(e) => {
                println!("seed {seed}: the run could not be completed: {e}");
                anomalies += 1;
            }
        }
        runs += 1;
        seed += 1;
    }
    if INTERRUPTED.load(Ordering::SeqCst) {
        println!("interrupted: stopped after the run in progress");
    }
    println!(
        "summary: {runs} runs, {operations} operations, {faults} faults injected, {anomalies} \
         anomalies"
    );
    if anomalies == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
