//! The registry's book of unproven origins: which to probe next, and which to evict first when
//! the origin table is full. Pure data; time is a parameter.
//!
//! Invariants (checked by `debug_assert!` in [`Book::check`] and by the registry's tests):
//! - an entry exists exactly for each registered origin that is not proven;
//! - an entry is either in flight (a probe was handed out and has not come back) or waiting in
//!   `queue` under its `next_at`, never both; `in_flight` counts the former and never exceeds
//!   [`ProbeLimits::in_flight`];
//! - `victims` holds every entry once, under the network it was last registered from (its
//!   peer's address; an IPv6 peer's /64), ordered failed-probe first, then least recently
//!   heard; `loads` holds each network's number of entries, so the next victim comes from the
//!   network holding the most unproven origins: a flood from one network evicts its own
//!   entries, not those of origins registering from elsewhere;
//! - probes are handed out at most [`ProbeLimits::per_second`] a second (a token bucket holding
//!   one second's worth) and in queue order (oldest due first); a failed probe waits
//!   [`ProbeLimits::backoff`], doubled per failure up to [`ProbeLimits::backoff_max`].

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
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

/// Where registrations come from, for fair eviction: an IPv4 address, or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Network(u128);

impl Network {
    /// Registrations made inside the process (tests, benches): one network of their own.
    pub const LOCAL: Network = Network(u128::MAX);

    pub fn of(peer: IpAddr) -> Network {
        match peer {
            IpAddr::V4(v4) => Network(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Network(u128::from(u32::from(v4))),
                None => Network((u128::from(v6) >> 64) << 64 | 1 << 63),
            },
        }
    }
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    next_at: Instant,
    in_flight: bool,
    last_seen: Instant,
    network: Network,
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
    /// Every entry by network: failed ones first (`false` sorts first), then least recently heard.
    victims: HashMap<Network, BTreeSet<(bool, Instant, OriginId)>>,
    /// Entries per network, for the most loaded one.
    loads: BTreeSet<(usize, Network)>,
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
            victims: HashMap::new(),
            loads: BTreeSet::new(),
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

    fn enlist(&mut self, network: Network, key: (bool, Instant, OriginId)) {
        let set = self.victims.entry(network).or_default();
        self.loads.remove(&(set.len(), network));
        set.insert(key);
        self.loads.insert((set.len(), network));
    }

    fn delist(&mut self, network: Network, key: &(bool, Instant, OriginId)) {
        let Some(set) = self.victims.get_mut(&network) else { return };
        self.loads.remove(&(set.len(), network));
        set.remove(key);
        if set.is_empty() {
            self.victims.remove(&network);
        } else {
            self.loads.insert((set.len(), network));
        }
    }

    /// A new unproven origin (or one whose address changed), registered from `network`: due
    /// for a probe now.
    pub fn add(&mut self, id: &OriginId, network: Network, now: Instant) {
        self.remove(id);
        let entry = Entry { failures: 0, next_at: now, in_flight: false, last_seen: now, network };
        self.queue.insert((now, id.clone()));
        self.enlist(network, entry.victim_key(id));
        self.entries.insert(id.clone(), entry);
        self.check();
    }

    /// A heartbeat of an unproven origin from `network`: it moves back in the eviction order.
    pub fn heard(&mut self, id: &OriginId, network: Network, now: Instant) {
        let Some(entry) = self.entries.get_mut(id) else { return };
        let (old_network, old_key) = (entry.network, entry.victim_key(id));
        entry.last_seen = now;
        entry.network = network;
        let new_key = entry.victim_key(id);
        self.delist(old_network, &old_key);
        self.enlist(network, new_key);
        self.check();
    }

    /// Forgets an origin: proven, evicted or forgotten by the registry.
    pub fn remove(&mut self, id: &OriginId) {
        let Some(entry) = self.entries.remove(id) else { return };
        self.delist(entry.network, &entry.victim_key(id));
        if entry.in_flight {
            self.in_flight -= 1;
        } else {
            self.queue.remove(&(entry.next_at, id.clone()));
        }
        self.check();
    }

    /// The unproven origin to evict first: from the network holding the most unproven origins,
    /// a failed one before one not yet probed, the least recently heard first.
    pub fn victim(&self) -> Option<&OriginId> {
        let (_, network) = self.loads.last()?;
        self.victims.get(network)?.first().map(|(_, _, id)| id)
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
        let old_key = entry.victim_key(id);
        entry.failures = entry.failures.saturating_add(1);
        let doublings = entry.failures.saturating_sub(1).min(16);
        entry.next_at = now + limits.backoff.saturating_mul(1 << doublings).min(limits.backoff_max);
        entry.in_flight = false;
        let (network, next_at, new_key) = (entry.network, entry.next_at, entry.victim_key(id));
        self.in_flight -= 1;
        self.queue.insert((next_at, id.clone()));
        self.delist(network, &old_key);
        self.enlist(network, new_key);
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
        debug_assert_eq!(self.loads.iter().map(|(n, _)| n).sum::<usize>(), self.entries.len());
        debug_assert_eq!(self.loads.len(), self.victims.len());
        debug_assert_eq!(self.queue.len() + self.in_flight, self.entries.len());
        debug_assert!(self.in_flight <= self.limits.in_flight);
    }
}
