//! Per-protocol connection handling on the shards: codec + balance + shard I/O.
//!
//! - [`edge`]: `--edge on`: RTMP and HTTP-FLV players served from one origin pull per stream
//!   and shard.
//! - [`http`]: the HTTP/1 server of the two HTTP listeners, and the client that asks origins.
//! - [`rtmp`]: RTMP publish and play.
//! - [`local`]: `--local-origin`: publishers served by streamgate itself, no origin.
//! - [`http_stream`]: HTTP-FLV, HTTP-TS and HLS players, static files.
//! - [`webrtc`]: WHIP/WHEP signalling and the WebRTC media relay.
//! - [`srt`]: SRT publish and play.
//!
//! Every protocol picks its origin the same way ([`pick`]): a stream the shard's snapshot
//! already has a pin for goes to that origin at once (no round trip to the control thread);
//! a new stream gets a proposal from the snapshot (rendezvous hash), confirmed by the control
//! thread's pin table (and, in redis mode, Redis), so one stream has one origin whatever
//! protocol, shard or proxy instance asks.
//!
//! Failover ([`repick`]): a session whose dial to its origin is refused or times out reports
//! that origin, which goes into quarantine (no new streams, its pins move), and is retried
//! once on the origin the control thread picks instead, before the client sees an error.
//!
//! Failures are counted on the shard by reason ([`PickFailure`]): here for picking
//! ([`propose`], [`claim_failed`]), and by each protocol where its origin lacks the endpoint,
//! cannot be reached or refuses ([`failed`]).

pub mod access;
pub mod edge;
pub mod http;
pub mod http_stream;
pub mod local;
pub mod rtmp;
pub mod srt;
pub mod webrtc;

use std::sync::Arc;
use std::time::Instant;

use crate::bridge::{ControlAsk, Listener};
use crate::config::Config;
use crate::shard::tls::Certs;
use crate::shard::{Services, TcpService, UdpService};

use crate::balance::registry::RegistryError;
use crate::balance::{Origin, OriginId, StreamKey};
use crate::bridge::ClaimError;
pub use crate::bridge::PickFailure;
use crate::shard::Shard;

/// What a shard does last at shutdown, its connections and UDP sessions closed: ends the
/// admissions that outlive a connection (HLS player sessions, WebRTC offers still waiting for
/// their media), then posts the end notices queued, within `--callback-timeout`.
async fn finish(shard: std::rc::Rc<Shard>) {
    http_stream::hls_sessions::end_all(&shard);
    webrtc::signal::end_waiting();
    access::flush(&shard).await;
}

/// What the shards serve: every listener of the configuration with the protocol that serves it.
/// Each TLS listener that is on serves its plain twin's protocol behind TLS with `certs`.
pub fn services(config: &Config, certs: Option<Arc<Certs>>) -> Services {
    let listen = &config.listen;
    let mut tcp = vec![
        TcpService {
            listener: Listener::Rtmp,
            addr: listen.rtmp.0,
            what: "RTMP (--rtmp-server, PROXY_RTMP_SERVER)",
            serve: |shard, client, peer| Box::pin(rtmp::serve(shard, client, peer)),
            tls: None,
        },
        TcpService {
            listener: Listener::HttpStream,
            addr: listen.http_stream.0,
            what: "HTTP stream (--http-server, PROXY_HTTP_SERVER)",
            serve: |shard, client, peer| Box::pin(http_stream::serve(shard, client, peer)),
            tls: None,
        },
        TcpService {
            listener: Listener::HttpApi,
            addr: listen.http_api.0,
            what: "HTTP API (--http-api, PROXY_HTTP_API)",
            serve: |shard, client, peer| Box::pin(webrtc::signal::serve(shard, client, peer)),
            tls: None,
        },
    ];
    tcp.extend(tls_services(config, &tcp, certs));
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
    let limits = std::sync::Arc::new(crate::shard::limits::Limits::new(&config.access));
    Services { tcp, udp, limits, finish: |shard| Box::pin(finish(shard)) }
}

/// The TLS listeners that are on, each serving its plain twin in `plain` behind TLS.
fn tls_services(config: &Config, plain: &[TcpService], certs: Option<Arc<Certs>>) -> Vec<TcpService> {
    let Some(certs) = certs else {
        return Vec::new();
    };
    let tls = &config.tls;
    let listeners = [
        (tls.rtmps, Listener::Rtmp, "RTMPS (--rtmps-server, STREAMGATE_RTMPS_SERVER)"),
        (tls.https_stream, Listener::HttpStream, "HTTPS stream (--https-server, STREAMGATE_HTTPS_SERVER)"),
        (tls.https_api, Listener::HttpApi, "HTTPS API (--https-api, STREAMGATE_HTTPS_API)"),
    ];
    let twin = |listener| plain.iter().find(|s| s.listener == listener);
    listeners
        .into_iter()
        .filter_map(|(addr, listener, what)| {
            let (addr, twin) = (addr?, twin(listener)?);
            Some(TcpService { addr: addr.0, what, tls: Some(certs.clone()), ..twin.clone() })
        })
        .collect()
}

/// Why a stream could not be given an origin.
#[derive(Debug, thiserror::Error)]
pub enum NoOrigin {
    /// The control thread could not confirm one.
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

/// This shard's rendezvous choice for `key` from its newest snapshot, if it has an origin for
/// new streams (without one the control thread still decides: in redis mode it may know the
/// stream's origin from Redis).
pub fn propose(shard: &Shard, key: &StreamKey) -> Option<OriginId> {
    shard.link.snapshots.borrow().propose(key, Instant::now()).ok().map(|origin| origin.id.clone())
}

/// Chooses the stream's origin: its pin in this shard's snapshot, else a proposal from the
/// snapshot confirmed by the control thread's pin table. A failure is counted by its reason.
pub async fn pick(shard: &Shard, key: &StreamKey) -> Result<Arc<Origin>, NoOrigin> {
    if let Some(origin) = pinned(shard, key) {
        return Ok(origin);
    }
    shard.counters.asked(ControlAsk::Claim);
    shard.link.claim(key, propose(shard, key), None).await.map_err(|e| claim_failed(shard, e))
}

/// The origin this shard's snapshot has `key` pinned to, if that origin keeps its pins.
pub fn pinned(shard: &Shard, key: &StreamKey) -> Option<Arc<Origin>> {
    shard.link.snapshots.borrow().pinned(key, Instant::now()).cloned()
}

/// After a dial to `failed` was refused or timed out: reports it (quarantine) and asks where
/// `key` goes now; an answer of `failed` again (no other origin takes the stream) is an error,
/// so the session is not retried on the origin that just failed.
pub async fn repick(shard: &Shard, key: &StreamKey, failed: &Origin) -> Result<Arc<Origin>, NoOrigin> {
    let proposal = shard.link.snapshots.borrow().propose_without(key, &failed.id, Instant::now());
    shard.counters.asked(ControlAsk::Claim);
    let origin = shard.link.claim(key, proposal, Some(failed.id.clone())).await.map_err(|e| claim_failed(shard, e))?;
    if origin.id == failed.id {
        let none = crate::balance::PickError::NoOriginAlive(key.to_string());
        return Err(NoOrigin::Claim(ClaimError::Registry(none.into())));
    }
    log::info!("stream {key}: origin {} failed a dial; retrying on origin {}", failed.id, origin.id);
    Ok(origin)
}

/// Counts a failed claim by its reason.
pub fn claim_failed(shard: &Shard, e: ClaimError) -> NoOrigin {
    failed(
        shard,
        match &e {
            ClaimError::ControlGone => PickFailure::ControlGone,
            ClaimError::Registry(RegistryError::Pick(_)) => PickFailure::NoOrigin,
            ClaimError::Registry(RegistryError::OriginsFull(_) | RegistryError::PinsFull(_)) => PickFailure::Limit,
            ClaimError::Registry(RegistryError::Shared(_)) => PickFailure::Redis,
        },
    );
    e.into()
}

/// Counts a stream that could not be given an origin, or whose origin could not serve it.
pub fn failed(shard: &Shard, why: PickFailure) {
    shard.counters.pick_failed(why);
}

#[cfg(test)]
mod tests {
    /// The size of the future an async fn of three arguments returns.
    fn future_size<A, B, C, F: Future>(_: fn(A, B, C) -> F) -> usize {
        size_of::<F>()
    }

    /// A connection's task is allocated at the size of its largest state and keeps it for its
    /// whole life; edge players are the most numerous connections, so the setup steps and the
    /// relay are boxed and a player's task stays small (the RTMP task was 5,000 bytes, the HTTP
    /// one 4,096, when the relay's and every route's states were inline).
    #[test]
    fn a_players_connection_task_stays_small() {
        let (rtmp, http) = (future_size(super::rtmp::serve), future_size(super::http_stream::serve));
        // RTMP: the setup's future is freed before the session's starts (its own box), so the
        // task itself holds little more than the connection until the setup hands over.
        assert!(rtmp <= 512, "the RTMP connection task takes {rtmp} bytes");
        assert!(http <= 3_584, "the HTTP connection task takes {http} bytes");
        eprintln!("connection tasks: RTMP {rtmp} bytes, HTTP {http} bytes");
    }
}
