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

/// Appends the entries that make `tables` replicated in `group`, one round each in the
/// order given, after checking that the caller may (the owner of each, or a member of its
/// owning role, or a superuser) and that the tables' foreign keys stay inside the group.
/// Returns the last round. The catalog work runs `privileged`: the caller needs no rights
/// on pg_paxos's schema.
pub fn replicate(group: &str, proposer: &str, tables: &[pg_sys::Oid]) -> Result<i64> {
    let mut unique: Vec<pg_sys::Oid> = Vec::new();
    for table in tables {
        if !unique.contains(table) {
            unique.push(*table);
        }
    }
    let described = unique
        .iter()
        .map(|t| describe(*t))
        .collect::<Result<Vec<_>>>()?;
    super::privileged(|| {
        catalog::require_group(group)?;
        for table in &described {
            check(table)?;
        }
        foreign_keys_stay_inside(group, &unique)?;
        let mut round = 0;
        for table in &described {
            round = append(group, proposer, table)?;
        }
        apply_on_members(group, round)?;
        Ok(round)
    })
}

/// What `describe` tells about a table.
struct Described {
    oid: pg_sys::Oid,
    schema: String,
    name: String,
    kind: String,
    owned: bool,
    system: bool,
}

fn check(table: &Described) -> Result<()> {
    let name = qualified(&table.schema, &table.name);
    if table.system {
        return Err(PaxosError::WrongObject(format!(
            "{name} is a system table or belongs to pg_paxos: it cannot be replicated"
        )));
    }
    if table.kind != "r" {
        return Err(PaxosError::WrongObject(format!(
            "{name} is not a table (only plain tables can be replicated)"
        )));
    }
    if !table.owned {
        return Err(PaxosError::NotOwner(name));
    }
    if let Some(other) = catalog::replicating_group(table.oid)? {
        return Err(PaxosError::AlreadyReplicated {
            table: name,
            group: other,
        });
    }
    Ok(())
}

/// Refuses a foreign key between one of `tables` and a table that neither is among them nor
/// is replicated by `group`: a check against rows that differ between members, or a
/// cascade into them, would make the members diverge (the guard refuses such a check at
/// run time too, and such a constraint when it is created).
fn foreign_keys_stay_inside(group: &str, tables: &[pg_sys::Oid]) -> Result<()> {
    let crossing = Spi::get_two_with_args::<String, String>(
        "WITH inside AS (SELECT unnest($2::pg_catalog.oid[]) AS t \
                         UNION SELECT table_oid FROM pgp_metadata.replicated_tables \
                         WHERE group_id = $1) \
         SELECT pg_catalog.format('%s (constraint %I)', k.conrelid::pg_catalog.regclass, \
                                  k.conname), \
                k.confrelid::pg_catalog.regclass::text \
         FROM pg_catalog.pg_constraint k \
         WHERE k.contype = 'f' \
           AND (k.conrelid = ANY ($2) OR k.confrelid = ANY ($2)) \
           AND (k.conrelid NOT IN (SELECT t FROM inside) \
                OR k.confrelid NOT IN (SELECT t FROM inside)) \
         LIMIT 1",
        &[group.into(), tables.to_vec().into()],
    );
    match crossing {
        Ok((Some(child), Some(parent))) => Err(PaxosError::Unsupported(format!(
            "foreign key of {child} references {parent}: a foreign key of a replicated table \
             must join two tables of the same group; replicate both in one call, \
             paxos_replicate_tables('{group}', ARRAY[...]::regclass[]), or drop the constraint"
        ))),
        Ok(_) => Ok(()),
        Err(pgrx::spi::SpiError::InvalidPosition) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn append(group: &str, proposer: &str, table: &Described) -> Result<i64> {
    let payload = Replicate {
        fingerprint: fingerprint(&table.schema, &table.name)?,
        schema: table.schema.clone(),
        table: table.name.clone(),
    };
    let entry = Entry {
        id: ids::proposal_id(),
        kind: EntryKind::Replicate,
        value: Some(serde_json::to_string(&payload).unwrap_or_default()),
    };
    let round = crate::leader::append(group, proposer, entry)?;
    crate::applier::learn_and_wait(group, proposer, round)?;
    Ok(round)
}

/// Has every other reachable member apply the log through `round` now: until a member has
/// applied the replicate entry, it does not refuse local writes to the table (see `guard`).
/// Members that cannot (down, or the table is missing or differs there) are named in a
/// warning; they stop at that round when they apply, and say why.
fn apply_on_members(group: &str, round: i64) -> Result<()> {
    let failed = crate::applier::apply_on_members(group, round)?;
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
fn describe(table: pg_sys::Oid) -> Result<Described> {
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
            Some(schema) => Ok(Described {
                oid: table,
                schema,
                name: row.get::<String>(2)?.unwrap_or_default(),
                kind: row.get::<String>(3)?.unwrap_or_default(),
                owned: row.get::<bool>(4)?.unwrap_or(false),
                system: row.get::<bool>(5)?.unwrap_or(true),
            }),
            None => Err(PaxosError::WrongObject(format!(
                "relation {table:?} does not exist"
            ))),
        }
    })
}
