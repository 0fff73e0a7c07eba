//! Which tables a group replicates. Replicating a table is itself a log entry, so every
//! member marks it at the same round; the entry carries a fingerprint of the table's rows on
//! the member that replicated it, and a member whose rows differ stops applying there and
//! says so, instead of diverging silently.
use pgrx::prelude::*;

use super::registry::{fingerprint, qualified};
use crate::catalog;
use crate::error::{PaxosError, Result};
use crate::ids;
use crate::messages::{Entry, EntryKind, Replicate};

/// Appends the entry that makes `table` replicated in `group`, after checking that the
/// caller may: the table's owner (or a member of its owning role) or a superuser. The
/// catalog work runs `privileged`: the caller needs no rights on pg_paxos's schema.
pub fn replicate(group: &str, proposer: &str, table: pg_sys::Oid) -> Result<i64> {
    let (schema, name, kind, owns, system) = describe(table)?;
    super::privileged(|| replicate_described(group, proposer, (schema, name, kind, owns, system)))
}

fn replicate_described(
    group: &str,
    proposer: &str,
    (schema, name, kind, owns, system): (String, String, String, bool, bool),
) -> Result<i64> {
    catalog::require_group(group)?;
    if system {
        return Err(PaxosError::WrongObject(format!(
            "{} is a system table or belongs to pg_paxos: it cannot be replicated",
            qualified(&schema, &name)
        )));
    }
    if kind != "r" {
        return Err(PaxosError::WrongObject(format!(
            "{} is not a table (only plain tables can be replicated)",
            qualified(&schema, &name)
        )));
    }
    if !owns {
        return Err(PaxosError::NotOwner(qualified(&schema, &name)));
    }
    if let Some(other) = catalog::replicating_group(&schema, &name)? {
        return Err(PaxosError::AlreadyReplicated {
            table: qualified(&schema, &name),
            group: other,
        });
    }
    let payload = Replicate {
        fingerprint: fingerprint(&schema, &name)?,
        schema,
        table: name,
    };
    let entry = Entry {
        id: ids::proposal_id(),
        kind: EntryKind::Replicate,
        value: Some(serde_json::to_string(&payload).unwrap_or_default()),
    };
    let round = crate::leader::append(group, proposer, entry)?;
    crate::applier::learn_and_wait(group, proposer, round)?;
    apply_on_members(group, round)?;
    Ok(round)
}

/// Has every other reachable member apply the log through `round` now: until a member has
/// applied the replicate entry, it does not refuse local writes to the table (see `guard`).
/// Members that cannot (down, or the table is missing or differs there) are named in a
/// warning; they stop at that round when they apply, and say why.
fn apply_on_members(group: &str, round: i64) -> Result<()> {
    let own = catalog::require_group(group)?.self_connection;
    let members: Vec<String> = catalog::membership(group)?
        .voters(round + 1)
        .into_iter()
        .filter(|m| *m != own)
        .map(str::to_owned)
        .collect();
    let sql = format!(
        "SELECT paxos_apply_log('replicate', {}, {round})",
        crate::connstr::quote_literal(group)
    );
    let requests: Vec<(String, String)> =
        members.iter().map(|m| (m.clone(), sql.clone())).collect();
    let failed: Vec<String> = crate::peers::exchange_all(&requests)
        .into_iter()
        .zip(&members)
        .filter_map(|(outcome, member)| {
            outcome
                .err()
                .map(|e| format!("{}: {e}", crate::connstr::redact(member)))
        })
        .collect();
    if !failed.is_empty() {
        pgrx::warning!(
            "the table is replicated from round {round}, but these members have not applied it \
             yet and still accept local writes to it: {}",
            failed.join("; ")
        );
    }
    Ok(())
}

/// Schema, name, relkind of `table`, whether the current user owns it (or is superuser), and
/// whether it is PostgreSQL's own or pg_paxos's.
fn describe(table: pg_sys::Oid) -> Result<(String, String, String, bool, bool)> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT n.nspname::text, c.relname::text, c.relkind::text, \
             pg_catalog.pg_has_role(c.relowner, 'USAGE'), \
             c.oid < 16384 OR n.nspname IN ('pgp_metadata', 'information_schema') \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = $1",
            Some(1),
            &[table.into()],
        )?;
        let row = rows.first();
        match row.get::<String>(1)? {
            Some(schema) => Ok((
                schema,
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<String>(3)?.unwrap_or_default(),
                row.get::<bool>(4)?.unwrap_or(false),
                row.get::<bool>(5)?.unwrap_or(true),
            )),
            None => Err(PaxosError::WrongObject(format!(
                "relation {table:?} does not exist"
            ))),
        }
    })
}
