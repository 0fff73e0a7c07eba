//! Connections from this backend to group members.
//!
//! - One cached connection per member and backend, driven by a current-thread tokio runtime
//!   that only runs inside [`exchange`]: nothing here runs on another thread.
//! - Requests to all targets go out at once; replies are handed over as they arrive, so a
//!   majority never waits for a dead or hung member.
//! - Every request is bounded by `pg_paxos.request_timeout`, and every wait is interruptible:
//!   the runtime is left every few milliseconds to let PostgreSQL process interrupts
//!   (statement_timeout, pg_cancel_backend). Before an interrupt raises its error, the remote
//!   queries still running are cancelled and their connections dropped.
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::runtime::Runtime;
use tokio_postgres::{CancelToken, Client, NoTls, SimpleQueryMessage};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::connstr::{self, quote_literal};
use crate::gucs;

/// How long the runtime runs before PostgreSQL gets a chance to process interrupts.
const SLICE: Duration = Duration::from_millis(5);
/// How long cancelling a remote query may take before we give up on it.
const CANCEL_TIMEOUT: Duration = Duration::from_millis(250);

type Clients = Rc<RefCell<HashMap<String, Rc<Client>>>>;

struct Peers {
    runtime: Runtime,
    /// Shared with the request futures, which cache a connection as soon as it is made: a
    /// request abandoned once a majority answered still leaves its connection for next time.
    clients: Clients,
}

thread_local! {
    static PEERS: RefCell<Option<Peers>> = const { RefCell::new(None) };
}

fn with_peers<R>(f: impl FnOnce(&mut Peers) -> R) -> R {
    PEERS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let peers = slot.get_or_insert_with(|| Peers {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .unwrap_or_else(|e| panic!("pg_paxos could not start its I/O runtime: {e}")),
            clients: Clients::default(),
        });
        f(peers)
    })
}

/// Why a request to a member got no answer.
pub type Failure = String;

/// Sends `requests[i].1` (one SQL statement returning one text value) to member
/// `requests[i].0`, all at once, and hands each answer to `on_reply(i, ..)` as it arrives,
/// until `on_reply` breaks or every request has answered, failed or timed out.
pub fn exchange(
    requests: &[(String, String)],
    mut on_reply: impl FnMut(usize, Result<String, Failure>) -> ControlFlow<()>,
) {
    let timeout = gucs::request_timeout();
    with_peers(|peers| {
        let mut pending = FuturesUnordered::new();
        for (index, (member, sql)) in requests.iter().enumerate() {
            pending.push(request(
                index,
                member.clone(),
                sql.clone(),
                peers.clients.clone(),
                timeout,
            ));
        }
        let mut answered = vec![false; requests.len()];
        loop {
            let next = drive(peers, pending.next(), || {
                let unanswered = requests
                    .iter()
                    .zip(&answered)
                    .filter(|(_, done)| !**done)
                    .map(|((member, _), _)| member.clone());
                unanswered.collect()
            });
            let Some((index, outcome)) = next else { break };
            answered[index] = true;
            let member = &requests[index].0;
            let result = match outcome {
                Outcome::Answer(text) => Ok(text),
                Outcome::Failed {
                    reason,
                    connection_lost,
                } => {
                    if connection_lost {
                        peers.clients.borrow_mut().remove(member);
                    }
                    Err(reason)
                }
            };
            if on_reply(index, result).is_break() {
                break;
            }
        }
    })
}

/// Sends one request to each member and collects every outcome.
pub fn exchange_all(requests: &[(String, String)]) -> Vec<Result<String, Failure>> {
    let mut out: Vec<Result<String, Failure>> = vec![Err("no answer".into()); requests.len()];
    exchange(requests, |i, r| {
        out[i] = r;
        ControlFlow::Continue(())
    });
    out
}

enum Outcome {
    Answer(String),
    Failed {
        reason: String,
        connection_lost: bool,
    },
}

async fn request(
    index: usize,
    member: String,
    sql: String,
    clients: Clients,
    timeout: Duration,
) -> (usize, Outcome) {
    let work = async {
        let cached = clients.borrow().get(&member).cloned();
        let client = match cached {
            Some(client) if !client.is_closed() => client,
            _ => {
                let client = Rc::new(connect(&member, timeout).await?);
                clients.borrow_mut().insert(member.clone(), client.clone());
                client
            }
        };
        let messages = client
            .simple_query(&sql)
            .await
            .map_err(|e| (describe(&e), client.is_closed()))?;
        let text = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        });
        match text {
            Some(text) => Ok(Outcome::Answer(text)),
            None => Err(("answered with no value".to_owned(), false)),
        }
    };
    let outcome = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(answer)) => answer,
        Ok(Err((reason, connection_lost))) => Outcome::Failed {
            reason,
            connection_lost,
        },
        // The connection may be stuck behind the unanswered query: never reuse it.
        Err(_) => Outcome::Failed {
            reason: format!("no answer within {} ms", timeout.as_millis()),
            connection_lost: true,
        },
    };
    (index, outcome)
}

async fn connect(member: &str, timeout: Duration) -> Result<Client, (String, bool)> {
    let config = connstr::config(member, timeout).map_err(|e| (e.to_string(), true))?;
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| (describe(&e), true))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The server's own message when there is one, else the client library's.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => error.to_string(),
    }
}

/// Runs `future` to completion on the runtime, leaving it every [`SLICE`] to let PostgreSQL
/// process interrupts. When a cancel or termination is pending, the queries of the members
/// `in_flight()` names are cancelled and their connections dropped before the error is raised.
fn drive<F: Future>(
    peers: &mut Peers,
    future: F,
    in_flight: impl Fn() -> Vec<String>,
) -> F::Output {
    let mut future = pin!(future);
    loop {
        // Timers must be created inside the runtime, hence the async block.
        let slice = peers
            .runtime
            .block_on(async { tokio::time::timeout(SLICE, future.as_mut()).await });
        if let Ok(output) = slice {
            return output;
        }
        // SAFETY: reading flags that signal handlers set; the backend is single-threaded.
        let cancelling =
            unsafe { pgrx::pg_sys::QueryCancelPending != 0 || pgrx::pg_sys::ProcDiePending != 0 };
        if cancelling {
            cancel(peers, &in_flight());
        }
        pgrx::check_for_interrupts!();
    }
}

fn cancel(peers: &mut Peers, members: &[String]) {
    let tokens: Vec<CancelToken> = members
        .iter()
        .filter_map(|m| peers.clients.borrow_mut().remove(m))
        .map(|client| client.cancel_token())
        .collect();
    let cancels = tokens.iter().map(|token| async move {
        let _ = tokio::time::timeout(CANCEL_TIMEOUT, token.cancel_query(NoTls)).await;
    });
    peers
        .runtime
        .block_on(futures_util::future::join_all(cancels));
}

/// Runs `sleep` interruptibly (for randomized backoff between ballots).
pub fn sleep(duration: Duration) {
    with_peers(|peers| {
        drive(
            peers,
            async { tokio::time::sleep(duration).await },
            Vec::new,
        )
    })
}

/// Drops every cached connection (after the member list changed, or in tests).
pub fn forget_all() {
    with_peers(|peers| peers.clients.borrow_mut().clear())
}

/// The SQL that calls endpoint `function` with `request`. The JSON travels as one escaped
/// literal through the simple query protocol, whose answer arrives only after the endpoint's
/// transaction committed: an acceptor's reply is never ahead of its durable state.
pub fn endpoint_sql(function: &str, request: &impl Serialize) -> String {
    let json = serde_json::to_string(request)
        .unwrap_or_else(|e| panic!("pg_paxos: cannot encode a request: {e}"));
    format!("SELECT pgp_metadata.{function}({})", quote_literal(&json))
}

pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Failure> {
    serde_json::from_str(text).map_err(|e| format!("unreadable answer ({e})"))
}

/// Calls endpoint `function` on one member and decodes its answer.
pub fn call<Rep: DeserializeOwned>(
    member: &str,
    function: &str,
    request: &impl Serialize,
) -> Result<Rep, Failure> {
    exchange_all(&[(member.to_owned(), endpoint_sql(function, request))])
        .pop()
        .unwrap_or_else(|| Err("no answer".into()))
        .and_then(|text| parse(&text))
}
