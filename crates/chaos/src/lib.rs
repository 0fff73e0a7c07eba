//! Fault injection for pg_paxos, Jepsen style: a seeded nemesis crashes, pauses, cuts off
//! and slows a minority of a local cluster's members, or splits it with a bridge, while
//! clients on every member run registers, an insert-only set and raw appends and record
//! what they saw; afterwards the members must
//! converge, and the histories must be linearizable (registers), complete (the set) and
//! exactly-once (the log). The same seed replays the same schedule of operations and faults.
pub mod nemesis;
pub mod proxy;
pub mod register;
pub mod run;
pub mod workload;

pub use run::{run, Config, Report};
