//! The endpoints that peers call: prepare, accept, learn, and the read-only catch-up and
//! max-round queries. Each takes one JSON request and answers one JSON reply.
//!
//! Invariant: acceptor state is changed under a row lock and committed before the caller
//! sees the reply: the reply leaves the server only when the transaction has ended, and
//! proposers connect with synchronous_commit on (see `connstr::config`). Only superusers and roles granted EXECUTE may call them.
use pgrx::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::catalog;
use crate::error::{OrRaise, PaxosError, Result};
use crate::messages::*;
use paxos_core::{BatchReply, PrepareFrom, PrepareReply, RangePromise};

/// Decodes a JSON request, handles it, and encodes the reply (or raises the error). Only
/// the role of the member connection strings (or a superuser) is served.
pub fn serve<Req: DeserializeOwned, Rep: Serialize>(
    request: &str,
    handle: impl FnOnce(Req) -> Result<Rep>,
) -> String {
    let result = require_member_role()
        .and_then(|()| {
            serde_json::from_str::<Req>(request).map_err(|e| PaxosError::InvalidArgument {
                what: "request",
                reason: e.to_string(),
            })
        })
        .and_then(handle);
    let reply = result.or_raise();
    serde_json::to_string(&reply).unwrap_or_else(|e| panic!("pg_paxos: cannot encode a reply: {e}"))
}

thread_local! {
    /// The role this backend last found to be a member role.
    static MEMBER_ROLE: std::cell::Cell<Option<pgrx::pg_sys::Oid>> =
        const { std::cell::Cell::new(None) };
}

/// Refuses a caller that is neither a superuser nor the role named in a member connection
/// string: EXECUTE granted on an endpoint is not enough (a member role is as powerful as a
/// superuser, since the applier runs entries as any author).
pub fn require_member_role() -> Result<()> {
    // SAFETY: plain reads of the current role.
    let (role, superuser) = unsafe { (pgrx::pg_sys::GetUserId(), pgrx::pg_sys::superuser()) };
    if superuser || MEMBER_ROLE.with(std::cell::Cell::get) == Some(role) {
        return Ok(());
    }
    // SAFETY: the name of an existing role.
    let name = unsafe {
        std::ffi::CStr::from_ptr(pgrx::pg_sys::GetUserNameFromId(role, false))
            .to_string_lossy()
            .into_owned()
    };
    let members = crate::replication::privileged(catalog::member_connections)?;
    if members
        .iter()
        .any(|c| crate::connstr::user(c).as_deref() == Some(name.as_str()))
    {
        MEMBER_ROLE.with(|m| m.set(Some(role)));
        return Ok(());
    }
    Err(PaxosError::NotMemberRole(name))
}

/// Refuses work for groups this node does not (yet, or any longer) belong to, without
/// waiting on a transaction that is creating the group.
/// The most rounds one accept request may vote on.
const MAX_ACCEPT_BATCH: usize = 1000;

fn check_group(group: &str) -> Result<()> {
    catalog::require_group(group).map(|_| ())
}

/// The round at which `group` was dropped here, or an error when this node does not know
/// it at all; `None` while it is a member.
fn dropped(group: &str) -> Result<Option<i64>> {
    match catalog::require_group(group) {
        Ok(_) => Ok(None),
        Err(PaxosError::Dropped { round, .. }) => Ok(Some(round)),
        Err(error) => Err(error),
    }
}

fn check_ballot(ballot: &paxos_core::Ballot) -> Result<()> {
    if !ballot.is_valid() {
        return Err(PaxosError::InvalidArgument {
            what: "ballot",
            reason: format!(
                "number {} is outside 0..={}",
                ballot.number,
                paxos_core::Ballot::MAX_NUMBER
            ),
        });
    }
    Ok(())
}

fn check_round(round: i64) -> Result<()> {
    if round < 0 {
        return Err(PaxosError::InvalidArgument {
            what: "round",
            reason: format!("{round} is negative"),
        });
    }
    Ok(())
}

/// Rounds `first..=last` locked for a vote under `ballot`: their states, with the group's
/// range promise, which no range prepare changes until the vote commits. Rounds this
/// acceptor forgot are refused.
fn lock_for_vote(
    group: &str,
    first: i64,
    last: i64,
    ballot: &paxos_core::Ballot,
) -> Result<(Option<RangePromise>, Vec<paxos_core::Acceptor<Entry>>)> {
    check_round(first)?;
    check_ballot(ballot)?;
    crate::locks::rounds(group, first, last);
    let voting = catalog::voting_state(group, first, last)?;
    refuse_compacted(group, first, voting.compacted_through)?;
    Ok((voting.range, voting.states))
}

/// Refuses a message about rounds from `first` on when this acceptor forgot `first`.
fn refuse_compacted(group: &str, first: i64, compacted_through: i64) -> Result<()> {
    if paxos_core::compaction::refuses(first, compacted_through) {
        return Err(PaxosError::Compacted {
            group: group.to_owned(),
            round: first,
            through: compacted_through,
            member: "this member".into(),
            donor: None,
        });
    }
    Ok(())
}

#[pg_schema]
mod pgp_metadata {
    use super::*;

    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_prepare(request: &str) -> String {
        serve(request, |req: PrepareRequest| {
            let (range, mut states) = lock_for_vote(&req.group, req.round, req.round, &req.ballot)?;
            let state = &mut states[0];
            if let Some(range) = &range {
                range.apply(req.round, state);
            }
            let would_promise = matches!(
                state.clone().on_prepare(&req.ballot),
                PrepareReply::Promise { .. }
            );
            let leased = would_promise
                .then(|| {
                    crate::lease::round_refusal(&req.group, &req.ballot, range.as_ref(), req.round)
                })
                .flatten();
            if let Some(promised) = leased {
                return Ok(PrepareResponse {
                    reply: PrepareReply::Reject { promised },
                    max_round: catalog::max_accepted_round(&req.group)?,
                });
            }
            let reply = state.on_prepare(&req.ballot);
            catalog::store_acceptors(&req.group, &[(req.round, &*state)])?;
            Ok(PrepareResponse {
                reply,
                max_round: catalog::max_accepted_round(&req.group)?,
            })
        })
    }

    /// Phase 1 for every round from `from_round` on: promised only if no such round holds a
    /// higher promise; the reply lists every value accepted there. Holding the range promise
    /// row exclusively, it never interleaves with a vote (votes hold it shared).
    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_prepare_from(request: &str) -> String {
        serve(request, |req: PrepareFromRequest| {
            check_round(req.from_round)?;
            check_ballot(&req.ballot)?;
            crate::locks::range(&req.group);
            let compacted = catalog::compacted_through(&req.group)?;
            refuse_compacted(&req.group, req.from_round, compacted)?;
            let current = catalog::range_promise(&req.group)?;
            let highest = catalog::highest_round_promise(&req.group, req.from_round)?;
            let max_round = catalog::max_accepted_round(&req.group)?;
            let promise = match paxos_core::prepare_from(
                current.as_ref(),
                highest.as_ref(),
                req.from_round,
                &req.ballot,
            ) {
                PrepareFrom::Reject { promised } => {
                    let reply = RangeReply::Reject { promised };
                    return Ok(PrepareFromResponse { reply, max_round });
                }
                PrepareFrom::Promise(promise) => promise,
            };
            // Promised, unless a lease binds this acceptor to another ballot for now.
            if let Some(promised) = crate::lease::refusal(&req.group, &req.ballot, current.as_ref())
            {
                let reply = RangeReply::Reject { promised };
                return Ok(PrepareFromResponse { reply, max_round });
            }
            catalog::set_range_promise(&req.group, &promise)?;
            catalog::set_leader(&req.group, req.leader.as_deref())?;
            let accepted = catalog::accepted_from(&req.group, req.from_round)?
                .into_iter()
                .map(|(round, ballot, entry)| Reported {
                    round,
                    ballot,
                    entry,
                })
                .collect();
            let reply = RangeReply::Promise { accepted };
            Ok(PrepareFromResponse { reply, max_round })
        })
    }

    /// Grants the leader's ballot a lease when this acceptor promised it for the leader's
    /// range and nothing higher at any round there (see `lease`). Holding the range lock
    /// exclusively, it reads the promises every earlier prepare committed, and no prepare
    /// runs until the grant is recorded. A request for 0 ms releases the ballot instead:
    /// its leader gave it up.
    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_lease(request: &str) -> String {
        serve(request, |req: LeaseRequest| {
            check_group(&req.group)?;
            check_ballot(&req.ballot)?;
            if req.duration_ms == 0 {
                crate::lease::release(&req.group, &req.ballot);
                return Ok(LeaseResponse { granted_ms: 0 });
            }
            crate::locks::range(&req.group);
            let range = catalog::range_promise(&req.group)?;
            let highest = match &range {
                Some(r) => catalog::highest_round_promise(&req.group, r.from)?,
                None => None,
            };
            let requested = req.duration_ms.saturating_mul(1_000_000);
            let granted = crate::lease::grant(
                &req.group,
                &req.ballot,
                requested,
                range.as_ref(),
                highest.as_ref(),
            );
            Ok(LeaseResponse {
                granted_ms: granted / 1_000_000,
            })
        })
    }

    /// Votes on consecutive rounds in one transaction, so a batch costs one commit.
    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_accept(request: &str) -> String {
        serve(request, |req: AcceptRequest| {
            if req.entries.is_empty() || req.entries.len() > MAX_ACCEPT_BATCH {
                return Err(PaxosError::InvalidArgument {
                    what: "entries",
                    reason: format!("expected 1 to {MAX_ACCEPT_BATCH} entries"),
                });
            }
            let last = req.first_round + req.entries.len() as i64 - 1;
            let (range, states) = lock_for_vote(&req.group, req.first_round, last, &req.ballot)?;
            let mut voted = states.clone();
            let count = req.entries.len();
            let replies = match paxos_core::accept_batch(
                range.as_ref(),
                req.first_round,
                &mut voted,
                &req.ballot,
                req.entries,
            ) {
                BatchReply::Voted(replies) => replies,
                BatchReply::Reject { promised } => {
                    vec![paxos_core::AcceptReply::Reject { promised }; count]
                }
            };
            let changed: Vec<(i64, &paxos_core::Acceptor<Entry>)> = (req.first_round..)
                .zip(states.iter().zip(&voted))
                .filter(|(_, (before, after))| before != after)
                .map(|(round, (_, after))| (round, after))
                .collect();
            catalog::store_acceptors(&req.group, &changed)?;
            if let Some(through) = req.chosen_through.filter(|t| *t < req.first_round) {
                if catalog::mark_chosen_under(&req.group, &req.ballot, through)? {
                    catalog::advance_learned(&req.group)?;
                    crate::applier::notify(&req.group);
                }
            }
            Ok(replies)
        })
    }

    /// The leading member's word that rounds are chosen (see `AnnounceRequest`); wakes this
    /// node's applier when it learned something. Returns how far the log is known here.
    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_announce(request: &str) -> String {
        serve(request, |req: AnnounceRequest| {
            check_group(&req.group)?;
            // What it records is known on a majority already: a crash here only forgets it.
            crate::replication::context::pin_for_transaction("synchronous_commit", "off");
            check_round(req.through)?;
            check_ballot(&req.ballot)?;
            let mut learned = catalog::learned_through(&req.group)?;
            if req.through > learned
                && catalog::mark_chosen_under(&req.group, &req.ballot, req.through)?
            {
                learned = catalog::advance_learned(&req.group)?;
                crate::applier::notify(&req.group);
            }
            Ok(LearnResponse {
                learned_through: learned,
            })
        })
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_learn(request: &str) -> String {
        serve(request, |req: LearnRequest| {
            check_group(&req.group)?;
            for d in &req.decisions {
                check_round(d.round)?;
                check_ballot(&d.ballot)?;
            }
            if catalog::record_decisions(&req.group, &req.decisions)? {
                catalog::rebuild_members(&req.group)?;
            }
            crate::applier::notify(&req.group);
            Ok(LearnResponse {
                learned_through: catalog::advance_learned(&req.group)?,
            })
        })
    }

    #[pg_extern(stable, parallel_safe)]
    fn paxos_chosen(request: &str) -> String {
        serve(request, |req: ChosenRequest| {
            // A group dropped here still serves its last rounds.
            let dropped_at = dropped(&req.group)?;
            let (chosen, accepted) = catalog::accepted_rounds(
                &req.group,
                req.from_round,
                req.through_round,
                req.limit.clamp(1, 10_000),
            )?;
            Ok(ChosenResponse {
                chosen,
                accepted,
                compacted_through: Some(catalog::compacted_through(&req.group)?),
                dropped_at,
            })
        })
    }

    #[pg_extern(stable, parallel_safe)]
    fn paxos_max_round(request: &str) -> String {
        serve(request, |req: MaxRoundRequest| {
            // A group dropped here ended at its drop round.
            if let Some(round) = dropped(&req.group)? {
                return Ok(MaxRoundResponse { max_round: round });
            }
            Ok(MaxRoundResponse {
                max_round: catalog::max_accepted_round(&req.group)?,
            })
        })
    }
}
