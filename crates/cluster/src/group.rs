//! Forming a pg_paxos group over a cluster's nodes and reading its log: what the tests, the
//! demo and the benchmark all start from.
use tokio_postgres::Client;

use crate::{Cluster, Error};

/// One chosen log entry, as every member must agree on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub round: i64,
    pub kind: String,
    pub value: Option<String>,
}

async fn sql(cluster: &Cluster, node: usize, client: &Client, sql: &str) -> Result<(), Error> {
    client
        .batch_execute(sql)
        .await
        .map_err(|source| Error::Sql {
            node: cluster.node(node).to_string(),
            sql: sql.to_owned(),
            source,
        })
}

/// Creates the extension on every node and a group with every node as a member: node 0
/// founds it, node i joins through node i-1. Returns one session per node, in node order,
/// and the round each node joined at (0 for the founder).
pub async fn form(cluster: &Cluster, group: &str) -> Result<(Vec<Client>, Vec<i64>), Error> {
    let mut clients = Vec::new();
    let mut joined = Vec::new();
    for i in 0..cluster.nodes().len() {
        let client = cluster.node(i).connect().await?;
        sql(
            cluster,
            i,
            &client,
            "CREATE EXTENSION IF NOT EXISTS pg_paxos",
        )
        .await?;
        let own = cluster.node(i).connstr();
        let fail = |source| Error::Sql {
            node: cluster.node(i).to_string(),
            sql: "forming the group".into(),
            source,
        };
        if i == 0 {
            client
                .execute("SELECT paxos_create_group($1, $2)", &[&group, &own])
                .await
                .map_err(fail)?;
            joined.push(0);
        } else {
            let existing = cluster.node(i - 1).connstr();
            let row = client
                .query_one(
                    "SELECT paxos_join_group($1, $2, $3)",
                    &[&group, &existing, &own],
                )
                .await
                .map_err(fail)?;
            joined.push(row.get(0));
        }
        clients.push(client);
    }
    Ok((clients, joined))
}

/// The chosen entries this node holds, in round order.
pub async fn read_log(
    client: &Client,
    group: &str,
) -> Result<Vec<LogEntry>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT round_num, value_kind, value FROM pgp_metadata.round \
             WHERE group_id = $1 AND chosen ORDER BY round_num",
            &[&group],
        )
        .await?
        .iter()
        .map(|row| LogEntry {
            round: row.get(0),
            kind: row.get(1),
            value: row.get(2),
        })
        .collect())
}

/// Brings this node up to the group's highest round, then reads its log.
pub async fn applied_log(
    client: &Client,
    group: &str,
) -> Result<Vec<LogEntry>, tokio_postgres::Error> {
    client
        .query_one(
            "SELECT paxos_apply_log('reader', $1, paxos_max_group_round($1))",
            &[&group],
        )
        .await?;
    read_log(client, group).await
}
