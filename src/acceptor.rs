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

fn serve<Req: DeserializeOwned, Rep: Serialize>(
    request: &str,
    handle: impl FnOnce(Req) -> Result<Rep>,
) -> String {
    let result = serde_json::from_str::<Req>(request)
        .map_err(|e| PaxosError::InvalidArgument {
            what: "request",
            reason: e.to_string(),
        })
        .and_then(handle);
    let reply = result.or_raise();
    serde_json::to_string(&reply).unwrap_or_else(|e| panic!("pg_paxos: cannot encode a reply: {e}"))
}

/// Refuses work for groups this node does not (yet, or any longer) belong to, without
/// waiting on a transaction that is creating the group.
fn check_group(group: &str) -> Result<()> {
    catalog::require_group(group).map(|_| ())
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

/// One round's acceptor state, locked for a vote under `ballot`, with the group's range
/// promise applied (held shared, so no range prepare interleaves).
fn lock_for_vote(
    group: &str,
    round: i64,
    ballot: &paxos_core::Ballot,
) -> Result<paxos_core::Acceptor<Entry>> {
    check_round(round)?;
    check_ballot(ballot)?;
    let range = catalog::share_range_promise(group)?;
    let mut state = catalog::lock_acceptor(group, round)?;
    if let Some(range) = &range {
        range.apply(round, &mut state);
    }
    Ok(state)
}

#[pg_schema]
mod pgp_metadata {
    use super::*;

    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_prepare(request: &str) -> String {
        serve(request, |req: PrepareRequest| {
            let mut state = lock_for_vote(&req.group, req.round, &req.ballot)?;
            let reply = state.on_prepare(&req.ballot);
            catalog::store_acceptor(&req.group, req.round, &state)?;
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
            let current = catalog::lock_range_promise(&req.group)?;
            let max_round = catalog::max_accepted_round(&req.group)?;
            let highest = [
                current.as_ref().map(|p| p.ballot.clone()),
                catalog::highest_round_promise(&req.group, req.from_round)?,
            ]
            .into_iter()
            .flatten()
            .max();
            if let Some(promised) = highest.filter(|h| *h > req.ballot) {
                let reply = RangeReply::Reject { promised };
                return Ok(PrepareFromResponse { reply, max_round });
            }
            // Promising more rounds than asked only restricts this acceptor: always safe.
            let from = current.map_or(req.from_round, |p| p.from.min(req.from_round));
            let ballot = req.ballot;
            catalog::set_range_promise(&req.group, &catalog::RangePromise { from, ballot })?;
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

    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_accept(request: &str) -> String {
        serve(request, |req: AcceptRequest| {
            let mut state = lock_for_vote(&req.group, req.round, &req.ballot)?;
            let reply = state.on_accept(&req.ballot, req.entry);
            catalog::store_acceptor(&req.group, req.round, &state)?;
            Ok(reply)
        })
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn paxos_learn(request: &str) -> String {
        serve(request, |req: LearnRequest| {
            catalog::share_range_promise(&req.group)?;
            for d in &req.decisions {
                check_round(d.round)?;
                check_ballot(&d.ballot)?;
            }
            if catalog::record_decisions(&req.group, &req.decisions)? {
                catalog::rebuild_members(&req.group)?;
            }
            Ok(LearnResponse {
                learned_through: catalog::advance_learned(&req.group)?,
            })
        })
    }

    #[pg_extern(stable, parallel_safe)]
    fn paxos_chosen(request: &str) -> String {
        serve(request, |req: ChosenRequest| {
            check_group(&req.group)?;
            catalog::decisions(
                &req.group,
                req.from_round,
                req.through_round,
                req.limit.clamp(1, 10_000),
            )
        })
    }

    #[pg_extern(stable, parallel_safe)]
    fn paxos_max_round(request: &str) -> String {
        serve(request, |req: MaxRoundRequest| {
            check_group(&req.group)?;
            Ok(MaxRoundResponse {
                max_round: catalog::max_accepted_round(&req.group)?,
            })
        })
    }
}
