//! Starting the workers of groups. A launcher, started with the server, lists the databases
//! and starts a short-lived scanner in each, which starts the applier and the proposer of
//! each group found there. They are dynamic workers that the postmaster restarts when they
//! die; one that finds its group already served, or gone, exits for good.
use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder};
use pgrx::prelude::*;

use crate::background::standard_signals;

/// Seconds before the postmaster restarts a worker that died.
const RESTART: Duration = Duration::from_secs(1);

/// Registers the launcher; called from `_PG_init`.
pub fn register() {
    BackgroundWorkerBuilder::new("pg_paxos launcher")
        .set_type("pg_paxos launcher")
        .set_library("pg_paxos")
        .set_function("pg_paxos_launcher_main")
        // Reads pg_database, so it connects, if only to the shared catalogs.
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// Starts the workers of `group` in database `database`: its applier and its proposer
/// (`leader::worker`).
pub fn start_workers(database: u32, group: &str) -> Result<(), String> {
    for role in ["applier", "proposer"] {
        BackgroundWorkerBuilder::new(&format!("pg_paxos {role} {group}"))
            .set_type(&format!("pg_paxos {role}"))
            .set_library("pg_paxos")
            .set_function(&format!("pg_paxos_{role}_main"))
            .enable_spi_access()
            .set_restart_time(Some(RESTART))
            .set_extra(&format!("{database}\n{group}"))
            .load_dynamic()
            .map_err(|_| {
                format!(
                    "no background worker slot is free for its {role} (see max_worker_processes)"
                )
            })?;
    }
    Ok(())
}

/// Runs a scanner in `database` and waits for it to finish: one at a time, so that many
/// databases never take many worker slots.
fn scan(database: u32) -> Result<(), String> {
    // SAFETY: set once at process start.
    let launcher = unsafe { pg_sys::MyProcPid };
    let scanner = BackgroundWorkerBuilder::new("pg_paxos scanner")
        .set_type("pg_paxos scanner")
        .set_library("pg_paxos")
        .set_function("pg_paxos_scanner_main")
        .enable_spi_access()
        .set_extra(&database.to_string())
        .set_notify_pid(launcher)
        .load_dynamic()
        .map_err(|_| "no background worker slot is free (see max_worker_processes)".to_owned())?;
    scanner
        .wait_for_shutdown()
        .map_err(|status| format!("the scanner ended as {status:?}"))
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_paxos_launcher_main(_arg: pg_sys::Datum) {
    standard_signals();
    // No database: only the shared catalogs, which list the databases.
    BackgroundWorker::connect_worker_to_spi(None, None);
    for database in databases() {
        if let Err(reason) = scan(database) {
            pgrx::warning!("pg_paxos could not look for groups in database {database}: {reason}");
        }
    }
    // Stays, so that after a crash and restart of the server the search runs again.
    loop {
        // SAFETY: waits on this process's own latch.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                0,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        check_for_interrupts!();
    }
}

/// The databases that accept connections, other than templates.
fn databases() -> Vec<u32> {
    let mut found = Vec::new();
    // SAFETY: a catalog scan of pg_database in a transaction of its own, as the autovacuum
    // launcher does; each tuple's fixed part is a FormData_pg_database.
    unsafe {
        pg_sys::StartTransactionCommand();
        pg_sys::GetTransactionSnapshot();
        let relation = pg_sys::table_open(
            pg_sys::DatabaseRelationId,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
        );
        let scan = pg_sys::table_beginscan_catalog(relation, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let header = (*tuple).t_data;
            let form = (header as *mut u8).add((*header).t_hoff as usize)
                as *const pg_sys::FormData_pg_database;
            if (*form).datallowconn && !(*form).datistemplate {
                found.push((*form).oid.to_u32());
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::CommitTransactionCommand();
    }
    found
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_paxos_scanner_main(_arg: pg_sys::Datum) {
    standard_signals();
    let Ok(database) = BackgroundWorker::get_extra().parse::<u32>() else {
        return;
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(database)), None);
    let groups = BackgroundWorker::transaction(|| {
        if !crate::replication::registry::extension_present() {
            return Vec::new();
        }
        Spi::get_one::<Vec<String>>(
            "SELECT coalesce(pg_catalog.array_agg(group_id), '{}') FROM pgp_metadata.\"group\"",
        )
        .ok()
        .flatten()
        .unwrap_or_default()
    });
    for group in groups {
        if let Err(reason) = start_workers(database, &group) {
            pgrx::warning!("could not start the workers of paxos group \"{group}\": {reason}");
        }
    }
}
