//! Leader leases (`pg_paxos.lease_duration`): the leading member serves strong reads without
//! asking the members, the members that granted it a lease promise no other ballot until it
//! runs out, and a restarted member promises nothing for one lease duration.
mod common;

use std::time::Duration;

use common::*;
use tokio_postgres::Client;

const LEASE: &str = "pg_paxos.lease_duration = '3s'";
const LIMIT: Duration = Duration::from_secs(60);
/// A ballot number far above any a member uses here.
const HIGH: i64 = 1_000_000;

/// Asks `client`'s member to promise ballot `HIGH` from round 1000 on: `Ok(None)` when it
/// promised, `Ok(Some(n))` when it refused, reporting ballot number `n`.
async fn prepare_high(client: &Client) -> Result<Option<i64>, String> {
    let request = format!(
        r#"{{"group":"{GROUP}","from_round":1000,"ballot":{{"number":{HIGH},"proposer":"probe"}}}}"#
    );
    let reply: String = client
        .query_one("SELECT pgp_metadata.paxos_prepare_from($1)", &[&request])
        .await
        .map_err(|e| format!("{:?}", e.as_db_error().map(|d| d.message())))?
        .get(0);
    if reply.contains("\"Promise\"") {
        return Ok(None);
    }
    let number = reply
        .split(r#""Reject":{"promised":{"number":"#)
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok());
    number
        .map(Some)
        .ok_or_else(|| format!("unexpected reply {reply}"))
}

/// Inserts a row into `t`, or finds it there (an attempt whose outcome was unknown made it).
async fn insert(client: &Client, id: i32, v: &str) -> Result<(), String> {
    let result = client
        .execute("INSERT INTO t VALUES ($1, $2)", &[&id, &v])
        .await;
    match sqlstate(&result).as_deref() {
        None | Some("23505") => Ok(()),
        _ => Err(format!("{result:?}")),
    }
}

/// A replicated table `t` with one row written on member `writer`.
async fn table_with_a_row(clients: &[Client], writer: usize) {
    create_everywhere(clients, "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    replicate(&clients[0], "t").await.unwrap();
    clients[writer]
        .execute("INSERT INTO t VALUES (1, 'first')", &[])
        .await
        .unwrap();
}

/// Holds every running member's acceptor table but `except`'s locked, in sessions of their own:
/// those members answer no vote, no max-round query and no lease request until released.
async fn block_members(cluster: &TestCluster, except: usize) -> Vec<Client> {
    let mut locks = Vec::new();
    for i in (0..cluster.nodes().len()).filter(|&i| i != except && cluster.is_running(i)) {
        let lock = connect(cluster, i).await;
        lock.batch_execute("BEGIN; LOCK TABLE pgp_metadata.round IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        locks.push(lock);
    }
    locks
}

async fn read_v(client: &Client, id: i32) -> Result<Option<String>, tokio_postgres::Error> {
    client
        .query_opt("SELECT v FROM t WHERE id = $1", &[&id])
        .await
        .map(|row| row.map(|r| r.get(0)))
}

/// Waits until member `leader` serves a strong read of row `id` with every other member
/// unable to answer (its lease), and returns what it read.
async fn read_on_lease(
    cluster: &TestCluster,
    session: &Client,
    leader: usize,
    id: i32,
) -> Option<String> {
    eventually(LIMIT, || async {
        let locks = block_members(cluster, leader).await;
        let read = read_v(session, id).await;
        for lock in locks {
            lock.batch_execute("ROLLBACK").await.unwrap();
        }
        // Until the proposer renews, there is no lease: the read needs a majority.
        read.map_err(|e| format!("no lease yet: {e}"))
    })
    .await
}

/// With the other members unable to answer, a strong read on the leading member still
/// succeeds while its lease holds, and sees a write just made on another member; with
/// leases off, the same read needs a majority and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leading_member_reads_on_its_lease_alone() {
    let cluster = start_with("leaseread", 3, &[LEASE, "pg_paxos.request_timeout = '1s'"]);
    let clients = form_group(&cluster).await;
    table_with_a_row(&clients, 1).await;
    let a = leader_of(&cluster, &clients[1]).await;
    let b = (a + 1) % 3;
    read_on_lease(&cluster, &clients[a], a, 1).await;
    // No session chooses how long the members are bound: the setting is the server's.
    let set = clients[b]
        .batch_execute("SET pg_paxos.lease_duration = '2s'")
        .await;
    assert_eq!(sqlstate(&set).as_deref(), Some("55P02"), "{set:?}");

    insert(&clients[b], 2, "second").await.unwrap();
    let row = read_on_lease(&cluster, &clients[a], a, 2).await;
    assert_eq!(row.as_deref(), Some("second"));

    for sql in [
        "ALTER SYSTEM SET pg_paxos.lease_duration = 0",
        "SELECT pg_reload_conf()",
    ] {
        clients[a].batch_execute(sql).await.unwrap();
    }
    let locks = block_members(&cluster, a).await;
    let session = connect(&cluster, a).await;
    let without = read_v(&session, 2).await;
    assert_eq!(sqlstate(&without).as_deref(), Some("08006"), "{without:?}");
    for lock in locks {
        lock.batch_execute("ROLLBACK").await.unwrap();
    }
}

/// A member that granted the leader a lease refuses a higher ballot, reporting the lease's;
/// once the leader is gone and its lease ran out, another member takes over with a lease
/// of its own, and every write acknowledged before is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_follow_no_other_ballot_until_the_lease_runs_out() {
    let cluster = start_with("leasefailover", 3, &[LEASE]);
    let clients = form_group(&cluster).await;
    table_with_a_row(&clients, 1).await;
    let a = leader_of(&cluster, &clients[1]).await;
    let (b, c) = ((a + 1) % 3, (a + 2) % 3);
    read_on_lease(&cluster, &clients[a], a, 1).await;
    let refused = prepare_high(&clients[c]).await.unwrap();
    assert!(
        refused.is_some_and(|n| n < HIGH),
        "C promised {HIGH}: {refused:?}"
    );
    insert(&clients[b], 2, "second").await.unwrap();

    cluster.stop(a).unwrap();
    eventually(LIMIT, || insert(&clients[b], 3, "third")).await;
    let leader = leader_of(&cluster, &clients[b]).await;
    assert_ne!(leader, a);
    for (id, v) in [(1, "first"), (2, "second"), (3, "third")] {
        let read = read_on_lease(&cluster, &clients[leader], leader, id).await;
        assert_eq!(read.as_deref(), Some(v), "row {id} on the new leader");
    }
}

/// A member forgets the leases it granted when it restarts: for one lease duration it then
/// promises no ballot but the one it had promised, and afterwards any higher one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_promises_no_other_ballot_for_one_lease() {
    let cluster = start_with("leaserestart", 3, &[LEASE]);
    let clients = form_group(&cluster).await;
    append(&clients[0], "first").await.unwrap();
    // Nobody left to renew a lease on C: whatever it refuses comes from its restart.
    cluster.stop(0).unwrap();
    cluster.stop(1).unwrap();
    cluster.kill(2).unwrap();
    cluster.restart(2).unwrap();
    let c = connect(&cluster, 2).await;
    let first = prepare_high(&c).await.unwrap();
    assert!(
        first.is_some_and(|n| n < HIGH),
        "promised at once: {first:?}"
    );
    eventually(LIMIT, || async {
        match prepare_high(&c).await? {
            None => Ok(()),
            Some(n) => Err(format!("still refused for ballot {n}")),
        }
    })
    .await;
}

/// A leader that gives its ballot up (here after a membership change it made) releases the
/// grants it held: its next ballot is promised at once, not a lease duration later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_gives_its_ballot_up_releases_its_lease() {
    let cluster = start_with("leaserelease", 3, &["pg_paxos.lease_duration = '20s'"]);
    let clients = form_group(&cluster).await;
    table_with_a_row(&clients, 1).await;
    let a = leader_of(&cluster, &clients[1]).await;
    let c = (a + 2) % 3;
    read_on_lease(&cluster, &clients[a], a, 1).await;

    clients[a]
        .query_one(
            "SELECT paxos_remove_member($1, $2)",
            &[&GROUP, &cluster.node(c).connstr()],
        )
        .await
        .unwrap();
    // The change ended A's ballot; its next append prepares anew with A and B, which both
    // granted the old ballot a lease of 20 s. Without the release it would wait for it.
    clients[a]
        .batch_execute("SET statement_timeout = '10s'")
        .await
        .unwrap();
    insert(&clients[a], 2, "second").await.unwrap();
    assert_eq!(
        read_v(&clients[a], 2).await.unwrap().as_deref(),
        Some("second")
    );
}
