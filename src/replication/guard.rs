//! Keeps writes to replicated tables on the log: an INSERT, UPDATE, DELETE or MERGE whose
//! target is a replicated table, run anywhere but in the applier, is refused after the
//! executor checked its privileges and before it changes a row. Until writes are captured
//! transparently, they go through `paxos_apply_and_append`; a write applied on one member
//! only would make the members diverge for good.
use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;

static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;

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

fn extension_present() -> bool {
    // SAFETY: a catalog lookup by name that returns InvalidOid when missing.
    unsafe { pg_sys::get_namespace_oid(c"pgp_metadata".as_ptr(), true) != pg_sys::Oid::INVALID }
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
