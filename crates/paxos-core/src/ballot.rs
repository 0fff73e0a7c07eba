use serde::{Deserialize, Serialize};
use std::fmt;

/// A proposal ballot: a number and the identity of the proposer that owns it.
///
/// Ballots are totally ordered by number, then by proposer; the proposer part makes every
/// ballot unique, so two proposers never believe they own the same ballot. The 2016 prototype
/// stored only the number and decided two values for one round: a ballot is always stored and
/// compared whole.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub number: i64,
    pub proposer: String,
}

impl Ballot {
    /// The highest ballot number acceptors take. Proposers raise numbers one at a time, so
    /// real ballots never come near it; the headroom keeps [`Ballot::above`] from overflowing
    /// whatever an acceptor reports.
    pub const MAX_NUMBER: i64 = i64::MAX / 2;

    /// Whether acceptors take this ballot: numbers from 0 to [`Ballot::MAX_NUMBER`].
    pub fn is_valid(&self) -> bool {
        (0..=Self::MAX_NUMBER).contains(&self.number)
    }

    pub fn new(number: i64, proposer: impl Into<String>) -> Self {
        Ballot {
            number,
            proposer: proposer.into(),
        }
    }

    /// The lowest ballot of `proposer` that is higher than `other` (a valid ballot).
    pub fn above(other: &Ballot, proposer: impl Into<String>) -> Self {
        let proposer = proposer.into();
        let number = if proposer.as_str() > other.proposer.as_str() {
            other.number
        } else {
            other.number + 1
        };
        Ballot { number, proposer }
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.number, self.proposer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_number_then_proposer() {
        assert!(Ballot::new(1, "b") > Ballot::new(1, "a"));
        assert!(Ballot::new(2, "a") > Ballot::new(1, "z"));
        assert_ne!(Ballot::new(1, "a"), Ballot::new(1, "b"));
    }

    #[test]
    fn above_is_the_next_higher_ballot_of_that_proposer() {
        let seen = Ballot::new(5, "m");
        assert_eq!(Ballot::above(&seen, "z"), Ballot::new(5, "z"));
        assert_eq!(Ballot::above(&seen, "a"), Ballot::new(6, "a"));
        assert_eq!(Ballot::above(&seen, "m"), Ballot::new(6, "m"));
        for p in ["a", "m", "z"] {
            assert!(Ballot::above(&seen, p) > seen);
        }
    }
}
