//! The acceptor endpoints' rules, called directly on a one-node group: single-round prepare
//! and accept, and the range promise that lets a leader skip phase 1.
mod common;

use common::*;
use tokio_postgres::Client;

async fn call(client: &Client, endpoint: &str, request: String) -> String {
    client
        .query_one(&format!("SELECT pgp_metadata.{endpoint}($1)"), &[&request])
        .await
        .unwrap_or_else(|e| panic!("{endpoint}({request}): {e}"))
        .get(0)
}

fn ballot(number: i64, by: &str) -> String {
    format!(r#"{{"number":{number},"proposer":"{by}"}}"#)
}

/// Accept for one round; returns that round's reply.
async fn accept(client: &Client, round: i64, b: String, value: &str) -> String {
    let entry = format!(r#"{{"id":"{value}","kind":"value","value":"{value}"}}"#);
    let replies = call(
        client,
        "paxos_accept",
        format!(r#"{{"group":"g","first_round":{round},"ballot":{b},"entries":[{entry}]}}"#),
    )
    .await;
    replies
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or_else(|| panic!("one reply per entry: {replies}"))
        .to_owned()
}

async fn prepare(client: &Client, round: i64, b: String) -> String {
    call(
        client,
        "paxos_prepare",
        format!(r#"{{"group":"g","round":{round},"ballot":{b}}}"#),
    )
    .await
}

async fn prepare_from(client: &Client, from: i64, b: String) -> String {
    call(
        client,
        "paxos_prepare_from",
        format!(r#"{{"group":"g","from_round":{from},"ballot":{b}}}"#),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_promise_covers_every_round_from_its_start() {
    let cluster = start("acceptor", 1);
    let clients = form_group(&cluster).await;
    let c = &clients[0];

    assert_eq!(accept(c, 5, ballot(3, "a"), "x").await, r#""Accepted""#);
    // A round from the range start on holds a higher promise: refused, and told which.
    let refused = prepare_from(c, 3, ballot(2, "b")).await;
    assert!(
        refused.contains("Reject") && refused.contains(r#""number":3"#),
        "{refused}"
    );
    // Granted: the reply reports what was accepted in the range.
    let granted = prepare_from(c, 3, ballot(4, "b")).await;
    assert!(
        granted.contains("Promise") && granted.contains(r#""round":5"#),
        "{granted}"
    );
    assert!(granted.contains(r#""value":"x""#), "{granted}");

    // Rounds in the range now refuse lower ballots, with or without a row of their own.
    let covered = accept(c, 7, ballot(3, "z"), "y").await;
    assert!(
        covered.contains("Reject") && covered.contains(r#""proposer":"b""#),
        "{covered}"
    );
    let tie = prepare(c, 9, ballot(4, "a")).await;
    assert!(tie.contains("Reject"), "(4, a) < (4, b): {tie}");
    assert_eq!(accept(c, 9, ballot(4, "b"), "z").await, r#""Accepted""#);
    // Below the range start nothing changed.
    assert_eq!(accept(c, 2, ballot(1, "z"), "w").await, r#""Accepted""#);

    // A range promise from an earlier round extends the range; a lower one is refused.
    assert!(prepare_from(c, 1, ballot(4, "a")).await.contains("Reject"));
    assert!(prepare_from(c, 1, ballot(5, "c")).await.contains("Promise"));
    let below = accept(c, 2, ballot(1, "zz"), "v").await;
    assert!(below.contains("Reject"), "{below}");
}

/// Regression: a leader deciding a round a second time (its learns were lost, so the round
/// still looked open) proposed the new value under the same ballot, overwriting a chosen one.
/// A ballot now stays bound to the first value it carried in each round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_never_proposes_two_values_in_one_round() {
    let cluster = start("rebind", 3);
    let clients = form_group(&cluster).await;
    let leader = &clients[0];
    let round = append(leader, "first").await.unwrap();
    // Every node forgets that the round was chosen, as if all learn messages were lost.
    for c in &clients {
        c.execute(
            "UPDATE pgp_metadata.round SET chosen = false WHERE group_id = $1 AND round_num = $2",
            &[&GROUP, &round],
        )
        .await
        .unwrap();
        c.execute(
            "UPDATE pgp_metadata.learner SET learned_through = $2::bigint - 1 WHERE group_id = $1",
            &[&GROUP, &round],
        )
        .await
        .unwrap();
    }
    // The same session (still leading) decides that round again with another value.
    let row = leader
        .query_one(
            "SELECT accepted_value, value_changed FROM paxos('p', $1, $2, 'second')",
            &[&GROUP, &round],
        )
        .await
        .unwrap();
    let (value, changed): (Option<String>, bool) = (row.get(0), row.get(1));
    assert_eq!(
        value.as_deref(),
        Some("first"),
        "round {round} was chosen already"
    );
    assert!(changed);
    let logs = futures_util::future::join_all(clients.iter().map(applied_log)).await;
    assert_same_gap_free_logs(&logs);
    assert_eq!(logs[0][round as usize].value.as_deref(), Some("first"));
}
