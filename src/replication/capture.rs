//! Writes to replicated tables, captured transparently.
//!
//! When such a write is **planned**, its analysed query is checked for determinism and for
//! relations other members do not have, and deparsed to SQL text with qualified names and
//! `$n` parameters (PL/pgSQL variables are parameters too). The text rides in the plan, so a
//! prepared statement or PL/pgSQL plan reused any number of times carries it.
//!
//! When it **starts**, after its privileges are checked, its entry (text, parameter values,
//! role, search_path) is appended to the log at round R while this node's applied position is
//! locked; the log is applied through R-1, the applied position set to R, and the statement
//! given a snapshot that sees all of it. The statement then runs as round R's apply on this
//! node: the client gets its normal result (row counts, RETURNING rows, a unique violation),
//! and every other member runs the same entry at R.
use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use serde::{Deserialize, Serialize};

use super::determinism;
use super::registry::{group_of, relation_name};
use super::statement::{Param, Statement};
use super::{cells, outcome, privileged, snapshot, with_pinned_io};
use crate::error::{PaxosError, Result};
use crate::messages::{Entry, EntryKind};
use crate::{catalog, gucs, ids};

/// The proposer name captured writes are appended under.
const PROPOSER: &str = "pg_paxos";
/// Marks the planner's note in a plan.
const MARK: &str = "pg_paxos:";

/// What the planner leaves in a captured write's plan for the executor.
#[derive(Serialize, Deserialize)]
struct Note {
    group: String,
    sql: String,
    params: Vec<i32>,
}

/// Plans `parse`; for a write to a replicated table, checks and deparses it first and leaves
/// the result in the plan.
pub fn plan(
    parse: *mut pg_sys::Query,
    plan: impl FnOnce(*mut pg_sys::Query) -> *mut pg_sys::PlannedStmt,
) -> *mut pg_sys::PlannedStmt {
    let Some(group) = written_group(parse) else {
        return plan(parse);
    };
    let note = prepare(parse, &group).unwrap_or_else(|e| e.raise());
    let planned = plan(parse);
    check_relations(planned, &group).unwrap_or_else(|e| e.raise());
    leave_note(planned, &note);
    planned
}

/// The group of the replicated table `parse` writes to, if it writes to one.
fn written_group(parse: *mut pg_sys::Query) -> Option<String> {
    // SAFETY: an analysed Query; its result relations index its range table.
    unsafe {
        let mut queries = vec![parse];
        for cte in cells((*parse).cteList) {
            let query = (*(cte as *mut pg_sys::CommonTableExpr)).ctequery as *mut pg_sys::Query;
            if !query.is_null() && (*query).type_ == pg_sys::NodeTag::T_Query {
                queries.push(query);
            }
        }
        queries.into_iter().find_map(|query| {
            let index = (*query).resultRelation;
            let writes = (*query).commandType != pg_sys::CmdType::CMD_SELECT;
            if !writes || index <= 0 {
                return None;
            }
            let entry = rte((*query).rtable, index as usize);
            group_of((*entry).relid)
        })
    }
}

/// Checks a write for determinism and deparses it.
fn prepare(parse: *mut pg_sys::Query, group: &str) -> Result<Note> {
    // SAFETY: an analysed Query; the deparser reads a copy, since the planner scribbles on
    // its input.
    unsafe {
        if (*parse).commandType == pg_sys::CmdType::CMD_MERGE {
            return Err(PaxosError::Unsupported(
                "MERGE into a replicated table is not supported; use INSERT ... ON CONFLICT".into(),
            ));
        }
        // Members run the write without its RETURNING list: only this node returns rows, so
        // what that list computes need not be deterministic.
        let copy = pg_sys::copyObjectImpl(parse as *const _) as *mut pg_sys::Query;
        (*copy).returningList = std::ptr::null_mut();
        let findings = determinism::inspect(copy);
        if !gucs::allow_mutable_functions() {
            if let Some(function) = findings.mutable {
                return Err(PaxosError::NotDeterministic(format!(
                    "{function} is not immutable and would give each member a different \
                     result"
                )));
            }
            for sequence in findings.sequences {
                let owner = determinism::owner_table(sequence);
                if owner.and_then(group_of).as_deref() != Some(group) {
                    return Err(PaxosError::NotDeterministic(format!(
                        "nextval() of sequence {} draws from a sequence no table of paxos \
                         group \"{group}\" owns",
                        relation_name(sequence)
                    )));
                }
            }
        }
        drop_rewritten_defaults(copy);
        let sql = with_pinned_io("", || {
            CStr::from_ptr(pg_sys::pg_get_querydef(copy, false))
                .to_string_lossy()
                .into_owned()
        });
        // Members run the text, not this plan: make sure it reads back as a statement
        // (a deparser limitation would otherwise stop every member's apply at its round).
        let highest = findings.params.keys().copied().max().unwrap_or(0).max(0) as usize;
        let mut types = vec![pg_sys::TEXTOID; highest];
        for (&id, &type_oid) in &findings.params {
            if id >= 1 {
                types[id as usize - 1] = type_oid;
            }
        }
        let search_path = format!("pg_catalog, {}", setting(c"search_path"));
        if let Err(error) = super::statement::check_parses(&sql, &types, &search_path) {
            return Err(PaxosError::Unsupported(format!(
                "this write to a replicated table cannot be replicated: its text as members \
                 would run it does not read back ({}): {sql}",
                super::statement::message(&error)
            )));
        }
        Ok(Note {
            group: group.to_owned(),
            sql,
            params: findings.params.into_keys().collect(),
        })
    }
}

/// Removes from an INSERT the column defaults the rewriter added (those of columns the
/// statement does not set): members evaluate them themselves, as they do identity columns,
/// which refuse explicit values; and in an INSERT of several VALUES rows or of a SELECT the
/// deparser cannot print them back. The determinism check has seen them.
unsafe fn drop_rewritten_defaults(query: *mut pg_sys::Query) {
    // SAFETY: a private copy of an analysed, rewritten Query whose target table the parser
    // locked.
    unsafe {
        if (*query).commandType != pg_sys::CmdType::CMD_INSERT || (*query).resultRelation <= 0 {
            return;
        }
        let table = (*rte((*query).rtable, (*query).resultRelation as usize)).relid;
        let relation = pg_sys::table_open(table, pg_sys::NoLock as i32);
        let mut kept: *mut pg_sys::List = std::ptr::null_mut();
        for entry in cells((*query).targetList) {
            let target = entry as *mut pg_sys::TargetEntry;
            let default = pg_sys::build_column_default(relation, (*target).resno as i32);
            let added = !default.is_null()
                && pg_sys::equal((*target).expr as *const _, default as *const _);
            if !added {
                kept = pg_sys::lappend(kept, entry);
            }
        }
        pg_sys::table_close(relation, pg_sys::NoLock as i32);
        (*query).targetList = kept;
    }
}

/// Refuses a write that reads or writes relations the group does not replicate: other
/// members would see different rows, or none.
fn check_relations(planned: *mut pg_sys::PlannedStmt, group: &str) -> Result<()> {
    // SAFETY: a finished plan; its flat range table lists every relation it touches.
    unsafe {
        for entry in cells((*planned).rtable) {
            let entry = entry as *mut pg_sys::RangeTblEntry;
            if (*entry).rtekind != pg_sys::RTEKind::RTE_RELATION {
                continue;
            }
            let relation = (*entry).relid;
            if group_of(relation).as_deref() == Some(group) {
                continue;
            }
            let what = if (*entry).relkind as u8 == pg_sys::RELKIND_VIEW {
                "a view (write to or read from the replicated tables directly)"
            } else {
                "not replicated by the same group"
            };
            return Err(PaxosError::Unsupported(format!(
                "a write to a replicated table of paxos group \"{group}\" cannot use {}: it is {what}",
                relation_name(relation)
            )));
        }
    }
    Ok(())
}

/// The plan's first ModifyTable node: the top one or the first writable CTE's.
unsafe fn modify_table(planned: *mut pg_sys::PlannedStmt) -> Option<*mut pg_sys::ModifyTable> {
    // SAFETY: a finished plan; the tags say which nodes are ModifyTable.
    unsafe {
        let top = (*planned).planTree as *mut pg_sys::Node;
        std::iter::once(top as *mut std::ffi::c_void)
            .chain(cells((*planned).subplans))
            .map(|p| p as *mut pg_sys::Node)
            .find(|node| !node.is_null() && (**node).type_ == pg_sys::NodeTag::T_ModifyTable)
            .map(|node| node as *mut pg_sys::ModifyTable)
    }
}

/// Leaves `note` in the plan, in the FDW-private slot of the first result relation: a slot
/// PostgreSQL reads only for foreign tables (replicated tables are plain tables) and that
/// copies of the plan (the plan cache's) keep.
fn leave_note(planned: *mut pg_sys::PlannedStmt, note: &Note) {
    let text = format!("{MARK}{}", serde_json::to_string(note).unwrap_or_default());
    let text = CString::new(text).unwrap_or_default();
    // SAFETY: the plan was just made in the current memory context, where the note goes too.
    unsafe {
        let Some(node) = modify_table(planned) else {
            return;
        };
        let slots = (*node).fdwPrivLists;
        if slots.is_null() || (*slots).length < 1 || !(*(*slots).elements).ptr_value.is_null() {
            return;
        }
        let string = pg_sys::makeString(pg_sys::pstrdup(text.as_ptr()));
        (*(*slots).elements).ptr_value =
            pg_sys::lappend(std::ptr::null_mut(), string as *mut _) as *mut _;
    }
}

fn read_note(planned: *mut pg_sys::PlannedStmt) -> Option<Note> {
    // SAFETY: reads what `leave_note` wrote; any other content is ignored.
    unsafe {
        let node = modify_table(planned)?;
        let slots = (*node).fdwPrivLists;
        if slots.is_null() || (*slots).length < 1 {
            return None;
        }
        let list = (*(*slots).elements).ptr_value as *mut pg_sys::List;
        let string = cells(list).next()? as *mut pg_sys::Node;
        if (*string).type_ != pg_sys::NodeTag::T_String {
            return None;
        }
        let text = CStr::from_ptr((*(string as *mut pg_sys::String)).sval)
            .to_str()
            .ok()?;
        serde_json::from_str(text.strip_prefix(MARK)?).ok()
    }
}

/// The group of the replicated tables `query` writes to, if any (known from its plan).
pub fn target_group(query: *mut pg_sys::QueryDesc) -> Option<String> {
    // SAFETY: a QueryDesc with its plan, before ExecutorStart.
    unsafe {
        let planned = (*query).plannedstmt;
        let rtable = (*planned).rtable;
        let list = (*planned).resultRelations;
        let len = if list.is_null() {
            0
        } else {
            (*list).length as usize
        };
        (0..len).find_map(|i| {
            let index = (*(*list).elements.add(i)).int_value as usize;
            group_of((*rte(rtable, index)).relid)
        })
    }
}

/// Appends `query`, a write to a replicated table of `group`, and prepares it to run as its
/// round's apply here. Returns the round.
pub fn start(query: *mut pg_sys::QueryDesc, group: &str) -> Result<i64> {
    // SAFETY: ExecutorStart has not run: the plan, parameters and snapshot are the caller's.
    unsafe {
        let planned = (*query).plannedstmt;
        let Some(note) = read_note(planned) else {
            return Err(PaxosError::Unsupported(format!(
                "this write to a replicated table of paxos group \"{group}\" was planned \
                 before the table was replicated; run it again"
            )));
        };
        if outcome::in_explicit_block() {
            return Err(PaxosError::InTransactionBlock(group.to_owned()));
        }
        if pg_sys::SessionReplicationRole != pg_sys::SESSION_REPLICATION_ROLE_ORIGIN as i32 {
            // Its triggers would fire on the other members and not here.
            return Err(PaxosError::Unsupported(
                "writes to replicated tables run with session_replication_role = origin, as \
                 every member replays them"
                    .into(),
            ));
        }
        if !snapshot::refreshable(query) {
            return Err(PaxosError::Unsupported(
                "writes to replicated tables run at READ COMMITTED, as statements of their own \
                 or from functions that are not STABLE or IMMUTABLE"
                    .into(),
            ));
        }
        check_privileges(planned);
        let statement = Statement {
            sql: note.sql,
            params: parameters((*query).params, &note.params),
            role: CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false))
                .to_string_lossy()
                .into_owned(),
            search_path: setting(c"search_path"),
        };
        let entry = Entry {
            id: ids::proposal_id(),
            kind: EntryKind::Sql,
            value: Some(serde_json::to_string(&statement).unwrap_or_default()),
        };
        let round = privileged(|| append_and_take_turn(group, entry))?;
        let fks_inside = super::registry::foreign_keys_inside(group)?;
        snapshot::refresh(query);
        outcome::running(round, query, fks_inside);
        Ok(round)
    }
}

/// Appends a write's entry at some round R and makes this transaction R's apply here: the
/// applier stops before the entry (reserved), applies every round before it, and this
/// transaction then holds the applied position, set to R, until it ends. Returns R.
fn append_and_take_turn(group: &str, entry: Entry) -> Result<i64> {
    if outcome::writing(group) {
        // A later write of a transaction that holds the applied position already: no
        // applier can run the rounds between, so this session does, in the replay context.
        super::apply::lock_applied(group)?;
        let round = outcome::appending(group, true, || {
            crate::leader::append(group, PROPOSER, entry)
        })?;
        super::apply::apply_through(group, PROPOSER, round - 1)?;
        catalog::set_applied(group, round)?;
        crate::applier::applied_at_commit(group, round);
        return Ok(round);
    }
    crate::applier::reserve(group, &entry.id)?;
    let round = outcome::appending(group, true, || {
        crate::leader::append(group, PROPOSER, entry)
    })?;
    // Should the applier need a lock this statement holds to apply the rounds before R
    // (DDL on its table, say), this fails at once, and with 40003: R is chosen, and the
    // applier runs it once this transaction is gone. The statement cannot run here: it was
    // planned before that DDL.
    crate::applier::wait_applied(group, round - 1)?;
    // Held until this transaction ends: the applier goes on from R once it has.
    let applied = super::apply::lock_applied(group)?;
    if applied != round - 1 {
        return Err(PaxosError::Applier {
            group: group.to_owned(),
            reason: format!(
                "it applied through round {applied}, not {} as this write's round {round} needs",
                round - 1
            ),
        });
    }
    catalog::set_applied(group, round)?;
    crate::applier::applied_at_commit(group, round);
    Ok(round)
}

#[cfg(feature = "pg15")]
unsafe fn check_privileges(planned: *mut pg_sys::PlannedStmt) {
    // SAFETY: the plan's range table; raises the usual permission error.
    unsafe { pg_sys::ExecCheckRTPerms((*planned).rtable, true) };
}

#[cfg(not(feature = "pg15"))]
unsafe fn check_privileges(planned: *mut pg_sys::PlannedStmt) {
    // SAFETY: the plan's range table and permission infos; raises the usual permission error.
    unsafe { pg_sys::ExecCheckPermissions((*planned).rtable, (*planned).permInfos, true) };
}

/// The values of parameters `used` (1-based), as text with their types' names; unused
/// numbers below the highest become NULL text, so `$n` keeps its number.
unsafe fn parameters(params: pg_sys::ParamListInfo, used: &[i32]) -> Vec<Param> {
    let highest = used.iter().copied().max().unwrap_or(0).max(0) as usize;
    let mut out = vec![
        Param {
            type_name: "text".into(),
            text: None,
        };
        highest
    ];
    if params.is_null() {
        return out;
    }
    with_pinned_io("pg_catalog", || {
        for &id in used {
            // SAFETY: ids come from the statement's own Param nodes; PL/pgSQL supplies values
            // through paramFetch, the protocol through the array (as copyParamList reads them).
            unsafe {
                if id < 1 || id > (*params).numParams {
                    continue;
                }
                let mut workspace = pg_sys::ParamExternData::default();
                let data = match (*params).paramFetch {
                    Some(fetch) => fetch(params, id, false, &mut workspace),
                    None => (*params).params.as_mut_ptr().add(id as usize - 1),
                };
                if data.is_null() || (*data).ptype == pg_sys::Oid::INVALID {
                    continue;
                }
                let type_name = CStr::from_ptr(pg_sys::format_type_be_qualified((*data).ptype))
                    .to_string_lossy()
                    .into_owned();
                let text = (!(*data).isnull).then(|| {
                    let (mut output, mut varlena) = (pg_sys::Oid::INVALID, false);
                    pg_sys::getTypeOutputInfo((*data).ptype, &mut output, &mut varlena);
                    let text = pg_sys::OidOutputFunctionCall(output, (*data).value);
                    CStr::from_ptr(text).to_string_lossy().into_owned()
                });
                out[id as usize - 1] = Param { type_name, text };
            }
        }
    });
    out
}

fn setting(name: &CStr) -> String {
    // SAFETY: a GUC read by name; returns a palloc'd string.
    unsafe {
        let value = pg_sys::GetConfigOptionByName(name.as_ptr(), std::ptr::null_mut(), false);
        CStr::from_ptr(value).to_string_lossy().into_owned()
    }
}

/// The range table entry at 1-based `index`.
unsafe fn rte(rtable: *mut pg_sys::List, index: usize) -> *mut pg_sys::RangeTblEntry {
    // SAFETY: index comes from the same query's result relation.
    unsafe { (*(*rtable).elements.add(index - 1)).ptr_value as *mut pg_sys::RangeTblEntry }
}
