//! What a client is told about a write that was chosen. Once its entry is chosen, a write
//! takes effect on every member whatever happens here, so an error after that point must not
//! read as "nothing happened": unless the statement itself failed in a way every member
//! repeats (a constraint or data error, which is then its true outcome everywhere), the error
//! is turned into SQLSTATE 40003 (statement_completion_unknown) saying the write will take
//! effect. The same goes for a write rolled back to a savepoint after it ran: the transaction
//! then fails at commit with 40003.
use std::cell::{Cell, RefCell};
use std::ffi::CString;

use pgrx::pg_sys;
use pgrx::prelude::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// Being appended: it may end up chosen even if this backend never hears of it.
    Appending,
    /// Chosen; the statement has not started.
    Appended,
    /// The statement is running as its round's apply.
    Running,
    /// The statement finished.
    Done,
    /// The statement failed with an error every member hits the same way.
    FailedEverywhere,
}

struct Pending {
    group: String,
    /// Whether a foreign key error of this write is the same on every member (see
    /// `apply::same_everywhere`), known before it runs: nothing is looked up once it failed.
    fks_inside: bool,
    round: i64,
    subtransaction: pg_sys::SubTransactionId,
    stage: Stage,
    query: *mut pg_sys::QueryDesc,
    /// `leader::sends()` when the append began.
    sends_before: u64,
}

impl Pending {
    /// Whether the entry may be chosen: not while it never left this backend.
    fn may_be_chosen(&self) -> bool {
        self.stage != Stage::Appending || crate::leader::sends() != self.sends_before
    }
}

thread_local! {
    /// The writes this transaction had chosen.
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    /// A chosen write that ran and was then rolled back to a savepoint.
    static ROLLED_BACK: RefCell<Option<(String, i64)>> = const { RefCell::new(None) };
    /// Whether the current transaction was opened by BEGIN (or chained to one that was).
    static EXPLICIT: Cell<bool> = const { Cell::new(false) };
    /// Whether the transaction that is ending chains a new explicit one.
    static CHAINED: Cell<bool> = const { Cell::new(false) };
}

/// Notes a transaction control statement about to run.
pub fn transaction_statement(statement: *mut pg_sys::TransactionStmt) {
    use pg_sys::TransactionStmtKind::*;
    // SAFETY: a TransactionStmt from the utility hook.
    let (kind, chain) = unsafe { ((*statement).kind, (*statement).chain) };
    match kind {
        TRANS_STMT_BEGIN | TRANS_STMT_START => EXPLICIT.with(|e| e.set(true)),
        TRANS_STMT_COMMIT | TRANS_STMT_ROLLBACK if chain => CHAINED.with(|c| c.set(true)),
        _ => {}
    }
}

/// Whether this runs inside BEGIN ... COMMIT (a multi-statement query string or a DO block
/// run on its own is not).
pub fn in_explicit_block() -> bool {
    EXPLICIT.with(Cell::get)
}

static mut PREV_EMIT_LOG: pg_sys::emit_log_hook_type = None;

/// Registers the callbacks; called from `_PG_init`.
pub fn init() {
    // SAFETY: registration from _PG_init; the previous log hook is kept and called.
    unsafe {
        pg_sys::RegisterXactCallback(Some(transaction_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subtransaction_event), std::ptr::null_mut());
        PREV_EMIT_LOG = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
    }
}

/// Runs `append`, an append to `group`'s log, so that an error while it is in flight (a
/// cancel, a lost majority) reads as an unknown outcome: the entry may be chosen even so.
/// An error `append` returns before sending anything is its outcome. A write of this
/// transaction (`capture`) stays noted once chosen.
pub fn appending(
    group: &str,
    keep: bool,
    append: impl FnOnce() -> crate::error::Result<i64>,
) -> crate::error::Result<i64> {
    // SAFETY: plain accessor of the transaction state.
    let subtransaction = unsafe { pg_sys::GetCurrentSubTransactionId() };
    PENDING.with(|p| {
        p.borrow_mut().push(Pending {
            group: group.to_owned(),
            fks_inside: false,
            round: -1,
            subtransaction,
            stage: Stage::Appending,
            query: std::ptr::null_mut(),
            sends_before: crate::leader::sends(),
        })
    });
    let result = append();
    let appending = |p: &Pending| p.stage == Stage::Appending && p.group == group;
    match &result {
        Ok(round) if keep => update(appending, |p| {
            p.round = *round;
            p.stage = Stage::Appended;
        }),
        // Told as such: PaxosError::OutcomeUnknown is 40003 already.
        Err(crate::error::PaxosError::OutcomeUnknown { .. }) => {}
        _ => PENDING.with(|p| p.borrow_mut().retain(|p| !appending(p))),
    }
    result
}

/// Notes that the statement of `round` now runs as `query`; `fks_inside` as
/// `apply::same_everywhere` takes it.
pub fn running(round: i64, query: *mut pg_sys::QueryDesc, fks_inside: bool) {
    update(
        |p| p.round == round && p.stage == Stage::Appended,
        |p| {
            p.stage = Stage::Running;
            p.query = query;
            p.fks_inside = fks_inside;
        },
    );
}

/// Whether `query` is a captured write that is running.
pub fn is_running(query: *mut pg_sys::QueryDesc) -> bool {
    PENDING.with(|p| {
        p.borrow()
            .iter()
            .any(|p| p.query == query && p.stage == Stage::Running)
    })
}

/// The group of the captured write running in this backend, if one is: what it sets off
/// (triggers, functions, rules) is part of its round's apply, neither captured again nor
/// fenced.
pub fn captured_write_group() -> Option<String> {
    PENDING.with(|p| {
        p.borrow()
            .iter()
            .find(|p| p.stage == Stage::Running)
            .map(|p| p.group.clone())
    })
}

/// The round of the captured write running in this backend, if one is.
pub fn running_round() -> Option<i64> {
    PENDING.with(|p| {
        p.borrow()
            .iter()
            .find(|p| p.stage == Stage::Running)
            .map(|p| p.round)
    })
}

/// Notes that `query` finished; returns the group it wrote to.
pub fn finished(query: *mut pg_sys::QueryDesc) -> Option<String> {
    let group = PENDING.with(|p| {
        p.borrow()
            .iter()
            .find(|p| p.query == query && p.stage == Stage::Running)
            .map(|p| p.group.clone())
    });
    update(
        |p| p.query == query && p.stage == Stage::Running,
        |p| p.stage = Stage::Done,
    );
    group
}

/// Notes that `query` failed with `sqlstate`.
pub fn failed(query: *mut pg_sys::QueryDesc, sqlstate: &str) {
    update(
        |p| p.query == query && p.stage == Stage::Running,
        |p| {
            if super::apply::same_everywhere(sqlstate, || Ok(p.fks_inside)) {
                p.stage = Stage::FailedEverywhere;
            }
        },
    );
}

/// Whether this transaction has written to `group` (and so holds its applied position).
pub fn writing(group: &str) -> bool {
    PENDING.with(|p| p.borrow().iter().any(|p| p.group == group))
}

fn update(which: impl Fn(&Pending) -> bool, change: impl Fn(&mut Pending)) {
    PENDING.with(|p| {
        p.borrow_mut()
            .iter_mut()
            .filter(|p| which(p))
            .for_each(change)
    });
}

/// A chosen (or maybe chosen) entry whose outcome an error would hide: any but a write that
/// failed everywhere or an append that never left this backend.
fn unreported() -> Option<(String, i64)> {
    PENDING.with(|p| {
        p.borrow()
            .iter()
            .find(|p| p.stage != Stage::FailedEverywhere && p.may_be_chosen())
            .map(|p| (p.group.clone(), p.round))
    })
}

/// What happens to the entry at `round` (-1: appended at a round not known here).
fn will_take_effect(group: &str, round: i64, what: &str) -> String {
    if round < 0 {
        format!(
            "the entry appended to paxos group \"{group}\" may or may not have been chosen \
             (and if it was, it takes effect on every member), but {what}"
        )
    } else {
        format!(
            "the write chosen at round {round} of paxos group \"{group}\" will take effect \
             on every member, but {what}"
        )
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn transaction_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT => {
            if let Some((group, round)) = ROLLED_BACK.with(|r| r.borrow().clone()) {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN,
                    will_take_effect(
                        &group,
                        round,
                        "this transaction rolled it back to a savepoint and cannot commit"
                    )
                );
            }
        }
        XACT_EVENT_COMMIT
        | XACT_EVENT_ABORT
        | XACT_EVENT_PREPARE
        | XACT_EVENT_PARALLEL_COMMIT
        | XACT_EVENT_PARALLEL_ABORT => {
            PENDING.with(|p| p.borrow_mut().clear());
            ROLLED_BACK.with(|r| r.borrow_mut().take());
            EXPLICIT.with(|e| e.set(CHAINED.with(|c| c.replace(false))));
        }
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn subtransaction_event(
    event: pg_sys::SubXactEvent::Type,
    subtransaction: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event != pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        return;
    }
    PENDING.with(|p| {
        let mut pending = p.borrow_mut();
        for undone in pending
            .iter()
            .filter(|p| p.subtransaction >= subtransaction)
        {
            if undone.stage != Stage::FailedEverywhere && undone.may_be_chosen() {
                ROLLED_BACK.with(|r| {
                    r.borrow_mut()
                        .get_or_insert_with(|| (undone.group.clone(), undone.round));
                });
            }
        }
        pending.retain(|p| p.subtransaction < subtransaction);
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn emit_log(error: *mut pg_sys::ErrorData) {
    // SAFETY: the hook contract: a valid ErrorData being reported, in its own memory context
    // (current here), where the new message is allocated.
    unsafe {
        let unknown = pgrx::PgSqlErrorCode::ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN as i32;
        if (*error).elevel >= pgrx::PgLogLevel::ERROR as i32 && (*error).sqlerrcode != unknown {
            if let Some((group, round)) = unreported() {
                let original = if (*error).message.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr((*error).message)
                        .to_string_lossy()
                        .into_owned()
                };
                let message = will_take_effect(
                    &group,
                    round,
                    &format!("its statement failed here: {original}"),
                );
                let message = CString::new(message).unwrap_or_default();
                (*error).message = pg_sys::pstrdup(message.as_ptr());
                (*error).sqlerrcode = unknown;
            }
        }
        if let Some(prev) = PREV_EMIT_LOG {
            prev(error);
        }
    }
}
