//! The applier: every member applies the group's entries by itself, in a background worker
//! that shows in pg_stat_activity (and its work in the statistics views), survives being
//! killed, and replays each entry in a context that neither the entry's author nor any
//! session can steer. Every test ends with all members' tables compared row for row.
mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio_postgres::Client;

async fn replicated(cluster: &cluster::Cluster) -> Vec<Client> {
    let clients = form_group(cluster).await;
    create_everywhere(&clients, "CREATE TABLE kv (k int PRIMARY KEY, v text)").await;
    replicate(&clients[0], "kv").await.expect("replicate");
    clients
}

/// The pid of `client`'s node's applier of the group, once one runs.
async fn applier_pid(client: &Client) -> Option<i32> {
    client
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_paxos applier' \
             AND application_name = 'pg_paxos applier ' || $1",
            &[&GROUP],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0))
}

/// Applies the whole log on every member and checks that no applier stopped at an entry:
/// the errors met were the same everywhere, and skipped alike.
async fn assert_no_applier_stopped(clients: &[Client]) {
    for (i, client) in clients.iter().enumerate() {
        apply_all(client).await;
        let stopped: i64 = client
            .query_one(
                "SELECT count(*) FROM paxos_appliers() WHERE stuck_round IS NOT NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(stopped, 0, "node {i}'s applier stopped at an entry");
    }
}

async fn count_optimistic(client: &Client, k: i32) -> i64 {
    client
        .query_one("SELECT count(*) FROM kv WHERE k = $1", &[&k])
        .await
        .expect("optimistic read")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_apply_writes_without_being_asked() {
    let cluster = start("fresh", 3);
    let clients = replicated(&cluster).await;
    for client in &clients {
        assert!(
            applier_pid(client).await.is_some(),
            "every member runs an applier named after its group"
        );
        client
            .batch_execute("SET pg_paxos.consistency_model = optimistic")
            .await
            .unwrap();
    }
    // Nobody on the other members reads strongly, writes or applies: their appliers must
    // bring each write there on their own.
    let mut delays = Vec::new();
    for k in 0..20 {
        let writer = k as usize % clients.len();
        clients[writer]
            .execute("INSERT INTO kv VALUES ($1, 'x')", &[&k])
            .await
            .expect("write");
        let written = Instant::now();
        for (i, reader) in clients.iter().enumerate().filter(|(i, _)| *i != writer) {
            loop {
                if count_optimistic(reader, k).await == 1 {
                    break;
                }
                assert!(
                    written.elapsed() < Duration::from_secs(10),
                    "write {k} from node {writer} never appeared on node {i}"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            delays.push(written.elapsed());
        }
    }
    delays.sort();
    eprintln!(
        "follower freshness: median {:?}, max {:?} over {} reads",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays.len()
    );
    // What the appliers wrote shows in the statistics views, as any session's writes do:
    // every node inserted every row once, by its writer or by its applier.
    for (i, client) in clients.iter().enumerate() {
        eventually(Duration::from_secs(30), || async {
            let inserted: i64 = client
                .query_one(
                    "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relid = 'kv'::regclass",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            (inserted >= 20)
                .then_some(())
                .ok_or_else(|| format!("node {i}'s statistics show {inserted} rows inserted"))
        })
        .await;
    }
    for client in &clients {
        client
            .batch_execute("SET pg_paxos.consistency_model = strong")
            .await
            .unwrap();
    }
    assert_replicas_identical(&clients).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_applier_killed_mid_entry_restarts_and_applies_it_once() {
    // Not a TestCluster: the kill leaves "terminated by signal 9" in the log on purpose.
    let cluster = cluster::Cluster::start(cluster::ClusterOptions {
        nodes: 3,
        preload_pg_paxos: true,
        extra_conf: vec![],
        name: "killapplier".into(),
    })
    .expect("start");
    let clients = replicated(&cluster).await;
    create_everywhere(
        &clients,
        "CREATE FUNCTION slow_kv() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.v = 'slow' THEN PERFORM pg_sleep(2); END IF; RETURN NEW; END $$",
    )
    .await;
    clients[0]
        .query_one(
            "SELECT paxos_apply_and_append('test', $1, \
             'CREATE TRIGGER slow BEFORE INSERT ON kv FOR EACH ROW EXECUTE FUNCTION slow_kv()')",
            &[&GROUP],
        )
        .await
        .expect("a trigger through the log");

    // The writer runs the trigger in its own session while node 1's applier runs it there.
    let writer = connect(&cluster, 0).await;
    let write = tokio::spawn(async move {
        writer
            .execute("INSERT INTO kv VALUES (1, 'slow')", &[])
            .await
    });
    // Kill node 1's applier while it sleeps inside that entry's trigger.
    let victim = &clients[1];
    let looking = Instant::now();
    let pid = loop {
        assert!(
            looking.elapsed() < Duration::from_secs(20),
            "node 1's applier never ran the entry"
        );
        let sleeping = victim
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_paxos applier' \
                 AND wait_event = 'PgSleep'",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = sleeping {
            break row.get::<_, i32>(0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(write.await.unwrap().expect("the slow write"), 1);

    // The server restarts its backends; the applier comes back and applies the entry again.
    let node1 = eventually(Duration::from_secs(30), || async {
        let client = cluster.node(1).connect().await.map_err(|e| e.to_string())?;
        if applier_pid(&client).await.is_none() {
            return Err("no applier yet".into());
        }
        client
            .batch_execute("SET pg_paxos.consistency_model = optimistic")
            .await
            .map_err(|e| e.to_string())?;
        match count_optimistic(&client, 1).await {
            1 => Ok(client),
            n => Err(format!("{n} rows")),
        }
    })
    .await;
    let errors: i64 = node1
        .query_one("SELECT count(*) FROM pgp_metadata.apply_errors", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        errors, 0,
        "the entry was applied once, not failed as a duplicate"
    );
    node1
        .batch_execute("SET pg_paxos.consistency_model = strong")
        .await
        .unwrap();
    clients[2]
        .execute("INSERT INTO kv VALUES (2, 'fast')", &[])
        .await
        .expect("a later write");
    let clients = vec![
        connect(&cluster, 0).await,
        node1,
        connect(&cluster, 2).await,
    ];
    assert_replicas_identical(&clients).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_runs_in_a_context_its_author_cannot_steer() {
    let cluster = start("context", 3);
    let clients = replicated(&cluster).await;
    // On every member: a role with INSERT on the table and a schema of its own, holding an
    // IMMUTABLE function that calls a VOLATILE one which moves search_path to its schema for
    // the rest of the session, and an = operator for text there that makes the role a
    // superuser if a superuser ever runs it.
    create_everywhere(
        &clients,
        "CREATE ROLE mallory LOGIN; \
         CREATE SCHEMA mallory AUTHORIZATION mallory; \
         SET ROLE mallory; \
         CREATE FUNCTION mallory.steer() RETURNS text VOLATILE LANGUAGE sql AS \
           $$ SELECT pg_catalog.set_config('search_path', 'mallory, pg_catalog', false) $$; \
         CREATE FUNCTION mallory.innocent() RETURNS text IMMUTABLE LANGUAGE sql AS \
           $$ SELECT 'v' || pg_catalog.length(mallory.steer()) $$; \
         CREATE FUNCTION mallory.eq(text, text) RETURNS boolean LANGUAGE plpgsql AS \
           $$ BEGIN \
                IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN \
                  EXECUTE 'ALTER ROLE mallory SUPERUSER'; \
                END IF; \
                RETURN $1 OPERATOR(pg_catalog.=) $2; \
              END $$; \
         CREATE OPERATOR mallory.= (LEFTARG = text, RIGHTARG = text, FUNCTION = mallory.eq); \
         RESET ROLE",
    )
    .await;
    clients[0]
        .query_one(
            "SELECT paxos_apply_and_append('test', $1, 'GRANT INSERT, SELECT ON kv TO mallory')",
            &[&GROUP],
        )
        .await
        .expect("a grant through the log");
    // A superuser session on another member holds a temporary table of the same name, with
    // a trigger: a replay that ran in that session would write there.
    clients[2]
        .batch_execute(
            "CREATE TEMP TABLE kv (k int, v text); \
             CREATE FUNCTION pg_temp.grab() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN RAISE EXCEPTION 'replayed into a temporary table'; END $$; \
             CREATE TRIGGER grab BEFORE INSERT ON pg_temp.kv FOR EACH ROW \
               EXECUTE FUNCTION pg_temp.grab()",
        )
        .await
        .unwrap();

    let mallory = cluster
        .node(0)
        .connect_as("mallory")
        .await
        .expect("connect as mallory");
    mallory
        .execute("INSERT INTO kv VALUES (1, mallory.innocent())", &[])
        .await
        .expect("mallory's write");
    mallory
        .execute("INSERT INTO public.kv VALUES (2, 'plain')", &[])
        .await
        .expect("mallory's second write");
    // DDL she has no right to is refused before anything reaches the log. (The highest
    // round a majority knows of, not the rows on node 0: its own vote on her last write
    // may land after the write returned.)
    let entries = max_group_round(&clients[0]).await;
    for (sql, code) in [
        (
            "CREATE TRIGGER t BEFORE INSERT ON public.kv FOR EACH ROW \
             EXECUTE FUNCTION mallory.steer()",
            "42501",
        ),
        ("ALTER TABLE public.kv ADD COLUMN evil int", "42501"),
        ("TRUNCATE public.kv", "42501"),
        ("CREATE POLICY p ON public.kv USING (false)", "42501"),
        (
            "CREATE RULE r AS ON INSERT TO public.kv DO INSTEAD NOTHING",
            "42501",
        ),
        ("ALTER TABLE public.kv RENAME TO kv2", "0A000"),
        ("ALTER SCHEMA public RENAME TO elsewhere", "0A000"),
        ("CREATE TABLE mallory.kid () INHERITS (public.kv)", "42501"),
        ("ALTER TABLE public.kv SET SCHEMA mallory", "0A000"),
        ("DROP TABLE public.kv", "0A000"),
    ] {
        let refused = mallory.batch_execute(sql).await;
        assert_eq!(
            sqlstate(&refused).as_deref(),
            Some(code),
            "{sql}: {refused:?}"
        );
    }
    assert_eq!(
        max_group_round(&clients[0]).await,
        entries,
        "nothing was appended"
    );
    clients[0]
        .execute("INSERT INTO kv VALUES (3, 'by the superuser')", &[])
        .await
        .expect("a superuser's unqualified write");
    // Strong reads everywhere, the temporary table's session included.
    for client in &clients {
        client
            .query("SELECT * FROM public.kv", &[])
            .await
            .expect("a strong read");
    }
    let temp_rows: i64 = clients[2]
        .query_one("SELECT count(*) FROM pg_temp.kv", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        temp_rows, 0,
        "no replay lands in a session's temporary table"
    );
    for (i, client) in clients.iter().enumerate() {
        let superuser: bool = client
            .query_one(
                "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!superuser, "mallory became a superuser on node {i}");
        let rows: i64 = client
            .query_one("SELECT count(*) FROM public.kv", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 3, "node {i}");
    }
    assert_replicas_identical(&clients[..2]).await;
    clients[2].batch_execute("DISCARD TEMP").await.unwrap();
    assert_replicas_identical(&clients).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trigger_that_writes_another_replicated_table_is_part_of_its_round() {
    let cluster = start("triggers", 3);
    let clients = replicated(&cluster).await;
    create_everywhere(
        &clients,
        "CREATE TABLE audit (k int, note text); \
         CREATE FUNCTION audit_kv() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO public.audit VALUES (NEW.k, 'inserted ' || NEW.v); RETURN NEW; END $$",
    )
    .await;
    replicate(&clients[0], "audit").await.expect("replicate");
    clients[1]
        .query_one(
            "SELECT paxos_apply_and_append('test', $1, 'CREATE TRIGGER audit AFTER INSERT ON kv \
             FOR EACH ROW EXECUTE FUNCTION audit_kv()')",
            &[&GROUP],
        )
        .await
        .expect("a trigger through the log");
    let sql_entries = "SELECT count(*) FROM pgp_metadata.round WHERE value_kind = 'sql'";
    let before: i64 = clients[0].query_one(sql_entries, &[]).await.unwrap().get(0);
    for (i, client) in clients.iter().enumerate() {
        let k = i as i32;
        client
            .execute("INSERT INTO kv VALUES ($1, 'a'), ($1 + 10, 'b')", &[&k])
            .await
            .expect("a write whose trigger writes audit");
    }
    let after: i64 = clients[0].query_one(sql_entries, &[]).await.unwrap().get(0);
    assert_eq!(
        after - before,
        3,
        "one entry per write: the trigger's rows ride in it"
    );
    for (i, client) in clients.iter().enumerate() {
        let audited: i64 = client
            .query_one("SELECT count(*) FROM audit", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(audited, 6, "node {i}: each inserted row audited once");
    }
    assert_replicas_identical(&clients).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writers_session_settings_change_nothing_on_the_members() {
    let cluster = start("settings", 3);
    let clients = replicated(&cluster).await;
    create_everywhere(
        &clients,
        "CREATE TABLE typed (k int PRIMARY KEY, at timestamptz, d date, f float8, b bytea, \
         i interval)",
    )
    .await;
    replicate(&clients[0], "typed").await.expect("replicate");
    let writer = &clients[1];
    writer
        .batch_execute(
            "SET datestyle = 'SQL, DMY'; SET timezone = 'Asia/Tokyo'; \
             SET intervalstyle = 'sql_standard'; SET extra_float_digits = -10; \
             SET bytea_output = 'escape'; SET standard_conforming_strings = off; \
             SET search_path = pg_catalog, public",
        )
        .await
        .unwrap();
    writer
        .execute(
            "INSERT INTO typed VALUES (1, '03/04/2025 10:00', '03/04/2025', 0.1 + 0.2, \
             '\\\\x00ff'::bytea, '1 day 2 hours')",
            &[],
        )
        .await
        .expect("literals parsed under the writer's settings");
    // Parameters travel in their text form, written under pinned settings.
    let prepared = writer
        .prepare("INSERT INTO typed (k, f, b) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    writer
        .execute(&prepared, &[&2i32, &(1.0f64 / 3.0), &vec![0u8, 1, 254]])
        .await
        .expect("parameters converted under the writer's settings");
    let refused = writer
        .batch_execute("SET session_replication_role = replica; INSERT INTO typed (k) VALUES (3)")
        .await;
    assert_eq!(
        sqlstate(&refused).as_deref(),
        Some("0A000"),
        "its triggers would fire on the other members only: {refused:?}"
    );
    writer.batch_execute("RESET ALL").await.unwrap();
    assert_replicas_identical(&clients).await;
    let row: String = clients[2]
        .query_one(
            "SELECT at::text || ' ' || d::text FROM typed WHERE k = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        row.starts_with("2025-04-03") && row.ends_with("2025-04-03"),
        "DMY input read as the writer meant it: {row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn foreign_keys_between_replicated_tables_fail_alike_everywhere() {
    let cluster = start("foreignkeys", 3);
    let clients = form_group(&cluster).await;
    create_everywhere(
        &clients,
        "CREATE TABLE parent (id int PRIMARY KEY); \
         CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent)",
    )
    .await;
    // Alone, either would have a foreign key to a table outside the group.
    for table in ["parent", "child"] {
        let alone = replicate(&clients[0], table).await;
        assert_eq!(sqlstate(&alone).as_deref(), Some("0A000"), "{alone:?}");
    }
    clients[0]
        .query_one(
            "SELECT paxos_replicate_tables($1, '{parent, child}')",
            &[&GROUP],
        )
        .await
        .expect("replicate both at once");
    let orphan = clients[1]
        .execute("INSERT INTO child VALUES (0, 0)", &[])
        .await;
    assert_eq!(sqlstate(&orphan).as_deref(), Some("23503"), "{orphan:?}");

    // Parents and children written at once on different members: each child finds its
    // parent or not depending on the log's order, the same way on every member.
    let mut sessions = Vec::new();
    for i in 0..6 {
        sessions.push(connect(&cluster, i % 3).await);
    }
    let outcomes =
        futures_util::future::join_all(sessions.iter().enumerate().map(|(s, client)| async move {
            let mut outcomes = Vec::new();
            for n in 0..10i32 {
                let result = if s % 2 == 0 {
                    client
                        .execute("INSERT INTO parent VALUES ($1)", &[&(n * 10 + s as i32)])
                        .await
                } else {
                    let parent = n * 10 + s as i32 - 1;
                    client
                        .execute(
                            "INSERT INTO child VALUES ($1, $2)",
                            &[&(1000 + n * 10 + s as i32), &parent],
                        )
                        .await
                };
                outcomes.push(sqlstate(&result));
            }
            outcomes
        }))
        .await;
    for outcome in outcomes.iter().flatten() {
        assert!(
            outcome.is_none() || outcome.as_deref() == Some("23503"),
            "only foreign key violations may fail: {outcomes:?}"
        );
    }
    assert_no_applier_stopped(&clients).await;
    assert_replicas_identical(&clients).await;
}

/// What a replicated write sets off (triggers, foreign keys, functions) may use only the
/// group's tables: a foreign key leaving the group is refused when it is created, and a
/// trigger that reads or writes another table fails the write the same way on every
/// member, which skips it without stopping.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_a_write_sets_off_stays_inside_its_group() {
    let cluster = start("inside", 3);
    let clients = replicated(&cluster).await;
    create_everywhere(
        &clients,
        "CREATE TABLE local_notes (k int PRIMARY KEY, note text); \
         INSERT INTO local_notes VALUES (1, 'only here'); \
         CREATE FUNCTION peek() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.v = 'peek' THEN PERFORM count(*) FROM public.local_notes; END IF; \
           IF NEW.v = 'note' THEN INSERT INTO public.local_notes VALUES (NEW.k, NEW.v); END IF; \
           RETURN NEW; END $$",
    )
    .await;
    let (a, b) = (&clients[0], &clients[1]);
    // Foreign keys out of the group or into it, created on a member or typed as DDL.
    for (sql, code) in [
        (
            "ALTER TABLE kv ADD CONSTRAINT outward FOREIGN KEY (k) REFERENCES local_notes",
            "2F004",
        ),
        ("CREATE TABLE kid (k int REFERENCES kv)", "0A000"),
        (
            "ALTER TABLE local_notes ADD CONSTRAINT inward FOREIGN KEY (k) REFERENCES kv \
             NOT VALID",
            "0A000",
        ),
    ] {
        let refused = b.batch_execute(sql).await;
        assert_eq!(
            sqlstate(&refused).as_deref(),
            Some(code),
            "{sql}: {refused:?}"
        );
    }
    let constraints: i64 = b
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' \
             AND connamespace = 'public'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(constraints, 0, "no foreign key was left behind");

    b.batch_execute("CREATE TRIGGER peek BEFORE INSERT ON kv FOR EACH ROW EXECUTE FUNCTION peek()")
        .await
        .expect("a trigger, through the log");
    a.execute("INSERT INTO kv VALUES (1, 'plain')", &[])
        .await
        .expect("a write whose trigger stays inside");
    for (k, v, code) in [(2, "peek", "2F004"), (3, "note", "2F002")] {
        let refused = clients[k as usize % 3]
            .execute("INSERT INTO kv VALUES ($1, $2)", &[&k, &v])
            .await;
        assert_eq!(
            sqlstate(&refused).as_deref(),
            Some(code),
            "{v}: {refused:?}"
        );
        let message = refused
            .unwrap_err()
            .as_db_error()
            .unwrap()
            .message()
            .to_owned();
        assert!(message.contains("local_notes"), "{message}");
    }
    a.execute("INSERT INTO kv VALUES (4, 'after')", &[])
        .await
        .expect("writes go on");
    assert_no_applier_stopped(&clients).await;
    for (i, client) in clients.iter().enumerate() {
        let notes: i64 = client
            .query_one("SELECT count(*) FROM local_notes", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(notes, 1, "node {i}: no trigger wrote the local table");
    }
    let rows = rows_of(&clients, "SELECT k FROM kv ORDER BY k").await;
    assert_eq!(rows[0], [1, 4]);
    assert_replicas_identical(&clients).await;
}

async fn rows_of(clients: &[Client], sql: &str) -> Vec<Vec<i32>> {
    let mut all = Vec::new();
    for client in clients {
        let rows = client.query(sql, &[]).await.unwrap();
        all.push(rows.iter().map(|r| r.get(0)).collect());
    }
    all
}

/// DDL typed on one member must wait, on every other member, for the transactions there
/// that hold a lock on its table. A session that holds such a lock and then waits for the
/// applier (a strong read, a write) would wait for ever: it is told at once (40P01 for a
/// read, which can be retried; 40003 for a write, which was chosen and is applied once the
/// session's transaction is gone), and nothing else stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_that_blocks_the_applier_is_told_at_once() {
    let cluster = start("blocking", 3);
    let clients = replicated(&cluster).await;
    let b = &clients[1];
    b.execute("INSERT INTO kv VALUES (1, 'before')", &[])
        .await
        .unwrap();

    let reader = connect(&cluster, 0).await;
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM kv")
        .await
        .expect("a transaction that read kv");
    b.batch_execute("ALTER TABLE kv ADD COLUMN extra int")
        .await
        .expect("DDL on another member");
    let again = reader.query_one("SELECT count(*) FROM kv", &[]).await;
    assert_eq!(sqlstate(&again).as_deref(), Some("40P01"), "{again:?}");
    reader.batch_execute("ROLLBACK").await.unwrap();
    let retried: i64 = reader
        .query_one("SELECT count(*) FROM kv WHERE extra IS NULL", &[])
        .await
        .expect("the retry sees the new column")
        .get(0);
    assert_eq!(retried, 1);

    // A write planned while holding the lock, after DDL that comes before it in the log.
    let writer = connect(&cluster, 0).await;
    let write = tokio::spawn(async move {
        writer
            .batch_execute(
                "DO $$ BEGIN PERFORM count(*) FROM kv; PERFORM pg_sleep(1); \
                 INSERT INTO kv (k, v) VALUES (2, 'written'); END $$",
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.batch_execute("ALTER TABLE kv ADD COLUMN more int")
        .await
        .expect("more DDL on another member");
    let written = write.await.unwrap();
    assert_eq!(sqlstate(&written).as_deref(), Some("40003"), "{written:?}");
    let rows = rows_of(&clients, "SELECT k FROM kv ORDER BY k").await;
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row, &[1, 2], "node {i}: the chosen write took effect");
    }
    assert_replicas_identical(&clients).await;
}

/// A role with write access tries to make members differ through what its writes set off:
/// a function that claims to be immutable but reads the role's own table (whose rows differ
/// on each member), and a table of its own with a foreign key into the replicated one
/// (which would stop deletes on one member only). Both are refused, and the members stay
/// identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_cannot_make_members_differ_through_what_its_writes_set_off() {
    let cluster = start("setoff", 3);
    let clients = replicated(&cluster).await;
    for (i, client) in clients.iter().enumerate() {
        client
            .batch_execute(&format!(
                "CREATE ROLE mallory LOGIN; \
                 CREATE SCHEMA mallory AUTHORIZATION mallory; \
                 SET ROLE mallory; \
                 CREATE TABLE mallory.secret (v text); \
                 INSERT INTO mallory.secret VALUES ('node {i}'); \
                 CREATE FUNCTION mallory.lie(int) RETURNS text IMMUTABLE LANGUAGE plpgsql AS \
                   $$ BEGIN RETURN (SELECT v FROM mallory.secret LIMIT 1); END $$; \
                 RESET ROLE"
            ))
            .await
            .unwrap();
    }
    clients[0]
        .batch_execute("GRANT SELECT, INSERT, UPDATE, DELETE, REFERENCES ON kv TO mallory")
        .await
        .expect("a grant through the log");
    clients[0]
        .execute("INSERT INTO kv VALUES (1, 'plain')", &[])
        .await
        .unwrap();
    let mallory = cluster
        .node(1)
        .connect_as("mallory")
        .await
        .expect("connect as mallory");
    for (sql, code) in [
        ("UPDATE public.kv SET v = mallory.lie(k)", "2F004"),
        (
            "CREATE TABLE mallory.kid (k int REFERENCES public.kv)",
            "0A000",
        ),
    ] {
        let refused = mallory.batch_execute(sql).await;
        assert_eq!(
            sqlstate(&refused).as_deref(),
            Some(code),
            "{sql}: {refused:?}"
        );
    }
    mallory
        .batch_execute("DELETE FROM public.kv")
        .await
        .expect("deletes go on");
    assert_no_applier_stopped(&clients).await;
    assert_replicas_identical(&clients).await;
}

/// Appliers keep the plans of the statements they replay. A kept plan must follow its
/// table: after a change of the column default through the log, the same statement text
/// fills in the new default on every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statement_replayed_again_follows_the_changes_of_its_table() {
    let cluster = start("replans", 3);
    let clients = replicated(&cluster).await;
    let a = &clients[0];
    // More runs than PostgreSQL's plan cache needs before it settles on a generic plan.
    for k in 0..8 {
        a.execute("INSERT INTO kv (k) VALUES ($1)", &[&k])
            .await
            .expect("write");
    }
    for client in &clients {
        apply_all(client).await;
    }
    a.batch_execute("ALTER TABLE kv ALTER COLUMN v SET DEFAULT 'later'")
        .await
        .expect("the change goes through the log");
    for k in 8..12 {
        a.execute("INSERT INTO kv (k) VALUES ($1)", &[&k])
            .await
            .expect("write");
    }
    for client in &clients {
        apply_all(client).await;
    }
    let later = rows_of(&clients, "SELECT k FROM kv WHERE v = 'later' ORDER BY k").await;
    for (i, rows) in later.iter().enumerate() {
        assert_eq!(*rows, (8..12).collect::<Vec<_>>(), "node {i}");
    }
    assert_replicas_identical(&clients).await;
}
