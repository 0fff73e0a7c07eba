//! A group keeps working while a minority of its members is dead or hung, fails cleanly
//! without a majority, and catches up members that come back.
mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;

const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

async fn catch_up_everyone(cluster: &cluster::Cluster) {
    let mut logs = Vec::new();
    for node in 0..cluster.nodes().len() {
        let log = eventually(CATCH_UP_LIMIT, || async {
            let client = cluster
                .node(node)
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            client
                .query_one(
                    "SELECT paxos_apply_log('t', $1, paxos_max_group_round($1))",
                    &[&GROUP],
                )
                .await
                .map_err(|e| e.to_string())?;
            let log = read_log(&client).await;
            Ok(log)
        })
        .await;
        logs.push(log);
    }
    assert_same_gap_free_logs(&logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_down_is_tolerated_a_majority_down_fails_cleanly() {
    let cluster = start("kill", 3);
    let clients = form_group(&cluster).await;
    append(&clients[0], "before")
        .await
        .expect("append with all up");

    cluster.kill(2).expect("kill node 2");
    for i in 0..20 {
        append(&clients[i % 2], &format!("one-down-{i}"))
            .await
            .expect("append with one of three down");
    }

    cluster.kill(1).expect("kill node 1");
    clients[0]
        .batch_execute("SET statement_timeout = '2s'")
        .await
        .unwrap();
    let started = Instant::now();
    let error = append(&clients[0], "no-majority")
        .await
        .expect_err("append without a majority must fail");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "failed only after {waited:?}"
    );
    // 40003 once the value was sent to the members (a cancel included): a majority may
    // still choose it; 08006 when no leadership could be won, so nothing was sent.
    let db = error.as_db_error().expect("a server error");
    assert!(
        ["40003", "08006"].contains(&db.code().code()),
        "unexpected error {} {}",
        db.code().code(),
        db.message()
    );
    clients[0]
        .batch_execute("RESET statement_timeout")
        .await
        .unwrap();

    cluster.restart(1).expect("restart node 1");
    cluster.restart(2).expect("restart node 2");
    let after = eventually(CATCH_UP_LIMIT, || async {
        append(&clients[0], "after-restart")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    assert!(after > 20);
    catch_up_everyone(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_work_with_two_down() {
    let cluster = start("five", 5);
    let clients = form_group(&cluster).await;
    cluster.kill(3).expect("kill node 3");
    cluster.kill(4).expect("kill node 4");
    let writers = clients[..3]
        .iter()
        .enumerate()
        .map(|(node, client)| async move {
            for i in 0..10 {
                append(client, &format!("n{node}-{i}"))
                    .await
                    .expect("append with two of five down");
            }
        });
    join_all(writers).await;
    let logs = join_all(clients[..3].iter().map(applied_log)).await;
    assert_same_gap_free_logs(&logs);
    assert_eq!(logs[0].iter().filter(|e| e.kind == "value").count(), 30);
    cluster.restart(3).expect("restart node 3");
    cluster.restart(4).expect("restart node 4");
    catch_up_everyone(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_member_does_not_block_the_others() {
    let cluster = start("pause", 3);
    let clients = form_group(&cluster).await;
    append(&clients[0], "warm-up").await.unwrap();
    cluster.pause(2).expect("pause node 2");
    let started = Instant::now();
    for i in 0..10 {
        append(&clients[i % 2], &format!("while-paused-{i}"))
            .await
            .expect("append while a member hangs");
    }
    // Bounded by pg_paxos.request_timeout (2 s) per phase, not by the hung node.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    cluster.resume(2).expect("resume node 2");
    catch_up_everyone(&cluster).await;
}

/// Regression: applying on a node that must first record what it missed used to lock the
/// group row FOR UPDATE, which blocked this node's own learn endpoint (its foreign key takes
/// KEY SHARE on that row) until the request timed out. One call must now succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_member_catches_up_in_one_call() {
    let cluster = start("rejoin", 3);
    let clients = form_group(&cluster).await;
    cluster.kill(2).expect("kill node 2");
    for i in 0..5 {
        append(&clients[i % 2], &format!("missed-{i}"))
            .await
            .unwrap();
    }
    cluster.restart(2).expect("restart node 2");
    let node2 = connect(&cluster, 2).await;
    let log = applied_log(&node2).await;
    assert_eq!(log, read_log(&clients[0]).await);
    assert_eq!(log.iter().filter(|e| e.kind == "value").count(), 5);
}

/// Appends made on the other members go to the leading node. When it hangs or dies, they
/// take over after at most one append per member that reports an unknown outcome (40003),
/// and no value is ever chosen twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_others_take_over_from_a_hung_or_dead_leader() {
    let cluster = start("leader", 3);
    let clients = form_group(&cluster).await;
    for (i, client) in clients.iter().enumerate() {
        append(client, &format!("warm-up-{i}")).await.unwrap();
    }
    let (mut acknowledged, mut unknown) = (Vec::new(), Vec::new());
    let mut paused = None;
    for fault in ["pause", "kill"] {
        let observer = (0..3).find(|&i| Some(i) != paused).unwrap();
        let leader = leader_of(&cluster, &clients[observer]).await;
        if let Some(node) = paused.take() {
            cluster.resume(node).expect("resume");
        }
        match fault {
            "pause" => {
                cluster.pause(leader).expect("pause the leader");
                paused = Some(leader);
            }
            _ => cluster.kill(leader).expect("kill the leader"),
        }
        let writers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
        let started = Instant::now();
        for i in 0..6 {
            let value = format!("{fault}-{i}");
            match append(&clients[writers[i % 2]], &value).await {
                Ok(_) => acknowledged.push(value),
                Err(e) => {
                    let code = e.as_db_error().map(|d| d.code().code().to_owned());
                    assert_eq!(code.as_deref(), Some("40003"), "{value}: {e}");
                    unknown.push(value);
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{fault}: took {:?}",
            started.elapsed()
        );
        if fault == "kill" {
            cluster.restart(leader).expect("restart the old leader");
        }
    }
    assert!(unknown.len() <= 4, "too many unknown outcomes: {unknown:?}");
    catch_up_everyone(&cluster).await;
    let log = read_log(&connect(&cluster, 0).await).await;
    let values: Vec<&str> = log.iter().filter_map(|e| e.value.as_deref()).collect();
    for value in &acknowledged {
        assert_eq!(values.iter().filter(|v| *v == value).count(), 1, "{value}");
    }
    for value in &unknown {
        assert!(
            values.iter().filter(|v| *v == value).count() <= 1,
            "{value}"
        );
    }
}

/// Sessions batching their appends on the leader while no majority answers all fail within
/// their statement_timeout: with 40003 (their entry may be chosen: it was sent, or it waited
/// in a batch when the session was cancelled) or 08006 (nothing was sent), never with a
/// plain cancel; and once the members are back no value has landed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_appends_without_a_majority_fail_in_time_and_never_land_twice() {
    let cluster = start("cancelled", 3);
    let clients = form_group(&cluster).await;
    // Node 1 leads after forming; its sessions batch their appends there.
    let mut sessions = Vec::new();
    for _ in 0..6 {
        let session = connect(&cluster, 1).await;
        session
            .batch_execute("SET statement_timeout = '1s'")
            .await
            .unwrap();
        sessions.push(session);
    }
    append(&clients[1], "before").await.unwrap();
    cluster.kill(0).expect("kill node 0");
    cluster.kill(2).expect("kill node 2");
    let writers = sessions.iter().enumerate().map(|(s, session)| async move {
        let started = Instant::now();
        let outcome = append(session, &format!("cancelled-{s}")).await;
        (
            started.elapsed(),
            outcome
                .err()
                .and_then(|e| e.code().map(|c| c.code().to_owned())),
        )
    });
    for (waited, code) in join_all(writers).await {
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");
        let code = code.expect("no append can succeed without a majority");
        assert!(["08006", "40003"].contains(&code.as_str()), "{code}");
    }
    cluster.restart(0).expect("restart node 0");
    cluster.restart(2).expect("restart node 2");
    eventually(CATCH_UP_LIMIT, || async {
        append(&clients[1], "after")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    catch_up_everyone(&cluster).await;
    let log = read_log(&connect(&cluster, 1).await).await;
    for s in 0..6 {
        let value = format!("cancelled-{s}");
        let copies = log
            .iter()
            .filter(|e| e.value.as_deref() == Some(&value))
            .count();
        assert!(copies <= 1, "{value} landed {copies} times");
    }
}

/// A session cancelled while its append waits for a majority cannot know whether the value
/// will be chosen (its own member accepted it, and a later leader finishes the round with
/// it): it gets 40003, never the plain cancel error (57014). That holds for `paxos_append`
/// and for a write to a replicated table, whether the cancel comes from the session's
/// statement_timeout or from pg_cancel_backend. Whatever the outcome, it is the same on every
/// member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_while_appending_reports_an_unknown_outcome() {
    let cluster = start("cancel", 3);
    let clients = form_group(&cluster).await;
    create_everywhere(&clients, "CREATE TABLE kv (k int PRIMARY KEY, v text)").await;
    replicate(&clients[0], "kv").await.expect("replicate");
    let leader = leader_of(&cluster, &clients[0]).await;
    let session = connect(&cluster, leader).await;
    let pid = backend_pid(&session).await;
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &others {
        cluster.pause(i).expect("pause a member");
    }
    // Longer than any cancel below: the append is still waiting when the cancel comes.
    session
        .batch_execute("SET pg_paxos.request_timeout = '20s'")
        .await
        .unwrap();

    let canceller = connect(&cluster, leader).await;
    let cancelled = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        canceller
            .query_one("SELECT pg_cancel_backend($1)", &[&pid])
            .await
            .unwrap()
            .get::<_, bool>(0)
    };
    let (appended, sent) = tokio::join!(append(&session, "cancelled"), cancelled);
    assert!(sent, "the cancel reached the session");
    assert_eq!(
        sqlstate(&appended).as_deref(),
        Some("40003"),
        "{appended:?}"
    );

    session
        .batch_execute("SET statement_timeout = '500ms'")
        .await
        .unwrap();
    let written = session
        .batch_execute("INSERT INTO kv VALUES (1, 'timed out')")
        .await;
    assert_eq!(sqlstate(&written).as_deref(), Some("40003"), "{written:?}");
    let message = written
        .unwrap_err()
        .as_db_error()
        .unwrap()
        .message()
        .to_owned();
    assert!(message.contains("may or may not"), "{message}");

    for &i in &others {
        cluster.resume(i).expect("resume a member");
    }
    // A value chosen after them settles the stranded rounds, so every member's apply reaches
    // past them (a majority without the leader may not know them yet).
    eventually(CATCH_UP_LIMIT, || async {
        append(&clients[0], "after")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    catch_up_everyone(&cluster).await;
    let log = read_log(&clients[0]).await;
    let copies = log
        .iter()
        .filter(|e| e.value.as_deref() == Some("cancelled"))
        .count();
    assert!(copies <= 1, "the cancelled value landed {copies} times");
    let clients = [
        connect(&cluster, 0).await,
        connect(&cluster, 1).await,
        connect(&cluster, 2).await,
    ];
    assert_replicas_identical(&clients).await;
}
