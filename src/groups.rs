//! Creating, joining and leaving groups. Membership changes are log entries, effective from
//! the round after the one they are chosen at.
//!
//! Invariant: a failed create or join leaves nothing behind. Local writes happen in the
//! caller's transaction (an error rolls them back); a join entry already chosen when the
//! rest of the join fails is undone by a leave entry.
use paxos_core::Ballot;
use pgrx::pg_sys::PgTryBuilder;
use pgrx::prelude::*;

use crate::catalog;
use crate::connstr;
use crate::error::{OrRaise, PaxosError, Result};
use crate::ids;
use crate::messages::*;
use crate::multipaxos::Log;
use crate::node;
use crate::peers;
use crate::state_copy::{self, Existing};

const COPY_BATCH: i64 = 5000;

pub fn require_superuser(action: &'static str) -> Result<()> {
    // SAFETY: superuser() only reads the current user's catalog entry.
    if unsafe { pg_sys::superuser() } {
        Ok(())
    } else {
        Err(PaxosError::NotSuperuser(action))
    }
}

pub fn validate_group_name(group: &str) -> Result<()> {
    let invalid = |reason: &str| PaxosError::InvalidArgument {
        what: "group id",
        reason: reason.to_owned(),
    };
    if group.is_empty() {
        return Err(invalid("it is empty"));
    }
    if group.len() > node::NAME_BYTES {
        return Err(node::name_too_long(group));
    }
    if group.chars().any(char::is_control) {
        return Err(invalid("it contains control characters"));
    }
    Ok(())
}

/// Who a connection string reaches: system identifier, database and port.
fn identity_sql() -> &'static str {
    "SELECT pg_catalog.format('%s/%s/%s', system_identifier, pg_catalog.current_database(), \
     pg_catalog.current_setting('port')) FROM pg_catalog.pg_control_system()"
}

/// Checks that `connection` reaches this very server and database, so that the members can
/// reach this node by it.
fn verify_self(connection: &str) -> Result<()> {
    let local = Spi::get_one::<String>(identity_sql())?.unwrap_or_default();
    let reply = peers::exchange_all(&[(connection.to_owned(), identity_sql().to_owned())])
        .pop()
        .unwrap_or_else(|| Err("no answer".into()));
    match reply {
        Ok(remote) if remote == local => Ok(()),
        Ok(remote) => Err(PaxosError::NotSelf {
            connection: connstr::redact(connection),
            reason: format!("it reaches {remote}, this node is {local} (system id/database/port)"),
        }),
        Err(reason) => Err(PaxosError::Unreachable {
            connection: connstr::redact(connection),
            reason,
        }),
    }
}

/// Calls endpoint `function` on one member.
fn call<Rep: serde::de::DeserializeOwned>(
    member: &str,
    function: &str,
    request: &impl serde::Serialize,
) -> Result<Rep> {
    peers::call(member, function, request).map_err(|reason| PaxosError::Peer {
        connection: connstr::redact(member),
        reason,
    })
}

pub fn create(group: &str, founder: &str) -> Result<()> {
    require_superuser("create paxos groups")?;
    validate_group_name(group)?;
    connstr::validate(founder)?;
    if catalog::group(group)?.is_some() {
        return Err(PaxosError::GroupExists(group.to_owned()));
    }
    check_not_dropped(group)?;
    verify_self(founder)?;
    catalog::insert_group(group, founder, 0)?;
    node::forget(group);
    let founding = Decision {
        round: 0,
        ballot: Ballot::new(0, ids::ballot_owner("create")),
        entry: Entry {
            id: ids::proposal_id(),
            kind: EntryKind::Join,
            value: Some(founder.to_owned()),
        },
    };
    catalog::record_decisions(group, &[founding])?;
    catalog::rebuild_members(group)?;
    catalog::advance_learned(group)?;
    crate::applier::start_at_commit(group)
}

pub fn join(group: &str, existing: &str, own: &str) -> Result<i64> {
    require_superuser("join paxos groups")?;
    validate_group_name(group)?;
    connstr::validate(existing)?;
    connstr::validate(own)?;
    if catalog::group(group)?.is_some() {
        return Err(PaxosError::GroupExists(group.to_owned()));
    }
    check_not_dropped(group)?;
    verify_self(own)?;
    // The member's state is copied before this node votes: a join that fails there (a
    // table missing here, a cancel, a timeout, the node's death) leaves no member behind.
    catalog::insert_group(group, own, -1)?;
    node::forget(group);
    let copied = state_copy::copy_from(group, existing, Existing::MustBeEmpty)?;

    let change = MembershipRequest {
        group: group.to_owned(),
        connection: own.to_owned(),
        kind: EntryKind::Join,
    };
    let joined: MembershipResponse = call(existing, "paxos_change_membership", &change)?;
    // This node votes from here on: should the rest (the few rounds up to the join) fail,
    // with a PostgreSQL error too, a leave entry undoes the join.
    let undo = || {
        let leave = MembershipRequest {
            kind: EntryKind::Leave,
            ..change.clone()
        };
        call::<MembershipResponse>(existing, "paxos_change_membership", &leave).map(|_| ())
    };
    let finish = || {
        copy_log(group, existing, copied + 1, Some(joined.round))?;
        catalog::set_leader(group, joined.leader.as_deref())?;
        crate::replication::apply::apply_through(group, "join", joined.round)
    };
    let finished = PgTryBuilder::new(std::panic::AssertUnwindSafe(finish))
        .catch_others(|error| {
            if let Err(undo_error) = undo() {
                pgrx::warning!("{}", undo_failed(group, own, &undo_error));
            }
            error.rethrow()
        })
        .execute();
    finished.map_err(|error| match undo() {
        Ok(()) => error,
        Err(undo_error) => PaxosError::Peer {
            connection: connstr::redact(existing),
            reason: format!(
                "joining failed ({error}); {}",
                undo_failed(group, own, &undo_error)
            ),
        },
    })?;
    crate::applier::start_at_commit(group)?;
    Ok(joined.round)
}

fn undo_failed(group: &str, own: &str, error: &PaxosError) -> String {
    format!(
        "removing the half-joined member failed ({error}): run \
         paxos_remove_member('{group}', '{}') on a member",
        own.replace('\'', "''")
    )
}

/// Copies the chosen rounds from `from` through `through` (or as far as `existing` knows)
/// from `existing` into this node's catalog; none of it is applied yet. Returns how far the
/// log is known here without a gap.
fn copy_log(group: &str, existing: &str, from: i64, through: Option<i64>) -> Result<i64> {
    let mut next = from;
    while through.is_none_or(|t| next <= t) {
        let request = ChosenRequest {
            group: group.to_owned(),
            from_round: next,
            through_round: through.unwrap_or(i64::MAX),
            limit: COPY_BATCH,
        };
        let batch = call::<ChosenResponse>(existing, "paxos_chosen", &request)?.chosen;
        let Some(last) = batch.last().map(|d| d.round) else {
            break;
        };
        catalog::record_decisions(group, &batch)?;
        next = last + 1;
    }
    catalog::rebuild_members(group)?;
    let learned = catalog::advance_learned(group)?;
    if let Some(through) = through.filter(|t| learned < *t) {
        return Err(PaxosError::Peer {
            connection: connstr::redact(existing),
            reason: format!(
                "its log has a gap at round {} (joined at round {through})",
                learned + 1
            ),
        });
    }
    Ok(learned)
}

pub fn leave(group: &str) -> Result<i64> {
    require_superuser("leave paxos groups")?;
    let info = catalog::require_group(group)?;
    let log = Log::open(group, "leave")?;
    let next = log.learned_through() + 1;
    let round = if catalog::membership(group)?.voters(next) == [info.self_connection.as_str()] {
        // The last member: nobody else needs to hear of it.
        log.learned_through()
    } else {
        crate::leader::append(
            group,
            "leave",
            Entry {
                id: ids::proposal_id(),
                kind: EntryKind::Leave,
                value: Some(info.self_connection.clone()),
            },
        )?
    };
    drop_here(group)?;
    Ok(round)
}

/// Removes `member`, another member's connection string as the group knows it, from
/// `group`: for a member that is gone for good. It is a leave entry, so a majority of the
/// current members (the lost one counted) must answer. The removed node, should it come
/// back, learns that it is out from the members and drops the group itself.
pub fn remove_member(group: &str, member: &str) -> Result<i64> {
    require_superuser("remove members of paxos groups")?;
    let own = catalog::require_group(group)?.self_connection;
    if member == own {
        return Err(PaxosError::InvalidArgument {
            what: "member",
            reason: "is this node: use paxos_leave_group() to leave".into(),
        });
    }
    // The members as of the end of the log, not as far as this node knows it.
    let mut log = Log::open(group, "remove")?;
    let highest = log.max_group_round()?;
    log.know_through(highest)?;
    let voters = log.voters(log.learned_through() + 1);
    if !voters.iter().any(|v| v == member) {
        return Err(PaxosError::NotAMember {
            group: group.to_owned(),
            member: connstr::redact(member),
            members: voters
                .iter()
                .map(|v| connstr::redact(v))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    crate::leader::append(
        group,
        "remove",
        Entry {
            id: ids::proposal_id(),
            kind: EntryKind::Leave,
            value: Some(member.to_owned()),
        },
    )
}

/// Ends `group` on every member: appends its drop entry, has every reachable member apply
/// the log through it (each drops the group there), then this node; returns the round.
/// Members that did not answer drop it when they next reach a member.
pub fn drop_group(group: &str) -> Result<i64> {
    require_superuser("drop paxos groups")?;
    let own = catalog::require_group(group)?.self_connection;
    let entry = Entry {
        id: ids::proposal_id(),
        kind: EntryKind::Drop,
        value: None,
    };
    let round = crate::leader::append(group, "drop", entry)?;
    let others: Vec<String> = catalog::membership(group)?
        .voters(round)
        .into_iter()
        .filter(|m| *m != own)
        .map(str::to_owned)
        .collect();
    let request = DropRequest {
        group: group.to_owned(),
        round,
    };
    let sql = peers::endpoint_sql("paxos_await_drop", &request);
    let requests: Vec<(String, String)> = others.iter().map(|m| (m.clone(), sql.clone())).collect();
    let missing: Vec<String> = peers::exchange_all(&requests)
        .into_iter()
        .zip(&others)
        .filter_map(|(outcome, member)| {
            outcome
                .err()
                .map(|e| format!("{}: {e}", connstr::redact(member)))
        })
        .collect();
    if !missing.is_empty() {
        pgrx::warning!(
            "paxos group \"{group}\" is dropped, but these members did not confirm it; each \
             drops it when it next reaches a member: {}",
            missing.join("; ")
        );
    }
    await_drop(group, round)?;
    Ok(round)
}

/// Waits until this node's applier has applied `group`'s log through its drop entry at
/// `round`, which drops the group here; returns that round.
fn await_drop(group: &str, round: i64) -> Result<i64> {
    let waited = crate::applier::learn_and_wait(group, "drop", round);
    match (catalog::dropped_at(group)?, waited) {
        (Some(dropped), _) => Ok(dropped),
        (None, Err(error)) => Err(error),
        (None, Ok(_)) => Err(PaxosError::RoundOutOfReach {
            group: group.to_owned(),
            round,
            reason: "it is applied here and did not drop the group".into(),
        }),
    }
}

/// Drops `group` here as its entry of `round` says, and remembers it. Its last rounds stay
/// (as many as compaction left): a member that was down meanwhile fetches them from here,
/// applies every round up to the drop, and drops the group itself.
pub fn dropped_here(group: &str, round: i64) -> Result<()> {
    forget_here(group, true)?;
    catalog::record_dropped(group, round)
}

/// Refuses a group id that was dropped here.
fn check_not_dropped(group: &str) -> Result<()> {
    match catalog::dropped_at(group)? {
        Some(round) => Err(PaxosError::DroppedId {
            group: group.to_owned(),
            round,
        }),
        None => Ok(()),
    }
}

/// Drops `group` on this node: its log and membership go, its tables stay as ordinary
/// tables.
pub fn drop_here(group: &str) -> Result<()> {
    forget_here(group, false)
}

fn forget_here(group: &str, keep_log: bool) -> Result<()> {
    catalog::delete_group(group, keep_log)?;
    // Its tables are no longer replicated: every backend looks them up again.
    crate::replication::registry::invalidate(None);
    node::forget(group);
    peers::forget_all();
    Ok(())
}

#[pg_schema]
mod pgp_metadata {
    use super::*;

    /// Called on each member by the node that drops a group: returns the drop's round once
    /// the group is dropped here.
    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_await_drop(request: &str) -> String {
        crate::acceptor::serve(request, |req: DropRequest| {
            validate_group_name(&req.group)?;
            await_drop(&req.group, req.round)
        })
    }

    /// Called on an existing member by a node that joins or undoes a failed join.
    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_change_membership(request: &str) -> String {
        let result = serde_json::from_str::<MembershipRequest>(request)
            .map_err(|e| PaxosError::InvalidArgument {
                what: "request",
                reason: e.to_string(),
            })
            .and_then(|req| {
                crate::acceptor::require_member_role()?;
                validate_group_name(&req.group)?;
                connstr::validate(&req.connection)?;
                if !req.kind.changes_membership() {
                    return Err(PaxosError::InvalidArgument {
                        what: "kind",
                        reason: "must be join or leave".into(),
                    });
                }
                let entry = Entry {
                    id: ids::proposal_id(),
                    kind: req.kind,
                    value: Some(req.connection),
                };
                let round = crate::leader::append(&req.group, "membership", entry)?;
                // The joining node copies the log through `round` from this one.
                Log::open(&req.group, "membership")?.learn_through(round)?;
                let (leader, _) = catalog::leader(&req.group)?;
                let own = catalog::require_group(&req.group)?.self_connection;
                Ok(MembershipResponse {
                    round,
                    leader: leader.or(Some(own)),
                })
            });
        serde_json::to_string(&result.or_raise()).unwrap_or_default()
    }
}
