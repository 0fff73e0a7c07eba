//! Typed access to the pgp_metadata catalog: the one place that holds its SQL.
//!
//! Values always travel as bind parameters. Acceptor state is read with a row lock and written
//! back in the same transaction, so concurrent messages for one round are serialized.
use std::cell::RefCell;

use paxos_core::{Acceptor, Ballot, Member, Membership, RangePromise};
use pgrx::datum::DatumWithOid;
use pgrx::spi::{SpiClient, SpiHeapTupleData, SpiResult, SpiTupleTable};
use pgrx::{PgOid, Spi};

use crate::error::{PaxosError, Result};
use crate::locks;
use crate::messages::{Decision, Entry, EntryKind};
use crate::plans::{self, Plans};

thread_local! {
    /// The endpoints run the same few statements thousands of times, and parsing and
    /// planning them each time cost more than running them.
    static PLANS: RefCell<Plans<&'static str>> = RefCell::new(Plans::new(usize::MAX));
}

/// Runs one of this module's statements through its kept plan.
fn exec<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &'static str,
    args: &[DatumWithOid],
) -> SpiResult<SpiTupleTable<'conn>> {
    let plan = plans::get_or_prepare(&PLANS, sql, || {
        let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
        Ok(client.prepare_mut(sql, &types)?.keep())
    })?;
    crate::replication::durability::own_work(|| client.update(&*plan, None, args))
}

/// The first column of the first row of a statement, if any.
fn value<T: pgrx::FromDatum + pgrx::IntoDatum>(
    sql: &'static str,
    args: &[DatumWithOid],
) -> SpiResult<Option<T>> {
    Spi::connect_mut(|client| {
        let rows = exec(client, sql, args)?;
        match rows.into_iter().next() {
            Some(row) => row.get::<T>(1),
            None => Ok(None),
        }
    })
}

/// Runs a statement for its effect.
fn run(sql: &'static str, args: &[DatumWithOid]) -> SpiResult<()> {
    Spi::connect_mut(|client| exec(client, sql, args).map(|_| ()))
}

pub struct Group {
    pub self_connection: String,
}

fn ballot(row: &SpiHeapTupleData, number: usize, by: usize) -> SpiResult<Option<Ballot>> {
    Ok(match (row.get::<i64>(number)?, row.get::<String>(by)?) {
        (Some(n), Some(p)) => Some(Ballot::new(n, p)),
        _ => None,
    })
}

/// Reads (ballot, entry) from columns accepted_num, accepted_by, value_kind, value, value_id
/// starting at `first`.
fn accepted(row: &SpiHeapTupleData, first: usize) -> SpiResult<Option<(Ballot, Entry)>> {
    let Some(ballot) = ballot(row, first, first + 1)? else {
        return Ok(None);
    };
    let kind = row.get::<String>(first + 2)?.unwrap_or_default();
    let entry = Entry {
        kind: EntryKind::parse(&kind).unwrap_or(EntryKind::Noop),
        value: row.get::<String>(first + 3)?,
        id: row.get::<String>(first + 4)?.unwrap_or_default(),
    };
    Ok(Some((ballot, entry)))
}

pub fn group(group_id: &str) -> Result<Option<Group>> {
    let connection = value::<String>(
        "SELECT self_connection FROM pgp_metadata.\"group\" WHERE group_id = $1",
        &[group_id.into()],
    )?;
    Ok(connection.map(|self_connection| Group { self_connection }))
}

/// The group, or why it is not here: unknown, or dropped.
pub fn require_group(group_id: &str) -> Result<Group> {
    if let Some(group) = group(group_id)? {
        return Ok(group);
    }
    Err(match dropped_at(group_id)? {
        Some(round) => PaxosError::Dropped {
            group: group_id.to_owned(),
            round,
        },
        None => PaxosError::UnknownGroup(group_id.to_owned()),
    })
}

/// The round at which `group_id` was dropped, if this node was a member then.
pub fn dropped_at(group_id: &str) -> Result<Option<i64>> {
    Ok(value::<i64>(
        "SELECT round_num FROM pgp_metadata.dropped_group WHERE group_id = $1",
        &[group_id.into()],
    )?)
}

/// Records that `group_id` was dropped at `round`.
pub fn record_dropped(group_id: &str, round: i64) -> Result<()> {
    run(
        "INSERT INTO pgp_metadata.dropped_group (group_id, round_num) VALUES ($1, $2) \
         ON CONFLICT (group_id) DO NOTHING",
        &[group_id.into(), round.into()],
    )?;
    Ok(())
}

pub fn membership(group_id: &str) -> Result<Membership> {
    let members = Spi::connect_mut(|client| -> SpiResult<Vec<Member>> {
        let rows = exec(
            client,
            "SELECT connection, min_round, max_round FROM pgp_metadata.host \
             WHERE group_id = $1 ORDER BY min_round, connection",
            &[group_id.into()],
        )?;
        rows.into_iter()
            .map(|row| {
                Ok(Member {
                    connection: row.get::<String>(1)?.unwrap_or_default(),
                    from_round: row.get::<i64>(2)?.unwrap_or(0),
                    until_round: row.get::<i64>(3)?,
                })
            })
            .collect()
    })?;
    Ok(Membership::new(members))
}

/// Every round up to the returned one is chosen and recorded on this node.
pub fn learned_through(group_id: &str) -> Result<i64> {
    Ok(value::<i64>(
        "SELECT learned_through FROM pgp_metadata.learner WHERE group_id = $1",
        &[group_id.into()],
    )?
    .unwrap_or(-1))
}

/// Decisions from rows of round_num, accepted_num, accepted_by, value_kind, value, value_id.
fn decision_rows(rows: SpiTupleTable) -> SpiResult<Vec<Decision>> {
    let mut out = Vec::new();
    for row in rows {
        if let Some((ballot, entry)) = accepted(&row, 2)? {
            out.push(Decision {
                round: row.get::<i64>(1)?.unwrap_or(0),
                ballot,
                entry,
            });
        }
    }
    Ok(out)
}

/// Chosen rounds in `from..=through`, in round order, at most `limit` of them.
pub fn decisions(group_id: &str, from: i64, through: i64, limit: i64) -> Result<Vec<Decision>> {
    Ok(Spi::connect_mut(|client| -> SpiResult<Vec<Decision>> {
        let rows = exec(
            client,
            "SELECT round_num, accepted_num, accepted_by, value_kind, value, value_id \
             FROM pgp_metadata.round WHERE group_id = $1 AND chosen \
             AND round_num BETWEEN $2 AND $3 ORDER BY round_num LIMIT $4",
            &[group_id.into(), from.into(), through.into(), limit.into()],
        )?;
        decision_rows(rows)
    })?)
}

/// Every value accepted at rounds `from..=through`, in round order, at most `limit`, split
/// into those recorded as chosen and the others.
pub fn accepted_rounds(
    group_id: &str,
    from: i64,
    through: i64,
    limit: i64,
) -> Result<(Vec<Decision>, Vec<Decision>)> {
    Ok(Spi::connect_mut(|client| -> SpiResult<_> {
        let rows = exec(
            client,
            "SELECT round_num, accepted_num, accepted_by, value_kind, value, value_id, chosen \
             FROM pgp_metadata.round WHERE group_id = $1 AND accepted_num IS NOT NULL \
             AND round_num BETWEEN $2 AND $3 ORDER BY round_num LIMIT $4",
            &[group_id.into(), from.into(), through.into(), limit.into()],
        )?;
        let (mut chosen, mut accepted) = (Vec::new(), Vec::new());
        for row in rows {
            if let Some((ballot, entry)) = self::accepted(&row, 2)? {
                let decision = Decision {
                    round: row.get::<i64>(1)?.unwrap_or(0),
                    ballot,
                    entry,
                };
                if row.get::<bool>(7)?.unwrap_or(false) {
                    chosen.push(decision);
                } else {
                    accepted.push(decision);
                }
            }
        }
        Ok((chosen, accepted))
    })?)
}

/// The highest round accepted here: a compacted round counts, though its row is gone.
pub fn max_accepted_round(group_id: &str) -> Result<i64> {
    Ok(value::<i64>(
        "SELECT greatest((SELECT max(round_num) FROM pgp_metadata.round \
             WHERE group_id = $1 AND accepted_num IS NOT NULL), \
             (SELECT compacted_through FROM pgp_metadata.promise WHERE group_id = $1))",
        &[group_id.into()],
    )?
    .unwrap_or(-1))
}

/// Every round through the returned one is chosen and forgotten here (see
/// `paxos_core::compaction`).
pub fn compacted_through(group_id: &str) -> Result<i64> {
    Ok(value::<i64>(
        "SELECT compacted_through FROM pgp_metadata.promise WHERE group_id = $1",
        &[group_id.into()],
    )?
    .unwrap_or(-1))
}

/// Forgets the rounds through `through` but the membership entries, from which the members
/// of every round derive; returns how many rounds went. The caller holds `locks::range`
/// exclusively (no vote runs meanwhile) and knows every such round to be chosen.
pub fn compact(group_id: &str, through: i64) -> Result<i64> {
    Ok(value::<i64>(
        "WITH moved AS (UPDATE pgp_metadata.promise SET compacted_through = $2 \
             WHERE group_id = $1 AND compacted_through < $2 RETURNING 1), \
         gone AS (DELETE FROM pgp_metadata.round WHERE group_id = $1 AND round_num <= $2 \
             AND value_kind IS DISTINCT FROM 'join' AND value_kind IS DISTINCT FROM 'leave' \
             AND EXISTS (SELECT FROM moved) RETURNING 1) \
         SELECT count(*) FROM gone",
        &[group_id.into(), through.into()],
    )?
    .unwrap_or(0))
}

/// What an acceptor votes from: the group's range promise, the acceptor states of some
/// rounds, and how far it compacted the log.
pub struct VotingState {
    pub range: Option<RangePromise>,
    pub states: Vec<Acceptor<Entry>>,
    pub compacted_through: i64,
}

/// The voting state of rounds `first..=last` (empty for rounds without a row), in one
/// statement. Lock them first (`locks::rounds`). Fails with UnknownGroup when this node
/// does not (yet, or any longer) have the group.
pub fn voting_state(group_id: &str, first: i64, last: i64) -> Result<VotingState> {
    Spi::connect_mut(|client| {
        let rows = exec(
            client,
            "SELECT p.from_round, p.ballot_num, p.ballot_by, r.round_num, r.promised_num, \
             r.promised_by, r.accepted_num, r.accepted_by, r.value_kind, r.value, r.value_id, \
             r.chosen, p.compacted_through FROM pgp_metadata.promise p \
             LEFT JOIN pgp_metadata.round r \
             ON r.group_id = p.group_id AND r.round_num BETWEEN $2 AND $3 \
             WHERE p.group_id = $1",
            &[group_id.into(), first.into(), last.into()],
        )?;
        let mut range = None;
        let mut states = vec![Acceptor::default(); (last - first + 1).max(0) as usize];
        let mut compacted_through = None;
        for row in rows {
            compacted_through = row.get::<i64>(13)?;
            if let (Some(from), Some(ballot)) = (row.get::<i64>(1)?, ballot(&row, 2, 3)?) {
                range = Some(RangePromise { from, ballot });
            }
            if let Some(round) = row.get::<i64>(4)? {
                states[(round - first) as usize] = Acceptor {
                    promised: ballot(&row, 5, 6)?,
                    accepted: accepted(&row, 7)?,
                    chosen: row.get::<bool>(12)?.unwrap_or(false),
                };
            }
        }
        let Some(compacted_through) = compacted_through else {
            return Err(PaxosError::UnknownGroup(group_id.to_owned()));
        };
        Ok(VotingState {
            range,
            states,
            compacted_through,
        })
    })
}

/// Writes the acceptor states of `rounds` in one statement, however many: a batch's vote
/// costs one. Lock them first (`locks::rounds`).
pub fn store_acceptors(group_id: &str, rounds: &[(i64, &Acceptor<Entry>)]) -> Result<()> {
    if rounds.is_empty() {
        return Ok(());
    }
    let promised = || rounds.iter().map(|(_, s)| s.promised.as_ref());
    let accepted = || rounds.iter().map(|(_, s)| s.accepted.as_ref());
    let round_nums: Vec<i64> = rounds.iter().map(|(r, _)| *r).collect();
    let promised_num: Vec<Option<i64>> = promised().map(|b| b.map(|b| b.number)).collect();
    let promised_by: Vec<Option<String>> =
        promised().map(|b| b.map(|b| b.proposer.clone())).collect();
    let accepted_num: Vec<Option<i64>> = accepted().map(|a| a.map(|(b, _)| b.number)).collect();
    let accepted_by: Vec<Option<String>> = accepted()
        .map(|a| a.map(|(b, _)| b.proposer.clone()))
        .collect();
    let kinds: Vec<Option<String>> = accepted()
        .map(|a| a.map(|(_, e)| e.kind.as_str().to_owned()))
        .collect();
    let values: Vec<Option<String>> = accepted()
        .map(|a| a.and_then(|(_, e)| e.value.clone()))
        .collect();
    let ids: Vec<Option<String>> = accepted().map(|a| a.map(|(_, e)| e.id.clone())).collect();
    let chosen: Vec<bool> = rounds.iter().map(|(_, s)| s.chosen).collect();
    run(
        "INSERT INTO pgp_metadata.round AS r (group_id, round_num, promised_num, promised_by, \
             accepted_num, accepted_by, value_kind, value, value_id, chosen) \
         SELECT $1, u.* FROM ROWS FROM (pg_catalog.unnest($2::bigint[]), \
             pg_catalog.unnest($3::bigint[]), pg_catalog.unnest($4::text[]), \
             pg_catalog.unnest($5::bigint[]), pg_catalog.unnest($6::text[]), \
             pg_catalog.unnest($7::text[]), pg_catalog.unnest($8::text[]), \
             pg_catalog.unnest($9::text[]), pg_catalog.unnest($10::boolean[])) u \
         ON CONFLICT (group_id, round_num) DO UPDATE SET \
             promised_num = excluded.promised_num, promised_by = excluded.promised_by, \
             accepted_num = excluded.accepted_num, accepted_by = excluded.accepted_by, \
             value_kind = excluded.value_kind, value = excluded.value, \
             value_id = excluded.value_id, chosen = r.chosen OR excluded.chosen",
        &[
            group_id.into(),
            round_nums.into(),
            promised_num.into(),
            promised_by.into(),
            accepted_num.into(),
            accepted_by.into(),
            kinds.into(),
            values.into(),
            ids.into(),
            chosen.into(),
        ],
    )?;
    Ok(())
}

/// Marks as chosen the rounds up to `through`, above what this node learned, that it accepted
/// under `ballot`. The leader of that ballot uses it only while every round it proposed
/// was decided under it with its value (`leader::accept`), and a ballot carries one value
/// per round, so the value accepted here is the chosen one. Returns whether any was.
/// The rounds are not locked: a vote racing with this keeps the flag (see store_acceptors),
/// and no vote changes a value once a majority accepted it. Rows another transaction holds
/// (a learner recording them, in round order) are skipped, not waited for: this runs in no
/// particular order, so waiting could deadlock with it, and the flag is only a shortcut
/// (an unmarked round is learned from the members when needed). Both bounds of the range
/// are index conditions in any plan; joined with the learner row instead, the lower one
/// was not, and the scan read the whole log.
pub fn mark_chosen_under(group_id: &str, ballot: &Ballot, through: i64) -> Result<bool> {
    let marked = value::<i64>(
        "WITH free AS (SELECT r.round_num FROM pgp_metadata.round r \
             WHERE r.group_id = $1 AND r.round_num <= $2 AND r.round_num > \
                 (SELECT learned_through FROM pgp_metadata.learner WHERE group_id = $1) \
             AND NOT r.chosen \
             AND r.accepted_num = $3 AND r.accepted_by = $4 \
             FOR UPDATE OF r SKIP LOCKED), \
         marked AS (UPDATE pgp_metadata.round r SET chosen = true FROM free \
             WHERE r.group_id = $1 AND r.round_num = free.round_num RETURNING 1) \
         SELECT count(*) FROM marked",
        &[
            group_id.into(),
            through.into(),
            ballot.number.into(),
            ballot.proposer.clone().into(),
        ],
    )?;
    Ok(marked.unwrap_or(0) > 0)
}

/// Moves learned_through past every chosen round that now follows it without a gap, walking
/// the run from the learned round one primary-key lookup at a time (the walk ends on the
/// lookup that finds nothing): its cost is that of the advance, whatever the length of the
/// log and whatever the statistics say. A scan of the chosen rounds above learned_through
/// read the whole log under the plans PostgreSQL chose for it, on every vote that marked a
/// round chosen.
pub fn advance_learned(group_id: &str) -> Result<i64> {
    Ok(value::<i64>(
        "UPDATE pgp_metadata.learner l SET learned_through = ( \
             WITH RECURSIVE run(round_num) AS ( \
                 SELECT l.learned_through \
                 UNION ALL \
                 SELECT (SELECT r.round_num FROM pgp_metadata.round r \
                     WHERE r.group_id = $1 AND r.round_num = run.round_num + 1 AND r.chosen) \
                 FROM run WHERE run.round_num IS NOT NULL) \
             SELECT max(round_num) FROM run) \
         WHERE group_id = $1 RETURNING learned_through",
        &[group_id.into()],
    )?
    .unwrap_or(-1))
}

/// Rewrites the group's member list from the log's join and leave entries, in round order
/// (round 0 holds the founder's join). Deriving it keeps it right when rounds are learned out
/// of order.
pub fn rebuild_members(group_id: &str) -> Result<()> {
    let changes = Spi::connect_mut(|client| -> SpiResult<Vec<(i64, EntryKind, String)>> {
        let rows = exec(
            client,
            "SELECT round_num, value_kind, value FROM pgp_metadata.round \
             WHERE group_id = $1 AND chosen AND value_kind IN ('join', 'leave') \
             ORDER BY round_num",
            &[group_id.into()],
        )?;
        rows.into_iter()
            .map(|row| {
                let kind = row.get::<String>(2)?.unwrap_or_default();
                Ok((
                    row.get::<i64>(1)?.unwrap_or(0),
                    EntryKind::parse(&kind).unwrap_or(EntryKind::Noop),
                    row.get::<String>(3)?.unwrap_or_default(),
                ))
            })
            .collect()
    })?;
    let mut membership = Membership::default();
    for (round, kind, connection) in changes {
        match kind {
            EntryKind::Join => membership.join(&connection, round),
            EntryKind::Leave => membership.leave(&connection, round),
            _ => false,
        };
    }
    run(
        "DELETE FROM pgp_metadata.host WHERE group_id = $1",
        &[group_id.into()],
    )?;
    for m in membership.members() {
        run(
            "INSERT INTO pgp_metadata.host (group_id, connection, min_round, max_round) \
             VALUES ($1, $2, $3, $4)",
            &[
                group_id.into(),
                m.connection.clone().into(),
                m.from_round.into(),
                m.until_round.into(),
            ],
        )?;
    }
    Ok(())
}

/// Records decisions as chosen; those of rounds compacted here are applied already and
/// left out. Returns whether any of them changed membership.
pub fn record_decisions(group_id: &str, decisions: &[Decision]) -> Result<bool> {
    let mut membership_changed = false;
    let (Some(first), Some(last)) = (
        decisions.iter().map(|d| d.round).min(),
        decisions.iter().map(|d| d.round).max(),
    ) else {
        return Ok(false);
    };
    locks::rounds(group_id, first, last);
    let voting = voting_state(group_id, first, last)?;
    let mut learned = Vec::with_capacity(decisions.len());
    for d in decisions {
        let mut state = voting.states[(d.round - first) as usize].clone();
        if state.chosen || paxos_core::compaction::refuses(d.round, voting.compacted_through) {
            continue;
        }
        state.on_learn(&d.ballot, d.entry.clone());
        learned.push((d.round, state));
        membership_changed |= d.entry.kind.changes_membership();
    }
    let rounds: Vec<(i64, &Acceptor<Entry>)> = learned.iter().map(|(r, s)| (*r, s)).collect();
    store_acceptors(group_id, &rounds)?;
    Ok(membership_changed)
}

pub fn insert_group(group_id: &str, self_connection: &str, applied: i64) -> Result<()> {
    run(
        "INSERT INTO pgp_metadata.\"group\" (group_id, self_connection, last_applied_round) \
         VALUES ($1, $2, $3)",
        &[group_id.into(), self_connection.into(), applied.into()],
    )?;
    run(
        "INSERT INTO pgp_metadata.learner (group_id) VALUES ($1)",
        &[group_id.into()],
    )?;
    run(
        "INSERT INTO pgp_metadata.promise (group_id) VALUES ($1)",
        &[group_id.into()],
    )?;
    Ok(())
}

/// Deletes the group here; its log too unless `keep_log` (see `groups::dropped_here`).
pub fn delete_group(group_id: &str, keep_log: bool) -> Result<()> {
    if !keep_log {
        run(
            "DELETE FROM pgp_metadata.round WHERE group_id = $1",
            &[group_id.into()],
        )?;
    }
    run(
        "DELETE FROM pgp_metadata.\"group\" WHERE group_id = $1",
        &[group_id.into()],
    )?;
    Ok(())
}

/// Locks the group's applied position until the end of the transaction and returns it, so
/// that two sessions never apply the same round. NO KEY UPDATE, because this node's own
/// endpoints, called over a connection while the lock is held, insert rounds whose foreign
/// key takes KEY SHARE on the same row: FOR UPDATE would make them wait for us forever.
pub fn lock_applied(group_id: &str) -> Result<i64> {
    value::<i64>(
        "SELECT last_applied_round FROM pgp_metadata.\"group\" WHERE group_id = $1 \
         FOR NO KEY UPDATE",
        &[group_id.into()],
    )?
    .ok_or_else(|| PaxosError::UnknownGroup(group_id.to_owned()))
}

/// Every connection string of a member of any group, this node's own included.
pub fn member_connections() -> Result<Vec<String>> {
    Ok(value::<Vec<String>>(
        "SELECT coalesce(pg_catalog.array_agg(DISTINCT c), '{}') FROM ( \
             SELECT connection FROM pgp_metadata.host \
             UNION ALL SELECT self_connection FROM pgp_metadata.\"group\") m(c)",
        &[],
    )?
    .unwrap_or_default())
}

/// `lock_applied` for the applier: `None`, without waiting, while another transaction holds
/// the position (a writer running its round).
pub fn try_lock_applied(group_id: &str) -> Result<Option<i64>> {
    Ok(value::<i64>(
        "SELECT last_applied_round FROM pgp_metadata.\"group\" WHERE group_id = $1 \
         FOR NO KEY UPDATE SKIP LOCKED",
        &[group_id.into()],
    )?)
}

/// The applied position as last committed, without locking it.
pub fn applied(group_id: &str) -> Result<Option<i64>> {
    Ok(value::<i64>(
        "SELECT last_applied_round FROM pgp_metadata.\"group\" WHERE group_id = $1",
        &[group_id.into()],
    )?)
}

pub fn set_applied(group_id: &str, round: i64) -> Result<()> {
    run(
        "UPDATE pgp_metadata.\"group\" SET last_applied_round = $2 WHERE group_id = $1",
        &[group_id.into(), round.into()],
    )?;
    Ok(())
}

/// The group's range promise. Lock it first (`locks::range`).
pub fn range_promise(group_id: &str) -> Result<Option<RangePromise>> {
    Spi::connect_mut(|client| -> Result<Option<RangePromise>> {
        let rows = exec(
            client,
            "SELECT from_round, ballot_num, ballot_by FROM pgp_metadata.promise \
             WHERE group_id = $1",
            &[group_id.into()],
        )?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| PaxosError::UnknownGroup(group_id.to_owned()))?;
        let from = row.get::<i64>(1)?;
        Ok(match (from, ballot(&row, 2, 3)?) {
            (Some(from), Some(ballot)) => Some(RangePromise { from, ballot }),
            _ => None,
        })
    })
}

pub fn set_range_promise(group_id: &str, promise: &RangePromise) -> Result<()> {
    run(
        "UPDATE pgp_metadata.promise SET from_round = $2, ballot_num = $3, ballot_by = $4 \
         WHERE group_id = $1",
        &[
            group_id.into(),
            promise.from.into(),
            promise.ballot.number.into(),
            promise.ballot.proposer.clone().into(),
        ],
    )?;
    Ok(())
}

/// Records which member asked for the group's range promise: the others send it their appends.
pub fn set_leader(group_id: &str, leader: Option<&str>) -> Result<()> {
    run(
        "UPDATE pgp_metadata.promise SET leader_connection = $2 WHERE group_id = $1",
        &[group_id.into(), leader.into()],
    )?;
    Ok(())
}

/// The member this node last promised to follow, when it is a current member other than
/// this node, and the number of the ballot it promised (0 when none).
pub fn leader(group_id: &str) -> Result<(Option<String>, i64)> {
    Ok(Spi::connect_mut(
        |client| -> SpiResult<(Option<String>, i64)> {
            let rows = exec(
                client,
                "SELECT CASE WHEN p.leader_connection <> g.self_connection AND EXISTS ( \
                 SELECT FROM pgp_metadata.host h WHERE h.group_id = p.group_id \
                 AND h.connection = p.leader_connection AND h.max_round IS NULL) \
               THEN p.leader_connection END, coalesce(p.ballot_num, 0) \
             FROM pgp_metadata.promise p JOIN pgp_metadata.\"group\" g USING (group_id) \
             WHERE p.group_id = $1",
                &[group_id.into()],
            )?;
            match rows.into_iter().next() {
                Some(row) => Ok((row.get::<String>(1)?, row.get::<i64>(2)?.unwrap_or(0))),
                None => Ok((None, 0)),
            }
        },
    )?)
}

/// The highest promise any single round from `from` on holds. Ballot owners compare
/// byte-wise, as Rust strings do, hence COLLATE "C".
pub fn highest_round_promise(group_id: &str, from: i64) -> Result<Option<Ballot>> {
    Ok(Spi::connect_mut(|client| -> SpiResult<Option<Ballot>> {
        let rows = exec(
            client,
            "SELECT promised_num, promised_by FROM pgp_metadata.round \
             WHERE group_id = $1 AND round_num >= $2 AND promised_num IS NOT NULL \
             ORDER BY promised_num DESC, promised_by COLLATE \"C\" DESC LIMIT 1",
            &[group_id.into(), from.into()],
        )?;
        match rows.into_iter().next() {
            Some(row) => ballot(&row, 1, 2),
            None => Ok(None),
        }
    })?)
}

/// Every value accepted from round `from` on, with its round and ballot.
pub fn accepted_from(group_id: &str, from: i64) -> Result<Vec<(i64, Ballot, Entry)>> {
    Ok(Spi::connect_mut(
        |client| -> SpiResult<Vec<(i64, Ballot, Entry)>> {
            let rows = exec(
                client,
                "SELECT round_num, accepted_num, accepted_by, value_kind, value, value_id \
             FROM pgp_metadata.round WHERE group_id = $1 AND round_num >= $2 \
             AND accepted_num IS NOT NULL ORDER BY round_num",
                &[group_id.into(), from.into()],
            )?;
            let mut out = Vec::new();
            for row in rows {
                if let Some((ballot, entry)) = accepted(&row, 2)? {
                    let round = row.get::<i64>(1)?.unwrap_or(0);
                    out.push((round, ballot, entry));
                }
            }
            Ok(out)
        },
    )?)
}

/// The group that replicates `table`, if any.
pub fn replicating_group(table: pgrx::pg_sys::Oid) -> Result<Option<String>> {
    Ok(value::<String>(
        "SELECT group_id FROM pgp_metadata.replicated_tables \
         WHERE table_oid OPERATOR(pg_catalog.=) $1",
        &[table.into()],
    )?)
}

/// Records that `group_id` replicates `table` (named `schema.name` on every member).
pub fn add_replicated(
    group_id: &str,
    table: pgrx::pg_sys::Oid,
    (schema, name): (&str, &str),
    round: i64,
) -> Result<()> {
    run(
        "INSERT INTO pgp_metadata.replicated_tables (group_id, table_oid, schema_name, \
         table_name, replicated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        &[
            group_id.into(),
            table.into(),
            schema.into(),
            name.into(),
            round.into(),
        ],
    )?;
    Ok(())
}

/// Forgets which tables `group_id` replicates here (a state copy records the member's).
pub fn replace_replicated(group_id: &str) -> Result<()> {
    run(
        "DELETE FROM pgp_metadata.replicated_tables WHERE group_id = $1",
        &[group_id.into()],
    )?;
    run(
        "DELETE FROM pgp_metadata.sequences WHERE group_id = $1",
        &[group_id.into()],
    )?;
    Ok(())
}

/// The sequences owned by a column of one of `group_id`'s replicated tables.
pub fn owned_sequences(group_id: &str) -> Result<Vec<pgrx::pg_sys::Oid>> {
    Ok(value::<Vec<pgrx::pg_sys::Oid>>(
        "SELECT coalesce(array_agg(d.objid), '{}') \
         FROM pgp_metadata.replicated_tables r \
         JOIN pg_catalog.pg_depend d ON d.refobjid = r.table_oid \
          AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
          AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i') \
         JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
         WHERE r.group_id = $1",
        &[group_id.into()],
    )?
    .unwrap_or_default())
}

/// Puts every recorded sequence of `group_id` back to its recorded position, or to its start
/// when none is recorded (see `replication::sequences`).
pub fn restore_sequences(group_id: &str) -> Result<()> {
    Ok(run(
        "SELECT pg_catalog.setval(seq, coalesce(last_value, \
                (SELECT seqstart FROM pg_catalog.pg_sequence WHERE seqrelid = seq)), \
                last_value IS NOT NULL) \
         FROM pgp_metadata.sequences \
         WHERE group_id = $1 AND pg_catalog.pg_sequence_last_value(seq) IS DISTINCT FROM last_value",
        &[group_id.into()],
    )?)
}

/// Records where `sequences` of `group_id` stand.
pub fn record_sequences(group_id: &str, sequences: Vec<pgrx::pg_sys::Oid>) -> Result<()> {
    Ok(run(
        "INSERT INTO pgp_metadata.sequences AS s (group_id, seq, last_value) \
         SELECT $1, o, pg_catalog.pg_sequence_last_value(o) \
         FROM pg_catalog.unnest($2::pg_catalog.regclass[]) o \
         ON CONFLICT (group_id, seq) DO UPDATE SET last_value = excluded.last_value \
         WHERE s.last_value IS DISTINCT FROM excluded.last_value",
        &[group_id.into(), sequences.into()],
    )?)
}

/// Records where sequence `name` (qualified) of `group_id` stands; false when it is missing.
pub fn set_sequence(group_id: &str, name: &str, last_value: Option<i64>) -> Result<bool> {
    Ok(value::<bool>(
        "WITH s AS (SELECT pg_catalog.to_regclass($2) AS seq), \
         put AS (INSERT INTO pgp_metadata.sequences (group_id, seq, last_value) \
             SELECT $1, seq, $3 FROM s WHERE seq IS NOT NULL \
             ON CONFLICT (group_id, seq) DO UPDATE SET last_value = excluded.last_value \
             RETURNING 1) \
         SELECT EXISTS (SELECT FROM put)",
        &[group_id.into(), name.into(), last_value.into()],
    )?
    .unwrap_or(false))
}

/// After a state copy as of `round`: the log is known and applied through it, and no
/// failure of an earlier entry concerns this node any more.
pub fn copied_through(group_id: &str, round: i64) -> Result<()> {
    run(
        "UPDATE pgp_metadata.learner SET learned_through = greatest(learned_through, $2) \
         WHERE group_id = $1",
        &[group_id.into(), round.into()],
    )?;
    run(
        "DELETE FROM pgp_metadata.apply_errors WHERE group_id = $1 AND round_num <= $2",
        &[group_id.into(), round.into()],
    )?;
    advance_learned(group_id)?;
    Ok(())
}

/// The group's replicated tables as JSON `CopiedTable`s.
pub fn replicated_as_json(group_id: &str) -> Result<Option<String>> {
    Ok(value::<String>(
        "SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object( \
             'schema', r.schema_name, 'name', r.table_name, 'replicated_at', r.replicated_at, \
             'columns', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array( \
                     a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)) \
                     ORDER BY a.attnum), '[]') \
                 FROM pg_catalog.pg_attribute a WHERE a.attrelid = r.table_oid \
                 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '')) \
             ORDER BY r.schema_name, r.table_name), '[]')::text \
         FROM pgp_metadata.replicated_tables r WHERE r.group_id = $1",
        &[group_id.into()],
    )?)
}

/// The recorded positions of the group's sequences as JSON `CopiedSequence`s.
pub fn sequences_as_json(group_id: &str) -> Result<Option<String>> {
    Ok(value::<String>(
        "SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object( \
             'schema', n.nspname, 'name', c.relname, 'last_value', s.last_value)), '[]')::text \
         FROM pgp_metadata.sequences s JOIN pg_catalog.pg_class c ON c.oid = s.seq \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE s.group_id = $1",
        &[group_id.into()],
    )?)
}

/// The chosen membership entries through `through`, in round order.
pub fn membership_decisions(group_id: &str, through: i64) -> Result<Vec<Decision>> {
    Ok(Spi::connect_mut(|client| -> SpiResult<Vec<Decision>> {
        let rows = exec(
            client,
            "SELECT round_num, accepted_num, accepted_by, value_kind, value, value_id \
             FROM pgp_metadata.round WHERE group_id = $1 AND chosen \
             AND value_kind IN ('join', 'leave') AND round_num <= $2 ORDER BY round_num",
            &[group_id.into(), through.into()],
        )?;
        decision_rows(rows)
    })?)
}

/// Records that the entry of `round` failed the same way every member fails it.
pub fn record_apply_error(group_id: &str, round: i64, sqlstate: &str, message: &str) -> Result<()> {
    run(
        "INSERT INTO pgp_metadata.apply_errors (group_id, round_num, sqlstate, message) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (group_id, round_num) DO NOTHING",
        &[
            group_id.into(),
            round.into(),
            sqlstate.into(),
            message.into(),
        ],
    )?;
    Ok(())
}

/// Whether every foreign key that involves a replicated table of the group joins two such
/// tables: a foreign key error is then the same on every member, which applies the group's
/// writes in one order on the same rows.
pub fn foreign_keys_inside(group_id: &str) -> Result<bool> {
    Ok(value::<bool>(
        "WITH mine AS (SELECT table_oid FROM pgp_metadata.replicated_tables \
             WHERE group_id OPERATOR(pg_catalog.=) $1) \
         SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_constraint k \
             WHERE k.contype OPERATOR(pg_catalog.=) 'f' \
               AND (k.conrelid IN (SELECT table_oid FROM mine)) \
                   OPERATOR(pg_catalog.<>) (k.confrelid IN (SELECT table_oid FROM mine)))",
        &[group_id.into()],
    )?
    .unwrap_or(false))
}

/// How the entry of `round` failed when applied here, if it did.
pub fn apply_error(group_id: &str, round: i64) -> Result<Option<(String, String)>> {
    Ok(Spi::connect_mut(|client| -> SpiResult<_> {
        let rows = exec(
            client,
            "SELECT sqlstate, message FROM pgp_metadata.apply_errors \
             WHERE group_id = $1 AND round_num = $2",
            &[group_id.into(), round.into()],
        )?;
        match rows.into_iter().next() {
            Some(row) => Ok(Some((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
            ))),
            None => Ok(None),
        }
    })?)
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;
    use pgrx::prelude::*;

    /// A small xorshift generator: the cases are the same on every run.
    struct Draw(u64);

    impl Draw {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// `mark_chosen_under` is paxos-core's `mark_chosen_through` said in one statement (it
    /// runs on every vote, without loading the rounds): on logs drawn at random, with values
    /// accepted under several ballots, some rounds already marked and some learned, both
    /// mark the same rounds.
    #[pg_test]
    fn marking_rounds_chosen_in_sql_agrees_with_paxos_core() {
        let ballots = [
            Ballot::new(3, "x"),
            Ballot::new(3, "y"),
            Ballot::new(4, "x"),
        ];
        let mut draw = Draw(0x9e37_79b9_7f4a_7c15);
        Spi::run(
            "INSERT INTO pgp_metadata.\"group\" (group_id, self_connection) \
             VALUES ('m', 'host=127.0.0.1'); \
             INSERT INTO pgp_metadata.learner (group_id) VALUES ('m')",
        )
        .expect("a group");
        for case in 0..300 {
            let learned = draw.below(4) as i64 - 1;
            let mut states: Vec<Acceptor<Entry>> = (0..8i64)
                .map(|round| {
                    let accepted = (round <= learned || draw.below(4) > 0).then(|| {
                        let entry = Entry {
                            id: format!("{round}"),
                            kind: EntryKind::Value,
                            value: Some(format!("v{round}")),
                        };
                        (ballots[draw.below(3) as usize].clone(), entry)
                    });
                    let chosen = round <= learned || (accepted.is_some() && draw.below(3) == 0);
                    Acceptor {
                        promised: accepted.as_ref().map(|(b, _)| b.clone()),
                        accepted,
                        chosen,
                    }
                })
                .collect();
            Spi::run(&format!(
                "DELETE FROM pgp_metadata.round WHERE group_id = 'm'; \
                 UPDATE pgp_metadata.learner SET learned_through = {learned} \
                 WHERE group_id = 'm'"
            ))
            .expect("a fresh log");
            let rows: Vec<(i64, &Acceptor<Entry>)> = (0..).zip(&states).collect();
            store_acceptors("m", &rows).expect("stored");
            let ballot = &ballots[draw.below(3) as usize];
            let through = draw.below(9) as i64 - 1;

            let marked = mark_chosen_under("m", ballot, through).expect("marked");
            let expected = paxos_core::mark_chosen_through(&mut states, 0, ballot, through);
            let chosen: Vec<bool> = states.iter().map(|s| s.chosen).collect();
            let stored = Spi::get_one::<Vec<bool>>(
                "SELECT array_agg(chosen ORDER BY round_num) FROM pgp_metadata.round \
                 WHERE group_id = 'm'",
            )
            .expect("read back")
            .expect("rows");
            assert_eq!(
                stored, chosen,
                "case {case}: under {ballot} through {through}"
            );
            assert_eq!(marked, expected > 0, "case {case}: what it says it marked");
        }
    }
}
