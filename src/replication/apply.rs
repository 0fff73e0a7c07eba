//! Applying a group's log on this node, in round order, in the caller's transaction: the
//! applied position moves with the effects of the entries, so each is applied exactly once.
use crate::catalog;
use crate::error::{PaxosError, Result};
use crate::ids;
use crate::messages::{Decision, Entry, EntryKind};
use crate::multipaxos::Log;
use crate::replication::sequences;
use crate::replication::statement::{self, Ran, Statement};
use crate::replication::tables::{self, Replicate};

/// How many decisions are read from the catalog at once.
const BATCH: i64 = 1000;

/// Makes every round up to `through` known here and applies it; returns the applied
/// position. Rounds are learned from the members, or decided when abandoned.
pub fn apply_through(group: &str, proposer: &str, through: i64) -> Result<i64> {
    let applied = lock_applied(group)?;
    if through <= applied {
        return Ok(applied);
    }
    let mut log = Log::open(group, proposer)?;
    if log.catch_up(through)? < through {
        let highest = log.max_group_round()?;
        if through > highest {
            return Err(PaxosError::RoundOutOfReach {
                group: group.to_owned(),
                round: through,
                reason: format!("the highest round accepted in the group is {highest}"),
            });
        }
        log.learn_through(through)?;
    }
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

/// See `paxos_apply_and_append`.
pub fn apply_and_append(group: &str, proposer: &str, sql: &str) -> Result<i64> {
    catalog::require_group(group)?;
    let statement = Statement::by_current_user(sql)?;
    // Check the write against every write acknowledged before it began.
    let highest = Log::open(group, proposer)?.max_group_round()?;
    apply_through(group, proposer, highest)?;
    if let Ran::Failed(error) = statement::run(&statement, false)? {
        (*error).rethrow();
    }
    let entry = Entry {
        id: ids::proposal_id(),
        kind: EntryKind::Sql,
        value: Some(serde_json::to_string(&statement).unwrap_or_default()),
    };
    let round = crate::leader::append(group, proposer, entry)?;
    apply_through(group, proposer, round)?;
    match catalog::apply_error(group, round)? {
        Some((sqlstate, message)) => Err(PaxosError::Replayed { sqlstate, message }),
        None => Ok(round),
    }
}

fn apply_round(group: &str, decision: &Decision) -> Result<()> {
    let value = decision.entry.value.as_deref().unwrap_or("");
    let unreadable = |e: serde_json::Error| PaxosError::ReplicaMismatch {
        round: decision.round,
        reason: format!("the entry cannot be read: {e}"),
    };
    match decision.entry.kind {
        EntryKind::Sql => {
            let statement: Statement = serde_json::from_str(value).map_err(unreadable)?;
            match statement::run(&statement, true)? {
                Ran::Done => Ok(()),
                Ran::Failed(error) => {
                    let code = statement::sqlstate(&error);
                    let message = statement::message(&error);
                    if !same_everywhere(&code) {
                        // Transient, or needs an operator: stop before this entry.
                        return Err(PaxosError::Replayed {
                            sqlstate: code,
                            message: format!("cannot apply round {}: {message}", decision.round),
                        });
                    }
                    catalog::record_apply_error(group, decision.round, &code, &message)
                }
            }
        }
        EntryKind::Replicate => {
            let payload: Replicate = serde_json::from_str(value).map_err(unreadable)?;
            tables::apply(group, decision.round, &payload)
        }
        EntryKind::Value | EntryKind::Noop | EntryKind::Join | EntryKind::Leave => Ok(()),
    }
}

/// Whether every member running the same entry on the same rows fails the same way: data
/// exceptions (class 22) and integrity violations (class 23), except foreign keys, whose
/// referenced table may not be replicated.
pub fn same_everywhere(sqlstate: &str) -> bool {
    sqlstate.starts_with("22") || (sqlstate.starts_with("23") && sqlstate != "23503")
}
