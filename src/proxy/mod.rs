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

use crate::bridge::Listener;
use crate::config::Config;
use crate::shard::{Services, TcpService, UdpService};

use crate::balance::registry::RegistryError;
use crate::balance::{Origin, OriginId, StreamKey};
use crate::bridge::ClaimError;
pub use crate::bridge::PickFailure;
use crate::shard::Shard;

/// What the shards serve: every listener of the configuration with the protocol that serves it.
pub fn services(config: &Config) -> Services {
    let listen = &config.listen;
    let tcp = vec![
        TcpService {
            listener: Listener::Rtmp,
            addr: listen.rtmp.0,
            what: "RTMP (--rtmp-server, PROXY_RTMP_SERVER)",
            serve: |shard, client, peer| Box::pin(rtmp::serve(shard, client, peer)),
        },
        TcpService {
            listener: Listener::HttpStream,
            addr: listen.http_stream.0,
            what: "HTTP stream (--http-server, PROXY_HTTP_SERVER)",
            serve: |shard, client, peer| Box::pin(http_stream::serve(shard, client, peer)),
        },
        TcpService {
            listener: Listener::HttpApi,
            addr: listen.http_api.0,
            what: "HTTP API (--http-api, PROXY_HTTP_API)",
            serve: |shard, client, peer| Box::pin(webrtc::signal::serve(shard, client, peer)),
        },
    ];
    let udp = vec![
        UdpService {
            listener: Listener::WebrtcUdp,
            addr: listen.webrtc.0,
            what: "WebRTC UDP (--webrtc-server, PROXY_WEBRTC_SERVER)",
            serve: |shard, socket, stop| Box::pin(webrtc::media::serve(shard, socket, stop)),
        },
        UdpService {
            listener: Listener::SrtUdp,
            addr: listen.srt.0,
            what: "SRT UDP (--srt-server, PROXY_SRT_SERVER)",
            serve: |shard, socket, stop| Box::pin(srt::serve(shard, socket, stop)),
        },
    ];
    Services { tcp, udp }
}

/// Why a stream could not be given an origin.
#[derive(Debug, thiserror::Error)]
pub enum NoOrigin {
    /// This shard's snapshot has no alive origin.
    #[error(transparent)]
    Proposal(#[from] crate::balance::pick::PickError),
    /// The control thread could not confirm one.
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

/// This shard's rendezvous choice for `key` from its newest snapshot (a failure, no alive
/// origin, is counted).
pub fn propose(shard: &Shard, key: &StreamKey) -> Result<OriginId, NoOrigin> {
    let snapshot = shard.link.snapshots.borrow().clone();
    snapshot.propose(key, Instant::now()).map(|origin| origin.id.clone()).map_err(|e| {
        failed(shard, PickFailure::NoOrigin);
        e.into()
    })
}

/// Chooses the stream's origin: a proposal from this shard's snapshot, confirmed by the
/// control thread's pin table. A failure is counted by its reason.
pub async fn pick(shard: &Shard, key: &StreamKey) -> Result<Arc<Origin>, NoOrigin> {
    let proposal = propose(shard, key)?;
    shard.link.claim(key, Some(proposal)).await.map_err(|e| claim_failed(shard, e))
}

/// Counts a failed claim by its reason.
pub fn claim_failed(shard: &Shard, e: ClaimError) -> NoOrigin {
    failed(
        shard,
        match &e {
            ClaimError::ControlGone => PickFailure::ControlGone,
            ClaimError::Registry(RegistryError::Pick(_)) => PickFailure::NoOrigin,
            ClaimError::Registry(RegistryError::OriginsFull(_) | RegistryError::PinsFull(_)) => PickFailure::Limit,
        },
    );
    e.into()
}

/// Counts a stream that could not be given an origin, or whose origin could not serve it.
pub fn failed(shard: &Shard, why: PickFailure) {
    shard.counters.pick_failed(why);
}
