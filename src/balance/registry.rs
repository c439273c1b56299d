//! The origin registry and the pin table, owned by the control thread.
//!
//! Invariants:
//! - an origin is identified by `server-service-pid`; a re-register replaces its record and
//!   refreshes its heartbeat;
//! - a stream key has at most one pin; [`Registry::claim`] keeps an existing pin while its
//!   origin is alive and otherwise re-pins (the SRS proxy never re-picks in memory mode), so
//!   every claim for a key returns the same origin until that origin dies;
//! - everything is bounded: at most `max_origins` records (a dead origin is forgotten one TTL
//!   after it died), at most `max_streams` streams (an unused pin is dropped one TTL after its
//!   last session closed; a stream with neither pin nor session is forgotten).
//!
//! Pure data: time comes in as `now`, so tests drive it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::session::{Protocol, Role};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::origin::{Origin, OriginId, Registration};
use super::pick::{self, PickError, Snapshot};
use super::stream_key::StreamKey;

/// Limits of the registry.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_origins: usize,
    pub max_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_origins: 10_000, max_streams: 1_000_000 }
    }
}

/// One stream's pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub origin: OriginId,
    pub since: Instant,
}

/// What the registry knows of one stream: its pin, if it has one now, and its sessions. Session
/// counts outlive a pin (a dead origin's streams keep their open sessions while re-pinned).
#[derive(Clone, Debug)]
pub struct Stream {
    pub pin: Option<Pin>,
    /// Open sessions of this stream over all shards, by protocol and role (no zero entries).
    pub sessions: BTreeMap<(Protocol, Role), u64>,
    /// When the last session closed (or the stream was first seen).
    pub idle_since: Instant,
}

impl Stream {
    /// Open sessions of every kind.
    pub fn open_sessions(&self) -> u64 {
        self.sessions.values().sum()
    }
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    New,
    Refreshed,
}

/// Why a registration or claim was refused by the registry itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("registry full: {0} origins are registered")]
    OriginsFull(usize),
    #[error("stream table full: {0} streams are known")]
    PinsFull(usize),
    #[error(transparent)]
    Pick(#[from] PickError),
}

/// What [`Registry::tick`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Origins that were alive at the previous tick and are dead now.
    pub expired: Vec<OriginId>,
    /// Dead origins forgotten.
    pub forgotten: Vec<OriginId>,
    /// Pins dropped: their origin died, or nobody used them for a TTL.
    pub unpinned: Vec<(StreamKey, OriginId)>,
}

/// Origins and pins.
#[derive(Debug)]
pub struct Registry {
    ttl: Duration,
    limits: Limits,
    origins: BTreeMap<OriginId, Arc<Origin>>,
    alive_at_last_tick: BTreeSet<OriginId>,
    streams: HashMap<StreamKey, Stream>,
    version: u64,
}

impl Registry {
    pub fn new(ttl: Duration, limits: Limits) -> Self {
        Registry {
            ttl,
            limits,
            origins: BTreeMap::new(),
            alive_at_last_tick: BTreeSet::new(),
            streams: HashMap::new(),
            version: 0,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Bumped whenever the origin set a snapshot shows changes.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Records a heartbeat.
    pub fn register(&mut self, reg: Registration, now: Instant) -> Result<Registered, RegistryError> {
        let id = reg.id();
        let (first_seen, what) = match self.origins.get(&id) {
            Some(old) => (old.first_seen, Registered::Refreshed),
            None if self.origins.len() >= self.limits.max_origins => {
                return Err(RegistryError::OriginsFull(self.origins.len()));
            }
            None => (now, Registered::New),
        };
        let id_hash = pick::id_hash(&id.0);
        let origin = Origin { id: id.clone(), id_hash, registration: reg, first_seen, last_seen: now };
        self.origins.insert(id, Arc::new(origin));
        self.version += 1;
        Ok(what)
    }

    pub fn origins(&self) -> impl Iterator<Item = &Arc<Origin>> {
        self.origins.values()
    }

    pub fn origin(&self, id: &OriginId) -> Option<&Arc<Origin>> {
        self.origins.get(id)
    }

    /// Every stream the registry knows: pinned, or with sessions open.
    pub fn streams(&self) -> impl Iterator<Item = (&StreamKey, &Stream)> {
        self.streams.iter()
    }

    pub fn pin(&self, key: &StreamKey) -> Option<&Pin> {
        self.streams.get(key)?.pin.as_ref()
    }

    fn alive(&self, id: &OriginId, now: Instant) -> Option<&Arc<Origin>> {
        self.origins.get(id).filter(|o| o.is_alive(now, self.ttl))
    }

    /// The origin `key` is pinned to, pinning it now if needed: an existing pin to an alive
    /// origin wins; else `proposed` (a shard's rendezvous choice) if it is alive; else this
    /// registry's own rendezvous choice.
    pub fn claim(
        &mut self,
        key: &StreamKey,
        proposed: Option<&OriginId>,
        now: Instant,
    ) -> Result<Arc<Origin>, RegistryError> {
        if let Some(origin) = self.pin(key).and_then(|pin| self.alive(&pin.origin, now)) {
            return Ok(origin.clone());
        }
        let origin = match proposed.and_then(|id| self.alive(id, now)) {
            Some(o) => o.clone(),
            None => pick::rendezvous(key, self.origins.values(), now, self.ttl)?.clone(),
        };
        let stream = self.stream_entry(key, now)?;
        stream.pin = Some(Pin { origin: origin.id.clone(), since: now });
        Ok(origin)
    }

    fn stream_entry(&mut self, key: &StreamKey, now: Instant) -> Result<&mut Stream, RegistryError> {
        let len = self.streams.len();
        let full = len >= self.limits.max_streams;
        match self.streams.entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(_) if full => Err(RegistryError::PinsFull(len)),
            std::collections::hash_map::Entry::Vacant(e) => {
                Ok(e.insert(Stream { pin: None, sessions: BTreeMap::new(), idle_since: now }))
            }
        }
    }

    /// A session of `key` of this kind opened or closed.
    pub fn session_delta(&mut self, key: &StreamKey, kind: (Protocol, Role), opened: bool, now: Instant) {
        let Ok(stream) = self.stream_entry(key, now) else {
            return;
        };
        let count = stream.sessions.entry(kind).or_default();
        *count = if opened { *count + 1 } else { count.saturating_sub(1) };
        if *count == 0 {
            stream.sessions.remove(&kind);
            if stream.sessions.is_empty() {
                stream.idle_since = now;
            }
        }
    }

    /// Expires, forgets and unpins; call about once a second.
    pub fn tick(&mut self, now: Instant) -> TickReport {
        let mut report = TickReport::default();
        let ttl = self.ttl;
        let alive: BTreeSet<OriginId> =
            self.origins.values().filter(|o| o.is_alive(now, ttl)).map(|o| o.id.clone()).collect();
        report.expired = self.alive_at_last_tick.difference(&alive).cloned().collect();
        self.alive_at_last_tick = alive;
        let forget = |o: &Origin| now.saturating_duration_since(o.last_seen) >= ttl.saturating_mul(2);
        report.forgotten = self.origins.values().filter(|o| forget(o)).map(|o| o.id.clone()).collect();
        for id in &report.forgotten {
            self.origins.remove(id);
        }
        let alive = &self.alive_at_last_tick;
        self.streams.retain(|key, stream| {
            let idle = stream.sessions.is_empty() && now.saturating_duration_since(stream.idle_since) >= ttl;
            if let Some(pin) = stream.pin.take_if(|pin| idle || !alive.contains(&pin.origin)) {
                report.unpinned.push((key.clone(), pin.origin));
            }
            stream.pin.is_some() || !stream.sessions.is_empty()
        });
        if !report.expired.is_empty() || !report.forgotten.is_empty() {
            self.version += 1;
        }
        report
    }

    /// An immutable copy for the shards.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { version: self.version, ttl: self.ttl, origins: self.origins.values().cloned().collect() }
    }
}

#[cfg(test)]
mod tests;
