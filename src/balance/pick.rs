//! Choosing an origin for a stream key: rendezvous (highest-random-weight) hashing over the
//! alive origins, with a fixed seed so every shard and every proxy instance running this code
//! proposes the same origin for the same key and origin set. Adding or removing one origin
//! moves only the keys that hash to it.

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

/// The rendezvous score of `origin_id` for `key`.
pub fn score(key: &StreamKey, origin_id: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ HASH_SEED;
    for b in key.as_str().bytes().chain([0xff]).chain(origin_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finalizer: FNV alone clusters on similar ids.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The alive origin with the highest score for `key`; ties broken by id.
pub fn rendezvous<'a>(
    key: &StreamKey,
    origins: impl IntoIterator<Item = &'a Arc<Origin>>,
    now: Instant,
    ttl: Duration,
) -> Result<&'a Arc<Origin>, PickError> {
    origins
        .into_iter()
        .filter(|o| o.is_alive(now, ttl))
        .max_by_key(|o| (score(key, &o.id.0), &o.id))
        .ok_or_else(|| PickError::NoOriginAlive(key.to_string()))
}

/// What a shard knows of the registry: a versioned, immutable copy of the origins. New
/// connections use the newest snapshot; a proposal from it is confirmed by the control thread,
/// which owns the pins.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    pub ttl: Duration,
    pub origins: Vec<Arc<Origin>>,
}

impl Snapshot {
    /// The origin this snapshot proposes for `key`.
    pub fn propose(&self, key: &StreamKey, now: Instant) -> Result<&Arc<Origin>, PickError> {
        rendezvous(key, &self.origins, now, self.ttl)
    }

    /// Whether any origin is alive now.
    pub fn any_alive(&self, now: Instant) -> bool {
        self.origins.iter().any(|o| o.is_alive(now, self.ttl))
    }
}
