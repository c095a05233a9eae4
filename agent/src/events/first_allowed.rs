//! `log_allowed = "first"`: the first allowed connection per job (cgroup),
//! destination, port and protocol in a window gets a full flow record; the
//! ones after it in the window are counted, and when the window closes an
//! `allowed` record gives the count (`count` connections not recorded one by
//! one, `first_seq` the flow record they repeat). Records plus counts add up
//! to every allowed decision.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// Destinations tracked at most; beyond, the oldest window closes early.
const MAX_KEYS: usize = 65_536;

/// What makes a connection the same as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub slot: u16,
    pub cgroup_id: u64,
    pub family: u8,
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
}

struct Seen {
    opened: Instant,
    first_seq: u64,
    /// `policy`, `job`, `cgroup`, `dst`, `dport`, `proto`, `tags` of the
    /// first record.
    about: Value,
    count: u64,
    first_time: String,
    last_time: Option<String>,
}

/// The open windows.
pub struct FirstWindows {
    window: Duration,
    open: HashMap<Key, Seen>,
    order: VecDeque<(Instant, Key)>,
    /// Summaries of windows that closed between two calls of [`Self::due`].
    closed: Vec<Value>,
}

impl FirstWindows {
    pub fn new(window: Duration) -> Self {
        Self {
            window: window.max(Duration::from_millis(1)),
            open: HashMap::new(),
            order: VecDeque::new(),
            closed: Vec::new(),
        }
    }

    pub fn set_window(&mut self, window: Duration) {
        self.window = window.max(Duration::from_millis(1));
    }

    /// Counts an allowed connection. True when it opens a window: the
    /// caller records it in full, then calls [`Self::recorded`].
    pub fn observe(&mut self, key: Key, now: Instant, time: impl FnOnce() -> String) -> bool {
        if let Some(seen) = self.open.get_mut(&key) {
            if now.duration_since(seen.opened) < self.window {
                seen.count += 1;
                seen.last_time = Some(time());
                return false;
            }
            let seen = self.open.remove(&key).expect("present");
            self.close(seen);
        }
        if self.open.len() >= MAX_KEYS {
            self.close_oldest();
        }
        self.open.insert(
            key,
            Seen {
                opened: now,
                first_seq: 0,
                about: Value::Null,
                count: 0,
                first_time: time(),
                last_time: None,
            },
        );
        self.order.push_back((now, key));
        true
    }

    /// The record that opened `key`'s window was written as `seq`.
    pub fn recorded(&mut self, key: &Key, seq: u64, about: Value) {
        if let Some(seen) = self.open.get_mut(key) {
            seen.first_seq = seq;
            seen.about = about;
        }
    }

    fn close(&mut self, seen: Seen) {
        if seen.count == 0 {
            return;
        }
        let mut rec = match seen.about {
            Value::Object(m) => Value::Object(m),
            _ => json!({}),
        };
        rec["count"] = json!(seen.count);
        rec["first_seq"] = json!(seen.first_seq);
        rec["from"] = json!(seen.first_time);
        rec["to"] = json!(seen.last_time);
        rec["window"] = json!(crate::vocab::units::Span(self.window).to_string());
        self.closed.push(rec);
    }

    fn close_oldest(&mut self) {
        while let Some((opened, key)) = self.order.pop_front() {
            if self.open.get(&key).is_some_and(|s| s.opened == opened) {
                let seen = self.open.remove(&key).expect("present");
                self.close(seen);
                return;
            }
        }
    }

    /// The `allowed` records of the windows closed by `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Value> {
        while let Some((opened, key)) = self.order.front().copied() {
            if now.duration_since(opened) < self.window {
                break;
            }
            self.order.pop_front();
            if self.open.get(&key).is_some_and(|s| s.opened == opened) {
                let seen = self.open.remove(&key).expect("present");
                self.close(seen);
            }
        }
        std::mem::take(&mut self.closed)
    }

    /// Closes every window (at shutdown).
    pub fn close_all(&mut self) -> Vec<Value> {
        self.order.clear();
        let open: Vec<Seen> = self.open.drain().map(|(_, s)| s).collect();
        for seen in open {
            self.close(seen);
        }
        std::mem::take(&mut self.closed)
    }

    /// Windows open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> Key {
        Key {
            slot: 1,
            cgroup_id: 9,
            family: 2,
            addr: [127, 30, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            port,
            proto: 17,
        }
    }

    #[test]
    fn the_first_is_recorded_the_rest_counted_until_the_window_closes() {
        let mut w = FirstWindows::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let t = || "t".to_string();
        assert!(w.observe(key(53), t0, t));
        w.recorded(&key(53), 7, json!({"policy": "p", "dport": 53}));
        for i in 1..=5 {
            assert!(!w.observe(key(53), t0 + Duration::from_secs(i), t));
        }
        // Another port is another destination.
        assert!(w.observe(key(54), t0, t));
        assert!(w.due(t0 + Duration::from_secs(59)).is_empty());
        let mut closed = w.due(t0 + Duration::from_secs(60));
        // The other port had no repeats: nothing to say.
        assert_eq!(closed.len(), 1);
        let rec = closed.pop().unwrap();
        assert_eq!(rec["count"], 5);
        assert_eq!(rec["first_seq"], 7);
        assert_eq!(rec["policy"], "p");
        assert_eq!(rec["window"], "1m");
        assert!(w.is_empty());
        // A new window opens with a new full record.
        assert!(w.observe(key(53), t0 + Duration::from_secs(61), t));
    }

    #[test]
    fn a_late_repeat_opens_a_new_window_and_close_all_reports_the_rest() {
        let mut w = FirstWindows::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let t = || "t".to_string();
        assert!(w.observe(key(1), t0, t));
        assert!(!w.observe(key(1), t0 + Duration::from_secs(1), t));
        // No due() in between: the next observation closes it.
        assert!(w.observe(key(1), t0 + Duration::from_secs(11), t));
        assert!(!w.observe(key(1), t0 + Duration::from_secs(12), t));
        assert!(!w.observe(key(1), t0 + Duration::from_secs(13), t));
        let first = w.due(t0 + Duration::from_secs(12));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["count"], 1);
        let rest = w.close_all();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0]["count"], 2);
    }
}
