//! Applying a group's log on this node, in round order: the applied position moves in the
//! same transaction as the effects of the entries, so each is applied exactly once. The
//! group's applier (`crate::applier`) applies through `apply_available`; a session applies
//! other members' entries itself only where no one else can: a node joining the group, and
//! a transaction that already holds the applied position because it wrote to the group.
use pgrx::prelude::*;

use crate::catalog;
use crate::error::{PaxosError, Result};
use crate::messages::{Decision, EntryKind, Replicate};
use crate::multipaxos::Log;
use crate::replication::context;
use crate::replication::registry::{self, fingerprint, qualified};
use crate::replication::sequences;
use crate::replication::statement::{self, Ran, Statement};

/// How many decisions are read from the catalog at once.
const BATCH: i64 = 1000;

/// Makes every round up to `through` known here and applies it; returns the applied
/// position. Rounds are learned from the members, or decided when abandoned; a round above
/// every round accepted in the group is refused.
pub fn apply_through(group: &str, proposer: &str, through: i64) -> Result<i64> {
    let applied = lock_applied(group)?;
    if through <= applied {
        return Ok(applied);
    }
    let mut log = Log::open(group, proposer)?;
    log.know_through(through)?;
    apply_known(group, applied, through)
}

/// Applies every round chosen before this call began, what a strong read needs: through the
/// highest round a majority accepted, asked once. (Asked twice, two majorities may answer
/// differently while a round is in flight, and the second bound may be the lower.) Returns
/// the applied position.
pub fn apply_latest(group: &str, proposer: &str) -> Result<i64> {
    let applied = lock_applied(group)?;
    let mut log = Log::open(group, proposer)?;
    let highest = log.max_group_round()?;
    if highest <= applied {
        return Ok(applied);
    }
    if log.catch_up(highest)? < highest {
        log.learn_through(highest)?;
    }
    apply_known(group, applied, highest)
}

/// What an applier's batch came to.
pub struct Applied {
    /// The applied position now (committed with the caller's transaction).
    pub applied: i64,
    /// Why it stopped before the rounds this node knows, if it did.
    pub stop: Option<Stop>,
}

pub enum Stop {
    /// Another session holds the applied position (a writer running its round).
    Busy,
    /// The entry of this round removed this node from the group, which is dropped here.
    Removed,
    /// The entry of this round dropped the group, here as on every member.
    Dropped,
    /// The entry of this round is a writer's on this node, which runs it itself.
    Reserved,
    /// The entry of this round failed here with an error that is not the same on every
    /// member: it is tried again later, never skipped.
    Failed(i64, PaxosError),
}

/// Applies at most `limit` of the rounds this node has learned after its applied position,
/// stopping before an entry `reserved` says a writer here runs itself, and before one that
/// fails here. What the rounds before the stop did commits with the caller's transaction.
pub fn apply_available(
    group: &str,
    limit: i64,
    reserved: impl Fn(&Decision) -> bool,
) -> Result<Applied> {
    let Some(applied) = catalog::try_lock_applied(group)? else {
        return Ok(Applied {
            applied: -1,
            stop: Some(Stop::Busy),
        });
    };
    sequences::restore(group)?;
    let through = catalog::learned_through(group)?.min(applied + limit);
    let mut next = applied + 1;
    let mut stop = None;
    'rounds: while next <= through {
        let decisions = catalog::decisions(group, next, through, BATCH)?;
        if decisions.first().is_none_or(|d| d.round != next) {
            break;
        }
        for decision in &decisions {
            if decision.round != next {
                break 'rounds;
            }
            if reserved(decision) {
                stop = Some(Stop::Reserved);
                break 'rounds;
            }
            if decision.entry.kind == EntryKind::Drop {
                crate::groups::dropped_here(group, next)?;
                return Ok(Applied {
                    applied: next,
                    stop: Some(Stop::Dropped),
                });
            }
            if removes_this_node(group, decision)? {
                crate::groups::drop_here(group)?;
                return Ok(Applied {
                    applied: next,
                    stop: Some(Stop::Removed),
                });
            }
            // Where the sequences stand before the entry: the position recorded if it fails.
            if next > applied + 1 {
                sequences::record(group)?;
            }
            if let Err(error) = apply_round(group, decision) {
                stop = Some(Stop::Failed(next, error));
                break 'rounds;
            }
            next += 1;
        }
    }
    if next - 1 > applied {
        catalog::set_applied(group, next - 1)?;
        // After a failed entry, its draws are not recorded: the positions from before it
        // were, and the next apply puts the sequences back there.
        if !matches!(stop, Some(Stop::Failed(..))) {
            sequences::record(group)?;
        }
    }
    Ok(Applied {
        applied: next - 1,
        stop,
    })
}

/// Whether `decision` is a leave of this node after which it is out of the group (not a
/// leave that a later join, already learned here, undid).
fn removes_this_node(group: &str, decision: &Decision) -> Result<bool> {
    if decision.entry.kind != EntryKind::Leave {
        return Ok(false);
    }
    let own = catalog::require_group(group)?.self_connection;
    if decision.entry.value.as_deref() != Some(own.as_str()) {
        return Ok(false);
    }
    let through = catalog::learned_through(group)?.max(decision.round);
    Ok(catalog::membership(group)?.is_out(&own, through))
}

/// Applies the rounds after `applied` through `through`, which this node has learned.
fn apply_known(group: &str, applied: i64, through: i64) -> Result<i64> {
    let mut next = applied + 1;
    while next <= through {
        let decisions = catalog::decisions(group, next, through, BATCH)?;
        // The applied position passes a round only once its entry has been applied.
        if decisions.first().is_none_or(|d| d.round != next) {
            return Err(PaxosError::RoundOutOfReach {
                group: group.to_owned(),
                round: next,
                reason: "its decision is not recorded on this node yet".into(),
            });
        }
        for decision in &decisions {
            if decision.round != next {
                break;
            }
            if decision.entry.kind == EntryKind::Drop {
                // Dropped here too; rolled back with the caller's transaction should it
                // fail on this error, and then dropped by the applier.
                crate::groups::dropped_here(group, next)?;
                return Err(PaxosError::Dropped {
                    group: group.to_owned(),
                    round: next,
                });
            }
            apply_round(group, decision)?;
            next += 1;
        }
    }
    catalog::set_applied(group, through)?;
    sequences::record(group)?;
    Ok(through)
}

/// Locks the applied position of `group` until the end of the transaction, and puts its
/// sequences back where the last committed apply left them; returns the position.
pub fn lock_applied(group: &str) -> Result<i64> {
    let applied = catalog::lock_applied(group)?;
    sequences::restore(group)?;
    Ok(applied)
}

pub fn apply_round(group: &str, decision: &Decision) -> Result<()> {
    let value = decision.entry.value.as_deref().unwrap_or("");
    let unreadable = |e: serde_json::Error| PaxosError::ReplicaMismatch {
        round: decision.round,
        reason: format!("the entry cannot be read: {e}"),
    };
    match decision.entry.kind {
        EntryKind::Sql => {
            let statement: Statement = serde_json::from_str(value).map_err(unreadable)?;
            let ran = context::replaying_round(decision.round, || {
                statement::run(group, &statement, true)
            });
            match ran? {
                Ran::Done => Ok(()),
                Ran::Failed(error) => {
                    let code = statement::sqlstate(&error);
                    let message = statement::message(&error);
                    if !same_everywhere(&code, || registry::foreign_keys_inside(group)) {
                        // Transient, or needs an operator: stop before this entry.
                        let advice = if transient(&code) {
                            "; it is retried at the next apply"
                        } else {
                            "; fix its cause on this node and apply again, or give the entry \
                             up here with paxos_skip_round()"
                        };
                        return Err(PaxosError::Replayed {
                            sqlstate: code,
                            message: format!(
                                "cannot apply round {}: {message}{advice}",
                                decision.round
                            ),
                        });
                    }
                    crate::status::count(group, crate::status::Event::ApplyError);
                    catalog::record_apply_error(group, decision.round, &code, &message)
                }
            }
        }
        EntryKind::Replicate => {
            let payload: Replicate = serde_json::from_str(value).map_err(unreadable)?;
            apply_replicate(group, decision.round, &payload)
        }
        EntryKind::Value
        | EntryKind::Noop
        | EntryKind::Join
        | EntryKind::Leave
        | EntryKind::Drop => Ok(()),
    }
}

/// Whether a failure may pass when the entry is tried again: lost connections, serialization
/// failures and deadlocks, resources, cancels and timeouts, system errors.
pub fn transient(sqlstate: &str) -> bool {
    ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| sqlstate.starts_with(class))
        || sqlstate == "55P03"
}

/// Whether every member running the same entry on the same rows fails the same way: data
/// exceptions (class 22), integrity violations (class 23) and routine exceptions (class 2F,
/// among them a trigger that uses a table outside the group, see `guard`); a foreign key
/// violation only when every foreign key of the group's tables stays among them
/// (`fks_inside`), as one to another table may find other rows on each member.
pub fn same_everywhere(sqlstate: &str, fks_inside: impl FnOnce() -> Result<bool>) -> bool {
    match sqlstate {
        "23503" => fks_inside().unwrap_or(false),
        _ => ["22", "23", "2F"]
            .iter()
            .any(|class| sqlstate.starts_with(class)),
    }
}

/// Applies a replicate entry on this node: the table must exist and hold the same rows.
fn apply_replicate(group: &str, round: i64, payload: &Replicate) -> Result<()> {
    let table = qualified(&payload.schema, &payload.table);
    let oid = Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid",
        &[table.as_str().into()],
    )?;
    let Some(oid) = oid else {
        return Err(PaxosError::ReplicaMismatch {
            round,
            reason: format!(
                "table {table} is replicated in group \"{group}\" from round {round} but does \
                 not exist on this node; create it as on the other members, then apply again"
            ),
        });
    };
    let own = fingerprint(&payload.schema, &payload.table)?;
    if own != payload.fingerprint {
        return Err(PaxosError::ReplicaMismatch {
            round,
            reason: format!(
                "the rows of {table} on this node differ from those on the member that \
                 replicated it at round {round} (fingerprint {own}, expected {}); make them \
                 identical, then apply again",
                payload.fingerprint
            ),
        });
    }
    catalog::add_replicated(group, oid, (&payload.schema, &payload.table), round)?;
    // Every backend looks the table up again, and plans of writes to it are made again
    // (this time capturing them), once this transaction commits.
    registry::invalidate(Some(oid));
    sequences::forget();
    Ok(())
}
