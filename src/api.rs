//! The SQL surface, with the names and named arguments of the 2016 prototype. Thin: argument
//! checks, then the work in groups / multipaxos, errors raised with their SQLSTATE.
use pgrx::prelude::*;

use crate::error::{required, OrRaise, PaxosError, Result};
use crate::groups;
use crate::ids;
use crate::messages::{Entry, EntryKind};
use crate::multipaxos::Log;
use crate::replication;

fn non_negative(round: i64, what: &'static str) -> Result<i64> {
    if round < 0 {
        return Err(PaxosError::InvalidArgument {
            what,
            reason: format!("{round} is negative"),
        });
    }
    Ok(round)
}

/// Creates a group with this node, reachable by `founder_connection_string`, as its member.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_create_group(current_group_id: Option<&str>, founder_connection_string: Option<&str>) {
    (|| {
        groups::create(
            required(current_group_id, "current_group_id")?,
            required(founder_connection_string, "founder_connection_string")?,
        )
    })()
    .or_raise()
}

/// Joins a group through one of its members; returns the round whose entry added this node
/// (it votes from the next round on).
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_join_group(
    current_group_id: Option<&str>,
    existing_connection_string: Option<&str>,
    own_connection_string: Option<&str>,
) -> i64 {
    (|| {
        groups::join(
            required(current_group_id, "current_group_id")?,
            required(existing_connection_string, "existing_connection_string")?,
            required(own_connection_string, "own_connection_string")?,
        )
    })()
    .or_raise()
}

/// Removes this node from a group; returns the round whose entry removed it.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_leave_group(current_group_id: Option<&str>) -> i64 {
    (|| groups::leave(required(current_group_id, "current_group_id")?))().or_raise()
}

/// Ends a group on every member; its tables stay, as ordinary tables. Returns the round of
/// its drop entry.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_drop_group(current_group_id: Option<&str>) -> i64 {
    (|| groups::drop_group(required(current_group_id, "current_group_id")?))().or_raise()
}

/// Removes a member that is gone for good from a group, from any member that can reach a
/// majority; returns the round whose entry removed it.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_remove_member(current_group_id: Option<&str>, member_connection: Option<&str>) -> i64 {
    (|| {
        groups::remove_member(
            required(current_group_id, "current_group_id")?,
            required(member_connection, "member_connection")?,
        )
    })()
    .or_raise()
}

/// Single-decree Paxos on one round of a group's log: returns the value chosen there, which
/// is `proposed_value` unless another proposal won (`value_changed`). Rounds are decided in
/// order; a NULL proposal only learns (or fills an abandoned round with a no-op).
#[pg_extern(volatile, parallel_unsafe)]
fn paxos(
    current_proposer_id: Option<&str>,
    current_group_id: Option<&str>,
    current_round_num: Option<i64>,
    proposed_value: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(accepted_value, Option<String>),
        name!(value_changed, bool),
    ),
> {
    let row = replication::privileged(|| -> Result<(Option<String>, bool)> {
        let proposer = required(current_proposer_id, "current_proposer_id")?;
        let group = required(current_group_id, "current_group_id")?;
        let round = non_negative(
            required(current_round_num, "current_round_num")?,
            "current_round_num",
        )?;
        let mut log = Log::open(group, proposer)?;
        if round > log.learned_through() + 1 {
            log.catch_up(round - 1)?;
        }
        let decision = if round <= log.learned_through() {
            log.decision(round)?
        } else if round == log.learned_through() + 1 {
            let entry = Entry {
                id: ids::proposal_id(),
                kind: if proposed_value.is_some() {
                    EntryKind::Value
                } else {
                    EntryKind::Noop
                },
                value: proposed_value.map(str::to_owned),
            };
            Some(log.decide(round, &entry)?.0)
        } else {
            None
        };
        let decision = decision.ok_or_else(|| PaxosError::RoundOutOfReach {
            group: group.to_owned(),
            round,
            reason: format!(
                "rounds are decided in order and round {} is not decided yet; \
                 use paxos_append() to add to the end of the log",
                log.learned_through() + 1
            ),
        })?;
        let value = decision.entry.value;
        let changed = value.as_deref() != proposed_value;
        Ok((value, changed))
    })
    .or_raise();
    TableIterator::once(row)
}

/// Appends a value to a group's log; returns the round it was chosen at.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_append(
    current_proposer_id: Option<&str>,
    current_group_id: Option<&str>,
    proposed_value: Option<&str>,
) -> i64 {
    replication::privileged(|| {
        let proposer = required(current_proposer_id, "current_proposer_id")?;
        let group = required(current_group_id, "current_group_id")?;
        let value = required(proposed_value, "proposed_value")?;
        let entry = Entry {
            id: ids::proposal_id(),
            kind: EntryKind::Value,
            value: Some(value.to_owned()),
        };
        replication::outcome::appending(group, false, || {
            crate::leader::append(group, proposer, entry)
        })
    })
    .or_raise()
}

/// The round at which the write to a replicated table running now takes effect: the same on
/// every member, in its writer's session and where it is replayed, so a write may store it
/// (a fencing token, a term) or return it. NULL outside such a write.
#[pg_extern(stable, parallel_unsafe)]
fn paxos_write_round() -> Option<i64> {
    replication::context::replaying().or_else(replication::outcome::running_round)
}

/// Applies the log on this node up to and including `max_round_num`: every round up to it is
/// learned (from the members, or decided when abandoned), membership changes take effect,
/// and the call returns once the group's applier has applied it. Values appended with
/// paxos()/paxos_append() are data, never executed. Returns the applied position.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_apply_log(
    current_proposer_id: Option<&str>,
    current_group_id: Option<&str>,
    max_round_num: Option<i64>,
) -> i64 {
    replication::privileged(|| {
        let proposer = required(current_proposer_id, "current_proposer_id")?;
        let group = required(current_group_id, "current_group_id")?;
        let through = non_negative(required(max_round_num, "max_round_num")?, "max_round_num")?;
        crate::applier::learn_and_wait(group, proposer, through)
    })
    .or_raise()
}

/// Gives up round `round_num` of a group's log on this node only, as ALTER SUBSCRIPTION ...
/// SKIP does for logical replication: for an entry that fails here with an error no retry
/// cures (a missing object, a table whose rows differ) when fixing the cause is not wanted.
/// The rounds before it are applied first; only an entry that fails here can be skipped;
/// the failure is recorded in pgp_metadata.apply_errors, and this node then lacks what the
/// entry did on the other members. Returns the applied position.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_skip_round(current_group_id: Option<&str>, round_num: Option<i64>) -> i64 {
    (|| {
        let group = required(current_group_id, "current_group_id")?;
        let round = non_negative(required(round_num, "round_num")?, "round_num")?;
        let (sqlstate, message) = replication::commands::skip_round(group, "skip", round)?;
        pgrx::warning!(
            "round {round} of paxos group \"{group}\" was skipped on this node only; what it \
             did on the other members is missing here ({sqlstate}: {message})"
        );
        Ok(round)
    })()
    .or_raise()
}

/// Makes a table replicated in a group: from the round returned on, every member applies the
/// group's writes to it. Only its owner or a superuser may. Every member must have the table,
/// with the same rows: a member where it is missing or differs stops applying at that round
/// and says why.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_replicate_table(
    current_group_id: Option<&str>,
    new_table_oid: Option<pgrx::PgRelation>,
) -> i64 {
    (|| {
        let group = required(current_group_id, "current_group_id")?;
        let table = required(new_table_oid, "new_table_oid")?;
        replication::tables::replicate(group, "replicate", &[table.oid()])
    })()
    .or_raise()
}

/// Makes several tables replicated in a group at once, as `paxos_replicate_table` does one:
/// the way to replicate tables joined by foreign keys, which must all be in one group.
/// Returns the round from which the last of them is replicated.
#[pg_extern(
    volatile,
    parallel_unsafe,
    sql = r#"
CREATE FUNCTION "paxos_replicate_tables"(
    "current_group_id" text,
    "new_tables" regclass[]
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'paxos_replicate_tables_wrapper';
"#
)]
fn paxos_replicate_tables(
    current_group_id: Option<&str>,
    new_tables: Option<Vec<Option<pg_sys::Oid>>>,
) -> i64 {
    (|| {
        let group = required(current_group_id, "current_group_id")?;
        let tables = required(new_tables, "new_tables")?
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or(PaxosError::NullArgument("new_tables"))?;
        if tables.is_empty() {
            return Err(PaxosError::InvalidArgument {
                what: "new_tables",
                reason: "is empty".into(),
            });
        }
        replication::tables::replicate(group, "replicate", &tables)
    })()
    .or_raise()
}

/// Runs a write on every member of a group: checks it here first (privileges, row security,
/// constraints, against this node's state brought up to date), appends it to the log, and
/// applies the log through it. Returns its round. A write that then fails the same way on
/// every member (say a unique violation against a write that came first) fails here with
/// that error and has no effect anywhere.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_apply_and_append(
    current_proposer_id: Option<&str>,
    current_group_id: Option<&str>,
    proposed_value: Option<&str>,
) -> i64 {
    (|| {
        let proposer = required(current_proposer_id, "current_proposer_id")?;
        let group = required(current_group_id, "current_group_id")?;
        let sql = required(proposed_value, "proposed_value")?;
        replication::commands::apply_and_append(group, proposer, sql)
    })()
    .or_raise()
}

/// The highest round accepted by a majority's members: every round chosen before this call
/// began is at or below it.
#[pg_extern(volatile, parallel_unsafe)]
fn paxos_max_group_round(current_group_id: Option<&str>) -> i64 {
    replication::privileged(|| {
        Log::open(required(current_group_id, "current_group_id")?, "reader")?.max_group_round()
    })
    .or_raise()
}

extension_sql!(
    r#"
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgp_metadata FROM PUBLIC;
REVOKE ALL ON FUNCTION paxos_create_group(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paxos_join_group(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paxos_leave_group(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paxos_remove_member(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paxos(text, text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paxos_append(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paxos_apply_log(text, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION paxos_max_group_round(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paxos_replicate_table(text, regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION paxos_replicate_tables(text, regclass[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION paxos_apply_and_append(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paxos_skip_round(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION paxos_appliers() FROM PUBLIC;
"#,
    name = "privileges",
    finalize
);
