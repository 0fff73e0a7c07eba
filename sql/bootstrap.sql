-- pg_paxos catalog. Acceptor state and the log share one row per (group, round); membership
-- is derived from the log's join/leave entries; nothing here is written by PUBLIC.
CREATE SCHEMA pgp_metadata;
REVOKE ALL ON SCHEMA pgp_metadata FROM PUBLIC;

-- One row per group this node belongs to.
CREATE TABLE pgp_metadata."group" (
    group_id text PRIMARY KEY CHECK (group_id <> ''),
    -- How the other members reach this node in this group.
    self_connection text NOT NULL,
    -- Every round up to here has been applied on this node (in the applier's transaction).
    last_applied_round bigint NOT NULL DEFAULT -1
);

-- Every round up to learned_through is chosen and known on this node. Kept apart from
-- "group" so that learning never waits for a transaction that is applying the log.
CREATE TABLE pgp_metadata.learner (
    group_id text PRIMARY KEY REFERENCES pgp_metadata."group" ON DELETE CASCADE,
    learned_through bigint NOT NULL DEFAULT -1
);

-- Members and the rounds they vote on (min_round ..= max_round, open-ended while NULL).
-- Rebuilt from the log's membership entries, so history is never rewritten.
CREATE TABLE pgp_metadata.host (
    group_id text NOT NULL REFERENCES pgp_metadata."group" ON DELETE CASCADE,
    connection text NOT NULL,
    min_round bigint NOT NULL,
    max_round bigint,
    PRIMARY KEY (group_id, connection, min_round),
    CHECK (max_round IS NULL OR max_round >= min_round - 1)
);

-- Acceptor state and the log: one single-decree Paxos instance per (group, round).
-- Ballots are (number, proposer) and are stored and compared whole. Only the acceptor
-- endpoints write here, from typed state: promised_num/by are both set or both NULL, and so
-- are accepted_num/by, value_kind ('value', 'noop', 'join' or 'leave') and value_id; a
-- chosen round has an accepted value. These are not CHECK constraints, nor is group_id a
-- foreign key, because every append writes rows here on every member and those checks
-- cost each write a parse of the constraints and a lock on the group row; deleting a group
-- deletes its rounds explicitly.
CREATE TABLE pgp_metadata.round (
    group_id text NOT NULL,
    round_num bigint NOT NULL,
    promised_num bigint,
    promised_by text,
    accepted_num bigint,
    accepted_by text,
    value_kind text,
    value text,
    value_id text,
    chosen boolean NOT NULL DEFAULT false,
    PRIMARY KEY (group_id, round_num)
);

-- A promise covering every round from from_round on (Multi-Paxos phase 1 for many rounds at
-- once). A round's effective promise is the higher of its own and this one. The row exists
-- from the moment the group does. Endpoints take advisory locks (see src/locks.rs: shared to
-- vote, exclusive to promise), so a promise for many rounds and a vote on one of them never
-- interleave.
CREATE TABLE pgp_metadata.promise (
    group_id text PRIMARY KEY REFERENCES pgp_metadata."group" ON DELETE CASCADE,
    from_round bigint,
    ballot_num bigint,
    ballot_by text,
    -- The connection string of the member that asked for this promise.
    leader_connection text,
    -- Every round up to here is chosen, applied and forgotten here (compacted, or covered by
    -- a state copy): this acceptor refuses messages about those rounds. Membership entries
    -- stay in "round", since the members of every past round derive from them.
    compacted_through bigint NOT NULL DEFAULT -1,
    CHECK ((from_round IS NULL) = (ballot_num IS NULL)),
    CHECK ((ballot_num IS NULL) = (ballot_by IS NULL))
);

-- Tables whose writes go through a group's log; a table belongs to one group at most. A
-- table is known by its OID on this member (OIDs differ between members; its name, the same
-- everywhere, is what the log carries). Renaming, moving or dropping it is refused, so both
-- keep naming the same table.
CREATE TABLE pgp_metadata.replicated_tables (
    group_id text NOT NULL REFERENCES pgp_metadata."group" ON DELETE CASCADE,
    table_oid oid NOT NULL UNIQUE,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    replicated_at bigint NOT NULL,
    PRIMARY KEY (schema_name, table_name)
);

-- Entries that failed the same way on every member (a constraint or data error), recorded
-- when applied, so that every member skips them alike.
CREATE TABLE pgp_metadata.apply_errors (
    group_id text NOT NULL REFERENCES pgp_metadata."group" ON DELETE CASCADE,
    round_num bigint NOT NULL,
    sqlstate text NOT NULL,
    message text NOT NULL,
    PRIMARY KEY (group_id, round_num)
);

-- Where each sequence of a replicated table (serial, identity) stood after the last
-- committed apply. Sequences are not transactional; an apply that is rolled back and retried
-- would draw new values, so the next apply first puts them back (src/replication/sequences.rs).
CREATE TABLE pgp_metadata.sequences (
    group_id text NOT NULL REFERENCES pgp_metadata."group" ON DELETE CASCADE,
    seq regclass NOT NULL,
    -- NULL: nextval was never called.
    last_value bigint,
    PRIMARY KEY (group_id, seq)
);

-- Groups dropped (paxos_drop_group) while this node was a member, and the round of the drop
-- entry: a member that was down meanwhile learns from here that the group is gone. Their
-- ids are not used again on this node.
CREATE TABLE pgp_metadata.dropped_group (
    group_id text PRIMARY KEY,
    round_num bigint NOT NULL,
    dropped_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

REVOKE ALL ON ALL TABLES IN SCHEMA pgp_metadata FROM PUBLIC;
