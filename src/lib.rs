//! pg_paxos: Multi-Paxos across PostgreSQL servers.
//!
//! Module map: `api` (SQL surface) → `groups` (create/join/leave), `leader` (appending
//! through the node that leads, in batches) and `multipaxos` (the log: deciding, learning,
//! catching up) → `node` (what this node's backends share), `peers` (connections to members)
//! and `catalog` (pgp_metadata through SPI); `acceptor` holds the endpoints members call. The protocol's decisions live in the `paxos-core` crate.
use pgrx::prelude::*;

mod acceptor;
mod api;
mod applier;
mod background;
mod catalog;
mod connstr;
mod error;
mod groups;
mod gucs;
mod ids;
mod leader;
mod lease;
mod locks;
mod messages;
mod multipaxos;
mod node;
mod peers;
mod plans;
mod replication;
mod state_copy;
mod status;

pg_module_magic!();

extension_sql_file!("../sql/bootstrap.sql", bootstrap);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: a flag PostgreSQL sets while the postmaster loads preloaded libraries.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_paxos must be loaded through shared_preload_libraries",
            "Add pg_paxos to shared_preload_libraries in postgresql.conf and restart the server."
        );
    }
    gucs::init();
    node::init();
    lease::init();
    replication::init();
    applier::init();
    status::counters::init();
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_paxos'"]
    }
}
