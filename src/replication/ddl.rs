//! DDL on replicated tables, typed on any member, replicated as the statement that was typed:
//! checked first as its author (run and rolled back), appended to the log, and applied by
//! every member's applier at one round, this one's included; the client gets the usual
//! command tag once this member has applied it, or the error every member met.
//!
//! What cannot be replicated that way is refused by the guard instead: statements that
//! change a table's name or schema or drop it, COPY FROM (use INSERT), CREATE or DROP INDEX
//! CONCURRENTLY (they cannot run inside a transaction), statements that also touch tables
//! the group does not replicate, and role-wide ones (REASSIGN OWNED, DROP OWNED).
use std::ffi::CStr;

use pgrx::pg_sys;

use super::{commands, outcome, registry};
use crate::error::{PaxosError, Result};

/// Whether a utility statement that changes replicated tables can be replicated as typed.
pub unsafe fn replicable(node: *mut pg_sys::Node) -> bool {
    use pg_sys::NodeTag::*;
    use pg_sys::ObjectType::*;
    // SAFETY: the node's tag says which statement struct it is.
    unsafe {
        match (*node).type_ {
            T_AlterTableStmt | T_CreateTrigStmt | T_RuleStmt | T_CreatePolicyStmt
            | T_AlterPolicyStmt | T_TruncateStmt => true,
            T_IndexStmt => !(*(node as *mut pg_sys::IndexStmt)).concurrent,
            T_GrantStmt => {
                (*(node as *mut pg_sys::GrantStmt)).targtype
                    == pg_sys::GrantTargetType::ACL_TARGET_OBJECT
            }
            T_DropStmt => {
                let drop = node as *mut pg_sys::DropStmt;
                match (*drop).removeType {
                    OBJECT_TRIGGER | OBJECT_RULE | OBJECT_POLICY => true,
                    OBJECT_INDEX => !(*drop).concurrent,
                    _ => false,
                }
            }
            T_RenameStmt => matches!(
                (*(node as *mut pg_sys::RenameStmt)).renameType,
                OBJECT_COLUMN
                    | OBJECT_TABCONSTRAINT
                    | OBJECT_TRIGGER
                    | OBJECT_POLICY
                    | OBJECT_RULE
                    | OBJECT_INDEX
            ),
            _ => false,
        }
    }
}

/// Replicates `statement` (its text is the part of `query` it was parsed from), which
/// changes `tables`: all replicated by one group. Sets the command tag on success.
pub unsafe fn replicate(
    statement: *mut pg_sys::PlannedStmt,
    query: *const std::ffi::c_char,
    context: pg_sys::ProcessUtilityContext::Type,
    tables: &[pg_sys::Oid],
    completion: *mut pg_sys::QueryCompletion,
) -> Result<i64> {
    let mut groups: Vec<String> = Vec::new();
    for table in tables {
        match registry::group_of(*table) {
            Some(group) if !groups.contains(&group) => groups.push(group),
            Some(_) => {}
            None => {
                return Err(PaxosError::Unsupported(
                    "this statement changes replicated tables and others at once: run it \
                     separately for each"
                        .into(),
                ))
            }
        }
    }
    let [group] = groups.as_slice() else {
        return Err(PaxosError::Unsupported(
            "this statement changes tables of several paxos groups: run it separately for each"
                .into(),
        ));
    };
    // It takes effect everywhere when its round is applied, whatever this transaction does
    // later: it must be a transaction of its own.
    if outcome::in_explicit_block()
        || context != pg_sys::ProcessUtilityContext::PROCESS_UTILITY_TOPLEVEL
    {
        return Err(PaxosError::InTransactionBlock(group.clone()));
    }
    // SAFETY: the statement's location in the source text, as the parser recorded it.
    let text = unsafe {
        let full = CStr::from_ptr(query).to_bytes();
        let start = ((*statement).stmt_location.max(0) as usize).min(full.len());
        let end = match (*statement).stmt_len {
            len if len > 0 => (start + len as usize).min(full.len()),
            _ => full.len(),
        };
        String::from_utf8_lossy(&full[start..end]).trim().to_owned()
    };
    let round = commands::apply_and_append(group, "ddl", &text)?;
    if !completion.is_null() {
        // SAFETY: the caller's completion, set as the statement itself would have.
        unsafe {
            (*completion).commandTag = pg_sys::CreateCommandTag((*statement).utilityStmt);
            (*completion).nprocessed = 0;
        }
    }
    Ok(round)
}
