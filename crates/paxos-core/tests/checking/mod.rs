//! What the model-check test files share: running a checker to the end, and pruning
//! messages that can no longer change anything from a state's network.
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Instant;

use stateright::actor::{Envelope, Network};
use stateright::{Checker, Model};

/// Checks every property of `model` by breadth-first search on two threads, panicking on a
/// violation; prints and returns the number of unique states, which tests pin.
pub fn check<M>(name: &str, model: M) -> usize
where
    M: Model + Send + Sync + 'static,
    M::State: Clone + Debug + Hash + PartialEq + Send + Sync,
    M::Action: Clone + Debug + PartialEq,
{
    let started = Instant::now();
    let checker = model.checker().threads(2).spawn_bfs().join();
    checker.assert_properties();
    let states = checker.unique_state_count();
    println!(
        "{name}: {states} unique states, {} generated, max depth {}, {:?}",
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    states
}

/// Removes `dead` from an unordered network (the models use no other kind).
pub fn remove<Msg: Clone + Eq + Hash + Ord>(network: &mut Network<Msg>, dead: &[Envelope<Msg>]) {
    match network {
        Network::UnorderedDuplicating(set, last) => {
            *last = None;
            for env in dead {
                set.remove(env);
            }
        }
        Network::UnorderedNonDuplicating(multiset) => {
            for env in dead {
                multiset.remove(env);
            }
        }
        Network::Ordered(_) => unreachable!("the models use unordered networks"),
    }
}
