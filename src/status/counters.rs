//! What this node counts and remembers for its status views, in shared memory: events per
//! group since the server started, and how each member answered its last requests.
//!
//! Counts are events as they happened: one made in a transaction that later rolled back
//! stays counted. A group or member that finds no free slot is not counted (a member slot
//! is taken back from the member heard of longest ago).
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crate::node::Key;

const GROUPS: usize = 32;
const MEMBERS: usize = 64;
/// Members per group whose acknowledged round is kept.
const ACKS: usize = 16;
const ERROR_BYTES: usize = 240;

/// Events counted per group.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    /// An append of this node's sessions was chosen.
    Append,
    /// This node sent a batch of accepts as the leader.
    Batch,
    /// An append's outcome was reported unknown (40003).
    OutcomeUnknown,
    /// This node's proposer took the lead with a new ballot.
    LeadershipChange,
    /// An entry failed alike everywhere and was skipped by the applier.
    ApplyError,
    /// An operator skipped an entry here (`paxos_skip_round`).
    SkippedRound,
}

const EVENTS: usize = 6;

#[derive(Clone, Copy)]
struct GroupSlot {
    key: Key,
    in_use: bool,
    counts: [u64; EVENTS],
    /// (hash of a member's connection string, the last round it accepted from this node).
    acks: [(u64, i64); ACKS],
}

#[derive(Clone, Copy)]
struct MemberSlot {
    hash: u64,
    in_use: bool,
    requests: u64,
    failures: u64,
    timeouts: u64,
    /// PostgreSQL timestamps (microseconds since 2000), 0 when never.
    last_answer: i64,
    last_failure: i64,
    round_trip_us: i64,
    error_len: u16,
    error: [u8; ERROR_BYTES],
}

const FREE_GROUP: GroupSlot = GroupSlot {
    key: Key::EMPTY,
    in_use: false,
    counts: [0; EVENTS],
    acks: [(0, -1); ACKS],
};

const FREE_MEMBER: MemberSlot = MemberSlot {
    hash: 0,
    in_use: false,
    requests: 0,
    failures: 0,
    timeouts: 0,
    last_answer: 0,
    last_failure: 0,
    round_trip_us: 0,
    error_len: 0,
    error: [0; ERROR_BYTES],
};

#[derive(Clone, Copy)]
pub struct Counters {
    since: i64,
    groups: [GroupSlot; GROUPS],
    members: [MemberSlot; MEMBERS],
}

// SAFETY: plain data without pointers; every access goes through the lightweight lock.
unsafe impl PGRXSharedMemory for Counters {}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            // SAFETY: reads the clock; called in the postmaster while shared memory is made.
            since: unsafe { pg_sys::GetCurrentTimestamp() },
            groups: [FREE_GROUP; GROUPS],
            members: [FREE_MEMBER; MEMBERS],
        }
    }
}

static COUNTERS: PgLwLock<Counters> = unsafe { PgLwLock::new(c"pg_paxos status") };

/// Reserves the shared memory; called from `_PG_init` in the postmaster.
pub fn init() {
    pg_shmem_init!(COUNTERS);
}

fn group_slot<'a>(counters: &'a mut Counters, group: &str) -> Option<&'a mut GroupSlot> {
    let key = Key::of(group).ok()?;
    let index = (counters.groups.iter())
        .position(|g| g.in_use && g.key == key)
        .or_else(|| counters.groups.iter().position(|g| !g.in_use))?;
    let slot = &mut counters.groups[index];
    if !slot.in_use {
        *slot = GroupSlot {
            key,
            in_use: true,
            ..FREE_GROUP
        };
    }
    Some(slot)
}

/// Counts `event` for `group`.
pub fn count(group: &str, event: Event) {
    if let Some(slot) = group_slot(&mut COUNTERS.exclusive(), group) {
        slot.counts[event as usize] += 1;
    }
}

/// Notes that `member` accepted every round through `round` from this node, for `group`.
pub fn acknowledged(group: &str, member: &str, round: i64) {
    let hash = hash(member);
    let mut counters = COUNTERS.exclusive();
    let Some(slot) = group_slot(&mut counters, group) else {
        return;
    };
    let acks = &mut slot.acks;
    let index = (acks.iter().position(|(h, _)| *h == hash))
        .or_else(|| acks.iter().position(|(h, _)| *h == 0));
    if let Some(i) = index {
        acks[i] = (hash, acks[i].1.max(round));
    }
}

/// Forgets what was counted for `group` (it was created, joined or dropped here).
pub fn forget(group: &str) {
    let Ok(key) = Key::of(group) else { return };
    for slot in COUNTERS.exclusive().groups.iter_mut() {
        if slot.in_use && slot.key == key {
            slot.in_use = false;
        }
    }
}

/// How a request to `member` ended: answered after `round_trip`, or failed (timed out or not).
pub enum Contact<'a> {
    Answered(std::time::Duration),
    Failed(&'a str),
    TimedOut(&'a str),
}

pub fn contact(member: &str, outcome: Contact) {
    let hash = hash(member);
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let mut counters = COUNTERS.exclusive();
    let members = &mut counters.members;
    let index = (members.iter().position(|m| m.in_use && m.hash == hash))
        .or_else(|| members.iter().position(|m| !m.in_use))
        .unwrap_or_else(|| {
            let heard = |m: &MemberSlot| m.last_answer.max(m.last_failure);
            (0..MEMBERS)
                .min_by_key(|i| heard(&members[*i]))
                .unwrap_or(0)
        });
    let slot = &mut members[index];
    if !(slot.in_use && slot.hash == hash) {
        *slot = MemberSlot {
            hash,
            in_use: true,
            ..FREE_MEMBER
        };
    }
    slot.requests += 1;
    let reason = match outcome {
        Contact::Answered(round_trip) => {
            slot.last_answer = now;
            slot.round_trip_us = round_trip.as_micros().min(i64::MAX as u128) as i64;
            return;
        }
        Contact::Failed(reason) => reason,
        Contact::TimedOut(reason) => {
            slot.timeouts += 1;
            reason
        }
    };
    slot.failures += 1;
    slot.last_failure = now;
    let bytes = reason.as_bytes();
    let mut len = bytes.len().min(ERROR_BYTES);
    while !reason.is_char_boundary(len) {
        len -= 1;
    }
    slot.error[..len].copy_from_slice(&bytes[..len]);
    slot.error_len = len as u16;
}

/// What was counted for a group of this database.
pub struct GroupCounts {
    pub group: String,
    pub counts: [u64; EVENTS],
    pub since: i64,
}

pub fn groups() -> Vec<GroupCounts> {
    // SAFETY: set once when the backend connects to its database.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let counters = COUNTERS.share();
    (counters.groups.iter())
        .filter(|g| g.in_use && g.key.database() == database)
        .map(|g| GroupCounts {
            group: g.key.name(),
            counts: g.counts,
            since: counters.since,
        })
        .collect()
}

/// What this node knows of how `member` answered it, and for `group`, the last round it
/// accepted from this node.
pub struct MemberContact {
    pub requests: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub last_answer: Option<i64>,
    pub last_failure: Option<i64>,
    pub round_trip_us: Option<i64>,
    pub last_error: Option<String>,
    pub acknowledged: Option<i64>,
}

pub fn member(group: &str, member: &str) -> MemberContact {
    let hash = hash(member);
    let key = Key::of(group).ok();
    let counters = COUNTERS.share();
    let acknowledged = (counters.groups.iter())
        .find(|g| g.in_use && Some(g.key) == key)
        .and_then(|g| g.acks.iter().find(|(h, _)| *h == hash))
        .map(|(_, round)| *round);
    let slot = counters.members.iter().find(|m| m.in_use && m.hash == hash);
    let when = |t: i64| (t != 0).then_some(t);
    MemberContact {
        requests: slot.map_or(0, |m| m.requests),
        failures: slot.map_or(0, |m| m.failures),
        timeouts: slot.map_or(0, |m| m.timeouts),
        last_answer: slot.and_then(|m| when(m.last_answer)),
        last_failure: slot.and_then(|m| when(m.last_failure)),
        round_trip_us: slot.and_then(|m| when(m.last_answer).map(|_| m.round_trip_us)),
        last_error: slot
            .filter(|m| m.error_len > 0)
            .map(|m| String::from_utf8_lossy(&m.error[..m.error_len as usize]).into_owned()),
        acknowledged,
    }
}

/// A member's slot key: FNV-1a of its connection string (stable across processes, unlike
/// the standard library's hasher). Never 0, which marks a free acknowledgement.
fn hash(member: &str) -> u64 {
    let hash = (member.bytes()).fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash.max(1)
}
