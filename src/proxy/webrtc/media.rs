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
//!   reading it. A session with no datagram either way for `--udp-idle-timeout` is dropped; so
//!   is, at once, one whose client deleted its WHIP/WHEP resource (its [`Ended`] flag, raised
//!   by the control thread: `crate::proxy::webrtc::signal`).
//!
//! The socket, the session table, the relaying, idle expiry and closing are the shard's UDP
//! session table ([`crate::shard::udp`]); this module is WebRTC's part of it: the usernames,
//! the lookups and the checks awaiting the origin's answer.
//!
//! Bounds: at most `--webrtc-max-sessions` (10,000) sessions per shard and
//! `--max-connections-per-ip webrtc=N` per client IP across the shards, [`MAX_ADDRESSES`] client addresses and
//! [`MAX_PENDING`] checks awaiting the origin's answer per session, [`MAX_LOOKUPS`] control-thread lookups in flight (spoofed STUN floods are dropped
//! past it), and recently failed usernames remembered ([`MAX_UNKNOWN`]) so a repeated bogus one
//! costs no lookup.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::spawn_local;

use crate::balance::StreamKey;
use crate::balance::endpoint::first_udp;
use crate::balance::ice::Ended;
use crate::balance::session::Protocol as SessionProtocol;
use crate::bridge::{ControlAsk, Listener, PickFailure};
use crate::codec::stun::{self, Kind, Message};
use crate::proxy::access::Admitted;
use crate::shard::Shard;
use crate::shard::udp::{self, NewSession, Protocol, Table, Verdict};

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

/// WebRTC's part of a session.
pub struct State {
    username: String,
    /// Binding requests from addresses that have not joined yet: transaction id, address.
    pending: RefCell<VecDeque<([u8; 12], SocketAddr)>>,
    /// The offer's admission, taken over from signalling: given back (slot, end notice) when
    /// the session closes.
    admitted: RefCell<Option<Admitted>>,
    /// Raised when the client deletes its resource: the session closes.
    ended: Ended,
}

type Session = udp::Session<State>;

/// WebRTC media on one shard: the sessions by username, the usernames being asked of the
/// control thread, and those it did not know.
#[derive(Default)]
pub struct Media {
    by_user: RefCell<HashMap<String, Rc<Session>>>,
    lookups: RefCell<HashSet<String>>,
    unknown: RefCell<HashMap<String, Instant>>,
}

impl Protocol for Media {
    type State = State;
    const NAME: &'static str = "webrtc";
    const LISTENER: Listener = Listener::WebrtcUdp;
    const SESSION: SessionProtocol = SessionProtocol::WebRtc;
    fn max_sessions(config: &crate::config::Config) -> usize {
        config.access.webrtc_max_sessions
    }
    const MAX_ADDRESSES: usize = MAX_ADDRESSES;
    const RECEIVE_FAILED: &'static str = "webrtc udp receive failed";

    async fn unknown(table: &Rc<Table<Media>>, data: &[u8], from: SocketAddr) {
        if stun::classify(data) != Kind::Stun {
            return; // not ours to answer: unknown senders get nothing
        }
        let Ok(message) = Message::parse(data) else {
            return;
        };
        let Some(username) = message.username().filter(|_| message.is_binding_request()) else {
            return;
        };
        let found = table.proto.by_user.borrow().get(username).cloned();
        match found {
            Some(session) => ask_origin(table, &session, message.transaction_id, data, from).await,
            None => lookup(table, username, message.transaction_id, data, from),
        }
    }

    async fn from_client(table: &Rc<Table<Media>>, session: &Rc<Session>, _: &[u8], from: SocketAddr) -> Verdict {
        table.adopt(session, from);
        Verdict::Forward
    }

    /// An answer to a pending Binding request goes to the address that asked, which joins the
    /// session on a success; everything else to the newest client address.
    fn from_origin(
        table: &Rc<Table<Media>>,
        session: &Rc<Session>,
        data: &[u8],
    ) -> (Option<SocketAddr>, Option<&'static str>) {
        let to = match answered(session, data) {
            Some((from, true)) => {
                table.adopt(session, from);
                from
            }
            Some((from, false)) => from,
            None => session.client.get(),
        };
        (Some(to), None)
    }

    fn closed(table: &Table<Media>, session: &Session) {
        let mut by_user = table.proto.by_user.borrow_mut();
        if by_user.get(&session.state.username).is_some_and(|s| std::ptr::eq(Rc::as_ptr(s), session)) {
            by_user.remove(&session.state.username);
        }
        // on_unpublish / on_stop, and the stream slot back.
        drop(session.state.admitted.borrow_mut().take());
    }

    fn tick(table: &Table<Media>, now: Instant) {
        table.proto.unknown.borrow_mut().retain(|_, since| now.saturating_duration_since(*since) < UNKNOWN_FOR);
        Media::note_sizes(table);
    }

    fn note_sizes(table: &Table<Media>) {
        let (sessions, addresses) = (table.len(), table.addresses());
        let lookups = table.proto.lookups.borrow().len();
        let unknown = table.proto.unknown.borrow().len();
        table.shard.udp.update(|t| {
            t.webrtc_sessions = sessions;
            t.webrtc_addresses = addresses;
            t.webrtc_lookups = lookups;
            t.webrtc_unknown = unknown;
        });
    }
}

/// Relays until `stop` resolves.
pub async fn serve(shard: Rc<Shard>, socket: glommio::net::UdpSocket, stop: impl Future<Output = ()>) {
    udp::serve(Table::new(shard, socket, Media::default()), stop).await;
}

/// Asks the control thread for an unknown username, in its own task so the receive loop goes
/// on; the datagram that asked is relayed once the session exists.
fn lookup(table: &Rc<Table<Media>>, username: &str, txid: [u8; 12], data: &[u8], from: SocketAddr) {
    let now = Instant::now();
    {
        let media = &table.proto;
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
    Media::note_sizes(table);
    let (table, username, data) = (table.clone(), username.to_string(), data.to_vec());
    spawn_local(async move {
        table.shard.counters.asked(ControlAsk::IceResolve);
        let found = table.shard.link.ice_resolve(&username).await;
        table.proto.lookups.borrow_mut().remove(&username);
        Media::note_sizes(&table);
        let Some((ice, origin)) = found else {
            log::debug!("webrtc: STUN from {from} with unknown username {username:?} dropped");
            return remember_unknown(&table, username);
        };
        let admitted = ice.handover.and_then(|h| h.take()).and_then(|v| v.downcast::<Admitted>().ok());
        let admitted = admitted.map(|a| (*a).adopt(&table.shard));
        let opening = Opening { key: ice.key, role: ice.role, ended: ice.ended };
        let Some(session) = open(&table, username, opening, &origin, from, admitted).await else {
            return;
        };
        ask_origin(&table, &session, txid, &data, from).await;
    })
    .detach();
}

/// What signalling told about a session being opened.
struct Opening {
    key: StreamKey,
    role: crate::balance::session::Role,
    ended: Ended,
}

/// The session of `username`: an existing one (another datagram won the race) or a new one
/// with its own socket to `origin`, holding `admitted`; `None` (logged) when that cannot be
/// (`admitted` then ends here).
async fn open(
    table: &Rc<Table<Media>>,
    username: String,
    opening: Opening,
    origin: &crate::balance::Origin,
    from: SocketAddr,
    admitted: Option<Admitted>,
) -> Option<Rc<Session>> {
    let Opening { key, role, ended } = opening;
    if ended.is_ended() {
        log::debug!("webrtc {} {key}: STUN from {from} for a deleted session dropped", role.name());
        return None;
    }
    if let Some(existing) = table.proto.by_user.borrow().get(&username).cloned() {
        return Some(keep(existing, admitted));
    }
    if table.full() {
        table.warn("webrtc: sessions full on this shard", || {
            let max = table.shard.config.access.webrtc_max_sessions;
            format!("webrtc: {max} sessions on this shard (--webrtc-max-sessions); {key} from {from} dropped")
        });
        return None;
    }
    let per_ip = table.ip_slot(from, || format!("{} {key}", role.name())).ok()?;
    let reg = &origin.registration;
    let Some(endpoint) = first_udp(&reg.rtc) else {
        crate::proxy::failed(&table.shard, PickFailure::NoEndpoint);
        table.warn("webrtc: origin without an rtc endpoint", || {
            format!("webrtc {} {key}: origin {} has no rtc endpoint", role.name(), origin.id)
        });
        return None;
    };
    let target = SocketAddr::new(reg.ip, endpoint.port);
    let upstream = match Table::<Media>::dial(target).await {
        Ok(socket) => socket,
        Err(e) => {
            crate::proxy::failed(&table.shard, PickFailure::DialFailed);
            table.warn("webrtc: origin unreachable", || {
                format!("webrtc {key}: cannot reach origin {} at {target}: {e}", origin.id)
            });
            return None;
        }
    };
    if let Some(existing) = table.proto.by_user.borrow().get(&username).cloned() {
        return Some(keep(existing, admitted));
    }
    let state =
        State { username: username.clone(), pending: RefCell::default(), admitted: RefCell::new(admitted), ended };
    let session =
        table.insert(NewSession { key, role, origin_id: origin.id.0.clone(), upstream, state, per_ip }, from)?;
    table.proto.by_user.borrow_mut().insert(username, session.clone());
    Media::note_sizes(table);
    let (reader, session_of_task) = (table.clone(), session.clone());
    table.start(&session, async move {
        let ended = session_of_task.state.ended.clone();
        let relay = async {
            reader.relay_from_origin(&session_of_task).await;
            false
        };
        let deleted = async {
            ended.wait().await;
            true
        };
        if future::or(relay, deleted).await {
            reader.close_from_task(&session_of_task, "the client deleted its resource").await;
        }
    });
    table.report_open(&session).await;
    log::info!(
        "webrtc {} {} from {from} via origin {}: media session opened",
        role.name(),
        session.key,
        session.origin_id
    );
    Some(session)
}

/// `session` (opened by another datagram meanwhile), holding `admitted` unless it holds one.
fn keep(session: Rc<Session>, admitted: Option<Admitted>) -> Rc<Session> {
    let mut held = session.state.admitted.borrow_mut();
    if held.is_none() && !session.is_closed() {
        *held = admitted;
    }
    drop(held);
    session
}

/// Remembers a username the control thread did not know, keeping at most [`MAX_UNKNOWN`]: when
/// full, the expired ones go, and if none has expired (a flood of made-up names), all of them.
/// The bound is enforced here, at the insert: up to [`MAX_LOOKUPS`] lookups finish after any
/// check made when they started.
fn remember_unknown(table: &Table<Media>, username: String) {
    let now = Instant::now();
    {
        let mut unknown = table.proto.unknown.borrow_mut();
        if unknown.len() >= MAX_UNKNOWN && !unknown.contains_key(&username) {
            unknown.retain(|_, since| now.saturating_duration_since(*since) < UNKNOWN_FOR);
            if unknown.len() >= MAX_UNKNOWN {
                unknown.clear();
            }
        }
        unknown.insert(username, now);
    }
    Media::note_sizes(table);
}

/// Relays a Binding request from an address that has not joined `session` and remembers it, so
/// that the origin's answer goes back there (and a success makes the address join). The session
/// does not count it as activity: only the origin's answer does.
async fn ask_origin(table: &Table<Media>, session: &Session, txid: [u8; 12], data: &[u8], from: SocketAddr) {
    {
        let mut pending = session.state.pending.borrow_mut();
        if !pending.iter().any(|(t, a)| *t == txid && *a == from) {
            if pending.len() >= MAX_PENDING {
                pending.pop_front();
            }
            pending.push_back((txid, from));
        }
    }
    table.to_origin(session, data).await;
}

/// If `datagram` is the origin's answer to a pending Binding request: who asked, and whether
/// the origin accepted (a success response) or refused (an error response).
fn answered(session: &Session, datagram: &[u8]) -> Option<(SocketAddr, bool)> {
    if session.state.pending.borrow().is_empty() || stun::classify(datagram) != Kind::Stun {
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
    let mut pending = session.state.pending.borrow_mut();
    let at = pending.iter().position(|(t, _)| *t == message.transaction_id)?;
    pending.remove(at).map(|(_, from)| (from, accepted))
}
