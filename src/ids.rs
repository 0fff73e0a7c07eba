//! Identities that must never collide: ballot owners and proposal ids.
use std::cell::Cell;

use crate::gucs;

thread_local! {
    static BACKEND_TOKEN: Cell<Option<u64>> = const { Cell::new(None) };
}

pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for 8 bytes; pg_strong_random only writes into it.
    let ok = unsafe { pgrx::pg_sys::pg_strong_random(bytes.as_mut_ptr().cast(), bytes.len()) };
    if !ok {
        pgrx::error!("pg_paxos: could not generate random bytes");
    }
    u64::from_le_bytes(bytes)
}

/// A random token drawn once per backend: it makes ballot owners unique even when node ids
/// are not, and when a process id is reused.
fn backend_token() -> u64 {
    BACKEND_TOKEN.with(|cell| match cell.get() {
        Some(token) => token,
        None => {
            let token = random_u64();
            cell.set(Some(token));
            token
        }
    })
}

/// The owner part of this backend's ballots: who asked, on which node, in which backend.
pub fn ballot_owner(proposer: &str) -> String {
    // SAFETY: MyProcPid is set once at backend start.
    let pid = unsafe { pgrx::pg_sys::MyProcPid };
    format!(
        "{proposer}@{}/{pid}/{:016x}",
        gucs::node_id(),
        backend_token()
    )
}

/// The owner part of a ballot this node leads a group with, shared by all its backends:
/// a fair random draw for ties, the node, and a token of the backend that drew it. At most
/// 8 + 1 + 64 + 1 + 16 bytes.
pub fn node_ballot_owner() -> String {
    let node = gucs::node_id();
    let mut end = node.len().min(64);
    while !node.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{:08x}:{}/{:016x}",
        random_u64() as u32,
        &node[..end],
        backend_token()
    )
}

/// A new proposal id, unique across the cluster with overwhelming probability.
pub fn proposal_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}
