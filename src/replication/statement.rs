//! A write statement as the log carries it, and running it as its author.
//!
//! The entry names its author's role and search_path, and its parameters as text with
//! their type names (type OIDs differ between servers), so every member runs the same
//! statement under the same privileges and name resolution. Text I/O runs with pinned
//! settings (ISO dates, full float precision), as postgres_fdw does, so values read back
//! the same everywhere.
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;

use pgrx::pg_sys::panic::CaughtError;
use pgrx::pg_sys::{self, PgTryBuilder};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgOid;
use serde::{Deserialize, Serialize};

use crate::error::{PaxosError, Result};
use crate::plans::{self, Plans};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    /// The type as `format_type` writes it, e.g. `integer` or `public.mood`.
    pub type_name: String,
    /// The value in the type's text form; `None` for NULL.
    pub text: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
    /// The role whose privileges the statement runs with.
    pub role: String,
    pub search_path: String,
}

impl Statement {
    /// `sql` as the current user would run it now.
    pub fn by_current_user(sql: &str) -> Result<Statement> {
        let row = Spi::get_two::<String, String>(
            "SELECT current_user::text, pg_catalog.current_setting('search_path')",
        )?;
        Ok(Statement {
            sql: sql.to_owned(),
            params: Vec::new(),
            role: row.0.unwrap_or_default(),
            search_path: row.1.unwrap_or_default(),
        })
    }
}

/// What came of running a statement in a subtransaction.
pub enum Ran {
    /// It ran.
    Done,
    /// It failed; the subtransaction was rolled back.
    Failed(Box<CaughtError>),
}

/// Runs `statement` as its author in a subtransaction, which is kept when `keep` and the
/// statement succeeded, and rolled back otherwise.
///
/// The replay context is the entry's alone: the author's role, with no more rights (a
/// security-restricted operation, as PostgreSQL runs maintenance commands as a table's
/// owner: no SET ROLE, no temporary objects); `search_path` pinned to pg_catalog, the
/// author's path and the temporary schema last; every setting that changes what a statement
/// does pinned (`REPLAY_SETTINGS`); and whatever the statement changes in settings undone
/// when it ends, so nothing leaks into the next entry or pg_paxos's own catalog work.
///
/// Whatever the statement sets off (triggers, foreign key checks, functions) may read and
/// write only `group`'s replicated tables and the system catalogs (`guard`).
pub fn run(group: &str, statement: &Statement, keep: bool) -> Result<Ran> {
    let role = CString::new(statement.role.as_str()).map_err(|_| invalid("role name"))?;
    let search_path = replay_search_path(&statement.search_path);
    let outcome = subtransaction(keep, || {
        // SAFETY: the role and settings are restored below, or by the subtransaction's
        // rollback when the statement raises an error.
        unsafe {
            let (mut user, mut security) = (pg_sys::Oid::INVALID, 0);
            pg_sys::GetUserIdAndSecContext(&mut user, &mut security);
            let author = pg_sys::get_role_oid(role.as_ptr(), false);
            let nest = pg_sys::NewGUCNestLevel();
            super::context::pin("search_path", &search_path);
            for (name, value) in super::context::PINNED_IO
                .iter()
                .chain(&super::context::REPLAY_SETTINGS)
            {
                super::context::pin(name, value);
            }
            pg_sys::SetUserIdAndSecContext(
                author,
                security
                    | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                    | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            );
            let rows = super::context::exempt(|| {
                super::context::applying(group, || execute(&statement.sql, &statement.params))
            });
            pg_sys::SetUserIdAndSecContext(user, security);
            // Not a commit of the settings: a SET the statement made is undone too.
            pg_sys::AtEOXact_GUC(false, nest);
            rows
        }
    });
    match outcome {
        Ok(rows) => rows.map(|()| Ran::Done),
        Err(error) => Ok(Ran::Failed(error)),
    }
}

/// pg_catalog first (names the deparser left unqualified are pg_catalog's), then the
/// author's schemas, and the session's temporary schema last, where it can shadow nothing.
pub fn replay_search_path(author: &str) -> String {
    let schemas: Vec<&str> = author
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("pg_temp") && *s != "\"pg_temp\"")
        .collect();
    let mut path = vec!["pg_catalog"];
    path.extend(schemas);
    path.push("pg_temp");
    path.join(", ")
}

/// Checks that `sql`, with parameters of types `types` (`$1` first), parses and analyses,
/// as it will when members run it, without running it.
pub fn check_parses(
    sql: &str,
    types: &[pg_sys::Oid],
    search_path: &str,
) -> std::result::Result<(), Box<CaughtError>> {
    let sql = CString::new(sql).unwrap_or_default();
    let mut types = types.to_vec();
    subtransaction(false, || {
        super::context::with_pinned_io(search_path, || {
            // SAFETY: SPI inside a subtransaction that is rolled back; SPI_prepare only parses
            // and analyses (planning happens when a plan runs), raising any error.
            unsafe {
                pg_sys::SPI_connect();
                pg_sys::SPI_prepare(sql.as_ptr(), types.len() as i32, types.as_mut_ptr());
                pg_sys::SPI_finish();
            }
        })
    })
}

/// Runs `f` in a subtransaction, kept when `keep` and `f` succeeded and rolled back
/// otherwise; an error `f` raises is returned, not raised.
pub fn subtransaction<R>(
    keep: bool,
    f: impl FnOnce() -> R,
) -> std::result::Result<R, Box<CaughtError>> {
    // SAFETY: the pattern of PL/pgSQL's exception blocks (pl_exec.c): remember the memory
    // context and resource owner, start a subtransaction, and on the way out release or roll
    // it back and restore both.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let outcome = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| Ok(f())))
            .catch_others(|error| Err(Box::new(error)))
            .execute();
        if keep && outcome.is_ok() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        restore(context, owner);
        outcome
    }
}

unsafe fn restore(context: pg_sys::MemoryContext, owner: pg_sys::ResourceOwner) {
    // SAFETY: both were current before the subtransaction began and outlive it.
    unsafe {
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    }
}

/// Most replayed statements kept planned by one backend: an applier replays the same few
/// statements over and over.
const KEPT_PLANS: usize = 64;

thread_local! {
    static PLANS: RefCell<Plans<(String, Vec<pg_sys::Oid>)>> =
        RefCell::new(Plans::new(KEPT_PLANS));
    /// Types of pg_catalog's own (defined at bootstrap) by the name entries give them: the
    /// replay path puts pg_catalog first, so such a name means that type on this server
    /// whatever the author's path.
    static BOOTSTRAP_TYPES: RefCell<HashMap<String, pg_sys::Oid>> = RefCell::new(HashMap::new());
}

/// Runs `sql` with `params` bound, converting each from text by its type's input function.
fn execute(sql: &str, params: &[Param]) -> Result<()> {
    Spi::connect_mut(|client| {
        let mut args = Vec::with_capacity(params.len());
        for param in params {
            let type_oid = type_oid(client, &param.type_name)?;
            args.push(input(type_oid, param.text.as_deref())?);
        }
        let types: Vec<pg_sys::Oid> = args.iter().map(|a| a.oid()).collect();
        let plan = plans::get_or_prepare(&PLANS, (sql.to_owned(), types.clone()), || {
            let types: Vec<PgOid> = types.into_iter().map(PgOid::from).collect();
            Ok(client.prepare_mut(sql, &types)?.keep())
        })?;
        client.update(&*plan, None, &args)?;
        Ok(())
    })
}

/// The type an entry's parameter names, as the replay path resolves it.
fn type_oid(client: &mut SpiClient, name: &str) -> Result<pg_sys::Oid> {
    if let Some(oid) = BOOTSTRAP_TYPES.with(|t| t.borrow().get(name).copied()) {
        return Ok(oid);
    }
    let oid = client
        .select(
            "SELECT pg_catalog.to_regtype($1)::oid",
            Some(1),
            &[name.into()],
        )?
        .first()
        .get_one::<pg_sys::Oid>()?
        .ok_or_else(|| PaxosError::InvalidArgument {
            what: "parameter type",
            reason: format!("type {name} does not exist here"),
        })?;
    if u32::from(oid) < pg_sys::FirstGenbkiObjectId {
        BOOTSTRAP_TYPES.with(|t| t.borrow_mut().insert(name.to_owned(), oid));
    }
    Ok(oid)
}

fn input(type_oid: pg_sys::Oid, text: Option<&str>) -> Result<pgrx::datum::DatumWithOid<'static>> {
    let Some(text) = text else {
        return Ok(pgrx::datum::DatumWithOid::null_oid(type_oid));
    };
    let text = CString::new(text).map_err(|_| invalid("parameter value"))?;
    // SAFETY: the type exists (to_regtype found it); its input function parses the text or
    // raises an error.
    unsafe {
        let (mut function, mut io_param) = (pg_sys::Oid::INVALID, pg_sys::Oid::INVALID);
        pg_sys::getTypeInputInfo(type_oid, &mut function, &mut io_param);
        let datum = pg_sys::OidInputFunctionCall(function, text.as_ptr() as *mut _, io_param, -1);
        Ok(pgrx::datum::DatumWithOid::new(datum, type_oid))
    }
}

fn invalid(what: &'static str) -> PaxosError {
    PaxosError::InvalidArgument {
        what,
        reason: "contains a NUL byte".into(),
    }
}

/// The five-character SQLSTATE of a caught error.
pub fn sqlstate(error: &CaughtError) -> String {
    let report = match error {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
        CaughtError::RustPanic { ereport, .. } => ereport,
    };
    crate::error::spelled(report.sql_error_code())
}

/// The message of a caught error.
pub fn message(error: &CaughtError) -> String {
    match error {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r.message().to_owned(),
        CaughtError::RustPanic { ereport, .. } => ereport.message().to_owned(),
    }
}
