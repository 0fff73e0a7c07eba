//! Keeps changes to replicated tables on the log: an INSERT, UPDATE, DELETE or MERGE whose
//! target is a replicated table, run anywhere but in the applier, is refused after the
//! executor checked its privileges and before it changes a row; so are TRUNCATE, COPY FROM,
//! ALTER TABLE, renaming, CREATE INDEX and DROP TABLE on one. Until they are captured
//! transparently, they go through `paxos_apply_and_append`; a change made on one member only
//! would make the members diverge for good (a unique index on one member only, say, makes
//! writes fail there alone).
use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;

static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

thread_local! {
    /// Set while this backend runs a logged write (applying, or checking one before it is
    /// appended), and while the guard itself looks up which tables are replicated.
    static EXEMPT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with writes to replicated tables allowed; restores the previous state even when
/// `f` raises an error.
pub fn exempt<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            EXEMPT.with(|e| e.set(self.0));
        }
    }
    let _restore = Restore(EXEMPT.with(|e| e.replace(true)));
    f()
}

/// Installs the executor hook; called from `_PG_init`.
pub fn init() {
    // SAFETY: the postmaster loads preloaded libraries once, single-threaded; the previous
    // hook is kept and called first.
    unsafe {
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
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
        if !EXEMPT.with(Cell::get) {
            let (what, targets) = utility_targets((*statement).utilityStmt);
            if !targets.is_empty() && extension_present() {
                if let Some(table) = exempt(|| replicated_among(&targets)) {
                    ereport!(
                        ERROR,
                        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                        format!("{what} on replicated table {table} is not replicated"),
                        "Run it on every member through the log with paxos_apply_and_append()."
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
        let one = |rv: *mut pg_sys::RangeVar| vec![relation(rv)];
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
            T_RenameStmt => (
                "ALTER ... RENAME",
                one((*(node as *mut pg_sys::RenameStmt)).relation),
            ),
            T_IndexStmt => (
                "CREATE INDEX",
                one((*(node as *mut pg_sys::IndexStmt)).relation),
            ),
            T_DropStmt
                if (*(node as *mut pg_sys::DropStmt)).removeType
                    == pg_sys::ObjectType::OBJECT_TABLE =>
            {
                let list = (*(node as *mut pg_sys::DropStmt)).objects;
                let tables = cells(list).map(|names| {
                    relation(pg_sys::makeRangeVarFromNameList(names as *mut pg_sys::List))
                });
                ("DROP TABLE", tables.collect())
            }
            _ => ("", Vec::new()),
        }
    }
}

/// The pointers a List holds.
unsafe fn cells(list: *mut pg_sys::List) -> impl Iterator<Item = *mut std::ffi::c_void> {
    // SAFETY: a valid List (or NULL, the empty list) of pointers.
    let len = if list.is_null() {
        0
    } else {
        unsafe { (*list).length as usize }
    };
    (0..len).map(move |i| unsafe { (*(*list).elements.add(i)).ptr_value })
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

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query: *mut pg_sys::QueryDesc, eflags: i32) {
    // SAFETY: the hook contract: query is a valid QueryDesc; the previous hook or the
    // standard function initializes it (and checks privileges) first.
    unsafe {
        match PREV_EXECUTOR_START {
            Some(prev) => prev(query, eflags),
            None => pg_sys::standard_ExecutorStart(query, eflags),
        }
        if eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0 || EXEMPT.with(Cell::get) {
            return;
        }
        let targets = result_relations(query);
        if targets.is_empty() || !extension_present() {
            return;
        }
        if let Some(table) = exempt(|| replicated_among(&targets)) {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("cannot write to replicated table {table} directly"),
                "Writes to replicated tables go through the log: use paxos_apply_and_append()."
            );
        }
    }
}

/// The OIDs of the tables the statement writes to (including writable CTEs).
unsafe fn result_relations(query: *mut pg_sys::QueryDesc) -> Vec<pg_sys::Oid> {
    // SAFETY: after ExecutorStart, estate lists the result relations it opened.
    unsafe {
        let estate = (*query).estate;
        if estate.is_null() {
            return Vec::new();
        }
        let list = (*estate).es_opened_result_relations;
        if list.is_null() {
            return Vec::new();
        }
        (0..(*list).length as usize)
            .map(|i| {
                let info = (*(*list).elements.add(i)).ptr_value as *mut pg_sys::ResultRelInfo;
                (*(*info).ri_RelationDesc).rd_id
            })
            .collect()
    }
}

/// Whether this database has pg_paxos's list of replicated tables (not while the extension
/// is being created: its own script runs through these hooks).
fn extension_present() -> bool {
    // SAFETY: catalog lookups by name that return InvalidOid when missing.
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"pgp_metadata".as_ptr(), true);
        schema != pg_sys::Oid::INVALID
            && pg_sys::get_relname_relid(c"replicated_tables".as_ptr(), schema)
                != pg_sys::Oid::INVALID
    }
}

/// The first of `tables` that some group replicates, by name.
fn replicated_among(tables: &[pg_sys::Oid]) -> Option<String> {
    Spi::get_one_with_args::<String>(
        "SELECT format('%I.%I', schema_name, table_name) FROM pgp_metadata.replicated_tables \
         WHERE pg_catalog.to_regclass(format('%I.%I', schema_name, table_name)) = ANY($1) \
         LIMIT 1",
        &[tables.to_vec().into()],
    )
    .ok()
    .flatten()
}
