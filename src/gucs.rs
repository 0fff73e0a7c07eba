//! Every pg_paxos setting: a private static, its registration, and one accessor each.
use std::ffi::CStr;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

/// What a read of a replicated table sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PostgresGucEnum)]
pub enum Consistency {
    /// Every write acknowledged before the statement began.
    #[name = c"strong"]
    Strong,
    /// What this node has applied.
    #[name = c"optimistic"]
    Optimistic,
}

static NODE_ID: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(None);
static CONSISTENCY: GucSetting<Consistency> = GucSetting::<Consistency>::new(Consistency::Strong);
static ALLOW_MUTABLE_FUNCTIONS: GucSetting<bool> = GucSetting::<bool>::new(false);
static REQUEST_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(2000);
static LOG_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(100_000);
static PIPELINE_DEPTH: GucSetting<i32> = GucSetting::<i32>::new(1);
static LEASE_DURATION_MS: GucSetting<i32> = GucSetting::<i32>::new(0);

pub fn init() {
    GucRegistry::define_string_guc(
        c"pg_paxos.node_id",
        c"Name of this node in pg_paxos ballots and proposal ids.",
        c"Must be unique among the members of every group this node belongs to.",
        &NODE_ID,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"pg_paxos.consistency_model",
        c"What reads of replicated tables see: strong or optimistic.",
        c"strong applies the group's log through its highest accepted round before the \
          statement reads (a round trip to a majority); optimistic reads what this node has \
          applied.",
        &CONSISTENCY,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_paxos.allow_mutable_functions",
        c"Lets writes to replicated tables call functions that are not immutable.",
        c"Such functions (now(), random(), ...) run on every member and may give each a \
          different result: the members' tables can then differ.",
        &ALLOW_MUTABLE_FUNCTIONS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_paxos.request_timeout",
        c"How long to wait for one peer's answer, and for a majority before giving up.",
        c"",
        &REQUEST_TIMEOUT_MS,
        10,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_paxos.pipeline_depth",
        c"How many batches of appends the leading member's proposer has in flight at once.",
        c"Above 1, a batch goes out while earlier ones wait for their votes: it helps when \
          round trips between members are long and cores are spare, and costs CPU when they \
          are not.",
        &PIPELINE_DEPTH,
        1,
        8,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_paxos.lease_duration",
        c"How long a leader lease lasts; 0 turns leases off.",
        c"Set the same value on every member. A leading member that holds a lease serves \
          strong reads from what it applied, without a round trip; the acceptors that \
          granted it promise no other ballot until it runs out, and a restarted member \
          promises nothing for this long. Assumes members' clocks run at rates within 10% \
          of each other.",
        &LEASE_DURATION_MS,
        0,
        60_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_paxos.log_retention",
        c"How many applied rounds of each group's log this node keeps.",
        c"Older rounds are removed in the background. A member that was down for longer \
          than the kept rounds last catches up by copying another member's tables.",
        &LOG_RETENTION,
        100,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

/// This node's configured id, or "" when unset (ballots stay unique through a random token).
pub fn node_id() -> String {
    NODE_ID
        .get()
        .as_deref()
        .map(CStr::to_string_lossy)
        .map(|s| s.into_owned())
        .unwrap_or_default()
}

pub fn request_timeout() -> std::time::Duration {
    std::time::Duration::from_millis(REQUEST_TIMEOUT_MS.get().max(1) as u64)
}

pub fn pipeline_depth() -> usize {
    PIPELINE_DEPTH.get().clamp(1, 8) as usize
}

/// The lease duration in nanoseconds, 0 when leases are off.
pub fn lease_duration_ns() -> u64 {
    LEASE_DURATION_MS.get().clamp(0, 60_000) as u64 * 1_000_000
}

pub fn log_retention() -> i64 {
    i64::from(LOG_RETENTION.get())
}

pub fn consistency() -> Consistency {
    CONSISTENCY.get()
}

pub fn allow_mutable_functions() -> bool {
    ALLOW_MUTABLE_FUNCTIONS.get()
}
