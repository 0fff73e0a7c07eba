//! What every pg_paxos background worker does the same way: its signals, its session
//! settings, its sleep, its transactions and its exit.
use std::time::Duration;

use pgrx::prelude::*;

use crate::error::Result;
use crate::node::Key;

// PostgreSQL's own signal handlers, by their C names (pgrx wraps the Rust bindings).
extern "C-unwind" {
    #[link_name = "die"]
    fn die_on_signal(signal: std::ffi::c_int);
    #[link_name = "SignalHandlerForConfigReload"]
    fn reload_on_signal(signal: std::ffi::c_int);
}

/// Ends the process on SIGTERM as a backend does (so waits on locks and peers end too), and
/// reloads the configuration on SIGHUP.
pub fn standard_signals() {
    // SAFETY: PostgreSQL's own handlers, installed before signals are unblocked.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        {
            pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(die_on_signal));
            pg_sys::pqsignal(pg_sys::SIGHUP as i32, Some(reload_on_signal));
        }
        #[cfg(feature = "pg18")]
        {
            pg_sys::pqsignal_be(pg_sys::SIGTERM as i32, Some(die_on_signal));
            pg_sys::pqsignal_be(pg_sys::SIGHUP as i32, Some(reload_on_signal));
        }
        pg_sys::BackgroundWorkerUnblockSignals();
    }
}

/// The session settings of a group's worker: `name` in pg_stat_activity; pg_paxos's own
/// catalog work immune to objects users create (operators and functions resolve in
/// pg_catalog only); and commits that do not wait for this node's disk. What a worker
/// commits is chosen already, durable on a majority of acceptors: a crash loses at most the
/// tail of its work (one transaction), which it does again.
fn settle_session(name: &str) {
    let name = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: reports the name, and sets session defaults (the replay context pins its own
    // settings over them and restores them after each entry).
    unsafe {
        pg_sys::pgstat_report_appname(name.as_ptr());
        for (setting, value) in [
            (c"search_path", c"pg_catalog, pg_temp"),
            (c"synchronous_commit", c"off"),
        ] {
            pg_sys::SetConfigOption(
                setting.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_SESSION,
            );
        }
    }
}

/// Sleeps on the latch for at most `pause`; ends the process on SIGTERM, reloads the
/// configuration on SIGHUP.
pub fn sleep(pause: Duration) {
    // SAFETY: reports statistics outside any transaction; waits on this process's own
    // latch; the flag is PostgreSQL's.
    unsafe {
        // A background worker's reads and writes reach pg_stat_* only when it reports them
        // (at most once a second; PostgreSQL keeps the rest pending until the next call).
        pg_sys::pgstat_report_stat(false);
        if !pause.is_zero() {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                pause.as_millis().max(1) as _,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        check_for_interrupts!();
        if pg_sys::ConfigReloadPending != 0 {
            pg_sys::ConfigReloadPending = 0;
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
        }
    }
}

/// Runs `f` in a transaction of its own, committed when it succeeds and rolled back
/// otherwise. (An error PostgreSQL raises ends the process; the postmaster restarts it.)
pub fn in_transaction<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    // SAFETY: a worker is between transactions whenever it calls this.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let result = f();
    // SAFETY: ends the transaction started above.
    unsafe {
        pg_sys::PopActiveSnapshot();
        if result.is_ok() {
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
    }
    result
}

/// Ends the process through PostgreSQL's exit path (callbacks run); an exit code of 0 tells
/// the postmaster not to start this worker again.
pub fn exit(code: i32) -> ! {
    // SAFETY: PostgreSQL's own exit.
    unsafe { pg_sys::proc_exit(code) }
}

/// Starts a group's worker (`role` is "applier" or "proposer"): installs its signals,
/// reads which group it serves from the data it was registered with ("database\ngroup"),
/// connects to that database and settles its session. `None` when that data is malformed.
pub fn start_group_worker(role: &str) -> Option<(String, Key)> {
    standard_signals();
    let extra = pgrx::bgworkers::BackgroundWorker::get_extra();
    let (database, group) = extra.split_once('\n')?;
    let database: u32 = database.parse().ok()?;
    let key = Key::in_database(database, group).ok()?;
    let group = group.to_owned();
    pgrx::bgworkers::BackgroundWorker::connect_worker_to_spi_by_oid(
        Some(pg_sys::Oid::from(database)),
        None,
    );
    settle_session(&format!("pg_paxos {role} {group}"));
    Some((group, key))
}
