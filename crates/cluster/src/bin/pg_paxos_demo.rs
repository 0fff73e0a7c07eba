//! The demo: a 3-node pg_paxos group on loopback that keeps its log through the loss of a
//! node. Every step prints what it runs and what came back.
use std::process::ExitCode;

use cluster::group::{self, LogEntry};
use cluster::tokio_postgres::Client;
use cluster::{Cluster, ClusterOptions};

const GROUP: &str = "demo";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn step(text: &str) {
    println!("\n== {text}");
}

async fn append(client: &Client, node: usize, value: &str) -> Result<i64> {
    let round: i64 = client
        .query_one("SELECT paxos_append('demo', $1, $2)", &[&GROUP, &value])
        .await?
        .get(0);
    println!("node{node}: SELECT paxos_append('demo', '{GROUP}', '{value}')  -> round {round}");
    Ok(round)
}

fn show(node: usize, log: &[LogEntry]) {
    let rendered: Vec<String> = log
        .iter()
        .map(|e| match e.kind.as_str() {
            "value" => format!("{}:{}", e.round, e.value.as_deref().unwrap_or("")),
            kind => format!("{}:<{kind}>", e.round),
        })
        .collect();
    println!("node{node} log: {}", rendered.join("  "));
}

async fn run() -> Result<()> {
    step("starting 3 PostgreSQL servers on 127.0.0.1 with pg_paxos preloaded");
    let cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        name: "demo".into(),
        ..ClusterOptions::default()
    })?;
    for node in cluster.nodes() {
        println!("node{}: {}", node.index, node.connstr());
    }

    step("node0 creates group 'demo'; node1 and node2 join it");
    let (clients, joined) = group::form(&cluster, GROUP).await?;
    for (node, round) in joined.iter().enumerate().skip(1) {
        println!(
            "node{node}: joined at round {round} (votes from round {})",
            round + 1
        );
    }

    step("each node appends a value");
    for (node, client) in clients.iter().enumerate() {
        append(client, node, &format!("hello from node{node}")).await?;
    }

    step("every node holds the same log");
    let mut logs = Vec::new();
    for (node, client) in clients.iter().enumerate() {
        let log = group::applied_log(client, GROUP).await?;
        show(node, &log);
        logs.push(log);
    }
    if logs.iter().any(|log| log != &logs[0]) {
        return Err("the logs differ".into());
    }

    step("node2 is killed (SIGKILL); the other two are still a majority");
    cluster.kill(2)?;
    append(&clients[0], 0, "written while node2 is down").await?;
    append(&clients[1], 1, "this one too").await?;

    step("node2 restarts and catches up from the others");
    cluster.restart(2)?;
    let node2 = cluster.node(2).connect().await?;
    let before = group::read_log(&node2, GROUP).await?;
    println!("node2 before catching up: {} entries", before.len());
    let after = group::applied_log(&node2, GROUP).await?;
    show(2, &after);
    let reference = group::applied_log(&clients[0], GROUP).await?;
    if after != reference {
        return Err("node2 did not catch up with node0".into());
    }
    println!("node2 now holds the same {} entries as node0", after.len());

    step("done; stopping the servers");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e:?}");
            ExitCode::FAILURE
        }
    }
}
