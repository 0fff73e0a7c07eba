//! What the backends of this node share about each group, in shared memory:
//! - the node's leadership: paxos-core's `RangeLeader`, one ballot that every proposer on
//!   the node uses, kept here between their batches, so backends never knock each other's
//!   ballots out;
//! - whose turn it is to propose: one backend at a time per group;
//! - the appends waiting for that turn: the backend whose turn it is sends all of them in
//!   one batch, so each acceptor commits once for many appends;
//! - the group's proposer (`leader::worker`), which takes every turn while it runs: then
//!   only it talks to the members about appends, however many sessions append.
//!
//! Every wait here sleeps on the backend's latch and processes interrupts; a turn and a
//! waiting append are released by their guards, and by an exit callback if the backend dies.
use std::cell::Cell;

use paxos_core::RangeLeader;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crate::error::{PaxosError, Result};
use crate::messages::Entry;

/// Groups this node's backends can keep a leadership for at once (the least recently used
/// one is forgotten past that: it only costs a new phase 1).
const GROUPS: usize = 32;
/// Appends that can wait for a turn at once; more wait without being batched.
const WAITING: usize = 128;
/// The largest entry (as JSON) that another backend can send for its author.
const ENTRY_BYTES: usize = 8192;
/// Group names are at most this long, like PostgreSQL identifiers.
pub const NAME_BYTES: usize = 63;
/// The largest leadership (as JSON) kept: a batch of `leader::MAX_BATCH` entries in flight
/// takes a few kilobytes. A larger one is not kept, and the next batch prepares anew.
const LEADERSHIP_BYTES: usize = 8192;
/// How long a waiting backend sleeps before looking again when nobody wakes it.
const NAP_MS: i64 = 10;

/// A group of a database, as shared memory names it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key {
    database: u32,
    len: u8,
    name: [u8; NAME_BYTES],
}

impl Key {
    /// The group `group` of this backend's database.
    pub fn of(group: &str) -> Result<Key> {
        // SAFETY: set once when the backend connects to its database.
        Key::in_database(unsafe { pg_sys::MyDatabaseId }.to_u32(), group)
    }

    pub fn in_database(database: u32, group: &str) -> Result<Key> {
        let bytes = group.as_bytes();
        if bytes.len() > NAME_BYTES {
            return Err(name_too_long(group));
        }
        let mut name = [0u8; NAME_BYTES];
        name[..bytes.len()].copy_from_slice(bytes);
        Ok(Key {
            database,
            len: bytes.len() as u8,
            name,
        })
    }

    pub const EMPTY: Key = Key {
        database: 0,
        len: 0,
        name: [0; NAME_BYTES],
    };

    pub fn database(&self) -> u32 {
        self.database
    }

    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.name[..self.len as usize]).into_owned()
    }
}

pub fn name_too_long(group: &str) -> PaxosError {
    PaxosError::InvalidArgument {
        what: "group id",
        reason: format!(
            "\"{}…\" is longer than {NAME_BYTES} bytes",
            group.chars().take(20).collect::<String>()
        ),
    }
}

/// The node's leadership of a group: paxos-core's state of it, whose values are entry ids.
pub type Leadership = RangeLeader<String>;

#[derive(Clone, Copy)]
struct GroupSlot {
    key: Key,
    in_use: bool,
    /// The process whose turn it is, 0 when nobody's.
    turn: i32,
    /// Whether the group's entry of `Shared::leaderships` holds the node's leadership.
    leading: bool,
    /// How many bytes of it.
    leadership_len: u32,
    /// Until when (in PostgreSQL microseconds) appends are not sent to another member.
    no_forward_until: i64,
    last_used: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Waiting; its payload holds the entry when `len > 0`, else its author keeps it.
    Posted,
    /// In a batch being proposed.
    Taken,
    /// Its author left while it was being proposed: it stays with the batch's proposer,
    /// which frees it when the batch ends.
    Abandoned,
    /// Appended at `round`.
    Done,
    /// The batch failed; its payload holds the message.
    Failed,
    /// The batch failed before it was sent; its payload holds the message, `sqlstate` its
    /// code.
    NotSent,
}

#[derive(Clone, Copy)]
struct WaitingSlot {
    state: SlotState,
    key: Key,
    pid: i32,
    /// The process proposing it, while `Taken` or `Abandoned`.
    taken_by: i32,
    /// Unique to each post: whoever holds the slot by index checks it is still the same post,
    /// since a freed slot is soon posted into again.
    ticket: u64,
    round: i64,
    /// Whether the entry may go on to another member (an entry sent here by another member
    /// never does).
    forwardable: bool,
    /// Whether its author proposes it alone (a membership change, or an entry too large
    /// for a payload).
    alone: bool,
    sqlstate: [u8; 5],
    /// How many bytes of the slot's payload are used.
    len: u32,
}

/// The group's proposer on this node.
#[derive(Clone, Copy)]
struct ProposerSlot {
    key: Key,
    pid: i32,
}

#[derive(Clone, Copy)]
pub struct Shared {
    clock: u64,
    groups: [GroupSlot; GROUPS],
    waiting: [WaitingSlot; WAITING],
    /// Each waiting slot's entry or message, apart, so that looking through the slots
    /// touches a few kilobytes rather than every payload.
    payloads: [[u8; ENTRY_BYTES]; WAITING],
    /// Each group slot's leadership, as JSON, apart for the same reason.
    leaderships: [[u8; LEADERSHIP_BYTES]; GROUPS],
    proposers: [ProposerSlot; GROUPS],
}

// SAFETY: plain data without pointers; every access goes through the lightweight lock.
unsafe impl PGRXSharedMemory for Shared {}

impl Default for Shared {
    fn default() -> Self {
        let key = Key::EMPTY;
        Shared {
            clock: 0,
            groups: [GroupSlot {
                key,
                in_use: false,
                turn: 0,
                leading: false,
                leadership_len: 0,
                no_forward_until: 0,
                last_used: 0,
            }; GROUPS],
            waiting: [WaitingSlot {
                state: SlotState::Free,
                key,
                pid: 0,
                taken_by: 0,
                ticket: 0,
                round: 0,
                forwardable: false,
                alone: false,
                sqlstate: [b'0'; 5],
                len: 0,
            }; WAITING],
            payloads: [[0; ENTRY_BYTES]; WAITING],
            leaderships: [[0; LEADERSHIP_BYTES]; GROUPS],
            proposers: [ProposerSlot { key, pid: 0 }; GROUPS],
        }
    }
}

static SHARED: PgLwLock<Shared> = unsafe { PgLwLock::new(c"pg_paxos node") };

/// Reserves the shared memory; called from `_PG_init` in the postmaster.
pub fn init() {
    pg_shmem_init!(SHARED);
}

fn my_pid() -> i32 {
    // SAFETY: set once at backend start.
    unsafe { pg_sys::MyProcPid }
}

fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

impl Shared {
    fn group(&self, key: &Key) -> Option<&GroupSlot> {
        self.groups.iter().find(|g| g.in_use && g.key == *key)
    }

    /// The group's slot, taking over the least recently used idle one if needed.
    fn group_mut(&mut self, key: &Key) -> Option<&mut GroupSlot> {
        let index = self.group_index(key)?;
        Some(&mut self.groups[index])
    }

    /// The node's leadership of the group, as stored.
    fn leadership_text(&self, key: &Key) -> Option<Vec<u8>> {
        let index = self.groups.iter().position(|g| g.in_use && g.key == *key)?;
        let g = &self.groups[index];
        g.leading
            .then(|| self.leaderships[index][..g.leadership_len as usize].to_vec())
    }

    /// The node's leadership of the group, read back (parsed outside the lock).
    fn leadership(key: &Key) -> Option<Leadership> {
        let text = SHARED.share().leadership_text(key)?;
        serde_json::from_slice(&text).ok()
    }

    /// The index of [`Shared::group_mut`]'s slot.
    fn group_index(&mut self, key: &Key) -> Option<usize> {
        self.clock += 1;
        let clock = self.clock;
        let index = match self.groups.iter().position(|g| g.in_use && g.key == *key) {
            Some(i) => i,
            None => {
                let i = (0..GROUPS)
                    .filter(|&i| !self.groups[i].in_use || self.groups[i].turn == 0)
                    .min_by_key(|&i| (self.groups[i].in_use, self.groups[i].last_used))?;
                let g = &mut self.groups[i];
                *g = GroupSlot {
                    key: *key,
                    in_use: true,
                    turn: 0,
                    leading: false,
                    ..*g
                };
                i
            }
        };
        self.groups[index].last_used = clock;
        Some(index)
    }

    /// Wakes every backend with an append waiting on the group, and its proposer.
    fn wake_waiters(&self, key: &Key) {
        for w in &self.waiting {
            if w.key == *key && w.state != SlotState::Free {
                wake(w.pid);
            }
        }
        if let Some(pid) = self.proposer(key) {
            wake(pid);
        }
    }

    /// The group's proposer, while it runs.
    fn proposer(&self, key: &Key) -> Option<i32> {
        self.proposers
            .iter()
            .find(|p| p.pid != 0 && p.key == *key && alive(p.pid))
            .map(|p| p.pid)
    }
}

/// Whether a process still runs (a pid of a process that exited reads as gone).
pub fn alive(pid: i32) -> bool {
    // SAFETY: looks the pid up in the proc array; null when no such process is attached.
    pid != 0 && unsafe { !pg_sys::BackendPidGetProc(pid).is_null() }
}

/// Makes this process the proposer of `key`. False when another live process already is,
/// or when every slot serves another group's.
pub fn claim_proposer(key: &Key) -> bool {
    let pid = my_pid();
    let mut shared = SHARED.exclusive();
    if shared.proposer(key).is_some_and(|p| p != pid) {
        return false;
    }
    // The group's own slot first, so that it never has two.
    let slots = &shared.proposers;
    let free = slots
        .iter()
        .position(|p| p.pid != 0 && p.key == *key)
        .or_else(|| slots.iter().position(|p| p.pid == 0 || !alive(p.pid)));
    let Some(i) = free else { return false };
    shared.proposers[i] = ProposerSlot { key: *key, pid };
    true
}

/// Gives up being the proposer of `key` (at exit).
pub fn release_proposer(key: &Key) {
    let pid = my_pid();
    let mut shared = SHARED.exclusive();
    for p in shared.proposers.iter_mut() {
        if p.pid == pid && p.key == *key {
            p.pid = 0;
        }
    }
    // Sessions waiting for it propose their entries themselves now.
    shared.wake_waiters(key);
}

pub fn wake(pid: i32) {
    // SAFETY: BackendPidGetProc returns null or a live PGPROC in shared memory; setting the
    // latch of a process that reused the pid only wakes it spuriously, which latches allow.
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        if !proc_.is_null() {
            pg_sys::SetLatch(&mut (*proc_).procLatch);
        }
    }
}

/// Sleeps until woken or for a short while, then processes interrupts.
fn nap() {
    nap_for(NAP_MS);
}

/// Sleeps until woken or for `ms` at most, then processes interrupts.
pub fn nap_for(ms: i64) {
    // SAFETY: waits on this backend's own latch, as PostgreSQL's own waits do.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms as _,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    check_for_interrupts!();
}

thread_local! {
    static EXIT_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Makes sure a dying backend gives back its turns and waiting slots.
fn on_exit_release() {
    if EXIT_CALLBACK.with(Cell::get) {
        return;
    }
    // SAFETY: registers a callback PostgreSQL runs before detaching from shared memory.
    unsafe { pg_sys::before_shmem_exit(Some(release_all), pg_sys::Datum::from(0)) };
    EXIT_CALLBACK.with(|c| c.set(true));
}

#[pg_guard]
unsafe extern "C-unwind" fn release_all(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    let pid = my_pid();
    let mut shared = SHARED.exclusive();
    for i in 0..GROUPS {
        if shared.groups[i].turn == pid {
            shared.groups[i].turn = 0;
            let key = shared.groups[i].key;
            shared.wake_waiters(&key);
        }
    }
    for i in 0..WAITING {
        let w = shared.waiting[i];
        if w.is_in_batch() && w.taken_by == pid {
            let unsettled = Failure::Unknown(UNSETTLED.to_owned());
            shared.settle(i, w.ticket, Err(&unsettled));
        }
        if w.pid == pid {
            shared.waiting[i].leave();
        }
    }
}

impl WaitingSlot {
    fn is_in_batch(&self) -> bool {
        matches!(self.state, SlotState::Taken | SlotState::Abandoned)
    }

    /// Its author leaves: a slot in a batch stays the proposer's to free.
    fn leave(&mut self) {
        self.state = match self.state {
            SlotState::Taken | SlotState::Abandoned => SlotState::Abandoned,
            _ => SlotState::Free,
        };
    }
}

/// An append waiting for its turn, which another backend may propose for it.
pub struct Posted {
    /// The slot and the ticket of the post in it.
    slot: Option<(usize, u64)>,
}

impl Posted {
    /// The slot, while it still holds this post.
    fn in_shared<'a>(&self, shared: &'a mut Shared) -> Option<&'a mut WaitingSlot> {
        let (i, ticket) = self.slot?;
        let w = &mut shared.waiting[i];
        (w.ticket == ticket && w.state != SlotState::Free).then_some(w)
    }
}

impl Drop for Posted {
    fn drop(&mut self) {
        let mut shared = SHARED.exclusive();
        if let Some(w) = self.in_shared(&mut shared) {
            w.leave();
        }
    }
}

/// Posts `entry` for a batch and wakes the group's proposer; entries too large to share are
/// kept by their author (who still waits in line, so it gets woken). `forwardable`: whether
/// the entry may go on to the member that leads.
pub fn post(group: &str, entry: &Entry, forwardable: bool) -> Result<Posted> {
    let key = Key::of(group)?;
    on_exit_release();
    let json = serde_json::to_vec(entry).unwrap_or_default();
    let mut shared = SHARED.exclusive();
    shared.clock += 1;
    let ticket = shared.clock;
    let Some(i) = shared
        .waiting
        .iter()
        .position(|w| w.state == SlotState::Free)
    else {
        return Ok(Posted { slot: None });
    };
    let w = &mut shared.waiting[i];
    w.state = SlotState::Posted;
    w.key = key;
    w.pid = my_pid();
    w.taken_by = 0;
    w.ticket = ticket;
    w.round = -1;
    w.forwardable = forwardable;
    let shareable = json.len() <= ENTRY_BYTES;
    w.alone = !shareable || entry.kind.changes_membership();
    if shareable {
        w.len = json.len() as u32;
        shared.payloads[i][..json.len()].copy_from_slice(&json);
    } else {
        w.len = 0;
    }
    if let Some(pid) = shared.proposer(&key) {
        wake(pid);
    }
    Ok(Posted {
        slot: Some((i, ticket)),
    })
}

/// What came of waiting for a turn.
pub enum Waited {
    /// It is this backend's turn to propose.
    Turn(Turn),
    /// Another backend appended the posted entry at this round.
    Appended(i64),
    /// Another backend's batch with the posted entry failed, with this message: the entry may
    /// or may not be chosen.
    Failed(String),
    /// Another backend's batch with the posted entry failed before it was sent, with this
    /// error: the entry was not chosen.
    NotSent { sqlstate: String, message: String },
}

/// Waits until `posted` was appended by another backend, or until this backend may propose:
/// when no proposer runs for the group, or when the entry goes alone. When the turn comes,
/// the posted entry is withdrawn: its author proposes it itself.
pub fn wait_for_turn(group: &str, posted: &mut Posted) -> Result<Waited> {
    let key = Key::of(group)?;
    on_exit_release();
    let pid = my_pid();
    loop {
        {
            let mut shared = SHARED.exclusive();
            let mut in_a_batch = false;
            // An entry without a slot (all taken) is proposed by its author too.
            let mut alone = true;
            let current = posted.in_shared(&mut shared).copied();
            if let Some((w, (i, _))) = current.zip(posted.slot) {
                alone = w.alone;
                match w.state {
                    SlotState::Done => return Ok(Waited::Appended(w.round)),
                    SlotState::Failed => return Ok(Waited::Failed(shared.message(i))),
                    SlotState::NotSent => {
                        return Ok(Waited::NotSent {
                            sqlstate: String::from_utf8_lossy(&w.sqlstate).into_owned(),
                            message: shared.message(i),
                        });
                    }
                    // While its entry is in another session's batch, a session waits for
                    // the outcome.
                    state => in_a_batch = state == SlotState::Taken,
                }
            }
            let proposer = shared.proposer(&key).is_some();
            let granted = match shared.group_mut(&key) {
                Some(g) if g.turn == 0 && !in_a_batch && (alone || !proposer) => {
                    g.turn = pid;
                    true
                }
                _ => false,
            };
            if granted {
                if let Some(w) = posted.in_shared(&mut shared) {
                    w.state = SlotState::Free;
                }
                posted.slot = None;
                return Ok(Waited::Turn(Turn { key }));
            }
        }
        nap();
    }
}

/// The group's turn for its proposer, when nobody holds it and entries wait for a batch.
pub fn batch_turn(key: &Key) -> Option<Turn> {
    on_exit_release();
    let mut shared = SHARED.exclusive();
    let waiting = shared
        .waiting
        .iter()
        .any(|w| w.state == SlotState::Posted && w.key == *key && !w.alone);
    let g = shared.group_mut(key).filter(|g| waiting && g.turn == 0)?;
    g.turn = my_pid();
    Some(Turn { key: *key })
}

/// This backend's turn to propose on a group; ends when dropped.
pub struct Turn {
    key: Key,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut shared = SHARED.exclusive();
        if let Some(g) = shared.group_mut(&self.key) {
            if g.turn == my_pid() {
                g.turn = 0;
            }
        }
        let key = self.key;
        shared.wake_waiters(&key);
    }
}

/// An entry another backend posted, now in this backend's batch.
pub struct Taken {
    index: usize,
    ticket: u64,
    pub entry: Entry,
    /// See [`post`].
    pub forwardable: bool,
    settled: bool,
}

/// Why an entry of a batch was not appended.
#[derive(Clone, Debug)]
pub enum Failure {
    /// It may or may not have been chosen, for this reason.
    Unknown(String),
    /// The batch failed before it was sent, so the entry was not chosen: the error, as is.
    NotSent { sqlstate: String, message: String },
}

/// Until its outcome is known, the entry of a batch that stops early (an error, a cancel)
/// may or may not be chosen: its author is told so, and must not propose it again.
const UNSETTLED: &str =
    "the process proposing it stopped before it knew whether the batch was chosen";

impl Drop for Taken {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut shared = SHARED.exclusive();
        let unsettled = Failure::Unknown(UNSETTLED.to_owned());
        shared.settle(self.index, self.ticket, Err(&unsettled));
    }
}

impl Shared {
    /// Hands the taken entry posted in slot `i` with `ticket` its outcome and wakes its
    /// author (or frees the slot if the author left). A slot that holds another post by now
    /// is left alone.
    fn settle(&mut self, i: usize, ticket: u64, outcome: std::result::Result<i64, &Failure>) {
        let w = &mut self.waiting[i];
        if w.ticket != ticket || !w.is_in_batch() {
            return;
        }
        if w.state == SlotState::Abandoned {
            w.state = SlotState::Free;
            return;
        }
        match outcome {
            Ok(round) => {
                w.state = SlotState::Done;
                w.round = round;
            }
            Err(Failure::Unknown(message)) => self.fail(i, SlotState::Failed, message),
            Err(Failure::NotSent { sqlstate, message }) => {
                self.fail(i, SlotState::NotSent, message);
                let code = sqlstate.as_bytes();
                let w = &mut self.waiting[i];
                let len = code.len().min(w.sqlstate.len());
                w.sqlstate[..len].copy_from_slice(&code[..len]);
            }
        }
        let w = &mut self.waiting[i];
        w.taken_by = 0;
        wake(w.pid);
    }

    /// Puts slot `i` in the failed `state`, with `message` as its payload.
    fn fail(&mut self, i: usize, state: SlotState, message: &str) {
        let bytes = message.as_bytes();
        let len = bytes.len().min(ENTRY_BYTES);
        self.payloads[i][..len].copy_from_slice(&bytes[..len]);
        self.waiting[i].len = len as u32;
        self.waiting[i].state = state;
    }

    /// The message slot `i` failed with.
    fn message(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.payloads[i][..self.waiting[i].len as usize]).into_owned()
    }
}

impl Turn {
    fn with_group<R>(&self, f: impl FnOnce(&mut GroupSlot) -> R) -> R {
        let mut shared = SHARED.exclusive();
        let g = shared
            .group_mut(&self.key)
            .expect("the group of a turn keeps its slot");
        f(g)
    }

    /// The node's leadership of the group, if it holds one.
    pub fn leadership(&self) -> Option<Leadership> {
        Shared::leadership(&self.key)
    }

    /// Keeps `leadership` as the node's, for its next batches (written before a batch is
    /// sent, so that the rounds it uses are never used again under the ballot). One too
    /// large to keep is given up: the node then prepares anew.
    pub fn lead(&self, leadership: &Leadership) {
        let text = serde_json::to_vec(leadership).unwrap_or_default();
        let mut shared = SHARED.exclusive();
        let index = shared
            .group_index(&self.key)
            .expect("the group of a turn keeps its slot");
        let kept = !text.is_empty() && text.len() <= LEADERSHIP_BYTES;
        if kept {
            shared.leaderships[index][..text.len()].copy_from_slice(&text);
        }
        let g = &mut shared.groups[index];
        g.leading = kept;
        g.leadership_len = if kept { text.len() as u32 } else { 0 };
    }

    pub fn abdicate(&self) {
        self.with_group(|g| g.leading = false)
    }

    /// Takes up to `max` entries other backends posted for this group, oldest first, except
    /// membership changes.
    pub fn take_posted(&self, max: usize) -> Vec<Taken> {
        let mut shared = SHARED.exclusive();
        let mut posted: Vec<usize> = (0..WAITING)
            .filter(|&i| {
                let w = &shared.waiting[i];
                w.state == SlotState::Posted && w.key == self.key && !w.alone
            })
            .collect();
        posted.sort_by_key(|&i| shared.waiting[i].ticket);
        posted.truncate(max);
        let mut taken = Vec::new();
        for i in posted {
            let len = shared.waiting[i].len as usize;
            match serde_json::from_slice::<Entry>(&shared.payloads[i][..len]) {
                Ok(entry) => {
                    let w = &mut shared.waiting[i];
                    w.state = SlotState::Taken;
                    w.taken_by = my_pid();
                    taken.push(Taken {
                        index: i,
                        ticket: w.ticket,
                        entry,
                        forwardable: w.forwardable,
                        settled: false,
                    });
                }
                Err(_) => shared.fail(
                    i,
                    SlotState::Failed,
                    "pg_paxos: a waiting entry could not be read",
                ),
            }
        }
        taken
    }

    /// Hands each taken entry its outcome and wakes its author.
    pub fn finish(
        &self,
        taken: Vec<Taken>,
        outcome: impl Fn(&Entry) -> std::result::Result<i64, Failure>,
    ) {
        let mut shared = SHARED.exclusive();
        for mut t in taken {
            let result = outcome(&t.entry);
            shared.settle(t.index, t.ticket, result.as_ref().copied());
            // Dropped with the lock held: it must not take it again.
            t.settled = true;
        }
    }
}

/// The node's leadership of `group` as it stands, if the node leads it.
pub fn leadership(group: &str) -> Option<Leadership> {
    Shared::leadership(&Key::of(group).ok()?)
}

/// Whether this node leads `group` (without reading the leadership back).
pub fn leads(group: &str) -> bool {
    let Ok(key) = Key::of(group) else {
        return false;
    };
    SHARED.share().group(&key).is_some_and(|g| g.leading)
}

/// Forgets what this node's backends knew about a group (it was created, joined or left):
/// a leadership of an earlier group of the same name must never be used for it.
pub fn forget(group: &str) {
    let Ok(key) = Key::of(group) else { return };
    let mut shared = SHARED.exclusive();
    if let Some(g) = shared.group_mut(&key) {
        g.leading = false;
        g.no_forward_until = 0;
    }
}

/// Whether appends made on this node may go to another member now: not for a while after
/// a member they were sent to failed to answer.
pub fn forwarding_allowed(group: &str) -> bool {
    let Ok(key) = Key::of(group) else {
        return false;
    };
    let shared = SHARED.share();
    shared
        .group(&key)
        .is_none_or(|g| g.no_forward_until <= now())
}

/// Keeps appends on this node for `duration`, after the member they went to failed to answer.
pub fn suspend_forwarding(group: &str, duration: std::time::Duration) {
    let Ok(key) = Key::of(group) else { return };
    let mut shared = SHARED.exclusive();
    if let Some(g) = shared.group_mut(&key) {
        g.no_forward_until = now() + duration.as_micros() as i64;
    }
}
