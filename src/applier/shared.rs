//! What the appliers and the sessions that wait for them share, in shared memory:
//! - per group, the applier's process, the applied position it last committed, and the
//!   entry that stops it (with the error) when one needs an operator;
//! - the sessions waiting for a group's applier to pass a round (strong reads, writers
//!   waiting for the rounds before theirs), which the applier wakes after every commit;
//! - the entries that writers on this node run themselves as their round's apply: the
//!   applier stops before such an entry until its writer's transaction has ended.
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crate::node::{alive, Key};

/// Groups with an applier on this node at once.
const GROUPS: usize = 32;
/// Sessions waiting for appliers at once; more wait by polling.
const WAITERS: usize = 128;
/// Writers' entries reserved at once.
const RESERVED: usize = 128;
/// Proposal ids are 32 hex digits.
const ID_BYTES: usize = 32;
const ERROR_BYTES: usize = 1024;

#[derive(Clone, Copy)]
struct Applier {
    key: Key,
    in_use: bool,
    /// The applier's process, 0 while none runs.
    pid: i32,
    /// The applied position as of the applier's last commit.
    applied: i64,
    /// How many times the applier published: a waiter tells a new attempt from an old one.
    attempts: u64,
    /// The round the applier cannot apply now, -1 when none; `error` says why.
    stuck_at: i64,
    /// The SQLSTATE of `error`.
    sqlstate: [u8; 5],
    error_len: u16,
    error: [u8; ERROR_BYTES],
}

#[derive(Clone, Copy)]
struct Waiter {
    key: Key,
    pid: i32,
    round: i64,
}

#[derive(Clone, Copy)]
struct Reservation {
    key: Key,
    pid: i32,
    id: [u8; ID_BYTES],
}

#[derive(Clone, Copy)]
pub struct Shared {
    appliers: [Applier; GROUPS],
    waiters: [Waiter; WAITERS],
    reserved: [Reservation; RESERVED],
}

// SAFETY: plain data without pointers; every access goes through the lightweight lock.
unsafe impl PGRXSharedMemory for Shared {}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            appliers: [Applier {
                key: Key::EMPTY,
                in_use: false,
                pid: 0,
                applied: -1,
                attempts: 0,
                stuck_at: -1,
                sqlstate: [b'0'; 5],
                error_len: 0,
                error: [0; ERROR_BYTES],
            }; GROUPS],
            waiters: [Waiter {
                key: Key::EMPTY,
                pid: 0,
                round: 0,
            }; WAITERS],
            reserved: [Reservation {
                key: Key::EMPTY,
                pid: 0,
                id: [0; ID_BYTES],
            }; RESERVED],
        }
    }
}

impl Shared {
    /// Wakes the sessions waiting on `key`'s applier.
    fn wake_waiters(&self, key: &Key) {
        for w in &self.waiters {
            if w.pid != 0 && w.key == *key {
                crate::node::wake(w.pid);
            }
        }
    }
}

static SHARED: PgLwLock<Shared> = unsafe { PgLwLock::new(c"pg_paxos appliers") };

/// Reserves the shared memory; called from `_PG_init` in the postmaster.
pub fn init() {
    pg_shmem_init!(SHARED);
}

/// What the waiting sessions see of a group's applier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub pid: i32,
    pub applied: i64,
    pub attempts: u64,
    /// The round the applier is stopped at, with the SQLSTATE and message of its error.
    pub stuck_at: Option<(i64, String, String)>,
}

/// Makes this process the applier of `key`. False when another live process already is.
pub fn claim(key: &Key, pid: i32) -> bool {
    let mut shared = SHARED.exclusive();
    if let Some(a) = shared.appliers.iter().find(|a| a.in_use && a.key == *key) {
        if a.pid != pid && alive(a.pid) {
            return false;
        }
    }
    let index = shared
        .appliers
        .iter()
        .position(|a| a.in_use && a.key == *key)
        .or_else(|| {
            shared
                .appliers
                .iter()
                .position(|a| !a.in_use || !alive(a.pid))
        });
    let Some(index) = index else {
        return false;
    };
    let a = &mut shared.appliers[index];
    a.key = *key;
    a.in_use = true;
    a.pid = pid;
    a.stuck_at = -1;
    a.error_len = 0;
    true
}

/// Gives up the applier's slot of `key` (the group is gone, or the applier exits).
pub fn release(key: &Key, pid: i32) {
    let mut shared = SHARED.exclusive();
    for a in shared.appliers.iter_mut() {
        if a.in_use && a.key == *key && a.pid == pid {
            a.in_use = false;
            a.pid = 0;
        }
    }
}

/// Publishes what the applier of `key` committed, and why it stopped if it did; wakes the
/// sessions waiting on the group.
pub fn publish(key: &Key, applied: i64, stuck: Option<(i64, &str, &str)>) {
    let mut shared = SHARED.exclusive();
    if let Some(a) = shared
        .appliers
        .iter_mut()
        .find(|a| a.in_use && a.key == *key)
    {
        a.applied = applied;
        a.attempts += 1;
        match stuck {
            Some((round, sqlstate, error)) => {
                if sqlstate.len() == 5 {
                    a.sqlstate.copy_from_slice(sqlstate.as_bytes());
                }
                let bytes = error.as_bytes();
                let mut len = bytes.len().min(ERROR_BYTES);
                while !error.is_char_boundary(len) {
                    len -= 1;
                }
                a.stuck_at = round;
                a.error[..len].copy_from_slice(&bytes[..len]);
                a.error_len = len as u16;
            }
            None => {
                a.stuck_at = -1;
                a.error_len = 0;
            }
        }
    }
    shared.wake_waiters(key);
}

/// Publishes that a writer's transaction, which ran its round's apply, committed the applied
/// position `applied`; wakes the sessions waiting on the group. Never moves it back.
pub fn advance(key: &Key, applied: i64) {
    let mut shared = SHARED.exclusive();
    if let Some(a) = shared
        .appliers
        .iter_mut()
        .find(|a| a.in_use && a.key == *key)
    {
        a.applied = a.applied.max(applied);
    }
    shared.wake_waiters(key);
}

/// The applier of `key`, if one has claimed it.
pub fn status(key: &Key) -> Option<Status> {
    let shared = SHARED.share();
    shared
        .appliers
        .iter()
        .find(|a| a.in_use && a.key == *key)
        .map(Applier::status)
}

impl Applier {
    fn status(&self) -> Status {
        Status {
            pid: if alive(self.pid) { self.pid } else { 0 },
            applied: self.applied,
            attempts: self.attempts,
            stuck_at: (self.stuck_at >= 0).then(|| {
                (
                    self.stuck_at,
                    String::from_utf8_lossy(&self.sqlstate).into_owned(),
                    String::from_utf8_lossy(&self.error[..self.error_len as usize]).into_owned(),
                )
            }),
        }
    }
}

/// Every applier on this node: group, database, status.
pub fn all() -> Vec<(Key, Status)> {
    let shared = SHARED.share();
    shared
        .appliers
        .iter()
        .filter(|a| a.in_use)
        .map(|a| (a.key, a.status()))
        .collect()
}

/// Wakes the applier of `key`.
pub fn wake_applier(key: &Key) {
    let pid = {
        let shared = SHARED.share();
        shared
            .appliers
            .iter()
            .find(|a| a.in_use && a.key == *key)
            .map_or(0, |a| a.pid)
    };
    if pid != 0 {
        crate::node::wake(pid);
    }
}

/// Notes that `pid` waits for the applier of `key` to pass `round`; false when there is
/// no room (the caller then polls).
pub fn wait_for(key: &Key, pid: i32, round: i64) -> bool {
    let mut shared = SHARED.exclusive();
    if let Some(w) = shared
        .waiters
        .iter_mut()
        .find(|w| w.pid == pid && w.key == *key)
    {
        w.round = w.round.max(round);
        return true;
    }
    match shared
        .waiters
        .iter_mut()
        .find(|w| w.pid == 0 || !alive(w.pid))
    {
        Some(w) => {
            *w = Waiter {
                key: *key,
                pid,
                round,
            };
            true
        }
        None => false,
    }
}

/// `pid` no longer waits for any applier.
pub fn stop_waiting(pid: i32) {
    let mut shared = SHARED.exclusive();
    for w in shared.waiters.iter_mut().filter(|w| w.pid == pid) {
        w.pid = 0;
    }
}

/// The highest round a live session waits for on `key`, -1 when none.
pub fn wanted(key: &Key) -> i64 {
    let shared = SHARED.share();
    shared
        .waiters
        .iter()
        .filter(|w| w.pid != 0 && w.key == *key && alive(w.pid))
        .map(|w| w.round)
        .max()
        .unwrap_or(-1)
}

fn id_bytes(id: &str) -> Option<[u8; ID_BYTES]> {
    let bytes = id.as_bytes();
    (bytes.len() == ID_BYTES).then(|| {
        let mut out = [0u8; ID_BYTES];
        out.copy_from_slice(bytes);
        out
    })
}

/// Reserves the entry `id` of `key` for `pid`, which runs it as its round's apply. False
/// when every slot is taken.
pub fn reserve(key: &Key, pid: i32, id: &str) -> bool {
    let Some(id) = id_bytes(id) else {
        return false;
    };
    let mut shared = SHARED.exclusive();
    match shared
        .reserved
        .iter_mut()
        .find(|r| r.pid == 0 || !alive(r.pid))
    {
        Some(r) => {
            *r = Reservation { key: *key, pid, id };
            true
        }
        None => false,
    }
}

/// Whether a live writer on this node runs entry `id` of `key` itself.
pub fn reserved(key: &Key, id: &str) -> bool {
    let Some(id) = id_bytes(id) else {
        return false;
    };
    let shared = SHARED.share();
    shared
        .reserved
        .iter()
        .any(|r| r.pid != 0 && r.key == *key && r.id == id && alive(r.pid))
}

/// Drops every reservation of `pid`; returns the groups they were for.
pub fn release_reservations(pid: i32) -> Vec<Key> {
    let mut shared = SHARED.exclusive();
    let mut keys = Vec::new();
    for r in shared.reserved.iter_mut().filter(|r| r.pid == pid) {
        r.pid = 0;
        if !keys.contains(&r.key) {
            keys.push(r.key);
        }
    }
    keys
}
