//! SRT through the proxy, on the shards: one SO_REUSEPORT UDP socket per shard on
//! `--srt-server` (a caller's datagrams always hash to the same shard, its address being fixed).
//!
//! 1. INDUCTION: answered at once, statelessly, with a SYN cookie derived from the caller's
//!    address (so a CONCLUSION that echoes it proves the caller receives at that address).
//! 2. CONCLUSION with a valid cookie: the stream id (`#!::r=live/x,m=publish`, `h=`, or a plain
//!    `live/x`) names the stream; its origin is picked like any protocol's. A session is created
//!    and its origin handshake runs in its own task, never in the receive loop (a silent origin
//!    must not stall other callers): first access ([`super::access`]: signed URL in the
//!    stream id's query, `srt::stream_query`, sessions per stream, on_publish/on_play; refused: rejection 1401, or
//!    1402 when the stream is full), then INDUCTION to the origin as the caller's socket, then
//!    the caller's own CONCLUSION with the origin's cookie, each retransmitted every
//!    [`RETRANSMIT`] up to [`ORIGIN_HANDSHAKE_TIMEOUT`]. The origin's answer (acceptance or
//!    rejection) goes back to the caller verbatim.
//! 3. Then datagrams are relayed verbatim both ways; socket ids need no rewriting because the
//!    origin was introduced to the caller's own socket id. A retransmitted CONCLUSION gets the
//!    stored answer again; a SHUTDOWN from either side ends the session; so does
//!    `--udp-idle-timeout` without a datagram.
//!
//! A publisher of a local stream (`--local-origin`, no origin to take it) is relayed the same
//! way to its ingest on loopback ([`super::local::srt`]), which makes it an RTMP publisher of
//! streamgate's own; a second publisher of a live local stream gets 1409 (SRT_REJX_CONFLICT).
//! A player of a live local stream is relayed to a player job on loopback the same way.
//!
//! Failures reach the caller as an SRT rejection (`srt_getrejectreason` shows 1400 for a bad
//! stream id, 1404 for no origin, 1402 when this shard is full) and a log line.
//! Bounds: at most `--srt-max-sessions` (10,000) sessions per shard; nothing is stored for an INDUCTION.
//!
//! The socket, the session table, the relaying, idle expiry and closing are the shard's UDP
//! session table ([`crate::shard::udp`]); this module is SRT's part of it. Every warning a
//! caller can cause (a refused handshake, an origin that fails) goes through the table's
//! throttle ([`Table::warn`]), one kind per [`Warning`]; stream ids, keys and error texts from
//! callers are cut to [`CLIP`] characters with an ellipsis.

use std::cell::{Cell, RefCell};
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::balance::StreamKey;
use crate::balance::endpoint::first_udp;
use crate::balance::session::Protocol as SessionProtocol;
use crate::bridge::Role;
use crate::bridge::report::LOCAL_ORIGIN;
use crate::bridge::{Listener, PickFailure};
use crate::codec::srt::{self, Handshake};
use crate::logging::clip;
use crate::proxy::local::srt::SrtLocal;
use crate::shard::Shard;
use crate::shard::udp::{self, CLIP, NewSession, Protocol, Table, Verdict};
use crate::util::oneshot;

/// How long an origin gets to complete its handshake. Under libsrt's default connect timeout
/// (`SRTO_CONNTIMEO`, 3 s from the caller's first INDUCTION), with room for the caller's round
/// trip, so that a caller of a silent origin reads the 1404 rejection instead of timing out.
pub const ORIGIN_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Retransmission interval of the handshake packets sent to an origin.
pub const RETRANSMIT: Duration = Duration::from_millis(250);
/// How long a local stream's job gets to bind its SRT listener and say where (it takes a few
/// milliseconds: a thread, libsrt's socket and bind).
const JOB_LISTEN_WAIT: Duration = Duration::from_secs(1);
/// SYN cookies change every minute; the previous minute's still count.
const COOKIE_SLOT: Duration = Duration::from_secs(60);

/// The warnings callers can cause, each rate-limited on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning {
    BadStreamId,
    Busy,
    ShardFull,
    NoOrigin,
    NoEndpoint,
    OriginUnreachable,
    OriginHandshake,
    OriginTimeout,
    OriginRejected,
}

impl Warning {
    /// The kind's name in the throttle, and what its summary line says the lines were.
    fn what(self) -> &'static str {
        match self {
            Warning::BadStreamId => "srt caller refused (bad stream id)",
            Warning::Busy => "srt publisher refused (stream already published)",
            Warning::ShardFull => "srt caller refused (sessions full on this shard)",
            Warning::NoOrigin => "srt caller refused (no origin)",
            Warning::NoEndpoint => "srt caller refused (origin without an srt endpoint)",
            Warning::OriginUnreachable => "srt: origin unreachable",
            Warning::OriginHandshake => "srt: origin handshake failed",
            Warning::OriginTimeout => "srt: origin handshake timed out",
            Warning::OriginRejected => "srt: origin rejected the stream",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Up,
}

/// SRT's part of a session.
pub struct State {
    phase: Cell<Phase>,
    /// The origin's answer to the CONCLUSION, sent again when the caller retransmits it.
    answer: RefCell<Vec<u8>>,
    /// A local stream's job that has yet to say where it listens: the session's task connects
    /// the upstream socket there before the handshake.
    job: RefCell<Option<oneshot::Receiver<u16>>>,
}

/// Where a session's datagrams go.
enum Upstream {
    Origin(SocketAddr),
    /// A local stream's job, once it tells its port.
    Job(oneshot::Receiver<u16>),
}

type Session = udp::Session<State>;

/// SRT on one shard: the SYN-cookie secret and the clock of its handshake timestamps.
pub struct Srt {
    secret: [u8; 32],
    started: Instant,
}

impl Srt {
    fn timestamp(&self) -> u32 {
        self.started.elapsed().as_micros() as u32 // wraps, as SRT timestamps do
    }

    fn slot(&self) -> u64 {
        self.started.elapsed().as_secs() / COOKIE_SLOT.as_secs()
    }
}

fn warn(table: &Table<Srt>, kind: Warning, line: impl FnOnce() -> String) {
    table.warn(kind.what(), line);
}

impl Protocol for Srt {
    type State = State;
    const NAME: &'static str = "srt";
    const LISTENER: Listener = Listener::SrtUdp;
    const SESSION: SessionProtocol = SessionProtocol::Srt;
    fn max_sessions(config: &crate::config::Config) -> usize {
        config.access.srt_max_sessions
    }
    const MAX_ADDRESSES: usize = 1;
    const RECEIVE_FAILED: &'static str = "srt udp receive failed";

    async fn unknown(table: &Rc<Table<Srt>>, data: &[u8], from: SocketAddr) {
        let Some(hs) = handshake(data) else {
            return; // not a handshake from an unknown address: dropped without a reply
        };
        match hs.handshake_type {
            srt::HS_INDUCTION => induction(table, &hs, from).await,
            srt::HS_CONCLUSION => conclusion(table, hs, from).await,
            _ => {}
        }
    }

    async fn from_client(table: &Rc<Table<Srt>>, session: &Rc<Session>, data: &[u8], from: SocketAddr) -> Verdict {
        session.last_seen.set(Instant::now());
        if let Some(hs) = handshake(data) {
            if hs.handshake_type == srt::HS_CONCLUSION && session.state.phase.get() == Phase::Up {
                let answer = session.state.answer.borrow().clone();
                table.send(&answer, from).await; // our answer was lost: the caller asks again
            } else if hs.handshake_type == srt::HS_INDUCTION {
                induction(table, &hs, from).await;
            }
            return Verdict::Done;
        }
        match (session.state.phase.get(), srt::control_type(data) == Some(srt::CONTROL_SHUTDOWN)) {
            (Phase::Up, false) => Verdict::Forward,
            (Phase::Up, true) => Verdict::ForwardThenClose("the caller shut down"),
            (Phase::Connecting, false) => Verdict::Done,
            (Phase::Connecting, true) => {
                table.close(session, "the caller shut down").await;
                Verdict::Done
            }
        }
    }

    fn from_origin(
        _: &Rc<Table<Srt>>,
        session: &Rc<Session>,
        data: &[u8],
    ) -> (Option<SocketAddr>, Option<&'static str>) {
        let end = (srt::control_type(data) == Some(srt::CONTROL_SHUTDOWN)).then_some("the origin shut down");
        (Some(session.client.get()), end)
    }

    /// Connecting sessions get at least the origin handshake's time.
    fn idle_timeout(table: &Table<Srt>) -> Duration {
        table.shard.config.udp_idle_timeout.max(ORIGIN_HANDSHAKE_TIMEOUT)
    }

    fn note_sizes(table: &Table<Srt>) {
        let sessions = table.len();
        table.shard.udp.update(|t| t.srt_sessions = sessions);
    }
}

/// The parsed handshake, if `data` is a well-formed one.
fn handshake(data: &[u8]) -> Option<Handshake> {
    (srt::control_type(data) == Some(srt::CONTROL_HANDSHAKE)).then(|| Handshake::parse(data).ok().map(|(_, hs)| hs))?
}

/// Relays until `stop` resolves.
pub async fn serve(shard: Rc<Shard>, socket: glommio::net::UdpSocket, stop: impl Future<Output = ()>) {
    let mut secret = [0u8; 32];
    crate::util::fill_random(&mut secret);
    let table = Table::new(shard, socket, Srt { secret, started: Instant::now() });
    udp::serve(table, stop).await;
}

async fn induction(table: &Table<Srt>, hs: &Handshake, from: SocketAddr) {
    let cookie = srt::syn_cookie(&table.proto.secret, from, table.proto.slot());
    let reply = srt::induction_response(hs, cookie).encode(table.proto.timestamp(), hs.socket_id);
    table.send(&reply, from).await;
}

async fn reject(table: &Table<Srt>, hs: &Handshake, from: SocketAddr, reason: i32) {
    let packet = srt::rejection(hs, reason).encode(table.proto.timestamp(), hs.socket_id);
    table.send(&packet, from).await;
}

/// The stream key and role a CONCLUSION's stream id names.
fn stream_of(hs: &Handshake) -> Result<(StreamKey, Role), (String, String)> {
    let sid = srt::stream_id(hs).unwrap_or_default();
    let parsed = srt::parse_stream_id(&sid).map_err(|e| (sid.clone(), e.to_string()))?;
    let key = StreamKey::from_url(&parsed.stream_url()).map_err(|e| (sid.clone(), e.to_string()))?;
    Ok((key, if parsed.is_publish() { Role::Publish } else { Role::Play }))
}

/// The stream id's query, without `?` ([`srt::stream_query`]: the resource's,
/// `r=live/cam?token=..&expires=..`, and SRS's extra items, `r=live/cam,token=..,expires=..`).
fn stream_param(hs: &Handshake) -> String {
    srt::stream_query(&srt::stream_id(hs).unwrap_or_default())
}

async fn conclusion(table: &Rc<Table<Srt>>, hs: Handshake, from: SocketAddr) {
    let proto = &table.proto;
    if !srt::cookie_is_valid(&proto.secret, from, proto.slot(), hs.syn_cookie) {
        return log::debug!("srt: CONCLUSION from {from} with a wrong cookie dropped");
    }
    let (key, role) = match stream_of(&hs) {
        Ok(found) => found,
        Err((sid, e)) => {
            warn(table, Warning::BadStreamId, || {
                format!(
                    "srt caller {from} refused: stream id {:?} ({} bytes): {}",
                    clip(&sid, CLIP),
                    sid.len(),
                    clip(&e, CLIP)
                )
            });
            return reject(table, &hs, from, srt::REJX_BAD_REQUEST).await;
        }
    };
    let short = clip(key.as_str(), CLIP);
    if table.full() {
        warn(table, Warning::ShardFull, || {
            format!(
                "srt {} {short} from {from} refused: {} sessions on this shard (--srt-max-sessions)",
                role.name(),
                table.shard.config.access.srt_max_sessions
            )
        });
        return reject(table, &hs, from, srt::REJX_OVERLOAD).await;
    }
    let Ok(per_ip) = table.ip_slot(from, || format!("{} {short}", role.name())) else {
        return reject(table, &hs, from, srt::REJX_OVERLOAD).await;
    };
    let local = match role {
        Role::Publish => super::local::srt::publish(&table.shard, &key),
        Role::Play => super::local::srt::play(&table.shard, &key, from),
    };
    let (target, origin_id) = match local {
        SrtLocal::Busy => {
            warn(table, Warning::Busy, || {
                format!("srt publish {short} from {from} refused: the stream is already published here (local)")
            });
            return reject(table, &hs, from, srt::REJX_CONFLICT).await;
        }
        SrtLocal::Refused(why) => {
            warn(table, Warning::NoOrigin, || format!("srt {} {short} from {from} refused: {why}", role.name()));
            return reject(table, &hs, from, srt::REJX_NOT_FOUND).await;
        }
        SrtLocal::Relay(told) => (Upstream::Job(told), LOCAL_ORIGIN.to_string()),
        SrtLocal::ToOrigin => {
            let origin = match super::pick(&table.shard, &key).await {
                Ok(origin) => origin,
                Err(reason) => {
                    warn(table, Warning::NoOrigin, || {
                        format!("srt {} {short} from {from} refused: {}", role.name(), clip(&reason.to_string(), CLIP))
                    });
                    return reject(table, &hs, from, srt::REJX_NOT_FOUND).await;
                }
            };
            let reg = &origin.registration;
            let Some(endpoint) = first_udp(&reg.srt) else {
                super::failed(&table.shard, PickFailure::NoEndpoint);
                warn(table, Warning::NoEndpoint, || {
                    format!("srt {} {short} from {from} refused: origin {} has no srt endpoint", role.name(), origin.id)
                });
                return reject(table, &hs, from, srt::REJX_NOT_FOUND).await;
            };
            (Upstream::Origin(SocketAddr::new(reg.ip, endpoint.port)), origin.id.0.clone())
        }
    };
    // A job's socket is connected in the session's task, once the job says where it listens.
    let (dialled, job, target) = match target {
        Upstream::Origin(addr) => (Table::<Srt>::dial(addr).await, None, addr),
        Upstream::Job(told) => {
            let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            (udp::bind(loopback), Some(told), loopback)
        }
    };
    let upstream = match dialled {
        Ok(s) => s,
        Err(e) => {
            super::failed(&table.shard, PickFailure::DialFailed);
            warn(table, Warning::OriginUnreachable, || {
                format!("srt {} {short} from {from}: cannot reach origin {origin_id} at {target}: {e}", role.name())
            });
            return reject(table, &hs, from, srt::REJX_NOT_FOUND).await;
        }
    };
    if table.session_of(from).is_some() {
        return; // a retransmitted CONCLUSION raced this one: its session is already connecting
    }
    let state = State { phase: Cell::new(Phase::Connecting), answer: RefCell::default(), job: RefCell::new(job) };
    let new = NewSession { key, role, origin_id, upstream, state, per_ip };
    let Some(session) = table.insert(new, from) else {
        return reject(table, &hs, from, srt::REJX_OVERLOAD).await;
    };
    table.start(&session, connect_origin(table.clone(), session.clone(), hs, from));
}

/// The origin handshake, then the origin -> caller relay.
async fn connect_origin(table: Rc<Table<Srt>>, session: Rc<Session>, hs: Handshake, from: SocketAddr) {
    let role = session.role.name();
    let short = clip(session.key.as_str(), CLIP);
    let failed = |kind: Warning, why: String| {
        super::failed(
            &table.shard,
            if kind == Warning::OriginRejected { PickFailure::Refused } else { PickFailure::DialFailed },
        );
        warn(&table, kind, || format!("srt {role} {short} from {from}: origin {} {why}", session.origin_id));
    };
    let param = stream_param(&hs);
    let ask = super::access::Ask {
        protocol: crate::bridge::Protocol::Srt,
        role: session.role,
        key: &session.key,
        param: &param,
        peer: from,
        tc_url: None,
    };
    let _admitted = match super::access::admit(&table.shard, &ask).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            reject(&table, &hs, from, refusal.srt_reason()).await;
            return table.close_from_task(&session, "access refused").await;
        }
    };
    let job = session.state.job.borrow_mut().take();
    if let Some(told) = job {
        if let Err(why) = connect_job(&session, told).await {
            failed(Warning::OriginUnreachable, why);
            reject(&table, &hs, from, srt::REJX_NOT_FOUND).await;
            return table.close_from_task(&session, "its local job is not listening").await;
        }
        log::info!("srt {role} {short} from {from}: served locally (local origin) through a job on {}", peer(&session));
    }
    let mut buf = vec![0u8; udp::DATAGRAM];
    let answered =
        crate::shard::within(ORIGIN_HANDSHAKE_TIMEOUT, origin_handshake(&table, &session, &hs, &mut buf)).await;
    let answer = match answered {
        Some(Ok(answer)) => answer,
        Some(Err(e)) => {
            failed(Warning::OriginHandshake, format!("handshake: {e}"));
            reject(&table, &hs, from, srt::REJX_NOT_FOUND).await;
            return table.close_from_task(&session, "origin handshake failed").await;
        }
        None => {
            failed(
                Warning::OriginTimeout,
                format!("did not complete the handshake within {ORIGIN_HANDSHAKE_TIMEOUT:?}"),
            );
            reject(&table, &hs, from, srt::REJX_NOT_FOUND).await;
            return table.close_from_task(&session, "origin handshake timed out").await;
        }
    };
    let accepted = Handshake::parse(&answer).map(|(_, h)| h.handshake_type == srt::HS_CONCLUSION).unwrap_or(false);
    table.send(&answer, from).await;
    if !accepted {
        failed(Warning::OriginRejected, "rejected the stream".to_string());
        return table.close_from_task(&session, "origin rejected").await;
    }
    *session.state.answer.borrow_mut() = answer;
    session.state.phase.set(Phase::Up);
    table.report_open(&session).await;
    log::info!("srt {role} {short} from {from} via origin {} ({}): connected", session.origin_id, peer(&session));
    table.relay_from_origin(&session).await;
}

/// The address the session's upstream socket is connected to, for logs.
fn peer(session: &Session) -> String {
    session.upstream.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string())
}

/// Connects the session's upstream socket to its local job's SRT listener, once the job says
/// which loopback port that is; why not, if it does not.
async fn connect_job(session: &Session, told: oneshot::Receiver<u16>) -> Result<(), String> {
    let port = match crate::shard::within(JOB_LISTEN_WAIT, told.recv()).await {
        Some(Some(port)) => port,
        Some(None) => return Err("(its job) could not listen on loopback".to_string()),
        None => return Err(format!("(its job) did not listen within {JOB_LISTEN_WAIT:?}")),
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    session.upstream.connect(addr).await.map_err(|e| format!("(its job) unreachable at {addr}: {e}"))
}

/// Why an origin's handshake failed.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("rejected at induction (reason {0})")]
    RejectedAtInduction(i32),
}

/// INDUCTION then CONCLUSION with the origin, retransmitting; returns the origin's answer to
/// the CONCLUSION (acceptance or rejection), as sent.
async fn origin_handshake(
    table: &Table<Srt>,
    session: &Session,
    hs: &Handshake,
    buf: &mut [u8],
) -> Result<Vec<u8>, HandshakeError> {
    let ip = session.upstream.peer_addr().map_err(std::io::Error::from)?.ip();
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
    let reply = exchange(table, session, &induction, buf, srt::HS_INDUCTION).await?;
    let conclusion = Handshake { syn_cookie: reply.1.syn_cookie, peer_ip: srt::encode_peer_ip(ip), ..hs.clone() };
    let answer = exchange(table, session, &conclusion, buf, srt::HS_CONCLUSION).await?;
    Ok(answer.0)
}

/// Sends `hs` every [`RETRANSMIT`] until the origin answers with a handshake of type `want` (or
/// a rejection); returns its bytes and parsed form.
async fn exchange(
    table: &Table<Srt>,
    session: &Session,
    hs: &Handshake,
    buf: &mut [u8],
    want: i32,
) -> Result<(Vec<u8>, Handshake), HandshakeError> {
    let packet = hs.encode(table.proto.timestamp(), 0);
    // A local stream's ingest may not listen yet: its port refusing the first datagrams
    // (ICMP port unreachable) only means retransmit, within the handshake's time.
    let starting = session.origin_id == LOCAL_ORIGIN;
    let refused = |e: &std::io::Error| starting && e.kind() == std::io::ErrorKind::ConnectionRefused;
    loop {
        if let Err(e) = session.upstream.send(&packet).await.map_err(std::io::Error::from) {
            if !refused(&e) {
                return Err(e.into());
            }
            glommio::timer::sleep(RETRANSMIT).await;
            continue;
        }
        let n = match crate::shard::within(RETRANSMIT, session.upstream.recv(buf)).await {
            None => continue,
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                let e = std::io::Error::from(e);
                if refused(&e) {
                    glommio::timer::sleep(RETRANSMIT / 5).await;
                    continue;
                }
                return Err(e.into());
            }
        };
        let Ok((_, answer)) = Handshake::parse(&buf[..n]) else {
            continue;
        };
        match answer.rejection_reason() {
            Some(reason) if want == srt::HS_INDUCTION => return Err(HandshakeError::RejectedAtInduction(reason)),
            Some(_) => return Ok((buf[..n].to_vec(), answer)),
            None if answer.handshake_type == want => return Ok((buf[..n].to_vec(), answer)),
            None => {}
        }
    }
}
