//! What proposers and acceptors say to each other. Every endpoint takes one JSON request and
//! returns one JSON reply, so the wire format is defined here once, on both sides.
use paxos_core::{AcceptReply, Ballot, PrepareReply};
use serde::{Deserialize, Serialize};

/// What a log entry does when it is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// An opaque value from paxos() or paxos_append(); applying it changes nothing.
    Value,
    /// Fills a round nobody finished; applying it changes nothing.
    Noop,
    /// `value` (a connection string) votes from the next round on.
    Join,
    /// `value` (a connection string) stops voting after this round.
    Leave,
    /// `value` (a `replication::Statement` as JSON) is a write to replicated tables, run on
    /// every member when it applies the round.
    Sql,
    /// `value` (a `Replicate` as JSON) makes a table replicated.
    Replicate,
    /// Ends the group: every member drops it when it applies this round, and the rounds
    /// after it are never applied.
    Drop,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Value => "value",
            EntryKind::Noop => "noop",
            EntryKind::Join => "join",
            EntryKind::Leave => "leave",
            EntryKind::Sql => "sql",
            EntryKind::Replicate => "replicate",
            EntryKind::Drop => "drop",
        }
    }

    /// Whether the entry changes who votes from the next round on.
    pub fn changes_membership(self) -> bool {
        matches!(self, EntryKind::Join | EntryKind::Leave)
    }

    pub fn parse(kind: &str) -> Option<EntryKind> {
        [
            EntryKind::Value,
            EntryKind::Noop,
            EntryKind::Join,
            EntryKind::Leave,
            EntryKind::Sql,
            EntryKind::Replicate,
            EntryKind::Drop,
        ]
        .into_iter()
        .find(|k| k.as_str() == kind)
    }
}

/// A proposed log entry. `id` is unique per proposal, so a proposer recognises its own entry
/// even when another proposal carries the same text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub kind: EntryKind,
    pub value: Option<String>,
}

/// A round's chosen entry and the ballot it was chosen under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub round: i64,
    pub ballot: Ballot,
    pub entry: Entry,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PrepareRequest {
    pub group: String,
    pub round: i64,
    pub ballot: Ballot,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PrepareResponse {
    pub reply: PrepareReply<Entry>,
    /// The acceptor's highest round with an accepted value, so a proposer that is behind
    /// can fetch what it missed in bulk.
    pub max_round: i64,
}

/// Phase 1 for every round from `from_round` on, at once.
#[derive(Debug, Serialize, Deserialize)]
pub struct PrepareFromRequest {
    pub group: String,
    pub from_round: i64,
    pub ballot: Ballot,
    /// The connection string of the member asking, so that the others can send it their
    /// appends while it leads.
    #[serde(default)]
    pub leader: Option<String>,
}

/// A value an acceptor accepted in a round covered by a range promise.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reported {
    pub round: i64,
    pub ballot: Ballot,
    pub entry: Entry,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RangeReply {
    /// Promised for every round from the requested one on; here is what was accepted there.
    Promise { accepted: Vec<Reported> },
    /// Some round from the requested one on had promised a higher ballot.
    Reject { promised: Ballot },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PrepareFromResponse {
    pub reply: RangeReply,
    pub max_round: i64,
}

/// Phase 2 for consecutive rounds at once: `entries[i]` for round `first_round + i`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AcceptRequest {
    pub group: String,
    pub first_round: i64,
    pub ballot: Ballot,
    pub entries: Vec<Entry>,
    /// Every round up to this one that the acceptor accepted under `ballot` is chosen: the
    /// leader tells what it learned with its next request instead of in one of its own. It
    /// is what paxos-core's `RangeLeader::chosen_through` vouches for: a leadership gives its
    /// ballot up as soon as one of its proposals was not decided under it, or went unreported.
    #[serde(default)]
    pub chosen_through: Option<i64>,
}

/// What the leading member tells the others once the group goes idle: every round up to
/// `through` that an acceptor accepted under `ballot` is chosen (the rule of
/// `AcceptRequest::chosen_through`, without new entries).
#[derive(Debug, Serialize, Deserialize)]
pub struct AnnounceRequest {
    pub group: String,
    pub ballot: Ballot,
    pub through: i64,
}

/// One reply per entry of the request, in order.
pub type AcceptResponse = Vec<AcceptReply<Entry>>;

/// Appends made on another member, sent to the member that leads.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitRequest {
    pub group: String,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitResponse {
    /// One per entry of the request, in order.
    pub outcomes: Vec<Submitted>,
}

/// What came of one entry another member submitted.
#[derive(Debug, Serialize, Deserialize)]
pub enum Submitted {
    Chosen(i64),
    /// It may or may not have been chosen, for this reason.
    Unknown(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LearnRequest {
    pub group: String,
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LearnResponse {
    pub learned_through: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChosenRequest {
    pub group: String,
    pub from_round: i64,
    pub through_round: i64,
    pub limit: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ChosenResponse {
    /// The rounds this member recorded as chosen.
    pub chosen: Vec<Decision>,
    /// The rounds where it accepted a value without recording it as chosen (yet): a value
    /// that a majority accepted under one ballot is chosen.
    pub accepted: Vec<Decision>,
    /// Every round through this one is chosen and forgotten on this member.
    #[serde(default)]
    pub compacted_through: Option<i64>,
    /// The group was dropped at this round; this member has nothing of it any more.
    #[serde(default)]
    pub dropped_at: Option<i64>,
}

/// Asks this very node, over a session of its own, to become a learner of `group`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LearnerRequest {
    pub group: String,
    /// The member whose state is copied.
    pub existing: String,
    /// How the members reach this node.
    pub own: String,
}

/// Asks a member to apply the group's log through its drop entry at `round`, which drops it.
#[derive(Debug, Serialize, Deserialize)]
pub struct DropRequest {
    pub group: String,
    pub round: i64,
}

/// Asks a member for what a state copy needs, as of its applied position, in the snapshot
/// of the caller's transaction there.
#[derive(Debug, Serialize, Deserialize)]
pub struct StateRequest {
    pub group: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StateResponse {
    /// The member's tables hold every round through this one, and no later one.
    pub applied: i64,
    pub tables: Vec<CopiedTable>,
    /// The chosen membership entries through `applied`.
    pub membership: Vec<Decision>,
    pub sequences: Vec<CopiedSequence>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CopiedTable {
    pub schema: String,
    pub name: String,
    pub replicated_at: i64,
    /// The columns a copy carries (name, type), in the member's column order: every column
    /// that is neither dropped nor generated.
    pub columns: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CopiedSequence {
    pub schema: String,
    pub name: String,
    pub last_value: Option<i64>,
}

/// Asks an acceptor for a lease for the leader's ballot (see `lease`), or, for 0 ms, to
/// release the ballot, which its leader gave up.
#[derive(Debug, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub group: String,
    pub ballot: paxos_core::Ballot,
    pub duration_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LeaseResponse {
    /// 0 when nothing was granted.
    pub granted_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MaxRoundRequest {
    pub group: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MaxRoundResponse {
    pub max_round: i64,
}

/// Asks an existing member to append a membership change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembershipRequest {
    pub group: String,
    pub connection: String,
    pub kind: EntryKind,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MembershipResponse {
    /// The round whose entry changed membership; it takes effect at the next round.
    pub round: i64,
    /// The member that leads the group, as far as the answering member knows.
    #[serde(default)]
    pub leader: Option<String>,
}

/// The payload of a replicate entry: the table, and a fingerprint of its rows on the member
/// that replicated it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicate {
    pub schema: String,
    pub table: String,
    /// md5 of the table's rows as text, in order.
    pub fingerprint: String,
}
