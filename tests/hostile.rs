//! Hostile input: every SQL function of pg_paxos, called with NULLs, empty and huge
//! strings, negative and enormous rounds, unknown groups, malformed and smuggling
//! connection strings, identifiers crafted to inject SQL, and malformed requests to the
//! member endpoints. Each call either succeeds (a huge value is still a value) or fails
//! with a clear, non-internal error that changed nothing; no server crashes; an
//! unprivileged role is refused everything.
mod common;

use common::*;
use tokio_postgres::Client;

/// Text arguments no function should trust.
fn hostile_texts() -> Vec<Option<String>> {
    vec![
        None,
        Some(String::new()),
        Some(" ".into()),
        Some("x".repeat(1_000_000)),
        Some("g'; DROP TABLE kv; --".into()),
        Some("\"; DROP TABLE kv; --".into()),
        Some("g\\' OR 1=1 --".into()),
        Some("$$; DROP TABLE kv; $$".into()),
        Some("ünïcødé ✓ \u{1F600}".into()),
        Some("\u{1}\u{7f}".into()),
        Some("host=127.0.0.1 port=1".into()),
        Some("host=127.0.0.1 port=5432 options='-c search_path=evil'".into()),
        Some("host=127.0.0.1 password=secret".into()),
        Some("host=/nonexistent/socket/dir".into()),
        Some("port=not-a-number".into()),
        Some("host='unterminated".into()),
        Some("host=127.0.0.1 host=127.0.0.1 dbname=postgres'; DROP TABLE kv; --".into()),
        Some("{\"group\":\"g\"}".into()),
    ]
}

fn hostile_rounds() -> Vec<Option<i64>> {
    vec![
        None,
        Some(-1),
        Some(i64::MIN),
        Some(i64::MAX),
        Some(1 << 40),
    ]
}

/// What must not change when a call fails.
async fn state(client: &Client) -> Vec<i64> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pgp_metadata.round), \
                    (SELECT count(*) FROM pgp_metadata.host), \
                    (SELECT count(*) FROM pgp_metadata.\"group\"), \
                    (SELECT count(*) FROM pgp_metadata.replicated_tables), \
                    (SELECT count(*) FROM pgp_metadata.apply_errors), \
                    (SELECT count(*) FROM kv), \
                    (SELECT count(*) FROM pg_class WHERE relname = 'kv')",
            &[],
        )
        .await
        .expect("read the state");
    (0..7).map(|i| row.get(i)).collect()
}

/// Calls `sql` with `params`; a failure must be a server error outside class XX (internal
/// errors, crashes) that left `state` as it was. Returns the SQLSTATE of the failure.
async fn probe(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Option<String> {
    let before = state(client).await;
    let result = client.query(sql, params).await;
    // Leave any failed transaction behind (none is open: autocommit).
    if let Err(error) = result {
        let shown: String = format!("{sql} with {params:?}").chars().take(300).collect();
        let db = error
            .as_db_error()
            .unwrap_or_else(|| panic!("{shown}: the connection broke: {error}"));
        let code = db.code().code();
        assert!(
            !code.starts_with("XX"),
            "{shown}: internal error {code} {}",
            db.message()
        );
        assert!(
            !db.message().is_empty(),
            "{shown}: an error without a message"
        );
        // 40003 says the call may have taken effect: that is its contract.
        if code != "40003" {
            assert_eq!(
                state(client).await,
                before,
                "{shown}: failed ({code}) but changed state"
            );
        }
        return Some(code.to_owned());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_survives_hostile_arguments() {
    let cluster = start("hostile", 2);
    let clients = form_group(&cluster).await;
    create_everywhere(&clients, "CREATE TABLE kv (k int PRIMARY KEY, v text)").await;
    replicate(&clients[0], "kv").await.expect("replicate");
    let db = &clients[1];
    db.batch_execute("SET pg_paxos.request_timeout = '500ms'")
        .await
        .unwrap();
    let group = Some(GROUP.to_owned());
    let texts = hostile_texts();

    for bad in &texts {
        probe(db, "SELECT paxos_max_group_round($1)", &[bad]).await;
        probe(db, "SELECT paxos_leave_group($1)", &[bad]).await;
        probe(db, "SELECT paxos_drop_group($1)", &[bad]).await;
        probe(
            db,
            "SELECT paxos_create_group($1, $2)",
            &[bad, &Some(cluster.node(1).connstr())],
        )
        .await;
        probe(db, "SELECT paxos_create_group('other', $1)", &[bad]).await;
        probe(
            db,
            "SELECT paxos_join_group('g2', $1, $2)",
            &[bad, &Some(cluster.node(1).connstr())],
        )
        .await;
        probe(
            db,
            "SELECT paxos_join_group('g2', $1, $2)",
            &[&Some(cluster.node(0).connstr()), bad],
        )
        .await;
        for position in 0..3 {
            let mut args = [Some("test".to_owned()), group.clone(), Some("v".to_owned())];
            args[position] = bad.clone();
            probe(
                db,
                "SELECT paxos_append($1, $2, $3)",
                &[&args[0], &args[1], &args[2]],
            )
            .await;
            let mut args = [
                Some("test".to_owned()),
                group.clone(),
                Some("SELECT 1".to_owned()),
            ];
            args[position] = bad.clone();
            probe(
                db,
                "SELECT paxos_apply_and_append($1, $2, $3)",
                &[&args[0], &args[1], &args[2]],
            )
            .await;
        }
        probe(db, "SELECT paxos_replicate_table($1, 'kv')", &[bad]).await;
        probe(
            db,
            "SELECT paxos_replicate_table('g', $1::text::regclass)",
            &[bad],
        )
        .await;
        probe(db, "SELECT paxos_skip_round($1, 1)", &[bad]).await;
        probe(db, "SELECT paxos_replicate_tables($1, '{kv}')", &[bad]).await;
        probe(
            db,
            "SELECT paxos_replicate_tables('g', ARRAY[$1::text::regclass])",
            &[bad],
        )
        .await;
        probe(
            db,
            "SELECT paxos_remove_member($1, 'host=127.0.0.1')",
            &[bad],
        )
        .await;
        probe(db, "SELECT paxos_remove_member('g', $1)", &[bad]).await;
        probe(db, "SELECT * FROM paxos('test', $1, 0, 'v')", &[bad]).await;
        probe(
            db,
            "SELECT * FROM pgp_metadata.paxos_member_contact($1, $1)",
            &[bad],
        )
        .await;
        probe(db, "SELECT * FROM paxos($1, 'g', 0, $1)", &[bad]).await;
        for endpoint in [
            "paxos_prepare",
            "paxos_prepare_from",
            "paxos_accept",
            "paxos_learn",
            "paxos_chosen",
            "paxos_max_round",
            "paxos_change_membership",
            "paxos_submit",
            "paxos_announce",
            "paxos_lease",
        ] {
            probe(db, &format!("SELECT pgp_metadata.{endpoint}($1)"), &[bad]).await;
        }
    }
    // Spot checks that the sweep hits the errors it should.
    let none: Option<String> = None;
    let expect = [
        (
            probe(db, "SELECT paxos_append('test', $1, 'v')", &[&none]).await,
            "22004",
        ),
        (
            probe(db, "SELECT paxos_append('test', 'nope', $1)", &[&group]).await,
            "42704",
        ),
        (
            probe(db, "SELECT pgp_metadata.paxos_accept('not json')", &[]).await,
            "22023",
        ),
        (
            probe(db, "SELECT paxos_apply_log('test', 'g', -5)", &[]).await,
            "22023",
        ),
        (
            probe(
                db,
                "SELECT paxos_join_group('g2', 'host=127.0.0.1 port=1', $1)",
                &[&Some(cluster.node(1).connstr())],
            )
            .await,
            "08000",
        ),
    ];
    for (got, wanted) in expect {
        assert_eq!(got.as_deref(), Some(wanted));
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    probe(db, "SELECT pgp_metadata.paxos_accept($1)", &[&deep]).await;
    for round in hostile_rounds() {
        probe(db, "SELECT paxos_apply_log('test', 'g', $1)", &[&round]).await;
        probe(db, "SELECT paxos_skip_round('g', $1)", &[&round]).await;
        probe(db, "SELECT * FROM paxos('test', 'g', $1, 'v')", &[&round]).await;
        probe(
            db,
            "SELECT * FROM paxos('test', 'nope', $1, NULL)",
            &[&round],
        )
        .await;
    }

    // A role without grants is refused every function, and changes nothing.
    db.batch_execute("CREATE ROLE mallory LOGIN").await.unwrap();
    db.batch_execute("SET ROLE mallory").await.unwrap();
    for sql in [
        "SELECT paxos_append('m', 'g', 'v')",
        "SELECT paxos_apply_log('m', 'g', 0)",
        "SELECT paxos_skip_round('g', 1)",
        "SELECT paxos_max_group_round('g')",
        "SELECT paxos_replicate_table('g', 'kv')",
        "SELECT paxos_apply_and_append('m', 'g', 'DELETE FROM kv')",
        "SELECT pgp_metadata.paxos_accept('{}')",
        "SELECT pgp_metadata.paxos_announce('{}')",
        "SELECT * FROM pgp_metadata.paxos_group_status",
        "SELECT * FROM pgp_metadata.paxos_member_status",
        "SELECT * FROM pgp_metadata.paxos_group_counters()",
        "INSERT INTO kv VALUES (1, 'mallory')",
    ] {
        let refused = db.batch_execute(sql).await;
        assert_eq!(
            sqlstate(&refused).as_deref(),
            Some("42501"),
            "{sql}: {refused:?}"
        );
    }
    db.batch_execute("RESET ROLE").await.unwrap();
    // The table is still there on every member, and the members agree.
    assert_replicas_identical(&clients).await;
}
