//! Sequences of replicated tables (serial and identity columns) as part of the applied state.
//!
//! Every member draws the same values because it advances its sequences only by applying
//! the same entries in the same order. But `nextval` is not rolled back with a transaction:
//! an apply that fails for a transient reason and is retried would draw again, and the
//! member's keys would drift from the others'. So the sequences' positions are recorded in
//! the transaction that applies, and whoever locks the applied position next first puts each
//! sequence back where the last committed apply left it.
use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::pg_sys;

use crate::catalog;
use crate::error::Result;

thread_local! {
    /// The sequences of each group's tables, as last looked up; forgotten with the relcache
    /// (see `registry`), since only DDL on the tables changes them.
    static OWNED: RefCell<HashMap<String, Vec<pg_sys::Oid>>> = RefCell::new(HashMap::new());
}

/// Forgets the sequences looked up so far.
pub fn forget() {
    OWNED.with(|o| o.borrow_mut().clear());
}

/// The sequences owned by a column of one of `group`'s replicated tables.
fn owned(group: &str) -> Result<Vec<pg_sys::Oid>> {
    if let Some(known) = OWNED.with(|o| o.borrow().get(group).cloned()) {
        return Ok(known);
    }
    let sequences = catalog::owned_sequences(group)?;
    OWNED.with(|o| o.borrow_mut().insert(group.to_owned(), sequences.clone()));
    Ok(sequences)
}

/// Puts every sequence of `group` back to its recorded position. Call with the applied
/// position locked.
pub fn restore(group: &str) -> Result<()> {
    if owned(group)?.is_empty() {
        return Ok(());
    }
    catalog::restore_sequences(group)
}

/// Records where every sequence of `group` stands, in the current transaction.
pub fn record(group: &str) -> Result<()> {
    let sequences = owned(group)?;
    if sequences.is_empty() {
        return Ok(());
    }
    catalog::record_sequences(group, sequences)
}
