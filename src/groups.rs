//! Creating, joining and leaving groups. Membership changes are log entries, effective from
//! the round after the one they are chosen at.
//!
//! Invariant: a failed create leaves nothing behind, nor does a join that fails before its
//! join entry is chosen; after that, the joined node is a member whose applier goes on (see
//! `join`). Membership changes go through the log one entry at a time.
use paxos_core::Ballot;
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

/// Calls endpoint `function` on one member (a membership change, which may wait for a lease).
fn call<Rep: serde::de::DeserializeOwned>(
    member: &str,
    function: &str,
    request: &impl serde::Serialize,
) -> Result<Rep> {
    peers::call_past_lease(member, function, request).map_err(|reason| PaxosError::Peer {
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
    forget_shared(group);
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

/// Joins `group` through member `existing`, in two steps. First this node becomes a learner,
/// in a transaction of its own that commits: it copies the member's state and applies the
/// log from there, voting on nothing. Then the member appends the join entry, and this node
/// votes from the round after it, once its applier applied it. A join that fails or is cut
/// short before the join entry leaves no member behind (and no learner, unless this node
/// dies right after the first step: `paxos_leave_group` here removes it, and joining again
/// resumes from it); one that fails after it leaves a member whose applier goes on.
pub fn join(group: &str, existing: &str, own: &str) -> Result<i64> {
    require_superuser("join paxos groups")?;
    validate_group_name(group)?;
    connstr::validate(existing)?;
    connstr::validate(own)?;
    match catalog::group(group)? {
        Some(found) if found.self_connection != own || votes_here(group, own)? => {
            return Err(PaxosError::GroupExists(group.to_owned()))
        }
        // A learner left by an earlier join: resumed.
        Some(_) => {}
        None => {
            check_not_dropped(group)?;
            verify_self(own)?;
            become_learner(group, existing, own)?;
        }
    }
    let change = MembershipRequest {
        group: group.to_owned(),
        connection: own.to_owned(),
        kind: EntryKind::Join,
    };
    let joined: MembershipResponse = call(existing, "paxos_change_membership", &change)?;
    // This node votes from here on, whatever follows: its applier applies the join.
    if let Err(error) = crate::applier::learn_and_wait(group, "join", joined.round) {
        pgrx::warning!(
            "joined paxos group \"{group}\" at round {}, which this node has not applied yet: \
             {error}",
            joined.round
        );
    }
    catalog::set_leader(group, joined.leader.as_deref())?;
    Ok(joined.round)
}

/// Whether `own` votes in `group` as far as this node knows the log.
fn votes_here(group: &str, own: &str) -> Result<bool> {
    let next = catalog::learned_through(group)? + 1;
    Ok(catalog::membership(group)?.voters(next).contains(&own))
}

/// Makes this node a learner of `group` in a transaction of its own, committed before this
/// returns: a session to this very node runs `paxos_become_learner`. A cancel here cancels
/// it there.
fn become_learner(group: &str, existing: &str, own: &str) -> Result<i64> {
    let session = peers::Session::open(own).map_err(|reason| PaxosError::Unreachable {
        connection: connstr::redact(own),
        reason,
    })?;
    let request = LearnerRequest {
        group: group.to_owned(),
        existing: existing.to_owned(),
        own: own.to_owned(),
    };
    let answer = session
        .query_long(&peers::endpoint_sql("paxos_become_learner", &request))
        .map_err(|failure| PaxosError::OwnSession {
            sqlstate: failure.sqlstate.unwrap_or_else(|| "08000".into()),
            message: failure.message,
        })?;
    peers::parse(&answer.unwrap_or_default()).map_err(|reason| PaxosError::Peer {
        connection: connstr::redact(own),
        reason,
    })
}

pub fn leave(group: &str) -> Result<i64> {
    require_superuser("leave paxos groups")?;
    let info = catalog::require_group(group)?;
    let mut log = Log::open(group, "leave")?;
    let own = info.self_connection.as_str();
    if !log
        .voters(log.learned_through() + 1)
        .iter()
        .any(|v| v == own)
    {
        // A learner: it votes nowhere, unless a join of it was chosen that it has not
        // learned yet.
        let highest = log.max_group_round()?;
        log.know_through(highest)?;
        if !log
            .voters(log.learned_through() + 1)
            .iter()
            .any(|v| v == own)
        {
            drop_here(group)?;
            return Ok(log.learned_through());
        }
    }
    let next = log.learned_through() + 1;
    let round = if catalog::membership(group)?.voters(next) == [own] {
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
    // The applied position first, then the range lock, in the order appliers and writers
    // take them (an applier that applies this node's leave holds the position when it
    // comes here). The position waits for a writer's open transaction; the range lock then
    // keeps votes and learns, which lock rounds in an order of their own, away from the
    // deletion.
    match catalog::lock_applied(group) {
        // Dropped meanwhile by the session that held the position: its applier applied
        // this node's leave first.
        Err(PaxosError::UnknownGroup(_)) => {}
        Err(error) => return Err(error),
        Ok(_) => {
            crate::locks::range(group);
            catalog::delete_group(group, keep_log)?;
        }
    }
    // Its tables are no longer replicated: every backend looks them up again.
    crate::replication::registry::invalidate(None);
    forget_shared(group);
    peers::forget_all();
    Ok(())
}

#[pg_schema]
mod pgp_metadata {
    use super::*;

    /// Called by this very node, over a session of its own, as the first step of a join:
    /// copies `existing`'s state and starts applying, as a learner; returns the round the
    /// copy is the state of. Commits with the call.
    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_become_learner(request: &str) -> String {
        crate::acceptor::serve(request, |req: LearnerRequest| {
            validate_group_name(&req.group)?;
            connstr::validate(&req.existing)?;
            connstr::validate(&req.own)?;
            crate::replication::privileged(|| {
                if catalog::group(&req.group)?.is_some() {
                    return Err(PaxosError::GroupExists(req.group.clone()));
                }
                check_not_dropped(&req.group)?;
                catalog::insert_group(&req.group, &req.own, -1)?;
                forget_shared(&req.group);
                let copied =
                    state_copy::copy_from(&req.group, &req.existing, Existing::MustBeEmpty)?;
                crate::applier::start_at_commit(&req.group)?;
                Ok(copied)
            })
        })
    }

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
                // The joining node learns the rounds through `round` from this one.
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

/// Forgets what this node's processes share about `group` (its leadership, its counts): it
/// was created, joined or left here, and nothing of an earlier group of the same name may
/// be taken for it.
fn forget_shared(group: &str) {
    node::forget(group);
    crate::status::counters::forget(group);
}
