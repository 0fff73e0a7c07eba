//! The demo: a 3-node pg_paxos group on loopback that replicates a table and keeps it, and
//! its log, through the loss of a node. Every step prints what it runs and what came back.
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

/// Runs `sql` on `node` and prints it with its result: the rows, or the command's row count.
async fn sql(client: &Client, node: usize, sql: &str) -> Result<Vec<String>> {
    let rows: Vec<String> = if sql.starts_with("SELECT") {
        client
            .query(sql, &[])
            .await?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    } else {
        vec![format!("{} row(s)", client.execute(sql, &[]).await?)]
    };
    println!("node{node}: {sql}  -> {}", rows.join(" | "));
    Ok(rows)
}

const READ: &str = "SELECT format('(%s,%s)', x, y) FROM coordinates ORDER BY x";

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

    step("a table created on every node and replicated once, from node0");
    for (node, client) in clients.iter().enumerate() {
        sql(client, node, "CREATE TABLE coordinates (x int, y int)").await?;
    }
    sql(
        &clients[0],
        0,
        "SELECT paxos_replicate_table('demo', 'coordinates')::text",
    )
    .await?;

    step("plain INSERTs on node0 and node1; a (strong) read on node2 sees both");
    sql(&clients[0], 0, "INSERT INTO coordinates VALUES (1,1)").await?;
    sql(&clients[1], 1, "INSERT INTO coordinates VALUES (2,2)").await?;
    sql(&clients[2], 2, READ).await?;

    step("node2 is killed (SIGKILL); the other two are still a majority");
    cluster.kill(2)?;
    sql(&clients[0], 0, "UPDATE coordinates SET x = x * 10").await?;
    sql(&clients[1], 1, "INSERT INTO coordinates VALUES (3,3)").await?;
    append(&clients[0], 0, "written while node2 is down").await?;
    let expected = sql(&clients[1], 1, READ).await?;

    step("node2 restarts and catches up from the others");
    cluster.restart(2)?;
    let node2 = cluster.node(2).connect().await?;
    let before = group::read_log(&node2, GROUP).await?;
    println!("node2 before catching up: {} entries", before.len());
    if sql(&node2, 2, READ).await? != expected {
        return Err("node2's table differs from node1's".into());
    }
    let after = group::applied_log(&node2, GROUP).await?;
    show(2, &after);
    let reference = group::applied_log(&clients[0], GROUP).await?;
    if after != reference {
        return Err("node2 did not catch up with node0".into());
    }
    println!(
        "node2 now holds the same {} entries and rows as the others",
        after.len()
    );

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
