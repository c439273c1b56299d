//! The origin registry and the pin table, owned by the control thread.
//!
//! Invariants:
//! - an origin is identified by `server-service-pid`; a re-register replaces its record and
//!   refreshes its heartbeat;
//! - a stream key has at most one pin; [`Registry::claim`] keeps an existing pin while its
//!   origin keeps pins (alive, not in quarantine) and otherwise re-pins (so a dead,
//!   unregistered or quarantined origin's streams move), so every claim for a key returns the
//!   same origin until that origin dies, leaves or fails a dial;
//! - failover: a dial that is refused or times out puts its origin in quarantine for
//!   `Limits::quarantine` ([`Registry::quarantine`]): its pins move on their next claim and it
//!   ranks last for new streams (taking them only when no other origin can); an origin can leave at once ([`Registry::unregister`]) or drain (no new
//!   streams, its pins stay: [`Registry::set_draining`]);
//! - everything is bounded: at most `max_origins` records (a dead origin is forgotten one TTL
//!   after it died), at most `max_streams` streams (an unused pin is dropped one TTL after its
//!   last session closed; a stream with neither pin nor session is forgotten).
//!
//! Proven and unproven origins. Anyone allowed to register can claim any address, so a record
//! alone proves nothing. An origin is *proven* once the proxy has reached it: a TCP connection
//! to its RTMP address (the registered ip and first TCP `rtmp` port, what an RTMP session
//! dials) succeeded, or the operator configured it (the default backend). The control thread
//! runs the probes that [`Registry::due_probes`] hands out and reports each with
//! [`Registry::probe_done`]; the book in [`probes`] bounds them (a rate, a number in flight, a
//! back-off per origin). Proof comes from probes only, not from sessions: a session can only
//! reach an origin that was picked, so proving by sessions would let the first origin to get a
//! stream take every later one from equally good origins the probe cannot reach (UDP-only
//! origins). Then:
//! - a new stream goes to a proven alive origin whenever one exists, to an unproven one only
//!   when none does (single-origin setups and origins the probe cannot reach work as before);
//!   an existing pin is kept while its origin is alive, proven or not;
//! - a proof holds for the record's life while its RTMP address stays the same; a heartbeat
//!   with a new address makes it unproven until probed again;
//! - when the origin table is full, a new registration evicts an unproven origin instead of
//!   being refused: one registered from the network (peer address, IPv6 /64) that holds the
//!   most unproven origins, there one whose probe failed first, then the least recently heard.
//!   So a flood from one network churns its own records while an origin registering from
//!   elsewhere keeps its place until its probe. A proven origin is never evicted, and when
//!   every origin is proven the registration is refused;
//! - the book holds an entry exactly for each unproven origin (so it is bounded by
//!   `max_origins`), and an eviction, a refresh and a probe handed out cost `O(log n)`.
//!
//! Pure data: time comes in as `now`, so tests drive it.

pub mod probes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;

use super::session::{Protocol, Role};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::origin::{Origin, OriginId, Proof, Registration};
use super::pick::{self, PickError, Snapshot};
use super::stream_key::StreamKey;
pub use probes::{Network, ProbeLimits};

/// Default of `max_origins`.
pub const MAX_ORIGINS: usize = 10_000;

/// Default of `quarantine`.
pub const QUARANTINE: Duration = Duration::from_secs(15);

/// Limits of the registry.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_origins: usize,
    pub max_streams: usize,
    pub probes: ProbeLimits,
    /// How long an origin whose dial failed takes no new streams and keeps no pins.
    pub quarantine: Duration,
    /// From this one-minute load per CPU (hundredths) up, a heartbeat marks its origin
    /// overloaded; `None`: never.
    pub max_load_centi: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_origins: MAX_ORIGINS,
            max_streams: 1_000_000,
            probes: ProbeLimits::default(),
            quarantine: QUARANTINE,
            max_load_centi: None,
        }
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    New,
    Refreshed,
    /// New, in the place of this unproven origin, evicted because the table was full.
    Evicted(OriginId),
}

/// What a probe's result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The origin is proven now.
    Proven,
    /// It stays unproven and is probed again after its back-off.
    Failed,
    /// The origin is gone, proven meanwhile or has a new address: the result is dropped.
    Stale,
}

/// Why a registration or claim was refused by the registry itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("registry full: {0} origins are registered and every one is proven")]
    OriginsFull(usize),
    #[error("stream table full: {0} streams are known")]
    PinsFull(usize),
    #[error(transparent)]
    Pick(#[from] PickError),
    /// Redis mode: the shared pin table could not be asked.
    #[error("new stream refused: the shared registry (redis) is unavailable: {0}")]
    Shared(String),
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
    /// The unproven origins' probe and eviction order.
    book: probes::Book,
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
            book: probes::Book::new(limits.probes),
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

    /// Records a heartbeat sent from `peer`. A new origin is unproven; when the table is full it
    /// takes the place of an unproven origin, or is refused if every origin is proven.
    pub fn register_from(
        &mut self,
        reg: Registration,
        peer: IpAddr,
        now: Instant,
    ) -> Result<Registered, RegistryError> {
        self.insert(reg, None, Network::of(peer), now, now)
    }

    /// [`Registry::register_from`] for registrations made inside the process.
    pub fn register(&mut self, reg: Registration, now: Instant) -> Result<Registered, RegistryError> {
        self.insert(reg, None, Network::LOCAL, now, now)
    }

    /// Records a heartbeat of an origin the operator configured: proven from the start.
    pub fn register_configured(&mut self, reg: Registration, now: Instant) -> Result<Registered, RegistryError> {
        self.insert(reg, Some(Proof::Configured), Network::LOCAL, now, now)
    }

    /// Records a heartbeat another proxy received at `heard` (read from shared state): `None`
    /// when this registry already has that one or a newer one.
    pub fn learn(
        &mut self,
        reg: Registration,
        heard: Instant,
        now: Instant,
    ) -> Result<Option<Registered>, RegistryError> {
        // Times read back from wall-clock text are not exact: a heartbeat within a second of the
        // one this registry has is the same one.
        let known = |o: &Arc<Origin>| o.last_seen + Duration::from_secs(1) >= heard && o.registration == reg;
        if self.origins.get(&reg.id()).is_some_and(known) {
            return Ok(None);
        }
        self.insert(reg, None, Network::LOCAL, heard.min(now), now).map(Some)
    }

    fn insert(
        &mut self,
        reg: Registration,
        proof: Option<Proof>,
        network: Network,
        heard: Instant,
        now: Instant,
    ) -> Result<Registered, RegistryError> {
        let id = reg.id();
        let mut state = (false, None);
        let (first_seen, what, kept, moved) = match self.origins.get(&id) {
            Some(old) => {
                // A probe proved the address it dialed: a new RTMP address must be proven again.
                let moved = old.registration.rtmp_addr() != reg.rtmp_addr();
                let kept = old.proof.filter(|p| *p == Proof::Configured || !moved);
                state = (old.draining, old.quarantined_until);
                (old.first_seen, Registered::Refreshed, kept, moved)
            }
            None if self.origins.len() >= self.limits.max_origins => {
                let victim = self.book.victim().cloned().ok_or(RegistryError::OriginsFull(self.origins.len()))?;
                self.evict(&victim);
                (now, Registered::Evicted(victim), None, true)
            }
            None => (now, Registered::New, None, true),
        };
        let proof = proof.or(kept);
        match proof {
            Some(_) => self.book.remove(&id),
            None if moved || !self.book.contains(&id) => self.book.add(&id, network, now),
            None => self.book.heard(&id, network, now),
        }
        let id_hash = pick::id_hash(&id.0);
        let overloaded = self.limits.max_load_centi.zip(reg.load_centi).is_some_and(|(max, load)| load >= max);
        let (draining, quarantined_until) = state;
        let origin = Origin {
            id: id.clone(),
            id_hash,
            registration: reg,
            first_seen,
            last_seen: heard,
            proof,
            draining,
            quarantined_until,
            overloaded,
        };
        self.origins.insert(id, Arc::new(origin));
        self.version += 1;
        Ok(what)
    }

    /// Replaces origin `id`'s record with `change` applied; `false` for an unknown origin.
    fn update(&mut self, id: &OriginId, change: impl FnOnce(&mut Origin)) -> bool {
        let Some(old) = self.origins.get(id) else { return false };
        let mut new = Origin::clone(old);
        change(&mut new);
        self.origins.insert(id.clone(), Arc::new(new));
        self.version += 1;
        true
    }

    /// A dial to `id` was refused or timed out: until the quarantine ends (a heartbeat does not
    /// end it early) its pins move and it takes new streams only when no other origin can.
    /// `false` for an unknown origin.
    pub fn quarantine(&mut self, id: &OriginId, now: Instant) -> bool {
        let until = now + self.limits.quarantine;
        self.update(id, |o| o.quarantined_until = Some(until))
    }

    /// Drains `id` (no new streams; its pinned streams stay) or ends the drain.
    pub fn set_draining(&mut self, id: &OriginId, draining: bool) -> bool {
        self.update(id, |o| o.draining = draining)
    }

    /// Forgets origin `id` at once (it left); its streams re-pin on their next claim.
    pub fn unregister(&mut self, id: &OriginId) -> Option<Arc<Origin>> {
        let gone = self.origins.remove(id)?;
        self.alive_at_last_tick.remove(id);
        self.book.remove(id);
        for stream in self.streams.values_mut() {
            stream.pin.take_if(|pin| pin.origin == *id);
        }
        self.streams.retain(|_, s| s.pin.is_some() || !s.sessions.is_empty());
        self.version += 1;
        Some(gone)
    }

    fn evict(&mut self, id: &OriginId) {
        debug_assert!(self.origins.get(id).is_some_and(|o| !o.proven()), "only unproven origins are evicted");
        self.origins.remove(id);
        self.alive_at_last_tick.remove(id);
        self.book.remove(id);
    }

    /// The probes to start now: each unproven alive origin's id and RTMP address, within the
    /// book's limits. Every one must come back through [`Registry::probe_done`].
    pub fn due_probes(&mut self, now: Instant) -> Vec<(OriginId, SocketAddr)> {
        let mut out = Vec::new();
        for id in self.book.due(now) {
            let origin = self.origins.get(&id).filter(|o| o.is_alive(now, self.ttl));
            match origin.and_then(|o| o.registration.rtmp_addr()) {
                Some(addr) => out.push((id, addr)),
                // Dead, or no TCP RTMP endpoint: nothing to dial; it waits its back-off.
                None => self.book.failed(&id, now),
            }
        }
        out
    }

    /// The result of a probe of `id` at `addr` that [`Registry::due_probes`] handed out.
    pub fn probe_done(&mut self, id: &OriginId, addr: SocketAddr, reached: bool, now: Instant) -> ProbeOutcome {
        let Some(origin) = self.origins.get(id) else { return ProbeOutcome::Stale };
        if origin.proven() || origin.registration.rtmp_addr() != Some(addr) {
            self.book.requeue(id, now);
            return ProbeOutcome::Stale;
        }
        if !reached {
            self.book.failed(id, now);
            return ProbeOutcome::Failed;
        }
        self.book.remove(id);
        let proven = Origin { proof: Some(Proof::Probed), ..Origin::clone(origin) };
        self.origins.insert(id.clone(), Arc::new(proven));
        self.version += 1;
        ProbeOutcome::Proven
    }

    /// Failed probes of an unproven origin (`None` for a proven or unknown one).
    pub fn probe_failures(&self, id: &OriginId) -> Option<u32> {
        self.book.failures(id)
    }

    /// How many origins are unproven, and how many probes are in flight.
    pub fn unproven(&self) -> (usize, usize) {
        (self.book.len(), self.book.in_flight())
    }

    pub fn origins(&self) -> impl Iterator<Item = &Arc<Origin>> {
        self.origins.values()
    }

    pub fn origin_count(&self) -> usize {
        self.origins.len()
    }

    /// Origins in id order, starting after `after` (from the first when `None`).
    pub fn origins_after(&self, after: Option<&str>) -> impl Iterator<Item = &Arc<Origin>> {
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(OriginId(a.to_string())));
        self.origins.range((start, Bound::Unbounded)).map(|(_, o)| o)
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
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

    /// The best [`pick::class`] among the origins taking new streams.
    fn best_class(&self, now: Instant) -> Option<u8> {
        self.origins.values().filter(|o| o.takes_new_streams(now, self.ttl)).map(|o| pick::class(o, now)).max()
    }

    /// The origin `key` is pinned to, while that origin keeps pins (alive, not in quarantine).
    pub fn pinned(&self, key: &StreamKey, now: Instant) -> Option<&Arc<Origin>> {
        let pin = self.pin(key)?;
        self.origins.get(&pin.origin).filter(|o| o.keeps_pins(now, self.ttl))
    }

    /// The origin a new pin of `key` would get: `proposed` (a shard's rendezvous choice) if it
    /// takes new streams and is of the best class there is (a shard's snapshot may be older
    /// than a proof or a heartbeat); else this registry's own rendezvous choice.
    pub fn choose(
        &self,
        key: &StreamKey,
        proposed: Option<&OriginId>,
        now: Instant,
    ) -> Result<Arc<Origin>, RegistryError> {
        let proposed = proposed.and_then(|id| self.origins.get(id)).filter(|o| o.takes_new_streams(now, self.ttl));
        match proposed.filter(|o| Some(pick::class(o, now)) >= self.best_class(now)) {
            Some(o) => Ok(o.clone()),
            None => Ok(pick::rendezvous(key, self.origins.values(), now, self.ttl)?.clone()),
        }
    }

    /// Pins `key` to origin `id` (which must be registered), replacing any pin.
    pub fn set_pin(&mut self, key: &StreamKey, id: &OriginId, now: Instant) -> Result<(), RegistryError> {
        let stream = self.stream_entry(key, now)?;
        if stream.pin.as_ref().is_none_or(|p| p.origin != *id) {
            stream.pin = Some(Pin { origin: id.clone(), since: now });
            self.version += 1;
        }
        Ok(())
    }

    /// The origin `key` is pinned to, pinning it now if needed: an existing pin to an origin
    /// that keeps pins wins; else [`Registry::choose`].
    pub fn claim(
        &mut self,
        key: &StreamKey,
        proposed: Option<&OriginId>,
        now: Instant,
    ) -> Result<Arc<Origin>, RegistryError> {
        if let Some(origin) = self.pinned(key, now) {
            return Ok(origin.clone());
        }
        let origin = self.choose(key, proposed, now)?;
        self.set_pin(key, &origin.id, now)?;
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
            self.book.remove(id);
        }
        let alive = &self.alive_at_last_tick;
        self.streams.retain(|key, stream| {
            let idle = stream.sessions.is_empty() && now.saturating_duration_since(stream.idle_since) >= ttl;
            if let Some(pin) = stream.pin.take_if(|pin| idle || !alive.contains(&pin.origin)) {
                report.unpinned.push((key.clone(), pin.origin));
            }
            stream.pin.is_some() || !stream.sessions.is_empty()
        });
        if !report.expired.is_empty() || !report.forgotten.is_empty() || !report.unpinned.is_empty() {
            self.version += 1;
        }
        report
    }

    /// An immutable copy for the shards: the origins, and the pins whose origin keeps them
    /// now (HLS ids are the caller's to add).
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let pins = self
            .streams
            .iter()
            .filter_map(|(key, s)| Some((key.clone(), self.pinned_origin(s, now)?.clone())))
            .collect();
        Snapshot {
            version: self.version,
            ttl: self.ttl,
            origins: self.origins.values().cloned().collect(),
            pins,
            ..Snapshot::default()
        }
    }

    fn pinned_origin(&self, stream: &Stream, now: Instant) -> Option<&Arc<Origin>> {
        self.origins.get(&stream.pin.as_ref()?.origin).filter(|o| o.keeps_pins(now, self.ttl))
    }
}

#[cfg(test)]
mod tests;
