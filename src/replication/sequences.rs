//! Sequences of replicated tables (serial and identity columns) as part of the applied state.
//!
//! Every member draws the same values because it advances its sequences only by applying
//! the same entries in the same order. But `nextval` is not rolled back with a transaction:
//! an apply that fails for a transient reason and is retried would draw again, and the
//! member's keys would drift from the others'. So the sequences' positions are recorded in
//! the transaction that applies, and whoever locks the applied position next first puts each
//! sequence back where the last committed apply left it.
use pgrx::prelude::*;

use crate::error::Result;

/// The sequences owned by a column of one of the group's replicated tables.
const OWNED: &str = "SELECT d.objid::pg_catalog.regclass AS seq \
     FROM pgp_metadata.replicated_tables r \
     JOIN pg_catalog.pg_namespace n ON n.nspname = r.schema_name \
     JOIN pg_catalog.pg_class t ON t.relnamespace = n.oid AND t.relname = r.table_name \
     JOIN pg_catalog.pg_depend d ON d.refobjid = t.oid \
      AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
      AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i') \
     JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
     WHERE r.group_id = $1";

/// Puts every sequence of `group` back to its recorded position. Call with the applied
/// position locked.
pub fn restore(group: &str) -> Result<()> {
    Spi::run_with_args(
        "SELECT pg_catalog.setval(s.seq, COALESCE(s.last_value, p.seqstart), \
                s.last_value IS NOT NULL) \
         FROM pgp_metadata.sequences s \
         JOIN pg_catalog.pg_sequence p ON p.seqrelid = s.seq \
         WHERE s.group_id = $1 \
           AND pg_catalog.pg_sequence_last_value(s.seq) IS DISTINCT FROM s.last_value",
        &[group.into()],
    )?;
    Ok(())
}

/// Records where every sequence of `group` stands, in the current transaction.
pub fn record(group: &str) -> Result<()> {
    let sql = format!(
        "INSERT INTO pgp_metadata.sequences AS s (group_id, seq, last_value) \
         SELECT $1, o.seq, pg_catalog.pg_sequence_last_value(o.seq) FROM ({OWNED}) o \
         ON CONFLICT (group_id, seq) DO UPDATE SET last_value = excluded.last_value \
         WHERE s.last_value IS DISTINCT FROM excluded.last_value"
    );
    Spi::run_with_args(&sql, &[group.into()])?;
    Ok(())
}
