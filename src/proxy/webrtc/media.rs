//! WebRTC media on the shards: one SO_REUSEPORT UDP socket per shard on `--webrtc-server`,
//! relaying ICE, DTLS and SRTP datagrams between clients and their origins without looking
//! inside them (beyond the STUN USERNAME).
//!
//! - A datagram from a known client address goes to its session's origin socket.
//! - From an unknown address, only a well-formed STUN binding request is considered: its
//!   USERNAME (`answerUfrag:offerUfrag`) names the session, found in this shard's table or
//!   asked of the control thread (which signalling told). The request goes to the origin, and
//!   the address joins the session when the origin answers it with a Binding success (matched
//!   by transaction id): the origin has then checked the MESSAGE-INTEGRITY that only a holder
//!   of the ICE password can write, so a check spoofed with a known USERNAME gets the origin's
//!   error answer and nothing else. The newest joined address receives the origin's datagrams,
//!   so NAT rebinding and ICE restarts keep working. A rebinding the kernel hashes to another
//!   shard is served there with its own origin socket; the origin sees a new address with a
//!   valid STUN request, which ICE allows.
//! - Anything else from an unknown address is dropped without a reply.
//! - Each session has one connected UDP socket to its origin's WebRTC endpoint and one task
//!   reading it. A session with no datagram either way for `--udp-idle-timeout` is dropped.
//!
//! Bounds: at most [`MAX_SESSIONS`] sessions per shard, [`MAX_ADDRESSES`] client addresses and
//! [`MAX_PENDING`] checks awaiting the origin's answer per session, [`MAX_LOOKUPS`] control-thread lookups in flight (spoofed STUN floods are dropped
//! past it), and recently failed usernames remembered ([`MAX_UNKNOWN`]) so a repeated bogus one
//! costs no lookup.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::UdpSocket;
use glommio::{Task, spawn_local};

use crate::balance::StreamKey;
use crate::balance::endpoint::first_udp;
use crate::balance::session::Protocol;
use crate::codec::stun::{self, Kind, Message};
use crate::control::bridge::Role;
use crate::control::stats::{Listener, PickFailure};
use crate::shard::Shard;
use crate::shard::counters::OpenGuard;
use crate::shard::traffic::Traffic;

/// Most sessions one shard relays.
pub const MAX_SESSIONS: usize = 10_000;
/// Most client addresses one session keeps (the newest win).
pub const MAX_ADDRESSES: usize = 4;
/// Most checks from not yet joined addresses one session remembers until the origin answers
/// them (the oldest are forgotten: their answers then go to the current client, which ignores
/// them, and that address has to ask again).
pub const MAX_PENDING: usize = 8;
/// Most control-thread lookups one shard has in flight.
pub const MAX_LOOKUPS: usize = 64;
/// Most unknown usernames remembered, each for [`UNKNOWN_FOR`].
pub const MAX_UNKNOWN: usize = 4096;
const UNKNOWN_FOR: Duration = Duration::from_secs(5);
/// The STUN Binding method (RFC 8489 §18.2).
const BINDING: u16 = 0x001;
/// Largest datagram relayed (a UDP payload cannot be larger).
const DATAGRAM: usize = 65_536;

struct Session {
    username: String,
    key: StreamKey,
    role: Role,
    origin_id: String,
    upstream: UdpSocket,
    /// Where the origin's datagrams go: the address that sent the latest datagram.
    client: Cell<SocketAddr>,
    addresses: RefCell<VecDeque<SocketAddr>>,
    /// Binding requests from addresses that have not joined yet: transaction id, address.
    pending: RefCell<VecDeque<([u8; 12], SocketAddr)>>,
    last_seen: Cell<Instant>,
    traffic: Rc<Traffic>,
    reader: RefCell<Option<Task<()>>>,
    /// Counts the session open on the shard while it exists.
    _open: OpenGuard,
}

/// One shard's WebRTC media state.
pub struct Media {
    shard: Rc<Shard>,
    socket: Rc<UdpSocket>,
    by_addr: RefCell<HashMap<SocketAddr, Rc<Session>>>,
    by_user: RefCell<HashMap<String, Rc<Session>>>,
    lookups: RefCell<HashSet<String>>,
    unknown: RefCell<HashMap<String, Instant>>,
}

impl Media {
    /// Tells the shard's table counters (`GET /api/v1/shards`) the current sizes.
    fn note_sizes(&self) {
        let sessions = self.by_user.borrow().len();
        let addresses = self.by_addr.borrow().len();
        let lookups = self.lookups.borrow().len();
        let unknown = self.unknown.borrow().len();
        self.shard.udp.update(|t| {
            t.webrtc_sessions = sessions;
            t.webrtc_addresses = addresses;
            t.webrtc_lookups = lookups;
            t.webrtc_unknown = unknown;
        });
    }
}

/// Binds this shard's WebRTC UDP socket.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(addr).map_err(std::io::Error::from)
}

/// Relays until `stop` resolves.
pub async fn serve(shard: Rc<Shard>, socket: UdpSocket, stop: impl Future<Output = ()>) {
    let media = Rc::new(Media {
        shard,
        socket: Rc::new(socket),
        by_addr: RefCell::default(),
        by_user: RefCell::default(),
        lookups: RefCell::default(),
        unknown: RefCell::default(),
    });
    let sweeper = spawn_local(sweep(media.clone()));
    let receive = async {
        let mut buf = vec![0u8; DATAGRAM];
        loop {
            match media.socket.recv_from(&mut buf).await {
                Ok((n, from)) => on_datagram(&media, &buf[..n], from).await,
                Err(e) => {
                    log::warn!("webrtc udp receive failed: {e}");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    };
    futures_lite::future::or(receive, stop).await;
    drop(sweeper);
    let sessions: Vec<Rc<Session>> = media.by_user.borrow_mut().drain().map(|(_, s)| s).collect();
    media.by_addr.borrow_mut().clear();
    for session in sessions {
        close(&media, &session, "the proxy is stopping").await;
    }
}

async fn on_datagram(media: &Rc<Media>, data: &[u8], from: SocketAddr) {
    let known = media.by_addr.borrow().get(&from).cloned();
    if let Some(session) = known {
        return forward(&session, data, from).await;
    }
    if stun::classify(data) != Kind::Stun {
        return; // not ours to answer: unknown senders get nothing
    }
    let Ok(message) = Message::parse(data) else {
        return;
    };
    let Some(username) = message.username().filter(|_| message.is_binding_request()) else {
        return;
    };
    let found = media.by_user.borrow().get(username).cloned();
    if let Some(session) = found {
        return ask_origin(&session, message.transaction_id, data, from).await;
    }
    lookup(media, username, message.transaction_id, data, from);
}

/// Asks the control thread for an unknown username, in its own task so the receive loop goes
/// on; the datagram that asked is relayed once the session exists.
fn lookup(media: &Rc<Media>, username: &str, txid: [u8; 12], data: &[u8], from: SocketAddr) {
    let now = Instant::now();
    {
        let unknown = media.unknown.borrow();
        if unknown.get(username).is_some_and(|since| now.saturating_duration_since(*since) < UNKNOWN_FOR) {
            return;
        }
        let mut lookups = media.lookups.borrow_mut();
        if lookups.len() >= MAX_LOOKUPS || lookups.contains(username) {
            return;
        }
        lookups.insert(username.to_string());
    }
    media.note_sizes();
    let (media, username, data) = (media.clone(), username.to_string(), data.to_vec());
    spawn_local(async move {
        let found = media.shard.link.ice_resolve(&username).await;
        media.lookups.borrow_mut().remove(&username);
        media.note_sizes();
        let Some((ice, origin)) = found else {
            log::debug!("webrtc: STUN from {from} with unknown username {username:?} dropped");
            remember_unknown(&media, username);
            return;
        };
        if media.by_user.borrow().len() >= MAX_SESSIONS {
            log::warn!("webrtc: {MAX_SESSIONS} sessions on this shard; {} from {from} dropped", ice.key);
            return;
        }
        let reg = &origin.registration;
        let Some(endpoint) = first_udp(&reg.rtc) else {
            crate::proxy::failed(&media.shard, PickFailure::NoEndpoint);
            log::warn!("webrtc {} {}: origin {} has no rtc endpoint", ice.role.name(), ice.key, origin.id);
            return;
        };
        let target = SocketAddr::new(reg.ip, endpoint.port);
        let any: SocketAddr =
            if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        let upstream = match UdpSocket::bind(any) {
            Ok(s) => s,
            Err(e) => return log::warn!("webrtc {}: cannot open a socket to its origin: {e}", ice.key),
        };
        if let Err(e) = upstream.connect(target).await {
            crate::proxy::failed(&media.shard, PickFailure::DialFailed);
            return log::warn!("webrtc {}: cannot reach origin {} at {target}: {e}", ice.key, origin.id);
        }
        let existing = media.by_user.borrow().get(&username).cloned();
        let session = match existing {
            Some(s) => s, // another datagram won the race
            None => open(&media, username, ice.key, ice.role, origin.id.0.clone(), upstream, from).await,
        };
        ask_origin(&session, txid, &data, from).await;
    })
    .detach();
}

/// Remembers a username the control thread did not know, keeping at most [`MAX_UNKNOWN`]: when
/// full, the expired ones go, and if none has expired (a flood of made-up names), all of them.
/// The bound is enforced here, at the insert: up to [`MAX_LOOKUPS`] lookups finish after any
/// check made when they started.
fn remember_unknown(media: &Media, username: String) {
    let now = Instant::now();
    {
        let mut unknown = media.unknown.borrow_mut();
        if unknown.len() >= MAX_UNKNOWN && !unknown.contains_key(&username) {
            unknown.retain(|_, since| now.saturating_duration_since(*since) < UNKNOWN_FOR);
            if unknown.len() >= MAX_UNKNOWN {
                unknown.clear();
            }
        }
        unknown.insert(username, now);
    }
    media.note_sizes();
}

async fn open(
    media: &Rc<Media>,
    username: String,
    key: StreamKey,
    role: Role,
    origin_id: String,
    upstream: UdpSocket,
    from: SocketAddr,
) -> Rc<Session> {
    let traffic = media.shard.traffic.register(&key, Protocol::WebRtc);
    let session = Rc::new(Session {
        username: username.clone(),
        key,
        role,
        origin_id,
        upstream,
        client: Cell::new(from),
        addresses: RefCell::default(),
        pending: RefCell::default(),
        last_seen: Cell::new(Instant::now()),
        traffic,
        reader: RefCell::new(None),
        _open: media.shard.counters.accepted(Listener::WebrtcUdp),
    });
    media.by_user.borrow_mut().insert(username, session.clone());
    let reader = spawn_local(read_origin(media.clone(), session.clone()));
    *session.reader.borrow_mut() = Some(reader);
    media.shard.link.session(&session.key, Protocol::WebRtc, role, true).await;
    log::info!(
        "webrtc {} {} from {from} via origin {}: media session opened",
        role.name(),
        session.key,
        session.origin_id
    );
    session
}

/// Makes `from` the session's current client address.
fn adopt(media: &Media, session: &Rc<Session>, from: SocketAddr) {
    let mut addresses = session.addresses.borrow_mut();
    if !addresses.contains(&from) {
        if addresses.len() >= MAX_ADDRESSES
            && let Some(old) = addresses.pop_front()
        {
            media.by_addr.borrow_mut().remove(&old);
        }
        addresses.push_back(from);
        media.by_addr.borrow_mut().insert(from, session.clone());
        if session.client.get() != from {
            log::info!("webrtc {} {}: client moved to {from}", session.role.name(), session.key);
        }
        drop(addresses);
        media.note_sizes();
    }
}

/// Relays a Binding request from an address that has not joined `session` and remembers it, so
/// that the origin's answer goes back there (and a success makes the address join). The session
/// does not count it as activity: only the origin's answer does.
async fn ask_origin(session: &Session, txid: [u8; 12], data: &[u8], from: SocketAddr) {
    {
        let mut pending = session.pending.borrow_mut();
        if !pending.iter().any(|(t, a)| *t == txid && *a == from) {
            if pending.len() >= MAX_PENDING {
                pending.pop_front();
            }
            pending.push_back((txid, from));
        }
    }
    if session.upstream.send(data).await.is_ok() {
        let t = &session.traffic.bytes_in;
        t.set(t.get() + data.len() as u64);
    }
}

/// If `datagram` is the origin's answer to a pending Binding request: who asked, and whether
/// the origin accepted (a success response) or refused (an error response).
fn answered(session: &Session, datagram: &[u8]) -> Option<(SocketAddr, bool)> {
    if session.pending.borrow().is_empty() || stun::classify(datagram) != Kind::Stun {
        return None;
    }
    let message = Message::parse(datagram).ok()?;
    let accepted = match message.class() {
        stun::Class::SuccessResponse => true,
        stun::Class::ErrorResponse => false,
        _ => return None,
    };
    if message.method() != BINDING {
        return None;
    }
    let mut pending = session.pending.borrow_mut();
    let at = pending.iter().position(|(t, _)| *t == message.transaction_id)?;
    pending.remove(at).map(|(_, from)| (from, accepted))
}

async fn forward(session: &Session, data: &[u8], from: SocketAddr) {
    session.client.set(from);
    session.last_seen.set(Instant::now());
    if session.upstream.send(data).await.is_ok() {
        let t = &session.traffic.bytes_in;
        t.set(t.get() + data.len() as u64);
    }
}

/// The origin's datagrams, to the session's newest client address; an answer to a pending
/// Binding request goes to the address that asked, which joins the session on a success.
async fn read_origin(media: Rc<Media>, session: Rc<Session>) {
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let n = match session.upstream.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                // ICMP port unreachable surfaces as a refused receive; keep the session until idle.
                log::debug!("webrtc {}: origin socket: {e}", session.key);
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        session.last_seen.set(Instant::now());
        let to = match answered(&session, &buf[..n]) {
            Some((from, true)) => {
                adopt(&media, &session, from);
                session.client.set(from);
                from
            }
            Some((from, false)) => from,
            None => session.client.get(),
        };
        if media.socket.send_to(&buf[..n], to).await.is_ok() {
            let t = &session.traffic.bytes_out;
            t.set(t.get() + n as u64);
        }
    }
}

/// Drops idle sessions once a second.
async fn sweep(media: Rc<Media>) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let idle = media.shard.config.udp_idle_timeout;
        let now = Instant::now();
        let expired: Vec<Rc<Session>> = media
            .by_user
            .borrow()
            .values()
            .filter(|s| now.saturating_duration_since(s.last_seen.get()) >= idle)
            .cloned()
            .collect();
        for session in expired {
            media.by_user.borrow_mut().remove(&session.username);
            for addr in session.addresses.borrow().iter() {
                media.by_addr.borrow_mut().remove(addr);
            }
            close(&media, &session, &format!("no datagram for {idle:?}")).await;
        }
        media.unknown.borrow_mut().retain(|_, since| now.saturating_duration_since(*since) < UNKNOWN_FOR);
        media.note_sizes();
    }
}

async fn close(media: &Media, session: &Session, why: &str) {
    drop(session.reader.borrow_mut().take());
    media.shard.link.session(&session.key, Protocol::WebRtc, session.role, false).await;
    log::info!(
        "webrtc {} {} via origin {} ended: {why}; {} bytes in, {} bytes out",
        session.role.name(),
        session.key,
        session.origin_id,
        session.traffic.bytes_in.get(),
        session.traffic.bytes_out.get()
    );
}
