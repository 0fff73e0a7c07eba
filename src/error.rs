//! Every error pg_paxos raises, mapped once to a SQLSTATE and a message a DBA can act on.
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum PaxosError {
    #[error("argument \"{0}\" must not be NULL")]
    NullArgument(&'static str),
    #[error("invalid value for {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },
    #[error("invalid connection string {connection:?}: {reason}")]
    InvalidConnection { connection: String, reason: String },
    #[error("only superusers can {0}")]
    NotSuperuser(&'static str),
    #[error("role \"{0}\" is not the role of any member connection string: only members call the member endpoints")]
    NotMemberRole(String),
    #[error("paxos group \"{0}\" does not exist on this node")]
    UnknownGroup(String),
    #[error("this node is already a member of paxos group \"{0}\"")]
    GroupExists(String),
    #[error("paxos group \"{group}\" was dropped at round {round}")]
    Dropped { group: String, round: i64 },
    #[error("paxos group \"{group}\" was dropped on this node at round {round}: the ids of dropped groups are not used again")]
    DroppedId { group: String, round: i64 },
    #[error("{member} is not a member of paxos group \"{group}\"; its members are: {members}")]
    NotAMember {
        group: String,
        member: String,
        members: String,
    },
    #[error("could not connect to {connection}: {reason}")]
    Unreachable { connection: String, reason: String },
    #[error("{connection} is not this node: {reason}")]
    NotSelf { connection: String, reason: String },
    #[error("no majority of paxos group \"{group}\" answered for round {round}: {answered} of {members} members answered, {needed} needed")]
    NoMajority {
        group: String,
        round: i64,
        answered: usize,
        members: usize,
        needed: usize,
        failures: Vec<String>,
    },
    #[error("round {round} of paxos group \"{group}\" cannot be decided yet: {reason}")]
    RoundOutOfReach {
        group: String,
        round: i64,
        reason: String,
    },
    #[error("round {round} of paxos group \"{group}\" is no longer kept on {member}: rounds through {through} were compacted there")]
    Compacted {
        group: String,
        round: i64,
        through: i64,
        member: String,
        /// The member's connection string, when a state copy can come from it.
        donor: Option<String>,
    },
    #[error("copying the state of paxos group \"{group}\" from {donor} failed: {reason}")]
    StateCopy {
        group: String,
        donor: String,
        reason: String,
    },
    #[error("the append may or may not have been chosen: {reason}")]
    OutcomeUnknown { reason: String },
    #[error("{0}")]
    WrongObject(String),
    #[error("must be the owner of table {0} (or a superuser) to replicate it")]
    NotOwner(String),
    #[error("table {table} is already replicated in paxos group \"{group}\"")]
    AlreadyReplicated { table: String, group: String },
    #[error("cannot apply round {round}: {reason}")]
    ReplicaMismatch { round: i64, reason: String },
    /// A replicated write that failed the same way on every member.
    #[error("{message}")]
    Replayed { sqlstate: String, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot use a mutable function in a write to a replicated table: {0}")]
    NotDeterministic(String),
    /// A trigger, foreign key or function set off by a replicated write used another table.
    #[error(
        "a write to a replicated table of paxos group \"{group}\" set off a statement that \
         {} {relation}, which the group does not replicate",
        if *writes { "writes" } else { "reads" }
    )]
    OutsideGroup {
        group: String,
        relation: String,
        writes: bool,
    },
    #[error(
        "cannot write to a replicated table of paxos group \"{0}\" inside a transaction block"
    )]
    InTransactionBlock(String),
    #[error("the snapshot of this statement predates writes to paxos group \"{group}\": it sees round {seen}, the group is at round {through}")]
    StaleSnapshot {
        group: String,
        seen: i64,
        through: i64,
    },
    #[error("the applier of paxos group \"{group}\" on this node is behind: {reason}")]
    Applier { group: String, reason: String },
    /// A session waits for the applier, which waits for a lock that session holds.
    #[error(
        "deadlock detected: the applier of paxos group \"{0}\" waits for a lock this \
         transaction holds, and this transaction waits for the applier"
    )]
    ApplierWaitsForUs(String),
    #[error("peer {connection} failed: {reason}")]
    Peer { connection: String, reason: String },
    /// An error this node raised in another process (a join's learner stage in a session of
    /// its own, a batch its proposer failed to send), as is.
    #[error("{message}")]
    OwnSession { sqlstate: String, message: String },
    #[error("pg_paxos catalog error: {0}")]
    Catalog(#[from] pgrx::spi::SpiError),
}

pub type Result<T> = std::result::Result<T, PaxosError>;

/// A five-character SQLSTATE packed as PostgreSQL's MAKE_SQLSTATE does.
fn packed(sqlstate: &str) -> isize {
    sqlstate
        .bytes()
        .take(5)
        .enumerate()
        .map(|(i, c)| ((c.wrapping_sub(b'0') & 0x3F) as isize) << (6 * i))
        .sum()
}

/// The five characters of a packed SQLSTATE (the inverse of `packed`).
pub fn spelled(code: PgSqlErrorCode) -> String {
    let packed = code as isize;
    (0..5)
        .map(|i| (((packed >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}

impl PaxosError {
    /// The error's SQLSTATE as its five characters.
    pub fn sqlstate_text(&self) -> String {
        spelled(self.sqlstate())
    }

    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            PaxosError::NullArgument(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            PaxosError::InvalidArgument { .. } | PaxosError::InvalidConnection { .. } => {
                ERRCODE_INVALID_PARAMETER_VALUE
            }
            PaxosError::NotSelf { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            PaxosError::NotSuperuser(_) | PaxosError::NotMemberRole(_) => {
                ERRCODE_INSUFFICIENT_PRIVILEGE
            }
            PaxosError::UnknownGroup(_) | PaxosError::NotAMember { .. } => ERRCODE_UNDEFINED_OBJECT,
            PaxosError::GroupExists(_) => ERRCODE_DUPLICATE_OBJECT,
            PaxosError::Dropped { .. } => ERRCODE_UNDEFINED_OBJECT,
            PaxosError::DroppedId { .. } => ERRCODE_DUPLICATE_OBJECT,
            PaxosError::Unreachable { .. } => ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            PaxosError::NoMajority { .. } => ERRCODE_CONNECTION_FAILURE,
            PaxosError::RoundOutOfReach { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            PaxosError::Compacted { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            PaxosError::StateCopy { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            PaxosError::OutcomeUnknown { .. } => ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN,
            PaxosError::WrongObject(_) => ERRCODE_WRONG_OBJECT_TYPE,
            PaxosError::NotOwner(_) => ERRCODE_INSUFFICIENT_PRIVILEGE,
            PaxosError::AlreadyReplicated { .. } => ERRCODE_DUPLICATE_OBJECT,
            PaxosError::ReplicaMismatch { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            PaxosError::Replayed { sqlstate, .. } | PaxosError::OwnSession { sqlstate, .. } => {
                PgSqlErrorCode::from(packed(sqlstate))
            }
            PaxosError::Unsupported(_) | PaxosError::NotDeterministic(_) => {
                ERRCODE_FEATURE_NOT_SUPPORTED
            }
            PaxosError::OutsideGroup { writes: true, .. } => {
                ERRCODE_S_R_E_MODIFYING_SQL_DATA_NOT_PERMITTED
            }
            PaxosError::OutsideGroup { writes: false, .. } => {
                ERRCODE_S_R_E_READING_SQL_DATA_NOT_PERMITTED
            }
            PaxosError::InTransactionBlock(_) => ERRCODE_ACTIVE_SQL_TRANSACTION,
            PaxosError::StaleSnapshot { .. } => ERRCODE_T_R_SERIALIZATION_FAILURE,
            PaxosError::Applier { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            PaxosError::ApplierWaitsForUs(_) => ERRCODE_T_R_DEADLOCK_DETECTED,
            PaxosError::Peer { .. } => ERRCODE_CONNECTION_EXCEPTION,
            PaxosError::Catalog(_) => ERRCODE_INTERNAL_ERROR,
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            PaxosError::NoMajority { failures, .. } if !failures.is_empty() => {
                Some(failures.join("; "))
            }
            _ => None,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            PaxosError::NotSuperuser(_) => Some("Connect as a superuser to manage paxos groups."),
            PaxosError::UnknownGroup(_) => Some(
                "Create it with paxos_create_group() or join it with paxos_join_group() first.",
            ),
            PaxosError::NoMajority { .. } => Some(
                "Check that a majority of the group's members are running and reachable; \
                 pg_paxos.request_timeout bounds how long each is waited for.",
            ),
            PaxosError::Compacted { .. } => Some(
                "The round is applied on every member that kept up; a member further behind \
                 copies a member's state instead (its applier does so by itself). Raise \
                 pg_paxos.log_retention to keep more rounds.",
            ),
            PaxosError::OutcomeUnknown { .. } => Some(
                "Read the log (paxos_apply_log) to see whether the value was chosen before \
                 appending it again.",
            ),
            PaxosError::NotDeterministic(_) => Some(
                "Compute the value in the client and pass it as a constant or parameter, or \
                 have a superuser set pg_paxos.allow_mutable_functions.",
            ),
            PaxosError::DroppedId { .. } => Some(
                "Choose another group id. Once every node that was a member has dropped the \
                 group, a superuser may delete its row from pgp_metadata.dropped_group.",
            ),
            PaxosError::ApplierWaitsForUs(_) => Some(
                "Retry the transaction. The applier needed the lock to apply DDL or a write \
                 that another member made: a transaction that read a replicated table holds \
                 a lock on it until it ends.",
            ),
            PaxosError::OutsideGroup { .. } => Some(
                "Triggers, foreign keys and functions that a replicated write sets off run on \
                 every member and may use only the group's replicated tables: replicate that \
                 table in the same group, or leave it out of the trigger or constraint.",
            ),
            PaxosError::InTransactionBlock(_) => Some(
                "Each write to a replicated table is a log entry that commits on its own: run \
                 it outside BEGIN ... COMMIT (a DO block or function called on its own may \
                 make several).",
            ),
            PaxosError::StaleSnapshot { .. } => Some(
                "Retry the transaction: its first statement takes a snapshot after this \
                 node has applied the log.",
            ),
            PaxosError::InvalidConnection { .. } => Some(
                "Use a libpq key=value connection string such as 'host=10.0.0.1 port=5432 \
                 dbname=postgres user=postgres'; keep passwords in a password file.",
            ),
            _ => None,
        }
    }

    /// Raises this error as a PostgreSQL ERROR; never returns.
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.sqlstate(), self.to_string(), "pg_paxos");
        if let Some(detail) = self.detail() {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }
}

/// Unwraps a result at the SQL boundary, raising the error with its SQLSTATE.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| e.raise())
    }
}

/// The value of a SQL argument that must not be NULL.
pub fn required<T>(value: Option<T>, name: &'static str) -> Result<T> {
    value.ok_or(PaxosError::NullArgument(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_spells_its_sqlstate() {
        assert_eq!(
            PaxosError::UnknownGroup("g".into()).sqlstate_text(),
            "42704"
        );
        let unknown = PaxosError::OutcomeUnknown { reason: "r".into() };
        assert_eq!(unknown.sqlstate_text(), "40003");
        let replayed = PaxosError::Replayed {
            sqlstate: "23P01".into(),
            message: "m".into(),
        };
        assert_eq!(replayed.sqlstate_text(), "23P01");
    }
}
