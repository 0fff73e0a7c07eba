//! Connections from this backend to group members.
//!
//! - One cached connection per member and backend, driven by a current-thread tokio runtime
//!   that only runs while this backend waits for answers (in [`exchange`], [`Sent::collect`]
//!   and the like): nothing here runs on another thread. Requests started with [`send`]
//!   progress during any such wait, so several exchanges can be in flight at once.
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
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use postgres_openssl::MakeTlsConnector;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_postgres::{CancelToken, Client, NoTls, SimpleQueryMessage};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::connstr::{self, quote_literal};
use crate::gucs;
use crate::status::{self, Contact};

/// How long the runtime runs before PostgreSQL gets a chance to process interrupts.
const SLICE: Duration = Duration::from_millis(5);
/// How long cancelling a remote query may take before we give up on it.
const CANCEL_TIMEOUT: Duration = Duration::from_millis(250);

type Clients = Rc<RefCell<HashMap<String, Rc<Client>>>>;
/// Per member, how many of this backend's requests are still running.
type InFlight = Rc<RefCell<HashMap<String, usize>>>;
/// How many unanswered requests one member may have from one backend.
const MAX_IN_FLIGHT: usize = 32;

struct Peers {
    runtime: Runtime,
    /// Runs the tasks that make connections (see `request`).
    local: tokio::task::LocalSet,
    /// Shared with the request futures, which cache a connection as soon as it is made: a
    /// request abandoned once a majority answered still leaves its connection for next time.
    clients: Clients,
    in_flight: InFlight,
}

thread_local! {
    /// Never dropped: at backend exit, tearing down the runtime with tasks still in it would
    /// panic where no panic may unwind, and the operating system closes the sockets anyway.
    static PEERS: RefCell<Option<std::mem::ManuallyDrop<Peers>>> = const { RefCell::new(None) };
}

impl Peers {
    fn run<F: Future>(&self, future: F) -> F::Output {
        self.local.block_on(&self.runtime, future)
    }
}

fn with_peers<R>(f: impl FnOnce(&mut Peers) -> R) -> R {
    PEERS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let peers = slot.get_or_insert_with(|| {
            std::mem::ManuallyDrop::new(Peers {
                runtime: tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                    .unwrap_or_else(|e| panic!("pg_paxos could not start its I/O runtime: {e}")),
                local: tokio::task::LocalSet::new(),
                clients: Clients::default(),
                in_flight: InFlight::default(),
            })
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
    on_reply: impl FnMut(usize, Result<String, Failure>) -> ControlFlow<()>,
) {
    send(requests).collect(on_reply)
}

/// One request's answer, as [`awaited`] waits for it.
type Awaited = Pin<Box<dyn Future<Output = (usize, Outcome)>>>;

/// Requests on their way to members, whose answers [`Sent::collect`] hands over later:
/// meanwhile they run whenever this backend's runtime runs (while it waits for other
/// requests, say), so several exchanges can be in flight at once.
pub struct Sent {
    members: Vec<String>,
    pending: FuturesUnordered<Awaited>,
    /// Requests that never left: their member has too many unanswered ones already.
    busy: Vec<usize>,
    answered: Vec<bool>,
    /// Whether the caller has all it waits for: every answer, or its `on_reply` broke.
    done: bool,
}

/// Starts `requests` as [`exchange`] does, without waiting for any answer.
pub fn send(requests: &[(String, String)]) -> Sent {
    let timeout = gucs::request_timeout();
    with_peers(|peers| {
        let mut sent = Sent {
            members: requests.iter().map(|(m, _)| m.clone()).collect(),
            pending: FuturesUnordered::new(),
            busy: Vec::new(),
            answered: vec![false; requests.len()],
            done: false,
        };
        for (index, (member, sql)) in requests.iter().enumerate() {
            match peers.start(member, sql.clone()) {
                Some(task) => sent.pending.push(Box::pin(awaited(
                    index,
                    task,
                    timeout,
                    peers.clients.clone(),
                    member.clone(),
                ))),
                None => sent.busy.push(index),
            }
        }
        sent
    })
}

/// How often [`Sent::collect_until`] asks whether to stop waiting.
const STOP_CHECK: Duration = Duration::from_micros(500);

impl Sent {
    /// Hands each answer to `on_reply(i, ..)` as it arrives, until `on_reply` breaks or
    /// every request has answered, failed or timed out.
    pub fn collect(
        mut self,
        on_reply: impl FnMut(usize, Result<String, Failure>) -> ControlFlow<()>,
    ) {
        self.collect_until(on_reply, None);
    }

    /// [`Sent::collect`], returning early, `false`, as soon as `stop` holds (asked every
    /// [`STOP_CHECK`]); call it again to go on. `true` once all is collected.
    pub fn collect_until(
        &mut self,
        mut on_reply: impl FnMut(usize, Result<String, Failure>) -> ControlFlow<()>,
        stop: Option<&dyn Fn() -> bool>,
    ) -> bool {
        let (slice, stop) = match stop {
            Some(stop) => (STOP_CHECK, stop),
            None => (SLICE, &(|| false) as &dyn Fn() -> bool),
        };
        for index in std::mem::take(&mut self.busy) {
            let reason = format!("{MAX_IN_FLIGHT} earlier requests are still unanswered");
            if on_reply(index, Err(reason)).is_break() {
                self.done = true;
            }
        }
        while !self.done {
            let (members, answered) = (&self.members, &self.answered);
            let next = with_peers(|peers| {
                drive_until(
                    peers,
                    self.pending.next(),
                    || {
                        let unanswered = members.iter().zip(answered);
                        unanswered
                            .filter(|(_, done)| !**done)
                            .map(|(member, _)| member.clone())
                            .collect()
                    },
                    slice,
                    stop,
                )
            });
            let Some(next) = next else { return false };
            let Some((index, outcome)) = next else {
                self.done = true;
                break;
            };
            self.answered[index] = true;
            let result = match outcome {
                Outcome::Answer(text) => Ok(text),
                Outcome::Failed { reason, .. } => Err(reason),
            };
            if on_reply(index, result).is_break() {
                self.done = true;
            }
        }
        true
    }
}

/// What came of one request whose delivery matters.
pub enum Delivery {
    Answer(String),
    /// The request never left this node.
    NotSent,
    /// The member may have received the request, but no answer came.
    Unknown(Failure),
}

/// Sends one statement to one member, telling a request that never left apart from one
/// whose fate is unknown. A lost connection is dropped from the cache.
pub fn deliver(member: &str, sql: String) -> Delivery {
    let timeout = gucs::request_timeout();
    with_peers(|peers| {
        // Lets the connection tasks notice a member that went away while the connection sat
        // idle, so that a request to it is known never to have left.
        peers.run(async {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        });
        let Some(task) = peers.start(member, sql) else {
            return Delivery::NotSent;
        };
        let waiting = awaited(0, task, timeout, peers.clients.clone(), member.to_owned());
        let (_, outcome) = drive(peers, waiting, || vec![member.to_owned()]);
        match outcome {
            Outcome::Answer(text) => Delivery::Answer(text),
            Outcome::Failed { reason, sent } if sent => Delivery::Unknown(reason),
            Outcome::Failed { .. } => Delivery::NotSent,
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
        /// Whether the request may have reached the member.
        sent: bool,
    },
}

/// How a request task ended: the answer, or why not and whether it was sent.
type TaskResult = Result<String, (String, bool)>;

impl Peers {
    /// Starts a request to `member` as a task of its own, which runs whenever the runtime
    /// runs, until the member answers or the connection fails: a request whose answer is
    /// no longer awaited (a majority answered first) still completes, keeps its connection
    /// for next time, and counts against the member's in-flight limit until then. `None`
    /// when that limit is reached: a member that lags further behind is skipped, and fetches
    /// what it missed when it needs it.
    fn start(&self, member: &str, sql: String) -> Option<JoinHandle<TaskResult>> {
        {
            let mut in_flight = self.in_flight.borrow_mut();
            let count = in_flight.entry(member.to_owned()).or_default();
            if *count >= MAX_IN_FLIGHT {
                return None;
            }
            *count += 1;
        }
        let (clients, in_flight, member) = (
            self.clients.clone(),
            self.in_flight.clone(),
            member.to_owned(),
        );
        let timeout = gucs::request_timeout();
        Some(self.local.spawn_local(async move {
            let started = std::time::Instant::now();
            let result = run_request(&clients, &member, &sql, timeout).await;
            status::contact(
                &member,
                match &result {
                    Ok(_) => Contact::Answered(started.elapsed()),
                    Err((reason, _)) => Contact::Failed(reason),
                },
            );
            if let Some(count) = in_flight.borrow_mut().get_mut(&member) {
                *count = count.saturating_sub(1);
            }
            result
        }))
    }
}

async fn run_request(clients: &Clients, member: &str, sql: &str, timeout: Duration) -> TaskResult {
    let cached = clients.borrow().get(member).cloned();
    let client = match cached {
        Some(client) if !client.is_closed() => client,
        _ => {
            let client = Rc::new(connect(member, timeout).await.map_err(|r| (r, false))?);
            clients
                .borrow_mut()
                .insert(member.to_owned(), client.clone());
            client
        }
    };
    let messages = client.simple_query(sql).await.map_err(|e| {
        if client.is_closed() {
            forget(clients, member, &client);
        }
        (describe(&e), true)
    })?;
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| ("answered with no value".to_owned(), true))
}

/// Drops `client` from the cache unless another connection replaced it already.
fn forget(clients: &Clients, member: &str, client: &Rc<Client>) {
    let mut clients = clients.borrow_mut();
    if clients.get(member).is_some_and(|c| Rc::ptr_eq(c, client)) {
        clients.remove(member);
    }
}

/// Waits for a request task for at most `timeout`. A member that does not answer in time
/// may be stuck behind that query: its connection is not used again.
async fn awaited(
    index: usize,
    task: JoinHandle<TaskResult>,
    timeout: Duration,
    clients: Clients,
    member: String,
) -> (usize, Outcome) {
    let outcome = match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(answer))) => Outcome::Answer(answer),
        Ok(Ok(Err((reason, sent)))) => Outcome::Failed { reason, sent },
        Ok(Err(join)) => Outcome::Failed {
            reason: join.to_string(),
            sent: true,
        },
        Err(_) => {
            clients.borrow_mut().remove(&member);
            let reason = format!("no answer within {} ms", timeout.as_millis());
            status::contact(&member, Contact::TimedOut(&reason));
            Outcome::Failed { reason, sent: true }
        }
    };
    (index, outcome)
}

async fn connect(member: &str, timeout: Duration) -> Result<Client, String> {
    connect_tls(member, timeout).await.map(|(client, _)| client)
}

/// `connect`, and the TLS connector it used, which a cancel request needs too.
async fn connect_tls(
    member: &str,
    timeout: Duration,
) -> Result<(Client, MakeTlsConnector), String> {
    let (config, tls) = connstr::config(member, timeout).map_err(|e| e.to_string())?;
    let (client, connection) = (config.connect(tls.clone()).await).map_err(|e| describe(&e))?;
    tokio::spawn(connection);
    Ok((client, tls))
}

/// The server's own message when there is one, else the client library's with its causes
/// (a TLS handshake's says why the certificate was refused).
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return db.message().to_owned();
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(source) = cause {
        let said = source.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = source.source();
    }
    text
}

/// Runs `future` to completion on the runtime, leaving it every [`SLICE`] to let PostgreSQL
/// process interrupts. When a cancel or termination is pending, the queries of the members
/// `in_flight()` names are cancelled and their connections dropped before the error is raised.
fn drive<F: Future>(
    peers: &mut Peers,
    future: F,
    in_flight: impl Fn() -> Vec<String>,
) -> F::Output {
    drive_cancelling(peers, future, |peers| cancel(peers, &in_flight()))
}

/// `drive`, leaving the runtime every `slice` and giving up (`None`) when `stop` holds.
fn drive_until<F: Future>(
    peers: &mut Peers,
    future: F,
    in_flight: impl Fn() -> Vec<String>,
    slice: Duration,
    stop: &dyn Fn() -> bool,
) -> Option<F::Output> {
    let mut future = pin!(future);
    loop {
        let output = peers.run(async { tokio::time::timeout(slice, future.as_mut()).await });
        if let Ok(output) = output {
            return Some(output);
        }
        interrupts(peers, |peers| cancel(peers, &in_flight()));
        if stop() {
            return None;
        }
    }
}

/// `drive`, with `cancel` run when a cancel or termination is pending.
fn drive_cancelling<F: Future>(
    peers: &mut Peers,
    future: F,
    cancel: impl Fn(&mut Peers),
) -> F::Output {
    let mut future = pin!(future);
    loop {
        // Timers must be created inside the runtime, hence the async block.
        let slice = peers.run(async { tokio::time::timeout(SLICE, future.as_mut()).await });
        if let Ok(output) = slice {
            return output;
        }
        interrupts(peers, &cancel);
    }
}

/// Lets PostgreSQL process interrupts, running `cancel` first when one would end the wait.
fn interrupts(peers: &mut Peers, cancel: impl Fn(&mut Peers)) {
    // SAFETY: reading flags that signal handlers set; the backend is single-threaded.
    let cancelling =
        unsafe { pgrx::pg_sys::QueryCancelPending != 0 || pgrx::pg_sys::ProcDiePending != 0 };
    if cancelling {
        cancel(peers);
    }
    pgrx::check_for_interrupts!();
}

fn cancel(peers: &mut Peers, members: &[String]) {
    let cancels: Vec<Cancel> = members
        .iter()
        .filter_map(|m| {
            let client = peers.clients.borrow_mut().remove(m)?;
            Some(Cancel::new(m, client.cancel_token()))
        })
        .collect();
    peers.run(futures_util::future::join_all(
        cancels.iter().map(Cancel::send),
    ));
}

/// A cancel request for a member's running query, sent with the TLS its connection string
/// asks for (a member that requires TLS refuses it otherwise).
#[derive(Clone)]
struct Cancel {
    token: CancelToken,
    tls: Option<MakeTlsConnector>,
}

impl Cancel {
    fn new(member: &str, token: CancelToken) -> Cancel {
        let tls = connstr::config(member, CANCEL_TIMEOUT)
            .ok()
            .map(|(_, tls)| tls);
        Cancel { token, tls }
    }

    fn with(tls: &MakeTlsConnector, token: CancelToken) -> Cancel {
        Cancel {
            token,
            tls: Some(tls.clone()),
        }
    }

    async fn send(&self) {
        let sending = async {
            match &self.tls {
                Some(tls) => self.token.cancel_query(tls.clone()).await,
                None => self.token.cancel_query(NoTls).await,
            }
        };
        let _ = tokio::time::timeout(CANCEL_TIMEOUT, sending).await;
    }
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

/// A connection of its own to one member, for a transaction with COPY in it (a state copy)
/// or a long call: neither cached nor shared with the requests of [`exchange`]. Every wait
/// is interruptible, and an interrupt cancels the member's query first; dropping it closes
/// the connection, which ends the member's transaction.
pub struct Session {
    client: Client,
    tls: MakeTlsConnector,
}

/// Why a session's statement failed: the member's SQLSTATE when it raised an error.
pub struct SessionFailure {
    pub sqlstate: Option<String>,
    pub message: Failure,
}

impl From<SessionFailure> for Failure {
    fn from(failure: SessionFailure) -> Failure {
        failure.message
    }
}

/// Runs `future` on this backend's runtime, interruptibly, within `timeout` if one is given;
/// on an interrupt, cancels the query `cancel` names before the error is raised.
fn block_on<T, F: Future<Output = Result<T, SessionFailure>>>(
    future: F,
    timeout: Option<Duration>,
    cancel: Option<Cancel>,
) -> Result<T, SessionFailure> {
    with_peers(|peers| {
        let bounded = async {
            match timeout {
                None => future.await,
                Some(limit) => tokio::time::timeout(limit, future)
                    .await
                    .unwrap_or_else(|_| {
                        Err(SessionFailure {
                            sqlstate: None,
                            message: format!("no answer within {} ms", limit.as_millis()),
                        })
                    }),
            }
        };
        drive_cancelling(peers, bounded, |peers| {
            if let Some(cancel) = &cancel {
                peers.run(cancel.send());
            }
        })
    })
}

fn session_failure(error: &tokio_postgres::Error) -> SessionFailure {
    SessionFailure {
        sqlstate: error.code().map(|code| code.code().to_owned()),
        message: describe(error),
    }
}

impl Session {
    pub fn open(member: &str) -> Result<Session, Failure> {
        let timeout = gucs::request_timeout();
        let connecting = async {
            connect_tls(member, timeout)
                .await
                .map_err(|message| SessionFailure {
                    sqlstate: None,
                    message,
                })
        };
        let (client, tls) = block_on(connecting, Some(timeout), None)?;
        Ok(Session { client, tls })
    }

    /// Runs `sql` (one or more statements, no parameters) and returns the first column of
    /// the first row, if any; waits at most the request timeout.
    pub fn query(&self, sql: &str) -> Result<Option<String>, Failure> {
        Ok(self.call(sql, Some(gucs::request_timeout()))?)
    }

    /// `query` for a statement that may run long: waits until it ends or an interrupt.
    pub fn query_long(&self, sql: &str) -> Result<Option<String>, SessionFailure> {
        self.call(sql, None)
    }

    fn call(&self, sql: &str, timeout: Option<Duration>) -> Result<Option<String>, SessionFailure> {
        let running = async {
            self.client
                .simple_query(sql)
                .await
                .map_err(|e| session_failure(&e))
        };
        let messages = block_on(running, timeout, Some(self.cancel()))?;
        Ok(messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        }))
    }

    /// Starts `COPY ... TO STDOUT`; its data is read chunk by chunk.
    pub fn copy_out(&self, sql: &str) -> Result<CopyOut, Failure> {
        let starting = async {
            self.client
                .copy_out(sql)
                .await
                .map_err(|e| session_failure(&e))
        };
        let cancel = self.cancel();
        let stream = block_on(
            starting,
            Some(gucs::request_timeout()),
            Some(cancel.clone()),
        )?;
        Ok(CopyOut {
            stream: Box::pin(stream),
            cancel,
        })
    }

    fn cancel(&self) -> Cancel {
        Cancel::with(&self.tls, self.client.cancel_token())
    }
}

/// The data of a `COPY ... TO STDOUT` as it arrives.
pub struct CopyOut {
    stream: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    cancel: Cancel,
}

impl CopyOut {
    /// The next chunk of data, `None` at its end; waits at most the request timeout.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Failure> {
        let stream = &mut self.stream;
        let next = async {
            match stream.next().await {
                Some(Ok(chunk)) => Ok(Some(chunk.to_vec())),
                Some(Err(e)) => Err(session_failure(&e)),
                None => Ok(None),
            }
        };
        Ok(block_on(
            next,
            Some(gucs::request_timeout()),
            Some(self.cancel.clone()),
        )?)
    }
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

/// Calls endpoint `function` on one member, on a connection of its own, and decodes its
/// answer: for a request that makes the member lead (a membership change), which may first
/// wait for another member's lease to run out. Waits the request timeout plus
/// `pg_paxos.lease_duration`.
pub fn call_past_lease<Rep: DeserializeOwned>(
    member: &str,
    function: &str,
    request: &impl Serialize,
) -> Result<Rep, Failure> {
    let timeout = gucs::request_timeout() + Duration::from_nanos(gucs::lease_duration_ns());
    let text = Session::open(member)?.call(&endpoint_sql(function, request), Some(timeout))?;
    parse(&text.ok_or_else(|| Failure::from("no answer"))?)
}
