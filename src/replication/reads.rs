//! Strong reads. With `pg_paxos.consistency_model = strong` (the default), a statement that
//! reads a replicated table first has this node apply its group's log through the highest
//! round a majority has accepted, then reads on a snapshot taken after that apply: it sees
//! every write acknowledged before it began, wherever it was made. `optimistic` reads what
//! this node has applied, without a round trip.
//!
//! The apply runs in another backend of this node (a connection to itself), so that it
//! commits whatever the reading transaction does; a transaction that has written to the
//! group itself holds the applied position and applies in place instead.
use pgrx::pg_sys;

use super::registry::group_of;
use super::{cells, outcome, privileged, snapshot};
use crate::error::{PaxosError, Result};
use crate::gucs::{self, Consistency};
use crate::peers;

/// Brings the groups `query` reads up to date and gives it a snapshot that sees them.
pub fn fence(query: *mut pg_sys::QueryDesc) -> Result<()> {
    if gucs::consistency() == Consistency::Optimistic {
        return Ok(());
    }
    let groups = read_groups(query);
    if groups.is_empty() {
        return Ok(());
    }
    let mut needed = Vec::with_capacity(groups.len());
    for group in &groups {
        let through = privileged(|| {
            if outcome::writing(group) {
                return apply_here(group);
            }
            match apply_elsewhere(group) {
                // The other backend waited for a lock, maybe one this statement holds (an
                // ALTER TABLE entry needs the table this statement reads): apply here,
                // where that lock is ours, if this transaction can.
                Err(PaxosError::Peer { reason, .. })
                    if reason.contains(LOCK_TIMEOUT) && can_apply_here() =>
                {
                    apply_here(group)
                }
                other => other,
            }
        })?;
        needed.push((group, through));
    }
    if snapshot::refresh(query) {
        return Ok(());
    }
    // SAFETY: the statement's snapshot, valid before ExecutorStart.
    let current = unsafe { (*query).snapshot };
    for (group, through) in needed {
        let seen = privileged(|| snapshot::sees_applied(current, group));
        if seen < through {
            return Err(PaxosError::StaleSnapshot {
                group: group.clone(),
                seen,
                through,
            });
        }
    }
    Ok(())
}

/// The groups of the replicated tables `query` reads.
fn read_groups(query: *mut pg_sys::QueryDesc) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    // SAFETY: the plan's flat range table.
    unsafe {
        for entry in cells((*(*query).plannedstmt).rtable) {
            let entry = entry as *mut pg_sys::RangeTblEntry;
            if (*entry).rtekind != pg_sys::RTEKind::RTE_RELATION {
                continue;
            }
            if let Some(group) = group_of((*entry).relid) {
                if !groups.contains(&group) {
                    groups.push(group);
                }
            }
        }
    }
    groups
}

/// How the other backend's apply says it gave up waiting for a lock.
const LOCK_TIMEOUT: &str = "lock timeout";

/// Whether this transaction can apply the log itself (and see the result).
fn can_apply_here() -> bool {
    // SAFETY: plain reads of the transaction's settings.
    unsafe { !pg_sys::XactReadOnly && pg_sys::XactIsoLevel == pg_sys::XACT_READ_COMMITTED as i32 }
}

/// Applies `group`'s log through its highest accepted round in this transaction.
fn apply_here(group: &str) -> Result<i64> {
    super::apply::apply_latest(group, "read")
}

/// Has this node, through a connection to itself, apply `group`'s log through the highest
/// round a majority accepted; returns that round. The other backend waits for locks half
/// the request timeout at most, so that one this statement holds shows as a lock timeout.
fn apply_elsewhere(group: &str) -> Result<i64> {
    let own = crate::catalog::require_group(group)?.self_connection;
    let group_literal = crate::connstr::quote_literal(group);
    let lock_wait = gucs::request_timeout().as_millis() / 2;
    let sql = format!(
        "WITH limited AS MATERIALIZED \
         (SELECT pg_catalog.set_config('lock_timeout', '{lock_wait}ms', true)) \
         SELECT pgp_metadata.paxos_apply_latest({group_literal}) FROM limited"
    );
    let reply = peers::exchange_all(&[(own.clone(), sql)]).pop();
    match reply {
        Some(Ok(text)) => text.trim().parse::<i64>().map_err(|e| PaxosError::Peer {
            connection: own,
            reason: format!("unexpected answer {text:?}: {e}"),
        }),
        Some(Err(reason)) => Err(PaxosError::Peer {
            connection: own,
            reason: format!("could not apply the log before a strong read: {reason}"),
        }),
        None => Err(PaxosError::Peer {
            connection: own,
            reason: "no answer".into(),
        }),
    }
}

#[pgrx::pg_schema]
mod pgp_metadata {
    use crate::error::{required, OrRaise};
    use pgrx::prelude::*;

    /// Applies `group`'s log on this node through every round chosen before the call began;
    /// returns the applied position. A strong read calls it over a connection to its own
    /// node, so that the apply commits whatever the reading transaction does.
    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_apply_latest(group: Option<&str>) -> i64 {
        (|| crate::replication::apply::apply_latest(required(group, "group")?, "read"))().or_raise()
    }
}
