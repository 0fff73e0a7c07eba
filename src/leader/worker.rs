//! The proposer: one background worker per group on each member sends the appends that
//! this node's sessions (and, on the leading member, other members) hand it through shared
//! memory, in batches: to the member that leads, or, when this node leads, to the
//! acceptors. Only it then talks to the members about appends, so the connections they
//! serve do not grow with the sessions appending. While it is not running (not started
//! yet, restarting after a crash, no worker slot free), sessions send their batches
//! themselves, as before it existed.
use std::time::{Duration, Instant};

use pgrx::prelude::*;

use crate::background::{self, exit, in_transaction, sleep};
use crate::node::{self, Key};

/// The proposer name the proposer's batches go under.
pub const PROPOSER: &str = "pg_paxos proposer";
/// How long an idle proposer sleeps when nobody wakes it.
const IDLE: Duration = Duration::from_millis(500);
/// How often it checks that its group still exists.
const CHECK_GROUP: Duration = Duration::from_secs(5);

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_paxos_proposer_main(_arg: pg_sys::Datum) {
    let Some((group, key)) = background::start_group_worker("proposer") else {
        return;
    };
    if !node::claim_proposer(&key) {
        // Another proposer serves the group: this registration ends for good.
        exit(0);
    }
    CLAIMED.with(|c| c.set(Some(key)));
    // SAFETY: registers a callback PostgreSQL runs before detaching from shared memory.
    unsafe { pg_sys::before_shmem_exit(Some(unclaim), pg_sys::Datum::from(0)) };
    // Not at once: the transaction that made the group may still be committing.
    let mut checked = Instant::now();
    loop {
        if super::lease::renewal_due(&group) {
            if let Err(error) = in_transaction(|| super::lease::renew(&group, PROPOSER)) {
                pgrx::debug1!("pg_paxos proposer of group \"{group}\": lease: {error}");
            }
        }
        if let Some(turn) = node::batch_turn(&key) {
            if let Err(error) = in_transaction(|| super::propose_waiting(&group, &turn)) {
                // Its sessions were told; the next batch tries again.
                pgrx::debug1!("pg_paxos proposer of group \"{group}\": {error}");
            }
            drop(turn);
            sleep(Duration::ZERO);
            continue;
        }
        if checked.elapsed() >= CHECK_GROUP {
            if !in_transaction(|| group_exists(&group)).unwrap_or(true) {
                pgrx::log!("pg_paxos proposer of group \"{group}\" stops: the group is gone");
                exit(0);
            }
            checked = Instant::now();
        }
        sleep(super::lease::renewal_interval().map_or(IDLE, |i| i.min(IDLE)));
    }
}

/// Whether the group is still in this database's catalog (DROP EXTENSION takes the catalog
/// away, and the group with it).
fn group_exists(group: &str) -> crate::error::Result<bool> {
    if !crate::replication::registry::extension_present() {
        return Ok(false);
    }
    Ok(crate::catalog::applied(group)?.is_some())
}

thread_local! {
    static CLAIMED: std::cell::Cell<Option<Key>> = const { std::cell::Cell::new(None) };
}

#[pg_guard]
unsafe extern "C-unwind" fn unclaim(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    if let Some(key) = CLAIMED.with(|c| c.take()) {
        node::release_proposer(&key);
    }
}
