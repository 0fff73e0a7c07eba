//! A node's leadership is shared by the processes that propose for it: when one of them
//! stops in the middle of a batch, the rounds it used stay unreported, and the ballot must
//! not vouch for them, even once the node has learned those rounds from the members.
mod common;

use std::time::Duration;

use common::*;
use tokio_postgres::Client;

const LIMIT: Duration = Duration::from_secs(30);

/// Holds an exclusive lock on `client`'s acceptor table until the transaction ends: votes on
/// that member wait.
async fn block_votes(client: &Client) {
    client
        .batch_execute("BEGIN; LOCK TABLE pgp_metadata.round IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
}

/// Ends the backends on `client`'s member that serve other members and wait for a lock
/// (votes held by `block_votes`), before they can vote. (Those of a proposer that stopped
/// end by themselves.)
async fn drop_waiting_votes(client: &Client) {
    let pids: Vec<i32> = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND application_name LIKE 'pg\\_paxos %' AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for pid in &pids {
        client
            .execute("SELECT pg_terminate_backend($1)", &[pid])
            .await
            .unwrap();
        until_backend_gone(client, *pid).await;
    }
}

/// Member `decider` decides `round` as "won" with single-decree Paxos while the votes of
/// member `held_back` wait, whose waiting votes are then ended: it never votes there.
async fn decide_without(
    cluster: &TestCluster,
    clients: &[Client],
    decider: usize,
    held_back: usize,
    round: i64,
) {
    let lock = connect(cluster, held_back).await;
    block_votes(&lock).await;
    let decided: Option<String> = clients[decider]
        .query_one(
            "SELECT accepted_value FROM paxos('b', $1, $2, 'won')",
            &[&GROUP, &round],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(decided.as_deref(), Some("won"));
    drop_waiting_votes(&clients[held_back]).await;
    lock.batch_execute("ROLLBACK").await.unwrap();
}

/// What `client`'s member holds at `round`: the value accepted there, and whether it is
/// marked chosen.
async fn held_at(client: &Client, round: i64) -> Option<(Option<String>, bool)> {
    client
        .query_opt(
            "SELECT value, chosen FROM pgp_metadata.round \
             WHERE group_id = $1 AND round_num = $2 AND accepted_num IS NOT NULL",
            &[&GROUP, &round],
        )
        .await
        .unwrap()
        .map(|row| (row.get(0), row.get(1)))
}

/// Forms a group on `cluster` and appends once: the members' sessions, the leading member
/// A then the two others, and the next round.
async fn led_group(cluster: &TestCluster) -> (Vec<Client>, [usize; 3], i64) {
    let clients = form_group(cluster).await;
    append(&clients[0], "first").await.unwrap();
    let a = leader_of(cluster, &clients[0]).await;
    apply_all(&clients[a]).await;
    let round = max_group_round(&clients[a]).await + 1;
    (clients, [a, (a + 1) % 3, (a + 2) % 3], round)
}

/// The leading member's proposer sends round R to the members and is stopped before any
/// answer: only C accepted its value there. Another member then decides R otherwise, and
/// the leading member learns that. Its next batch must not go on under the old ballot
/// telling the members that R is chosen: C would mark its own stale value chosen at R.
/// (Before the leadership ran paxos-core's `RangeLeader`, it did, and C's round R was
/// marked chosen with the value that lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_its_proposer_never_heard_of_is_never_vouched_for() {
    let cluster = start_with("unreported", 3, &["pg_paxos.request_timeout = '60s'"]);
    let (clients, [a, b, c], round) = led_group(&cluster).await;

    // A's and B's votes wait; C votes.
    let (lock_a, lock_b) = (connect(&cluster, a).await, connect(&cluster, b).await);
    block_votes(&lock_a).await;
    block_votes(&lock_b).await;
    let session = connect(&cluster, a).await;
    let lost = tokio::spawn(async move { append(&session, "lost").await });
    eventually(LIMIT, || async {
        match held_at(&clients[c], round).await {
            Some((Some(v), false)) if v == "lost" => Ok(()),
            other => Err(format!("C holds {other:?} at round {round}")),
        }
    })
    .await;

    // The proposer stops before it hears anything, then the waiting votes go.
    let proposer = proposer_pid(&clients[a]).await.expect("A's proposer runs");
    clients[a]
        .execute("SELECT pg_terminate_backend($1)", &[&proposer])
        .await
        .unwrap();
    until_backend_gone(&clients[a], proposer).await;
    drop_waiting_votes(&clients[a]).await;
    drop_waiting_votes(&clients[b]).await;
    lock_a.batch_execute("ROLLBACK").await.unwrap();
    lock_b.batch_execute("ROLLBACK").await.unwrap();
    let _ = tokio::time::timeout(LIMIT, lost)
        .await
        .expect("the append ends");
    assert_eq!(held_at(&clients[a], round).await, None, "A never voted");
    assert_eq!(held_at(&clients[b], round).await, None, "B never voted");

    // B decides the round with A, while C's vote waits.
    decide_without(&cluster, &clients, b, c, round).await;
    assert_eq!(
        held_at(&clients[c], round).await,
        Some((Some("lost".to_owned()), false)),
        "C still holds the value that lost, unmarked"
    );

    // A learns the round, then appends again.
    let learned: Option<String> = clients[a]
        .query_one(
            "SELECT accepted_value FROM paxos('a', $1, $2)",
            &[&GROUP, &round],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(learned.as_deref(), Some("won"));
    let next = append(&clients[a], "next").await.unwrap();
    assert!(next > round);

    assert_ne!(
        held_at(&clients[c], round).await,
        Some((Some("lost".to_owned()), true)),
        "C marked the value that lost chosen at round {round}"
    );
    let logs = futures_util::future::join_all(clients.iter().map(applied_log)).await;
    assert_same_gap_free_logs(&logs);
}

/// The leading member's proposer sends a batch while the one before it is still undecided
/// (pipelining): with B's and C's votes held back, A's own acceptor votes for the first
/// append, then for the second at the next round, before either is decided. Once the votes
/// go, both are chosen where they were proposed. (Before pipelining, the second batch waited
/// for the first to be decided, and A never voted for it while votes were held back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_goes_out_while_the_one_before_is_undecided() {
    let settings = [
        "pg_paxos.request_timeout = '60s'",
        "pg_paxos.pipeline_depth = 2",
    ];
    let cluster = start_with("pipelined", 3, &settings);
    let (clients, [a, b, c], round) = led_group(&cluster).await;

    let (lock_b, lock_c) = (connect(&cluster, b).await, connect(&cluster, c).await);
    block_votes(&lock_b).await;
    block_votes(&lock_c).await;
    let mut appends = Vec::new();
    for (offset, value) in [(0, "x"), (1, "y")] {
        let session = connect(&cluster, a).await;
        appends.push(tokio::spawn(async move { append(&session, value).await }));
        eventually(Duration::from_secs(15), || async {
            match held_at(&clients[a], round + offset).await {
                Some((Some(v), false)) if v == value => Ok(()),
                other => Err(format!(
                    "A holds {other:?} at round {}, not {value} undecided",
                    round + offset
                )),
            }
        })
        .await;
    }
    // (B's and C's acceptor tables cannot be read while their votes are held back.)
    assert!(
        appends.iter().all(|a| !a.is_finished()),
        "neither append is decided yet"
    );

    lock_b.batch_execute("ROLLBACK").await.unwrap();
    lock_c.batch_execute("ROLLBACK").await.unwrap();
    let mut rounds = Vec::new();
    for pending in appends {
        let outcome = tokio::time::timeout(LIMIT, pending)
            .await
            .expect("the append ends")
            .unwrap();
        rounds.push(outcome.expect("the append is chosen"));
    }
    assert_eq!(rounds, vec![round, round + 1]);
    let logs = futures_util::future::join_all(clients.iter().map(applied_log)).await;
    assert_same_gap_free_logs(&logs);
}

/// The leading member A proposes at a round it does not know another member decided
/// meanwhile (B, with C, while A's votes were held back): the acceptors answer that the
/// round is chosen with B's value, and A's append must go to a later round, not fail.
/// (The first pipelined version reported such an append as 40003, "lost from its batch".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_round_was_decided_elsewhere_goes_to_a_later_round() {
    let cluster = start_with(
        "decided-elsewhere",
        3,
        &["pg_paxos.request_timeout = '60s'"],
    );
    let (clients, [a, b, _], round) = led_group(&cluster).await;

    decide_without(&cluster, &clients, b, a, round).await;

    let appended = append(&clients[a], "mine")
        .await
        .expect("the append is chosen");
    assert!(
        appended > round,
        "appended at {appended}, B decided {round}"
    );
    let logs = futures_util::future::join_all(clients.iter().map(applied_log)).await;
    assert_same_gap_free_logs(&logs);
}
