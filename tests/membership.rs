//! Repairing a group that lost members for good: removing them from any surviving member
//! with a majority, replacing them with new nodes while writes go on, and a removed node
//! that comes back learning that it is out. Every test ends with the members' tables
//! compared row for row.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio_postgres::Client;

/// Creates the extension on every node and a group of nodes `members` (the first founds
/// it, the others join through it) with a replicated table `kv` on every node; returns a
/// session per node.
async fn group_of(cluster: &cluster::Cluster, members: &[usize]) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..cluster.nodes().len() {
        let client = connect(cluster, i).await;
        client
            .batch_execute("CREATE EXTENSION pg_paxos; CREATE TABLE kv (k int PRIMARY KEY, v text)")
            .await
            .unwrap();
        clients.push(client);
    }
    let founder = members[0];
    clients[founder]
        .execute(
            "SELECT paxos_create_group($1, $2)",
            &[&GROUP, &cluster.node(founder).connstr()],
        )
        .await
        .unwrap();
    for &i in &members[1..] {
        join(cluster, &clients[i], i, founder)
            .await
            .expect("a member joins");
    }
    replicate(&clients[founder], "kv").await.expect("replicate");
    clients
}

async fn join(
    cluster: &cluster::Cluster,
    client: &Client,
    node: usize,
    through: usize,
) -> Result<i64, tokio_postgres::Error> {
    client
        .query_one(
            "SELECT paxos_join_group($1, $2, $3)",
            &[
                &GROUP,
                &cluster.node(through).connstr(),
                &cluster.node(node).connstr(),
            ],
        )
        .await
        .map(|row| row.get(0))
}

async fn remove(
    client: &Client,
    cluster: &cluster::Cluster,
    node: usize,
) -> Result<i64, tokio_postgres::Error> {
    client
        .query_one(
            "SELECT paxos_remove_member($1, $2)",
            &[&GROUP, &cluster.node(node).connstr()],
        )
        .await
        .map(|row| row.get(0))
}

/// Writes `rows` rows from each session at once (session s writes keys s*10000..).
async fn write_from_each(sessions: &[Client], rows: usize) {
    futures_util::future::join_all(sessions.iter().enumerate().map(|(s, client)| async move {
        for n in 0..rows {
            client
                .execute(
                    "INSERT INTO kv VALUES ($1, 'before the join')",
                    &[&((s * 10_000 + n) as i32)],
                )
                .await
                .expect("a write");
        }
    }))
    .await;
}

/// Writes rows `from..` on `client` until `stop` is set; returns how many it wrote. Every
/// write must succeed: a majority stays up throughout.
fn write_until(client: Client, from: i32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<i32> {
    tokio::spawn(async move {
        let mut k = from;
        while !stop.load(Ordering::Relaxed) {
            client
                .execute("INSERT INTO kv VALUES ($1, 'during')", &[&k])
                .await
                .unwrap_or_else(|e| panic!("write {k} during the repair: {e}"));
            k += 1;
        }
        k - from
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_member_is_removed_and_replaced_while_writes_go_on() {
    let cluster = start("replace", 4);
    let clients = group_of(&cluster, &[0, 1, 2]).await;
    for k in 0..3 {
        clients[k as usize]
            .execute("INSERT INTO kv VALUES ($1, 'before')", &[&k])
            .await
            .unwrap();
    }
    cluster.stop(2).expect("node 2 is lost");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = write_until(connect(&cluster, 0).await, 1000, stop.clone());
    let (a, b) = (&clients[0], &clients[1]);

    // Refused, changing nothing: not a member, this node itself, NULLs, another role.
    for (sql, code) in [
        (
            "SELECT paxos_remove_member('g', 'host=127.0.0.1 port=1 dbname=postgres')".to_owned(),
            "42704",
        ),
        (
            format!(
                "SELECT paxos_remove_member('g', '{}')",
                cluster.node(1).connstr()
            ),
            "22023",
        ),
        ("SELECT paxos_remove_member('g', NULL)".to_owned(), "22004"),
        ("SELECT paxos_remove_member(NULL, 'x')".to_owned(), "22004"),
        (
            "SELECT paxos_remove_member('nope', 'x')".to_owned(),
            "42704",
        ),
        (
            "CREATE ROLE clerk; SET ROLE clerk; SELECT paxos_remove_member('g', 'x')".to_owned(),
            "42501",
        ),
    ] {
        let refused = b.batch_execute(&sql).await;
        assert_eq!(
            sqlstate(&refused).as_deref(),
            Some(code),
            "{sql}: {refused:?}"
        );
        b.batch_execute("RESET ROLE").await.unwrap();
    }
    assert_eq!(voters(b).await, 3);

    let removed = remove(b, &cluster, 2).await.expect("remove the lost node");
    assert!(removed > 0);
    assert_eq!(voters(b).await, 2);
    let again = remove(a, &cluster, 2).await;
    assert_eq!(sqlstate(&again).as_deref(), Some("42704"), "{again:?}");

    // A new node takes its place: it joins while writes go on, by a state copy.
    join(&cluster, &clients[3], 3, 0)
        .await
        .expect("the replacement joins");
    clients[3]
        .execute("INSERT INTO kv VALUES (3, 'from the new member')", &[])
        .await
        .expect("a write on the replacement");
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0, "writes went on during the repair");
    let survivors = [&clients[0], &clients[1], &clients[3]];
    for client in survivors {
        assert_eq!(voters(client).await, 3);
    }
    let members: Vec<Client> = vec![
        connect(&cluster, 0).await,
        connect(&cluster, 1).await,
        connect(&cluster, 3).await,
    ];
    assert_replicas_identical(&members).await;

    // The removed node comes back: it learns from the members that it is out, and drops
    // the group; its table stays, as an ordinary table.
    cluster.restart(2).expect("node 2 comes back");
    let returned = connect(&cluster, 2).await;
    eventually(Duration::from_secs(30), || async {
        let groups: i64 = returned
            .query_one("SELECT count(*) FROM pgp_metadata.\"group\"", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if groups == 0 {
            Ok(())
        } else {
            Err("the returned node still holds the group".to_owned())
        }
    })
    .await;
    returned
        .execute("INSERT INTO kv VALUES (-1, 'local now')", &[])
        .await
        .expect("an ordinary table now");
    let seen: i64 = members[0]
        .query_one("SELECT count(*) FROM kv WHERE k = -1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 0, "the old member's writes no longer reach the group");
    members[0]
        .execute("INSERT INTO kv VALUES (4, 'after')", &[])
        .await
        .expect("the group goes on");
    assert_replicas_identical(&members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_five_member_group_that_lost_two_is_repaired() {
    let cluster = start("lost2", 5);
    let clients = group_of(&cluster, &[0, 1, 2, 3, 4]).await;
    clients[4]
        .execute("INSERT INTO kv VALUES (0, 'before')", &[])
        .await
        .unwrap();
    cluster.stop(3).expect("node 3 is lost");
    cluster.stop(4).expect("node 4 is lost");
    // Three of five: a majority, but no margin left.
    remove(&clients[0], &cluster, 3)
        .await
        .expect("remove node 3");
    remove(&clients[1], &cluster, 4)
        .await
        .expect("remove node 4");
    assert_eq!(voters(&clients[2]).await, 3);
    // Three members again, so one more may fail.
    cluster.stop(2).expect("node 2 fails too");
    for k in 1..=5 {
        clients[k as usize % 2]
            .execute("INSERT INTO kv VALUES ($1, 'after')", &[&k])
            .await
            .expect("two of three members write on");
    }
    assert_replicas_identical(&clients[..2]).await;
    let rows: i64 = clients[1]
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 6);
}

/// A join into a group with a long log, with the smallest lock table PostgreSQL allows (no
/// lock per round), while writes go on; a join cut short (a statement timeout, a cancel)
/// while it copies the state leaves no member behind, so the group's majority is unchanged,
/// and the node can join again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_holds_no_lock_per_round_and_a_failed_join_leaves_no_member() {
    let cluster = cluster::Cluster::start(cluster::ClusterOptions {
        nodes: 3,
        preload_pg_paxos: true,
        extra_conf: vec!["max_locks_per_transaction = 10".into()],
        name: "longjoin".into(),
    })
    .expect("three nodes");
    let clients = group_of(&cluster, &[0, 1]).await;
    // A log longer than the whole lock table (10 locks x the server's connections).
    let sessions: Vec<Client> = futures_util::future::join_all((0..4).map(|i| {
        let cluster = &cluster;
        async move { connect(cluster, i % 2).await }
    }))
    .await;
    write_from_each(&sessions, 800).await;
    assert!(log_length(&clients[0]).await > 3000);

    let joiner = &clients[2];
    // Another session holds the joiner's table: each join waits in its state copy until
    // it is cut short.
    let holder = connect(&cluster, 2).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE kv IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for cut in ["SET statement_timeout = '300ms'", "cancel"] {
        let canceller = if cut == "cancel" {
            let pid = backend_pid(joiner).await;
            let other = connect(&cluster, 2).await;
            Some(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                other
                    .execute("SELECT pg_cancel_backend($1)", &[&pid])
                    .await
                    .unwrap();
            }))
        } else {
            joiner.batch_execute(cut).await.unwrap();
            None
        };
        let cut_short = join(&cluster, joiner, 2, 0).await;
        if let Some(canceller) = canceller {
            canceller.await.unwrap();
        }
        assert_eq!(
            sqlstate(&cut_short).as_deref(),
            Some("57014"),
            "{cut}: {cut_short:?}"
        );
        joiner
            .batch_execute("RESET statement_timeout")
            .await
            .unwrap();
        for (i, client) in clients[..2].iter().enumerate() {
            assert_eq!(
                voters(client).await,
                2,
                "node {i}: no member left behind ({cut})"
            );
        }
        let groups: i64 = joiner
            .query_one("SELECT count(*) FROM pgp_metadata.\"group\"", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(groups, 0, "nothing half-written on the joiner");
    }
    holder.batch_execute("ROLLBACK").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = write_until(connect(&cluster, 1).await, 100_000, stop.clone());
    join(&cluster, joiner, 2, 0)
        .await
        .expect("the join, with a long log and a write load");
    stop.store(true, Ordering::Relaxed);
    assert!(writer.await.unwrap() > 0);
    for client in &clients {
        assert_eq!(voters(client).await, 3);
    }
    assert_replicas_identical(&clients).await;
}

/// A joining node killed (kill -9) while it copies the group's state leaves no member
/// behind: the group keeps its majority and writes go on; restarted, the node holds nothing
/// of the group and joins again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_while_joining_leaves_no_member() {
    let cluster = start("killjoin", 3);
    let clients = group_of(&cluster, &[0, 1]).await;
    write_from_each(&clients[..2], 20).await;
    // Another session on the joining node holds the table: the join's state copy waits for
    // it, so the kill lands during the copy, whatever the machine's speed.
    let holder = connect(&cluster, 2).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE kv IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let joining = connect(&cluster, 2).await;
    let join_sql = format!(
        "SELECT paxos_join_group('{GROUP}', '{}', '{}')",
        cluster.node(0).connstr(),
        cluster.node(2).connstr()
    );
    let attempt = tokio::spawn(async move { joining.batch_execute(&join_sql).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(2).expect("kill -9 the joining node");
    drop(holder);
    assert!(
        attempt.await.unwrap().is_err(),
        "the join died with its node"
    );
    for (i, client) in clients[..2].iter().enumerate() {
        assert_eq!(voters(client).await, 2, "node {i}: no member left behind");
    }
    clients[0]
        .execute("INSERT INTO kv VALUES (-1, 'after the kill')", &[])
        .await
        .expect("the two members write on");

    cluster.restart(2).expect("the node comes back");
    let node2 = connect(&cluster, 2).await;
    let groups: i64 = node2
        .query_one("SELECT count(*) FROM pgp_metadata.\"group\"", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(groups, 0, "nothing of the group survived the crash");
    join(&cluster, &node2, 2, 1)
        .await
        .expect("the node joins again");
    let members = vec![
        connect(&cluster, 0).await,
        connect(&cluster, 1).await,
        node2,
    ];
    assert_replicas_identical(&members).await;
}

/// Rows of the group's log this node keeps.
async fn kept_rounds(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pgp_metadata.round WHERE group_id = $1",
            &[&GROUP],
        )
        .await
        .unwrap()
        .get(0)
}

async fn compacted_through(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT compacted_through FROM pgp_metadata.promise WHERE group_id = $1",
            &[&GROUP],
        )
        .await
        .unwrap()
        .get(0)
}

const RETENTION: i64 = 100;

/// `nodes` servers keeping `RETENTION` rounds, a group of nodes 0 to 2 with the replicated
/// tables `kv` and `events` (whose ids come from a sequence), and a session per node.
async fn retaining_group(name: &str, nodes: usize) -> (TestCluster, Vec<Client>) {
    let cluster = start_with(name, nodes, &["pg_paxos.log_retention = 100"]);
    let clients = group_of(&cluster, &[0, 1, 2]).await;
    create_everywhere(
        &clients,
        "CREATE TABLE events (id bigserial PRIMARY KEY, note text NOT NULL)",
    )
    .await;
    replicate(&clients[0], "events").await.expect("replicate");
    (cluster, clients)
}

/// With `pg_paxos.log_retention` rounds kept, the log of every member stays bounded under a
/// write load; a member that was down meanwhile finds the rounds it missed forgotten on
/// every member and catches up by copying one's state (rows and sequences), by itself; a
/// new node joins by a state copy too; forgotten rounds are refused to proposers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_log_stays_bounded_and_a_member_that_missed_forgotten_rounds_copies_the_state() {
    let (cluster, clients) = retaining_group("compact", 4).await;
    cluster.stop(2).expect("node 2 goes down");

    let sessions: Vec<Client> = futures_util::future::join_all((0..4).map(|i| {
        let cluster = &cluster;
        async move { connect(cluster, i % 2).await }
    }))
    .await;
    let load = write_from_each(&sessions, 400);
    let mut load = std::pin::pin!(load);
    let mut most = 0;
    loop {
        tokio::select! {
            () = &mut load => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                for client in &clients[..2] {
                    most = most.max(kept_rounds(client).await);
                }
            }
        }
    }
    for n in 0..50 {
        clients[n % 2]
            .execute(
                "INSERT INTO events (note) VALUES ('while node 2 was down')",
                &[],
            )
            .await
            .unwrap();
    }
    let highest: i64 = clients[0]
        .query_one("SELECT paxos_max_group_round($1)", &[&GROUP])
        .await
        .unwrap()
        .get(0);
    assert!(highest > 1600, "{highest} rounds");
    // Without compaction every member would keep all 1,650 rounds.
    assert!(most < 1000, "at most {most} rounds kept during the load");
    for client in &clients[..2] {
        let kept = eventually(Duration::from_secs(30), || async {
            let kept = kept_rounds(client).await;
            if kept <= RETENTION + RETENTION / 10 + 10 {
                Ok(kept)
            } else {
                Err(format!("{kept} rounds kept"))
            }
        })
        .await;
        assert!(kept > 0);
    }

    // Forgotten rounds are refused to a proposer, and to a reader of the log.
    let old = compacted_through(&clients[0]).await;
    assert!(old > 1000, "compacted through {old}");
    let accept = format!(
        r#"{{"group":"{GROUP}","first_round":{old},"ballot":{{"number":1000,"proposer":"x"}},"entries":[{{"id":"i","kind":"value","value":"v"}}],"chosen_through":null}}"#
    );
    let prepare = format!(
        r#"{{"group":"{GROUP}","from_round":1,"ballot":{{"number":1000,"proposer":"x"}},"leader":null}}"#
    );
    for (function, request) in [("paxos_accept", accept), ("paxos_prepare_from", prepare)] {
        let refused = clients[0]
            .query_one(&format!("SELECT pgp_metadata.{function}($1)"), &[&request])
            .await;
        assert_eq!(sqlstate(&refused).as_deref(), Some("55000"), "{function}");
        assert!(format!("{refused:?}").contains("compacted"), "{refused:?}");
    }
    let read = clients[1]
        .query_one("SELECT * FROM paxos('p', $1, 5)", &[&GROUP])
        .await;
    assert_eq!(sqlstate(&read).as_deref(), Some("55000"), "{read:?}");

    // Node 2 comes back: it catches up by a state copy, by itself (watched with reads that
    // do not wait for it: a strong read would take a lock the copy needs, and be told so).
    cluster.restart(2).expect("node 2 comes back");
    let node2 = connect(&cluster, 2).await;
    node2
        .batch_execute("SET pg_paxos.consistency_model = optimistic")
        .await
        .unwrap();
    let expected: i64 = clients[0]
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    eventually(Duration::from_secs(60), || async {
        let rows: i64 = node2
            .query_one("SELECT count(*) FROM kv", &[])
            .await
            .unwrap()
            .get(0);
        if rows == expected {
            Ok(())
        } else {
            Err(format!("node 2 has {rows} of {expected} rows"))
        }
    })
    .await;
    assert!(
        compacted_through(&node2).await >= old,
        "node 2 took a state copy"
    );
    // The applier says so just after its copy commits.
    eventually(Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(cluster.node(2).log_path()).unwrap();
        log.contains("caught up by a state copy")
            .then_some(())
            .ok_or(log)
    })
    .await;
    node2
        .batch_execute("RESET pg_paxos.consistency_model")
        .await
        .unwrap();

    // A new node joins by a state copy of a member that forgot most of the log.
    let node3 = connect(&cluster, 3).await;
    join(&cluster, &node3, 3, 1).await.expect("node 3 joins");
    // The copies carry the sequences: every member draws the same next ids.
    for client in [&node2, &node3, &clients[0]] {
        client
            .execute("INSERT INTO events (note) VALUES ('after')", &[])
            .await
            .expect("a member writes");
    }
    let ids: Vec<i64> = node3
        .query("SELECT id FROM events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, (1..=53).collect::<Vec<i64>>());
    let members = vec![
        connect(&cluster, 0).await,
        connect(&cluster, 1).await,
        node2,
        node3,
    ];
    for client in &members {
        assert_eq!(voters(client).await, 4);
    }
    assert_replicas_identical(&members).await;
}

/// A member killed (kill -9) at chosen-at-random moments of its catch-up by a state copy,
/// and of the compactions around it, recovers by itself each time: once it stays up it holds
/// every row, none twice (the events' ids are drawn from a sequence on every member).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_killed_while_it_copies_the_state_recovers_by_itself() {
    let (cluster, clients) = retaining_group("killcopy", 3).await;
    cluster.stop(2).expect("node 2 goes down");
    clients[0]
        .execute(
            "INSERT INTO events (note) SELECT 'bulk ' || g FROM generate_series(1, 100000) g",
            &[],
        )
        .await
        .expect("a bulk write");
    write_from_each(&clients[..2], 150).await;

    // The kill points, from a fixed-seed generator so that a failure can be replayed.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for attempt in 0..6 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_millis((state >> 33) % 1200);
        cluster.restart(2).expect("node 2 restarts");
        tokio::time::sleep(delay).await;
        cluster.kill(2).expect("kill -9 node 2");
        println!("attempt {attempt}: killed {delay:?} after the restart");
        clients[attempt % 2]
            .execute("INSERT INTO events (note) VALUES ('between kills')", &[])
            .await
            .expect("the others write on");
    }
    cluster.restart(2).expect("node 2 comes back for good");
    let node2 = connect(&cluster, 2).await;
    node2
        .batch_execute("SET pg_paxos.consistency_model = optimistic")
        .await
        .unwrap();
    eventually(Duration::from_secs(60), || async {
        let counts = "SELECT (SELECT count(*) FROM kv), (SELECT count(*) FROM events)";
        let here = node2
            .query_one(counts, &[])
            .await
            .map_err(|e| e.to_string())?;
        let there = clients[0].query_one(counts, &[]).await.unwrap();
        let (a, b): ((i64, i64), (i64, i64)) =
            ((here.get(0), here.get(1)), (there.get(0), there.get(1)));
        if a == b {
            Ok(())
        } else {
            Err(format!("node 2 has {a:?} rows, node 0 {b:?}"))
        }
    })
    .await;
    node2
        .batch_execute("RESET pg_paxos.consistency_model")
        .await
        .unwrap();
    // The applier logs a finished copy just after it commits.
    let (started, finished) = eventually(Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(cluster.node(2).log_path()).unwrap();
        let finished = log.matches("caught up by a state copy").count();
        let started = log.matches("copying the state of paxos group").count();
        (finished >= 1)
            .then_some((started, finished))
            .ok_or_else(|| format!("{started} state copies started, none finished"))
    })
    .await;
    println!("{started} state copies started, {finished} finished");
    assert!(
        finished >= 1 && started > finished,
        "a kill landed in a copy"
    );
    let members = vec![
        connect(&cluster, 0).await,
        connect(&cluster, 1).await,
        node2,
    ];
    assert_replicas_identical(&members).await;
}

async fn groups_here(client: &Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM pgp_metadata.\"group\"", &[])
        .await
        .unwrap()
        .get(0)
}

/// paxos_drop_group ends a group on every member, after each applied every write before the
/// drop; its tables stay, as ordinary tables. A member that was down meanwhile catches up
/// from the others when it comes back and drops the group too; the id is not used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_a_group_ends_it_on_every_member() {
    let cluster = start("dropgroup", 3);
    let clients = group_of(&cluster, &[0, 1, 2]).await;
    write_from_each(&clients[..1], 5).await;
    cluster.stop(2).expect("node 2 goes down");
    for k in 100..105 {
        clients[1]
            .execute("INSERT INTO kv VALUES ($1, 'node 2 misses it')", &[&k])
            .await
            .unwrap();
    }
    let round: i64 = clients[1]
        .query_one("SELECT paxos_drop_group($1)", &[&GROUP])
        .await
        .expect("the drop")
        .get(0);
    for (i, client) in clients[..2].iter().enumerate() {
        assert_eq!(groups_here(client).await, 0, "node {i} dropped the group");
        let dropped: i64 = client
            .query_one(
                "SELECT round_num FROM pgp_metadata.dropped_group WHERE group_id = $1",
                &[&GROUP],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(dropped, round);
        let rows: i64 = client
            .query_one("SELECT count(*) FROM kv", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 10, "node {i} applied every write before the drop");
    }
    // Ordinary tables now: a write stays on its node.
    clients[0]
        .execute("INSERT INTO kv VALUES (-1, 'local')", &[])
        .await
        .expect("a local write");
    let elsewhere: i64 = clients[1]
        .query_one("SELECT count(*) FROM kv WHERE k = -1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(elsewhere, 0);
    let append = clients[0]
        .query_one("SELECT paxos_append('p', $1, 'v')", &[&GROUP])
        .await;
    assert_eq!(sqlstate(&append).as_deref(), Some("42704"), "{append:?}");
    assert!(format!("{append:?}").contains("was dropped at round"));
    let again = clients[0]
        .query_one(
            "SELECT paxos_create_group($1, $2)",
            &[&GROUP, &cluster.node(0).connstr()],
        )
        .await;
    assert_eq!(sqlstate(&again).as_deref(), Some("42710"), "{again:?}");

    cluster.restart(2).expect("node 2 comes back");
    let node2 = connect(&cluster, 2).await;
    eventually(Duration::from_secs(30), || async {
        match groups_here(&node2).await {
            0 => Ok(()),
            n => Err(format!("node 2 still has {n} groups")),
        }
    })
    .await;
    let rows: i64 = node2
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    // It fetched the rounds it missed from a member that dropped the group (which keeps its
    // last rounds), applied them, and dropped the group at the same round.
    assert_eq!(rows, 10, "node 2 applied every write before the drop");
    let dropped: i64 = node2
        .query_one(
            "SELECT round_num FROM pgp_metadata.dropped_group WHERE group_id = $1",
            &[&GROUP],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dropped, round);
}

/// A joining node killed (kill -9) at chosen-at-random moments of its join, under a write
/// load, never leaves a voter that does not answer: restarted, it is either no member (a
/// learner at most, which leaving removes) or a member that catches up by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_at_any_moment_of_its_join_recovers_or_was_never_a_member() {
    let cluster = start("killjoins", 3);
    let clients = group_of(&cluster, &[0, 1]).await;
    write_from_each(&clients[..2], 200).await;
    let join_sql = format!(
        "SELECT paxos_join_group('{GROUP}', '{}', '{}')",
        cluster.node(1).connstr(),
        cluster.node(2).connstr()
    );
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut outcomes = Vec::new();
    for attempt in 0..6 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_millis((state >> 33) % 400);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = write_until(
            connect(&cluster, attempt % 2).await,
            100_000 * (attempt as i32 + 1),
            stop.clone(),
        );
        let joining = connect(&cluster, 2).await;
        let sql = join_sql.clone();
        let attempt_join = tokio::spawn(async move { joining.batch_execute(&sql).await });
        tokio::time::sleep(delay).await;
        cluster.kill(2).expect("kill -9 the joining node");
        let _ = attempt_join.await;
        stop.store(true, Ordering::Relaxed);
        assert!(writer.await.unwrap() > 0, "the two members wrote on");
        cluster.restart(2).expect("the node comes back");
        let node2 = connect(&cluster, 2).await;
        let outcome = match voters(&clients[0]).await {
            3 => {
                // A member: it catches up by itself (with the others), then leaves for the
                // next attempt.
                let members = [
                    connect(&cluster, 0).await,
                    connect(&cluster, 1).await,
                    node2,
                ];
                assert_replicas_identical(&members).await;
                members[2]
                    .execute("SELECT paxos_leave_group($1)", &[&GROUP])
                    .await
                    .expect("the member leaves");
                members[2].batch_execute("TRUNCATE kv").await.unwrap();
                "member"
            }
            2 if groups_here(&node2).await == 1 => {
                node2
                    .execute("SELECT paxos_leave_group($1)", &[&GROUP])
                    .await
                    .expect("the learner leaves");
                node2.batch_execute("TRUNCATE kv").await.unwrap();
                "learner"
            }
            2 => "nothing",
            n => panic!("attempt {attempt}: {n} voters"),
        };
        assert_eq!(
            voters(&clients[0]).await,
            2,
            "attempt {attempt}: back to two"
        );
        println!("attempt {attempt}: killed after {delay:?}: {outcome}");
        outcomes.push(outcome);
    }
    println!("{outcomes:?}");
    assert_replicas_identical(&clients[..2]).await;
}

/// Switches the `slow_apply` trigger function on `client`'s server, at once: it reads the
/// file ALTER SYSTEM writes (a reload would reach the applier only between transactions).
async fn slow_apply(client: &Client, setting: &str) {
    for sql in [
        format!("SET test.slow_apply = '{setting}'"),
        format!("ALTER SYSTEM SET test.slow_apply = '{setting}'"),
    ] {
        client.batch_execute(&sql).await.unwrap();
    }
}

/// The window a join used to leave: the join entry is chosen, and the joining node dies
/// before the join returns. The node is a learner with committed state by then, so once
/// restarted it applies the join and catches up by itself instead of staying a voter that
/// never answers. (A trigger on the joining node's table, switched on and off from outside,
/// slows its apply of the rounds up to the join, which holds the join there.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_after_its_join_entry_is_chosen_becomes_a_working_member() {
    let cluster = start("killjoined", 3);
    let clients = group_of(&cluster, &[0, 1]).await;
    write_from_each(&clients[..2], 20).await;
    clients[2]
        .batch_execute(
            "CREATE FUNCTION slow_apply() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF pg_read_file('postgresql.auto.conf') LIKE '%slow_apply = ''on''%' THEN \
                     PERFORM pg_sleep(0.3); END IF; \
                 RETURN NEW; END $$; \
             CREATE TRIGGER slow BEFORE INSERT ON kv FOR EACH ROW EXECUTE FUNCTION slow_apply()",
        )
        .await
        .unwrap();
    slow_apply(&clients[2], "on").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = write_until(connect(&cluster, 0).await, 100_000, stop.clone());
    let joining = connect(&cluster, 2).await;
    let sql = format!(
        "SELECT paxos_join_group('{GROUP}', '{}', '{}')",
        cluster.node(1).connstr(),
        cluster.node(2).connstr()
    );
    let attempt = tokio::spawn(async move { joining.batch_execute(&sql).await });
    eventually(Duration::from_secs(30), || async {
        match voters(&clients[0]).await {
            3 => Ok(()),
            n => Err(format!("{n} voters")),
        }
    })
    .await;
    assert!(
        !attempt.is_finished(),
        "the join still applies the rounds up to it"
    );
    cluster.kill(2).expect("kill -9 the joined node");
    assert!(
        attempt.await.unwrap().is_err(),
        "the join died with its node"
    );
    stop.store(true, Ordering::Relaxed);
    assert!(writer.await.unwrap() > 0);

    cluster.restart(2).expect("the node comes back");
    let node2 = connect(&cluster, 2).await;
    slow_apply(&node2, "off").await;
    let members = vec![
        connect(&cluster, 0).await,
        connect(&cluster, 1).await,
        node2,
    ];
    // The restarted node's applier applies the join by itself, as soon as it can.
    for client in &members {
        eventually(Duration::from_secs(30), || async {
            match voters(client).await {
                3 => Ok(()),
                n => Err(format!("{n} voters")),
            }
        })
        .await;
    }
    assert_replicas_identical(&members).await;
    // A working member: with node 0 down, nodes 1 and 2 are the majority.
    cluster.stop(0).expect("node 0 goes down");
    members[2]
        .execute("INSERT INTO kv VALUES (-1, 'without node 0')", &[])
        .await
        .expect("the joined node writes with node 1");
    assert_replicas_identical(&members[1..]).await;
}

/// Members killed (kill -9) at chosen-at-random moments while a write load runs and every
/// member compacts its log every few rounds (retention 100): each one restarted recovers by
/// itself, and the members end with the same rows, none lost and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_killed_while_they_compact_recover_by_themselves() {
    let (cluster, _sessions) = retaining_group("killcompact", 3).await;
    let mut state: u64 = 0x51_7cc1_b727_220a;
    let (mut acknowledged, mut unknown) = (0, 0);
    for attempt in 0..5 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let victim = (state >> 40) as usize % 3;
        let delay = Duration::from_millis((state >> 33) % 800);
        // The two others write, one event at a time. A write whose leader was the member
        // killed may be reported as of unknown outcome (40003); every other one succeeds.
        let writers: Vec<Client> = futures_util::future::join_all(
            (0..3)
                .filter(|&i| i != victim)
                .map(|i| connect(&cluster, i)),
        )
        .await;
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut acknowledged, mut unknown) = (0i64, 0i64);
                while !stop.load(Ordering::Relaxed) {
                    for writer in &writers {
                        let write = writer
                            .execute("INSERT INTO events (note) VALUES ('load')", &[])
                            .await;
                        match sqlstate(&write).as_deref() {
                            None => acknowledged += 1,
                            Some("40003") => unknown += 1,
                            Some(_) => panic!("a write with one member down: {write:?}"),
                        }
                    }
                }
                (acknowledged, unknown)
            }
        });
        tokio::time::sleep(delay).await;
        cluster.kill(victim).expect("kill -9 a member");
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let (a, u) = load.await.unwrap();
        acknowledged += a;
        unknown += u;
        println!("attempt {attempt}: node {victim} killed after {delay:?}");
        cluster.restart(victim).expect("the member comes back");
    }
    let members = vec![
        connect(&cluster, 0).await,
        connect(&cluster, 1).await,
        connect(&cluster, 2).await,
    ];
    let rows: i64 = members[0]
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        (acknowledged..=acknowledged + unknown).contains(&rows),
        "{rows} rows for {acknowledged} acknowledged writes and {unknown} of unknown outcome"
    );
    for client in &members {
        assert!(compacted_through(client).await > 0, "the members compacted");
    }
    assert_replicas_identical(&members).await;
}

/// A leave on a node where a replicated write's transaction is open waits for it, and the
/// write goes on meanwhile. Leaving used to take the range lock and then wait for the
/// applied position, the reverse of writers and appliers: the write's next vote waited
/// for the leave, which waited for the write (CI once saw 40P01 between a leave and the
/// applier applying that very leave).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leave_waits_for_an_open_replicated_write_on_its_node() {
    let cluster = start("leavewaits", 1);
    let clients = group_of(&cluster, &[0]).await;
    let watcher = connect(&cluster, 0).await;
    let leaving = connect(&cluster, 0).await;
    let leaving_pid = backend_pid(&leaving).await;
    let writer = connect(&cluster, 0).await;
    let writer_pid = backend_pid(&writer).await;
    // Two writes in one transaction (a DO block), the second once the leave waits.
    let writes = tokio::spawn(async move {
        writer
            .batch_execute(&format!(
                "DO $$ BEGIN \
                   INSERT INTO kv VALUES (1, 'before the leave'); \
                   FOR i IN 1..400 LOOP \
                     EXIT WHEN EXISTS (SELECT FROM pg_stat_activity \
                                       WHERE pid = {leaving_pid} AND wait_event_type = 'Lock'); \
                     PERFORM pg_sleep(0.05); \
                   END LOOP; \
                   INSERT INTO kv VALUES (2, 'while the leave waits'); \
                 END $$"
            ))
            .await
    });
    let waits_on = |pid: i32, event: &'static str| {
        let watcher = &watcher;
        async move {
            let waiting: bool = watcher
                .query_one(
                    "SELECT coalesce(bool_or(wait_event = $2 OR wait_event_type = $2), false) \
                     FROM pg_stat_activity WHERE pid = $1",
                    &[&pid, &event],
                )
                .await
                .unwrap()
                .get(0);
            waiting
                .then_some(())
                .ok_or_else(|| format!("{pid} does not wait on {event} yet"))
        }
    };
    eventually(Duration::from_secs(20), || waits_on(writer_pid, "PgSleep")).await;
    let leave = tokio::spawn(async move {
        leaving
            .query_one("SELECT paxos_leave_group($1)", &[&GROUP])
            .await
            .map(|row| row.get::<_, i64>(0))
    });
    tokio::time::timeout(Duration::from_secs(40), writes)
        .await
        .expect("the writes do not wait for the leave")
        .unwrap()
        .expect("both writes");
    tokio::time::timeout(Duration::from_secs(30), leave)
        .await
        .expect("the leave ends once the writes committed")
        .unwrap()
        .expect("the leave");
    assert_eq!(groups_here(&clients[0]).await, 0, "the group is gone here");
    let rows: i64 = clients[0]
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "both writes stay, in an ordinary table");
}
