//! Table replication: writes to replicated tables as log entries, applied in round order on
//! every member.
//!
//! - `registry`: which group replicates a relation, cached per backend.
//! - `capture`: a write to a replicated table, turned into a log entry when it is planned
//!   (deparsed, checked for determinism) and appended when it starts; the statement itself
//!   then runs as its round's apply on this node.
//! - `determinism`: what in a write could give members different results.
//! - `reads`: strong reads, which apply the log through the group's highest round before the
//!   statement's snapshot is used.
//! - `sequences`: sequences of replicated tables, kept in step with the applied position.
//! - `snapshot`: giving a statement a new snapshot before it starts.
//! - `outcome`: what a client is told when its write was chosen but its transaction failed.
//! - `statement`: a write as the log carries it, and running it as its author.
//! - `apply`: applying the log on this node, entry by entry, classifying failures: an error
//!   every member hits the same way (a constraint or data error) is recorded and skipped
//!   everywhere; any other stops the apply, which is retried later, so members never
//!   diverge.
//! - `tables`: replicating a table.
//! - `guard`: the hooks, and the DDL and COPY they refuse on replicated tables.
pub mod apply;
pub mod capture;
pub mod determinism;
pub mod guard;
pub mod outcome;
pub mod reads;
pub mod registry;
pub mod sequences;
pub mod snapshot;
pub mod statement;
pub mod tables;

use std::ffi::CString;

use pgrx::pg_sys;

/// Installs the hooks and callbacks; called from `_PG_init`.
pub fn init() {
    registry::init();
    guard::init();
    outcome::init();
}

/// Runs `f` as the bootstrap superuser with `search_path` pinned to pg_catalog: pg_paxos's
/// own catalog work, done on behalf of whoever wrote or read a replicated table, is neither
/// refused to that user nor steerable by their settings.
pub fn privileged<R>(f: impl FnOnce() -> R) -> R {
    struct Restore {
        user: pg_sys::Oid,
        security: i32,
        nest: i32,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: undoes exactly what was set below, at the same nesting level.
            unsafe {
                pg_sys::AtEOXact_GUC(true, self.nest);
                pg_sys::SetUserIdAndSecContext(self.user, self.security);
            }
        }
    }
    // SAFETY: saving and switching the current user and a GUC level, as fmgr_security_definer
    // does; the guard restores both even when `f` raises an error.
    let _restore = unsafe {
        let (mut user, mut security) = (pg_sys::Oid::INVALID, 0);
        pg_sys::GetUserIdAndSecContext(&mut user, &mut security);
        let nest = pg_sys::NewGUCNestLevel();
        pin("search_path", "pg_catalog, pg_temp");
        pg_sys::SetUserIdAndSecContext(
            pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            security | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
        Restore {
            user,
            security,
            nest,
        }
    };
    f()
}

/// Sets `name` to `value` for the current GUC nest level only (see `NewGUCNestLevel`).
pub fn pin(name: &str, value: &str) {
    let name = CString::new(name).unwrap_or_default();
    let value = CString::new(value).unwrap_or_default();
    // SAFETY: valid C strings; errors are raised as PostgreSQL errors (elevel ERROR).
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            pgrx::PgLogLevel::ERROR as i32,
            false,
        );
    }
}

/// Settings that make the text form of values identical on every member.
pub const PINNED_IO: [(&str, &str); 4] = [
    ("datestyle", "ISO"),
    ("intervalstyle", "postgres"),
    ("extra_float_digits", "3"),
    ("standard_conforming_strings", "on"),
];

/// Runs `f` with `PINNED_IO` and the given `search_path` in force.
pub fn with_pinned_io<R>(search_path: &str, f: impl FnOnce() -> R) -> R {
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: pops the level pushed below.
            unsafe { pg_sys::AtEOXact_GUC(true, self.0) }
        }
    }
    // SAFETY: a new GUC nest level, popped by the guard.
    let _restore = Restore(unsafe { pg_sys::NewGUCNestLevel() });
    pin("search_path", search_path);
    for (name, value) in PINNED_IO {
        pin(name, value);
    }
    f()
}

/// The pointers a List holds.
pub unsafe fn cells(list: *mut pg_sys::List) -> impl Iterator<Item = *mut std::ffi::c_void> {
    // SAFETY: a valid List (or NULL, the empty list) of pointers.
    let len = if list.is_null() {
        0
    } else {
        unsafe { (*list).length as usize }
    };
    (0..len).map(move |i| unsafe { (*(*list).elements.add(i)).ptr_value })
}
