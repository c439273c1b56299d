//! Every accepted TCP connection as the shard sees it, whatever its protocol: a [`Conn`] the
//! accept loop makes, and the task it runs in ([`ConnTask`]).
//!
//! Two failures must never leave a connection frozen and counted as open:
//!
//! - **A panic** while polling the connection's future (a bug, never expected). [`ConnTask`]
//!   catches it, so the future is dropped at once: both sockets close, the session's close is
//!   reported (its [`Session`](super::session::Session) guard drops), and the accept loop counts
//!   it and logs one line with the stream. Without this a panic would unwind through the
//!   shard's executor and take every connection of the shard with it.
//! - **A stall**: a session whose task is no longer woken (a lost wake-up) moves no byte while
//!   its peers hang up, and would hold both descriptors and its stream name at the origin
//!   forever. Once a second the shard's reporter [`sweeps`](ConnTable::sweep) its connections:
//!   one with a session that has moved no byte for `--stall-timeout` while its client or its
//!   origin has hung up (the peer's FIN or RST is pending on the socket, which a working relay
//!   reads at once) is ended by the shard: [`ConnTask`] returns without polling the future
//!   again and drops it.
//! - **A dead peer** (`--relay-idle-timeout`): the same sweep ends a session that has moved no
//!   byte either way for that long, peers there or not: a client that vanished without a FIN
//!   behind a NAT, an origin that accepted and went silent. Live video always moves bytes.
//!   TCP keepalive ([`set_keepalive`], `--tcp-keepalive-*`) on every relayed socket catches
//!   the vanished peer sooner where the timeout is long.
//!
//! - **An operator's disconnect** (the System API's `POST /api/v1/streams/disconnect`): the
//!   snapshot lists the stream with the time of the request, and the same sweep ends every
//!   connection whose session of that stream opened before it ([`ConnTable::disconnect`]).
//!
//! While it polls, [`ConnTask`] makes its [`Conn`] the shard thread's current connection
//! ([`current`]), so protocol code deep in a session can attach its origin socket and session
//! without passing the connection through every call.
//!
//! The panic hook ([`install_panic_hook`]) keeps the message and place of a panic caught here
//! for that one log line instead of printing it raw to stderr; other panics print as before.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::balance::session::{Protocol, Role};
use crate::balance::{Snapshot, StreamKey};
use crate::bridge::Listener;
use crate::shard::traffic::Traffic;

/// A socket as it was when registered: its descriptor and the inode behind it, so a descriptor
/// number reused by another socket after this one closed is never mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SocketId {
    fd: RawFd,
    dev: u64,
    ino: u64,
}

impl SocketId {
    fn of(fd: RawFd) -> Option<SocketId> {
        let (dev, ino) = inode(fd)?;
        Some(SocketId { fd, dev, ino })
    }

    /// Whether the peer has hung up (FIN or RST pending, or an error), checked without waiting;
    /// `false` when the descriptor no longer names this socket.
    fn peer_gone(&self) -> bool {
        if inode(self.fd) != Some((self.dev, self.ino)) {
            return false;
        }
        let mut pfd = libc::pollfd { fd: self.fd, events: libc::POLLRDHUP, revents: 0 };
        // SAFETY: poll reads and writes the one valid pollfd for the duration of the call; a
        // zero timeout never blocks.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }
}

fn inode(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` into the valid, exclusively borrowed `st`.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// Why the shard ended a connection itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forced {
    /// No byte either way for this long while a peer had hung up.
    Stalled(Duration),
    /// No byte either way for `--relay-idle-timeout`, peers there or not (a peer that vanished
    /// without a FIN, an origin that stopped sending).
    Idle(Duration),
    /// An operator disconnected the stream's sessions.
    Disconnected,
    /// Still open when the shutdown's grace time ran out.
    Shutdown,
}

/// What a session is, for log lines about its connection.
#[derive(Clone, Debug)]
pub struct SessionLabel {
    pub key: StreamKey,
    pub protocol: Protocol,
    pub role: Role,
}

impl std::fmt::Display for SessionLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.protocol.name(), self.role.name(), self.key)
    }
}

/// One accepted connection.
#[derive(Debug)]
pub struct Conn {
    pub listener: Listener,
    pub peer: SocketAddr,
    client: Option<SocketId>,
    origin: Cell<Option<SocketId>>,
    /// The session on this connection (the latest, for keep-alive HTTP), kept after it ends so
    /// a later log line can name the stream.
    label: RefCell<Option<SessionLabel>>,
    /// The open session's byte counters.
    traffic: RefCell<Option<Rc<Traffic>>>,
    /// Bytes moved as of the last sweep that saw them change, and when.
    moved: Cell<(u64, Instant)>,
    /// When the open session started.
    opened: Cell<Instant>,
    forced: Cell<Option<Forced>>,
    waker: RefCell<Option<Waker>>,
    /// The local address the client reached, when the protocol code's socket is not the
    /// client's own (behind TLS, [`super::tls`]).
    reached: Cell<Option<SocketAddr>>,
    /// What ends the client's stream cleanly if an operator's disconnect or the shutdown ends
    /// the connection now (a chunked body's last chunk); set by a session whose output is at a
    /// boundary where those bytes may go.
    farewell: Cell<Option<&'static [u8]>>,
}

impl Conn {
    /// A connection accepted on `listener` from `peer`, over the socket `client`.
    pub fn new(listener: Listener, peer: SocketAddr, client: &impl AsRawFd) -> Conn {
        Conn {
            listener,
            peer,
            client: SocketId::of(client.as_raw_fd()),
            origin: Cell::new(None),
            label: RefCell::new(None),
            traffic: RefCell::new(None),
            moved: Cell::new((0, Instant::now())),
            opened: Cell::new(Instant::now()),
            forced: Cell::new(None),
            waker: RefCell::new(None),
            reached: Cell::new(None),
            farewell: Cell::new(None),
        }
    }

    /// The local address the client reached, if the protocol code's socket cannot say
    /// (set behind TLS).
    pub fn reached(&self) -> Option<SocketAddr> {
        self.reached.get()
    }

    pub(super) fn set_reached(&self, local: SocketAddr) {
        self.reached.set(Some(local));
    }

    /// The session now or last on this connection.
    pub fn label(&self) -> Option<SessionLabel> {
        self.label.borrow().clone()
    }

    /// Records the session that starts on this connection and its counters.
    pub(super) fn session_started(&self, label: SessionLabel, traffic: Rc<Traffic>) {
        *self.label.borrow_mut() = Some(label);
        *self.traffic.borrow_mut() = Some(traffic);
        self.moved.set((0, Instant::now()));
        self.opened.set(Instant::now());
    }

    pub(super) fn session_ended(&self) {
        self.traffic.borrow_mut().take();
        self.origin.set(None);
    }

    /// What to send the client if an operator's disconnect or the shutdown ends the
    /// connection while it is so (see the field); `None` when nothing may go then.
    pub fn set_farewell(&self, bytes: Option<&'static [u8]>) {
        self.farewell.set(bytes);
    }

    /// Sends the farewell, if any, as far as the socket takes it at once (never waits): the
    /// client's own socket only, not one behind TLS, whose records the bytes would break.
    fn say_farewell(&self) {
        let (Some(bytes), Some(client), None) = (self.farewell.take(), self.client, self.reached.get()) else {
            return;
        };
        // SAFETY: `bytes` is a valid static slice; the descriptor is the client's socket, still
        // open (the connection's future, which owns it, is dropped after this).
        unsafe {
            libc::send(client.fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        }
    }

    /// Ends the connection: its task returns without polling its future again.
    fn force(&self, why: Forced) {
        self.forced.set(Some(why));
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Whether the open session must end: no byte for `idle` (when set), or for `stall` while a
    /// peer hung up. Keeps track of when bytes last moved.
    fn check(&self, now: Instant, stall: Duration, idle: Option<Duration>) -> Option<Forced> {
        let moved = self.traffic.borrow().as_ref().map(|t| t.bytes_in.get() + t.bytes_out.get())?;
        let (seen, since) = self.moved.get();
        if moved != seen {
            self.moved.set((moved, now));
            return None;
        }
        let quiet = now.saturating_duration_since(since);
        if let Some(idle) = idle.filter(|idle| quiet >= *idle) {
            return Some(Forced::Idle(idle));
        }
        let hung_up = || self.client.is_some_and(|s| s.peer_gone()) || self.origin.get().is_some_and(|s| s.peer_gone());
        (quiet >= stall && hung_up()).then_some(Forced::Stalled(stall))
    }
}

thread_local! {
    /// The connection whose task this shard thread is polling now.
    static CURRENT: RefCell<Option<Rc<Conn>>> = const { RefCell::new(None) };
    /// Set while a [`ConnTask`] polls: a panic then is caught and logged by the shard.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// The message and place of the last panic caught on this thread.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The connection being polled on this thread, if its task is a [`ConnTask`].
pub fn current() -> Option<Rc<Conn>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Registers `socket` as the current connection's origin side (for the stall check) and turns
/// TCP keepalive on for it (see [`set_keepalive`]).
pub fn set_origin(socket: &impl AsRawFd) {
    keepalive(socket.as_raw_fd());
    if let Some(conn) = current() {
        conn.origin.set(SocketId::of(socket.as_raw_fd()));
    }
}

thread_local! {
    /// `--tcp-keepalive-*` of this shard thread's sockets; `None`: off.
    static KEEPALIVE: Cell<Option<crate::config::access::Keepalive>> = const { Cell::new(None) };
}

/// Sets the keepalive times this shard thread's relayed sockets get (its accepted clients and
/// the origins registered with [`set_origin`]).
pub fn set_keepalive(times: Option<crate::config::access::Keepalive>) {
    KEEPALIVE.with(|k| k.set(times));
}

/// Turns TCP keepalive on for `fd` with this thread's times, if any.
pub fn keepalive(fd: RawFd) {
    if let Some(k) = KEEPALIVE.with(Cell::get) {
        crate::util::keepalive(fd, k.idle, k.interval, k.count);
    }
}

/// Installs a panic hook that hands panics caught by a [`ConnTask`] to its log line (message
/// and place) and leaves every other panic to the previous hook.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if CATCHING.with(Cell::get) {
            let place = info.location().map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
            CAUGHT.with(|c| *c.borrow_mut() = Some(format!("{}{place}", payload_text(info.payload()))));
        } else {
            previous(info);
        }
    }));
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Polls `future` once, catching a panic: its message and, with the hook installed, its place.
fn poll_catching<F: Future + ?Sized>(future: Pin<&mut F>, cx: &mut Context<'_>) -> Result<Poll<F::Output>, String> {
    let catching = CATCHING.with(|c| c.replace(true));
    let polled = std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx)));
    CATCHING.with(|c| c.set(catching));
    polled.map_err(|payload| CAUGHT.with(|c| c.borrow_mut().take()).unwrap_or_else(|| payload_text(&*payload)))
}

/// `future` with a panic caught: `Err` with its message (and place) instead of unwinding. The
/// future is never polled again after it panicked.
pub fn catch<F: Future>(future: F) -> Catch<F> {
    Catch { future, panicked: false }
}

/// See [`catch`].
pub struct Catch<F> {
    future: F,
    panicked: bool,
}

impl<F: Future> Future for Catch<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is pinned structurally: `Catch` never moves it out, has no `Drop`
        // and is `Unpin` only when `F` is; `panicked` is a plain flag, not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        if this.panicked {
            return Poll::Ready(Err("polled again after a panic".to_string()));
        }
        // SAFETY: as above; `this.future` stays where the pinned `Catch` holds it.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        match poll_catching(future, cx) {
            Ok(poll) => poll.map(Ok),
            Err(message) => {
                this.panicked = true;
                Poll::Ready(Err(message))
            }
        }
    }
}

/// How a connection's task ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Its future finished.
    Done,
    /// Its future panicked: the message and, with the hook installed, the place.
    Panicked(String),
    /// The shard ended it.
    Forced(Forced),
}

/// A connection's future, polled with its [`Conn`] current, panics caught, and ended early
/// when the shard forces it. The future is dropped (its sockets closed) as soon as it ends.
pub struct ConnTask {
    conn: Rc<Conn>,
    future: Option<super::LocalFuture>,
}

impl ConnTask {
    pub fn new(conn: Rc<Conn>, future: super::LocalFuture) -> Self {
        ConnTask { conn, future: Some(future) }
    }
}

impl Future for ConnTask {
    type Output = Ended;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let conn = self.conn.clone();
        let Some(future) = self.future.as_mut() else {
            return Poll::Ready(Ended::Done);
        };
        if let Some(why) = conn.forced.get() {
            if matches!(why, Forced::Disconnected | Forced::Shutdown) {
                conn.say_farewell();
            }
            self.future = None;
            return Poll::Ready(Ended::Forced(why));
        }
        {
            let mut waker = conn.waker.borrow_mut();
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        let outer = CURRENT.with(|c| c.replace(Some(conn.clone())));
        let polled = poll_catching(future.as_mut(), cx);
        CURRENT.with(|c| *c.borrow_mut() = outer);
        let ended = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(())) => Ended::Done,
            Err(message) => Ended::Panicked(message),
        };
        // Drop the future (and with it the sockets and the session guard) with the connection
        // still current, as when it is polled.
        let outer = CURRENT.with(|c| c.replace(Some(conn)));
        self.future = None;
        CURRENT.with(|c| *c.borrow_mut() = outer);
        Poll::Ready(ended)
    }
}

/// The shard's live connections, for the stall sweep. Bounded by the connection gate
/// (`--max-connections-per-shard`): a connection is here while its permit is held.
#[derive(Debug, Default)]
pub struct ConnTable {
    conns: RefCell<Vec<Weak<Conn>>>,
}

impl ConnTable {
    pub fn insert(&self, conn: &Rc<Conn>) {
        self.conns.borrow_mut().push(Rc::downgrade(conn));
    }

    /// Forgets ended connections and ends stalled and idle ones (see the module
    /// documentation); returns those it ended.
    pub fn sweep(&self, now: Instant, stall: Duration, idle: Option<Duration>) -> Vec<Rc<Conn>> {
        let mut ended = Vec::new();
        self.conns.borrow_mut().retain(|weak| {
            let Some(conn) = weak.upgrade() else {
                return false;
            };
            if conn.forced.get().is_none()
                && let Some(why) = conn.check(now, stall, idle)
            {
                conn.force(why);
                ended.push(conn);
            }
            true
        });
        ended
    }

    /// Ends the connections whose open session `snapshot` says an operator disconnected;
    /// returns those it ended.
    pub fn disconnect(&self, snapshot: &Snapshot) -> Vec<Rc<Conn>> {
        if snapshot.disconnects.is_empty() {
            return Vec::new();
        }
        let mut ended = Vec::new();
        for conn in self.conns.borrow().iter().filter_map(Weak::upgrade) {
            let open = conn.traffic.borrow().is_some();
            let listed =
                || conn.label.borrow().as_ref().is_some_and(|l| snapshot.disconnected(&l.key, conn.opened.get()));
            if conn.forced.get().is_none() && open && listed() {
                conn.force(Forced::Disconnected);
                ended.push(conn);
            }
        }
        ended
    }

    /// Ends every connection still open (the shutdown's grace time ran out): their tasks
    /// return at their next poll, which this wakes, and drop their sockets and sessions.
    pub fn end_all(&self) {
        for conn in self.conns.borrow().iter().filter_map(Weak::upgrade) {
            if conn.forced.get().is_none() {
                conn.force(Forced::Shutdown);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.conns.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn conn_over(socket: &TcpStream) -> Rc<Conn> {
        Rc::new(Conn::new(Listener::Rtmp, socket.peer_addr().unwrap(), socket))
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l.accept().unwrap().0, c)
    }

    fn label() -> SessionLabel {
        SessionLabel {
            key: StreamKey::from_url("rtmp://h/live/a").unwrap(),
            protocol: Protocol::Rtmp,
            role: Role::Play,
        }
    }

    #[test]
    fn a_session_is_stalled_only_when_idle_long_enough_and_a_peer_hung_up() {
        let (ours, theirs) = pair();
        let conn = conn_over(&ours);
        let table = ConnTable::default();
        table.insert(&conn);
        let t0 = Instant::now();
        let stall = Duration::from_secs(5);
        assert!(table.sweep(t0 + stall * 2, stall, None).is_empty(), "no session: never stalled");
        let traffic = Rc::new(Traffic::default());
        conn.session_started(label(), traffic.clone());
        let t1 = Instant::now();
        assert!(table.sweep(t1 + stall * 2, stall, None).is_empty(), "idle, but the client is there");
        drop(theirs);
        traffic.bytes_out.set(10);
        let t2 = t1 + stall * 3;
        assert!(table.sweep(t2, stall, None).is_empty(), "bytes moved since the last sweep");
        assert!(table.sweep(t2 + stall / 2, stall, None).is_empty(), "not idle for long enough");
        let ended = table.sweep(t2 + stall, stall, None);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].forced.get(), Some(Forced::Stalled(stall)));
        assert!(table.sweep(t2 + stall * 2, stall, None).is_empty(), "ended once");
        drop(ended);
        drop(conn);
        table.sweep(t2, stall, None);
        assert!(table.is_empty(), "dropped connections are forgotten");
    }

    #[test]
    fn an_idle_session_is_ended_with_its_peers_still_there() {
        let (ours, _theirs) = pair();
        let conn = conn_over(&ours);
        let table = ConnTable::default();
        table.insert(&conn);
        let traffic = Rc::new(Traffic::default());
        conn.session_started(label(), traffic.clone());
        let (t0, stall, idle) = (Instant::now(), Duration::from_secs(30), Some(Duration::from_secs(60)));
        assert!(table.sweep(t0 + Duration::from_secs(59), stall, idle).is_empty(), "peers there: not stalled");
        traffic.bytes_in.set(1);
        assert!(table.sweep(t0 + Duration::from_secs(100), stall, idle).is_empty(), "a byte moved");
        assert!(table.sweep(t0 + Duration::from_secs(159), stall, idle).is_empty(), "not idle for long enough");
        let ended = table.sweep(t0 + Duration::from_secs(160), stall, idle);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].forced.get(), Some(Forced::Idle(Duration::from_secs(60))));
    }

    #[test]
    fn a_disconnect_ends_only_the_sessions_of_its_stream_opened_before_it() {
        let (ours, _theirs) = pair();
        let (other_sock, _other_peer) = pair();
        let (idle_sock, _idle_peer) = pair();
        let (conn, other, idle) = (conn_over(&ours), conn_over(&other_sock), conn_over(&idle_sock));
        let table = ConnTable::default();
        for c in [&conn, &other, &idle] {
            table.insert(c);
        }
        conn.session_started(label(), Rc::new(Traffic::default()));
        let mut other_label = label();
        other_label.key = StreamKey::from_url("rtmp://h/live/b").unwrap();
        other.session_started(other_label, Rc::new(Traffic::default()));
        *idle.label.borrow_mut() = Some(label()); // a session of the stream that has ended
        let mut snapshot = Snapshot::default();
        assert!(table.disconnect(&snapshot).is_empty(), "nothing listed");
        snapshot.disconnects = vec![(label().key, conn.opened.get())];
        assert!(table.disconnect(&snapshot).is_empty(), "opened at the instant, not before");
        snapshot.disconnects = vec![(label().key, Instant::now() + Duration::from_millis(1))];
        let ended = table.disconnect(&snapshot);
        assert_eq!(ended.len(), 1);
        assert!(Rc::ptr_eq(&ended[0], &conn));
        assert_eq!(conn.forced.get(), Some(Forced::Disconnected));
        assert!(table.disconnect(&snapshot).is_empty(), "ended once");
    }

    #[test]
    fn a_reused_descriptor_is_not_taken_for_the_registered_socket() {
        let (ours, theirs) = pair();
        let id = SocketId::of(ours.as_raw_fd()).unwrap();
        drop(theirs);
        assert!(id.peer_gone());
        let fd = ours.as_raw_fd();
        drop(ours);
        let (again, _keep) = pair();
        let reused = (again.as_raw_fd() == fd).then(|| SocketId::of(fd).unwrap());
        assert!(!id.peer_gone(), "closed or reused: not this socket");
        if let Some(reused) = reused {
            assert_ne!(reused, id);
        }
    }

    #[test]
    fn a_panicking_future_ends_its_task_with_the_message_and_is_dropped() {
        struct Dropped(Rc<Cell<bool>>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let (ours, _theirs) = pair();
        let conn = conn_over(&ours);
        let dropped = Rc::new(Cell::new(false));
        let guard = Dropped(dropped.clone());
        let mut task = ConnTask::new(
            conn.clone(),
            Box::pin(async move {
                let _guard = guard;
                assert!(current().is_some(), "the connection is current while polled");
                futures_lite::future::yield_now().await;
                panic!("boom");
            }),
        );
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(Pin::new(&mut task).poll(&mut cx), Poll::Pending);
        assert!(current().is_none(), "and only then");
        let Poll::Ready(Ended::Panicked(message)) = Pin::new(&mut task).poll(&mut cx) else {
            panic!("the panic was not caught");
        };
        assert!(message.contains("boom"), "{message}");
        assert!(dropped.get(), "the future was dropped at once");
    }

    #[test]
    fn catch_turns_a_panic_into_an_error_and_passes_values_through() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut ok = std::pin::pin!(catch(async { 7 }));
        assert_eq!(ok.as_mut().poll(&mut cx), Poll::Ready(Ok(7)));
        let mut bad = std::pin::pin!(catch(async { panic!("datagram {}", 3) }));
        let Poll::Ready(Err(message)) = bad.as_mut().poll(&mut cx) else { panic!("not caught") };
        assert!(message.contains("datagram 3"), "{message}");
        assert!(matches!(bad.as_mut().poll(&mut cx), Poll::Ready(Err(_))), "never polled again");
    }

    #[test]
    fn a_forced_connection_ends_without_another_poll() {
        let (ours, _theirs) = pair();
        let conn = conn_over(&ours);
        let polls = Rc::new(Cell::new(0));
        let counted = polls.clone();
        let mut task = ConnTask::new(
            conn.clone(),
            Box::pin(futures_lite::future::poll_fn(move |_| {
                counted.set(counted.get() + 1);
                Poll::Pending
            })),
        );
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(Pin::new(&mut task).poll(&mut cx), Poll::Pending);
        conn.force(Forced::Stalled(Duration::from_secs(1)));
        assert_eq!(
            Pin::new(&mut task).poll(&mut cx),
            Poll::Ready(Ended::Forced(Forced::Stalled(Duration::from_secs(1))))
        );
        assert_eq!(polls.get(), 1);
    }
}
