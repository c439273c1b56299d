//! SRT through the proxy, on the shards: one SO_REUSEPORT UDP socket per shard on
//! `--srt-server` (a caller's datagrams always hash to the same shard, its address being fixed).
//!
//! 1. INDUCTION: answered at once, statelessly, with a SYN cookie derived from the caller's
//!    address (so a CONCLUSION that echoes it proves the caller receives at that address).
//! 2. CONCLUSION with a valid cookie: the stream id (`#!::r=live/x,m=publish`, `h=`, or a plain
//!    `live/x`) names the stream; its origin is picked like any protocol's. A session is created
//!    and its origin handshake runs in its own task, never in the receive loop (the SRS proxy
//!    did it inline, without a timeout): INDUCTION to the origin as the caller's socket, then
//!    the caller's own CONCLUSION with the origin's cookie, each retransmitted every
//!    [`RETRANSMIT`] up to [`ORIGIN_HANDSHAKE_TIMEOUT`]. The origin's answer (acceptance or
//!    rejection) goes back to the caller verbatim.
//! 3. Then datagrams are relayed verbatim both ways; socket ids need no rewriting because the
//!    origin was introduced to the caller's own socket id. A retransmitted CONCLUSION gets the
//!    stored answer again; a SHUTDOWN from either side ends the session; so does
//!    `--udp-idle-timeout` without a datagram.
//!
//! Failures reach the caller as an SRT rejection (`srt_getrejectreason` shows 1400 for a bad
//! stream id, 1404 for no origin, 1402 when this shard is full) and a log line.
//! Bounds: at most [`MAX_SESSIONS`] sessions per shard; nothing is stored for an INDUCTION.
//!
//! Log lines: every warning a caller can cause (a refused handshake, an origin that fails) is
//! rate-limited per shard and per kind ([`Warning`]): at most [`WARNINGS_PER_INTERVAL`] per
//! [`WARNING_INTERVAL`], then one line "... and K more like it in the last S s"
//! ([`LogThrottle`]). Stream ids, keys and error texts from callers are cut to [`CLIP`]
//! characters with an ellipsis.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::UdpSocket;
use glommio::{Task, spawn_local};

use crate::balance::StreamKey;
use crate::balance::endpoint::first_udp;
use crate::balance::session::Protocol;
use crate::codec::srt::{self, Handshake};
use crate::control::bridge::Role;
use crate::control::stats::{Listener, PickFailure};
use crate::logging::clip;
use crate::logging::throttle::LogThrottle;
use crate::shard::Shard;
use crate::shard::counters::OpenGuard;
use crate::shard::traffic::Traffic;

/// Most SRT sessions one shard relays.
pub const MAX_SESSIONS: usize = 10_000;
/// How long an origin gets to complete its handshake. Under libsrt's default connect timeout
/// (`SRTO_CONNTIMEO`, 3 s from the caller's first INDUCTION), with room for the caller's round
/// trip, so that a caller of a silent origin reads the 1404 rejection instead of timing out.
pub const ORIGIN_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Retransmission interval of the handshake packets sent to an origin.
pub const RETRANSMIT: Duration = Duration::from_millis(250);
/// Largest datagram relayed.
const DATAGRAM: usize = 65_536;
/// SYN cookies change every minute; the previous minute's still count.
const COOKIE_SLOT: Duration = Duration::from_secs(60);
/// Most warnings of one [`Warning`] kind a shard writes per [`WARNING_INTERVAL`].
pub const WARNINGS_PER_INTERVAL: u32 = 5;
/// The window of [`WARNINGS_PER_INTERVAL`].
pub const WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// Most characters of a caller's stream id, stream key or error text in one log line.
pub const CLIP: usize = 128;

/// The warnings callers can cause, each rate-limited on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning {
    BadStreamId,
    ShardFull,
    NoOrigin,
    NoEndpoint,
    NoSocket,
    OriginUnreachable,
    OriginHandshake,
    OriginTimeout,
    OriginRejected,
    Receive,
}

impl Warning {
    /// What the summary line says the suppressed lines were.
    fn what(self) -> &'static str {
        match self {
            Warning::BadStreamId => "srt caller refused (bad stream id)",
            Warning::ShardFull => "srt caller refused (sessions full on this shard)",
            Warning::NoOrigin => "srt caller refused (no origin)",
            Warning::NoEndpoint => "srt caller refused (origin without an srt endpoint)",
            Warning::NoSocket => "srt: cannot open a socket to an origin",
            Warning::OriginUnreachable => "srt: origin unreachable",
            Warning::OriginHandshake => "srt: origin handshake failed",
            Warning::OriginTimeout => "srt: origin handshake timed out",
            Warning::OriginRejected => "srt: origin rejected the stream",
            Warning::Receive => "srt udp receive failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Up,
}

struct Session {
    key: StreamKey,
    role: Role,
    origin_id: String,
    upstream: UdpSocket,
    state: Cell<State>,
    /// The origin's answer to the CONCLUSION, sent again when the caller retransmits it.
    answer: RefCell<Vec<u8>>,
    last_seen: Cell<Instant>,
    traffic: Rc<Traffic>,
    task: RefCell<Option<Task<()>>>,
    /// Counts the session open on the shard while it exists.
    _open: OpenGuard,
}

struct Srt {
    shard: Rc<Shard>,
    socket: Rc<UdpSocket>,
    sessions: RefCell<HashMap<SocketAddr, Rc<Session>>>,
    secret: [u8; 32],
    started: Instant,
    warnings: RefCell<LogThrottle<Warning>>,
}

impl Srt {
    fn timestamp(&self) -> u32 {
        self.started.elapsed().as_micros() as u32 // wraps, as SRT timestamps do
    }

    fn slot(&self) -> u64 {
        self.started.elapsed().as_secs() / COOKIE_SLOT.as_secs()
    }

    /// Tells the shard's table counters (`GET /api/v1/shards`) the current size.
    fn note_sizes(&self) {
        let sessions = self.sessions.borrow().len();
        self.shard.udp.update(|t| t.srt_sessions = sessions);
    }

    /// Whether a warning of `kind` may be written now; writes the summary of the kind's
    /// previous window first when one is due.
    fn may_warn(&self, kind: Warning) -> bool {
        let admit = self.warnings.borrow_mut().admit(kind, Instant::now());
        if let Some(summary) = admit.summary {
            log::warn!("{}: ... {}", kind.what(), summary.tail());
        }
        admit.write
    }

    /// Writes the summaries of the warning windows that are over.
    fn flush_warnings(&self) {
        self.warnings
            .borrow_mut()
            .flush(Instant::now(), |summary| log::warn!("{}: ... {}", summary.kind.what(), summary.tail()));
    }

    async fn send(&self, packet: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.send_to(packet, to).await {
            log::debug!("srt: send to {to}: {e}");
        }
    }
}

/// Binds this shard's SRT UDP socket.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(addr).map_err(std::io::Error::from)
}

/// Relays until `stop` resolves.
pub async fn serve(shard: Rc<Shard>, socket: UdpSocket, stop: impl Future<Output = ()>) {
    let mut secret = [0u8; 32];
    crate::util::fill_random(&mut secret);
    let srt = Rc::new(Srt {
        shard,
        socket: Rc::new(socket),
        sessions: RefCell::default(),
        secret,
        started: Instant::now(),
        warnings: RefCell::new(LogThrottle::new(WARNINGS_PER_INTERVAL, WARNING_INTERVAL)),
    });
    let sweeper = spawn_local(sweep(srt.clone()));
    let receive = async {
        let mut buf = vec![0u8; DATAGRAM];
        loop {
            match srt.socket.recv_from(&mut buf).await {
                Ok((n, from)) => on_datagram(&srt, &buf[..n], from).await,
                Err(e) => {
                    if srt.may_warn(Warning::Receive) {
                        log::warn!("srt udp receive failed: {e}");
                    }
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    };
    future::or(receive, stop).await;
    drop(sweeper);
    let sessions: Vec<(SocketAddr, Rc<Session>)> = srt.sessions.borrow_mut().drain().collect();
    for (peer, session) in sessions {
        close(&srt, peer, &session, "the proxy is stopping").await;
    }
}

async fn on_datagram(srt: &Rc<Srt>, data: &[u8], from: SocketAddr) {
    let known = srt.sessions.borrow().get(&from).cloned();
    let handshake = (srt::control_type(data) == Some(srt::CONTROL_HANDSHAKE)).then(|| Handshake::parse(data).ok());
    if let Some(session) = known {
        session.last_seen.set(Instant::now());
        if let Some(Some((_, hs))) = &handshake {
            if hs.handshake_type == srt::HS_CONCLUSION && session.state.get() == State::Up {
                let answer = session.answer.borrow().clone();
                srt.send(&answer, from).await; // our answer was lost: the caller asks again
            } else if hs.handshake_type == srt::HS_INDUCTION {
                induction(srt, hs, from).await;
            }
            return;
        }
        if session.state.get() == State::Up && session.upstream.send(data).await.is_ok() {
            let t = &session.traffic.bytes_in;
            t.set(t.get() + data.len() as u64);
        }
        if srt::control_type(data) == Some(srt::CONTROL_SHUTDOWN) {
            remove(srt, from, &session, "the caller shut down").await;
        }
        return;
    }
    let Some(Some((_, hs))) = handshake else {
        return; // not a handshake from an unknown address: dropped without a reply
    };
    match hs.handshake_type {
        srt::HS_INDUCTION => induction(srt, &hs, from).await,
        srt::HS_CONCLUSION => conclusion(srt, hs, from).await,
        _ => {}
    }
}

async fn induction(srt: &Srt, hs: &Handshake, from: SocketAddr) {
    let cookie = srt::syn_cookie(&srt.secret, from, srt.slot());
    let reply = srt::induction_response(hs, cookie).encode(srt.timestamp(), hs.socket_id);
    srt.send(&reply, from).await;
}

async fn reject(srt: &Srt, hs: &Handshake, from: SocketAddr, reason: i32) {
    let packet = srt::rejection(hs, reason).encode(srt.timestamp(), hs.socket_id);
    srt.send(&packet, from).await;
}

async fn conclusion(srt: &Rc<Srt>, hs: Handshake, from: SocketAddr) {
    if !srt::cookie_is_valid(&srt.secret, from, srt.slot(), hs.syn_cookie) {
        return log::debug!("srt: CONCLUSION from {from} with a wrong cookie dropped");
    }
    let sid = srt::stream_id(&hs).unwrap_or_default();
    let parsed = srt::parse_stream_id(&sid).map_err(|e| e.to_string());
    let key = parsed.and_then(|id| Ok((StreamKey::from_url(&id.stream_url()).map_err(|e| e.to_string())?, id)));
    let (key, id) = match key {
        Ok(found) => found,
        Err(e) => {
            if srt.may_warn(Warning::BadStreamId) {
                log::warn!(
                    "srt caller {from} refused: stream id {:?} ({} bytes): {}",
                    clip(&sid, CLIP),
                    sid.len(),
                    clip(&e, CLIP)
                );
            }
            return reject(srt, &hs, from, srt::REJX_BAD_REQUEST).await;
        }
    };
    let role = if id.is_publish() { Role::Publish } else { Role::Play };
    let short = clip(key.as_str(), CLIP);
    if srt.sessions.borrow().len() >= MAX_SESSIONS {
        if srt.may_warn(Warning::ShardFull) {
            log::warn!("srt {} {short} from {from} refused: {MAX_SESSIONS} sessions on this shard", role.name());
        }
        return reject(srt, &hs, from, srt::REJX_OVERLOAD).await;
    }
    let origin = match super::pick(&srt.shard, &key).await {
        Ok(origin) => origin,
        Err(reason) => {
            if srt.may_warn(Warning::NoOrigin) {
                log::warn!("srt {} {short} from {from} refused: {}", role.name(), clip(&reason, CLIP));
            }
            return reject(srt, &hs, from, srt::REJX_NOT_FOUND).await;
        }
    };
    let reg = &origin.registration;
    let Some(endpoint) = first_udp(&reg.srt) else {
        crate::proxy::failed(&srt.shard, PickFailure::NoEndpoint);
        if srt.may_warn(Warning::NoEndpoint) {
            log::warn!("srt {} {short} from {from} refused: origin {} has no srt endpoint", role.name(), origin.id);
        }
        return reject(srt, &hs, from, srt::REJX_NOT_FOUND).await;
    };
    let target = SocketAddr::new(reg.ip, endpoint.port);
    let any: SocketAddr =
        if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let upstream = match UdpSocket::bind(any) {
        Ok(s) => s,
        Err(e) => {
            if srt.may_warn(Warning::NoSocket) {
                log::warn!("srt {short}: cannot open a socket to its origin: {e}");
            }
            return;
        }
    };
    if srt.sessions.borrow().contains_key(&from) {
        return; // a retransmitted CONCLUSION raced this one: its session is already connecting
    }
    let session = Rc::new(Session {
        traffic: srt.shard.traffic.register(&key, Protocol::Srt),
        key,
        role,
        origin_id: origin.id.0.clone(),
        upstream,
        state: Cell::new(State::Connecting),
        answer: RefCell::default(),
        last_seen: Cell::new(Instant::now()),
        task: RefCell::new(None),
        _open: srt.shard.counters.accepted(Listener::SrtUdp),
    });
    srt.sessions.borrow_mut().insert(from, session.clone());
    srt.note_sizes();
    let task = spawn_local(connect_origin(srt.clone(), session.clone(), hs, from, target));
    *session.task.borrow_mut() = Some(task);
}

/// The origin handshake, then the origin -> caller relay.
async fn connect_origin(srt: Rc<Srt>, session: Rc<Session>, hs: Handshake, from: SocketAddr, target: SocketAddr) {
    let role = session.role.name();
    let key = session.key.clone();
    let short = clip(key.as_str(), CLIP);
    if let Err(e) = session.upstream.connect(target).await {
        crate::proxy::failed(&srt.shard, PickFailure::DialFailed);
        if srt.may_warn(Warning::OriginUnreachable) {
            log::warn!("srt {role} {short} from {from}: cannot reach origin {} at {target}: {e}", session.origin_id);
        }
        reject(&srt, &hs, from, srt::REJX_NOT_FOUND).await;
        return remove_later(&srt, from, &session, "origin unreachable").await;
    }
    let mut buf = vec![0u8; DATAGRAM];
    let answered = future::or(async { Some(origin_handshake(&srt, &session, &hs, &mut buf).await) }, async {
        glommio::timer::sleep(ORIGIN_HANDSHAKE_TIMEOUT).await;
        None
    })
    .await;
    let answer = match answered {
        Some(Ok(answer)) => answer,
        Some(Err(e)) => {
            crate::proxy::failed(&srt.shard, PickFailure::DialFailed);
            if srt.may_warn(Warning::OriginHandshake) {
                log::warn!(
                    "srt {role} {short} from {from}: origin {} handshake: {}",
                    session.origin_id,
                    clip(&e, CLIP)
                );
            }
            reject(&srt, &hs, from, srt::REJX_NOT_FOUND).await;
            return remove_later(&srt, from, &session, "origin handshake failed").await;
        }
        None => {
            crate::proxy::failed(&srt.shard, PickFailure::DialFailed);
            if srt.may_warn(Warning::OriginTimeout) {
                log::warn!(
                    "srt {role} {short} from {from}: origin {} did not complete the handshake within {ORIGIN_HANDSHAKE_TIMEOUT:?}",
                    session.origin_id
                );
            }
            reject(&srt, &hs, from, srt::REJX_NOT_FOUND).await;
            return remove_later(&srt, from, &session, "origin handshake timed out").await;
        }
    };
    let accepted = Handshake::parse(&answer).map(|(_, h)| h.handshake_type == srt::HS_CONCLUSION).unwrap_or(false);
    srt.send(&answer, from).await;
    if !accepted {
        crate::proxy::failed(&srt.shard, PickFailure::Refused);
        if srt.may_warn(Warning::OriginRejected) {
            log::warn!("srt {role} {short} from {from}: origin {} rejected the stream", session.origin_id);
        }
        return remove_later(&srt, from, &session, "origin rejected").await;
    }
    *session.answer.borrow_mut() = answer;
    session.state.set(State::Up);
    srt.shard.link.session(&key, Protocol::Srt, session.role, true).await;
    log::info!("srt {role} {short} from {from} via origin {} ({target}): connected", session.origin_id);
    loop {
        let Ok(n) = session.upstream.recv(&mut buf).await else {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            continue;
        };
        session.last_seen.set(Instant::now());
        srt.send(&buf[..n], from).await;
        let t = &session.traffic.bytes_out;
        t.set(t.get() + n as u64);
        if srt::control_type(&buf[..n]) == Some(srt::CONTROL_SHUTDOWN) {
            return remove_later(&srt, from, &session, "the origin shut down").await;
        }
    }
}

/// INDUCTION then CONCLUSION with the origin, retransmitting; returns the origin's answer to
/// the CONCLUSION (acceptance or rejection), as sent.
async fn origin_handshake(srt: &Srt, session: &Session, hs: &Handshake, buf: &mut [u8]) -> Result<Vec<u8>, String> {
    let ip = session.upstream.peer_addr().map(|a| a.ip()).map_err(|e| e.to_string())?;
    let induction = Handshake {
        version: 4,
        encryption_field: 0,
        extension_field: srt::UDT_DGRAM,
        handshake_type: srt::HS_INDUCTION,
        syn_cookie: 0,
        peer_ip: srt::encode_peer_ip(ip),
        extensions: Vec::new(),
        ..hs.clone()
    };
    let reply = exchange(srt, session, &induction, buf, srt::HS_INDUCTION).await?;
    let conclusion = Handshake { syn_cookie: reply.1.syn_cookie, peer_ip: srt::encode_peer_ip(ip), ..hs.clone() };
    let answer = exchange(srt, session, &conclusion, buf, srt::HS_CONCLUSION).await?;
    Ok(answer.0)
}

/// Sends `hs` every [`RETRANSMIT`] until the origin answers with a handshake of type `want` (or
/// a rejection); returns its bytes and parsed form.
async fn exchange(
    srt: &Srt,
    session: &Session,
    hs: &Handshake,
    buf: &mut [u8],
    want: i32,
) -> Result<(Vec<u8>, Handshake), String> {
    let packet = hs.encode(srt.timestamp(), 0);
    loop {
        session.upstream.send(&packet).await.map_err(|e| e.to_string())?;
        let got = future::or(async { Some(session.upstream.recv(buf).await) }, async {
            glommio::timer::sleep(RETRANSMIT).await;
            None
        })
        .await;
        let n = match got {
            None => continue,
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(e.to_string()),
        };
        let Ok((_, answer)) = Handshake::parse(&buf[..n]) else {
            continue;
        };
        if answer.handshake_type == want || answer.rejection_reason().is_some() {
            if want == srt::HS_INDUCTION && answer.rejection_reason().is_some() {
                return Err(format!("rejected at induction ({:?})", answer.rejection_reason()));
            }
            return Ok((buf[..n].to_vec(), answer));
        }
    }
}

/// Drops idle sessions once a second.
async fn sweep(srt: Rc<Srt>) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        srt.flush_warnings();
        let idle = srt.shard.config.udp_idle_timeout;
        let now = Instant::now();
        let expired: Vec<(SocketAddr, Rc<Session>)> = srt
            .sessions
            .borrow()
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_seen.get()) >= idle.max(ORIGIN_HANDSHAKE_TIMEOUT))
            .map(|(a, s)| (*a, s.clone()))
            .collect();
        for (peer, session) in expired {
            remove(&srt, peer, &session, &format!("no datagram for {idle:?}")).await;
        }
    }
}

async fn remove(srt: &Srt, peer: SocketAddr, session: &Rc<Session>, why: &str) {
    let same = srt.sessions.borrow().get(&peer).is_some_and(|s| Rc::ptr_eq(s, session));
    if same {
        srt.sessions.borrow_mut().remove(&peer);
        srt.note_sizes();
        close(srt, peer, session, why).await;
    }
}

/// [`remove`] from inside the session's own task: the task handle is taken out first so that
/// dropping the session does not cancel the task that is running this.
async fn remove_later(srt: &Srt, peer: SocketAddr, session: &Rc<Session>, why: &str) {
    if let Some(task) = session.task.borrow_mut().take() {
        drop(task.detach());
    }
    remove(srt, peer, session, why).await;
}

async fn close(srt: &Srt, peer: SocketAddr, session: &Session, why: &str) {
    drop(session.task.borrow_mut().take());
    if session.state.get() == State::Up {
        srt.shard.link.session(&session.key, Protocol::Srt, session.role, false).await;
    }
    log::info!(
        "srt {} {} from {peer} via origin {} ended: {why}; {} bytes in, {} bytes out",
        session.role.name(),
        clip(session.key.as_str(), CLIP),
        session.origin_id,
        session.traffic.bytes_in.get(),
        session.traffic.bytes_out.get()
    );
}
