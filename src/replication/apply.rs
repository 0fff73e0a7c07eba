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
/// position. Rounds are learned from the members, or decided when abandoned; a round above
/// every round accepted in the group is refused.
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

/// Skips `round` on this node only: applies the rounds before it, records the error its
/// entry fails with here and moves the applied position past it. Only an entry that fails
/// here with an error no retry cures can be skipped. Returns that error (SQLSTATE, message).
pub fn skip_round(group: &str, proposer: &str, round: i64) -> Result<(String, String)> {
    let refuse = |reason: String| PaxosError::RoundOutOfReach {
        group: group.to_owned(),
        round,
        reason,
    };
    if round <= lock_applied(group)? {
        return Err(refuse("it is applied on this node already".into()));
    }
    apply_through(group, proposer, round - 1)?;
    let Some(decision) = catalog::decisions(group, round, round, 1)?.pop() else {
        return Err(refuse(
            "its decision is not recorded on this node yet: apply the log first".into(),
        ));
    };
    // Try the entry, and undo whatever it did either way.
    let tried = statement::subtransaction(false, || apply_round(group, &decision));
    let (sqlstate, message) = match tried {
        Ok(Ok(())) => {
            return Err(refuse(
                "its entry applies here (or fails as on every member, and is skipped alike): \
                 apply the log instead"
                    .into(),
            ))
        }
        Ok(Err(PaxosError::Replayed { sqlstate, message })) => (sqlstate, message),
        Ok(Err(mismatch @ PaxosError::ReplicaMismatch { .. })) => {
            ("55000".to_owned(), mismatch.to_string())
        }
        Ok(Err(other)) => return Err(other),
        Err(caught) => (statement::sqlstate(&caught), statement::message(&caught)),
    };
    if transient(&sqlstate) {
        return Err(refuse(format!(
            "its entry fails here with {sqlstate}, which may pass: apply the log again ({message})"
        )));
    }
    catalog::record_apply_error(
        group,
        round,
        &sqlstate,
        &format!("skipped by an operator: {message}"),
    )?;
    catalog::set_applied(group, round)?;
    // What the try drew from the sequences stays drawn, as the entry drew it on the members
    // where it ran: later serial keys here stay in step with theirs.
    sequences::record(group)?;
    Ok((sqlstate, message))
}

/// Whether a failure may pass when the entry is tried again: lost connections, serialization
/// failures and deadlocks, resources, cancels and timeouts, system errors.
fn transient(sqlstate: &str) -> bool {
    ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| sqlstate.starts_with(class))
        || sqlstate == "55P03"
}

/// Whether every member running the same entry on the same rows fails the same way: data
/// exceptions (class 22) and integrity violations (class 23), except foreign keys, whose
/// referenced table may not be replicated.
pub fn same_everywhere(sqlstate: &str) -> bool {
    sqlstate.starts_with("22") || (sqlstate.starts_with("23") && sqlstate != "23503")
}
