//! The applier: one background worker per group on each member applies the group's chosen
//! entries in round order, as soon as this member learns that they are chosen, in a
//! context no user session shares (see `replication::statement` for the replay context).
//!
//! - `launcher`: a worker started with the server finds the groups of every database and
//!   starts their appliers (and proposers, see `leader::worker`); creating or joining a
//!   group starts them too.
//! - `worker`: the applier's loop: learn, apply a batch in one transaction, publish, and on
//!   the leading member tell the others what was chosen once the group goes idle.
//! - `shared`: what appliers and waiting sessions share in shared memory.
//!
//! Sessions never apply other members' entries. A strong read waits here until the applier
//! has passed the read's bound; a writer reserves its entry (the applier stops before it),
//! waits until the applier has passed the rounds before it, and runs its statement as its
//! round's apply; the reservation ends with the writer's transaction.
use std::time::{Duration, Instant};

use pgrx::prelude::*;

use crate::error::{PaxosError, Result};
use crate::gucs;
use crate::node::Key;

pub mod launcher;
pub mod shared;
pub mod worker;

/// Registers the shared memory, the launcher and the end-of-transaction callback; called
/// from `_PG_init`.
pub fn init() {
    shared::init();
    launcher::register();
    // SAFETY: registration from _PG_init.
    unsafe { pg_sys::RegisterXactCallback(Some(transaction_end), std::ptr::null_mut()) };
}

thread_local! {
    /// Groups whose appliers this transaction has news for, once it commits.
    static NEWS: std::cell::RefCell<Vec<Key>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Groups this transaction created or joined: their appliers start once it commits.
    static NEW_GROUPS: std::cell::RefCell<Vec<Key>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// The applied position this transaction sets for each group it wrote to (its writes
    /// ran as their rounds' apply), published once it commits.
    static APPLIED: std::cell::RefCell<Vec<(Key, i64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

#[pg_guard]
unsafe extern "C-unwind" fn transaction_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => {
            // The next writer waits for the rounds before its own, this one's among them:
            // it needs no pass of the applier to see that this commit applied them.
            for (key, round) in APPLIED.with(|a| std::mem::take(&mut *a.borrow_mut())) {
                shared::advance(&key, round);
            }
            for key in NEWS.with(|n| std::mem::take(&mut *n.borrow_mut())) {
                shared::wake_applier(&key);
            }
            for key in NEW_GROUPS.with(|n| std::mem::take(&mut *n.borrow_mut())) {
                if let Err(reason) = launcher::start_workers(key.database(), &key.name()) {
                    pgrx::warning!(
                        "could not start the workers of paxos group \"{}\": {reason}; it \
                         starts with the server next time",
                        key.name()
                    );
                }
            }
            end_reservations();
        }
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT | XACT_EVENT_PREPARE => {
            NEWS.with(|n| n.borrow_mut().clear());
            NEW_GROUPS.with(|n| n.borrow_mut().clear());
            APPLIED.with(|a| a.borrow_mut().clear());
            end_reservations();
        }
        _ => {}
    }
}

fn my_pid() -> i32 {
    // SAFETY: set once at process start.
    unsafe { pg_sys::MyProcPid }
}

/// How long a session waits for an applier that makes no progress.
fn patience() -> Duration {
    (gucs::request_timeout() * 4).max(Duration::from_secs(1))
}

/// Waits until this node's applier of `group` has committed every round up to `round`;
/// returns its applied position. Fails when the applier stopped at an entry up to `round`
/// that needs an operator (after trying it again), or makes no progress for a while.
pub fn wait_applied(group: &str, round: i64) -> Result<i64> {
    let key = Key::of(group)?;
    // Applied already (the usual case for a strong read): the applier is left alone, as a
    // wake would cost it a pass.
    if let Some(status) = shared::status(&key).filter(|s| s.applied >= round) {
        return Ok(status.applied);
    }
    let pid = my_pid();
    struct StopWaiting(i32);
    impl Drop for StopWaiting {
        fn drop(&mut self) {
            shared::stop_waiting(self.0);
        }
    }
    let registered = shared::wait_for(&key, pid, round);
    let _stop = StopWaiting(pid);
    shared::wake_applier(&key);
    let started = shared::status(&key).map_or(0, |s| s.attempts);
    let mut last = (Instant::now(), i64::MIN);
    let mut checked = Instant::now();
    loop {
        let status = shared::status(&key);
        let now = Instant::now();
        match &status {
            Some(s) if s.applied >= round => return Ok(s.applied),
            Some(s) => {
                if let Some((at, sqlstate, error)) = &s.stuck_at {
                    // Stopped before `round`, and tried again since this wait began: the
                    // entry's own error, as the applier met it.
                    if *at <= round && s.attempts > started {
                        return Err(PaxosError::Replayed {
                            sqlstate: sqlstate.clone(),
                            message: format!(
                                "the applier of paxos group \"{group}\" on this node is \
                                 stopped before round {at}: {error}"
                            ),
                        });
                    }
                }
                if s.applied != last.1 {
                    last = (now, s.applied);
                }
            }
            None => {}
        }
        // No progress for a while: the applier may wait for a lock this transaction holds
        // (a table it read or writes), which it needs to apply a round before `round`.
        if now.duration_since(last.0) > DEADLOCK_CHECK
            && now.duration_since(checked) > DEADLOCK_CHECK
        {
            checked = now;
            // The group may be gone: dropped, or this node removed from it.
            crate::replication::privileged(|| crate::catalog::require_group(group))?;
            if let Some(s) = &status {
                if s.pid != 0 && waits_for_me(s.pid)? {
                    return Err(PaxosError::ApplierWaitsForUs(group.to_owned()));
                }
            }
        }
        if now.duration_since(last.0) > patience() {
            let reason = match status {
                Some(s) if s.pid != 0 => format!(
                    "it has applied through round {} and made no progress towards round \
                     {round} for {:?} (it may wait for a lock this transaction holds)",
                    s.applied,
                    patience()
                ),
                _ => "no applier runs for it on this node; check max_worker_processes and \
                      the server log"
                    .to_owned(),
            };
            return Err(PaxosError::Applier {
                group: group.to_owned(),
                reason,
            });
        }
        crate::node::nap_for(if registered { 10 } else { 1 });
    }
}

/// How long a wait without progress goes before it checks for a deadlock with the applier.
const DEADLOCK_CHECK: Duration = Duration::from_millis(50);

/// Whether process `pid` waits for a lock this backend holds.
fn waits_for_me(pid: i32) -> Result<bool> {
    Ok(crate::replication::privileged(|| {
        Spi::get_one_with_args::<bool>(
            "SELECT pg_catalog.pg_backend_pid() OPERATOR(pg_catalog.=) \
             ANY (pg_catalog.pg_blocking_pids($1))",
            &[pid.into()],
        )
    })?
    .unwrap_or(false))
}

/// Makes every round up to `through` known here (learned from the members, or decided when
/// abandoned) and waits until the group's applier has applied it; returns the applied
/// position. A round above every round accepted in the group is refused. When the members
/// forgot rounds this node misses, its applier copies a member's state, and this waits.
pub fn learn_and_wait(group: &str, proposer: &str, through: i64) -> Result<i64> {
    let mut log = crate::multipaxos::Log::open(group, proposer)?;
    match log.know_through(through) {
        Err(PaxosError::Compacted { donor: Some(_), .. }) => {}
        learned => learned?,
    }
    wait_applied(group, through)
}

/// Has every other reachable member of `group` apply the log through `round` now, and
/// waits for them; returns the members that did not, with why.
pub fn apply_on_members(group: &str, round: i64) -> Result<Vec<String>> {
    let own = crate::catalog::require_group(group)?.self_connection;
    let members: Vec<String> = crate::catalog::membership(group)?
        .voters(round + 1)
        .into_iter()
        .filter(|m| *m != own)
        .map(str::to_owned)
        .collect();
    let sql = format!(
        "SELECT paxos_apply_log('applier', {}, {round})",
        crate::connstr::quote_literal(group)
    );
    let requests: Vec<(String, String)> =
        members.iter().map(|m| (m.clone(), sql.clone())).collect();
    Ok(crate::peers::exchange_all(&requests)
        .into_iter()
        .zip(&members)
        .filter_map(|(outcome, member)| {
            outcome
                .err()
                .map(|e| format!("{}: {e}", crate::connstr::redact(member)))
        })
        .collect())
}

/// Reserves the entry `id` of `group` for this session, which will run it as its round's
/// apply: the applier stops before it until this transaction ends.
pub fn reserve(group: &str, id: &str) -> Result<()> {
    let key = Key::of(group)?;
    on_exit_release();
    if shared::reserve(&key, my_pid(), id) {
        Ok(())
    } else {
        Err(PaxosError::Unsupported(
            "too many writes to replicated tables are running on this node at once; try again"
                .into(),
        ))
    }
}

/// Ends this session's reservations (its transaction ended) and wakes their appliers.
pub fn end_reservations() {
    for key in shared::release_reservations(my_pid()) {
        shared::wake_applier(&key);
    }
}

/// Notes that this transaction set `group`'s applied position to `round`, for the sessions
/// waiting on the applier once it commits.
pub fn applied_at_commit(group: &str, round: i64) {
    if let Ok(key) = Key::of(group) {
        APPLIED.with(|a| {
            let mut applied = a.borrow_mut();
            match applied.iter_mut().find(|(k, _)| *k == key) {
                Some((_, at)) => *at = (*at).max(round),
                None => applied.push((key, round)),
            }
        });
    }
}

/// Wakes this node's applier of `group` when this transaction commits: it will find
/// something new to learn or apply.
pub fn notify(group: &str) {
    if let Ok(key) = Key::of(group) {
        NEWS.with(|n| {
            let mut news = n.borrow_mut();
            if !news.contains(&key) {
                news.push(key);
            }
        });
    }
}

/// Wakes this node's applier of `group` now (what it looks at is in shared memory).
pub fn wake(group: &str) {
    if let Ok(key) = Key::of(group) {
        shared::wake_applier(&key);
    }
}

thread_local! {
    static EXIT_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes sure a session that dies gives back its reservations.
fn on_exit_release() {
    if EXIT_CALLBACK.with(|c| c.replace(true)) {
        return;
    }
    // SAFETY: registers a callback PostgreSQL runs before detaching from shared memory.
    unsafe { pg_sys::before_shmem_exit(Some(release_at_exit), pg_sys::Datum::from(0)) };
}

#[pg_guard]
unsafe extern "C-unwind" fn release_at_exit(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    end_reservations();
    shared::stop_waiting(my_pid());
}

/// Starts the workers of `group`, which this transaction creates or joins, once it commits.
pub fn start_at_commit(group: &str) -> Result<()> {
    let key = Key::of(group)?;
    NEW_GROUPS.with(|n| n.borrow_mut().push(key));
    Ok(())
}

/// This database's appliers: the group, the process (NULL while none runs), the applied
/// round, and the round it is stopped at with its error, when an entry needs an operator.
// pgrx reads the column names from the signature: it cannot be shortened by an alias.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_safe)]
pub fn paxos_appliers() -> TableIterator<
    'static,
    (
        name!(group_id, String),
        name!(pid, Option<i32>),
        name!(applied_round, i64),
        name!(stuck_round, Option<i64>),
        name!(last_error, Option<String>),
    ),
> {
    // SAFETY: set once when the backend connects to its database.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let rows: Vec<_> = shared::all()
        .into_iter()
        .filter(|(key, _)| key.database() == database)
        .map(|(key, s)| {
            let (stuck, error) = s.stuck_at.map_or((None, None), |(r, code, e)| {
                (Some(r), Some(format!("{code}: {e}")))
            });
            (
                key.name(),
                (s.pid != 0).then_some(s.pid),
                s.applied,
                stuck,
                error,
            )
        })
        .collect();
    TableIterator::new(rows)
}
