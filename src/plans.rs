//! Plans kept in a backend for statements it runs over and over, by key.
//!
//! A kept plan is made again after `REPLAN_AFTER`: a plan fits the tables' sizes when it
//! was made, and pg_paxos's log and a new group's tables grow from nothing. A plan made
//! while a table was a page or two (a scan of all of it) would otherwise be kept until
//! autovacuum next analyzes the table, and read all of it on every use as it grows.
//! PostgreSQL makes a kept plan again by itself when what it depends on changes (a table
//! altered, another search_path), and checks privileges on every run.
use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;
use std::time::{Duration, Instant};

use pgrx::spi::{OwnedPreparedStatement, SpiResult};

const REPLAN_AFTER: Duration = Duration::from_secs(10);

pub struct Plans<K> {
    /// Each plan, when it was made, and when it was last used (a count of lookups).
    kept: HashMap<K, (Rc<OwnedPreparedStatement>, Instant, u64)>,
    capacity: usize,
    lookups: u64,
}

impl<K: Hash + Eq + Clone> Plans<K> {
    /// At most `capacity` plans; the one used least recently goes first.
    pub fn new(capacity: usize) -> Plans<K> {
        Plans {
            kept: HashMap::new(),
            capacity,
            lookups: 0,
        }
    }

    /// The plan kept for `key`, unless it is due to be made again.
    pub fn get(&mut self, key: &K) -> Option<Rc<OwnedPreparedStatement>> {
        self.lookups += 1;
        let lookups = self.lookups;
        let (plan, made, used) = self.kept.get_mut(key)?;
        if made.elapsed() >= REPLAN_AFTER {
            return None;
        }
        *used = lookups;
        Some(plan.clone())
    }

    /// Keeps `plan` for `key` and returns it.
    pub fn keep(&mut self, key: K, plan: OwnedPreparedStatement) -> Rc<OwnedPreparedStatement> {
        if self.kept.len() >= self.capacity && !self.kept.contains_key(&key) {
            let oldest = self
                .kept
                .iter()
                .min_by_key(|(_, (_, _, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.kept.remove(&oldest);
            }
        }
        let plan = Rc::new(plan);
        self.kept
            .insert(key, (plan.clone(), Instant::now(), self.lookups));
        plan
    }
}

/// Runs `prepare` for a plan of `key` in `plans` unless one is kept there. The cache is not
/// borrowed while `prepare` runs: planning may run statements that use another cache.
pub fn get_or_prepare<K: Hash + Eq + Clone + 'static>(
    plans: &'static std::thread::LocalKey<std::cell::RefCell<Plans<K>>>,
    key: K,
    prepare: impl FnOnce() -> SpiResult<OwnedPreparedStatement>,
) -> SpiResult<Rc<OwnedPreparedStatement>> {
    if let Some(plan) = plans.with(|p| p.borrow_mut().get(&key)) {
        return Ok(plan);
    }
    let plan = prepare()?;
    Ok(plans.with(|p| p.borrow_mut().keep(key, plan)))
}
