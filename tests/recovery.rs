//! What the DBA's guide (`docs/dba-guide.md`) says to do when a majority is lost for good:
//! a survivor ends the group by dropping the extension, keeps its tables, and forms a new
//! group from them, which other nodes then join.
mod common;

use common::*;
use tokio_postgres::Client;

async fn count(client: &Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_of_a_lost_majority_forms_a_new_group_from_its_tables() {
    let cluster = start("recovery", 3);
    let clients = form_group(&cluster).await;
    create_everywhere(
        &clients,
        "CREATE TABLE orders (id int PRIMARY KEY, item text)",
    )
    .await;
    replicate(&clients[0], "orders")
        .await
        .expect("replicating orders");
    for (i, client) in clients.iter().enumerate() {
        for n in 0..4 {
            let id = (i * 10 + n) as i32;
            client
                .execute("INSERT INTO orders VALUES ($1, 'before')", &[&id])
                .await
                .expect("a write while the group is whole");
        }
    }
    apply_all(&clients[0]).await;
    assert_eq!(count(&clients[0]).await, 12);

    // The majority is gone: the survivor can no longer write.
    cluster.stop(1).unwrap();
    cluster.stop(2).unwrap();
    clients[0]
        .batch_execute("SET pg_paxos.request_timeout = '500ms'")
        .await
        .unwrap();
    let refused = clients[0]
        .execute("INSERT INTO orders VALUES (100, 'lost')", &[])
        .await;
    assert!(refused.is_err(), "no majority, no write");

    // The guide's steps, on the survivor.
    let survivor = connect(&cluster, 0).await;
    survivor
        .batch_execute("DROP EXTENSION pg_paxos")
        .await
        .expect("dropping the extension ends the group here");
    assert_eq!(count(&survivor).await, 12, "the tables stay");
    survivor
        .execute("INSERT INTO orders VALUES (50, 'between groups')", &[])
        .await
        .expect("an ordinary table now");
    survivor
        .batch_execute("CREATE EXTENSION pg_paxos")
        .await
        .unwrap();
    survivor
        .execute(
            "SELECT paxos_create_group('ha2', $1)",
            &[&cluster.node(0).connstr()],
        )
        .await
        .expect("a new group");
    survivor
        .query_one("SELECT paxos_replicate_table('ha2', 'orders')", &[])
        .await
        .expect("replicating the survivor's table");
    survivor
        .execute("INSERT INTO orders VALUES (51, 'in the new group')", &[])
        .await
        .expect("a write in the new group");

    // A former member comes back, ends the old group the same way, and joins with its
    // table emptied: it copies the survivor's rows.
    cluster.restart(1).unwrap();
    let returning = connect(&cluster, 1).await;
    returning
        .batch_execute("DROP EXTENSION pg_paxos; TRUNCATE orders; CREATE EXTENSION pg_paxos")
        .await
        .expect("ending the old group on the returning node");
    returning
        .query_one(
            "SELECT paxos_join_group('ha2', $1, $2)",
            &[&cluster.node(0).connstr(), &cluster.node(1).connstr()],
        )
        .await
        .expect("joining the new group");
    returning
        .execute(
            "INSERT INTO orders VALUES (52, 'from the returning node')",
            &[],
        )
        .await
        .expect("a write on the new member");
    for client in [&survivor, &returning] {
        client
            .query_one(
                "SELECT paxos_apply_log('test', 'ha2', paxos_max_group_round('ha2'))",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(count(client).await, 15);
    }
    let mut rows = Vec::new();
    for client in [&survivor, &returning] {
        let table: Vec<(i32, String)> = client
            .query("SELECT id, item FROM orders ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        rows.push(table);
    }
    assert_eq!(
        rows[0], rows[1],
        "the new group's members hold the same rows"
    );
}
