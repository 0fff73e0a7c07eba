//! Statements run through the log on a member's request: `paxos_apply_and_append` (SQL run
//! on every member, checked here first) and `paxos_skip_round` (an entry given up on this
//! member only).
use crate::applier::learn_and_wait;
use crate::catalog;
use crate::error::{PaxosError, Result};
use crate::ids;
use crate::messages::{Entry, EntryKind};
use crate::multipaxos::Log;
use crate::replication::apply::{apply_round, lock_applied, transient};
use crate::replication::context::privileged;
use crate::replication::sequences;
use crate::replication::statement::{self, Ran, Statement};

/// See `paxos_apply_and_append`; also what DDL typed on a replicated table runs (`ddl`).
/// The statement is the caller's, checked as the caller; the catalog work is `privileged`.
pub fn apply_and_append(group: &str, proposer: &str, sql: &str) -> Result<i64> {
    let statement = Statement::by_current_user(sql)?;
    // Check the statement against every write acknowledged before it began.
    privileged(|| {
        catalog::require_group(group)?;
        let highest = Log::open(group, proposer)?.max_group_round()?;
        crate::applier::wait_applied(group, highest)
    })?;
    if let Ran::Failed(error) = statement::run(group, &statement, false)? {
        (*error).rethrow();
    }
    let entry = Entry {
        id: ids::proposal_id(),
        kind: EntryKind::Sql,
        value: Some(serde_json::to_string(&statement).unwrap_or_default()),
    };
    privileged(|| {
        let round = crate::leader::append(group, proposer, entry)?;
        // The applier runs it here as on every member.
        learn_and_wait(group, proposer, round)?;
        if let Some((sqlstate, message)) = catalog::apply_error(group, round)? {
            return Err(PaxosError::Replayed { sqlstate, message });
        }
        // In effect everywhere once it returns, as a DBA expects of DDL: a write made next
        // on another member does not find its table locked by this entry's apply there.
        let behind = crate::applier::apply_on_members(group, round)?;
        if !behind.is_empty() {
            pgrx::warning!(
                "round {round} is chosen and applied here, but these members have not \
                 applied it yet: {}",
                behind.join("; ")
            );
        }
        Ok(round)
    })
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
    if round > 0 {
        learn_and_wait(group, proposer, round - 1)?;
    }
    let applied = lock_applied(group)?;
    if round <= applied {
        return Err(refuse("it is applied on this node already".into()));
    }
    if applied < round - 1 {
        return Err(refuse(format!(
            "this node has applied through round {applied} only"
        )));
    }
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
    crate::status::count(group, crate::status::Event::SkippedRound);
    crate::applier::notify(group);
    // What the try drew from the sequences stays drawn, as the entry drew it on the members
    // where it ran: later serial keys here stay in step with theirs.
    sequences::record(group)?;
    Ok((sqlstate, message))
}
