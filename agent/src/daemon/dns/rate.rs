//! `max_names_per_minute`: distinct names each job queried in the last
//! minute. A DNS tunnel encodes data in names, so it asks many; ordinary
//! jobs ask a handful of names again and again.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

const WINDOW: Duration = Duration::from_secs(60);

/// One job's names in the window: when each was first asked.
#[derive(Debug, Default)]
struct Window {
    names: VecDeque<(Instant, String)>,
}

impl Window {
    fn expire(&mut self, now: Instant) {
        while self
            .names
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
        {
            self.names.pop_front();
        }
    }
}

/// Every job's window (by scope).
#[derive(Debug, Default)]
pub(super) struct Rates {
    jobs: HashMap<u64, Window>,
}

impl Rates {
    /// Whether job `scope` may ask `name` now, under `limit` distinct names
    /// a minute; a name already in the window is always admitted.
    pub(super) fn admit(&mut self, scope: u64, name: &str, limit: u32, now: Instant) -> bool {
        let w = self.jobs.entry(scope).or_default();
        w.expire(now);
        if w.names.iter().any(|(_, n)| n == name) {
            return true;
        }
        if w.names.len() >= limit as usize {
            return false;
        }
        w.names.push_back((now, name.to_owned()));
        true
    }

    /// Distinct names each job asked in the last minute (for the metrics).
    pub(super) fn counts(&mut self, now: Instant) -> Vec<(u64, usize)> {
        self.jobs.retain(|_, w| {
            w.expire(now);
            !w.names.is_empty()
        });
        self.jobs.iter().map(|(s, w)| (*s, w.names.len())).collect()
    }

    pub(super) fn forget(&mut self, scope: u64) {
        self.jobs.remove(&scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_gets_its_limit_of_distinct_names_a_minute() {
        let mut r = Rates::default();
        let t = Instant::now();
        assert!(r.admit(1, "a", 2, t));
        assert!(r.admit(1, "b", 2, t));
        assert!(!r.admit(1, "c", 2, t), "a third name");
        assert!(r.admit(1, "a", 2, t), "a name already asked");
        assert!(r.admit(2, "c", 2, t), "another job");
        let later = t + WINDOW + Duration::from_secs(1);
        assert!(r.admit(1, "c", 2, later), "the window moved on");
        assert_eq!(r.counts(later), vec![(1, 1)]);
    }
}
