//! One UDP session table per protocol per shard: the machinery SRT and WebRTC share, with
//! their protocol logic plugged in through [`Protocol`].
//!
//! - One SO_REUSEPORT socket per shard on the listener's address ([`bind`]); a client's
//!   datagrams always hash to the same shard while its address stays the same.
//! - The receive loop ([`serve`]) hands a datagram from a known client address to
//!   [`Protocol::from_client`] and relays it to the session's origin when told to; anything
//!   else goes to [`Protocol::unknown`], which may answer, drop, or open a session.
//! - A session has one connected socket to its origin ([`Table::dial`]) and one task: the
//!   protocol's own (a handshake first), which ends in [`Table::relay_from_origin`], relaying
//!   the origin's datagrams to the address [`Protocol::from_origin`] names.
//! - A session has up to [`Protocol::MAX_ADDRESSES`] client addresses ([`Table::adopt`]); the
//!   newest receives the origin's datagrams.
//! - Once a second ([`sweep`]) sessions with no datagram for their idle timeout are closed, so
//!   are those of a stream an operator disconnected (listed in the snapshot), and
//!   [`Protocol::tick`] runs. Closing drops the session's task and origin socket, reports the
//!   session closed if it was reported open, and logs one line with its byte counts.
//!
//! Bounds: at most [`Protocol::max_sessions`] sessions per shard (`--srt-max-sessions`,
//! `--webrtc-max-sessions`) ([`Table::insert`] refuses
//! more) and [`Protocol::MAX_ADDRESSES`] addresses per session. A panic while handling one
//! datagram is caught, counted like a connection's ([`super::conn`]) and logged; the receive
//! loop goes on.
//!
//! Log lines: every warning a remote peer can cause goes through [`Table::warn`], rate-limited
//! per shard and per kind: at most [`WARNINGS_PER_INTERVAL`] per [`WARNING_INTERVAL`], then one
//! line "KIND: ... and K more like it in the last S s" ([`LogThrottle`]). Strings from peers
//! in those lines are cut to [`CLIP`] characters.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::UdpSocket;
use glommio::{Task, spawn_local};

use super::Shard;
use super::counters::OpenGuard;
use super::limits::Slot;
use super::traffic::Traffic;
use crate::balance::StreamKey;
use crate::balance::session::{Protocol as SessionProtocol, Role};
use crate::bridge::Listener;
use crate::logging::clip;
use crate::logging::throttle::LogThrottle;

/// Largest datagram relayed (a UDP payload cannot be larger).
pub const DATAGRAM: usize = 65_536;
/// Most warnings of one kind a table writes per [`WARNING_INTERVAL`].
pub const WARNINGS_PER_INTERVAL: u32 = 5;
/// The window of [`WARNINGS_PER_INTERVAL`].
pub const WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// Most characters of a peer's string (a stream id, a key, an error text) in one log line.
pub const CLIP: usize = 128;
/// How long the receive loops wait after a failed receive before the next.
const RECEIVE_RETRY: Duration = Duration::from_millis(10);
/// How long an origin reader waits after a failed receive (an ICMP error) before the next.
const ORIGIN_RETRY: Duration = Duration::from_millis(100);

/// What a protocol adds to the table.
pub trait Protocol: Sized + 'static {
    /// Per-session state of the protocol.
    type State: 'static;
    /// Name in log lines (`srt`, `webrtc`).
    const NAME: &'static str;
    const LISTENER: Listener;
    const SESSION: SessionProtocol;
    /// Most sessions per shard (a flag of the configuration).
    fn max_sessions(config: &crate::config::Config) -> usize;
    const MAX_ADDRESSES: usize;
    /// The kind of the receive-failure warning (`"srt udp receive failed"`).
    const RECEIVE_FAILED: &'static str;

    /// A datagram from an address that belongs to no session.
    fn unknown(table: &Rc<Table<Self>>, data: &[u8], from: SocketAddr) -> impl Future<Output = ()>;

    /// A datagram from one of `session`'s addresses: what to do with it.
    fn from_client(
        table: &Rc<Table<Self>>,
        session: &Rc<Session<Self::State>>,
        data: &[u8],
        from: SocketAddr,
    ) -> impl Future<Output = Verdict>;

    /// A datagram from `session`'s origin: where it goes (`None`: nowhere), and whether the
    /// session ends once it is sent (with why).
    fn from_origin(
        table: &Rc<Table<Self>>,
        session: &Rc<Session<Self::State>>,
        data: &[u8],
    ) -> (Option<SocketAddr>, Option<&'static str>);

    /// `session` was closed: forget it in the protocol's own indexes.
    fn closed(_table: &Table<Self>, _session: &Session<Self::State>) {}

    /// Once a second, after the idle sweep.
    fn tick(_table: &Table<Self>, _now: Instant) {}

    /// How long a session may go without a datagram.
    fn idle_timeout(table: &Table<Self>) -> Duration {
        table.shard.config.udp_idle_timeout
    }

    /// Tells the shard's table sizes (`GET /api/v1/shards`) the current ones.
    fn note_sizes(table: &Table<Self>);
}

/// What to do with a client's datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Relay it to the origin (it counts as the session's activity).
    Forward,
    /// Relay it, then close the session.
    ForwardThenClose(&'static str),
    /// The protocol dealt with it.
    Done,
}

/// One relayed session.
pub struct Session<S> {
    pub key: StreamKey,
    pub role: Role,
    pub origin_id: String,
    /// Connected to the origin.
    pub upstream: UdpSocket,
    /// Where the origin's datagrams go: the newest address that sent one.
    pub client: Cell<SocketAddr>,
    addresses: RefCell<VecDeque<SocketAddr>>,
    pub last_seen: Cell<Instant>,
    /// When it was made.
    pub opened: Instant,
    pub traffic: Rc<Traffic>,
    pub state: S,
    task: RefCell<Option<Task<()>>>,
    /// Reported open to the control thread (reported closed when it ends).
    reported: Cell<bool>,
    closed: Cell<bool>,
    /// Counts the session open on the shard while it exists.
    _open: OpenGuard,
    /// The client IP's slot of `--max-connections-per-ip` for this listener, if limited.
    _per_ip: Option<Slot>,
}

impl<S> Session<S> {
    /// The client addresses, oldest first.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.addresses.borrow().iter().copied().collect()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    fn count_in(&self, n: usize) {
        self.traffic.bytes_in.set(self.traffic.bytes_in.get() + n as u64);
    }

    fn count_out(&self, n: usize) {
        self.traffic.bytes_out.set(self.traffic.bytes_out.get() + n as u64);
    }
}

/// A protocol's sessions on one shard.
pub struct Table<P: Protocol> {
    pub shard: Rc<Shard>,
    pub socket: Rc<UdpSocket>,
    pub proto: P,
    by_addr: RefCell<HashMap<SocketAddr, Rc<Session<P::State>>>>,
    sessions: RefCell<Vec<Rc<Session<P::State>>>>,
    warnings: RefCell<LogThrottle<&'static str>>,
}

/// What a new session is.
pub struct NewSession<S> {
    pub key: StreamKey,
    pub role: Role,
    pub origin_id: String,
    pub upstream: UdpSocket,
    pub state: S,
    /// From [`Table::ip_slot`].
    pub per_ip: Option<Slot>,
}

/// Binds a shard's socket for a UDP listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(addr).map_err(std::io::Error::from)
}

impl<P: Protocol> Table<P> {
    pub fn new(shard: Rc<Shard>, socket: UdpSocket, proto: P) -> Rc<Self> {
        Rc::new(Table {
            shard,
            socket: Rc::new(socket),
            proto,
            by_addr: RefCell::default(),
            sessions: RefCell::default(),
            warnings: RefCell::new(LogThrottle::new(WARNINGS_PER_INTERVAL, WARNING_INTERVAL)),
        })
    }

    /// Writes a warning of `kind` (its summary text, such as "srt caller refused (no
    /// origin)") unless too many of that kind were written lately; `line` is only built when
    /// it is written.
    pub fn warn(&self, kind: &'static str, line: impl FnOnce() -> String) {
        let admit = self.warnings.borrow_mut().admit(kind, Instant::now());
        if let Some(summary) = admit.summary {
            log::warn!("{kind}: ... {}", summary.tail());
        }
        if admit.write {
            log::warn!("{}", line());
        }
    }

    /// Writes the summaries of the warning windows that are over.
    fn flush_warnings(&self) {
        let mut warnings = self.warnings.borrow_mut();
        warnings.flush(Instant::now(), |summary| log::warn!("{}: ... {}", summary.kind, summary.tail()));
    }

    pub fn len(&self) -> usize {
        self.sessions.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Client addresses of every session.
    pub fn addresses(&self) -> usize {
        self.by_addr.borrow().len()
    }

    pub fn full(&self) -> bool {
        self.len() >= P::max_sessions(&self.shard.config)
    }

    /// A session slot for the client `from` under `--max-connections-per-ip` (`None`: no
    /// limit on this listener), or `Err(limit)` when its IP holds the limit already: counted as
    /// `refused` on the listener and logged (rate-limited) with `what` the session asked.
    pub fn ip_slot(&self, from: SocketAddr, what: impl FnOnce() -> String) -> Result<Option<Slot>, u32> {
        self.shard.limits.connection(P::LISTENER, from.ip()).inspect_err(|&limit| {
            self.shard.counters.refused(P::LISTENER);
            self.warn("sessions per IP", || {
                format!(
                    "{} {} from {from} refused: {} already holds {limit} sessions (--max-connections-per-ip)",
                    P::NAME,
                    what(),
                    from.ip()
                )
            });
        })
    }

    /// The session `addr` belongs to.
    pub fn session_of(&self, addr: SocketAddr) -> Option<Rc<Session<P::State>>> {
        self.by_addr.borrow().get(&addr).cloned()
    }

    /// Sends a datagram to a client from the listener's socket (failures logged at debug).
    pub async fn send(&self, packet: &[u8], to: SocketAddr) -> bool {
        match self.socket.send_to(packet, to).await {
            Ok(_) => true,
            Err(e) => {
                log::debug!("{}: send to {to}: {e}", P::NAME);
                false
            }
        }
    }

    /// A new socket connected to an origin at `target`.
    pub async fn dial(target: SocketAddr) -> std::io::Result<UdpSocket> {
        let any: SocketAddr =
            if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        let socket = UdpSocket::bind(any)?;
        socket.connect(target).await?;
        Ok(socket)
    }

    /// Adds a session with client address `from`, counted open on the shard; `None` when the
    /// table is full.
    pub fn insert(&self, new: NewSession<P::State>, from: SocketAddr) -> Option<Rc<Session<P::State>>> {
        if self.full() {
            return None;
        }
        let session = Rc::new(Session {
            traffic: self.shard.traffic.register(&new.key, P::SESSION),
            key: new.key,
            role: new.role,
            origin_id: new.origin_id,
            upstream: new.upstream,
            client: Cell::new(from),
            addresses: RefCell::new(VecDeque::from([from])),
            last_seen: Cell::new(Instant::now()),
            opened: Instant::now(),
            state: new.state,
            task: RefCell::new(None),
            reported: Cell::new(false),
            closed: Cell::new(false),
            _open: self.shard.counters.accepted(P::LISTENER),
            _per_ip: new.per_ip,
        });
        self.by_addr.borrow_mut().insert(from, session.clone());
        self.sessions.borrow_mut().push(session.clone());
        P::note_sizes(self);
        Some(session)
    }

    /// Runs `task` as the session's task: closing the session cancels it.
    pub fn start(&self, session: &Session<P::State>, task: impl Future<Output = ()> + 'static) {
        *session.task.borrow_mut() = Some(spawn_local(task));
    }

    /// Reports the session open to the control thread (it is reported closed when it ends).
    pub async fn report_open(&self, session: &Session<P::State>) {
        session.reported.set(true);
        self.shard.link.session(&session.key, P::SESSION, session.role, true).await;
    }

    /// Makes `from` one of the session's addresses (the newest; the oldest is forgotten past
    /// [`Protocol::MAX_ADDRESSES`]) and the one the origin's datagrams go to.
    pub fn adopt(&self, session: &Rc<Session<P::State>>, from: SocketAddr) {
        session.client.set(from);
        let mut addresses = session.addresses.borrow_mut();
        if addresses.contains(&from) {
            return;
        }
        if addresses.len() >= P::MAX_ADDRESSES
            && let Some(old) = addresses.pop_front()
        {
            self.by_addr.borrow_mut().remove(&old);
        }
        addresses.push_back(from);
        drop(addresses);
        self.by_addr.borrow_mut().insert(from, session.clone());
        P::note_sizes(self);
    }

    /// Relays a datagram to the session's origin, counting it; `false` if the send failed.
    pub async fn to_origin(&self, session: &Session<P::State>, data: &[u8]) -> bool {
        let sent = session.upstream.send(data).await.is_ok();
        if sent {
            session.count_in(data.len());
        }
        sent
    }

    /// The origin's datagrams to the client until the protocol ends the session; run by the
    /// session's own task (a failed receive, such as an ICMP error, is retried).
    pub async fn relay_from_origin(self: &Rc<Self>, session: &Rc<Session<P::State>>) {
        let mut buf = vec![0u8; DATAGRAM];
        loop {
            let n = match session.upstream.recv(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    log::debug!("{} {}: origin socket: {e}", P::NAME, session.key);
                    glommio::timer::sleep(ORIGIN_RETRY).await;
                    continue;
                }
            };
            session.last_seen.set(Instant::now());
            let (to, end) = P::from_origin(self, session, &buf[..n]);
            if let Some(to) = to
                && self.send(&buf[..n], to).await
            {
                session.count_out(n);
            }
            if let Some(why) = end {
                return self.close_from_task(session, why).await;
            }
        }
    }

    /// Closes the session: forgets it, cancels its task, reports it closed and logs it.
    pub async fn close(&self, session: &Rc<Session<P::State>>, why: &str) {
        drop(session.task.borrow_mut().take());
        self.finish(session, why).await;
    }

    /// [`Table::close`] from inside the session's own task, which must not cancel itself: its
    /// handle is let go first.
    pub async fn close_from_task(&self, session: &Rc<Session<P::State>>, why: &str) {
        if let Some(task) = session.task.borrow_mut().take() {
            drop(task.detach());
        }
        self.finish(session, why).await;
    }

    async fn finish(&self, session: &Rc<Session<P::State>>, why: &str) {
        if session.closed.replace(true) {
            return;
        }
        self.sessions.borrow_mut().retain(|s| !Rc::ptr_eq(s, session));
        for addr in session.addresses.borrow().iter() {
            let mut by_addr = self.by_addr.borrow_mut();
            if by_addr.get(addr).is_some_and(|s| Rc::ptr_eq(s, session)) {
                by_addr.remove(addr);
            }
        }
        P::closed(self, session);
        P::note_sizes(self);
        if session.reported.get() {
            self.shard.link.session(&session.key, P::SESSION, session.role, false).await;
        }
        log::info!(
            "{} {} {} from {} via origin {} ended: {why}; {} bytes in, {} bytes out",
            P::NAME,
            session.role.name(),
            clip(session.key.as_str(), CLIP),
            session.client.get(),
            session.origin_id,
            session.traffic.bytes_in.get(),
            session.traffic.bytes_out.get()
        );
    }

    async fn on_datagram(self: &Rc<Self>, data: &[u8], from: SocketAddr) {
        let Some(session) = self.session_of(from) else {
            return P::unknown(self, data, from).await;
        };
        match P::from_client(self, &session, data, from).await {
            Verdict::Done => {}
            Verdict::Forward => {
                session.last_seen.set(Instant::now());
                self.to_origin(&session, data).await;
            }
            Verdict::ForwardThenClose(why) => {
                self.to_origin(&session, data).await;
                self.close(&session, why).await;
            }
        }
    }
}

/// Relays until `stop` resolves, then closes every session.
pub async fn serve<P: Protocol>(table: Rc<Table<P>>, stop: impl Future<Output = ()>) {
    let sweeper = spawn_local(sweep(table.clone()));
    let receive = async {
        let mut buf = vec![0u8; DATAGRAM];
        loop {
            match table.socket.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    let handled = super::conn::catch(table.on_datagram(&buf[..n], from)).await;
                    if let Err(panic) = handled {
                        table.shard.counters.panicked(P::LISTENER);
                        log::error!("{} datagram from {from}: a panic while handling it: {panic}", P::NAME);
                    }
                }
                Err(e) => {
                    table.warn(P::RECEIVE_FAILED, || format!("{} udp receive failed: {e}", P::NAME));
                    glommio::timer::sleep(RECEIVE_RETRY).await;
                }
            }
        }
    };
    future::or(receive, stop).await;
    drop(sweeper);
    let sessions: Vec<_> = table.sessions.borrow().clone();
    for session in sessions {
        table.close(&session, "the proxy is stopping").await;
    }
}

/// Once a second: closes the sessions idle for longer than their timeout, then the
/// protocol's tick.
async fn sweep<P: Protocol>(table: Rc<Table<P>>) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let idle = P::idle_timeout(&table);
        let now = Instant::now();
        let expired: Vec<_> = table
            .sessions
            .borrow()
            .iter()
            .filter(|s| now.saturating_duration_since(s.last_seen.get()) >= idle)
            .cloned()
            .collect();
        for session in expired {
            table.close(&session, &format!("no datagram for {idle:?}")).await;
        }
        let snapshot = table.shard.link.snapshots.borrow().clone();
        let disconnected: Vec<_> = match snapshot.disconnects.is_empty() {
            true => Vec::new(),
            false => {
                let sessions = table.sessions.borrow();
                sessions.iter().filter(|s| snapshot.disconnected(&s.key, s.opened)).cloned().collect()
            }
        };
        for session in disconnected {
            table.close(&session, "an operator disconnected the stream's sessions").await;
        }
        table.flush_warnings();
        P::tick(&table, now);
    }
}
