-- pg_paxos 0.1.0 -> 0.2.0: status views for monitoring roles (see "Status views" in the
-- README) and paxos_write_round(); nothing else in the catalog changes. Run ALTER EXTENSION
-- pg_paxos UPDATE on each member once its server runs the 0.2.0 library (which still
-- serves 0.1.0's functions).
\echo Use "ALTER EXTENSION pg_paxos UPDATE" to load this file. \quit

CREATE FUNCTION "paxos_write_round"() RETURNS bigint
STRICT STABLE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'paxos_write_round_wrapper';

CREATE FUNCTION pgp_metadata."paxos_group_counters"() RETURNS TABLE (
	"group_id" TEXT,
	"leading" bool,
	"appends" bigint,
	"batches" bigint,
	"outcome_unknown" bigint,
	"leadership_changes" bigint,
	"apply_errors" bigint,
	"skipped_rounds" bigint,
	"counted_since" timestamp with time zone
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'paxos_group_counters_wrapper';

CREATE FUNCTION pgp_metadata."paxos_member_contact"(
	"group_id" TEXT,
	"connection" TEXT
) RETURNS TABLE (
	"requests" bigint,
	"failures" bigint,
	"timeouts" bigint,
	"last_answer" timestamp with time zone,
	"last_failure" timestamp with time zone,
	"round_trip_ms" double precision,
	"last_error" TEXT,
	"acknowledged_round" bigint
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'paxos_member_contact_wrapper';

REVOKE ALL ON FUNCTION pgp_metadata.paxos_group_counters() FROM PUBLIC;
REVOKE ALL ON FUNCTION pgp_metadata.paxos_member_contact(text, text) FROM PUBLIC;

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
