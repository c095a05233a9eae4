//! The refusals `geowall exec` tells its job: the event reader posts every
//! refused outbound flow here; a job's `geowall exec` follows its own
//! (`job_refusals`, a long poll: one request, one response, as every call).
//!
//! Only jobs someone follows are kept, each in a bounded queue numbered
//! from 1: the follower passes back the last number it saw, and hears how
//! many it missed when the queue overflowed. A queue outlives its job's
//! cgroup for a while, so that the last refusals of a job that just ended
//! can still be read.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    control::proto::{RefusalEntry, RefusalsSince},
    events::Refused,
};

/// Refusals kept per followed job: more than a follower reads between two
/// polls, whatever the job does (beyond it, they are counted as missed).
const KEPT: usize = 1024;
/// Refusals one answer carries at most (the rest on the next poll).
const PER_ANSWER: usize = 256;
/// How long a queue nobody polls is kept.
const IDLE: Duration = Duration::from_secs(60);
/// How long a settling poll waits at most for the event reader.
const SETTLE: Duration = Duration::from_secs(2);

/// A followed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Followed {
    pub job: String,
    /// The job's cgroup (as flow records name cgroups) and its id: a
    /// refusal of a task in it or below it is the job's.
    pub cgroup: String,
    pub cgroup_id: u64,
    /// Who may follow it (besides root): the uid that started the job.
    pub owner: Option<u32>,
}

struct Queue {
    target: Followed,
    /// Number of the next refusal.
    next: u64,
    /// The highest number dropped for room.
    evicted: u64,
    items: VecDeque<(u64, Refused)>,
    polled: Instant,
}

impl Queue {
    fn takes(&self, r: &Refused) -> bool {
        r.cgroup_id == self.target.cgroup_id
            || r.cgroup
                .strip_prefix(self.target.cgroup.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The refusals of followed jobs.
pub(super) struct Board {
    queues: Mutex<BTreeMap<String, Queue>>,
    /// Bumped at each refusal posted to a queue.
    posted: watch::Sender<u64>,
    /// Bumped each time the event reader found the ring buffer empty.
    drained: watch::Sender<u64>,
    /// Asks the event reader to read the ring buffer now.
    poke: tokio::sync::Notify,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            queues: Mutex::new(BTreeMap::new()),
            posted: watch::Sender::new(0),
            drained: watch::Sender::new(0),
            poke: tokio::sync::Notify::new(),
        }
    }
}

impl Board {
    /// From the event reader: a refused flow.
    pub(super) fn post(&self, r: Refused) {
        let mut queues = self.queues.lock().expect("refusals lock");
        if queues.is_empty() {
            return;
        }
        let mut taken = false;
        for q in queues.values_mut().filter(|q| q.takes(&r)) {
            q.next += 1;
            q.items.push_back((q.next, r.clone()));
            if q.items.len() > KEPT
                && let Some((n, _)) = q.items.pop_front()
            {
                q.evicted = n;
            }
            taken = true;
        }
        drop(queues);
        if taken {
            self.posted.send_modify(|n| *n += 1);
        }
    }

    /// From the event reader: the ring buffer was found empty (every event
    /// queued before is posted).
    pub(super) fn drained(&self) {
        self.drained.send_modify(|n| *n += 1);
    }

    /// For the event reader: when a settling poll wants the ring buffer
    /// read now.
    pub(super) async fn poked(&self) {
        self.poke.notified().await;
    }

    /// The follower of job `target.job` (checked by the caller): starts
    /// following it, or finds the queue it follows.
    pub(super) fn follow(&self, target: Followed) {
        let mut queues = self.queues.lock().expect("refusals lock");
        let now = Instant::now();
        queues.retain(|name, q| name == &target.job || now.duration_since(q.polled) < IDLE);
        let q = queues.entry(target.job.clone()).or_insert_with(|| Queue {
            target: target.clone(),
            next: 0,
            evicted: 0,
            items: VecDeque::new(),
            polled: now,
        });
        // The name is the job's until it ends; a job of the same name later
        // is another cgroup: its queue starts anew.
        if q.target.cgroup_id != target.cgroup_id {
            *q = Queue {
                target,
                next: 0,
                evicted: 0,
                items: VecDeque::new(),
                polled: now,
            };
        }
    }

    /// Who follows job `job`, when its queue is kept (the job itself may
    /// have ended).
    pub(super) fn followed(&self, job: &str) -> Option<Followed> {
        let queues = self.queues.lock().expect("refusals lock");
        queues.get(job).map(|q| q.target.clone())
    }

    /// The refusals of job `job` numbered above `after`: at once when there
    /// are some, else when one comes or `wait` passes. With `settle`, first
    /// waits until the event reader has read every event the kernel had
    /// queued when the call came (at most [`SETTLE`]).
    pub(super) async fn since(
        &self,
        job: &str,
        after: u64,
        wait: Duration,
        settle: bool,
    ) -> RefusalsSince {
        if settle {
            // Two drains that end after the call: the first may have begun
            // before it, the second began after. The reader is poked for
            // each (else it reads on its next tick).
            let mut drained = self.drained.subscribe();
            let start = *drained.borrow_and_update();
            let _ = tokio::time::timeout(SETTLE, async {
                for n in 1..=2 {
                    self.poke.notify_one();
                    let _ = drained.wait_for(|d| *d >= start.saturating_add(n)).await;
                }
            })
            .await;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut posted = self.posted.subscribe();
        loop {
            posted.borrow_and_update();
            let found = self.take(job, after);
            if !found.refusals.is_empty() || found.missed > 0 {
                return found;
            }
            if tokio::time::timeout_at(deadline, posted.changed())
                .await
                .is_err()
            {
                return found;
            }
        }
    }

    fn take(&self, job: &str, after: u64) -> RefusalsSince {
        let mut queues = self.queues.lock().expect("refusals lock");
        let Some(q) = queues.get_mut(job) else {
            return RefusalsSince {
                refusals: Vec::new(),
                next: after,
                missed: 0,
            };
        };
        q.polled = Instant::now();
        let refusals: Vec<RefusalEntry> = q
            .items
            .iter()
            .filter(|(n, _)| *n > after)
            .take(PER_ANSWER)
            .map(|(n, r)| RefusalEntry {
                seq: *n,
                refused: r.clone(),
                approvable: false,
                grant_for: None,
            })
            .collect();
        RefusalsSince {
            next: refusals.last().map_or(after.max(q.evicted), |r| r.seq),
            missed: q.evicted.saturating_sub(after),
            refusals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(cgroup: &str, cgroup_id: u64, port: u16) -> Refused {
        Refused {
            dst: "127.20.0.1".parse().unwrap(),
            port,
            proto: "tcp".into(),
            tags: vec!["US".into()],
            reason: "region".into(),
            policy: "eu-only".into(),
            name: None,
            cgroup: cgroup.into(),
            cgroup_id,
            record: 0,
            option: None,
        }
    }

    fn target(job: &str, cgroup: &str, cgroup_id: u64) -> Followed {
        Followed {
            job: job.into(),
            cgroup: cgroup.into(),
            cgroup_id,
            owner: Some(1000),
        }
    }

    #[tokio::test]
    async fn a_job_hears_its_own_refusals_and_those_below_it_only() {
        let board = Board::default();
        board.post(refused("/jobs/a", 7, 1));
        board.follow(target("a", "/jobs/a", 7));
        board.post(refused("/jobs/a", 7, 2));
        board.post(refused("/jobs/ab", 9, 3));
        board.post(refused("/jobs/a/sub", 8, 4));
        let got = board.since("a", 0, Duration::ZERO, false).await;
        let ports: Vec<u16> = got.refusals.iter().map(|r| r.refused.port).collect();
        assert_eq!(ports, [2, 4]);
        assert_eq!((got.next, got.missed), (2, 0));
        // Nothing new: an empty answer once the wait is over.
        let again = board
            .since("a", got.next, Duration::from_millis(20), false)
            .await;
        assert!(again.refusals.is_empty());
        assert_eq!(again.next, 2);
        assert!(
            board
                .since("nobody", 0, Duration::ZERO, false)
                .await
                .refusals
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_waiting_poll_returns_when_a_refusal_comes() {
        let board = std::sync::Arc::new(Board::default());
        board.follow(target("a", "/jobs/a", 7));
        let b = std::sync::Arc::clone(&board);
        let poll =
            tokio::spawn(async move { b.since("a", 0, Duration::from_secs(30), false).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        board.post(refused("/jobs/a", 7, 5));
        let got = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .expect("the poll returns when the refusal comes")
            .unwrap();
        assert_eq!(got.refusals.len(), 1);
    }

    #[tokio::test]
    async fn an_overflowing_queue_counts_what_was_missed() {
        let board = Board::default();
        board.follow(target("a", "/jobs/a", 7));
        for p in 0..(KEPT as u16 + 10) {
            board.post(refused("/jobs/a", 7, p));
        }
        let got = board.since("a", 0, Duration::ZERO, false).await;
        assert_eq!(got.missed, 10);
        assert_eq!(got.refusals.len(), PER_ANSWER);
        assert_eq!(got.refusals[0].seq, 11);
        let rest = board.since("a", got.next, Duration::ZERO, false).await;
        assert_eq!(rest.missed, 0);
        assert_eq!(rest.refusals[0].seq, got.next + 1);
    }

    #[tokio::test]
    async fn a_settling_poll_waits_for_the_reader_to_drain() {
        let board = std::sync::Arc::new(Board::default());
        board.follow(target("a", "/jobs/a", 7));
        let b = std::sync::Arc::clone(&board);
        let poll = tokio::spawn(async move { b.since("a", 0, Duration::ZERO, true).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        board.drained();
        board.post(refused("/jobs/a", 7, 6));
        board.drained();
        let got = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            got.refusals.len(),
            1,
            "the refusal read before the drain is in"
        );
    }
}
