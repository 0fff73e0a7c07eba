//! Bad input gets a clear error with the right SQLSTATE and changes nothing.
mod common;

use cluster::{Cluster, ClusterOptions};
use common::*;
use tokio_postgres::Client;

async fn sqlstate(client: &Client, sql: &str) -> String {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("{sql} succeeded"),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{sql}: not a server error: {e}"));
            assert!(!db.message().is_empty());
            db.code().code().to_owned()
        }
    }
}

async fn groups_on(client: &Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM pgp_metadata.\"group\"", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_refused_and_change_nothing() {
    let cluster = start("errors", 2);
    let a = connect(&cluster, 0).await;
    let b = connect(&cluster, 1).await;
    assert_eq!(
        sqlstate(&a, "SELECT paxos_max_group_round('g')").await,
        "42883",
        "before CREATE EXTENSION"
    );
    a.batch_execute("CREATE EXTENSION pg_paxos").await.unwrap();
    b.batch_execute("CREATE EXTENSION pg_paxos").await.unwrap();
    let own_a = cluster.node(0).connstr();
    let own_b = cluster.node(1).connstr();

    for (sql, code) in [
        (
            "SELECT paxos_create_group(NULL, 'host=127.0.0.1')".to_owned(),
            "22004",
        ),
        ("SELECT paxos_create_group('g', NULL)".to_owned(), "22004"),
        (
            "SELECT paxos_create_group('', 'host=127.0.0.1')".to_owned(),
            "22023",
        ),
        (
            format!(
                "SELECT paxos_create_group('{}', 'host=127.0.0.1')",
                "g".repeat(64)
            ),
            "22023",
        ),
        (
            "SELECT paxos_create_group('g', 'host=db.example')".to_owned(),
            "22023",
        ),
        (
            "SELECT paxos_create_group('g', 'host=127.0.0.1 password=secret')".to_owned(),
            "22023",
        ),
        (
            "SELECT paxos_create_group('g', 'host=127.0.0.1 port=notaport')".to_owned(),
            "22023",
        ),
        (
            "SELECT paxos_create_group('g', 'host=''unterminated')".to_owned(),
            "22023",
        ),
        // Reachable, but not this node: peers could never reach us by it.
        (
            format!("SELECT paxos_create_group('g', '{own_b}')"),
            "22023",
        ),
        (
            "SELECT paxos_create_group('g', 'host=127.0.0.1 port=1 user=postgres')".to_owned(),
            "08001",
        ),
        ("SELECT paxos_append('p', 'nope', 'v')".to_owned(), "42704"),
        ("SELECT paxos_append('p', NULL, 'v')".to_owned(), "22004"),
        (
            "SELECT * FROM paxos('p', 'nope', 0, 'v')".to_owned(),
            "42704",
        ),
        ("SELECT paxos_apply_log('p', 'nope', 1)".to_owned(), "42704"),
        ("SELECT paxos_max_group_round('nope')".to_owned(), "42704"),
        ("SELECT paxos_leave_group('nope')".to_owned(), "42704"),
        ("SELECT paxos_drop_group('nope')".to_owned(), "42704"),
        ("SELECT paxos_drop_group(NULL)".to_owned(), "22004"),
        (
            r#"SELECT pgp_metadata.paxos_await_drop('{"group":"nope","round":1}')"#.to_owned(),
            "42704",
        ),
        (
            r#"SELECT pgp_metadata.paxos_state('{"group":"nope"}')"#.to_owned(),
            "42704",
        ),
    ] {
        assert_eq!(sqlstate(&a, &sql).await, code, "{sql}");
    }
    assert_eq!(groups_on(&a).await, 0, "a refused create left nothing");

    a.execute("SELECT paxos_create_group('g', $1)", &[&own_a])
        .await
        .unwrap();
    for (sql, code) in [
        (format!("SELECT paxos_create_group('g', '{own_a}')"), "42710"),
        ("SELECT * FROM paxos('p', 'g', -1, 'v')".to_owned(), "22023"),
        ("SELECT * FROM paxos('p', 'g', 1000000, 'v')".to_owned(), "55000"),
        ("SELECT paxos_apply_log('p', 'g', 9223372036854775807)".to_owned(), "55000"),
        ("SELECT paxos_apply_log('p', 'g', -5)".to_owned(), "22023"),
        ("SELECT paxos_replicate_table(NULL, 'pg_class')".to_owned(), "22004"),
        ("SELECT paxos_replicate_table('zz', 'pg_class')".to_owned(), "42704"),
        ("SELECT paxos_replicate_table('g', 'pg_class')".to_owned(), "42809"),
        ("SELECT paxos_replicate_table('g', 'pgp_metadata.round')".to_owned(), "42809"),
        ("SELECT paxos_replicate_table('g', 'pg_tables')".to_owned(), "42809"),
        ("SELECT paxos_replicate_tables(NULL, '{pg_class}')".to_owned(), "22004"),
        ("SELECT paxos_replicate_tables('g', NULL)".to_owned(), "22004"),
        ("SELECT paxos_replicate_tables('g', ARRAY[NULL]::regclass[])".to_owned(), "22004"),
        ("SELECT paxos_replicate_tables('g', '{}')".to_owned(), "22023"),
        ("SELECT paxos_replicate_tables('zz', '{pg_class}')".to_owned(), "42704"),
        ("SELECT paxos_replicate_tables('g', '{pg_class}')".to_owned(), "42809"),
        ("SELECT paxos_replicate_tables('g', '{no_such_table}')".to_owned(), "42P01"),
        ("SELECT paxos_remove_member(NULL, 'host=127.0.0.1')".to_owned(), "22004"),
        ("SELECT paxos_remove_member('g', NULL)".to_owned(), "22004"),
        ("SELECT paxos_remove_member('zz', 'host=127.0.0.1')".to_owned(), "42704"),
        ("SELECT paxos_apply_and_append('p', 'g', NULL)".to_owned(), "22004"),
        ("SELECT paxos_apply_and_append('p', 'zz', 'SELECT 1')".to_owned(), "42704"),
        ("SELECT paxos_apply_and_append('p', 'g', 'INSERT INTO nowhere VALUES (1)')".to_owned(), "42P01"),
        ("SELECT pgp_metadata.paxos_prepare('not json')".to_owned(), "22023"),
        (r#"SELECT pgp_metadata.paxos_prepare('{"group":"g","round":-1,"ballot":{"number":1,"proposer":"x"}}')"#.to_owned(), "22023"),
        (r#"SELECT pgp_metadata.paxos_prepare('{"group":"zz","round":1,"ballot":{"number":1,"proposer":"x"}}')"#.to_owned(), "42704"),
        (r#"SELECT pgp_metadata.paxos_prepare_from('{"group":"zz","from_round":1,"ballot":{"number":1,"proposer":"x"}}')"#.to_owned(), "42704"),
        (r#"SELECT pgp_metadata.paxos_prepare_from('{"group":"g","from_round":-3,"ballot":{"number":1,"proposer":"x"}}')"#.to_owned(), "22023"),
        (r#"SELECT pgp_metadata.paxos_accept('{"group":"g"}')"#.to_owned(), "22023"),
        (r#"SELECT pgp_metadata.paxos_accept('{"group":"g","first_round":1,"ballot":{"number":1,"proposer":"x"},"entries":[]}')"#.to_owned(), "22023"),
        (r#"SELECT pgp_metadata.paxos_submit('{"group":"zz","entries":[{"id":"1","kind":"value","value":"v"}]}')"#.to_owned(), "42704"),
        (r#"SELECT pgp_metadata.paxos_submit('{"group":"g","entries":[{"id":"1","kind":"join","value":"host=127.0.0.1"}]}')"#.to_owned(), "22023"),
        // More entries than one batch carries.
        (format!(
            r#"SELECT pgp_metadata.paxos_submit('{{"group":"g","entries":[{}]}}')"#,
            [r#"{"id":"1","kind":"value","value":"v"}"#; 65].join(",")
        ), "22023"),
        (r#"SELECT pgp_metadata.paxos_learn('{"group":"zz","decisions":[]}')"#.to_owned(), "42704"),
        (r#"SELECT pgp_metadata.paxos_chosen('{"group":"zz","from_round":0,"through_round":9,"limit":5}')"#.to_owned(), "42704"),
        (r#"SELECT pgp_metadata.paxos_max_round('{"group":"zz"}')"#.to_owned(), "42704"),
        (r#"SELECT pgp_metadata.paxos_lease('{"group":"zz","ballot":{"number":1,"proposer":"x"},"duration_ms":10}')"#.to_owned(), "42704"),
        (r#"SELECT pgp_metadata.paxos_lease('{"group":"g","ballot":{"number":-1,"proposer":"x"},"duration_ms":10}')"#.to_owned(), "22023"),
        (r#"SELECT pgp_metadata.paxos_lease('{"group":"g","ballot":{"number":1,"proposer":"x"},"duration_ms":-10}')"#.to_owned(), "22023"),
        (r#"SELECT pgp_metadata.paxos_change_membership('{"group":"g","connection":"host=db.example","kind":"join"}')"#.to_owned(), "22023"),
        (r#"SELECT pgp_metadata.paxos_change_membership('{"group":"g","connection":"host=127.0.0.1","kind":"value"}')"#.to_owned(), "22023"),
        // A ballot so high that no proposer could ever outbid it.
        (r#"SELECT pgp_metadata.paxos_prepare('{"group":"g","round":1,"ballot":{"number":9223372036854775807,"proposer":"x"}}')"#.to_owned(), "22023"),
    ] {
        assert_eq!(sqlstate(&a, &sql).await, code, "{sql}");
    }

    // A join through a node that is not running leaves no group behind on either side.
    let dead = "host=127.0.0.1 port=1 user=postgres dbname=postgres";
    let join_dead = format!("SELECT paxos_join_group('g', '{dead}', '{own_b}')");
    assert_eq!(sqlstate(&b, &join_dead).await, "08000", "{join_dead}");
    assert_eq!(groups_on(&b).await, 0);
    // A join naming another server as itself is refused before anything is appended.
    let join_wrong = format!("SELECT paxos_join_group('g', '{own_a}', '{own_a}')");
    assert_eq!(sqlstate(&b, &join_wrong).await, "22023");
    assert_eq!(groups_on(&b).await, 0);
    assert_eq!(
        read_log(&a).await.len(),
        1,
        "nothing was appended by the refused joins"
    );

    b.query_one("SELECT paxos_join_group('g', $1, $2)", &[&own_a, &own_b])
        .await
        .unwrap();
    let join_again = format!("SELECT paxos_join_group('g', '{own_a}', '{own_b}')");
    assert_eq!(sqlstate(&b, &join_again).await, "42710");
    assert_eq!(append(&b, "still works").await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_superusers_manage_groups_and_call_endpoints() {
    let cluster = start("privileges", 1);
    let clients = form_group(&cluster).await;
    let admin = &clients[0];
    admin
        .batch_execute("CREATE ROLE app LOGIN; CREATE ROLE trusted_app LOGIN; GRANT EXECUTE ON FUNCTION paxos_create_group(text, text) TO trusted_app")
        .await
        .unwrap();
    for sql in [
        "SELECT paxos_create_group('h', 'host=127.0.0.1')",
        "SELECT paxos_append('p', 'g', 'v')",
        "SELECT paxos_apply_and_append('p', 'g', 'SELECT 1')",
        "SELECT paxos_replicate_table('g', 'pg_class')",
        "SELECT paxos_max_group_round('g')",
        "SELECT paxos_drop_group('g')",
        r#"SELECT pgp_metadata.paxos_state('{"group":"g"}')"#,
        r#"SELECT pgp_metadata.paxos_await_drop('{"group":"g","round":9}')"#,
        r#"SELECT pgp_metadata.paxos_become_learner('{"group":"h","existing":"host=127.0.0.1","own":"host=127.0.0.1"}')"#,
        "SELECT pgp_metadata.paxos_prepare('{}')",
        "SELECT pgp_metadata.paxos_learn('{}')",
        "SELECT pgp_metadata.paxos_submit('{}')",
        "SELECT * FROM pgp_metadata.round",
    ] {
        admin.batch_execute("SET ROLE app").await.unwrap();
        assert_eq!(
            sqlstate(admin, sql).await,
            "42501",
            "{sql} as an unprivileged role"
        );
        admin.batch_execute("RESET ROLE").await.unwrap();
    }
    // EXECUTE alone does not make a role able to manage groups.
    admin.batch_execute("SET ROLE trusted_app").await.unwrap();
    assert_eq!(
        sqlstate(admin, "SELECT paxos_create_group('h', 'host=127.0.0.1')").await,
        "42501"
    );
    admin.batch_execute("RESET ROLE").await.unwrap();
    // Nor do grants on the member endpoints and the catalog make a role a member: only the
    // role of the member connection strings (here postgres) or a superuser is served.
    admin
        .batch_execute(
            "GRANT USAGE ON SCHEMA pgp_metadata TO trusted_app; \
             GRANT SELECT ON ALL TABLES IN SCHEMA pgp_metadata TO trusted_app; \
             GRANT EXECUTE ON FUNCTION pgp_metadata.paxos_max_round(text), \
                 pgp_metadata.paxos_accept(text), \
                 pgp_metadata.paxos_change_membership(text) TO trusted_app",
        )
        .await
        .unwrap();
    admin.batch_execute("SET ROLE trusted_app").await.unwrap();
    for sql in [
        r#"SELECT pgp_metadata.paxos_max_round('{"group":"g"}')"#,
        "SELECT pgp_metadata.paxos_accept('{}')",
        r#"SELECT pgp_metadata.paxos_change_membership('{"group":"g","connection":"host=127.0.0.1","kind":"leave"}')"#,
    ] {
        assert_eq!(
            sqlstate(admin, sql).await,
            "42501",
            "{sql} as a granted role"
        );
    }
    admin.batch_execute("RESET ROLE").await.unwrap();
    assert_eq!(groups_on(admin).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_grant_recipe_works_and_gives_nothing_more() {
    let cluster = start("recipe", 1);
    let clients = form_group(&cluster).await;
    let admin = &clients[0];
    admin
        .batch_execute(
            "CREATE ROLE app LOGIN; \
             GRANT EXECUTE ON FUNCTION paxos_append(text, text, text), \
                 paxos(text, text, bigint, text), paxos_max_group_round(text), \
                 paxos_apply_log(text, text, bigint), paxos_replicate_table(text, regclass) \
                 TO app; \
             CREATE TABLE not_apps (k int)",
        )
        .await
        .unwrap();
    let app = cluster
        .node(0)
        .connect_as("app")
        .await
        .expect("connect as app");
    let round: i64 = app
        .query_one("SELECT paxos_append('app', 'g', 'from app')", &[])
        .await
        .expect("the recipe's paxos_append")
        .get(0);
    let max: i64 = app
        .query_one("SELECT paxos_max_group_round('g')", &[])
        .await
        .expect("the recipe's paxos_max_group_round")
        .get(0);
    assert!(max >= round);
    app.query_one("SELECT paxos_apply_log('app', 'g', $1)", &[&round])
        .await
        .expect("the recipe's paxos_apply_log");
    let (value, changed): (Option<String>, bool) = app
        .query_one("SELECT * FROM paxos('app', 'g', $1)", &[&round])
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("the recipe's paxos");
    assert_eq!(value.as_deref(), Some("from app"));
    assert!(changed, "a NULL proposal learns the value");
    // Nothing more: not the catalog, not the endpoints, not another role's table.
    for sql in [
        "SELECT * FROM pgp_metadata.round",
        "UPDATE pgp_metadata.\"group\" SET last_applied_round = 0",
        "SELECT pgp_metadata.paxos_accept('{}')",
        "SELECT pgp_metadata.paxos_announce('{}')",
        "SELECT pgp_metadata.paxos_lease('{}')",
        "SELECT pgp_metadata.paxos_submit('{}')",
        "SELECT paxos_apply_and_append('app', 'g', 'SELECT 1')",
    ] {
        assert_eq!(sqlstate(&app, sql).await, "42501", "{sql} as app");
    }
    let refused = app
        .batch_execute("SELECT paxos_replicate_table('g', 'not_apps')")
        .await
        .expect_err("not its table");
    let db = refused.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "42501");
    assert!(
        db.message().contains("must be the owner"),
        "{}",
        db.message()
    );
    // An unknown group is told as such, never as an unknown outcome.
    assert_eq!(
        sqlstate(&app, "SELECT paxos_append('app', 'nope', 'v')").await,
        "42704"
    );
}

/// An append that fails before it leaves the session (here a lock timeout while it looks
/// the group up) is reported with its own error, never as an unknown outcome (40003), and
/// leaves nothing in the log; the same for a replicated write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_before_anything_was_sent_is_not_an_unknown_outcome() {
    let cluster = start("notsent", 2);
    let clients = form_group(&cluster).await;
    create_everywhere(&clients, "CREATE TABLE kv (k int PRIMARY KEY, v text)").await;
    replicate(&clients[0], "kv").await.expect("replicate");
    let holder = connect(&cluster, 0).await;
    let before = log_length(&clients[0]).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE pgp_metadata.\"group\" IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let a = &clients[0];
    a.batch_execute("SET lock_timeout = '200ms'").await.unwrap();
    for sql in [
        "SELECT paxos_append('p', 'g', 'never sent')",
        "INSERT INTO kv VALUES (1, 'never sent')",
    ] {
        assert_eq!(sqlstate(a, sql).await, "55P03", "{sql}");
    }
    holder.batch_execute("ROLLBACK").await.unwrap();
    a.batch_execute("RESET lock_timeout").await.unwrap();
    assert_eq!(log_length(a).await, before, "nothing was appended");
    append(a, "sent")
        .await
        .expect("an append once the lock is gone");
    assert_eq!(log_length(a).await, before + 1);
}

#[test]
fn refuses_to_load_unless_preloaded() {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        preload_pg_paxos: false,
        extra_conf: vec![],
        name: "nopreload".into(),
    })
    .expect("start");
    let error = cluster
        .node(0)
        .psql("CREATE EXTENSION pg_paxos")
        .expect_err("must refuse");
    assert!(
        error.to_string().contains("shared_preload_libraries"),
        "{error}"
    );
    assert!(
        cluster.node(0).psql("SELECT 1").is_ok(),
        "the server survived"
    );
}
