//! Table replication through the log: writes run on every member in round order, a write
//! that fails the same way everywhere is skipped everywhere, and a transient failure on one
//! member stops its apply until it can go on, never letting members diverge.
mod common;

use common::*;
use futures_util::future::join_all;
use tokio_postgres::{Client, NoTls};

async fn sqlstate_of(result: Result<i64, tokio_postgres::Error>) -> Option<String> {
    result
        .err()
        .and_then(|e| e.as_db_error().map(|d| d.code().code().to_owned()))
}

async fn write(client: &Client, sql: &str) -> Result<i64, tokio_postgres::Error> {
    client
        .query_one(
            "SELECT paxos_apply_and_append('test', $1, $2)",
            &[&GROUP, &sql],
        )
        .await
        .map(|row| row.get(0))
}

/// Applies the whole log on every member and returns each member's rows of `query`.
async fn rows_everywhere(clients: &[Client], query: &str) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for client in clients {
        apply_all(client).await;
        let rows = client.query(query, &[]).await.expect(query);
        all.push(rows.iter().map(|r| r.get::<_, String>(0)).collect());
    }
    all
}

fn assert_identical(rows: &[Vec<String>]) {
    for (node, r) in rows.iter().enumerate().skip(1) {
        assert_eq!(r, &rows[0], "node {node} differs from node 0");
    }
}

/// The 2016 README session: plain INSERT and UPDATE on any member, reads on any member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_run_on_every_member_in_log_order() {
    let cluster = start("replicate", 3);
    let clients = form_group(&cluster).await;
    create_everywhere(&clients, "CREATE TABLE coordinates (x int, y int)").await;
    replicate(&clients[0], "coordinates")
        .await
        .expect("replicate");
    let read = "SELECT format('%s,%s', x, y) FROM coordinates ORDER BY x";
    let rows_on = |node: usize| {
        let client = &clients[node];
        async move {
            let rows = client.query(read, &[]).await.expect(read);
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        clients[0]
            .execute("INSERT INTO coordinates VALUES (1,1)", &[])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        clients[1]
            .execute("INSERT INTO coordinates VALUES (2,2)", &[])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        rows_on(2).await,
        ["1,1", "2,2"],
        "a strong read on a third member"
    );
    assert_eq!(
        clients[2]
            .execute("UPDATE coordinates SET x = x * 10", &[])
            .await
            .unwrap(),
        2
    );
    for node in 0..3 {
        assert_eq!(rows_on(node).await, ["10,1", "20,2"], "node {node}");
    }
    // The same through the function, as scripts written for the prototype call it.
    write(&clients[0], "INSERT INTO coordinates VALUES (3,3)")
        .await
        .unwrap();
    assert_eq!(rows_on(1).await, ["3,3", "10,1", "20,2"]);
    let replicated: i64 = clients[2]
        .query_one("SELECT count(*) FROM pgp_metadata.replicated_tables", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(replicated, 1, "every member knows the table is replicated");
    assert_replicas_identical(&clients).await;
}

/// The lock recipe: two members take the same lock name at once; exactly one succeeds, the
/// other gets a unique violation, and every member agrees on the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_two_concurrent_lock_takers_wins_everywhere() {
    let cluster = start("locks", 3);
    let clients = form_group(&cluster).await;
    create_everywhere(
        &clients,
        "CREATE TABLE locks (name text PRIMARY KEY, owner text)",
    )
    .await;
    replicate(&clients[0], "locks").await.expect("replicate");
    for round in 0..10 {
        let takers = [0usize, 2].map(|node| {
            let client = &clients[node];
            async move {
                let sql = format!("INSERT INTO locks VALUES ('lock-{round}', 'node{node}')");
                sqlstate_of(write(client, &sql).await).await
            }
        });
        let outcomes = join_all(takers).await;
        let won = outcomes.iter().filter(|o| o.is_none()).count();
        assert_eq!(won, 1, "lock-{round}: {outcomes:?}");
        assert!(
            outcomes.iter().flatten().all(|code| code == "23505"),
            "lock-{round}: the loser sees a unique violation: {outcomes:?}"
        );
    }
    let rows = rows_everywhere(
        &clients,
        "SELECT name || '=' || owner FROM locks ORDER BY name",
    )
    .await;
    assert_eq!(rows[0].len(), 10);
    assert_identical(&rows);
    assert_replicas_identical(&clients).await;
}

/// A member that cannot apply an entry for a transient reason (a lock held there) stops
/// before it, applies it later, and ends up with the same rows; nothing is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transient_apply_failure_stops_and_retries_without_divergence() {
    let cluster = start("transient", 3);
    let clients = form_group(&cluster).await;
    create_everywhere(
        &clients,
        "CREATE TABLE counters (id int PRIMARY KEY, n int)",
    )
    .await;
    replicate(&clients[0], "counters").await.expect("replicate");
    write(&clients[0], "INSERT INTO counters VALUES (1, 0)")
        .await
        .unwrap();
    rows_everywhere(&clients, "SELECT n::text FROM counters").await;

    // Node 2 holds a lock on the table while node 0 writes.
    let holder = connect(&cluster, 2).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE counters IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    write(&clients[0], "UPDATE counters SET n = n + 1")
        .await
        .unwrap();
    // Node 2's applier waits for the lock; a session waiting for it can be interrupted.
    clients[2]
        .batch_execute("SET statement_timeout = '300ms'")
        .await
        .unwrap();
    let blocked = clients[2]
        .query_one(
            "SELECT paxos_apply_log('test', $1, paxos_max_group_round($1))",
            &[&GROUP],
        )
        .await
        .expect_err("the apply waits for the lock");
    assert_eq!(blocked.as_db_error().unwrap().code().code(), "57014");
    let skipped: i64 = clients[2]
        .query_one("SELECT count(*) FROM pgp_metadata.apply_errors", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(skipped, 0, "a transient failure is not recorded as skipped");
    holder.batch_execute("COMMIT").await.unwrap();
    clients[2]
        .batch_execute("RESET statement_timeout")
        .await
        .unwrap();
    let rows = rows_everywhere(&clients, "SELECT n::text FROM counters").await;
    assert_eq!(rows[0], ["1"]);
    assert_identical(&rows);
    assert_replicas_identical(&clients).await;
}

/// Who may replicate, and what the log lets through: an unprivileged write leaves no entry,
/// and a table whose rows differ on a member stops that member's apply with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_allowed_writes_reach_the_log_and_differences_are_reported() {
    let cluster = start("replperm", 2);
    let clients = form_group(&cluster).await;
    create_everywhere(
        &clients,
        "CREATE TABLE items (id int PRIMARY KEY); CREATE ROLE app LOGIN; \
         GRANT EXECUTE ON FUNCTION paxos_apply_and_append(text, text, text), \
         paxos_replicate_table(text, regclass), paxos_max_group_round(text), \
         paxos_apply_log(text, text, bigint) TO app; GRANT SELECT ON items TO app",
    )
    .await;
    let admin = &clients[0];
    admin.batch_execute("SET ROLE app").await.unwrap();
    let not_owner = replicate(admin, "items").await.expect_err("not the owner");
    assert_eq!(not_owner.as_db_error().unwrap().code().code(), "42501");
    admin.batch_execute("RESET ROLE").await.unwrap();
    replicate(admin, "items").await.expect("replicate");
    let again = replicate(admin, "items")
        .await
        .expect_err("already replicated");
    assert_eq!(again.as_db_error().unwrap().code().code(), "42710");

    let before = max_group_round(admin).await;
    admin.batch_execute("SET ROLE app").await.unwrap();
    let denied = write(admin, "INSERT INTO items VALUES (1)").await;
    assert_eq!(sqlstate_of(denied).await.as_deref(), Some("42501"));
    admin.batch_execute("RESET ROLE").await.unwrap();
    assert_eq!(
        max_group_round(admin).await,
        before,
        "a refused write leaves no entry"
    );

    // Rows that differ on a member are found when it applies the replicate entry.
    create_everywhere(&clients, "CREATE TABLE notes (t text)").await;
    clients[1]
        .batch_execute("INSERT INTO notes VALUES ('only here')")
        .await
        .unwrap();
    replicate(admin, "notes").await.expect("replicate notes");
    let differs = clients[1]
        .query_one(
            "SELECT paxos_apply_log('test', $1, paxos_max_group_round($1))",
            &[&GROUP],
        )
        .await
        .expect_err("the member whose rows differ stops");
    let db = differs.as_db_error().unwrap();
    assert_eq!(db.code().code(), "55000");
    assert!(db.message().contains("differ"), "{}", db.message());
}

/// TRUNCATE, COPY FROM, ALTER TABLE, renaming, CREATE INDEX and DROP TABLE on a replicated
/// table are refused when run on one member; through the log they run on every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ddl_and_copy_on_a_replicated_table_go_through_the_log_or_are_refused() {
    let cluster = start("ddl", 2);
    let clients = form_group(&cluster).await;
    create_everywhere(&clients, "CREATE TABLE kv (k int PRIMARY KEY, v text)").await;
    replicate(&clients[0], "kv").await.expect("replicate");
    write(&clients[0], "INSERT INTO kv VALUES (1, 'one')")
        .await
        .unwrap();
    // What would change a replicated table's name, schema or existence, or its rows other
    // than through writes, is refused on every member.
    for client in &clients {
        for sql in [
            "COPY kv FROM STDIN",
            "ALTER TABLE kv RENAME TO kv2",
            "DROP TABLE kv",
            "CREATE INDEX CONCURRENTLY ON kv (v)",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC",
            // Moving it away, writing it locally and moving it back made one member differ.
            "CREATE SCHEMA IF NOT EXISTS elsewhere; ALTER TABLE kv SET SCHEMA elsewhere",
            "ALTER SCHEMA public RENAME TO renamed",
            "DROP SCHEMA public CASCADE",
        ] {
            let error = client.batch_execute(sql).await.expect_err(sql);
            assert_eq!(error.as_db_error().unwrap().code().code(), "0A000", "{sql}");
        }
        // DDL that is replicated takes effect at once everywhere: not inside a transaction
        // that could still roll back.
        let error = client
            .batch_execute("BEGIN; ALTER TABLE kv ADD COLUMN never int")
            .await
            .expect_err("in a transaction block");
        assert_eq!(error.as_db_error().unwrap().code().code(), "25001");
        client.batch_execute("ROLLBACK").await.unwrap();
    }
    // The rest is replicated as typed, on any member, checked first as its author.
    let entries = max_group_round(&clients[0]).await;
    let missing = clients[1]
        .batch_execute(
            "CREATE TRIGGER t BEFORE INSERT ON kv FOR EACH ROW EXECUTE FUNCTION no_such()",
        )
        .await
        .expect_err("no such function");
    assert_eq!(missing.as_db_error().unwrap().code().code(), "42883");
    assert_eq!(
        max_group_round(&clients[0]).await,
        entries,
        "nothing was appended"
    );
    for (member, sql) in [
        (1, "ALTER TABLE kv ADD COLUMN extra int"),
        (0, "CREATE UNIQUE INDEX kv_v ON kv (v)"),
        (1, "GRANT SELECT ON kv TO PUBLIC"),
        (0, "REVOKE SELECT ON public.kv FROM PUBLIC"),
        (1, "CREATE POLICY p ON kv USING (true)"),
        (0, "DROP POLICY p ON kv"),
        (1, "COMMENT ON TABLE kv IS 'not replicated, and harmless'"),
    ] {
        clients[member].batch_execute(sql).await.expect(sql);
    }
    let shape = rows_everywhere(
        &clients,
        "SELECT format('%s %s %s', \
             (SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute \
              WHERE attrelid = 'kv'::regclass AND attnum > 0 AND NOT attisdropped), \
             (SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY 1) FROM pg_index \
              WHERE indrelid = 'kv'::regclass), \
             (SELECT coalesce(relacl::text, 'default') FROM pg_class WHERE oid = 'kv'::regclass))",
    )
    .await;
    assert_eq!(
        shape[0],
        ["k,v,extra kv_pkey,kv_v {postgres=arwdDxt/postgres}"]
    );
    assert_identical(&shape);
    // Tables that are not replicated keep their local GRANTs.
    clients[0]
        .batch_execute(
            "CREATE SCHEMA other; CREATE TABLE other.t (a int); \
             GRANT SELECT ON ALL TABLES IN SCHEMA other TO PUBLIC",
        )
        .await
        .expect("a GRANT on tables that are not replicated");
    // Nor does a database without pg_paxos (the library is loaded in every one).
    clients[0]
        .batch_execute("CREATE DATABASE plain")
        .await
        .unwrap();
    let (plain, connection) = tokio_postgres::connect(
        &format!("{} dbname=plain", cluster.node(0).connstr()),
        NoTls,
    )
    .await
    .expect("connect to a database without pg_paxos");
    tokio::spawn(connection);
    plain
        .batch_execute(
            "CREATE TABLE t (a int); GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC; \
             CREATE POLICY p ON t USING (true); DROP TABLE t",
        )
        .await
        .expect("DDL in a database without pg_paxos");
    // Reading with COPY stays allowed (node 0 applied the insert; node 1 has not yet).
    let copied = cluster
        .node(0)
        .psql("COPY kv TO STDOUT")
        .expect("reading with COPY");
    assert!(copied.contains("one"), "{copied}");
    clients[1]
        .batch_execute("TRUNCATE kv")
        .await
        .expect("TRUNCATE as typed");
    // A trigger defined through the log runs on every member.
    create_everywhere(
        &clients,
        "CREATE FUNCTION doubled() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN NEW.extra := NEW.extra * 2; RETURN NEW; END $$",
    )
    .await;
    write(
        &clients[0],
        "CREATE TRIGGER doubled BEFORE INSERT ON kv FOR EACH ROW EXECUTE FUNCTION doubled()",
    )
    .await
    .unwrap();
    write(&clients[0], "INSERT INTO kv VALUES (2, 'two', 22)")
        .await
        .unwrap();
    let rows = rows_everywhere(&clients, "SELECT format('%s %s %s', k, v, extra) FROM kv").await;
    assert_eq!(rows[0], ["2 two 44"]);
    assert_identical(&rows);
    assert_replicas_identical(&clients).await;
}

/// A node that joins after tables were replicated copies a member's state: it must have the
/// tables (a clear error, and no half-joined member, otherwise), and then holds the same
/// rows and sequences as every member and captures writes like them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_joiner_copies_the_replicated_tables() {
    let cluster = start("latejoin", 3);
    let mut clients = Vec::new();
    for i in 0..3 {
        let client = connect(&cluster, i).await;
        client
            .batch_execute("CREATE EXTENSION pg_paxos")
            .await
            .unwrap();
        clients.push(client);
    }
    let conn = |i: usize| cluster.node(i).connstr();
    clients[0]
        .execute("SELECT paxos_create_group($1, $2)", &[&GROUP, &conn(0)])
        .await
        .unwrap();
    let join = |i: usize| {
        let client = &clients[i];
        let (existing, own) = (conn(0), conn(i));
        async move {
            client
                .query_one(
                    "SELECT paxos_join_group($1, $2, $3)",
                    &[&GROUP, &existing, &own],
                )
                .await
                .map(|row| row.get::<_, i64>(0))
        }
    };
    join(1).await.expect("node 1 joins");
    create_everywhere(
        &clients[..2],
        "CREATE TABLE kv (k serial PRIMARY KEY, v text)",
    )
    .await;
    replicate(&clients[0], "kv").await.expect("replicate");
    for v in ["one", "two", "three"] {
        clients[1]
            .execute("INSERT INTO kv (v) VALUES ($1)", &[&v])
            .await
            .unwrap();
    }

    let missing = join(2).await;
    assert_eq!(sqlstate(&missing).as_deref(), Some("55000"), "{missing:?}");
    let message = missing
        .unwrap_err()
        .as_db_error()
        .unwrap()
        .message()
        .to_owned();
    assert!(
        message.contains("kv") && message.contains("missing here"),
        "{message}"
    );
    let members: i64 = clients[0]
        .query_one(
            "SELECT count(*) FROM pgp_metadata.host WHERE group_id = $1 AND max_round IS NULL",
            &[&GROUP],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(members, 2, "the failed join left no member behind");

    clients[2]
        .batch_execute("CREATE TABLE kv (k serial PRIMARY KEY, v text)")
        .await
        .unwrap();
    join(2).await.expect("node 2 joins once it has the table");
    let rows: Vec<String> = clients[2]
        .query("SELECT k || v FROM kv ORDER BY k", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, ["1one", "2two", "3three"]);
    let inserted: i32 = clients[2]
        .query_one("INSERT INTO kv (v) VALUES ('four') RETURNING k", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inserted, 4, "the joiner's sequence follows the group's");
    assert_replicas_identical(&clients).await;
}

/// An entry that fails on one member with an error no retry cures stops that member's apply
/// there, with advice; an operator can give it up on that member alone (paxos_skip_round),
/// but only an entry that fails there, and not for a failure that may pass. The member then
/// applies what follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_can_skip_an_entry_that_fails_on_one_member_only() {
    let cluster = start("skip", 2);
    let clients = form_group(&cluster).await;
    create_everywhere(&clients, "CREATE TABLE kv (k int PRIMARY KEY, v text)").await;
    replicate(&clients[0], "kv").await.expect("replicate");
    let (a, b) = (&clients[0], &clients[1]);
    // The role exists on node 0 only: the GRANT cannot be applied on node 1.
    a.batch_execute("CREATE ROLE auditor").await.unwrap();
    let grant = write(a, "GRANT SELECT ON kv TO auditor").await.unwrap();
    let insert = write(a, "INSERT INTO kv VALUES (1, 'after the grant')")
        .await
        .unwrap();
    let apply = "SELECT paxos_apply_log('test', $1, paxos_max_group_round($1))";
    let stuck = b.query_one(apply, &[&GROUP]).await.expect_err("stuck");
    let db = stuck.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42704", "{db:?}");
    assert!(
        db.message().contains("paxos_skip_round"),
        "{}",
        db.message()
    );

    let skip = "SELECT paxos_skip_round($1, $2)";
    let refused = |round: i64| async move {
        let error = b
            .query_one(skip, &[&GROUP, &round])
            .await
            .expect_err("refused");
        let db = error.as_db_error().unwrap();
        assert_eq!(db.code().code(), "55000", "{db:?}");
        db.message().to_owned()
    };
    // Skipping a later round applies the rounds before it first: the GRANT still fails.
    let before_it = b
        .query_one(skip, &[&GROUP, &insert])
        .await
        .expect_err("the grant is in the way");
    assert_eq!(before_it.as_db_error().unwrap().code().code(), "42704");
    let skipped: i64 = b
        .query_one(skip, &[&GROUP, &grant])
        .await
        .expect("skip the grant")
        .get(0);
    assert_eq!(skipped, grant);
    let (code, message): (String, String) = {
        let row = b
            .query_one(
                "SELECT sqlstate, message FROM pgp_metadata.apply_errors WHERE round_num = $1",
                &[&grant],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(code, "42704");
    assert!(message.starts_with("skipped by an operator"), "{message}");
    assert!(refused(grant)
        .await
        .contains("applied on this node already"));
    // The next entry applies here (the applier went on at once): it is not skipped.
    let next = refused(insert).await;
    assert!(
        next.contains("applies here") || next.contains("applied on this node already"),
        "{next}"
    );
    // Nor is an entry that waits for a lock held here: the skip gives up as the session's
    // lock_timeout says, waiting for the applied position the applier holds (55P03), or
    // trying the entry itself, a failure that may pass (55000).
    let holder = connect(&cluster, 1).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE kv IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let later = write(a, "INSERT INTO kv VALUES (2, 'later')")
        .await
        .unwrap();
    b.batch_execute("SET lock_timeout = '200ms'").await.unwrap();
    let busy = b
        .query_one(skip, &[&GROUP, &later])
        .await
        .expect_err("the applier holds the applied position");
    let code = busy.as_db_error().unwrap().code().code().to_owned();
    assert!(code == "55P03" || code == "55000", "{busy:?}");
    holder.batch_execute("ROLLBACK").await.unwrap();
    b.batch_execute("RESET lock_timeout").await.unwrap();

    let rows = rows_everywhere(&clients, "SELECT v FROM kv ORDER BY k").await;
    assert_eq!(rows[0], ["after the grant", "later"]);
    assert_identical(&rows);
    assert_replicas_identical(&clients).await;

    // An entry skipped after it drew from a sequence leaves the draw, as on the members where
    // it ran, so later serial keys stay the same everywhere.
    create_everywhere(
        &clients,
        "CREATE TABLE serials (id serial PRIMARY KEY, v text); \
         CREATE FUNCTION refuse_here() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF current_setting('test.refuse', true) = 'on' THEN \
         RAISE EXCEPTION 'refused on this member' USING ERRCODE = '42501'; END IF; \
         RETURN NEW; END $$",
    )
    .await;
    replicate(a, "serials").await.expect("replicate");
    write(
        a,
        "CREATE TRIGGER refuse BEFORE INSERT ON serials FOR EACH ROW EXECUTE FUNCTION refuse_here()",
    )
    .await
    .unwrap();
    // A server setting only node 1 has (a trigger may not read a table outside the group).
    set_server_setting(b, "test.refuse", "on").await;
    let refused_here = write(a, "INSERT INTO serials (v) VALUES ('missing on node 1')")
        .await
        .unwrap();
    let stuck = b.query_one(apply, &[&GROUP]).await.expect_err("stuck");
    assert_eq!(
        stuck.as_db_error().unwrap().code().code(),
        "42501",
        "{stuck:?}"
    );
    b.query_one(skip, &[&GROUP, &refused_here])
        .await
        .expect("skip the insert");
    set_server_setting(b, "test.refuse", "off").await;
    write(a, "INSERT INTO serials (v) VALUES ('everywhere')")
        .await
        .unwrap();
    let rows = rows_everywhere(&clients, "SELECT id || ' ' || v FROM serials ORDER BY id").await;
    assert_eq!(rows[0], ["1 missing on node 1", "2 everywhere"]);
    assert_eq!(rows[1], ["2 everywhere"], "the same key on node 1");
}

/// Drops that reach a replicated table through something else (its owner, a type one of its
/// columns uses) are refused on any member: caught by the sql_drop event trigger, whatever
/// the statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drops_that_reach_a_replicated_table_indirectly_are_refused() {
    let cluster = start("drops", 2);
    let clients = form_group(&cluster).await;
    create_everywhere(
        &clients,
        "CREATE ROLE keeper; CREATE TYPE mood AS ENUM ('ok', 'not ok'); \
         CREATE TABLE kv (k int PRIMARY KEY, v text, m mood)",
    )
    .await;
    replicate(&clients[0], "kv").await.expect("replicate");
    clients[1]
        .batch_execute("ALTER TABLE kv OWNER TO keeper")
        .await
        .expect("a new owner, through the log");
    write(&clients[0], "INSERT INTO kv VALUES (1, 'one', 'ok')")
        .await
        .unwrap();
    for client in &clients {
        for sql in ["DROP TYPE mood CASCADE", "DROP OWNED BY keeper"] {
            let error = client.batch_execute(sql).await.expect_err(sql);
            let db = error.as_db_error().unwrap();
            assert_eq!(db.code().code(), "0A000", "{sql}: {db:?}");
            assert!(db.message().contains("kv"), "{}", db.message());
        }
    }
    // Dropping a column through the log is fine.
    clients[0]
        .batch_execute("ALTER TABLE kv DROP COLUMN m")
        .await
        .expect("a replicated DROP COLUMN");
    let rows = rows_everywhere(&clients, "SELECT format('%s %s', k, v) FROM kv").await;
    assert_eq!(rows[0], ["1 one"]);
    assert_identical(&rows);
    assert_replicas_identical(&clients).await;
}

/// Sets a server-wide setting and gives the server's processes (the applier among them)
/// time to take the reload.
async fn set_server_setting(client: &Client, name: &str, value: &str) {
    // ALTER SYSTEM takes only a custom setting this session knows.
    client
        .batch_execute(&format!("SET {name} = '{value}'"))
        .await
        .unwrap();
    client
        .batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
}

/// What the utility hook cannot name is caught by the event triggers: commands that reach a
/// replicated table through one of its indexes or sequences, through inheritance, an
/// extension or a role, whatever the session's settings. Every member ends identical, and
/// the table keeps its owner, its parents and children (none) and its extension (none).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_that_reach_a_replicated_table_sideways_are_refused() {
    let cluster = start("sideways", 2);
    let clients = form_group(&cluster).await;
    create_everywhere(
        &clients,
        "CREATE ROLE keeper; \
         CREATE TABLE kv (k serial PRIMARY KEY, v text); \
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; \
         CREATE TABLE par (k int NOT NULL, v text) PARTITION BY RANGE (k)",
    )
    .await;
    replicate(&clients[0], "kv").await.expect("replicate");
    let (a, b) = (&clients[0], &clients[1]);
    for sql in [
        "ALTER TABLE kv OWNER TO keeper",
        "CREATE INDEX kv_v ON kv (v)",
        "ALTER INDEX kv_v RENAME TO kv_w",
        "CREATE TRIGGER touch BEFORE INSERT ON kv FOR EACH ROW EXECUTE FUNCTION touch()",
        "COMMENT ON TABLE kv IS 'a comment changes nothing'",
    ] {
        b.batch_execute(sql).await.expect(sql);
    }
    write(a, "INSERT INTO kv (v) VALUES ('one')").await.unwrap();
    for (sql, session) in [
        ("ALTER SEQUENCE kv_k_seq INCREMENT BY 7", ""),
        ("CREATE TABLE kid () INHERITS (kv)", ""),
        (
            "CREATE TABLE kid () INHERITS (kv)",
            "SET session_replication_role = replica;",
        ),
        (
            "ALTER TABLE par ATTACH PARTITION kv FOR VALUES FROM (0) TO (100)",
            "",
        ),
        ("ALTER EXTENSION pg_paxos ADD TABLE kv", ""),
        ("REASSIGN OWNED BY keeper TO postgres", ""),
        ("DROP OWNED BY keeper", ""),
        ("DROP FUNCTION touch() CASCADE", ""),
        ("DROP INDEX CONCURRENTLY kv_w", ""),
    ] {
        for (i, client) in clients.iter().enumerate() {
            let typed = format!("{session}{sql}");
            let refused = client.batch_execute(&typed).await;
            let db = refused
                .as_ref()
                .err()
                .and_then(|e| e.as_db_error())
                .unwrap_or_else(|| panic!("node {i}: {typed}: {refused:?}"));
            assert_eq!(db.code().code(), "0A000", "node {i}: {typed}: {db:?}");
            assert!(db.message().contains("kv"), "{typed}: {}", db.message());
            client.batch_execute("RESET ALL").await.unwrap();
        }
    }
    // Changing or dropping an index of a replicated table is replicated as typed.
    for sql in ["ALTER INDEX kv_w SET (fillfactor = 50)", "DROP INDEX kv_w"] {
        b.batch_execute(sql).await.expect(sql);
    }
    write(a, "INSERT INTO kv (v) VALUES ('two')").await.unwrap();
    assert_eq!(
        rows_everywhere(&clients, "SELECT k || ' ' || v FROM kv ORDER BY k").await[1],
        ["1 one", "2 two"],
        "the sequence still counts by one"
    );
    let state = rows_everywhere(
        &clients,
        "SELECT format('%s owner=%s children=%s parents=%s extension=%s indexes=%s triggers=%s', \
           c.relname, pg_get_userbyid(c.relowner), \
           (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid), \
           (SELECT count(*) FROM pg_inherits WHERE inhrelid = c.oid), \
           (SELECT count(*) FROM pg_depend WHERE objid = c.oid AND deptype = 'e'), \
           (SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY 1) FROM pg_index \
              WHERE indrelid = c.oid), \
           (SELECT count(*) FROM pg_trigger WHERE tgrelid = c.oid)) \
         FROM pg_class c WHERE c.relname = 'kv'",
    )
    .await;
    assert_eq!(
        state[0],
        ["kv owner=keeper children=0 parents=0 extension=0 indexes=kv_pkey triggers=1"]
    );
    assert_identical(&state);
    assert_replicas_identical(&clients).await;
}
