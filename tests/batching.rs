//! Without a proposer (here: no background worker slot left for it), appends that wait on
//! the leading node are proposed in one batch by whichever session's turn it is. A session
//! that leaves while its entry is in another's batch must not hand the batch's outcome to
//! whoever posts next.
mod common;

use std::time::Duration;

use common::*;
use tokio_postgres::Client;

const LIMIT: Duration = Duration::from_secs(30);

/// A session on the leader with a request timeout longer than the test's pauses.
async fn patient_session(cluster: &cluster::Cluster, node: usize) -> (Client, i32) {
    let session = connect(cluster, node).await;
    session
        .batch_execute("SET pg_paxos.request_timeout = '30s'")
        .await
        .unwrap();
    let pid = backend_pid(&session).await;
    (session, pid)
}

/// Waits until backend `pid` is (or, with `waiting` false, is no longer) napping in line for
/// its turn, which is the only place pg_paxos sleeps on the Extension wait event.
async fn until_waiting_in_line(observer: &Client, pid: i32, waiting: bool) {
    eventually(LIMIT, || async {
        let in_line: bool = observer
            .query_one(
                "SELECT coalesce(bool_or(wait_event_type = 'Extension'), false) \
                 FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if in_line == waiting {
            Ok(())
        } else {
            Err(format!("backend {pid} in line: {in_line}"))
        }
    })
    .await
}

fn signal(pid: i32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Found by the soak (seed 1007): session A's entry was taken into session T2's batch, A was
/// cancelled and disconnected, and its backend's exit freed the slot A's entry still held in
/// T2's batch. Session P posted into that slot, and when T2's batch was chosen, P was told
/// its append had been chosen at the round of A's entry: an acknowledged value that no
/// member ever saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_leaving_a_batch_does_not_pass_its_round_on() {
    // Slots for the logical replication launcher, pg_paxos's launcher and the applier.
    let cluster = start_with("batching", 3, &["max_worker_processes = 3"]);
    let clients = form_group(&cluster).await;
    let leader = leader_of(&cluster, &clients[0]).await;
    let observer = &clients[leader];
    let proposers: i64 = observer
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_paxos proposer'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        proposers, 0,
        "sessions propose themselves without a proposer"
    );
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &others {
        cluster.pause(i).expect("pause a member");
    }

    // T1 holds the turn: its batch waits for a majority.
    let (t1, t1_pid) = patient_session(&cluster, leader).await;
    let t1_append = tokio::spawn(async move { append(&t1, "t1").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A waits in line; stopped, it cannot take the turn when T1 ends.
    let (a, a_pid) = patient_session(&cluster, leader).await;
    let a_append = tokio::spawn(async move { append(&a, "a").await });
    until_waiting_in_line(observer, a_pid, true).await;
    signal(a_pid, "STOP");
    // T2 waits in line too, then takes the turn from the cancelled T1, with A's entry.
    let (t2, t2_pid) = patient_session(&cluster, leader).await;
    let t2_append = tokio::spawn(async move { append(&t2, "t2").await });
    until_waiting_in_line(observer, t2_pid, true).await;
    cancel_backend(observer, t1_pid).await;
    let t1_outcome = t1_append.await.unwrap();
    assert_eq!(sqlstate(&t1_outcome).as_deref(), Some("40003"));
    until_waiting_in_line(observer, t2_pid, false).await;

    // A is cancelled while its entry is in T2's batch, and its session ends.
    signal(a_pid, "CONT");
    cancel_backend(observer, a_pid).await;
    let a_outcome = a_append.await.unwrap();
    assert_eq!(
        sqlstate(&a_outcome).as_deref(),
        Some("40003"),
        "its entry may be chosen"
    );
    until_backend_gone(observer, a_pid).await;

    // P posts next, and waits for T2's batch to end.
    let (p, p_pid) = patient_session(&cluster, leader).await;
    let p_append = tokio::spawn(async move { append(&p, "p").await });
    until_waiting_in_line(observer, p_pid, true).await;
    for &i in &others {
        cluster.resume(i).expect("resume a member");
    }
    let acknowledged = [
        ("t2", t2_append.await.unwrap().expect("t2 is chosen")),
        ("p", p_append.await.unwrap().expect("p is chosen")),
    ];

    apply_all(observer).await;
    let log = read_log(observer).await;
    for (value, round) in acknowledged {
        let at_round = log.iter().find(|e| e.round == round);
        assert_eq!(
            at_round.and_then(|e| e.value.as_deref()),
            Some(value),
            "{value} was acknowledged at round {round}"
        );
    }
    let copies = log
        .iter()
        .filter(|e| e.value.as_deref() == Some("a"))
        .count();
    assert!(copies <= 1, "a landed {copies} times");
}
