//! Leader leases on this node, in shared memory: what its acceptor granted (paxos-core's
//! `lease::Grants`, one per group) and until when its leadership holds a lease. The rules
//! are paxos-core's (`paxos_core::lease`); this module keeps their state and the clock.
//!
//! Grants must outlive the backend that made them, and are lost with shared memory: that
//! is what the restart rule is for, `Grants::new` taking the time shared memory was made.
//! A group whose grants find no slot gets none; a slot is reused only once its grant ran out.
use paxos_core::lease::Grants;
use paxos_core::{Ballot, RangePromise};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crate::gucs;
use crate::node::Key;

const GROUPS: usize = 32;
/// Room for a group's `Grants`, or a ballot, as JSON.
const STATE_BYTES: usize = 512;

#[derive(Clone, Copy)]
struct Slot {
    key: Key,
    in_use: bool,
    grants_len: u16,
    grants: [u8; STATE_BYTES],
    /// The ballot of this node's leadership that holds a lease, and until when.
    held_len: u16,
    held: [u8; STATE_BYTES],
    held_until: u64,
    /// When no grant made here runs any longer.
    granted_until: u64,
}

#[derive(Clone, Copy)]
pub struct Leases {
    /// When shared memory was made: the acceptor's (re)start, for the restart rule.
    started: u64,
    slots: [Slot; GROUPS],
}

// SAFETY: plain data without pointers; every access goes through the lightweight lock.
unsafe impl PGRXSharedMemory for Leases {}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            started: now(),
            slots: [Slot {
                key: Key::EMPTY,
                in_use: false,
                grants_len: 0,
                grants: [0; STATE_BYTES],
                held_len: 0,
                held: [0; STATE_BYTES],
                held_until: 0,
                granted_until: 0,
            }; GROUPS],
        }
    }
}

static LEASES: PgLwLock<Leases> = unsafe { PgLwLock::new(c"pg_paxos leases") };

/// Reserves the shared memory; called from `_PG_init` in the postmaster.
pub fn init() {
    pg_shmem_init!(LEASES);
}

/// Nanoseconds of the clock leases are counted on: monotonic, and counting while the
/// machine is suspended, so that a suspended leader sees its lease as run out.
pub fn now() -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into `time`; CLOCK_BOOTTIME exists on every Linux PostgreSQL runs on.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut time) };
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

/// The grants a slot keeps.
fn slot_grants(slot: &Slot, started: u64) -> Grants {
    (slot.grants_len > 0)
        .then(|| serde_json::from_slice(&slot.grants[..slot.grants_len as usize]).ok())
        .flatten()
        .unwrap_or_else(|| Grants::new(started))
}

impl Leases {
    fn slot(&self, key: &Key) -> Option<&Slot> {
        self.slots.iter().find(|s| s.in_use && s.key == *key)
    }

    /// The group's slot, taking a free one or one whose grant ran out.
    fn slot_mut(&mut self, key: &Key, now: u64) -> Option<&mut Slot> {
        let index = match self.slots.iter().position(|s| s.in_use && s.key == *key) {
            Some(i) => i,
            None => {
                let i = (self.slots.iter()).position(|s| !s.in_use || s.granted_until <= now)?;
                let slot = &mut self.slots[i];
                slot.key = *key;
                slot.in_use = true;
                slot.grants_len = 0;
                slot.held_len = 0;
                slot.held_until = 0;
                slot.granted_until = 0;
                i
            }
        };
        Some(&mut self.slots[index])
    }
}

/// Runs `f` on the group's grants and keeps what it changed; `None` when no slot is free
/// for the group, so that nothing it would grant can be kept.
fn with_grants<R>(group: &str, f: impl FnOnce(&mut Grants, u64) -> R) -> Option<R> {
    let key = Key::of(group).ok()?;
    let mut leases = LEASES.exclusive();
    let now = now();
    let started = leases.started;
    let slot = leases.slot_mut(&key, now)?;
    let mut grants = slot_grants(slot, started);
    let result = f(&mut grants, now);
    let text = serde_json::to_vec(&grants).ok()?;
    if text.len() > STATE_BYTES {
        return None;
    }
    slot.grants[..text.len()].copy_from_slice(&text);
    slot.grants_len = text.len() as u16;
    slot.granted_until = slot.granted_until.max(grants.runs_until());
    Some(result)
}

/// Grants `ballot` a lease on `group` for `requested` nanoseconds, as paxos-core's rule
/// allows given the acceptor's range promise and highest round promise there. Returns the
/// nanoseconds granted, 0 for none. Call it holding the group's range lock, so that no
/// prepare runs meanwhile.
pub fn grant(
    group: &str,
    ballot: &Ballot,
    requested: u64,
    range: Option<&RangePromise>,
    highest_round_promise: Option<&Ballot>,
) -> u64 {
    let longest = gucs::lease_duration_ns();
    with_grants(group, |grants, now| {
        grants.grant(
            now,
            ballot,
            requested,
            longest,
            range,
            highest_round_promise,
        )
    })
    .unwrap_or(0)
}

/// The ballot a range prepare under `ballot`, which this acceptor would otherwise promise,
/// is refused for because of a lease (see paxos-core's `Grants::refusal`); `range` is its
/// range promise. (A group without a slot has no grant running.)
pub fn refusal(group: &str, ballot: &Ballot, range: Option<&RangePromise>) -> Option<Ballot> {
    let longest = gucs::lease_duration_ns();
    let refusal = |grants: &mut Grants, now| grants.refusal(now, ballot, longest, range);
    with_grants(group, refusal).unwrap_or_else(|| refusal(&mut unkept(), now()))
}

/// [`refusal`] for a prepare of one round.
pub fn round_refusal(
    group: &str,
    ballot: &Ballot,
    range: Option<&RangePromise>,
    round: i64,
) -> Option<Ballot> {
    let longest = gucs::lease_duration_ns();
    let refusal =
        |grants: &mut Grants, now| grants.round_refusal(now, ballot, longest, range, round);
    with_grants(group, refusal).unwrap_or_else(|| refusal(&mut unkept(), now()))
}

/// Ends what binds this acceptor to `ballot` on `group`: its leader gave it up.
pub fn release(group: &str, ballot: &Ballot) {
    with_grants(group, |grants, _| grants.release(ballot));
}

/// The grants of a group this node keeps nothing for.
fn unkept() -> Grants {
    Grants::new(LEASES.share().started)
}

/// Records that this node's leadership under `ballot` holds a lease on `group` until `until`.
pub fn hold(group: &str, ballot: &Ballot, until: u64) {
    let Ok(key) = Key::of(group) else { return };
    let text = serde_json::to_vec(ballot).unwrap_or_default();
    if text.is_empty() || text.len() > STATE_BYTES {
        return;
    }
    let mut leases = LEASES.exclusive();
    let now = now();
    if let Some(slot) = leases.slot_mut(&key, now) {
        slot.held[..text.len()].copy_from_slice(&text);
        slot.held_len = text.len() as u16;
        slot.held_until = until;
    }
}

/// Whether this node holds a lease on `group` under `ballot` now.
pub fn holds(group: &str, ballot: &Ballot) -> bool {
    let Ok(key) = Key::of(group) else {
        return false;
    };
    let leases = LEASES.share();
    let Some(slot) = leases.slot(&key) else {
        return false;
    };
    let held: Option<Ballot> = serde_json::from_slice(&slot.held[..slot.held_len as usize]).ok();
    held.as_ref() == Some(ballot) && now() < slot.held_until
}

/// Whether the lease this node holds on `group` (if any) runs out within two thirds of
/// `duration`: time to renew it.
pub fn renewal_due(group: &str, duration: u64) -> bool {
    let Ok(key) = Key::of(group) else {
        return false;
    };
    let leases = LEASES.share();
    leases
        .slot(&key)
        .is_none_or(|s| s.held_until < now().saturating_add(duration / 3 * 2))
}
