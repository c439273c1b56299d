//! RTMP publish and play through the proxy, one connection at a time on its shard:
//!
//! 1. [`identify`]: handshake (digest or simple), answer `connect`/`createStream`/..., until
//!    `publish` or `play` names the stream; every client byte after C2 is kept for replay.
//! 2. Stream key from tcUrl + stream name; access ([`crate::proxy::access`]: signed URL,
//!    sessions per stream, on_publish/on_play); an origin proposed from the shard's snapshot
//!    (rendezvous hash) and claimed from the control thread, which keeps one pin per stream.
//! 3. [`upstream`]: dial the origin (`--rtmp-dial-timeout`, for the connect and again for the
//!    handshake; a dial that is refused or times out puts the origin in quarantine and is
//!    retried once on the origin picked instead),
//!    client handshake, send the replay verbatim, then pass the origin's stream on
//!    ([`handover`], its answers to the replayed commands left out) until it confirms the
//!    start.
//! 4. Relay both directions until either side closes; then both are closed. A player's
//!    downstream goes through the handover's filter until the client is in step with the
//!    origin ([`handover::Handover::relay_until_in_step`]), then uses `--relay splice|copy`
//!    ([`crate::shard::relay`]); a publisher's is the origin's messages re-chunked
//!    ([`handover::Handover::reframe_until_closed`]). A
//!    publisher's upstream direction is always the copy relay, feeding the media inspector
//!    ([`crate::shard::media`]): frames, key frames, metadata and the SPS picture size,
//!    reported once a second.
//!
//! A stream served by streamgate itself (`--local-origin`) is published and played through
//! [`super::local`] after step 2 instead.
//!
//! With `--edge on` (the default), a player is served from the shard's pull of the stream instead
//! ([`super::edge::play_rtmp`]) after step 2; publishers are relayed either way.
//!
//! Failures after the stream is known are answered with an RTMP status the client shows
//! (`NetStream.Publish.BadName` / `NetStream.Play.StreamNotFound` with the reason, or the
//! origin's own refusal) and logged as one line with the stream key and the reason. Failures
//! before that (bad handshake, a client that never publishes) close that connection only and
//! are logged at debug.

pub mod handover;
pub mod identify;
pub mod limits;
pub mod upstream;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncWriteExt, future};
use glommio::net::TcpStream;

use crate::balance::endpoint::first_tcp;
use crate::balance::{Origin, StreamKey};
use crate::bridge::PickFailure;
use crate::bridge::{Protocol, Role};
use crate::codec::rtmp::{ChunkEncoder, message};
use crate::shard::media::MediaProbe;
use crate::shard::traffic::Traffic;
use crate::shard::{LocalFuture, Shard, relay, within};
use handover::Handover;
use identify::Identified;
use upstream::UpstreamError;

/// A client must have sent `publish` or `play` within this long after connecting.
pub const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// The origin must confirm the start within this long after the replay.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one RTMP client connection: its setup (handshake, identify, admission, which path),
/// then the session that setup chose. The setup's future is freed before the session starts, so
/// a session (most of them edge or local players) keeps only its own state for its life: a
/// future is allocated at the size of its largest state.
pub async fn serve(shard: Rc<Shard>, client: TcpStream, peer: SocketAddr) {
    if let Some(session) = Box::pin(setup(shard, client, peer)).await {
        session.await;
    }
}

/// The setup of [`serve`]: `None` when it ended the connection (refused, or the client went),
/// else the session to run, owning the connection and what it holds for the session's life
/// (its admission, its publish slot).
async fn setup(shard: Rc<Shard>, mut client: TcpStream, peer: SocketAddr) -> Option<LocalFuture> {
    // Setup steps whose state is large are boxed (freed once done).
    let identified = Box::pin(within(IDENTIFY_TIMEOUT, identify::identify(&mut client))).await;
    let Identified { role: session_role, tc_url, stream_name, replay, told } = match identified {
        Some(Ok(ident)) => ident,
        Some(Err(e)) => {
            log::debug!("rtmp client {peer}: {e}");
            return None;
        }
        None => {
            log::debug!("rtmp client {peer}: no publish or play within {IDENTIFY_TIMEOUT:?}");
            return None;
        }
    };
    let role = session_role.name();
    let key = match StreamKey::from_rtmp(&tc_url, &stream_name) {
        Ok(key) => key,
        Err(e) => {
            log::warn!("rtmp {role} from {peer} (tcUrl {:?}, stream {:?}) refused: {e}", tc_url, stream_name);
            refuse(&client, session_role, identify::CHUNK_SIZE, &e.to_string()).await;
            return None;
        }
    };
    let param = super::access::rtmp_param(&tc_url, &stream_name);
    let ask = super::access::Ask {
        protocol: Protocol::Rtmp,
        role: session_role,
        key: &key,
        param,
        peer,
        tc_url: Some(&tc_url),
    };
    let admitted = match Box::pin(super::access::admit(&shard, &ask)).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            refuse(&client, session_role, identify::CHUNK_SIZE, &refusal.to_string()).await;
            return None;
        }
    };
    // An SRT publisher's ingest job is starting for this stream: the stream is taken (only the
    // job's own RTMP publish may claim it), as it is once the job publishes.
    if session_role == Role::Publish && !admitted.internal() && super::local::srt::ingesting(&key) {
        log::warn!("rtmp publish {key} from {peer} refused: an SRT publisher's ingest of the stream is starting");
        refuse(&client, session_role, identify::CHUNK_SIZE, "stream already publishing").await;
        return None;
    }
    let _admitted = admitted;
    // Publish limits (RTMP_MAX_STREAMS now; resolution and bit rate while relaying).
    let _slot = match session_role {
        Role::Publish => match limits::admit(&shard.config.limits) {
            Ok(slot) => Some(slot),
            Err(refusal) => {
                log::warn!("rtmp publish {key} from {peer} refused: {refusal}");
                refuse(&client, session_role, identify::CHUNK_SIZE, &refusal.to_string()).await;
                return None;
            }
        },
        Role::Play => None,
    };
    let held = (_admitted, _slot);
    if super::local::takes(&shard, &key, session_role) {
        return Some(Box::pin(async move {
            super::local::serve_rtmp(&shard, &client, peer, &key, &stream_name, session_role, replay).await;
            drop(held);
        }));
    }
    let origin = match super::pick(&shard, &key).await {
        Ok(origin) => origin,
        Err(reason) => {
            log::warn!("rtmp {role} {key} from {peer} refused: {reason}");
            refuse(&client, session_role, identify::CHUNK_SIZE, &reason.to_string()).await;
            return None;
        }
    };
    if session_role == Role::Play && shard.config.edge.enabled {
        // What identify kept for a relay's replay is not needed for the player's life; the
        // player's query goes to the origin if its play starts the shard's pull.
        let param = param.to_string();
        drop((replay, tc_url, origin, told));
        // The origin lets each query in itself, as it would a relayed player.
        if let Err(denied) = Box::pin(super::edge::admit(&shard, &key, &param)).await {
            log::warn!("rtmp play {key} from {peer} refused: {denied}");
            refuse(&client, session_role, identify::CHUNK_SIZE, &denied.to_string()).await;
            return None;
        }
        return Some(Box::pin(async move {
            super::edge::play_rtmp(&shard, &client, peer, &key, &stream_name, param).await;
            drop(held);
        }));
    }
    Some(Box::pin(async move {
        relayed(shard, client, peer, key, session_role, origin, (replay, told)).await;
        drop(held);
    }))
}

/// Relays a client to the stream's origin (the path of publishers, and of players with
/// `--edge off`).
async fn relayed(
    shard: Rc<Shard>,
    client: TcpStream,
    peer: SocketAddr,
    key: StreamKey,
    session_role: Role,
    origin: Arc<Origin>,
    (replay, told): (Vec<u8>, identify::Told),
) {
    let role = session_role.name();
    let (origin, connected) = match connect(&shard, &key, origin, session_role).await {
        Ok(connected) => connected,
        Err((origin, e)) => {
            refuse(&client, session_role, identify::CHUNK_SIZE, &e.to_string()).await;
            return log::warn!("rtmp {role} {key} from {peer} via origin {}: {e}", origin.id);
        }
    };
    let session = shard.open_session(&key, Protocol::Rtmp, session_role).await;
    let traffic = session.traffic.clone();
    let started = Instant::now();
    // A publisher's bytes go through the media inspector (one connection per stream).
    let probe = (session_role == Role::Publish).then(|| shard.media.register(&key, started));
    let client = Client { stream: client, role: session_role, told };
    let outcome = proxy(&shard, client, replay, connected, &traffic, probe.as_deref()).await;
    drop(probe);
    drop(session);
    let (bytes_in, bytes_out) = (traffic.bytes_in.get(), traffic.bytes_out.get());
    match outcome {
        Ok(end) => log::info!(
            "rtmp {role} {key} from {peer} via origin {} ended after {:.1?}: {end}; {bytes_in} bytes in, {bytes_out} bytes out",
            origin.id,
            started.elapsed()
        ),
        Err(e) => log::warn!("rtmp {role} {key} from {peer} via origin {}: {e}", origin.id),
    }
}

/// Sends the client an error status on its stream and closes it. `chunk_size` is the client's
/// current read chunk size: [`identify::CHUNK_SIZE`] until the origin's stream reached it.
pub(crate) async fn refuse(client: &TcpStream, role: Role, chunk_size: u32, reason: &str) {
    let code = match role {
        Role::Publish => "NetStream.Publish.BadName",
        Role::Play => "NetStream.Play.StreamNotFound",
    };
    let mut encoder = ChunkEncoder::new();
    let mut out = Vec::new();
    let status = message::on_status(identify::STREAM_ID, "error", code, reason);
    if encoder.set_chunk_size(chunk_size).is_ok() && encoder.encode(&status, &mut out).is_ok() {
        let _ = relay::send_all(client, &out).await;
    }
    let _ = client.shutdown(std::net::Shutdown::Write).await;
}

/// How a relayed session ended.
#[derive(Debug)]
enum End {
    ClientClosed,
    OriginClosed,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            End::ClientClosed => "the client closed",
            End::OriginClosed => "the origin closed",
        })
    }
}

/// Why a session that reached an origin failed.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("origin {0} has no RTMP endpoint")]
    NoEndpoint(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("origin did not confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("relay: {0}")]
    Relay(#[from] std::io::Error),
    #[error("refused: {0}")]
    Limit(crate::transcode::limits::Refusal),
}

/// Dials the stream's origin and runs the RTMP handshake with it. A dial that is refused or
/// times out is reported (the origin goes into quarantine) and retried once on the origin the
/// control thread picks instead; on failure, the origin last tried and why.
async fn connect(
    shard: &Shard,
    key: &StreamKey,
    origin: Arc<Origin>,
    role: Role,
) -> Result<(Arc<Origin>, upstream::Connected), (Arc<Origin>, SessionError)> {
    match dial(shard, &origin, role).await {
        Err(SessionError::Upstream(
            e @ (UpstreamError::Dial { .. }
            | UpstreamError::DialTimeout { .. }
            | UpstreamError::HandshakeTimeout { .. }),
        )) => {
            let next = match super::repick(shard, key, &origin).await {
                Ok(next) => next,
                Err(_) => return Err((origin, e.into())),
            };
            match dial(shard, &next, role).await {
                Ok(connected) => Ok((next, connected)),
                Err(e) => Err((next, e)),
            }
        }
        Ok(connected) => Ok((origin, connected)),
        Err(e) => Err((origin, e)),
    }
}

/// One dial of `origin`'s RTMP endpoint, up to the handshake; a failure is counted.
async fn dial(shard: &Shard, origin: &Origin, role: Role) -> Result<upstream::Connected, SessionError> {
    let reg = &origin.registration;
    let Some(endpoint) = first_tcp(&reg.rtmp) else {
        super::failed(shard, PickFailure::NoEndpoint);
        return Err(SessionError::NoEndpoint(origin.id.0.clone()));
    };
    let addr = SocketAddr::new(reg.ip, endpoint.port);
    let connected = upstream::connect(addr, shard.config.rtmp_dial_timeout).await.inspect_err(|_| {
        super::failed(shard, PickFailure::DialFailed);
    })?;
    log::debug!("rtmp {} -> origin {} ({addr})", role.name(), origin.id);
    Ok(connected)
}

/// The client of a relayed session: its connection, role, and what the proxy told it.
struct Client {
    stream: TcpStream,
    role: Role,
    told: identify::Told,
}

/// Replays to the dialed origin and relays both ways. A publisher's upstream bytes (the replay
/// first: everything after C2) feed `probe`, over the copy relay.
async fn proxy(
    shard: &Shard,
    client: Client,
    replay: Vec<u8>,
    connected: upstream::Connected,
    traffic: &Traffic,
    probe: Option<&MediaProbe>,
) -> Result<End, SessionError> {
    let Client { stream: client, role, told } = client;
    let upstream::Connected { stream: mut upstream, mut c2, first } = connected;
    crate::shard::conn::set_origin(&upstream);
    traffic.bytes_in.set(replay.len() as u64);
    if let Some(probe) = probe {
        probe.feed(&replay);
    }
    c2.extend_from_slice(&replay);
    drop(replay); // up to MAX_IDENTIFY_BYTES: not kept for the session's life
    upstream.write_all(&c2).await.map_err(UpstreamError::Io)?;
    drop(c2);
    let mode = shard.config.relay;
    let (client, upstream) = (&client, &upstream);
    crate::shard::fault::inject().await;
    let up = async {
        let Some(probe) = probe else {
            relay::one_way(mode, client, upstream, &traffic.bytes_in, Duration::ZERO).await?;
            return Ok(End::ClientClosed);
        };
        let relay = async {
            relay::one_way_inspect(client, upstream, &traffic.bytes_in, |b| probe.feed(b)).await?;
            Ok(End::ClientClosed)
        };
        let limit =
            async { Err(SessionError::Limit(limits::enforce(shard.config.limits, probe, &traffic.bytes_in).await)) };
        future::or(relay, limit).await
    };
    let down = async {
        let (mut handover, rest) = confirm(shard, upstream, client, first, role, told, traffic).await?;
        match role {
            Role::Play => {
                let Some(rest) = handover.relay_until_in_step(upstream, client, rest, &traffic.bytes_out).await? else {
                    return Ok(End::OriginClosed);
                };
                drop(handover);
                let peer = client.peer_addr().map_or_else(|e| e.to_string(), |a| a.to_string());
                log::debug!(
                    "rtmp play from {peer}: in step with the origin after {} bytes out; relaying its stream verbatim",
                    traffic.bytes_out.get()
                );
                relay::send_all(client, &rest).await?;
                traffic.bytes_out.set(traffic.bytes_out.get() + rest.len() as u64);
                relay::one_way(mode, upstream, client, &traffic.bytes_out, shard.config.relay_batch).await?;
            }
            Role::Publish => handover.reframe_until_closed(upstream, client, rest, &traffic.bytes_out).await?,
        }
        Ok(End::OriginClosed)
    };
    let result = future::or(up, down).await;
    if let Err(SessionError::Limit(refusal)) = &result {
        // The origin's side is dropped: nothing else writes to the publisher now.
        refuse(client, Role::Publish, identify::CHUNK_SIZE, &refusal.to_string()).await;
    }
    result
}

/// Passes the origin's stream on until it confirms `role` (within [`CONFIRM_TIMEOUT`]); returns
/// the handover and the origin's bytes read past the confirmation, not decoded yet.
async fn confirm(
    shard: &Shard,
    origin: &TcpStream,
    client: &TcpStream,
    first: Vec<u8>,
    role: Role,
    told: identify::Told,
    traffic: &Traffic,
) -> Result<(Handover, Vec<u8>), SessionError> {
    let mut handover = Handover::for_role(role, told).map_err(UpstreamError::Chunk)?;
    let confirmed = within(CONFIRM_TIMEOUT, upstream::confirm(origin, client, first, role, &mut handover)).await;
    let forwarded = match confirmed {
        Some(Ok(forwarded)) => forwarded,
        Some(Err(e)) => {
            let refused = matches!(e, UpstreamError::Refused { .. });
            super::failed(shard, if refused { PickFailure::Refused } else { PickFailure::DialFailed });
            refuse_if_ours(client, role, &handover, &e).await;
            return Err(e.into());
        }
        None => {
            super::failed(shard, PickFailure::DialFailed);
            let reason = format!("origin did not confirm within {CONFIRM_TIMEOUT:?}");
            refuse(client, role, handover.client_chunk_size(), &reason).await;
            return Err(SessionError::ConfirmTimeout(CONFIRM_TIMEOUT));
        }
    };
    traffic.bytes_out.set(forwarded.sent);
    Ok((handover, forwarded.rest))
}

/// After a failed confirmation: the origin's own refusal status already reached the client;
/// for anything else (an `_error` answering a command the proxy had answered is left out) the
/// proxy says why.
async fn refuse_if_ours(client: &TcpStream, role: Role, handover: &Handover, e: &UpstreamError) {
    if !matches!(e, UpstreamError::Refused { relayed: true, .. }) {
        refuse(client, role, handover.client_chunk_size(), &e.to_string()).await;
    } else {
        let _ = client.shutdown(std::net::Shutdown::Write).await;
    }
}
