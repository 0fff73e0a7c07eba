//! Commits that need not wait for this node's disk. A transaction whose only work was
//! captured writes commits with `synchronous_commit = off`: each write is a log entry chosen
//! by a majority of acceptors, whose votes reached their disks before the write ran here,
//! and the write's apply commits in one transaction with the applied position. A crash that
//! loses such a commit loses the position with it, and the applier applies the entry again
//! from the log (WAL is flushed in order, so what is lost is always a tail of commits).
//!
//! Anything else in the transaction (another statement, one a trigger runs, a utility
//! command) is not in the log, so the commit then waits for the disk as the session's own
//! setting says.
use std::cell::Cell;

use pgrx::pg_sys;

use super::context;

thread_local! {
    /// Whether this transaction ran a captured write.
    static CAPTURED: Cell<bool> = const { Cell::new(false) };
    /// Whether it did anything the log does not hold.
    static OTHER_WORK: Cell<bool> = const { Cell::new(false) };
    /// Set while pg_paxos's catalog statements run: what they write, the log rebuilds.
    static OWN_WORK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, one of pg_paxos's catalog statements.
pub fn own_work<R>(f: impl FnOnce() -> R) -> R {
    context::with_flag(&OWN_WORK, f)
}

/// A captured write started in this transaction.
pub fn captured() {
    CAPTURED.with(|c| c.set(true));
}

/// Work the log does not hold ran in this transaction.
pub fn other_work() {
    if OWN_WORK.with(Cell::get) {
        return;
    }
    OTHER_WORK.with(|o| o.set(true));
}

/// Registers the callback; called from `_PG_init`.
pub fn init() {
    // SAFETY: registration from _PG_init.
    unsafe { pg_sys::RegisterXactCallback(Some(transaction_event), std::ptr::null_mut()) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn transaction_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT if CAPTURED.with(Cell::get) && !OTHER_WORK.with(Cell::get) => {
            // Until the end of this transaction, which is about to write its commit.
            context::pin_for_transaction("synchronous_commit", "off");
        }
        XACT_EVENT_COMMIT
        | XACT_EVENT_ABORT
        | XACT_EVENT_PARALLEL_COMMIT
        | XACT_EVENT_PARALLEL_ABORT
        | XACT_EVENT_PREPARE => {
            CAPTURED.with(|c| c.set(false));
            OTHER_WORK.with(|o| o.set(false));
        }
        _ => {}
    }
}
