//! Which group, if any, replicates a relation. The hooks ask for every relation of every
//! statement, so the answer is looked up once per relation and backend, and forgotten when
//! the relation's relcache entry is invalidated: applying a replicate entry invalidates the
//! table on every member when its transaction commits, and leaving a group invalidates all.
use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::privileged;

thread_local! {
    static GROUPS: RefCell<HashMap<pg_sys::Oid, Option<String>>> = RefCell::new(HashMap::new());
    /// Per group, whether its foreign keys stay among its tables (`catalog::foreign_keys_inside`).
    static FKS_INSIDE: RefCell<HashMap<String, bool>> = RefCell::new(HashMap::new());
}

/// Registers the invalidation callback; called from `_PG_init`.
pub fn init() {
    // SAFETY: registration from _PG_init, before any backend work.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget), pg_sys::Datum::from(0)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn forget(_arg: pg_sys::Datum, relation: pg_sys::Oid) {
    super::sequences::forget();
    FKS_INSIDE.with(|f| f.borrow_mut().clear());
    GROUPS.with(|groups| {
        let mut groups = groups.borrow_mut();
        if relation == pg_sys::Oid::INVALID {
            groups.clear();
        } else {
            groups.remove(&relation);
        }
    });
}

/// The group replicating `relation`, or None.
pub fn group_of(relation: pg_sys::Oid) -> Option<String> {
    // System catalogs are never replicated; they are looked up constantly.
    if u32::from(relation) < pg_sys::FirstNormalObjectId || !extension_present() {
        return None;
    }
    if let Some(known) = GROUPS.with(|g| g.borrow().get(&relation).cloned()) {
        return known;
    }
    let group = privileged(|| super::context::exempt(|| lookup(relation)));
    GROUPS.with(|g| g.borrow_mut().insert(relation, group.clone()));
    group
}

/// Whether every foreign key of `group`'s tables joins two of them, as last looked up
/// (forgotten with the relcache: adding a foreign key invalidates its tables).
pub fn foreign_keys_inside(group: &str) -> crate::error::Result<bool> {
    if let Some(known) = FKS_INSIDE.with(|f| f.borrow().get(group).copied()) {
        return Ok(known);
    }
    let inside =
        privileged(|| super::context::exempt(|| crate::catalog::foreign_keys_inside(group)))?;
    FKS_INSIDE.with(|f| f.borrow_mut().insert(group.to_owned(), inside));
    Ok(inside)
}

/// Makes every backend look relations up again after this transaction commits.
pub fn invalidate(relation: Option<pg_sys::Oid>) {
    // SAFETY: queues a transactional invalidation message.
    unsafe {
        match relation {
            Some(oid) => pg_sys::CacheInvalidateRelcacheByRelid(oid),
            None => pg_sys::CacheInvalidateRelcacheAll(),
        }
    }
}

fn lookup(relation: pg_sys::Oid) -> Option<String> {
    Spi::get_one_with_args::<String>(
        "SELECT group_id FROM pgp_metadata.replicated_tables WHERE table_oid = $1",
        &[relation.into()],
    )
    .ok()
    .flatten()
}

/// The replicated tables in schema `schema`.
pub fn replicated_in_schema(schema: &str) -> Vec<pg_sys::Oid> {
    if !extension_present() {
        return Vec::new();
    }
    let tables = privileged(|| {
        super::context::exempt(|| {
            Spi::get_one_with_args::<Vec<pg_sys::Oid>>(
                "SELECT array_agg(table_oid) FROM pgp_metadata.replicated_tables \
                 WHERE schema_name = $1",
                &[schema.into()],
            )
        })
    });
    tables.ok().flatten().unwrap_or_default()
}

/// The replicated tables that `roles` own or hold or granted privileges on, the table's or
/// a column's: what REASSIGN OWNED and DROP OWNED would change.
pub fn replicated_reached_by(roles: &[pg_sys::Oid]) -> Vec<pg_sys::Oid> {
    if roles.is_empty() || !extension_present() {
        return Vec::new();
    }
    let tables = privileged(|| {
        super::context::exempt(|| {
            Spi::get_one_with_args::<Vec<pg_sys::Oid>>(
                "SELECT array_agg(c.oid) FROM pgp_metadata.replicated_tables r \
                 JOIN pg_catalog.pg_class c ON c.oid = r.table_oid \
                 WHERE c.relowner = ANY ($1) \
                    OR EXISTS (SELECT FROM pg_catalog.aclexplode(c.relacl) a \
                               WHERE a.grantee = ANY ($1) OR a.grantor = ANY ($1)) \
                    OR EXISTS (SELECT FROM pg_catalog.pg_attribute t, \
                                   pg_catalog.aclexplode(t.attacl) a \
                               WHERE t.attrelid = c.oid \
                                 AND (a.grantee = ANY ($1) OR a.grantor = ANY ($1)))",
                &[roles.to_vec().into()],
            )
        })
    });
    tables.ok().flatten().unwrap_or_default()
}

/// Whether this database has pg_paxos's list of replicated tables (not while the extension
/// is being created: its own script runs through these hooks).
pub fn extension_present() -> bool {
    // SAFETY: catalog lookups by name that return InvalidOid when missing.
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"pgp_metadata".as_ptr(), true);
        schema != pg_sys::Oid::INVALID
            && pg_sys::get_relname_relid(c"replicated_tables".as_ptr(), schema)
                != pg_sys::Oid::INVALID
    }
}

/// `schema.table`, each part quoted as needed.
pub fn qualified(schema: &str, table: &str) -> String {
    format!(
        "{}.{}",
        pgrx::spi::quote_identifier(schema),
        pgrx::spi::quote_identifier(table)
    )
}

/// The md5 of the table's rows in their text form, sorted: equal on members holding the
/// same rows (with the same collation).
pub fn fingerprint(schema: &str, table: &str) -> crate::error::Result<String> {
    let sql = format!(
        "SELECT pg_catalog.md5(coalesce(pg_catalog.string_agg(t::text, E'\\n' ORDER BY t::text), '')) \
         FROM ONLY {} t",
        qualified(schema, table)
    );
    Ok(Spi::get_one::<String>(&sql)?.unwrap_or_default())
}

/// `schema.name` of a relation, each part quoted as needed.
pub fn relation_name(relation: pg_sys::Oid) -> String {
    // SAFETY: a catalog lookup by OID; NULL when the relation is gone.
    unsafe {
        let schema = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relation));
        let name = pg_sys::get_rel_name(relation);
        if schema.is_null() || name.is_null() {
            return format!("relation {}", u32::from(relation));
        }
        let quote = |s: *mut std::ffi::c_char| {
            std::ffi::CStr::from_ptr(pg_sys::quote_identifier(s))
                .to_string_lossy()
                .into_owned()
        };
        format!("{}.{}", quote(schema), quote(name))
    }
}
