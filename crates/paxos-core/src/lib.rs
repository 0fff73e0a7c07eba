//! The Paxos protocol of pg_paxos, free of I/O so that it can be tested exhaustively.
//!
//! - [`Ballot`]: a proposal number paired with the proposer that owns it, compared whole.
//! - [`Acceptor`]: the rules an acceptor applies to prepare, accept and learn messages.
//! - [`Proposer`]: a single-decree proposer as a state machine: replies in, [`Command`]s out.
//! - [`Membership`]: which members vote on a round, and how many make a majority.
//! - [`RangePromise`], [`prepare_from`], [`accept_batch`], [`RangeLeader`]: Multi-Paxos with
//!   a stable leader, phase 1 once for every round from some round on.
//! - [`lease`]: leader leases, so that the leading member reads without a round trip.
//! - [`compaction`]: which rounds a member may forget, and refusing them afterwards.
//! - [`mark_chosen_through`], [`decided_by_reports`]: learning decisions from accept requests
//!   and from what the voters report, without a message of their own.
//!
//! The extension persists acceptor state and carries messages; every decision about what to
//! promise, accept, propose or declare chosen is taken here.

mod acceptor;
mod ballot;
pub mod compaction;
mod learning;
pub mod lease;
mod membership;
mod proposer;
mod range;

pub use acceptor::{AcceptReply, Acceptor, PrepareReply};
pub use ballot::Ballot;
pub use learning::{decided_by_reports, mark_chosen_through, RoundReport};
pub use membership::{majority, Member, Membership};
pub use proposer::{Command, Proposer};
pub use range::{accept_batch, prepare_from, BatchReply, PrepareFrom, RangeLeader, RangePromise};
