//! Per-protocol connection handling on the shards: codec + balance + shard I/O.
//!
//! - [`http`]: the HTTP/1 server of the two HTTP listeners, and the client that asks origins.
//! - [`rtmp`]: RTMP publish and play.
//! - [`http_stream`]: HTTP-FLV, HTTP-TS and HLS players, static files.
//! - [`webrtc`]: WHIP/WHEP signalling and the WebRTC media relay.
//! - [`srt`]: SRT publish and play.
//!
//! Every protocol picks its origin the same way ([`pick`]): a proposal from the shard's
//! snapshot (rendezvous hash), confirmed by the control thread's pin table, so one stream has
//! one origin whatever protocol or shard asks.
//!
//! Failures are counted on the shard by reason ([`PickFailure`]): here for picking
//! ([`propose`], [`claim_failed`]), and by each protocol where its origin lacks the endpoint,
//! cannot be reached or refuses ([`failed`]).

pub mod http;
pub mod http_stream;
pub mod rtmp;
pub mod srt;
pub mod webrtc;

use std::sync::Arc;
use std::time::Instant;

use crate::balance::registry::RegistryError;
use crate::balance::{Origin, OriginId, StreamKey};
use crate::bridge::ClaimError;
pub use crate::bridge::PickFailure;
use crate::shard::Shard;

/// This shard's rendezvous choice for `key` from its newest snapshot (a failure, no alive
/// origin, is counted).
pub fn propose(shard: &Shard, key: &StreamKey) -> Result<OriginId, String> {
    let snapshot = shard.link.snapshots.borrow().clone();
    snapshot.propose(key, Instant::now()).map(|origin| origin.id.clone()).map_err(|e| {
        failed(shard, PickFailure::NoOrigin);
        e.to_string()
    })
}

/// Chooses the stream's origin: a proposal from this shard's snapshot, confirmed by the
/// control thread's pin table.
pub async fn pick(shard: &Shard, key: &StreamKey) -> Result<Arc<Origin>, String> {
    let proposal = propose(shard, key)?;
    shard.link.claim(key, Some(proposal)).await.map_err(|e| claim_failed(shard, &e))
}

/// Counts a failed claim by its reason; returns its text.
pub fn claim_failed(shard: &Shard, e: &ClaimError) -> String {
    failed(
        shard,
        match e {
            ClaimError::ControlGone => PickFailure::ControlGone,
            ClaimError::Registry(RegistryError::Pick(_)) => PickFailure::NoOrigin,
            ClaimError::Registry(RegistryError::OriginsFull(_) | RegistryError::PinsFull(_)) => PickFailure::Limit,
        },
    );
    e.to_string()
}

/// Counts a stream that could not be given an origin, or whose origin could not serve it.
pub fn failed(shard: &Shard, why: PickFailure) {
    shard.counters.pick_failed(why);
}
