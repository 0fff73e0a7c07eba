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
//! - `durability`: commits of captured writes alone, which need not wait for this node's disk.
//! - `statement`: a write as the log carries it, and running it as its author.
//! - `apply`: applying the log on this node, entry by entry, classifying failures: an error
//!   every member hits the same way (a constraint or data error) is recorded and skipped
//!   everywhere; any other stops the apply, which is retried later, so members never
//!   diverge.
//! - `tables`: replicating a table.
//! - `guard`: the hooks, and the DDL and COPY they refuse on replicated tables.
pub mod apply;
pub mod capture;
pub mod commands;
pub mod context;
pub mod ddl;
pub mod determinism;
pub mod durability;
pub mod guard;
pub mod outcome;
pub mod reads;
pub mod registry;
pub mod sequences;
pub mod snapshot;
pub mod statement;
pub mod tables;

use pgrx::pg_sys;

pub use context::{privileged, with_pinned_io};

/// Installs the hooks and callbacks; called from `_PG_init`.
pub fn init() {
    registry::init();
    guard::init();
    outcome::init();
    durability::init();
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
