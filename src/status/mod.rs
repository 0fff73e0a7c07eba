//! Status a DBA can read and a monitoring system can scrape: the views
//! `pgp_metadata.paxos_group_status` (per group, this member's view of it) and
//! `pgp_metadata.paxos_member_status` (per group and member, how that member answers this
//! one). They join the catalog with what this node counts in shared memory (`counters`),
//! and members of `pg_monitor` may read them. No view shows a secret: connection strings
//! never hold passwords.
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

pub mod counters;

pub use counters::{contact, count, Contact, Event};

fn timestamp(micros: i64) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(micros).ok()
}

fn bigint(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[pg_schema]
mod pgp_metadata {
    use super::*;

    /// Per group of this database: whether this node leads it, and its counts of events
    /// since the server started (see `counters::Event`).
    // pgrx reads the column names from the signature: it cannot be shortened by an alias.
    #[allow(clippy::type_complexity)]
    #[pg_extern(volatile, parallel_safe)]
    fn paxos_group_counters() -> TableIterator<
        'static,
        (
            name!(group_id, String),
            name!(leading, bool),
            name!(appends, i64),
            name!(batches, i64),
            name!(outcome_unknown, i64),
            name!(leadership_changes, i64),
            name!(apply_errors, i64),
            name!(skipped_rounds, i64),
            name!(counted_since, Option<TimestampWithTimeZone>),
        ),
    > {
        let rows: Vec<_> = counters::groups()
            .into_iter()
            .map(|g| {
                let leading = crate::node::leads(&g.group);
                let c = g.counts.map(bigint);
                let since = timestamp(g.since);
                (g.group, leading, c[0], c[1], c[2], c[3], c[4], c[5], since)
            })
            .collect();
        TableIterator::new(rows)
    }

    /// How `connection` answered this node's requests, and the last round it accepted from
    /// this node for `group_id` (known where this node led).
    #[allow(clippy::type_complexity)]
    #[pg_extern(volatile, parallel_safe)]
    fn paxos_member_contact(
        group_id: &str,
        connection: &str,
    ) -> TableIterator<
        'static,
        (
            name!(requests, i64),
            name!(failures, i64),
            name!(timeouts, i64),
            name!(last_answer, Option<TimestampWithTimeZone>),
            name!(last_failure, Option<TimestampWithTimeZone>),
            name!(round_trip_ms, Option<f64>),
            name!(last_error, Option<String>),
            name!(acknowledged_round, Option<i64>),
        ),
    > {
        let m = counters::member(group_id, connection);
        TableIterator::once((
            bigint(m.requests),
            bigint(m.failures),
            bigint(m.timeouts),
            m.last_answer.and_then(timestamp),
            m.last_failure.and_then(timestamp),
            m.round_trip_us.map(|us| us as f64 / 1000.0),
            m.last_error,
            m.acknowledged,
        ))
    }
}

extension_sql!(
    r#"
CREATE VIEW pgp_metadata.paxos_group_status AS
SELECT g.group_id,
       CASE WHEN c.leading THEN 'leader'
            WHEN EXISTS (SELECT FROM pgp_metadata.host h
                         WHERE h.group_id = g.group_id AND h.connection = g.self_connection
                           AND h.max_round IS NULL) THEN 'follower'
            ELSE 'learner' END AS role,
       p.ballot_num AS ballot_number,
       p.ballot_by AS ballot_proposer,
       p.leader_connection,
       l.learned_through AS chosen_through_round,
       (SELECT max(r.round_num) FROM pgp_metadata.round r
         WHERE r.group_id = g.group_id AND r.chosen) AS highest_chosen_round,
       g.last_applied_round AS applied_round,
       p.compacted_through + 1 AS retained_from_round,
       a.pid AS applier_pid,
       CASE WHEN a.stuck_round IS NOT NULL THEN 'stopped'
            WHEN a.pid IS NOT NULL THEN 'running'
            ELSE 'not running' END AS applier_state,
       a.stuck_round AS applier_stuck_round,
       a.last_error AS applier_last_error,
       coalesce(c.appends, 0) AS appends,
       coalesce(c.batches, 0) AS batches,
       coalesce(c.outcome_unknown, 0) AS outcome_unknown,
       coalesce(c.leadership_changes, 0) AS leadership_changes,
       coalesce(c.apply_errors, 0) AS apply_errors,
       coalesce(c.skipped_rounds, 0) AS skipped_rounds,
       c.counted_since
FROM pgp_metadata."group" g
LEFT JOIN pgp_metadata.learner l USING (group_id)
LEFT JOIN pgp_metadata.promise p USING (group_id)
LEFT JOIN paxos_appliers() a USING (group_id)
LEFT JOIN pgp_metadata.paxos_group_counters() c USING (group_id);

CREATE VIEW pgp_metadata.paxos_member_status AS
SELECT h.group_id,
       h.connection,
       h.connection = g.self_connection AS is_self,
       h.min_round AS votes_from_round,
       CASE WHEN h.connection = g.self_connection THEN true
            WHEN m.last_answer IS NULL AND m.last_failure IS NULL THEN NULL
            ELSE m.last_answer >= coalesce(m.last_failure, '-infinity') END AS reachable,
       m.last_answer,
       m.last_failure,
       m.last_error,
       m.round_trip_ms,
       m.requests,
       m.failures,
       m.timeouts,
       m.acknowledged_round,
       CASE WHEN m.acknowledged_round IS NOT NULL
            THEN greatest(l.learned_through - m.acknowledged_round, 0) END AS lag_rounds
FROM pgp_metadata.host h
JOIN pgp_metadata."group" g USING (group_id)
LEFT JOIN pgp_metadata.learner l USING (group_id)
CROSS JOIN LATERAL pgp_metadata.paxos_member_contact(h.group_id, h.connection) m
WHERE h.max_round IS NULL;

GRANT USAGE ON SCHEMA pgp_metadata TO pg_monitor;
GRANT SELECT ON pgp_metadata.paxos_group_status, pgp_metadata.paxos_member_status TO pg_monitor;
GRANT EXECUTE ON FUNCTION paxos_appliers(),
                          pgp_metadata.paxos_group_counters(),
                          pgp_metadata.paxos_member_contact(text, text) TO pg_monitor;
"#,
    name = "status_views",
    requires = [
        applier::paxos_appliers,
        pgp_metadata::paxos_group_counters,
        pgp_metadata::paxos_member_contact
    ]
);
