//! State copies: a member's replicated tables, sequences and membership as of the round it
//! applied last, r, copied into this node in one transaction, after which this node applies
//! from round r+1. A joining node starts so; a member that fell behind the rounds its peers
//! keep (see `compaction`) catches up so.
//!
//! The member's side is one REPEATABLE READ transaction: `paxos_state` reads r and what
//! goes with it, then each table is streamed with COPY, all in one snapshot, in which r and
//! the tables' rows moved together (they commit in one transaction, invariant 4). This side
//! loads each stream with PostgreSQL's own COPY FROM, chunk by chunk, so neither side holds
//! a table in memory; its progress shows in `pg_stat_progress_copy`.
use std::cell::RefCell;
use std::ffi::{c_int, c_void, CString};

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::catalog;
use crate::connstr;
use crate::error::{PaxosError, Result};
use crate::messages::*;
use crate::peers::{self, CopyOut, Session};
use crate::replication::registry::{self, qualified};
use crate::replication::{context, privileged, sequences, with_pinned_io};

/// Settings of the member's transaction that make its text output read back alike here.
const MEMBER_SETTINGS: &str = "SET LOCAL datestyle = 'ISO, MDY'; \
     SET LOCAL intervalstyle = 'postgres'; SET LOCAL extra_float_digits = 3; \
     SET LOCAL bytea_output = 'hex'";

/// What a joining node may find in its copies of the group's tables.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Nothing: a join never throws away rows it was not told to.
    MustBeEmpty,
    /// Rows of an older state of the group, replaced.
    Replace,
}

/// Copies the state of `group` from member `donor` into this node, in the caller's
/// transaction; returns the round it is the state of, now this node's applied position.
pub fn copy_from(group: &str, donor: &str, existing: Existing) -> Result<i64> {
    let fail = |reason: String| PaxosError::StateCopy {
        group: group.to_owned(),
        donor: connstr::redact(donor),
        reason,
    };
    // The member not answering is a connection failure, its answer not fitting is not.
    let lost = |reason: String| PaxosError::Peer {
        connection: connstr::redact(donor),
        reason: format!("copying the state of paxos group \"{group}\": {reason}"),
    };
    let applied_here = crate::replication::apply::lock_applied(group)?;
    let session = Session::open(donor).map_err(lost)?;
    session
        .query(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; {MEMBER_SETTINGS}"
        ))
        .map_err(lost)?;
    let request = StateRequest {
        group: group.to_owned(),
    };
    let state: StateResponse = session
        .query(&peers::endpoint_sql("paxos_state", &request))
        .and_then(|answer| peers::parse(&answer.unwrap_or_default()))
        .map_err(lost)?;
    if state.applied <= applied_here {
        return Err(fail(format!(
            "it applied through round {}, this node through round {applied_here} already",
            state.applied
        )));
    }
    let tables = local_tables(group, &state.tables).map_err(fail)?;
    pgrx::log!(
        "pg_paxos: copying the state of paxos group \"{group}\" as of round {} from {} ({} \
         tables)",
        state.applied,
        connstr::redact(donor),
        tables.len()
    );
    privileged(|| {
        with_pinned_io("pg_catalog", || -> Result<()> {
            // Rows, not operations: no trigger or foreign key check fires for them.
            context::pin("session_replication_role", "replica");
            empty(&tables, existing).map_err(fail)?;
            for (table, copied) in tables.iter().zip(&state.tables) {
                let name = qualified(&copied.schema, &copied.name);
                let columns: Vec<&str> = copied.columns.iter().map(|(c, _)| c.as_str()).collect();
                let list = columns
                    .iter()
                    .map(pgrx::spi::quote_identifier)
                    .collect::<Vec<_>>()
                    .join(", ");
                let stream = session
                    .copy_out(&format!("COPY {name} ({list}) TO STDOUT"))
                    .map_err(lost)?;
                let rows = copy_into(*table, &columns, stream, group, donor)?;
                pgrx::log!("pg_paxos: copied {rows} rows of {name} into paxos group \"{group}\"");
            }
            Ok(())
        })
    })?;
    record_state(group, &tables, &state).map_err(fail)?;
    // The member's transaction only read; how it ends changes nothing.
    let _ = session.query("COMMIT");
    Ok(state.applied)
}

/// This node's copies of the member's tables, checked to have the same columns.
fn local_tables(
    group: &str,
    copied: &[CopiedTable],
) -> std::result::Result<Vec<pg_sys::Oid>, String> {
    copied
        .iter()
        .map(|table| {
            let name = qualified(&table.schema, &table.name);
            let oid = Spi::get_one_with_args::<pg_sys::Oid>(
                "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid",
                &[name.clone().into()],
            )
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!("table {name} is replicated in the group but missing here: create it first, as it is on the members")
            })?;
            if let Some(other) = catalog::replicating_group(oid).map_err(|e| e.to_string())? {
                if other != group {
                    return Err(format!("table {name} is replicated in paxos group \"{other}\" here"));
                }
            }
            let mut here = columns(oid).map_err(|e| e.to_string())?;
            let mut there: Vec<String> = table.columns.iter().map(|(c, t)| format!("{c} {t}")).collect();
            here.sort();
            there.sort();
            if here != there {
                return Err(format!(
                    "table {name} has the columns ({}) here and ({}) on the member",
                    here.join(", "),
                    there.join(", ")
                ));
            }
            Ok(oid)
        })
        .collect()
}

/// "name type" of every column a copy carries: neither dropped nor generated.
fn columns(table: pg_sys::Oid) -> std::result::Result<Vec<String>, pgrx::spi::SpiError> {
    Ok(Spi::get_one_with_args::<Vec<String>>(
        "SELECT coalesce(pg_catalog.array_agg(a.attname OPERATOR(pg_catalog.||) ' ' \
             OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid, a.atttypmod) \
             ORDER BY a.attnum), '{}') \
         FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) $1 \
         AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped \
         AND a.attgenerated OPERATOR(pg_catalog.=) ''",
        &[table.into()],
    )?
    .unwrap_or_default())
}

/// Empties the tables (in one TRUNCATE, which foreign keys among them allow), or checks
/// that they are empty.
fn empty(tables: &[pg_sys::Oid], existing: Existing) -> std::result::Result<(), String> {
    if tables.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = tables.iter().map(|t| registry::relation_name(*t)).collect();
    if existing == Existing::MustBeEmpty {
        for name in &names {
            let has_rows = Spi::get_one::<bool>(&format!("SELECT EXISTS (SELECT FROM {name})"))
                .map_err(|e| e.to_string())?
                .unwrap_or(false);
            if has_rows {
                return Err(format!(
                    "table {name} has rows on this node: a joining node receives the group's \
                     rows from the member; empty it first"
                ));
            }
        }
        return Ok(());
    }
    context::exempt(|| Spi::run(&format!("TRUNCATE {}", names.join(", "))))
        .map_err(|e| e.to_string())
}

/// The member's answer, recorded here: the tables and sequences of the group, its members,
/// and the log as applied and forgotten through the copied round.
fn record_state(
    group: &str,
    tables: &[pg_sys::Oid],
    state: &StateResponse,
) -> std::result::Result<(), String> {
    let text = |e: PaxosError| e.to_string();
    catalog::replace_replicated(group).map_err(text)?;
    for (oid, copied) in tables.iter().zip(&state.tables) {
        catalog::add_replicated(
            group,
            *oid,
            (&copied.schema, &copied.name),
            copied.replicated_at,
        )
        .map_err(text)?;
    }
    registry::invalidate(None);
    sequences::forget();
    for sequence in &state.sequences {
        let name = qualified(&sequence.schema, &sequence.name);
        catalog::set_sequence(group, &name, sequence.last_value)
            .map_err(text)?
            .then_some(())
            .ok_or_else(|| format!("sequence {name} is missing here"))?;
    }
    sequences::restore(group).map_err(text)?;
    catalog::record_decisions(group, &state.membership).map_err(text)?;
    catalog::rebuild_members(group).map_err(text)?;
    catalog::set_applied(group, state.applied).map_err(text)?;
    catalog::copied_through(group, state.applied).map_err(text)?;
    // Last, as it stops this node's votes until the transaction ends.
    crate::locks::range(group);
    catalog::compact(group, state.applied).map_err(text)?;
    crate::node::forget(group);
    Ok(())
}

/// The COPY data being loaded, for `read_feed`.
struct Feed {
    stream: CopyOut,
    chunk: Vec<u8>,
    at: usize,
    group: String,
    donor: String,
}

thread_local! {
    static FEED: RefCell<Option<Feed>> = const { RefCell::new(None) };
}

/// COPY FROM's data source: the next bytes of the member's stream, 0 at its end.
#[pg_guard]
unsafe extern "C-unwind" fn read_feed(out: *mut c_void, _min: c_int, max: c_int) -> c_int {
    FEED.with(|cell| {
        let mut slot = cell.borrow_mut();
        let Some(feed) = slot.as_mut() else {
            return 0;
        };
        while feed.at >= feed.chunk.len() {
            match feed.stream.next_chunk() {
                Ok(Some(chunk)) => {
                    feed.chunk = chunk;
                    feed.at = 0;
                }
                Ok(None) => return 0,
                Err(reason) => {
                    let error = PaxosError::Peer {
                        connection: connstr::redact(&feed.donor),
                        reason: format!(
                            "copying the state of paxos group \"{}\": {reason}",
                            feed.group
                        ),
                    };
                    drop(slot);
                    error.raise()
                }
            }
        }
        let n = (feed.chunk.len() - feed.at).min(max.max(0) as usize);
        // SAFETY: COPY hands a buffer of at least `max` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(feed.chunk.as_ptr().add(feed.at), out.cast::<u8>(), n);
        }
        feed.at += n;
        n as c_int
    })
}

/// Loads `stream` (COPY text format, UTF8) into `table`'s `columns`; returns the row count.
fn copy_into(
    table: pg_sys::Oid,
    columns: &[&str],
    stream: CopyOut,
    group: &str,
    donor: &str,
) -> Result<u64> {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            FEED.with(|cell| cell.borrow_mut().take());
        }
    }
    FEED.with(|cell| {
        *cell.borrow_mut() = Some(Feed {
            stream,
            chunk: Vec::new(),
            at: 0,
            group: group.to_owned(),
            donor: donor.to_owned(),
        })
    });
    let _clear = Clear;
    let c = |s: &str| CString::new(s).unwrap_or_default();
    // SAFETY: as logical replication's initial table copy does: a relation opened and locked
    // for the copy, a parse state holding it, and COPY FROM fed by a callback; lists and
    // strings are palloc'd in the current memory context. Errors are PostgreSQL errors.
    unsafe {
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let relation = pg_sys::table_open(table, lock);
        let parse = pg_sys::make_parsestate(std::ptr::null_mut());
        pg_sys::addRangeTableEntryForRelation(
            parse,
            relation,
            lock,
            std::ptr::null_mut(),
            false,
            false,
        );
        let mut names: *mut pg_sys::List = std::ptr::null_mut();
        for column in columns {
            let name = pg_sys::makeString(pg_sys::pstrdup(c(column).as_ptr()));
            names = pg_sys::lappend(names, name.cast());
        }
        let utf8 = pg_sys::makeString(pg_sys::pstrdup(c("UTF8").as_ptr()));
        let encoding =
            pg_sys::makeDefElem(pg_sys::pstrdup(c("encoding").as_ptr()), utf8.cast(), -1);
        let options = pg_sys::lappend(std::ptr::null_mut(), encoding.cast());
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let state = pg_sys::BeginCopyFrom(
            parse,
            relation,
            std::ptr::null_mut(),
            std::ptr::null(),
            false,
            Some(read_feed),
            names,
            options,
        );
        let rows = pg_sys::CopyFrom(state);
        pg_sys::EndCopyFrom(state);
        pg_sys::PopActiveSnapshot();
        pg_sys::free_parsestate(parse);
        pg_sys::table_close(relation, pg_sys::NoLock as pg_sys::LOCKMODE);
        pg_sys::CommandCounterIncrement();
        Ok(rows)
    }
}

/// What a state copy of `group` needs, as of this node's applied position, read in the
/// caller's snapshot.
fn state_of(group: &str) -> Result<StateResponse> {
    let applied =
        catalog::applied(group)?.ok_or_else(|| PaxosError::UnknownGroup(group.to_owned()))?;
    fn parse<T: serde::de::DeserializeOwned>(what: &str, json: Option<String>) -> Result<T> {
        serde_json::from_str(json.as_deref().unwrap_or("[]")).map_err(|e| {
            PaxosError::InvalidArgument {
                what: "state",
                reason: format!("{what}: {e}"),
            }
        })
    }
    Ok(StateResponse {
        applied,
        tables: parse("tables", catalog::replicated_as_json(group)?)?,
        membership: catalog::membership_decisions(group, applied)?,
        sequences: parse("sequences", catalog::sequences_as_json(group)?)?,
    })
}

#[pg_schema]
mod pgp_metadata {
    use super::*;

    /// Called by a node that copies this member's state, first in its REPEATABLE READ
    /// transaction here.
    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_state(request: &str) -> String {
        crate::acceptor::serve(request, |req: StateRequest| {
            privileged(|| state_of(&req.group))
        })
    }
}
