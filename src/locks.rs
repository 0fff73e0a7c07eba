//! Transaction-scoped locks that order an acceptor's work on a group: votes and learns hold
//! the group's range lock shared and each of their rounds exclusively; a range prepare holds
//! the range lock exclusively, so no vote interleaves with it. They are advisory locks (a
//! round may have no row yet, and a row lock would write one), taken from the lock manager
//! directly in a class of their own, apart from pg_advisory_lock()'s keys. Waits on them
//! are interruptible like any lock wait. Always range first, then rounds in ascending
//! order, so lockers never deadlock.
use std::hash::{Hash, Hasher};

use pgrx::pg_sys;

/// pg_advisory_lock() uses 1 (bigint key) and 2 (two int4 keys) here.
const CLASS: u16 = 3;

fn key(what: &str, group: &str) -> u32 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (what, group).hash(&mut hasher);
    hasher.finish() as u32
}

fn acquire(key1: u32, key2: u32, mode: u32) {
    let tag = pg_sys::LOCKTAG {
        // SAFETY: set once when the backend connects to its database.
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: key1,
        locktag_field3: key2,
        locktag_field4: CLASS,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    };
    // SAFETY: a valid tag; a transaction lock (released at commit or abort) that waits
    // interruptibly; errors are raised as PostgreSQL errors through pgrx's guard.
    unsafe {
        pg_sys::LockAcquire(&tag, mode as pg_sys::LOCKMODE, false, false);
    }
}

/// Rounds locked one by one at most: more (a catch-up, a join's copy of the log) take the
/// range lock exclusively instead, one lock that orders them as well, so that no
/// transaction holds a lock per round (the lock table is shared and bounded).
const MAX_ROUND_LOCKS: i64 = 64;

/// For a vote or a learn on rounds `first..=last`.
pub fn rounds(group: &str, first: i64, last: i64) {
    if last - first >= MAX_ROUND_LOCKS {
        return range(group);
    }
    acquire(key("range", group), 0, pg_sys::ShareLock);
    let round_key = key("round", group);
    for round in first..=last {
        acquire(round_key, round as u32, pg_sys::ExclusiveLock);
    }
}

/// For a range prepare: no vote runs on the group until the transaction ends.
pub fn range(group: &str) {
    acquire(key("range", group), 0, pg_sys::ExclusiveLock);
}
