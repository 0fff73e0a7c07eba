//! Strong reads. With `pg_paxos.consistency_model = strong` (the default), a statement that
//! reads a replicated table first asks a majority for the highest round accepted in its
//! group, waits until this node's applier has applied through it, then reads on a snapshot
//! taken after that: it sees every write acknowledged before it began, wherever it was made.
//! On the leading member, while it holds a leader lease (`pg_paxos.lease_duration`), the
//! bound is the highest round its leadership knows of, without a round trip (see `lease`).
//! `optimistic` reads what this node has applied, without a round trip.
//!
//! A transaction that has written to the group itself holds the applied position, which the
//! applier then cannot move: it applies in place instead (see `apply::apply_latest`).
use pgrx::pg_sys;

use super::registry::group_of;
use super::{cells, outcome, privileged, snapshot};
use crate::error::{PaxosError, Result};
use crate::gucs::{self, Consistency};
use crate::multipaxos::Log;

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
                return super::apply::apply_latest(group, "read");
            }
            let bound = match crate::leader::lease::read_bound(group) {
                Some(bound) => bound,
                None => Log::open(group, "read")?.max_group_round()?,
            };
            crate::applier::wait_applied(group, bound)?;
            Ok(bound)
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
