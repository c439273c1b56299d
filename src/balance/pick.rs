//! Choosing an origin for a stream key: rendezvous (highest-random-weight) hashing over the
//! alive origins, with a fixed seed so every shard and every proxy instance running this code
//! proposes the same origin for the same key and origin set. Adding or removing one origin
//! moves only the keys that hash to it.
//!
//! Candidates are the origins that take new streams: alive and not draining. Among them
//! origins not in quarantine after a failed dial come first, then proven origins (see the
//! registry's header), then origins whose last heartbeat did not report overload, then the
//! score: a new stream goes to the best-scoring proven origin that is neither in quarantine
//! nor overloaded; to an unproven one only while no proven candidate exists (origins nobody has
//! reached cannot draw streams away from ones that work, and a setup whose origins cannot be
//! probed behaves as if every origin were equal); to an overloaded one only while every
//! candidate of its class is overloaded; and to one in quarantine only while every candidate
//! is (a single origin that blipped takes streams again as soon as it answers).
//!
//! A [`Snapshot`] also carries the pins and HLS ids the control thread knows, so a shard serves
//! an established stream's new sessions and every HLS segment request without asking it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::origin::Origin;
use super::stream_key::StreamKey;

/// Fixed seed of the rendezvous hash. Changing it moves every new stream: don't.
pub const HASH_SEED: u64 = 0x5354_5245_414d_4741; // "STREAMGA"

/// Why no origin could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    #[error("no origin available for {0}: none has sent a heartbeat within the origin TTL")]
    NoOriginAlive(String),
}

/// FNV-1a of `bytes` from `seed`, finished with splitmix64 (FNV alone clusters similar ids).
fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A stream key's half of the score, computed once per pick.
pub fn key_hash(key: &str) -> u64 {
    hash(HASH_SEED, key.as_bytes())
}

/// An origin id's half of the score, computed once when it registers.
pub fn id_hash(origin_id: &str) -> u64 {
    hash(HASH_SEED.rotate_left(32), origin_id.as_bytes())
}

/// The rendezvous score of an origin for a key, from their hashes: picking among n origins
/// costs one key hash and n multiplications, not n string hashes.
pub fn score(key_hash: u64, id_hash: u64) -> u64 {
    mix(key_hash ^ id_hash)
}

/// How an origin ranks before its score: not in quarantine first, then proven, then not
/// overloaded.
pub fn class(o: &Origin, now: Instant) -> u8 {
    u8::from(!o.quarantined(now)) << 2 | u8::from(o.proven()) << 1 | u8::from(!o.overloaded)
}

/// The origin taking new streams with the best [`class`], and within it the highest score for
/// `key`; ties broken by id. One pass over `origins`.
pub fn rendezvous<'a>(
    key: &StreamKey,
    origins: impl IntoIterator<Item = &'a Arc<Origin>>,
    now: Instant,
    ttl: Duration,
) -> Result<&'a Arc<Origin>, PickError> {
    let kh = key_hash(key.as_str());
    // Proven first, then the score, in one integer: one comparison per origin.
    let mut best: Option<(u128, &'a Arc<Origin>)> = None;
    for o in origins {
        if !o.takes_new_streams(now, ttl) {
            continue;
        }
        let rank = u128::from(class(o, now)) << 64 | u128::from(score(kh, o.id_hash));
        match best {
            Some((r, b)) if r > rank || (r == rank && b.id >= o.id) => {}
            _ => best = Some((rank, o)),
        }
    }
    best.map(|(_, o)| o).ok_or_else(|| PickError::NoOriginAlive(key.to_string()))
}

/// What a shard knows of the registry: a versioned, immutable copy of the origins, the pins
/// and the HLS ids. New connections use the newest snapshot. A pin found here serves at once
/// while its origin keeps pins; a new stream's proposal from it is confirmed by the control
/// thread, which owns the pins.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    pub ttl: Duration,
    pub origins: Vec<Arc<Origin>>,
    /// Each pinned stream's origin.
    pub pins: HashMap<StreamKey, Arc<Origin>>,
    /// HLS ids by stream, and streams by HLS id.
    pub hls_ids: HashMap<StreamKey, Arc<str>>,
    pub hls_keys: HashMap<Arc<str>, StreamKey>,
    /// Streams an operator disconnected, each with when: their sessions opened before that
    /// are ended by the shards' once-a-second sweeps. A few, held for seconds.
    pub disconnects: Vec<(StreamKey, Instant)>,
}

impl Snapshot {
    /// Whether a session of `key` opened at `opened` must end (an operator disconnected it).
    pub fn disconnected(&self, key: &StreamKey, opened: Instant) -> bool {
        self.disconnects.iter().any(|(k, at)| k == key && opened < *at)
    }

    /// The origin `key` is pinned to, while that origin keeps its pins (alive, not in
    /// quarantine).
    pub fn pinned(&self, key: &StreamKey, now: Instant) -> Option<&Arc<Origin>> {
        self.pins.get(key).filter(|o| o.keeps_pins(now, self.ttl))
    }

    /// The stream of an HLS id and its id, when both the id and the stream's pin are known.
    pub fn hls_by_id(&self, id: &str, now: Instant) -> Option<(&StreamKey, &Arc<str>, &Arc<Origin>)> {
        let key = self.hls_keys.get(id)?;
        let origin = self.pinned(key, now)?;
        Some((key, self.hls_ids.get(key)?, origin))
    }

    /// The origin this snapshot proposes for `key`.
    pub fn propose(&self, key: &StreamKey, now: Instant) -> Result<&Arc<Origin>, PickError> {
        rendezvous(key, &self.origins, now, self.ttl)
    }

    /// The origin this snapshot proposes for `key` when `failed` is out of the running.
    pub fn propose_without(&self, key: &StreamKey, failed: &super::OriginId, now: Instant) -> Option<super::OriginId> {
        let others = self.origins.iter().filter(|o| o.id != *failed);
        rendezvous(key, others, now, self.ttl).ok().map(|o| o.id.clone())
    }

    /// Whether any origin is alive now.
    pub fn any_alive(&self, now: Instant) -> bool {
        self.origins.iter().any(|o| o.is_alive(now, self.ttl))
    }
}
