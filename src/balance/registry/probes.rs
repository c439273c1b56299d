//! The registry's book of unproven origins: which to probe next, and which to evict first when
//! the origin table is full. Pure data; time is a parameter.
//!
//! Invariants (checked by `debug_assert!` in [`Book::check`] and by the registry's tests):
//! - an entry exists exactly for each registered origin that is not proven;
//! - an entry is either in flight (a probe was handed out and has not come back) or waiting in
//!   `queue` under its `next_at`, never both; `in_flight` counts the former and never exceeds
//!   [`ProbeLimits::in_flight`];
//! - `victims` holds every entry once, ordered failed-probe first, then least recently heard;
//! - probes are handed out at most [`ProbeLimits::per_second`] a second (a token bucket holding
//!   one second's worth) and in queue order (oldest due first); a failed probe waits
//!   [`ProbeLimits::backoff`], doubled per failure up to [`ProbeLimits::backoff_max`].

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::balance::OriginId;

/// Bounds of the probing of unproven origins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeLimits {
    /// Most probes started per second.
    pub per_second: u32,
    /// Most probes in flight at once.
    pub in_flight: usize,
    /// Wait before probing again after the first failure; doubles per failure.
    pub backoff: Duration,
    /// Longest wait between two probes of one origin.
    pub backoff_max: Duration,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits {
            per_second: 50,
            in_flight: 16,
            backoff: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
        }
    }
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    next_at: Instant,
    in_flight: bool,
    last_seen: Instant,
}

impl Entry {
    fn victim_key(&self, id: &OriginId) -> (bool, Instant, OriginId) {
        (self.failures == 0, self.last_seen, id.clone())
    }
}

/// Probe and eviction order of the unproven origins.
#[derive(Debug)]
pub struct Book {
    limits: ProbeLimits,
    entries: HashMap<OriginId, Entry>,
    /// Entries not in flight, by when their next probe is due.
    queue: BTreeSet<(Instant, OriginId)>,
    /// Every entry: failed ones first (`false` sorts first), then least recently heard.
    victims: BTreeSet<(bool, Instant, OriginId)>,
    in_flight: usize,
    tokens: f64,
    refilled: Option<Instant>,
}

impl Book {
    pub fn new(limits: ProbeLimits) -> Self {
        Book {
            limits,
            entries: HashMap::new(),
            queue: BTreeSet::new(),
            victims: BTreeSet::new(),
            in_flight: 0,
            tokens: f64::from(limits.per_second),
            refilled: None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, id: &OriginId) -> bool {
        self.entries.contains_key(id)
    }

    /// Failed probes of an unproven origin since it was (re)added.
    pub fn failures(&self, id: &OriginId) -> Option<u32> {
        self.entries.get(id).map(|e| e.failures)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// A new unproven origin (or one whose address changed): due for a probe now.
    pub fn add(&mut self, id: &OriginId, now: Instant) {
        self.remove(id);
        let entry = Entry { failures: 0, next_at: now, in_flight: false, last_seen: now };
        self.queue.insert((now, id.clone()));
        self.victims.insert(entry.victim_key(id));
        self.entries.insert(id.clone(), entry);
        self.check();
    }

    /// A heartbeat of an unproven origin: it moves back in the eviction order.
    pub fn heard(&mut self, id: &OriginId, now: Instant) {
        let Some(entry) = self.entries.get_mut(id) else { return };
        self.victims.remove(&entry.victim_key(id));
        entry.last_seen = now;
        self.victims.insert(entry.victim_key(id));
    }

    /// Forgets an origin: proven, evicted or forgotten by the registry.
    pub fn remove(&mut self, id: &OriginId) {
        let Some(entry) = self.entries.remove(id) else { return };
        self.victims.remove(&entry.victim_key(id));
        if entry.in_flight {
            self.in_flight -= 1;
        } else {
            self.queue.remove(&(entry.next_at, id.clone()));
        }
        self.check();
    }

    /// The unproven origin to evict first: a failed one before one not yet probed, the least
    /// recently heard first.
    pub fn victim(&self) -> Option<&OriginId> {
        self.victims.first().map(|(_, _, id)| id)
    }

    /// Hands out the probes due now, within the rate and in-flight limits; each is in flight
    /// until [`Book::failed`], [`Book::requeue`] or [`Book::remove`].
    pub fn due(&mut self, now: Instant) -> Vec<OriginId> {
        self.refill(now);
        let mut out = Vec::new();
        while self.tokens >= 1.0 && self.in_flight < self.limits.in_flight {
            let Some((at, id)) = self.queue.first().cloned() else { break };
            if at > now {
                break;
            }
            self.queue.remove(&(at, id.clone()));
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.in_flight = true;
            }
            self.in_flight += 1;
            self.tokens -= 1.0;
            out.push(id);
        }
        self.check();
        out
    }

    fn refill(&mut self, now: Instant) {
        let cap = f64::from(self.limits.per_second);
        if let Some(at) = self.refilled {
            let earned = now.saturating_duration_since(at).as_secs_f64() * cap;
            self.tokens = (self.tokens + earned).min(cap);
        }
        self.refilled = Some(now);
    }

    /// A probe in flight failed: the origin waits its back-off and moves ahead in the eviction
    /// order.
    pub fn failed(&mut self, id: &OriginId, now: Instant) {
        let limits = self.limits;
        let Some(entry) = self.entries.get_mut(id).filter(|e| e.in_flight) else { return };
        self.victims.remove(&entry.victim_key(id));
        entry.failures = entry.failures.saturating_add(1);
        let doublings = entry.failures.saturating_sub(1).min(16);
        entry.next_at = now + limits.backoff.saturating_mul(1 << doublings).min(limits.backoff_max);
        entry.in_flight = false;
        self.in_flight -= 1;
        self.queue.insert((entry.next_at, id.clone()));
        self.victims.insert(entry.victim_key(id));
        self.check();
    }

    /// A probe in flight no longer counts (the origin's address changed meanwhile): due again now.
    pub fn requeue(&mut self, id: &OriginId, now: Instant) {
        let Some(entry) = self.entries.get_mut(id).filter(|e| e.in_flight) else { return };
        entry.in_flight = false;
        entry.next_at = now;
        self.in_flight -= 1;
        self.queue.insert((now, id.clone()));
        self.check();
    }

    fn check(&self) {
        debug_assert_eq!(self.victims.len(), self.entries.len());
        debug_assert_eq!(self.queue.len() + self.in_flight, self.entries.len());
        debug_assert!(self.in_flight <= self.limits.in_flight);
    }
}
