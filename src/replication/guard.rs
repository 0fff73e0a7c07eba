//! The hooks and event triggers through which replicated tables are kept on the log.
//!
//! - planner: writes to replicated tables are checked and deparsed (`capture::plan`);
//! - ExecutorStart: such writes are appended and run as their round's apply
//!   (`capture::start`); reads of replicated tables are fenced (`reads::fence`); what a
//!   round's apply sets off (triggers, foreign keys, functions) stays inside its group
//!   (`inside_group`);
//! - ExecutorRun / ExecutorFinish: how a captured write ended (`outcome`);
//! - ProcessUtility: a statement that changes a replicated table is replicated as typed when
//!   it can be (`ddl`), and refused otherwise: made on one member only, it would make the
//!   members diverge for good (a trigger or a policy there alone changes what a write does
//!   there) or stop their apply (a write its author may not replay);
//! - event triggers, the catch-all for what the hook cannot name: any command that ends up
//!   changing a replicated table, one of its indexes, triggers, rules, policies,
//!   constraints, defaults or sequences, or its place in an inheritance tree
//!   (`ddl_command_end`), or that drops one of them (`sql_drop`), outside the log.
use super::context::{self, exempt, is_exempt, Scope};
use super::{capture, cells, ddl, durability, outcome, reads, registry};

use pgrx::pg_sys;
use pgrx::prelude::*;

static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// Installs the hooks; called from `_PG_init`.
pub fn init() {
    // SAFETY: the postmaster loads preloaded libraries once, single-threaded; each previous
    // hook is kept and called.
    unsafe {
        PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(planner);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
        PREV_EXECUTOR_FINISH = pg_sys::ExecutorFinish_hook;
        pg_sys::ExecutorFinish_hook = Some(executor_finish);
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    statement: *mut pg_sys::PlannedStmt,
    query: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    environment: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    completion: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: the hook contract: a valid utility statement; the previous hook or the
    // standard function runs it once this check passed.
    unsafe {
        let node = (*statement).utilityStmt;
        if !node.is_null() && (*node).type_ == pg_sys::NodeTag::T_TransactionStmt {
            outcome::transaction_statement(node as *mut pg_sys::TransactionStmt);
        } else {
            durability::other_work();
        }
        if !is_exempt() {
            let (what, targets) = utility_targets((*statement).utilityStmt);
            if !targets.is_empty() {
                if let Some(table) = replicated_among(&targets) {
                    if ddl::replicable(node) {
                        match ddl::replicate(statement, query, context, &targets, completion) {
                            Ok(_) => return,
                            Err(error) => error.raise(),
                        }
                    }
                    ereport!(
                        ERROR,
                        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                        format!("{what} on replicated table {table} cannot be replicated"),
                        "Replicated tables keep their name, schema and existence, and take rows \
                         through INSERT (not COPY FROM); GRANT names them one by one. ALTER \
                         TABLE, CREATE INDEX, GRANT, REVOKE, TRUNCATE, triggers, rules and \
                         policies on them are replicated as typed."
                    );
                }
            }
        }
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(
                statement,
                query,
                read_only_tree,
                context,
                params,
                environment,
                dest,
                completion,
            ),
            None => pg_sys::standard_ProcessUtility(
                statement,
                query,
                read_only_tree,
                context,
                params,
                environment,
                dest,
                completion,
            ),
        }
    }
}

/// What a utility statement is called, and the existing tables it would change.
unsafe fn utility_targets(node: *mut pg_sys::Node) -> (&'static str, Vec<pg_sys::Oid>) {
    use pg_sys::NodeTag::*;
    // SAFETY: the node's tag says which statement struct it is.
    unsafe {
        if node.is_null() {
            return ("", Vec::new());
        }
        let one = |rv: *mut pg_sys::RangeVar| vec![table_of(relation(rv))];
        match (*node).type_ {
            T_TruncateStmt => {
                let list = (*(node as *mut pg_sys::TruncateStmt)).relations;
                let tables = cells(list).map(|rv| relation(rv as *mut pg_sys::RangeVar));
                ("TRUNCATE", tables.collect())
            }
            T_CopyStmt if (*(node as *mut pg_sys::CopyStmt)).is_from => (
                "COPY FROM",
                one((*(node as *mut pg_sys::CopyStmt)).relation),
            ),
            T_AlterTableStmt => (
                "ALTER TABLE",
                one((*(node as *mut pg_sys::AlterTableStmt)).relation),
            ),
            T_RenameStmt => renamed(node as *mut pg_sys::RenameStmt),
            T_AlterObjectSchemaStmt => {
                let moved = node as *mut pg_sys::AlterObjectSchemaStmt;
                if (*moved).relation.is_null() {
                    ("", Vec::new())
                } else {
                    ("ALTER ... SET SCHEMA", one((*moved).relation))
                }
            }
            T_IndexStmt => (
                "CREATE INDEX",
                one((*(node as *mut pg_sys::IndexStmt)).relation),
            ),
            T_CreateTrigStmt => (
                "CREATE TRIGGER",
                one((*(node as *mut pg_sys::CreateTrigStmt)).relation),
            ),
            T_RuleStmt => (
                "CREATE RULE",
                one((*(node as *mut pg_sys::RuleStmt)).relation),
            ),
            T_CreatePolicyStmt => (
                "CREATE POLICY",
                one((*(node as *mut pg_sys::CreatePolicyStmt)).table),
            ),
            T_AlterPolicyStmt => (
                "ALTER POLICY",
                one((*(node as *mut pg_sys::AlterPolicyStmt)).table),
            ),
            T_DropStmt => dropped(node as *mut pg_sys::DropStmt),
            T_GrantStmt => granted(node as *mut pg_sys::GrantStmt),
            T_AlterExtensionContentsStmt => {
                let change = node as *mut pg_sys::AlterExtensionContentsStmt;
                if (*change).objtype == pg_sys::ObjectType::OBJECT_TABLE {
                    let names = (*change).object as *mut pg_sys::List;
                    (
                        "ALTER EXTENSION ... ADD/DROP TABLE",
                        one(pg_sys::makeRangeVarFromNameList(names)),
                    )
                } else {
                    ("", Vec::new())
                }
            }
            T_ReassignOwnedStmt => (
                "REASSIGN OWNED",
                registry::replicated_reached_by(&roles(
                    (*(node as *mut pg_sys::ReassignOwnedStmt)).roles,
                )),
            ),
            T_DropOwnedStmt => (
                "DROP OWNED",
                registry::replicated_reached_by(&roles(
                    (*(node as *mut pg_sys::DropOwnedStmt)).roles,
                )),
            ),
            _ => ("", Vec::new()),
        }
    }
}

/// The roles a list of RoleSpecs names (those that exist).
unsafe fn roles(list: *mut pg_sys::List) -> Vec<pg_sys::Oid> {
    // SAFETY: RoleSpec nodes; a missing role is skipped (the statement reports it).
    unsafe { cells(list) }
        .map(|spec| unsafe { pg_sys::get_rolespec_oid(spec as *const pg_sys::RoleSpec, true) })
        .filter(|role| *role != pg_sys::Oid::INVALID)
        .collect()
}

/// The replicated tables in the schemas `names` (String nodes) lists.
unsafe fn in_schemas(names: impl Iterator<Item = *mut std::ffi::c_void>) -> Vec<pg_sys::Oid> {
    // SAFETY: String nodes.
    names
        .flat_map(|name| unsafe {
            let schema = std::ffi::CStr::from_ptr((*(name as *mut pg_sys::String)).sval);
            registry::replicated_in_schema(&schema.to_string_lossy())
        })
        .collect()
}

/// The tables a rename changes: a table (or one of its columns, constraints, triggers,
/// rules, policies), or every table of a renamed schema.
unsafe fn renamed(rename: *mut pg_sys::RenameStmt) -> (&'static str, Vec<pg_sys::Oid>) {
    // SAFETY: a RenameStmt names a relation, or for a schema its old name in `subname`.
    unsafe {
        if (*rename).renameType == pg_sys::ObjectType::OBJECT_SCHEMA {
            let name = (*rename).subname;
            if name.is_null() {
                return ("", Vec::new());
            }
            let schema = std::ffi::CStr::from_ptr(name).to_string_lossy();
            return (
                "ALTER SCHEMA ... RENAME",
                registry::replicated_in_schema(&schema),
            );
        }
        let rv = (*rename).relation;
        (
            "ALTER ... RENAME",
            if rv.is_null() {
                Vec::new()
            } else {
                vec![table_of(relation(rv))]
            },
        )
    }
}

/// The tables a DROP removes, or whose indexes, triggers, rules or policies it removes.
unsafe fn dropped(drop: *mut pg_sys::DropStmt) -> (&'static str, Vec<pg_sys::Oid>) {
    use pg_sys::ObjectType::*;
    // SAFETY: a DropStmt: `objects` holds one name list per object; a trigger, rule or
    // policy is named by its table's name followed by its own, a schema by a String.
    unsafe {
        if (*drop).removeType == OBJECT_SCHEMA {
            return ("DROP SCHEMA", in_schemas(cells((*drop).objects)));
        }
        if (*drop).removeType == OBJECT_INDEX {
            let tables = cells((*drop).objects)
                .map(|names| table_of(relation(pg_sys::makeRangeVarFromNameList(names as _))));
            return ("DROP INDEX", tables.collect());
        }
        let (what, table_name_only) = match (*drop).removeType {
            OBJECT_TABLE => ("DROP TABLE", true),
            OBJECT_TRIGGER => ("DROP TRIGGER", false),
            OBJECT_RULE => ("DROP RULE", false),
            OBJECT_POLICY => ("DROP POLICY", false),
            _ => return ("", Vec::new()),
        };
        let tables = cells((*drop).objects).filter_map(|names| {
            let mut names = names as *mut pg_sys::List;
            if !table_name_only {
                let length = pg_sys::list_length(names);
                if length < 2 {
                    return None;
                }
                names = pg_sys::list_truncate(pg_sys::list_copy(names), length - 1);
            }
            Some(relation(pg_sys::makeRangeVarFromNameList(names)))
        });
        (what, tables.collect())
    }
}

/// The tables a GRANT or REVOKE on tables changes: named ones, or all in some schemas.
unsafe fn granted(grant: *mut pg_sys::GrantStmt) -> (&'static str, Vec<pg_sys::Oid>) {
    // SAFETY: a GrantStmt on tables lists RangeVars, or schema names (String nodes) for ALL
    // TABLES IN SCHEMA.
    unsafe {
        if (*grant).objtype != pg_sys::ObjectType::OBJECT_TABLE {
            return ("", Vec::new());
        }
        let what = if (*grant).is_grant { "GRANT" } else { "REVOKE" };
        let objects = cells((*grant).objects);
        let tables = match (*grant).targtype {
            pg_sys::GrantTargetType::ACL_TARGET_OBJECT => objects
                .map(|rv| relation(rv as *mut pg_sys::RangeVar))
                .collect(),
            pg_sys::GrantTargetType::ACL_TARGET_ALL_IN_SCHEMA => in_schemas(objects),
            _ => Vec::new(),
        };
        (what, tables)
    }
}

/// The table a RangeVar names, or InvalidOid when there is none.
unsafe fn relation(rv: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    if rv.is_null() {
        return pg_sys::Oid::INVALID;
    }
    // SAFETY: a name lookup without locking that returns InvalidOid when missing.
    unsafe {
        pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::NoLock as _,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    }
}

/// The table an index belongs to; any other relation itself.
fn table_of(relation: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: catalog lookups by OID that return 0 / InvalidOid when missing.
    unsafe {
        if relation != pg_sys::Oid::INVALID
            && pg_sys::get_rel_relkind(relation) as u8 == pg_sys::RELKIND_INDEX
        {
            pg_sys::IndexGetRelation(relation, true)
        } else {
            relation
        }
    }
}

/// The first of `tables` that some group replicates, by name.
fn replicated_among(tables: &[pg_sys::Oid]) -> Option<String> {
    tables
        .iter()
        .find(|t| registry::group_of(**t).is_some())
        .map(|t| registry::relation_name(*t))
}

/// Refuses a statement that a round's apply of `group` sets off (a trigger, a foreign key
/// check or action, a function) when it reads or writes a relation other than the group's
/// replicated tables and the system catalogs: members would see different rows there. The
/// refusal is the same on every member (class 2F, skipped everywhere like a constraint
/// error), since which tables the group replicates is decided by the log.
fn inside_group(query: *mut pg_sys::QueryDesc, group: &str) -> crate::error::Result<()> {
    // SAFETY: a QueryDesc about to start: its plan's flat range table lists every relation.
    unsafe {
        let planned = (*query).plannedstmt;
        if planned.is_null() {
            return Ok(());
        }
        let writes = (*planned).commandType != pg_sys::CmdType::CMD_SELECT;
        for entry in cells((*planned).rtable) {
            let entry = entry as *mut pg_sys::RangeTblEntry;
            let relation = (*entry).relid;
            if (*entry).rtekind != pg_sys::RTEKind::RTE_RELATION
                || u32::from(relation) < pg_sys::FirstNormalObjectId
                || (*entry).relkind as u8 == pg_sys::RELKIND_VIEW
                || registry::group_of(relation).as_deref() == Some(group)
            {
                continue;
            }
            return Err(crate::error::PaxosError::OutsideGroup {
                group: group.to_owned(),
                relation: registry::relation_name(relation),
                writes,
            });
        }
    }
    Ok(())
}

/// Whether the hooks leave this backend alone: while it applies the log or does pg_paxos's
/// own work, in parallel workers (their leader did the work), and in databases without
/// pg_paxos.
fn bypassed() -> bool {
    // SAFETY: a plain global of the parallel machinery.
    is_exempt() || unsafe { pg_sys::ParallelWorkerNumber >= 0 } || !registry::extension_present()
}

#[pg_guard]
unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: i32,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: the hook contract; the previous hook or the standard planner plans.
    let plan = |parse| unsafe {
        match PREV_PLANNER {
            Some(prev) => prev(parse, query_string, cursor_options, bound_params),
            None => pg_sys::standard_planner(parse, query_string, cursor_options, bound_params),
        }
    };
    // SAFETY: an analysed Query.
    let writes =
        unsafe { (*parse).commandType != pg_sys::CmdType::CMD_SELECT || (*parse).hasModifyingCTE };
    if !writes || bypassed() {
        return plan(parse);
    }
    capture::plan(parse, plan)
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query: *mut pg_sys::QueryDesc, eflags: i32) {
    let explain_only = eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0;
    if !explain_only {
        // A statement set off by a round's apply (the writer's or a replay) stays inside the
        // group; any other is captured when it writes, fenced when it reads.
        let running = match context::scope() {
            Scope::Applying(group) => Some(group),
            Scope::User => outcome::captured_write_group(),
            Scope::Own => None,
        };
        let result = match running {
            Some(group) => {
                durability::other_work();
                inside_group(query, &group)
            }
            None if bypassed() => Ok(()),
            None => match capture::target_group(query) {
                Some(group) => capture::start(query, &group).map(|_| durability::captured()),
                None => {
                    durability::other_work();
                    reads::fence(query)
                }
            },
        };
        if let Err(error) = result {
            error.raise();
        }
    }
    // SAFETY: the hook contract: the previous hook or the standard function starts it.
    unsafe {
        match PREV_EXECUTOR_START {
            Some(prev) => prev(query, eflags),
            None => pg_sys::standard_ExecutorStart(query, eflags),
        }
    }
}

#[cfg(not(feature = "pg18"))]
#[pg_guard]
unsafe extern "C-unwind" fn executor_run(
    query: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    // SAFETY: the hook contract: the previous hook or the standard function runs it.
    let run = || unsafe {
        match PREV_EXECUTOR_RUN {
            Some(prev) => prev(query, direction, count, execute_once),
            None => pg_sys::standard_ExecutorRun(query, direction, count, execute_once),
        }
    };
    watched(query, run);
}

/// PostgreSQL 18 dropped ExecutorRun's `execute_once`.
#[cfg(feature = "pg18")]
#[pg_guard]
unsafe extern "C-unwind" fn executor_run(
    query: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
) {
    // SAFETY: the hook contract: the previous hook or the standard function runs it.
    let run = || unsafe {
        match PREV_EXECUTOR_RUN {
            Some(prev) => prev(query, direction, count),
            None => pg_sys::standard_ExecutorRun(query, direction, count),
        }
    };
    watched(query, run);
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_finish(query: *mut pg_sys::QueryDesc) {
    // SAFETY: the hook contract: the previous hook or the standard function finishes it.
    let finish = || unsafe {
        match PREV_EXECUTOR_FINISH {
            Some(prev) => prev(query),
            None => pg_sys::standard_ExecutorFinish(query),
        }
    };
    watched(query, finish);
    if let Some(group) = outcome::finished(query) {
        // What the statement drew from the table's sequences is part of its round's apply.
        let recorded = super::privileged(|| exempt(|| super::sequences::record(&group)));
        if let Err(error) = recorded {
            error.raise();
        }
    }
}

/// Runs `step` of `query`; when `query` is a captured write, notes how an error ended it.
fn watched(query: *mut pg_sys::QueryDesc, step: impl FnOnce()) {
    if !outcome::is_running(query) {
        return step();
    }
    pg_sys::PgTryBuilder::new(std::panic::AssertUnwindSafe(step))
        .catch_others(|error| {
            outcome::failed(query, &super::statement::sqlstate(&error));
            error.rethrow()
        })
        .execute()
}

#[pgrx::pg_schema]
mod pgp_metadata {
    /// Whether this backend runs a logged statement (the drop guard lets those through).
    #[pgrx::pg_extern(volatile, parallel_safe)]
    fn paxos_exempt() -> bool {
        super::is_exempt()
    }
}

// The catch-alls, for what the hook cannot name. They run as the extension's owner (the caller
// needs no rights on pg_paxos's catalog), fire whatever session_replication_role says (ENABLE
// ALWAYS), and let logged statements through (`paxos_exempt`).
//
// - sql_drop: whatever the statement (DROP OWNED, DROP FUNCTION ... CASCADE, DROP TYPE ...
//   CASCADE, ...), a replicated table or one of its columns, constraints, defaults,
//   triggers, rules or policies dropped on this member alone is refused.
// - ddl_command_end: a command that created or changed an object belonging to a replicated
//   table (the table, an index, a sequence it owns, a trigger, rule, policy, constraint or
//   default), or a table that inherits from one or that one inherits from (ALTER TABLE p
//   ATTACH PARTITION t, CREATE TABLE c () INHERITS (t)), is refused; so is a foreign key
//   that joins a table of a group to one outside it. COMMENT is let through: it changes no
//   data and no behaviour.
pgrx::extension_sql!(
    r#"
CREATE FUNCTION pgp_metadata.paxos_guard_drops() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    gone text;
BEGIN
    IF pgp_metadata.paxos_exempt() THEN
        RETURN;
    END IF;
    SELECT pg_catalog.format('%s of replicated table %I.%I', d.object_type, r.schema_name,
                             r.table_name) INTO gone
    FROM pg_catalog.pg_event_trigger_dropped_objects() d
    JOIN pgp_metadata.replicated_tables r
      ON r.schema_name = d.address_names[1] AND r.table_name = d.address_names[2]
    WHERE d.object_type IN ('table', 'table column', 'table constraint', 'default value',
                            'trigger', 'rule', 'policy')
    LIMIT 1;
    IF gone IS NOT NULL THEN
        RAISE EXCEPTION 'this statement would drop % on this member only', gone
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Drop columns, constraints, triggers, rules and policies of a replicated table with ALTER TABLE or DROP naming them, which is replicated; replicated tables themselves cannot be dropped.';
    END IF;
END
$$;
CREATE EVENT TRIGGER paxos_guard_drops ON sql_drop
    EXECUTE FUNCTION pgp_metadata.paxos_guard_drops();
ALTER EVENT TRIGGER paxos_guard_drops ENABLE ALWAYS;

-- The table an object created or changed by a command belongs to (the object itself when it
-- is a table).
CREATE FUNCTION pgp_metadata.paxos_owning_table(classid oid, objid oid) RETURNS oid
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE $1
        WHEN 'pg_catalog.pg_class'::regclass THEN coalesce(
            (SELECT i.indrelid FROM pg_catalog.pg_index i WHERE i.indexrelid = $2),
            (SELECT p.refobjid FROM pg_catalog.pg_depend p
             JOIN pg_catalog.pg_class s ON s.oid = p.objid AND s.relkind = 'S'
             WHERE p.classid = 'pg_catalog.pg_class'::regclass AND p.objid = $2
               AND p.refclassid = 'pg_catalog.pg_class'::regclass AND p.deptype IN ('a', 'i')
             LIMIT 1),
            $2)
        WHEN 'pg_catalog.pg_trigger'::regclass THEN
            (SELECT t.tgrelid FROM pg_catalog.pg_trigger t WHERE t.oid = $2)
        WHEN 'pg_catalog.pg_rewrite'::regclass THEN
            (SELECT r.ev_class FROM pg_catalog.pg_rewrite r WHERE r.oid = $2)
        WHEN 'pg_catalog.pg_policy'::regclass THEN
            (SELECT p.polrelid FROM pg_catalog.pg_policy p WHERE p.oid = $2)
        WHEN 'pg_catalog.pg_constraint'::regclass THEN
            (SELECT c.conrelid FROM pg_catalog.pg_constraint c WHERE c.oid = $2)
        WHEN 'pg_catalog.pg_attrdef'::regclass THEN
            (SELECT a.adrelid FROM pg_catalog.pg_attrdef a WHERE a.oid = $2)
    END
$$;

CREATE FUNCTION pgp_metadata.paxos_guard_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    command text;
    reached text;
BEGIN
    IF pgp_metadata.paxos_exempt() THEN
        RETURN;
    END IF;
    WITH reached AS (
        SELECT d.command_tag AS command,
               pgp_metadata.paxos_owning_table(d.classid, d.objid) AS relid
        FROM pg_catalog.pg_event_trigger_ddl_commands() d
        WHERE d.objid IS NOT NULL AND d.command_tag <> 'COMMENT')
    SELECT r.command, pg_catalog.format('%I.%I', t.schema_name, t.table_name)
      INTO command, reached
    FROM reached r
    JOIN LATERAL (SELECT r.relid AS relid
                  UNION ALL SELECT i.inhparent FROM pg_catalog.pg_inherits i
                            WHERE i.inhrelid = r.relid
                  UNION ALL SELECT i.inhrelid FROM pg_catalog.pg_inherits i
                            WHERE i.inhparent = r.relid) near ON true
    JOIN pgp_metadata.replicated_tables t ON t.table_oid = near.relid
    LIMIT 1;
    IF reached IS NOT NULL THEN
        RAISE EXCEPTION '% would change replicated table % on this member only', command, reached
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Type ALTER TABLE, CREATE INDEX, GRANT, REVOKE, TRUNCATE, and CREATE or DROP TRIGGER, RULE, POLICY or INDEX on the replicated table itself: they are replicated. Tables cannot inherit from replicated tables or become their parents.';
    END IF;

    SELECT pg_catalog.format('foreign key %I of %s references %s', k.conname,
                             k.conrelid::regclass, k.confrelid::regclass)
      INTO reached
    FROM pg_catalog.pg_event_trigger_ddl_commands() d
    JOIN pg_catalog.pg_constraint k ON k.contype = 'f'
     AND pgp_metadata.paxos_owning_table(d.classid, d.objid) IN (k.conrelid, k.confrelid)
    WHERE (SELECT group_id FROM pgp_metadata.replicated_tables WHERE table_oid = k.conrelid)
          IS DISTINCT FROM
          (SELECT group_id FROM pgp_metadata.replicated_tables WHERE table_oid = k.confrelid)
    LIMIT 1;
    IF reached IS NOT NULL THEN
        RAISE EXCEPTION '% and crosses the edge of a paxos group', reached
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'A foreign key that involves a replicated table must join two tables of the same group: replicate the other table in that group first (paxos_replicate_tables replicates several at once).';
    END IF;
END
$$;
CREATE EVENT TRIGGER paxos_guard_ddl ON ddl_command_end
    EXECUTE FUNCTION pgp_metadata.paxos_guard_ddl();
ALTER EVENT TRIGGER paxos_guard_ddl ENABLE ALWAYS;
"#,
    name = "guards",
    requires = [pgp_metadata::paxos_exempt],
);
