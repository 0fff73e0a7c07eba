//! The recipes of `docs/recipes.md`, run as written there (the SQL is read from the file) on
//! 3-member groups, with members and workers lost along the way.
mod common;

use std::time::{Duration, SystemTime};

use common::*;
use futures_util::future::join_all;
use tokio_postgres::Client;

/// The SQL block of `docs/recipes.md` that starts with `-- recipe: <name>`.
fn recipe(name: &str) -> String {
    let doc = include_str!("../docs/recipes.md");
    let marker = format!("-- recipe: {name}\n");
    let start = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/recipes.md has no recipe {name}"))
        + marker.len();
    let end = start + doc[start..].find("```").expect("the block ends");
    doc[start..end].trim().to_owned()
}

/// A group of 3 with the recipe's table `table` (made by `recipe(table_recipe)`) on every
/// member, replicated.
async fn group_with(cluster: &cluster::Cluster, table_recipe: &str, table: &str) -> Vec<Client> {
    let clients = form_group(cluster).await;
    create_everywhere(&clients, &recipe(table_recipe)).await;
    replicate(&clients[0], table)
        .await
        .unwrap_or_else(|e| panic!("replicating {table}: {e}"));
    clients
}

fn at(t0: SystemTime, seconds: u64) -> SystemTime {
    t0 + Duration::from_secs(seconds)
}

/// The token (or term) a row-returning recipe gave back, if any.
async fn token(
    client: &Client,
    sql: &str,
    name: &str,
    who: &str,
    now: SystemTime,
    until: SystemTime,
) -> Option<i64> {
    client
        .query_opt(sql, &[&name, &who, &now, &until])
        .await
        .unwrap_or_else(|e| panic!("{who}: {e}"))
        .map(|row| row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_expires_and_its_fencing_token_refuses_the_old_holder() {
    let cluster = start("recipe_lock", 3);
    let clients = group_with(&cluster, "lock-table", "locks").await;
    // The protected resource: a plain table on one member.
    clients[2]
        .batch_execute(&recipe("fenced-table"))
        .await
        .unwrap();
    let acquire = recipe("lock-acquire");
    let (a, b) = (&clients[0], &clients[1]);
    let t0 = SystemTime::now();

    let first = token(a, &acquire, "nightly", "a", t0, at(t0, 10)).await;
    let first = first.expect("a takes the free lock");
    // Only pg_paxos's own paxos_write_round() passes the determinism check, not a namesake.
    clients[1]
        .batch_execute(
            "CREATE SCHEMA evil; CREATE FUNCTION evil.paxos_write_round() RETURNS bigint \
             LANGUAGE sql VOLATILE AS 'SELECT (random() * 1000)::bigint'",
        )
        .await
        .unwrap();
    let namesake = clients[1]
        .execute(
            "INSERT INTO locks VALUES ('other', 'e', '2026-01-01', evil.paxos_write_round())",
            &[],
        )
        .await;
    assert_eq!(
        sqlstate(&namesake).as_deref(),
        Some("0A000"),
        "{namesake:?}"
    );
    assert_eq!(
        token(b, &acquire, "nightly", "b", at(t0, 1), at(t0, 11)).await,
        None,
        "held"
    );
    assert_eq!(
        token(a, &acquire, "nightly", "a", at(t0, 5), at(t0, 15)).await,
        Some(first),
        "a renewal keeps the token"
    );
    // a stops renewing; by b's clock the lock has expired.
    let second = token(b, &acquire, "nightly", "b", at(t0, 16), at(t0, 26)).await;
    let second = second.expect("b takes the expired lock");
    assert!(second > first, "tokens grow: {first} then {second}");

    let fenced = recipe("fenced-write");
    let write = |token: i64, body: &'static str| {
        let fenced = fenced.clone();
        let resource = &clients[2];
        async move {
            resource
                .execute(&fenced, &[&"report", &body, &token])
                .await
                .unwrap()
        }
    };
    assert_eq!(write(second, "from b").await, 1);
    assert_eq!(
        write(first, "from a, who woke up late").await,
        0,
        "a's token is old"
    );
    let body: String = clients[2]
        .query_one("SELECT body FROM fenced WHERE resource = 'report'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "from b");
    assert_eq!(
        token(a, &acquire, "nightly", "a", at(t0, 17), at(t0, 27)).await,
        None
    );

    // Released on one member, gone on all; taken again with a newer token.
    b.execute(&recipe("lock-release"), &[&"nightly", &"b"])
        .await
        .unwrap();
    for client in &clients {
        let held: i64 = client
            .query_one("SELECT count(*) FROM locks", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(held, 0);
    }
    // An application role with rights on the table alone takes it, on any member.
    // Roles first, on every member; the GRANT is replicated DDL.
    create_everywhere(&clients, "CREATE ROLE app LOGIN").await;
    clients[0]
        .batch_execute("GRANT SELECT, INSERT, UPDATE, DELETE ON locks TO app")
        .await
        .unwrap();
    let app = cluster.node(2).connect_as("app").await.unwrap();
    let third = token(&app, &acquire, "nightly", "c", at(t0, 18), at(t0, 28)).await;
    assert!(third.is_some_and(|t| t > second), "{third:?}");
    assert_replicas_identical(&clients).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_runs_each_minute_once_through_the_loss_of_a_member_and_a_worker() {
    let cluster = start("recipe_cron", 3);
    let clients = group_with(&cluster, "cron-table", "cron_runs").await;
    let (claim, who) = (recipe("cron-claim"), recipe("cron-who"));
    // Worker i uses member i until that member is gone.
    let mut workers: Vec<Option<Client>> = Vec::new();
    for i in 0..3 {
        workers.push(Some(connect(&cluster, i).await));
    }
    for minute in 0..10i64 {
        if minute == 4 {
            cluster.stop(2).unwrap();
            workers[2] = Some(connect(&cluster, 0).await);
        }
        if minute == 7 {
            workers[1] = None;
        }
        let attempts = workers.iter().enumerate().filter_map(|(i, w)| {
            let name = format!("worker-{i}");
            let claim = claim.as_str();
            w.as_ref().map(|client| async move {
                let won = client
                    .query_opt(claim, &[&"report", &minute, &name])
                    .await
                    .unwrap_or_else(|e| panic!("{name} at minute {minute}: {e}"));
                won.map(|_| name)
            })
        });
        let winners: Vec<String> = join_all(attempts).await.into_iter().flatten().collect();
        assert_eq!(winners.len(), 1, "minute {minute}: {winners:?}");
        for client in [&clients[0], &clients[1]] {
            let recorded: String = client
                .query_one(who.as_str(), &[&"report", &minute])
                .await
                .unwrap()
                .get(0);
            assert_eq!(recorded, winners[0], "minute {minute}");
        }
    }
    for client in &clients[..2] {
        let (runs, minutes): (i64, i64) = client
            .query_one(
                "SELECT count(*), count(DISTINCT minute) FROM cron_runs",
                &[],
            )
            .await
            .map(|row| (row.get(0), row.get(1)))
            .unwrap();
        assert_eq!((runs, minutes), (10, 10));
    }
    assert_replicas_identical(&clients[..2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_leads_a_service_and_a_new_term_follows_its_expiry() {
    let cluster = start("recipe_election", 3);
    let clients = group_with(&cluster, "election-table", "leaders").await;
    let (campaign, who) = (recipe("election-campaign"), recipe("election-who"));
    let t0 = SystemTime::now();
    let candidates = clients.iter().enumerate().map(|(i, client)| {
        let campaign = campaign.as_str();
        async move {
            let name = format!("instance-{i}");
            let term = token(client, campaign, "billing", &name, t0, at(t0, 10)).await;
            term.map(|t| (name, t))
        }
    });
    let won: Vec<(String, i64)> = join_all(candidates).await.into_iter().flatten().collect();
    assert_eq!(won.len(), 1, "one leader: {won:?}");
    let (leader, term) = won[0].clone();
    for client in &clients {
        let row = client.query_one(who.as_str(), &[&"billing"]).await.unwrap();
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, i64>(1)),
            (leader.clone(), term)
        );
    }
    let index: usize = leader.trim_start_matches("instance-").parse().unwrap();
    let other = (index + 1) % 3;
    let name = format!("instance-{other}");
    let renewed = token(
        &clients[index],
        &campaign,
        "billing",
        &leader,
        at(t0, 5),
        at(t0, 15),
    )
    .await;
    assert_eq!(renewed, Some(term), "renewing keeps the term");
    assert_eq!(
        token(
            &clients[other],
            &campaign,
            "billing",
            &name,
            at(t0, 6),
            at(t0, 16)
        )
        .await,
        None
    );

    // The leader stops renewing and its member goes away; another instance takes over.
    cluster.stop(index).unwrap();
    let next = token(
        &clients[other],
        &campaign,
        "billing",
        &name,
        at(t0, 16),
        at(t0, 26),
    )
    .await;
    let next = next.expect("a new leader once the term expired");
    assert!(next > term, "terms grow: {term} then {next}");
    let third = (index + 2) % 3;
    let row = clients[third]
        .query_one(who.as_str(), &[&"billing"])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i64>(1)),
        (name, next)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_is_claimed_once_by_workers_on_every_member() {
    const JOBS: i64 = 24;
    let cluster = start("recipe_queue", 3);
    let clients = group_with(&cluster, "queue-table", "jobs").await;
    let add = recipe("queue-add");
    for n in 0..JOBS {
        clients[(n % 3) as usize]
            .query_one(add.as_str(), &[&format!("job {n}")])
            .await
            .expect("adding a job");
    }
    let (claim, done, mine) = (
        recipe("queue-claim"),
        recipe("queue-done"),
        recipe("queue-mine"),
    );
    let workers = clients.iter().enumerate().map(|(i, client)| {
        let (claim, done) = (claim.as_str(), done.as_str());
        async move {
            let name = format!("worker-{i}");
            let mut claimed = Vec::new();
            while let Some(row) = client.query_opt(claim, &[&name]).await.unwrap() {
                let id: i64 = row.get(0);
                claimed.push(id);
                assert_eq!(client.execute(done, &[&id, &name]).await.unwrap(), 1);
            }
            (name, claimed)
        }
    });
    let results = join_all(workers).await;
    let mut all: Vec<i64> = results.iter().flat_map(|(_, c)| c.clone()).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=JOBS).collect::<Vec<_>>(),
        "each job claimed exactly once"
    );
    for (name, _) in &results {
        let left = clients[0].query(mine.as_str(), &[name]).await.unwrap();
        assert!(left.is_empty(), "{name} holds nothing more");
    }
    // Claims took effect in log order: a later job was claimed at a later round.
    let rounds: Vec<i64> = clients[1]
        .query("SELECT claimed_round FROM jobs WHERE done ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(rounds.len() as i64, JOBS);
    assert!(rounds.windows(2).all(|w| w[0] < w[1]), "{rounds:?}");
    assert_replicas_identical(&clients).await;
}
