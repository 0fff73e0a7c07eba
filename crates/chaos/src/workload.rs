//! Clients on every member running a seeded mix of operations, each recorded with its
//! invocation time, its return time and result, or an unknown outcome:
//! - registers (one row per key of a replicated table): strong reads, writes, and
//!   compare-and-set as `UPDATE … WHERE v = expected`;
//! - an insert-only set (a replicated table of unique elements);
//! - raw `paxos_append` of unique values.
//!
//! An error with SQLSTATE 40003, a lost connection or a timeout is an unknown outcome: the
//! operation may or may not have taken effect, and the client continues under a new name
//! (a client never has two operations in flight). Any other error is a definite failure: the
//! operation must not have taken effect anywhere.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cluster::tokio_postgres::{Client, Error};
use cluster::Cluster;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::register::{Event, Op, Ret};

pub const GROUP: &str = "chaos";

/// The replicated tables the workload uses; created on every member before it starts.
pub const TABLES: &str = "CREATE TABLE registers (k int PRIMARY KEY, v bigint NOT NULL); \
                          CREATE TABLE elements (e bigint PRIMARY KEY)";

/// Longest wait for one operation, beyond the server-side statement_timeout.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(8);
const SESSION_SETUP: &str =
    "SET statement_timeout = '5s'; SET pg_paxos.request_timeout = '1s'; SET lock_timeout = '4s'";

/// How an operation ended.
enum Outcome<T> {
    Done(T),
    Failed(String),
    Unknown(String),
}

/// Everything the clients saw.
#[derive(Default)]
pub struct Observed {
    pub registers: Vec<Event>,
    pub inserted: BTreeSet<i64>,
    pub insert_unknown: BTreeSet<i64>,
    pub insert_failed: BTreeSet<i64>,
    /// Appended value and the round it got.
    pub appended: Vec<(String, i64)>,
    pub append_unknown: BTreeSet<String>,
    pub append_failed: BTreeSet<String>,
    /// Values of register writes and swaps that failed definitely, with their error.
    pub register_failed: BTreeMap<i64, String>,
    pub failures: usize,
    pub unknowns: usize,
    /// A few error messages, for the report.
    pub sample_errors: Vec<String>,
}

impl Observed {
    pub fn operations(&self) -> usize {
        self.registers.len()
            + self.inserted.len()
            + self.insert_unknown.len()
            + self.insert_failed.len()
            + self.appended.len()
            + self.append_unknown.len()
            + self.append_failed.len()
    }
}

/// Shared by the clients of one run.
pub struct Recorder {
    pub start: Instant,
    pub keys: i32,
    next_client: AtomicU64,
    observed: Mutex<Observed>,
}

impl Recorder {
    pub fn new(start: Instant, keys: i32) -> Self {
        Recorder {
            start,
            keys,
            next_client: AtomicU64::new(1),
            observed: Mutex::new(Observed::default()),
        }
    }

    fn new_client(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    fn with<R>(&self, f: impl FnOnce(&mut Observed) -> R) -> R {
        f(&mut self.observed.lock().expect("recorder lock"))
    }

    pub fn into_observed(self) -> Observed {
        self.observed.into_inner().expect("recorder lock")
    }

    fn note<T>(&self, outcome: &Outcome<T>) {
        self.with(|o| match outcome {
            Outcome::Done(_) => {}
            Outcome::Failed(e) | Outcome::Unknown(e) => {
                if matches!(outcome, Outcome::Failed(_)) {
                    o.failures += 1;
                } else {
                    o.unknowns += 1;
                }
                if o.sample_errors.len() < 8 {
                    o.sample_errors.push(e.clone());
                }
            }
        });
    }
}

fn classify<T>(result: Result<Result<T, Error>, tokio::time::error::Elapsed>) -> Outcome<T> {
    match result {
        Ok(Ok(value)) => Outcome::Done(value),
        Ok(Err(error)) => match error.as_db_error() {
            Some(db) if db.code().code() == "40003" => {
                Outcome::Unknown(format!("40003 {}", db.message()))
            }
            Some(db) => Outcome::Failed(format!("{} {}", db.code().code(), db.message())),
            None => Outcome::Unknown(format!("connection: {error}")),
        },
        Err(_) => Outcome::Unknown(format!("no answer within {OPERATION_TIMEOUT:?}")),
    }
}

/// Connects to `node`, or gives up quickly (it may be down or paused).
async fn connect(cluster: &Cluster, node: usize) -> Option<Client> {
    let client = tokio::time::timeout(Duration::from_secs(2), cluster.node(node).connect())
        .await
        .ok()?
        .ok()?;
    tokio::time::timeout(Duration::from_secs(2), client.batch_execute(SESSION_SETUP))
        .await
        .ok()?
        .ok()?;
    Some(client)
}

/// One client on `node`: runs seeded operations until `deadline`.
pub async fn client(
    cluster: &Cluster,
    node: usize,
    index: u64,
    seed: u64,
    deadline: Instant,
    recorder: &Recorder,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9).wrapping_add(index));
    let mut name = recorder.new_client();
    let mut session: Option<Client> = None;
    let mut n: i64 = 0;
    while Instant::now() < deadline {
        let Some(db) = session.as_ref() else {
            session = connect(cluster, node).await;
            if session.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            continue;
        };
        n += 1;
        let value = (index as i64 + 1) * 1_000_000 + n;
        let key = rng.random_range(1..=recorder.keys);
        let choice = rng.random_range(0..100);
        let invoked = recorder.start.elapsed();
        let lost = if choice < 70 {
            let op = match choice {
                0..=29 => Op::Read,
                30..=49 => Op::Write(value),
                _ => {
                    // Expect a value some client may have written, or the initial 0.
                    let expected = if rng.random_bool(0.3) {
                        0
                    } else {
                        (rng.random_range(0..8) + 1) * 1_000_000 + rng.random_range(0..n.max(1))
                    };
                    Op::Cas {
                        expected,
                        new: value,
                    }
                }
            };
            let outcome =
                classify(tokio::time::timeout(OPERATION_TIMEOUT, register(db, key, op)).await);
            recorder.note(&outcome);
            let returned = match &outcome {
                Outcome::Done(ret) => Some((recorder.start.elapsed(), *ret)),
                _ => None,
            };
            // A definitely failed read or write had no effect, and a read without an answer
            // says nothing: both are left out.
            let record = match &outcome {
                Outcome::Done(_) => true,
                Outcome::Unknown(_) => op != Op::Read,
                Outcome::Failed(error) => {
                    if op != Op::Read {
                        recorder.with(|o| o.register_failed.insert(value, error.clone()));
                    }
                    false
                }
            };
            if record {
                recorder.with(|o| {
                    o.registers.push(Event {
                        client: name,
                        key: key as i64,
                        op,
                        invoked,
                        returned,
                    })
                });
            }
            matches!(outcome, Outcome::Unknown(_))
        } else if choice < 85 {
            let params: [&(dyn cluster::tokio_postgres::types::ToSql + Sync); 1] = [&value];
            let insert = db.execute("INSERT INTO elements VALUES ($1)", &params);
            let outcome = classify(tokio::time::timeout(OPERATION_TIMEOUT, insert).await);
            recorder.note(&outcome);
            recorder.with(|o| match &outcome {
                Outcome::Done(_) => o.inserted.insert(value),
                Outcome::Failed(_) => o.insert_failed.insert(value),
                Outcome::Unknown(_) => o.insert_unknown.insert(value),
            });
            matches!(outcome, Outcome::Unknown(_))
        } else {
            let text = format!("chaos-{value}");
            let params: [&(dyn cluster::tokio_postgres::types::ToSql + Sync); 2] = [&GROUP, &text];
            let append = db.query_one("SELECT paxos_append('chaos', $1, $2)", &params);
            let outcome = classify(tokio::time::timeout(OPERATION_TIMEOUT, append).await);
            recorder.note(&outcome);
            recorder.with(|o| match &outcome {
                Outcome::Done(row) => o.appended.push((text.clone(), row.get(0))),
                Outcome::Failed(_) => {
                    o.append_failed.insert(text.clone());
                }
                Outcome::Unknown(_) => {
                    o.append_unknown.insert(text.clone());
                }
            });
            matches!(outcome, Outcome::Unknown(_))
        };
        if lost {
            // Its last operation may still take effect: continue as a new client, on a
            // new session (the old one may be stuck behind a paused server).
            name = recorder.new_client();
            session = None;
        }
    }
}

async fn register(db: &Client, key: i32, op: Op) -> Result<Ret, Error> {
    Ok(match op {
        Op::Read => {
            let row = db
                .query_one("SELECT v FROM registers WHERE k = $1", &[&key])
                .await?;
            Ret::Read(row.get(0))
        }
        Op::Write(v) => {
            db.execute("UPDATE registers SET v = $2 WHERE k = $1", &[&key, &v])
                .await?;
            Ret::Written
        }
        Op::Cas { expected, new } => {
            let changed = db
                .execute(
                    "UPDATE registers SET v = $3 WHERE k = $1 AND v = $2",
                    &[&key, &expected, &new],
                )
                .await?;
            if changed == 1 {
                Ret::Swapped
            } else {
                Ret::NotSwapped
            }
        }
    })
}

/// Reads every register once more, after the faults healed, as new clients: the final
/// state must fit the history too.
pub async fn final_reads(db: &Client, recorder: &Recorder) -> Result<(), Error> {
    for key in 1..=recorder.keys {
        let invoked = recorder.start.elapsed();
        let row = db
            .query_one("SELECT v FROM registers WHERE k = $1", &[&key])
            .await?;
        let returned = Some((recorder.start.elapsed(), Ret::Read(row.get(0))));
        let client = recorder.new_client();
        recorder.with(|o| {
            o.registers.push(Event {
                client,
                key: key as i64,
                op: Op::Read,
                invoked,
                returned,
            })
        });
    }
    Ok(())
}
