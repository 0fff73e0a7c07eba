//! The contexts pg_paxos runs SQL in, below every other replication module: its own catalog
//! work (`privileged`), a replayed entry (pinned settings, see `statement::run`), and the
//! flag that lets logged writes through the hooks (`exempt`).
use std::cell::{Cell, RefCell};
use std::ffi::CString;

use pgrx::pg_sys;

thread_local! {
    /// Set while this backend runs a logged write (applying, or checking one before it is
    /// appended), and while the guard itself looks up which tables are replicated.
    static EXEMPT: Cell<bool> = const { Cell::new(false) };
    /// What this backend runs right now, for `guard`'s check of nested statements.
    static SCOPE: RefCell<Scope> = const { RefCell::new(Scope::User) };
    /// The round whose entry the applier replays right now (see `paxos_write_round`).
    static REPLAYING: Cell<Option<i64>> = const { Cell::new(None) };
}

/// Runs `f` as the replay of round `round`'s entry; see `replaying`.
pub fn replaying_round<R>(round: i64, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<i64>);
    impl Drop for Restore {
        fn drop(&mut self) {
            REPLAYING.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(REPLAYING.with(|r| r.replace(Some(round))));
    f()
}

/// The round whose entry this backend replays right now, if it does.
pub fn replaying() -> Option<i64> {
    REPLAYING.with(Cell::get)
}

/// Runs `f` with writes to replicated tables allowed; restores the previous state even when
/// `f` raises an error.
pub fn exempt<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&EXEMPT, f)
}

/// Runs `f` with `flag` set; puts back what it was even when `f` raises an error.
pub fn with_flag<R>(flag: &'static std::thread::LocalKey<Cell<bool>>, f: impl FnOnce() -> R) -> R {
    struct Restore(&'static std::thread::LocalKey<Cell<bool>>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(flag, flag.with(|c| c.replace(true)));
    f()
}

/// Whether this backend runs a logged write, or pg_paxos's own lookups, right now.
pub fn is_exempt() -> bool {
    EXEMPT.with(Cell::get)
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Scope {
    /// A user's statements (a captured write among them, see `outcome`).
    User,
    /// The replay of an entry of this group, or its check before it is appended: every
    /// statement it sets off may use only the group's tables.
    Applying(String),
    /// pg_paxos's own catalog work (`privileged`).
    Own,
}

/// Runs `f` as the replay of an entry of `group`.
pub fn applying<R>(group: &str, f: impl FnOnce() -> R) -> R {
    scoped(Scope::Applying(group.to_owned()), f)
}

/// What this backend runs right now.
pub fn scope() -> Scope {
    SCOPE.with(|s| s.borrow().clone())
}

fn scoped<R>(scope: Scope, f: impl FnOnce() -> R) -> R {
    struct Restore(Scope);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPE.with(|s| *s.borrow_mut() = self.0.clone());
        }
    }
    let _restore = Restore(SCOPE.with(|s| s.replace(scope)));
    f()
}

/// Runs `f` as the bootstrap superuser with `search_path` pinned to pg_catalog: pg_paxos's
/// own catalog work, done on behalf of whoever wrote or read a replicated table, is neither
/// refused to that user nor steerable by their settings.
pub fn privileged<R>(f: impl FnOnce() -> R) -> R {
    struct Restore {
        user: pg_sys::Oid,
        security: i32,
        nest: i32,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: undoes exactly what was set below, at the same nesting level.
            unsafe {
                pg_sys::AtEOXact_GUC(true, self.nest);
                pg_sys::SetUserIdAndSecContext(self.user, self.security);
            }
        }
    }
    // SAFETY: saving and switching the current user and a GUC level, as fmgr_security_definer
    // does; the guard restores both even when `f` raises an error.
    let _restore = unsafe {
        let (mut user, mut security) = (pg_sys::Oid::INVALID, 0);
        pg_sys::GetUserIdAndSecContext(&mut user, &mut security);
        let nest = pg_sys::NewGUCNestLevel();
        pin("search_path", "pg_catalog, pg_temp");
        pg_sys::SetUserIdAndSecContext(
            pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            security | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
        Restore {
            user,
            security,
            nest,
        }
    };
    scoped(Scope::Own, f)
}

/// Sets `name` to `value` for the current GUC nest level only (see `NewGUCNestLevel`).
pub fn pin(name: &str, value: &str) {
    set(name, value, pg_sys::GucAction::GUC_ACTION_SAVE);
}

/// Sets `name` to `value` until the end of the current transaction (SET LOCAL).
pub fn pin_for_transaction(name: &str, value: &str) {
    set(name, value, pg_sys::GucAction::GUC_ACTION_LOCAL);
}

fn set(name: &str, value: &str, action: pg_sys::GucAction::Type) {
    let name = CString::new(name).unwrap_or_default();
    let value = CString::new(value).unwrap_or_default();
    // SAFETY: valid C strings; errors are raised as PostgreSQL errors (elevel ERROR).
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            action,
            true,
            pgrx::PgLogLevel::ERROR as i32,
            false,
        );
    }
}

/// Settings that make the text form of values identical on every member.
pub const PINNED_IO: [(&str, &str); 4] = [
    ("datestyle", "ISO, MDY"),
    ("intervalstyle", "postgres"),
    ("extra_float_digits", "3"),
    ("standard_conforming_strings", "on"),
];

/// Settings that change what a replayed statement does, pinned for the replay on every
/// member (the author's and the applying session's values never apply).
pub const REPLAY_SETTINGS: [(&str, &str); 9] = [
    ("timezone", "UTC"),
    ("bytea_output", "hex"),
    ("session_replication_role", "origin"),
    ("row_security", "on"),
    ("transform_null_equals", "off"),
    ("array_nulls", "on"),
    ("xmloption", "content"),
    ("xmlbinary", "base64"),
    ("gin_fuzzy_search_limit", "0"),
];

/// Runs `f` with `PINNED_IO` and the given `search_path` in force.
pub fn with_pinned_io<R>(search_path: &str, f: impl FnOnce() -> R) -> R {
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: pops the level pushed below.
            unsafe { pg_sys::AtEOXact_GUC(true, self.0) }
        }
    }
    // SAFETY: a new GUC nest level, popped by the guard.
    let _restore = Restore(unsafe { pg_sys::NewGUCNestLevel() });
    pin("search_path", search_path);
    for (name, value) in PINNED_IO {
        pin(name, value);
    }
    f()
}
