//! The applier's loop for one group. Each pass:
//! 1. learns: on the leading member, the rounds its leadership decided are chosen (the rule
//!    of `AcceptRequest::chosen_through`); elsewhere, when a session waits for rounds not
//!    known here, or rounds accepted here stay unknown, they are fetched from the members
//!    (and decided, when abandoned);
//! 2. applies up to `BATCH` known rounds in one transaction, stopping before a writer's
//!    reserved entry and before an entry that fails here (tried again with backoff, never
//!    skipped), and publishes the applied position;
//! 3. on the leading member, once no new round was decided for `ANNOUNCE_AFTER`, tells the
//!    other members what was chosen, so that an idle group's followers apply at once;
//! 4. forgets applied rounds beyond `pg_paxos.log_retention` (compaction). A member that
//!    needs rounds every answering member forgot copies one's state instead.
use std::time::{Duration, Instant};

use pgrx::prelude::*;

use super::shared;
use crate::background::{self, exit, in_transaction, sleep};
use crate::error::{PaxosError, Result};
use crate::messages::AnnounceRequest;
use crate::multipaxos::{to_each, Log};
use crate::node::{self, Key};
use crate::replication::apply::{self, Stop};
use crate::state_copy::{self, Existing};
use crate::{catalog, gucs};

/// Rounds applied in one transaction at most.
const BATCH: i64 = 500;
/// How long the leading member waits for another decision before announcing: while writes
/// follow one another, the next accept request tells the members instead.
const ANNOUNCE_AFTER: Duration = Duration::from_millis(5);
/// How long new rounds may wait when no session waits for them, so that one pass (a few
/// transactions) serves several: what a follower's optimistic read may lag behind.
const COALESCE: Duration = Duration::from_millis(2);
/// On the leading member, how long a pass may wait while batches keep being decided. Each
/// accept request records the decisions before it on every acceptor, this node's too, and
/// writers here apply their own rounds: a pass per batch would find nothing new to do.
const BUSY_PASS: Duration = Duration::from_millis(100);
/// How long rounds accepted here may stay unknown before they are fetched.
const STALL: Duration = Duration::from_millis(20);
/// How long a waited-for round may stay undecided before it is decided here.
const ABANDONED: Duration = Duration::from_millis(200);
/// How often an idle applier asks the members whether it missed something.
const PROBE: Duration = Duration::from_secs(2);
/// The longest pause between two tries of an entry that fails here.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The most rounds one compaction transaction forgets (it stops this node's votes).
const MAX_COMPACTION: i64 = 10_000;
/// How long a new applier waits for the transaction that creates its group to commit.
const GROUP_GRACE: Duration = Duration::from_secs(30);

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_paxos_applier_main(_arg: pg_sys::Datum) {
    let Some((group, key)) = background::start_group_worker("applier") else {
        return;
    };
    let group = group.as_str();
    // SAFETY: set once at process start.
    let pid = unsafe { pg_sys::MyProcPid };
    if !shared::claim(&key, pid) {
        // Another applier serves the group: this registration ends for good.
        exit(0);
    }
    CLAIMED.with(|c| c.set(Some(key)));
    // SAFETY: registers a callback PostgreSQL runs before detaching from shared memory.
    unsafe { pg_sys::before_shmem_exit(Some(unclaim), pg_sys::Datum::from(0)) };

    let mut applier = Applier::new(group, key);
    let waited = Instant::now();
    loop {
        let applied = in_transaction(|| {
            // DROP EXTENSION takes the catalog away: the group is gone with it.
            Ok(crate::replication::registry::extension_present()
                .then(|| catalog::applied(group))
                .transpose()?
                .flatten())
        });
        match applied {
            Ok(Some(applied)) => {
                applier.applied = applied;
                shared::publish(&key, applied, None);
                break;
            }
            _ if waited.elapsed() > GROUP_GRACE => exit(0),
            _ => sleep(Duration::from_millis(100)),
        }
    }
    pgrx::log!(
        "pg_paxos applier of group \"{group}\" started at round {}",
        applier.applied
    );
    loop {
        match applier.pass() {
            Ok(Some(pause)) => sleep(pause),
            Ok(None) => {
                pgrx::log!("pg_paxos applier of group \"{group}\" stops: the group is gone");
                exit(0);
            }
            Err(error) => {
                pgrx::log!("pg_paxos applier of group \"{group}\": {error}");
                sleep(applier.backoff());
            }
        }
    }
}

thread_local! {
    static CLAIMED: std::cell::Cell<Option<Key>> = const { std::cell::Cell::new(None) };
}

#[pg_guard]
unsafe extern "C-unwind" fn unclaim(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    if let Some(key) = CLAIMED.with(|c| c.take()) {
        // SAFETY: set once at process start.
        shared::release(&key, unsafe { pg_sys::MyProcPid });
    }
}

struct Applier {
    group: String,
    key: Key,
    applied: i64,
    /// The learned position last seen, and since when.
    learned: (i64, Instant),
    /// Since when a session has waited for a round not known here.
    wanted_since: Option<Instant>,
    last_probe: Instant,
    /// The leadership's decided position last seen, since when, and what was announced.
    decided: (i64, Instant),
    announced: i64,
    /// Since when the applier was woken without a session waiting (see `COALESCE`).
    woken_since: Option<Instant>,
    /// When the last pass began.
    last_pass: Instant,
    /// Whether the last pass left known rounds unapplied (a catch-up goes on at once).
    behind: bool,
    /// Consecutive failed tries of the entry that stops the applier, and the last error.
    failures: u32,
    last_try: Instant,
    last_error: String,
    /// Every round through this one is forgotten here, as far as this applier knows.
    compacted: i64,
}

impl Applier {
    fn new(group: &str, key: Key) -> Applier {
        let now = Instant::now();
        Applier {
            group: group.to_owned(),
            key,
            applied: -1,
            learned: (-1, now),
            wanted_since: None,
            // A new applier asks at once: its node may have been down for long.
            last_probe: now.checked_sub(PROBE).unwrap_or(now),
            decided: (-1, now),
            announced: -1,
            woken_since: None,
            last_pass: now,
            behind: false,
            failures: 0,
            last_try: now,
            last_error: String::new(),
            compacted: -1,
        }
    }

    fn backoff(&self) -> Duration {
        (Duration::from_millis(50) * 2u32.pow(self.failures.min(8))).min(MAX_BACKOFF)
    }

    /// One pass; returns how long to sleep, or `None` once the group is gone. Unless a
    /// session waits, a pass runs `COALESCE` after the wake that asked for it.
    fn pass(&mut self) -> Result<Option<Duration>> {
        if !self.behind && shared::wanted(&self.key) <= self.applied {
            let since = *self.woken_since.get_or_insert_with(Instant::now);
            let left = match self.quiet_for() {
                Some(quiet) => ANNOUNCE_AFTER
                    .saturating_sub(quiet)
                    .min(BUSY_PASS.saturating_sub(self.last_pass.elapsed())),
                None => COALESCE.saturating_sub(since.elapsed()),
            };
            if !left.is_zero() {
                return Ok(Some(left));
            }
        }
        self.woken_since = None;
        self.last_pass = Instant::now();
        let Some((learned, accepted)) = in_transaction(|| self.learn_local())? else {
            return Ok(None);
        };
        let now = Instant::now();
        if learned != self.learned.0 {
            self.learned = (learned, now);
        }
        let wanted = shared::wanted(&self.key);
        self.wanted_since = match (wanted > learned, self.wanted_since) {
            (true, None) => Some(now),
            (true, since) => since,
            (false, _) => None,
        };
        let stalled = accepted > learned && now.duration_since(self.learned.1) > STALL;
        let probe = now.duration_since(self.last_probe) > PROBE;
        let mut pause = Duration::from_secs(1);
        let mut learned = learned;
        if wanted > learned || stalled || probe {
            match in_transaction(|| self.learn_remote(wanted.max(accepted), probe)) {
                Err(PaxosError::Compacted {
                    donor: Some(donor), ..
                }) => self.copy_state(&donor),
                Err(PaxosError::Dropped { round, .. }) => {
                    in_transaction(|| crate::groups::dropped_here(&self.group, round))?;
                    pgrx::log!(
                        "pg_paxos applier of group \"{}\": the members dropped the group at \
                         round {round} while this node was away; it is dropped here too (its \
                         tables stay, as ordinary tables, without what it missed)",
                        self.group
                    );
                    return Ok(None);
                }
                Err(error) => {
                    pgrx::debug1!("pg_paxos applier of group \"{}\": {error}", self.group)
                }
                Ok(()) => {}
            }
            if wanted > learned {
                pause = Duration::from_millis(1);
            }
            learned = in_transaction(|| catalog::learned_through(&self.group))?;
        }
        let stopped = self.failures > 0;
        if !stopped {
            // Writers on this node apply their own rounds and publish them as they commit:
            // no need to lock the applied position to find that out.
            if let Some(status) = shared::status(&self.key) {
                self.applied = self.applied.max(status.applied);
            }
        }
        let retry_due = now.duration_since(self.last_try)
            >= if wanted > self.applied {
                Duration::from_millis(10)
            } else {
                self.backoff()
            };
        if learned > self.applied && (!stopped || retry_due) {
            self.last_try = now;
            let key = self.key;
            let outcome = in_transaction(|| {
                apply::apply_available(&self.group, BATCH, |d| shared::reserved(&key, &d.entry.id))
            })?;
            match outcome.stop {
                Some(Stop::Busy) => pause = pause.min(Duration::from_millis(1)),
                Some(Stop::Dropped) => {
                    shared::publish(&self.key, outcome.applied, None);
                    pgrx::log!(
                        "pg_paxos applier of group \"{}\": the group was dropped at round {} \
                         (its tables stay, as ordinary tables)",
                        self.group,
                        outcome.applied
                    );
                    return Ok(None);
                }
                Some(Stop::Removed) => {
                    pgrx::log!(
                        "pg_paxos applier of group \"{}\": the entry of round {} removed this \
                         node from the group, which is dropped here (its tables stay, as \
                         ordinary tables)",
                        self.group,
                        outcome.applied
                    );
                    return Ok(None);
                }
                Some(Stop::Failed(round, error)) => {
                    self.applied = outcome.applied;
                    self.failed(round, &error);
                    let sqlstate = match &error {
                        PaxosError::Replayed { sqlstate, .. } => sqlstate.as_str(),
                        _ => "55000",
                    };
                    shared::publish(
                        &self.key,
                        self.applied,
                        Some((round, sqlstate, &self.last_error)),
                    );
                    pause = pause.min(self.backoff());
                }
                stop => {
                    self.applied = outcome.applied;
                    if self.failures > 0 {
                        pgrx::log!(
                            "pg_paxos applier of group \"{}\" applied past round {}",
                            self.group,
                            outcome.applied
                        );
                    }
                    self.failures = 0;
                    self.last_error.clear();
                    shared::publish(&self.key, self.applied, None);
                    if stop.is_none() && self.applied < learned {
                        pause = Duration::ZERO;
                    }
                }
            }
        } else if stopped {
            pause = pause.min(self.backoff());
        }

        if let Some(wait) = self.announce()? {
            pause = pause.min(wait);
        }
        self.compact()?;
        self.behind = pause.is_zero();
        Ok(Some(pause))
    }

    /// Forgets applied rounds beyond the retained ones, a tenth of them at a time at least,
    /// so that each compaction deletes many rows in one short transaction.
    fn compact(&mut self) -> Result<()> {
        let retain = gucs::log_retention();
        let through = paxos_core::compaction::compactable_through(self.applied, retain)
            .min(self.compacted.max(0) + MAX_COMPACTION);
        if through - self.compacted < (retain / 10).max(1) {
            return Ok(());
        }
        let forgotten = in_transaction(|| {
            crate::locks::range(&self.group);
            catalog::compact(&self.group, through)
        })?;
        pgrx::debug1!(
            "pg_paxos applier of group \"{}\" forgot {forgotten} rounds through round {through}",
            self.group
        );
        self.compacted = through;
        Ok(())
    }

    /// Catches up by copying `donor`'s state: the rounds this node needs are forgotten there.
    fn copy_state(&mut self, donor: &str) {
        let started = Instant::now();
        match in_transaction(|| state_copy::copy_from(&self.group, donor, Existing::Replace)) {
            Ok(round) => {
                pgrx::log!(
                    "pg_paxos applier of group \"{}\" caught up by a state copy from {} as of \
                     round {round} in {:?}",
                    self.group,
                    crate::connstr::redact(donor),
                    started.elapsed()
                );
                self.applied = round;
                self.compacted = self.compacted.max(round);
                self.failures = 0;
                self.last_error.clear();
                shared::publish(&self.key, round, None);
            }
            Err(error) => self.failed(self.applied + 1, &error),
        }
    }

    /// Whether the group still exists, and if so, the rounds known and accepted here (the
    /// leadership's decisions recorded first on the leading member).
    fn learn_local(&self) -> Result<Option<(i64, i64)>> {
        if !crate::replication::registry::extension_present()
            || catalog::group(&self.group)?.is_none()
        {
            return Ok(None);
        }
        let mut learned = catalog::learned_through(&self.group)?;
        if let Some((ballot, through)) = vouched(&self.group) {
            if through > learned && catalog::mark_chosen_under(&self.group, &ballot, through)? {
                learned = catalog::advance_learned(&self.group)?;
            }
        }
        Ok(Some((learned, catalog::max_accepted_round(&self.group)?)))
    }

    /// Fetches rounds through `through` from the members (and, when `probe`, through the
    /// highest round a majority accepted); decides rounds that a session has waited for
    /// longer than `ABANDONED`.
    fn learn_remote(&mut self, through: i64, probe: bool) -> Result<()> {
        let mut log = Log::open(&self.group, "applier")?;
        let mut target = through;
        if probe {
            self.last_probe = Instant::now();
            target = target.max(log.max_group_round()?);
        }
        if target > log.learned_through() {
            log.catch_up(target)?;
        }
        let wanted = shared::wanted(&self.key);
        let abandoned = self
            .wanted_since
            .is_some_and(|since| since.elapsed() > ABANDONED);
        if abandoned && wanted > log.learned_through() {
            // Never past the end of the log: a no-op there would lengthen it.
            let highest = log.max_group_round()?;
            log.learn_through(wanted.min(highest))?;
        }
        Ok(())
    }

    fn failed(&mut self, round: i64, error: &PaxosError) {
        self.failures += 1;
        let message = error.to_string();
        if message != self.last_error {
            pgrx::warning!(
                "pg_paxos applier of group \"{}\" stopped before round {round}: {message}",
                self.group
            );
            self.last_error = message;
        }
    }

    /// On the leading member, for how long its leadership decided nothing new.
    fn quiet_for(&mut self) -> Option<Duration> {
        let (_, through) = vouched(&self.group)?;
        let now = Instant::now();
        if through != self.decided.0 {
            self.decided = (through, now);
        }
        Some(now.duration_since(self.decided.1))
    }

    /// On the leading member, tells the others what was chosen once no round was decided
    /// for `ANNOUNCE_AFTER`; returns how long to wait before looking again, if it should.
    fn announce(&mut self) -> Result<Option<Duration>> {
        let Some((ballot, through)) = vouched(&self.group) else {
            return Ok(None);
        };
        if through <= self.announced {
            return Ok(None);
        }
        let quiet = self.quiet_for().unwrap_or_default();
        if quiet < ANNOUNCE_AFTER {
            return Ok(Some(ANNOUNCE_AFTER - quiet));
        }
        self.announced = through;
        let (own, voters) = in_transaction(|| {
            Ok((
                catalog::require_group(&self.group)?.self_connection,
                Log::open(&self.group, "applier")?.voters(through + 1),
            ))
        })?;
        let others: Vec<String> = voters.into_iter().filter(|m| *m != own).collect();
        let request = AnnounceRequest {
            group: self.group.clone(),
            ballot,
            through,
        };
        // The first answer is enough to go on: the other requests complete on their own
        // whenever this process next talks to the members.
        crate::peers::exchange(&to_each(&others, "paxos_announce", &request), |_, _| {
            std::ops::ControlFlow::Break(())
        });
        Ok(None)
    }
}

/// The node's ballot for `group`, and the round through which its leadership vouches that
/// every value accepted under it is chosen (paxos-core's `RangeLeader::chosen_through`).
fn vouched(group: &str) -> Option<(paxos_core::Ballot, i64)> {
    let held = node::leadership(group)?;
    let through = held.chosen_through()?;
    Some((held.ballot().clone(), through))
}
