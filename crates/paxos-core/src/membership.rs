/// The number of votes that makes a majority of `members`.
pub fn majority(members: usize) -> usize {
    members / 2 + 1
}

/// One member of a group and the rounds during which it votes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    pub connection: String,
    /// First round this member votes on.
    pub from_round: i64,
    /// Last round this member votes on; `None` while it is a member.
    pub until_round: Option<i64>,
}

impl Member {
    pub fn votes_on(&self, round: i64) -> bool {
        self.from_round <= round && self.until_round.is_none_or(|last| round <= last)
    }
}

/// A group's membership history. A membership change chosen at round `r` takes effect at
/// round `r + 1`, so the voters of round `r` are known to whoever knows rounds `< r`; history
/// is only ever appended to, never rewritten, so a past round keeps its quorum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    members: Vec<Member>,
}

impl Membership {
    pub fn new(members: Vec<Member>) -> Self {
        Membership { members }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The connection strings of the members that vote on `round`, in a stable order.
    pub fn voters(&self, round: i64) -> Vec<&str> {
        let mut voters: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.votes_on(round))
            .map(|m| m.connection.as_str())
            .collect();
        voters.sort_unstable();
        voters.dedup();
        voters
    }

    /// Applies a join chosen at `round`. Returns false (and changes nothing) if the node
    /// already votes after that round.
    pub fn join(&mut self, connection: &str, round: i64) -> bool {
        if self.voters(round + 1).contains(&connection) {
            return false;
        }
        self.members.push(Member {
            connection: connection.to_owned(),
            from_round: round + 1,
            until_round: None,
        });
        true
    }

    /// Applies a leave chosen at `round`. Returns false (and changes nothing) if the node does
    /// not vote after that round, so removing a node twice never rewrites history.
    pub fn leave(&mut self, connection: &str, round: i64) -> bool {
        let current = self.members.iter_mut().find(|m| {
            m.connection == connection && m.until_round.is_none() && m.from_round <= round + 1
        });
        match current {
            Some(member) => {
                member.until_round = Some(round);
                true
            }
            None => false,
        }
    }

    /// Whether `connection`, which knows the log through round `through`, is out of the
    /// group: it votes on no round after that (a leave removed it, and no later join brought
    /// it back). A node that finds itself out stops taking part and drops the group.
    pub fn is_out(&self, connection: &str, through: i64) -> bool {
        !self.voters(through + 1).contains(&connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn founded_by(node: &str) -> Membership {
        Membership::new(vec![Member {
            connection: node.into(),
            from_round: 0,
            until_round: None,
        }])
    }

    #[test]
    fn majorities() {
        assert_eq!(
            [1, 2, 3, 4, 5].map(majority),
            [1, 2, 2, 3, 3],
            "a majority of n is more than half of n"
        );
    }

    #[test]
    fn a_join_votes_from_the_next_round() {
        let mut m = founded_by("a");
        assert!(m.join("b", 4));
        assert_eq!(m.voters(4), vec!["a"]);
        assert_eq!(m.voters(5), vec!["a", "b"]);
        assert!(!m.join("b", 6), "already a member");
        assert_eq!(m.members().len(), 2);
    }

    #[test]
    fn a_leave_stops_voting_after_its_round_and_history_stays() {
        let mut m = founded_by("a");
        m.join("b", 1);
        m.join("c", 2);
        assert!(m.leave("b", 10));
        assert_eq!(m.voters(10), vec!["a", "b", "c"]);
        assert_eq!(m.voters(11), vec!["a", "c"]);
        assert!(!m.leave("b", 12), "leaving twice rewrites nothing");
        assert_eq!(m.voters(10), vec!["a", "b", "c"]);
        assert!(m.is_out("b", 12), "removed, and nothing brought it back");
        assert!(!m.is_out("c", 12));
        assert!(m.join("b", 20), "a node can come back");
        assert!(!m.is_out("b", 20), "it votes again after its join");
        assert_eq!(m.voters(21), vec!["a", "b", "c"]);
        assert_eq!(m.voters(15), vec!["a", "c"]);
    }
}
