//! Upgrades: a group created with pg_paxos 0.1.0's SQL, holding data, updated member by
//! member with `ALTER EXTENSION pg_paxos UPDATE` while it keeps working, ends with the
//! same extension objects as a fresh install of the current version.
mod common;

use common::*;
use tokio_postgres::{Client, NoTls};

/// Every object of the extension in `client`'s database, with what defines it: function
/// signatures, volatility and privileges, view definitions and privileges, table columns,
/// and the privileges on the extension's schema. Sorted, one per line.
const OBJECTS: &str = r#"
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
  SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
         || coalesce(' (' || pg_get_function_identity_arguments(p.oid) || ') -> '
                     || pg_get_function_result(p.oid) || ' ' || p.provolatile::text
                     || p.proparallel::text || p.proisstrict::text || ' ' || coalesce(p.proacl::text, ''), '')
         || coalesce(' ' || c.relkind::text || ' ' || coalesce(c.relacl::text, '')
                     || ' ' || coalesce(pg_get_viewdef(c.oid), (
                          SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                            || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                                            ', ' ORDER BY a.attnum)
                          FROM pg_attribute a
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)), '')
         || coalesce(' ' || n.nspacl::text, '') AS line
  FROM pg_depend d
  LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
  LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
  LEFT JOIN pg_namespace n ON d.classid = 'pg_namespace'::regclass AND n.oid = d.objid
  WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
    AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_paxos')
) objects"#;

async fn objects(client: &Client) -> String {
    client.query_one(OBJECTS, &[]).await.unwrap().get(0)
}

async fn version(client: &Client) -> String {
    client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_paxos'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_group_updates_member_by_member_to_a_fresh_installs_objects() {
    let cluster = start("upgrade", 3);
    let current: String = connect(&cluster, 0)
        .await
        .query_one(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_paxos'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(current, "0.1.0", "the update starts from 0.1.0");
    for i in 0..3 {
        connect(&cluster, i)
            .await
            .batch_execute("CREATE EXTENSION pg_paxos VERSION '0.1.0'")
            .await
            .expect("0.1.0's install script");
    }
    let clients = form_group(&cluster).await;
    create_everywhere(&clients, "CREATE TABLE kv (k int PRIMARY KEY, v text)").await;
    replicate(&clients[0], "kv").await.expect("replicating kv");
    let mut key = 0;
    for client in &clients {
        for _ in 0..5 {
            key += 1;
            client
                .execute("INSERT INTO kv VALUES ($1, 'before')", &[&key])
                .await
                .expect("a write on 0.1.0");
        }
    }
    for client in &clients {
        assert_eq!(version(client).await, "0.1.0");
    }

    // One member at a time; the group writes between the updates.
    for (i, client) in clients.iter().enumerate() {
        client
            .batch_execute("ALTER EXTENSION pg_paxos UPDATE")
            .await
            .unwrap_or_else(|e| panic!("updating node {i}: {e}"));
        assert_eq!(version(client).await, current);
        key += 1;
        clients[(i + 1) % 3]
            .execute("INSERT INTO kv VALUES ($1, 'during')", &[&key])
            .await
            .expect("a write while members run different versions");
        append(&clients[(i + 2) % 3], "during")
            .await
            .expect("an append while members run different versions");
    }
    for client in &clients {
        apply_all(client).await;
    }
    assert_replicas_identical(&clients).await;
    let count: i64 = clients[2]
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, i64::from(key), "no write lost across the update");
    let role: String = clients[0]
        .query_one(
            "SELECT role FROM pgp_metadata.paxos_group_status WHERE group_id = $1",
            &[&GROUP],
        )
        .await
        .expect("the views the update added")
        .get(0);
    assert!(["leader", "follower"].contains(&role.as_str()), "{role}");

    // The updated objects are those of a fresh install.
    clients[0]
        .batch_execute("CREATE DATABASE fresh")
        .await
        .unwrap();
    let (fresh, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=fresh",
            cluster.node(0).port
        ),
        NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    fresh
        .batch_execute("CREATE EXTENSION pg_paxos")
        .await
        .unwrap();
    assert_eq!(version(&fresh).await, current);
    let (updated, installed) = (objects(&clients[0]).await, objects(&fresh).await);
    for (u, i) in updated.lines().zip(installed.lines()) {
        assert_eq!(u, i, "the update and a fresh install differ");
    }
    assert_eq!(updated.lines().count(), installed.lines().count());
}
