//! Typed access to the pgp_metadata catalog: the one place that holds its SQL.
//!
//! Values always travel as bind parameters. Acceptor state is read with a row lock and written
//! back in the same transaction, so concurrent messages for one round are serialized.
use paxos_core::{Acceptor, Ballot, Member, Membership};
use pgrx::datum::DatumWithOid;
use pgrx::spi::{SpiHeapTupleData, SpiResult};
use pgrx::Spi;

use crate::error::{PaxosError, Result};
use crate::messages::{Decision, Entry, EntryKind};

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
    Ok(Spi::connect(|client| {
        let rows = client.select(
            "SELECT self_connection FROM pgp_metadata.\"group\" WHERE group_id = $1",
            Some(1),
            &[group_id.into()],
        )?;
        rows.into_iter()
            .next()
            .map(|row| -> SpiResult<Group> {
                Ok(Group {
                    self_connection: row.get::<String>(1)?.unwrap_or_default(),
                })
            })
            .transpose()
    })?)
}

pub fn require_group(group_id: &str) -> Result<Group> {
    group(group_id)?.ok_or_else(|| PaxosError::UnknownGroup(group_id.to_owned()))
}

pub fn membership(group_id: &str) -> Result<Membership> {
    let members = Spi::connect(|client| -> SpiResult<Vec<Member>> {
        let rows = client.select(
            "SELECT connection, min_round, max_round FROM pgp_metadata.host \
             WHERE group_id = $1 ORDER BY min_round, connection",
            None,
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
    Ok(Spi::get_one_with_args::<i64>(
        "SELECT learned_through FROM pgp_metadata.learner WHERE group_id = $1",
        &[group_id.into()],
    )?
    .unwrap_or(-1))
}

/// Chosen rounds in `from..=through`, in round order, at most `limit` of them.
pub fn decisions(group_id: &str, from: i64, through: i64, limit: i64) -> Result<Vec<Decision>> {
    Ok(Spi::connect(|client| -> SpiResult<Vec<Decision>> {
        let rows = client.select(
            "SELECT round_num, accepted_num, accepted_by, value_kind, value, value_id \
             FROM pgp_metadata.round WHERE group_id = $1 AND chosen \
             AND round_num BETWEEN $2 AND $3 ORDER BY round_num LIMIT $4",
            None,
            &[group_id.into(), from.into(), through.into(), limit.into()],
        )?;
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
    })?)
}

pub fn max_accepted_round(group_id: &str) -> Result<i64> {
    Ok(Spi::get_one_with_args::<i64>(
        "SELECT max(round_num) FROM pgp_metadata.round \
         WHERE group_id = $1 AND accepted_num IS NOT NULL",
        &[group_id.into()],
    )?
    .unwrap_or(-1))
}

/// Loads one round's acceptor state and locks it until the end of the transaction.
pub fn lock_acceptor(group_id: &str, round: i64) -> Result<Acceptor<Entry>> {
    Ok(Spi::connect_mut(|client| -> SpiResult<Acceptor<Entry>> {
        let args: [DatumWithOid; 2] = [group_id.into(), round.into()];
        client.update(
            "INSERT INTO pgp_metadata.round (group_id, round_num) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
            None,
            &args,
        )?;
        let rows = client.update(
            "SELECT promised_num, promised_by, accepted_num, accepted_by, value_kind, value, \
             value_id, chosen FROM pgp_metadata.round \
             WHERE group_id = $1 AND round_num = $2 FOR UPDATE",
            Some(1),
            &args,
        )?;
        let row = rows
            .into_iter()
            .next()
            .ok_or(pgrx::spi::SpiError::InvalidPosition)?;
        Ok(Acceptor {
            promised: ballot(&row, 1, 2)?,
            accepted: accepted(&row, 3)?,
            chosen: row.get::<bool>(8)?.unwrap_or(false),
        })
    })?)
}

pub fn store_acceptor(group_id: &str, round: i64, state: &Acceptor<Entry>) -> Result<()> {
    let promised = state.promised.as_ref();
    let accepted = state.accepted.as_ref();
    Spi::run_with_args(
        "UPDATE pgp_metadata.round SET promised_num = $3, promised_by = $4, \
         accepted_num = $5, accepted_by = $6, value_kind = $7, value = $8, value_id = $9, \
         chosen = $10 WHERE group_id = $1 AND round_num = $2",
        &[
            group_id.into(),
            round.into(),
            promised.map(|b| b.number).into(),
            promised.map(|b| b.proposer.clone()).into(),
            accepted.map(|(b, _)| b.number).into(),
            accepted.map(|(b, _)| b.proposer.clone()).into(),
            accepted.map(|(_, e)| e.kind.as_str()).into(),
            accepted.and_then(|(_, e)| e.value.clone()).into(),
            accepted.map(|(_, e)| e.id.clone()).into(),
            state.chosen.into(),
        ],
    )?;
    Ok(())
}

/// Moves learned_through past every chosen round that now follows it without a gap.
pub fn advance_learned(group_id: &str) -> Result<i64> {
    Ok(Spi::get_one_with_args::<i64>(
        "WITH RECURSIVE run(r) AS ( \
             SELECT learned_through FROM pgp_metadata.learner WHERE group_id = $1 \
           UNION ALL \
             SELECT run.r + 1 FROM run JOIN pgp_metadata.round ON group_id = $1 \
               AND round_num = run.r + 1 AND chosen) \
         UPDATE pgp_metadata.learner SET learned_through = (SELECT max(r) FROM run) \
         WHERE group_id = $1 RETURNING learned_through",
        &[group_id.into()],
    )?
    .unwrap_or(-1))
}

/// Rewrites the group's member list from the log's join and leave entries, in round order
/// (round 0 holds the founder's join). Deriving it keeps it right when rounds are learned out
/// of order.
pub fn rebuild_members(group_id: &str) -> Result<()> {
    let changes = Spi::connect(|client| -> SpiResult<Vec<(i64, EntryKind, String)>> {
        let rows = client.select(
            "SELECT round_num, value_kind, value FROM pgp_metadata.round \
             WHERE group_id = $1 AND chosen AND value_kind IN ('join', 'leave') \
             ORDER BY round_num",
            None,
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
    Spi::run_with_args(
        "DELETE FROM pgp_metadata.host WHERE group_id = $1",
        &[group_id.into()],
    )?;
    for m in membership.members() {
        Spi::run_with_args(
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

/// Records decisions as chosen. Returns whether any of them changed membership.
pub fn record_decisions(group_id: &str, decisions: &[Decision]) -> Result<bool> {
    let mut membership_changed = false;
    for d in decisions {
        let mut state = lock_acceptor(group_id, d.round)?;
        if state.chosen {
            continue;
        }
        state.on_learn(&d.ballot, d.entry.clone());
        store_acceptor(group_id, d.round, &state)?;
        membership_changed |= matches!(d.entry.kind, EntryKind::Join | EntryKind::Leave);
    }
    Ok(membership_changed)
}

pub fn insert_group(group_id: &str, self_connection: &str, applied: i64) -> Result<()> {
    Spi::run_with_args(
        "INSERT INTO pgp_metadata.\"group\" (group_id, self_connection, last_applied_round) \
         VALUES ($1, $2, $3)",
        &[group_id.into(), self_connection.into(), applied.into()],
    )?;
    Spi::run_with_args(
        "INSERT INTO pgp_metadata.learner (group_id) VALUES ($1)",
        &[group_id.into()],
    )?;
    Ok(())
}

pub fn delete_group(group_id: &str) -> Result<()> {
    Spi::run_with_args(
        "DELETE FROM pgp_metadata.\"group\" WHERE group_id = $1",
        &[group_id.into()],
    )?;
    Ok(())
}

/// Locks the group's applied position until the end of the transaction and returns it, so
/// that two sessions never apply the same round.
pub fn lock_applied(group_id: &str) -> Result<i64> {
    require_group(group_id)?;
    Ok(Spi::get_one_with_args::<i64>(
        "SELECT last_applied_round FROM pgp_metadata.\"group\" WHERE group_id = $1 FOR UPDATE",
        &[group_id.into()],
    )?
    .unwrap_or(-1))
}

pub fn set_applied(group_id: &str, round: i64) -> Result<()> {
    Spi::run_with_args(
        "UPDATE pgp_metadata.\"group\" SET last_applied_round = $2 WHERE group_id = $1",
        &[group_id.into(), round.into()],
    )?;
    Ok(())
}
