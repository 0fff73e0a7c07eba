//! The harness's one error type. Messages name the node and carry the failing command's
//! output and the tail of the server log, so a failed test explains itself.

use std::fmt;
use std::io;
use std::path::Path;
use std::time::Duration;

use crate::process::{section, tail};

/// How many server-log lines an error message quotes.
const LOG_LINES: usize = 20;

/// Why a cluster operation failed.
#[derive(thiserror::Error)]
pub enum Error {
    /// The [`ClusterOptions`](crate::ClusterOptions) cannot describe a cluster.
    #[error("invalid cluster options: {0}")]
    InvalidOptions(String),
    /// This machine cannot run a cluster (no PostgreSQL binaries, no `postgres` user, …).
    #[error("cannot run a local cluster here: {0}")]
    Environment(String),
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    /// A command (initdb, pg_ctl, psql) exited unsuccessfully.
    #[error("{what} failed ({status}){detail}")]
    CommandFailed {
        what: String,
        status: String,
        /// The command's output and, for server commands, the server log's tail.
        detail: String,
    },
    /// A bounded wait ran out.
    #[error("{what}: not done after {after:?}{detail}")]
    Timeout {
        what: String,
        after: Duration,
        detail: String,
    },
    /// The node is not in a state that allows the operation.
    #[error("{node}: {problem}")]
    NodeState { node: String, problem: String },
    /// A statement failed on a node.
    #[error("{node}: {sql}: {}", describe(source))]
    Sql {
        node: String,
        sql: String,
        source: tokio_postgres::Error,
    },
    /// A tokio-postgres connection could not be made.
    #[error("connecting to {node}: {source}")]
    Connect {
        node: String,
        source: tokio_postgres::Error,
    },
}

/// A statement's error with the server's message and SQLSTATE ("db error" alone says
/// nothing).
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => error.to_string(),
    }
}

impl Error {
    /// Appends the tail of the server log at `log` to a command failure or timeout.
    pub(crate) fn with_log(mut self, log: &Path) -> Self {
        if let Error::CommandFailed { detail, .. } | Error::Timeout { detail, .. } = &mut self {
            detail.push_str(&section(
                &format!("last lines of {}", log.display()),
                &tail(log, LOG_LINES),
            ));
        }
        self
    }
}

/// Debug prints the message: `unwrap()` and tests returning `Result` then show the command
/// output and log tail with their line breaks instead of an escaped struct dump.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
