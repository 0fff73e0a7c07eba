//! Every pg_paxos setting: a private static, its registration, and one accessor each.
use std::ffi::CStr;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

static NODE_ID: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(None);
static REQUEST_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(2000);

pub fn init() {
    GucRegistry::define_string_guc(
        c"pg_paxos.node_id",
        c"Name of this node in pg_paxos ballots and proposal ids.",
        c"Must be unique among the members of every group this node belongs to.",
        &NODE_ID,
        GucContext::Postmaster,
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
