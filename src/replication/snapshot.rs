//! Giving a statement a new snapshot after its executor snapshot was taken but before the
//! executor uses it (`../shared/pg-internals.md` §1.2). PostgreSQL offers no hook before the
//! snapshot of an extended-protocol or PL/pgSQL statement, so the hook that applies the log
//! replaces the statement's snapshot, and the active one, which is the same object, in one
//! step: the statement and everything it runs (functions, triggers) then read the same, new
//! snapshot.
use pgrx::pg_sys;

/// Whether `refresh` can replace `query`'s snapshot: at READ COMMITTED, outside parallel mode,
/// for a snapshot made for this statement alone (active once, registered once by the query).
/// Cursors, SQL `EXECUTE` of a SELECT and read-only functions run on an older snapshot that
/// others hold too; those statements are checked with `sees_applied` instead.
pub fn refreshable(query: *mut pg_sys::QueryDesc) -> bool {
    // SAFETY: reads of the snapshot stack and the statement's snapshot, both valid in
    // ExecutorStart.
    unsafe {
        if pg_sys::XactIsoLevel != pg_sys::XACT_READ_COMMITTED as i32
            || pg_sys::IsInParallelMode()
            || !pg_sys::ActiveSnapshotSet()
        {
            return false;
        }
        let snapshot = (*query).snapshot;
        let portal = pg_sys::ActivePortal;
        !snapshot.is_null()
            && pg_sys::GetActiveSnapshot() == snapshot
            && (*snapshot).active_count == 1
            && (*snapshot).regd_count == 1
            && (portal.is_null() || (*portal).portalSnapshot != snapshot)
    }
}

/// Makes what this transaction wrote so far and what other transactions committed visible
/// to `query`, which has not started yet. Returns false, changing nothing, when the
/// snapshot is not `refreshable`.
pub fn refresh(query: *mut pg_sys::QueryDesc) -> bool {
    if !refreshable(query) {
        return false;
    }
    // SAFETY: the stack depth is unchanged (one pop, one push), and the statement's
    // registration moves from the old snapshot to the new one, under the same resource owner
    // that registered it (the caller's, restored after every subtransaction of ours).
    unsafe {
        pg_sys::CommandCounterIncrement();
        let old = (*query).snapshot;
        pg_sys::PopActiveSnapshot();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        pg_sys::UnregisterSnapshot(old);
        (*query).snapshot = pg_sys::RegisterSnapshot(pg_sys::GetActiveSnapshot());
    }
    true
}

/// The applied position of `group` as `snapshot` sees it.
pub fn sees_applied(snapshot: pg_sys::Snapshot, group: &str) -> i64 {
    let sql = format!(
        "SELECT last_applied_round FROM pgp_metadata.\"group\" WHERE group_id = {}",
        crate::connstr::quote_literal(group)
    );
    let sql = std::ffi::CString::new(sql).unwrap_or_default();
    // SAFETY: a read-only SPI query, which runs on the active snapshot: the one pushed here.
    unsafe {
        pg_sys::PushActiveSnapshot(snapshot);
        pg_sys::SPI_connect();
        let mut applied = -1;
        if pg_sys::SPI_execute(sql.as_ptr(), true, 1) == pg_sys::SPI_OK_SELECT as i32
            && pg_sys::SPI_processed == 1
        {
            let table = pg_sys::SPI_tuptable;
            let mut null = true;
            let datum = pg_sys::SPI_getbinval(*(*table).vals, (*table).tupdesc, 1, &mut null);
            if !null {
                applied = datum.value() as i64;
            }
        }
        pg_sys::SPI_finish();
        pg_sys::PopActiveSnapshot();
        applied
    }
}
