//! Table replication: writes to replicated tables as log entries, applied in round order on
//! every member.
//!
//! - `statement`: a write as the log carries it, and running it as its author.
//! - `apply`: applying the log on this node, entry by entry, classifying failures: an error
//!   every member hits the same way (a constraint or data error) is recorded and skipped
//!   everywhere; any other stops the apply, which is retried later, so members never
//!   diverge.
//! - `tables`: which tables are replicated, and replicating one.
//! - `guard`: refuses writes to replicated tables that bypass the log.
pub mod apply;
pub mod guard;
pub mod statement;
pub mod tables;
