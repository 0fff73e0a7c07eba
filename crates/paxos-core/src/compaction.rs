//! Compaction: forgetting rounds of the log so that it stays bounded.
//!
//! The rule: an acceptor may forget its state for a round only once it knows that round is
//! chosen, and from then on it refuses every message about it, as an acceptor that crashed
//! for good would. Any majority that answers a later ballot still holds an acceptor that
//! voted for the chosen value and remembers it, so no second value can be chosen there.
//! Answering as a fresh acceptor instead would let one. A member that needs a forgotten
//! round copies the state of a member that applied it (a state copy) instead of the round.

use crate::Acceptor;

/// The highest round a member that applied every round through `applied` (each one chosen,
/// in order) may forget while it keeps the last `retain` rounds; -1 when none.
pub fn compactable_through(applied: i64, retain: i64) -> i64 {
    applied.saturating_sub(retain.max(0)).max(-1)
}

/// Whether an acceptor that forgot every round through `compacted_through` refuses a
/// message about rounds from `first` on (a range prepare, a batch of accepts, one round).
pub fn refuses(first: i64, compacted_through: i64) -> bool {
    first <= compacted_through
}

impl<V> Acceptor<V> {
    /// Whether this round's state may be forgotten: only once it is known to be chosen.
    pub fn may_forget(&self) -> bool {
        self.chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ballot;

    #[test]
    fn keeps_the_last_rounds_and_never_goes_below_minus_one() {
        assert_eq!(compactable_through(100, 10), 90);
        assert_eq!(compactable_through(5, 10), -1);
        assert_eq!(compactable_through(-1, 0), -1);
        assert_eq!(compactable_through(7, -3), 7);
    }

    #[test]
    fn refuses_forgotten_rounds_only() {
        assert!(refuses(3, 3));
        assert!(refuses(0, 3));
        assert!(!refuses(4, 3));
        assert!(!refuses(0, -1));
    }

    #[test]
    fn only_a_chosen_round_may_be_forgotten() {
        let mut a = Acceptor::<&str>::default();
        assert!(!a.may_forget());
        a.on_accept(&Ballot::new(1, "p"), "v");
        assert!(!a.may_forget());
        a.on_learn(&Ballot::new(1, "p"), "v");
        assert!(a.may_forget());
    }
}
