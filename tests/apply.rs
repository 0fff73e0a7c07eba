//! Applying the log on a member: the applied position never moves past a round whose entry
//! this member has not applied, whatever fails on the way.
mod common;

use common::*;

/// A member that must decide a round itself (its value was accepted by a minority only)
/// and cannot record the decision in its own catalog in time must not apply past it.
/// Before the fix it took the round as known, found no entry for it, and moved its applied
/// position over it: the write was on every member but that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_this_member_could_not_record_is_not_skipped() {
    let cluster = start("unrecorded", 3);
    let clients = form_group(&cluster).await;
    create_everywhere(&clients, "CREATE TABLE kv (k int PRIMARY KEY, v text)").await;
    replicate(&clients[0], "kv").await.expect("replicate");
    clients[1]
        .batch_execute("INSERT INTO kv VALUES (0, 'before')")
        .await
        .expect("a first write");
    assert_replicas_identical(&clients).await;

    // A write the leader sends while the others are down: only the leader accepts it.
    let leader = leader_of(&cluster, &clients[0]).await;
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &others {
        cluster.stop(i).expect("stop a member");
    }
    let l = &clients[leader];
    l.batch_execute("SET pg_paxos.request_timeout = '300ms'")
        .await
        .unwrap();
    let stranded = l
        .batch_execute("INSERT INTO kv VALUES (1, 'stranded')")
        .await;
    for &i in &others {
        cluster.restart(i).expect("restart a member");
    }
    assert_eq!(
        sqlstate(&stranded).as_deref(),
        Some("40003"),
        "{stranded:?}"
    );
    let round: i64 = l
        .query_one("SELECT max(round_num) FROM pgp_metadata.round", &[])
        .await
        .unwrap()
        .get(0);

    // Another member must decide that round, and its own catalog cannot take the decision:
    // a transaction there holds the round's row.
    let x = others[0];
    let blocker = connect(&cluster, x).await;
    let member = connect(&cluster, x).await;
    blocker
        .batch_execute(&format!(
            "BEGIN; INSERT INTO pgp_metadata.round (group_id, round_num) VALUES ('{GROUP}', {round})"
        ))
        .await
        .expect("hold the round's row, which this member never saw");
    member
        .batch_execute("SET pg_paxos.request_timeout = '300ms'")
        .await
        .unwrap();
    // The member learns that the round exists only from a majority that includes the
    // leader; one without it answers that the highest accepted round is the one before,
    // and nothing is decided: ask again.
    let mut attempts = 0;
    let applied = loop {
        attempts += 1;
        let applied = member
            .query_one("SELECT paxos_apply_log('test', $1, $2)", &[&GROUP, &round])
            .await;
        let unaware = applied.as_ref().is_err_and(|e| {
            e.as_db_error()
                .is_some_and(|db| db.message().contains("the highest round accepted"))
        });
        if !unaware || attempts == 20 {
            break applied;
        }
    };
    blocker.batch_execute("ROLLBACK").await.unwrap();
    let error = applied.expect_err(&format!(
        "the member applied through round {round} without recording it"
    ));
    // Either the decision itself fails for want of this node's record, or the apply
    // refuses to pass the round it has no record of.
    let message = error.as_db_error().map(|db| db.message().to_owned());
    assert!(
        message.as_deref().is_some_and(|m| {
            m.contains("could not record what it learned")
                || m.contains("not recorded on this node")
        }),
        "{error:?}"
    );
    member
        .batch_execute("RESET pg_paxos.request_timeout")
        .await
        .unwrap();
    let rows = |model: &'static str| {
        let member = &member;
        async move {
            member
                .batch_execute(&format!("SET pg_paxos.consistency_model = {model}"))
                .await
                .unwrap();
            member
                .query("SELECT v FROM kv ORDER BY k", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect::<Vec<String>>()
        }
    };
    assert_eq!(rows("optimistic").await, ["before"], "nothing was applied");
    // Once the row is free, a strong read applies the round.
    assert_eq!(rows("strong").await, ["before", "stranded"]);
    let clients = [
        connect(&cluster, 0).await,
        connect(&cluster, 1).await,
        connect(&cluster, 2).await,
    ];
    assert_replicas_identical(&clients).await;
}
