//! What one write costs does not grow with the log: the log rows it reads stay a handful,
//! however many rounds the log holds.
mod common;

use std::time::Duration;

use common::*;
use tokio_postgres::Client;

/// Rounds in the log before the writes are counted.
const LOG: usize = 2000;
/// Writes whose reads are counted.
const WRITES: usize = 50;

/// Rows of the log table read on the node so far, once the backends that served the votes,
/// idle now, have reported their counts: an idle backend reports what it has pending after
/// at most ten seconds (PostgreSQL's PGSTAT_IDLE_INTERVAL).
async fn log_rows_read(watcher: &Client) -> i64 {
    tokio::time::sleep(Duration::from_secs(12)).await;
    watcher
        .query_one(
            "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_all_tables \
             WHERE relid = 'pgp_metadata.round'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn append_many(session: &Client, count: usize) {
    for i in 0..count {
        append(session, &format!("entry {i}"))
            .await
            .expect("append");
    }
}

/// Before the fix, each vote that marked rounds chosen scanned the chosen rounds above the
/// learned one with a bound taken from the learner row, which no plan used as an index
/// condition: about the whole log, twice per write. And the backends serving the votes
/// kept the plans they made when the log was a few rounds long (scans of all of it) until
/// autovacuum analyzed the log, which this test is too short to see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reads_a_few_log_rows_however_long_the_log() {
    let cluster = start("costs", 1);
    let session = form_group(&cluster).await.remove(0);
    let watcher = connect(&cluster, 0).await;
    append_many(&session, LOG).await;
    let before = log_rows_read(&watcher).await;
    append_many(&session, WRITES).await;
    let read = log_rows_read(&watcher).await - before;
    let per_write = read / WRITES as i64;
    assert!(
        per_write < 50,
        "each write read {per_write} rows of a log of {LOG} rounds ({read} for {WRITES} writes)"
    );
    assert_no_crash(&cluster);
}
