//! Shards: one glommio `LocalExecutor` per chosen CPU, pinned to it, owning its connections
//! from accept to close. Each shard binds every TCP listener (RTMP, HTTP stream) itself with SO_REUSEPORT (glommio
//! always sets it), so the kernel spreads new connections across shards and no connection ever
//! moves between threads. Shard state is `!Send` and lock-free; what a shard needs from the rest
//! of the process arrives through its [`ShardLink`].
//!
//! Connection gate: a shard takes a permit *before* `accept` (at most
//! `--max-connections-per-shard` open), so past the cap new clients wait in the kernel's
//! backlog instead of being accepted and starved; a warning is logged when the cap is hit.
//! When `accept` fails for lack of descriptors or kernel memory, the loop backs off (100 ms
//! growing to 1 s) with one warning per episode and one info line when it ends
//! ([`crate::util::backoff::AcceptBackoff`]) instead of spinning.
//!
//! Shutdown: when the shutdown signal flips, every accept loop stops, then the shard waits up
//! to `--grace-quit-timeout` for its connections to finish (and ends those left), its UDP
//! sessions close, and the protocols' [`Services::finish`] runs (the access callbacks' end
//! notices go out) before its executor returns.

pub mod conn;
pub mod counters;
pub mod fault;
pub mod limits;
pub mod media;
pub mod ports;
pub mod preflight;
pub mod relay;
pub mod session;
pub mod tables;
pub mod tls;
pub mod traffic;
pub mod udp;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::{TcpListener, TcpStream, UdpSocket};
use glommio::sync::{Gate, Semaphore};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use tokio::sync::watch;

use crate::bridge::Listener;
use crate::bridge::{ShardEvent, ShardLink};
use crate::config::Config;

/// Per-executor io_uring buffer registration: 1 MiB keeps three rings per shard under an
/// 8 MiB memlock limit for non-root users; sockets do not use it.
const IO_MEMORY: usize = 1 << 20;

/// One shard's shared state, behind an `Rc` for its tasks.
pub struct Shard {
    pub index: usize,
    pub config: Arc<Config>,
    pub link: ShardLink,
    /// Per-connection byte counters, reported to the control thread once a second.
    pub traffic: traffic::TrafficTable,
    /// Sizes of the SRT and WebRTC tables, reported once a second.
    pub udp: tables::UdpTables,
    /// The RTMP publishers' media inspectors, reported once a second.
    pub media: media::MediaTable,
    /// Accepted and open connections per listener, pick failures; reported once a second.
    pub counters: Rc<counters::Counters>,
    /// Live TCP connections, swept for stalled sessions once a second.
    pub conns: conn::ConnTable,
    /// Session-close events waiting for room in the event queue.
    pub closing: Rc<session::Closing>,
    /// Connections per IP and sessions per stream, shared by every shard.
    pub limits: Arc<limits::Limits>,
    gate: Gate,
    /// Flips to `true` when shutdown starts.
    shutdown: watch::Receiver<bool>,
    permits: Rc<Semaphore>,
    saturated: Cell<bool>,
    /// When the last per-IP refusal was logged as a warning.
    refused_warned: Cell<Option<std::time::Instant>>,
}

impl Shard {
    /// Connections open on this shard now.
    pub fn open_connections(&self) -> u64 {
        self.config.max_connections_per_shard as u64 - self.permits.available()
    }

    /// Whether shutdown has started (the shard no longer accepts and is draining).
    pub fn is_stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves once shutdown starts.
    pub async fn stopping(&self) {
        stopped(self.shutdown.clone()).await
    }

    /// Runs `task` beside the shard's connections, as something the shard's drain waits for
    /// (an edge pull, a local stream's forward, a reporter): such a task must end by itself once
    /// shutdown has started and it has nothing left to serve ([`Shard::is_stopping`]). A
    /// detached task instead would outlive the shard's executor holding the shard, and with it
    /// the control thread's event sender, so the process would not exit until
    /// `--force-quit-timeout`. `false` (and `task` dropped) once the drain has begun.
    pub fn spawn_background(&self, task: impl Future<Output = ()> + 'static) -> bool {
        match self.gate.spawn(task) {
            Ok(task) => {
                task.detach();
                true
            }
            Err(_) => false,
        }
    }
}

/// What a shard reports once its listeners are bound (or why they are not).
pub type Ready = Result<(), String>;

/// A future a shard runs as a task.
pub type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

/// What a shard serves: its listeners and, for each, the code that serves it. The shard binds,
/// gates and accepts; it knows no protocol (the table comes from [`crate::proxy::services`]).
#[derive(Clone, Debug)]
pub struct Services {
    pub tcp: Vec<TcpService>,
    pub udp: Vec<UdpService>,
    /// The limits every shard shares (one table for the process).
    pub limits: Arc<limits::Limits>,
    /// Run once at shutdown, after the shard's connections and UDP sessions are closed and
    /// before it exits: what the protocols still owe (end notices).
    pub finish: fn(Rc<Shard>) -> LocalFuture,
}

/// A TCP listener: each accepted connection runs `serve` in its own task.
#[derive(Clone, Debug)]
pub struct TcpService {
    pub listener: Listener,
    pub addr: SocketAddr,
    /// What it is, for the startup error: `RTMP (--rtmp-server, PROXY_RTMP_SERVER)`.
    pub what: &'static str,
    pub serve: fn(Rc<Shard>, TcpStream, SocketAddr) -> LocalFuture,
    /// TLS in front of `serve` ([`tls`]): the certificate, or `None` for a plain listener.
    pub tls: Option<Arc<tls::Certs>>,
}

/// A UDP listener: `serve` runs on its socket until the future it is given (shutdown) ends.
#[derive(Clone, Debug)]
pub struct UdpService {
    pub listener: Listener,
    pub addr: SocketAddr,
    pub what: &'static str,
    pub serve: fn(Rc<Shard>, UdpSocket, LocalFuture) -> LocalFuture,
}

/// Starts shard `index` on `cpu`, serving `services`.
pub fn spawn(
    index: usize,
    cpu: usize,
    config: Arc<Config>,
    services: Services,
    link: ShardLink,
    shutdown: watch::Receiver<bool>,
    ready: std::sync::mpsc::Sender<Ready>,
) -> glommio::Result<ExecutorJoinHandle<()>, ()> {
    LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("shard-{index}"))
        .io_memory(IO_MEMORY)
        .spawn(move || run(index, config, services, link, shutdown, ready))
}

/// Binds every listener of `services`, or says which one could not be bound.
fn bind(services: &Services) -> Result<(Vec<TcpListener>, Vec<UdpSocket>), String> {
    let refused =
        |what: &str, addr: SocketAddr, e: &dyn std::fmt::Display| format!("cannot listen on {what} {addr}: {e}");
    let tcp = services.tcp.iter().map(|s| TcpListener::bind(s.addr).map_err(|e| refused(s.what, s.addr, &e)));
    let udp = services.udp.iter().map(|s| udp::bind(s.addr).map_err(|e| refused(s.what, s.addr, &e)));
    Ok((tcp.collect::<Result<_, _>>()?, udp.collect::<Result<_, _>>()?))
}

async fn run(
    index: usize,
    config: Arc<Config>,
    services: Services,
    link: ShardLink,
    shutdown: watch::Receiver<bool>,
    ready: std::sync::mpsc::Sender<Ready>,
) {
    let (tcp, udp) = match bind(&services) {
        Ok(bound) => bound,
        Err(e) => return drop(ready.send(Err(e))),
    };
    let _ = ready.send(Ok(()));
    conn::set_keepalive(config.access.keepalive);
    let shard = Rc::new(Shard {
        index,
        permits: Rc::new(Semaphore::new(config.max_connections_per_shard as u64)),
        config,
        link,
        traffic: traffic::TrafficTable::default(),
        udp: tables::UdpTables::default(),
        media: media::MediaTable::default(),
        counters: Rc::default(),
        conns: conn::ConnTable::default(),
        closing: Rc::default(),
        limits: services.limits.clone(),
        gate: Gate::new(),
        shutdown: shutdown.clone(),
        saturated: Cell::new(false),
        refused_warned: Cell::new(None),
    });
    let reporter = glommio::spawn_local(report_every_second(shard.clone()));
    let datagrams: Vec<_> = services
        .udp
        .iter()
        .zip(udp)
        .map(|(service, socket)| {
            glommio::spawn_local((service.serve)(shard.clone(), socket, Box::pin(stopped(shutdown.clone()))))
        })
        .collect();
    let accepting: Vec<_> = services
        .tcp
        .iter()
        .zip(tcp)
        .map(|(service, listener)| {
            glommio::spawn_local(accept_loop(shard.clone(), listener, service.clone(), shutdown.clone()))
        })
        .collect();
    for task in accepting {
        task.await;
    }
    drain(&shard).await;
    for task in datagrams {
        task.await;
    }
    (services.finish)(shard.clone()).await;
    drop(reporter);
    report(&shard).await;
}

/// `f`'s output, or `None` if `limit` passes first (then `f` is dropped). The one timeout of
/// the data plane.
pub async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// Resolves once shutdown starts.
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
}

pub use crate::bridge::report::REPORT_INTERVAL;

async fn report_every_second(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(REPORT_INTERVAL).await;
        shard.conns.sweep(
            std::time::Instant::now(),
            shard.config.stall_timeout,
            shard.config.access.relay_idle_timeout,
        );
        let snapshot = shard.link.snapshots.borrow().clone();
        shard.conns.disconnect(&snapshot);
        report(&shard).await;
    }
}

/// Sends the control thread the session closes that found its queue full, then one report:
/// traffic and media since the previous one, and the counters (cumulative). Waits for room in
/// the event queue (the reporter, never a relay).
async fn report(shard: &Shard) {
    shard.closing.flush(&shard.link.events).await;
    let event = ShardEvent::Report {
        shard: shard.index,
        traffic: shard.traffic.take(),
        media: shard.media.take(std::time::Instant::now()),
        counters: Box::new(shard.counters.snapshot()),
        udp: shard.udp.get(),
    };
    let _ = shard.link.events.send(event).await;
}

/// Accepts on `listener` until shutdown, handing each connection to the service in its own
/// task.
async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    service: TcpService,
    mut shutdown: watch::Receiver<bool>,
) {
    let (shard, kind) = (&shard, service.listener);
    let name = kind.name();
    let mut backoff = crate::util::backoff::AcceptBackoff::new(format!("{name} on shard {}", shard.index));
    loop {
        if *shutdown.borrow() {
            break;
        }
        let next = async {
            let permit = acquire(shard).await?;
            Some((permit, listener.accept().await))
        };
        let stop = async {
            let _ = shutdown.changed().await;
            None
        };
        let Some((permit, accepted)) = future::or(next, stop).await else {
            break;
        };
        let stream = match backoff.check(accepted, std::time::Instant::now()) {
            Ok(s) => s,
            Err(wait) => {
                // Out of descriptors: the connection stays in the backlog, so retrying at once
                // would spin; wait (100 ms growing to 1 s), one warning per episode.
                glommio::timer::sleep(wait).await;
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let per_ip = match shard.limits.connection(kind, peer.ip()) {
            Ok(slot) => slot,
            Err(limit) => {
                refused(shard, kind, peer, limit);
                continue; // dropped: closed at once
            }
        };
        let _ = stream.set_nodelay(true);
        conn::keepalive(std::os::fd::AsRawFd::as_raw_fd(&stream));
        let open = shard.counters.accepted(kind);
        let conn = Rc::new(conn::Conn::new(kind, peer, &stream));
        shard.conns.insert(&conn);
        let served = match &service.tls {
            Some(certs) => tls::serve(shard.clone(), stream, peer, certs.clone(), service.serve),
            None => (service.serve)(shard.clone(), stream, peer),
        };
        let task = conn::ConnTask::new(conn.clone(), served);
        let owner = shard.clone();
        let spawned = shard.gate.spawn(async move {
            let ended = task.await;
            ended_early(&owner, &conn, ended);
            drop(open);
            drop(per_ip);
            drop(permit);
        });
        match spawned {
            Ok(task) => drop(task.detach()),
            Err(_) => break, // the gate closed: shutting down
        }
    }
    log::debug!("shard {}: stopped accepting {name}", shard.index);
}

/// Counts and logs (once, with the stream) a connection whose task panicked or that the shard
/// ended; its sockets are closed and its session reported closed by then.
fn ended_early(shard: &Shard, conn: &conn::Conn, ended: conn::Ended) {
    let what = conn.label().map_or_else(|| format!("{} connection", conn.listener.name()), |l| l.to_string());
    match ended {
        conn::Ended::Done => {}
        conn::Ended::Panicked(message) => {
            shard.counters.panicked(conn.listener);
            log::error!("{what} from {}: closed both sides after a panic in its task: {message}", conn.peer);
        }
        conn::Ended::Forced(conn::Forced::Idle(after)) => {
            shard.counters.idle(conn.listener);
            log::info!(
                "{what} from {}: closed both sides: no byte either way for {after:?} (--relay-idle-timeout)",
                conn.peer
            );
        }
        conn::Ended::Forced(conn::Forced::Stalled(after)) => {
            shard.counters.stalled(conn.listener);
            log::error!(
                "{what} from {}: closed both sides: it moved no byte for {after:?} while its peer had hung up (its task was no longer woken)",
                conn.peer
            );
        }
        conn::Ended::Forced(conn::Forced::Shutdown) => {
            log::info!(
                "{what} from {}: closed both sides: still open when the shutdown's grace time ran out",
                conn.peer
            );
        }
        conn::Ended::Forced(conn::Forced::Disconnected) => {
            log::info!("{what} from {}: closed both sides: an operator disconnected the stream's sessions", conn.peer);
        }
    }
}

/// Counts and logs a connection closed at accept because its IP holds `limit` already; one
/// warning per IP and listener every ten seconds at most, the rest at debug.
fn refused(shard: &Shard, kind: Listener, peer: SocketAddr, limit: u32) {
    shard.counters.refused(kind);
    let now = std::time::Instant::now();
    let last = shard.refused_warned.get();
    if last.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(10)) {
        shard.refused_warned.set(Some(now));
        log::warn!(
            "shard {}: {} connection from {peer} refused: {} already holds {limit} (--max-connections-per-ip); further refusals for 10 s at debug",
            shard.index,
            kind.name(),
            peer.ip()
        );
    } else {
        log::debug!("{} connection from {peer} refused: --max-connections-per-ip {limit}", kind.name());
    }
}

async fn acquire(shard: &Rc<Shard>) -> Option<glommio::sync::StaticPermit> {
    if let Ok(permit) = shard.permits.try_acquire_static_permit(1) {
        shard.saturated.set(false);
        return Some(permit);
    }
    if !shard.saturated.replace(true) {
        log::warn!(
            "shard {}: {} connections open, the --max-connections-per-shard cap; new clients wait",
            shard.index,
            shard.config.max_connections_per_shard
        );
    }
    shard.permits.acquire_static_permit(1).await.ok()
}

async fn drain(shard: &Rc<Shard>) {
    let open = shard.open_connections();
    let grace = shard.config.grace_quit_timeout;
    if open > 0 {
        log::info!("shard {}: draining {open} connections for up to {grace:?}", shard.index);
    }
    // One close future for the whole drain: the gate panics if its close future is dropped
    // before the last task leaves (vendored glommio 0.9 `GateInner::notify_closed`).
    let closing = shard.gate.close();
    futures_lite::pin!(closing);
    if within(grace, closing.as_mut()).await.is_none() {
        log::warn!(
            "shard {}: closing {} connections still open after {grace:?}",
            shard.index,
            shard.open_connections()
        );
        // End them here, on the shard, rather than leave their tasks to the executor's
        // teardown: their sockets close, their sessions report closed, and nothing they hold
        // (the bridge's sender above all, which keeps the control thread running) outlives
        // the shard.
        shard.conns.end_all();
        if within(Duration::from_secs(1), closing.as_mut()).await.is_none() {
            log::warn!("shard {}: {} connections did not end when told to", shard.index, shard.open_connections());
        }
    }
}
