//! Writes to replicated tables captured transparently: every statement form reaches the log
//! and returns its normal result; what cannot be replicated is refused before it is logged;
//! strong reads see every acknowledged write; a write whose outcome cannot be reported gives
//! 40003 and takes effect. Every test ends with all members' tables compared row for row.
mod common;

use std::time::Duration;

use common::*;
use futures_util::future::join_all;
use tokio_postgres::Client;

async fn texts(client: &Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

const TABLES: &str = "CREATE TABLE kv (k int PRIMARY KEY, v text); \
     CREATE TABLE serials (id serial PRIMARY KEY, v text); \
     CREATE TABLE identities (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text, \
                              n int DEFAULT 7); \
     CREATE TABLE locks (name text PRIMARY KEY, owner text); \
     CREATE TABLE local_notes (t text)";

async fn replicated_cluster(name: &str, nodes: usize) -> (TestCluster, Vec<Client>) {
    let cluster = start(name, nodes);
    let clients = form_group(&cluster).await;
    create_everywhere(&clients, TABLES).await;
    for table in ["kv", "serials", "identities", "locks"] {
        replicate(&clients[0], table).await.expect("replicate");
    }
    (cluster, clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_statement_form_is_captured_and_returns_its_normal_result() {
    let (_cluster, clients) = replicated_cluster("forms", 3).await;
    let (a, b, c) = (&clients[0], &clients[1], &clients[2]);

    // RETURNING, row counts, ON CONFLICT, writable CTEs.
    let returned = a
        .query(
            "INSERT INTO kv VALUES (1, 'one'), (2, 'two') RETURNING k",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(returned.len(), 2);
    assert_eq!(
        b.execute("UPDATE kv SET v = upper(v)", &[]).await.unwrap(),
        2
    );
    let upserted = texts(
        c,
        "INSERT INTO kv VALUES (1, 'uno') ON CONFLICT (k) DO UPDATE \
         SET v = kv.v || '/' || excluded.v RETURNING v",
    )
    .await;
    assert_eq!(upserted, ["ONE/uno"]);
    let moved = a
        .execute(
            "WITH gone AS (DELETE FROM kv WHERE k = 2 RETURNING k, v) \
             INSERT INTO kv SELECT k + 100, v FROM gone",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(moved, 1);

    // Serial and identity keys: the same ids on every member.
    let ids = texts(
        b,
        "INSERT INTO serials (v) VALUES ('a'), ('b') RETURNING id::text",
    )
    .await;
    assert_eq!(ids, ["1", "2"]);
    let ids = texts(c, "INSERT INTO serials (v) SELECT 'c' RETURNING id::text").await;
    assert_eq!(ids, ["3"]);
    let ids = texts(
        a,
        "INSERT INTO identities (v) VALUES ('x'), ('y') RETURNING id::text || '/' || n",
    )
    .await;
    assert_eq!(ids, ["1/7", "2/7"]);

    // A prepared statement run many times, with a generic plan for most of them; values
    // with quotes, backslashes, NULLs and non-ASCII text.
    b.batch_execute("SET plan_cache_mode = force_generic_plan")
        .await
        .unwrap();
    let insert = b.prepare("INSERT INTO kv VALUES ($1, $2)").await.unwrap();
    let values: Vec<Option<String>> = vec![
        Some("it's".into()),
        Some("back\\slash".into()),
        None,
        Some("héllo, wörld".into()),
        Some(String::new()),
    ];
    for i in 0..12 {
        let value = values[i % values.len()].clone();
        assert_eq!(
            b.execute(&insert, &[&(200 + i as i32), &value])
                .await
                .unwrap(),
            1
        );
    }
    let update = c
        .prepare("UPDATE kv SET v = $2 WHERE k = $1")
        .await
        .unwrap();
    for i in 0..7 {
        let v = format!("updated {i}");
        assert_eq!(c.execute(&update, &[&(200 + i), &v]).await.unwrap(), 1);
    }

    // PL/pgSQL and SQL functions, and DO blocks.
    create_everywhere(
        &clients,
        "CREATE FUNCTION put(p_k int, p_v text) RETURNS int LANGUAGE plpgsql AS $$ \
         BEGIN INSERT INTO kv VALUES (p_k, p_v); \
               UPDATE kv SET v = v || '!' WHERE k = p_k; RETURN p_k; END $$; \
         CREATE FUNCTION sql_put(int) RETURNS void LANGUAGE sql AS \
         $$ INSERT INTO kv VALUES ($1, 'from sql') $$; \
         CREATE FUNCTION take(p_name text, p_owner text) RETURNS boolean LANGUAGE plpgsql AS $$ \
         BEGIN INSERT INTO locks VALUES (p_name, p_owner); RETURN true; \
         EXCEPTION WHEN unique_violation THEN RETURN false; END $$",
    )
    .await;
    for k in 300..303 {
        let row = a.query_one("SELECT put($1, 'p')", &[&k]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), k);
    }
    b.execute("SELECT sql_put(400)", &[]).await.unwrap();
    c.batch_execute(
        "DO $$ BEGIN FOR i IN 1..3 LOOP INSERT INTO serials (v) VALUES ('do ' || i); \
         END LOOP; END $$",
    )
    .await
    .unwrap();
    let took: Vec<bool> = join_all([a, b, c].map(|client| async move {
        let row = client
            .query_one("SELECT take('leader', current_setting('port'))", &[])
            .await
            .expect("a lost race is not an error: the function catches it");
        row.get::<_, bool>(0)
    }))
    .await;
    assert_eq!(took.iter().filter(|t| **t).count(), 1, "{took:?}");

    // Other tables are not affected.
    a.execute("INSERT INTO local_notes VALUES ('only here')", &[])
        .await
        .unwrap();

    let read = "SELECT k || ':' || coalesce(v, 'NULL') FROM kv ORDER BY k";
    let expected = texts(a, read).await;
    assert!(expected.contains(&"1:ONE/uno".to_owned()), "{expected:?}");
    assert!(expected.contains(&"102:TWO".to_owned()), "{expected:?}");
    assert!(expected.contains(&"301:p!".to_owned()), "{expected:?}");
    assert!(
        expected.contains(&"400:from sql".to_owned()),
        "{expected:?}"
    );
    for row in [
        "206:updated 6",
        "207:NULL",
        "208:héllo, wörld",
        "209:",
        "210:it's",
        "211:back\\slash",
    ] {
        assert!(expected.contains(&row.to_owned()), "{row} in {expected:?}");
    }
    assert_eq!(texts(c, read).await, expected, "a strong read elsewhere");
    assert_eq!(
        texts(
            b,
            "SELECT string_agg(id || v, ',' ORDER BY id) FROM serials"
        )
        .await,
        ["1a,2b,3c,4do 1,5do 2,6do 3"]
    );
    assert_replicas_identical(&clients).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_that_cannot_be_replicated_are_refused_before_they_are_logged() {
    let (_cluster, clients) = replicated_cluster("refused", 3).await;
    let (a, b) = (&clients[0], &clients[1]);
    create_everywhere(
        &clients,
        "CREATE SEQUENCE loose; \
         CREATE FUNCTION constant_text() RETURNS text STABLE LANGUAGE sql AS $$ SELECT 'k' $$",
    )
    .await;
    let before = max_group_round(a).await;
    let refusals = [
        ("INSERT INTO kv VALUES (1, now()::text)", "0A000", "now()"),
        (
            "INSERT INTO kv VALUES (1, random()::text)",
            "0A000",
            "random()",
        ),
        (
            "INSERT INTO kv VALUES (1, gen_random_uuid()::text)",
            "0A000",
            "gen_random_uuid()",
        ),
        (
            "UPDATE kv SET v = clock_timestamp()::text",
            "0A000",
            "clock_timestamp()",
        ),
        (
            "INSERT INTO kv VALUES (1, CURRENT_TIMESTAMP::text)",
            "0A000",
            "CURRENT_TIMESTAMP",
        ),
        // A timestamp's text form depends on settings; an integer's does not (see above).
        (
            "INSERT INTO kv VALUES (1, 'at ' || '2020-01-01'::timestamptz)",
            "0A000",
            "textanycat()",
        ),
        (
            "INSERT INTO kv VALUES (nextval('loose'), 'x')",
            "0A000",
            "loose",
        ),
        (
            "INSERT INTO kv SELECT 1, t FROM local_notes",
            "0A000",
            "local_notes",
        ),
        (
            "DELETE FROM kv WHERE k IN (SELECT 1 FROM local_notes)",
            "0A000",
            "local_notes",
        ),
        (
            "MERGE INTO kv USING (VALUES (1)) s(k) ON kv.k = s.k WHEN NOT MATCHED THEN \
             INSERT VALUES (s.k, 'm')",
            "0A000",
            "MERGE",
        ),
        (
            "BEGIN; INSERT INTO kv VALUES (1, 'in a block'); COMMIT",
            "25001",
            "transaction block",
        ),
        (
            "BEGIN ISOLATION LEVEL REPEATABLE READ; INSERT INTO kv VALUES (1, 'rr'); COMMIT",
            "25001",
            "transaction block",
        ),
        (
            "INSERT INTO kv VALUES (1, 'ser')",
            "0A000",
            "READ COMMITTED",
        ),
    ];
    for (sql, code, named) in refusals {
        if named == "READ COMMITTED" {
            a.batch_execute("SET default_transaction_isolation = 'serializable'")
                .await
                .unwrap();
        }
        let result = a.batch_execute(sql).await;
        assert_eq!(
            sqlstate(&result).as_deref(),
            Some(code),
            "{sql}: {result:?}"
        );
        let message = result
            .unwrap_err()
            .as_db_error()
            .unwrap()
            .message()
            .to_owned();
        assert!(message.contains(named), "{sql}: {message}");
        a.batch_execute("ROLLBACK; RESET default_transaction_isolation")
            .await
            .unwrap();
    }
    assert_eq!(
        max_group_round(a).await,
        before,
        "a refused write leaves no entry"
    );

    // A superuser may allow functions that are not immutable, at their own risk.
    let denied = b
        .batch_execute("SET ROLE pg_monitor; SET pg_paxos.allow_mutable_functions = on")
        .await;
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));
    b.batch_execute("RESET ROLE; SET pg_paxos.allow_mutable_functions = on")
        .await
        .unwrap();
    b.batch_execute("INSERT INTO kv VALUES (5, constant_text())")
        .await
        .expect("allowed");
    b.batch_execute("RESET pg_paxos.allow_mutable_functions")
        .await
        .unwrap();

    // Privileges and row security are the author's, checked before the write is logged.
    // Roles are per server; grants and policies on a replicated table go through the log.
    create_everywhere(&clients, "CREATE ROLE clerk").await;
    for ddl in [
        "GRANT SELECT, UPDATE ON kv TO clerk",
        "CREATE POLICY mine ON kv USING (k < 100)",
        "CREATE POLICY all_read ON kv FOR SELECT USING (true)",
        "ALTER TABLE kv ENABLE ROW LEVEL SECURITY",
    ] {
        a.query_one(
            "SELECT paxos_apply_and_append('test', $1, $2)",
            &[&GROUP, &ddl],
        )
        .await
        .expect(ddl);
    }
    a.batch_execute("INSERT INTO kv VALUES (50, 'low'), (150, 'high')")
        .await
        .unwrap();
    let before = max_group_round(a).await;
    a.batch_execute("SET ROLE clerk").await.unwrap();
    let denied = a
        .batch_execute("INSERT INTO kv VALUES (60, 'no grant')")
        .await;
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));
    a.batch_execute("RESET ROLE").await.unwrap();
    assert_eq!(
        max_group_round(a).await,
        before,
        "a refused write leaves no entry"
    );
    a.batch_execute("SET ROLE clerk").await.unwrap();
    let updated = a
        .execute("UPDATE kv SET v = v || ' (clerk)'", &[])
        .await
        .expect("the clerk updates the rows the policy shows");
    a.batch_execute("RESET ROLE").await.unwrap();
    assert_eq!(updated, 2, "rows 5 and 50 only");
    assert_eq!(
        texts(b, "SELECT v FROM kv WHERE k = 150").await,
        ["high"],
        "the policy held on every member"
    );
    assert_replicas_identical(&clients).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_on_any_member_sees_every_write_acknowledged_before_it() {
    let (_cluster, clients) = replicated_cluster("reads", 3).await;
    // One after another, alternating members.
    for i in 0..30 {
        let writer = &clients[i % 3];
        let reader = &clients[(i + 1) % 3];
        writer
            .execute("INSERT INTO kv VALUES ($1, 'seq')", &[&(i as i32)])
            .await
            .unwrap();
        let count: i64 = reader
            .query_one("SELECT count(*) FROM kv", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            count,
            i as i64 + 1,
            "write {i} on node {} read on node {}",
            i % 3,
            (i + 1) % 3
        );
    }
    // Concurrently: each writer's own write is visible right after on the next member, and
    // reads that join a local table, go through a view or read the catalog work.
    create_everywhere(&clients, "CREATE VIEW kv_view AS SELECT k, v FROM kv").await;
    let rounds = join_all((0..3).map(|w| {
        let writer = &clients[w];
        let reader = &clients[(w + 1) % 3];
        async move {
            for i in 0..15 {
                let k = 1000 + w as i32 * 100 + i;
                writer
                    .execute("INSERT INTO kv VALUES ($1, 'conc')", &[&k])
                    .await
                    .unwrap();
                let seen = reader
                    .query(
                        "SELECT v.k FROM kv_view v LEFT JOIN local_notes n ON n.t = v.v \
                         JOIN pg_class c ON c.relname = 'kv' WHERE v.k = $1",
                        &[&k],
                    )
                    .await
                    .unwrap();
                assert_eq!(seen.len(), 1, "row {k} written on node {w}");
            }
        }
    }))
    .await;
    assert_eq!(rounds.len(), 3);

    // Optimistic reads do not wait for the group: they see the newest write once this
    // member's applier has applied it, which may be before or after the read.
    let (a, b) = (&clients[0], &clients[1]);
    let before: i64 = b
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    b.batch_execute("SET pg_paxos.consistency_model = optimistic")
        .await
        .unwrap();
    a.execute("INSERT INTO kv VALUES (5000, 'new')", &[])
        .await
        .unwrap();
    let optimistic: i64 = b
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        optimistic == before || optimistic == before + 1,
        "an optimistic read sees what is applied: {optimistic} rows, {before} before"
    );
    b.batch_execute("SET pg_paxos.consistency_model = strong")
        .await
        .unwrap();
    let strong: i64 = b
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(strong, before + 1);

    // REPEATABLE READ: a transaction whose snapshot predates writes it must see is told to
    // retry (40001); the retry sees them.
    b.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM local_notes")
        .await
        .unwrap();
    a.execute("INSERT INTO kv VALUES (5001, 'newer')", &[])
        .await
        .unwrap();
    let first = b.batch_execute("SELECT count(*) FROM kv").await;
    b.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(sqlstate(&first).as_deref(), Some("40001"), "{first:?}");
    b.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let retried: i64 = b
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    b.batch_execute("COMMIT").await.unwrap();
    assert_eq!(retried, before + 2);
    assert_replicas_identical(&clients).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_whose_outcome_cannot_be_reported_gets_40003_and_takes_effect() {
    let (_cluster, clients) = replicated_cluster("outcome", 3).await;
    let (a, b) = (&clients[0], &clients[1]);
    // A trigger that is slow only where the session asks for it: the origin is cancelled
    // by its statement_timeout after the write was chosen; the other members are not.
    create_everywhere(
        &clients,
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF current_setting('test.slow', true) = 'on' THEN PERFORM pg_sleep(2); END IF; \
         RETURN NEW; END $$",
    )
    .await;
    a.query_one(
        "SELECT paxos_apply_and_append('test', $1, $2)",
        &[
            &GROUP,
            &"CREATE TRIGGER slow BEFORE INSERT ON kv FOR EACH ROW EXECUTE FUNCTION slow()",
        ],
    )
    .await
    .expect("a trigger through the log");
    a.batch_execute("SET test.slow = on; SET statement_timeout = '300ms'")
        .await
        .unwrap();
    let cancelled = a
        .batch_execute("INSERT INTO kv VALUES (1, 'cancelled')")
        .await;
    assert_eq!(
        sqlstate(&cancelled).as_deref(),
        Some("40003"),
        "{cancelled:?}"
    );
    let message = cancelled
        .unwrap_err()
        .as_db_error()
        .unwrap()
        .message()
        .to_owned();
    assert!(message.contains("will take effect"), "{message}");
    a.batch_execute("RESET test.slow; RESET statement_timeout")
        .await
        .unwrap();

    // A DO block that fails after its write was chosen.
    let failed = a
        .batch_execute(
            "DO $$ BEGIN INSERT INTO kv VALUES (2, 'then failed'); \
             RAISE EXCEPTION 'after the write'; END $$",
        )
        .await;
    assert_eq!(sqlstate(&failed).as_deref(), Some("40003"), "{failed:?}");

    // A write rolled back to a savepoint after it ran: the transaction cannot commit.
    let rolled_back = b
        .batch_execute(
            "DO $$ BEGIN BEGIN INSERT INTO kv VALUES (3, 'rolled back'); \
             RAISE EXCEPTION 'undo'; EXCEPTION WHEN raise_exception THEN NULL; END; END $$",
        )
        .await;
    assert_eq!(
        sqlstate(&rolled_back).as_deref(),
        Some("40003"),
        "{rolled_back:?}"
    );

    // A constraint violation is the write's true outcome everywhere: no 40003.
    let duplicate = b.batch_execute("INSERT INTO kv VALUES (1, 'again')").await;
    assert_eq!(
        sqlstate(&duplicate).as_deref(),
        Some("23505"),
        "{duplicate:?}"
    );

    // A member whose own write fails rolls back the entries it applied first; the
    // sequences they advanced are put back, so it draws the same keys when it applies them
    // again (before the fix, node 2 numbered these rows 3 and 4).
    let c = &clients[2];
    a.batch_execute(
        "INSERT INTO serials (v) VALUES ('s1'), ('s2'); INSERT INTO locks VALUES ('dup', 'a')",
    )
    .await
    .unwrap();
    let lost = c
        .batch_execute("INSERT INTO locks VALUES ('dup', 'c')")
        .await;
    assert_eq!(sqlstate(&lost).as_deref(), Some("23505"), "{lost:?}");
    assert_eq!(
        texts(
            c,
            "SELECT string_agg(id || v, ',' ORDER BY id) FROM serials"
        )
        .await,
        ["1s1,2s2"]
    );

    let everywhere = "SELECT k || ':' || v FROM kv ORDER BY k";
    for client in &clients {
        assert_eq!(
            texts(client, everywhere).await,
            ["1:cancelled", "2:then failed", "3:rolled back"],
            "every write that got 40003 took effect"
        );
    }
    assert_replicas_identical(&clients).await;

    // Without a majority, a write sent to the members may still be chosen later (a new
    // leader finishes its round): 40003, not a plain connection error.
    // On the leading node, which holds a ballot and sends accept requests itself.
    let cluster = &_cluster;
    let leader = leader_of(cluster, &clients[0]).await;
    let a = &clients[leader];
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &others {
        cluster.pause(i).expect("pause a member");
    }
    a.batch_execute("SET pg_paxos.request_timeout = '300ms'")
        .await
        .unwrap();
    let stranded = a
        .batch_execute("INSERT INTO kv VALUES (4, 'no majority')")
        .await;
    for &i in &others {
        cluster.resume(i).expect("resume a member");
    }
    assert_eq!(
        sqlstate(&stranded).as_deref(),
        Some("40003"),
        "{stranded:?}"
    );
    a.batch_execute("RESET pg_paxos.request_timeout")
        .await
        .unwrap();
    assert_replicas_identical(&clients).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_killed_during_writes_catches_up_after_restart() {
    let (cluster, clients) = replicated_cluster("killwrites", 3).await;
    let writers = join_all((0..2).map(|w| {
        let client = &clients[w];
        async move {
            let mut acknowledged = Vec::new();
            for i in 0..60 {
                let k = w as i32 * 1000 + i;
                let insert = client
                    .execute("INSERT INTO serials (v) VALUES ($1)", &[&k.to_string()])
                    .await;
                if insert.is_ok() {
                    acknowledged.push(k.to_string());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acknowledged
        }
    }));
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill(2).expect("kill node 2");
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.restart(2).expect("restart node 2");
    };
    let (acknowledged, ()) = tokio::join!(writers, killer);
    let acknowledged: Vec<String> = acknowledged.into_iter().flatten().collect();
    assert_eq!(
        acknowledged.len(),
        120,
        "two members stayed up: every write succeeds"
    );
    let mut clients = clients;
    clients[2] = eventually(Duration::from_secs(20), || async {
        cluster.node(2).connect().await.map_err(|e| e.to_string())
    })
    .await;
    let mut rows = texts(&clients[2], "SELECT v FROM serials").await;
    rows.sort();
    let mut expected = acknowledged.clone();
    expected.sort();
    assert_eq!(
        rows, expected,
        "the restarted member has every acknowledged write"
    );
    assert_replicas_identical(&clients).await;
}

/// Many sessions writing on every member at once: every write succeeds (no deadlock between
/// members recording what they learned and the leader's piggybacked "chosen" marks, which
/// a 16-client benchmark hit), and the members end up identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_every_member_all_succeed() {
    let (cluster, clients) = replicated_cluster("manywriters", 3).await;
    let mut sessions = Vec::new();
    for i in 0..15 {
        sessions.push(connect(&cluster, i % 3).await);
    }
    // Thousands of appended values first, which members learn in large batches as they
    // catch up while the writes below run.
    join_all(sessions.iter().map(|client| async move {
        for n in 0..200 {
            append(client, &format!("filler {n}"))
                .await
                .expect("append");
        }
    }))
    .await;
    let outcomes = join_all(sessions.iter().enumerate().map(|(i, client)| async move {
        let mut failures = Vec::new();
        for n in 0..40 {
            let v = format!("{i}-{n}");
            if let Err(e) = client
                .execute("INSERT INTO serials (v) VALUES ($1)", &[&v])
                .await
            {
                failures.push(format!("{v}: {e:?}"));
            }
        }
        failures
    }))
    .await;
    let failures: Vec<String> = outcomes.into_iter().flatten().collect();
    assert!(
        failures.is_empty(),
        "{} failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    let count: i64 = clients[1]
        .query_one("SELECT count(*) FROM serials", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 600);
    assert_replicas_identical(&clients).await;
}
