//! The control thread: a tokio current-thread runtime beside the shards. It owns the origin
//! registry, the pin table and the HLS ids, serves the System API, answers the shards' claims
//! and lookups ([`events`]; in redis mode through [`redis`] for what it does not know), keeps
//! the default backend registered, probes unproven origins ([`probe`]), expires origins once a
//! second and publishes a new [`Snapshot`] (origins, pins, HLS ids) to the shards when any of
//! them changed, at most every [`SNAPSHOT_INTERVAL`]. [`auth`] decides who may register and
//! read, for the System API and gRPC alike.
//! It aggregates the shards' once-a-second reports ([`stats`]: traffic, publishers' media,
//! per-shard counters) into [`State`].
//!
//! It stops when every shard has dropped its event sender (the shards have drained), so pins
//! and session counts stay consistent to the end.

pub mod auth;
pub mod dashboard;
pub mod disconnect;
pub mod events;
pub mod grpc;
pub mod grpc_listener;
pub mod health;
pub mod http_server;
pub mod metrics;
pub mod paging;
pub mod probe;
pub mod process;
pub mod redis;
pub mod stats;
pub mod system_api;
pub mod transcode;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::balance::hls::HlsIds;
use crate::balance::ice::IceTable;
use crate::balance::registry::{Limits, Registry};
use crate::balance::session::Protocol;
use crate::balance::{OriginId, Registration, Snapshot, StreamKey};
use crate::bridge::{ClaimReply, ShardEvent};
use crate::config::Config;

/// Least time between two snapshots for the shards: changes meanwhile (new pins, HLS ids,
/// heartbeats) go out together in the next one.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(50);

/// How often the default backend is re-registered (well within any origin TTL).
pub const DEFAULT_BACKEND_INTERVAL: Duration = Duration::from_secs(30);

/// The control thread's state, shared by its tasks on one thread.
pub struct State {
    pub config: Arc<Config>,
    pub registry: Registry,
    /// Bytes per stream, summed over shards.
    pub traffic: HashMap<StreamKey, StreamTraffic>,
    /// HLS `spbhid` ids of the streams the registry knows.
    pub hls: HlsIds,
    /// WebRTC sessions by ICE username.
    pub ice: IceTable,
    /// ICE sessions forgotten because the table was full.
    pub ice_evicted: u64,
    /// Media facts of published streams (RTMP publishers), dropped with their streams.
    pub media: stats::MediaTable,
    /// What each shard last reported; index = shard index, sized to the shard count.
    pub shards: Vec<stats::ShardView>,
    /// Bytes (in, out) per protocol over the process life (kept when streams are forgotten).
    pub protocol_bytes: std::collections::BTreeMap<Protocol, (u64, u64)>,
    /// When the control thread started.
    pub started: Instant,
    /// The process's CPU use, sampled every tick.
    pub cpu: process::CpuSampler,
    /// Redis mode: the client and whether Redis answers.
    pub redis: Option<redis::Shared>,
    /// The transcoding jobs ([`transcode`]).
    pub transcode: crate::transcode::Supervisor,
    /// Streams an operator disconnected, for the shards ([`disconnect`]).
    pub disconnects: disconnect::Disconnects,
    snapshots: watch::Sender<Arc<Snapshot>>,
    /// The registry's, the HLS table's and the disconnects' versions the shards' snapshot shows.
    published: (u64, u64, u64),
    /// No snapshot is built before this (see [`State::publish_snapshot`]).
    next_snapshot: Instant,
}

impl State {
    /// [`State::publish_snapshot`] now, whenever the last one was: for rare changes the shards
    /// must see at once (an origin proven: until then a shard proposes the others).
    pub fn publish_snapshot_now(&mut self) {
        self.next_snapshot = Instant::now();
        self.publish_snapshot();
    }

    /// Sends the shards a new snapshot if the registry or the HLS ids changed since the last
    /// one, unless the last one was sent too recently: then the main loop sends it within
    /// [`SNAPSHOT_INTERVAL`] (or the budget below). A snapshot copies every pin, so building
    /// one costs O(pins) (`benches/balance.rs`: 0.2 ms at 1000 pins, 2.8 ms at 10 000, 38 ms
    /// at 100 000); the next one waits 19 times as long as this one took, so snapshots take
    /// at most about 5% of the control thread however many streams and heartbeats come.
    pub fn publish_snapshot(&mut self) {
        let version = (self.registry.version(), self.hls.version(), self.disconnects.version());
        let started = Instant::now();
        if version == self.published || started < self.next_snapshot {
            return;
        }
        self.published = version;
        let mut snapshot = self.registry.snapshot(started);
        snapshot.version = version.0.wrapping_add(version.1).wrapping_add(version.2);
        (snapshot.hls_ids, snapshot.hls_keys) = self.hls.maps();
        snapshot.disconnects = self.disconnects.list();
        self.snapshots.send_replace(Arc::new(snapshot));
        let took = started.elapsed();
        self.next_snapshot = started + took + (took * 19).max(SNAPSHOT_INTERVAL);
    }

    /// Streams with at least one open session, in key order.
    pub fn active_streams(&self) -> impl Iterator<Item = (&StreamKey, &crate::balance::registry::Stream)> {
        let mut active: Vec<_> = self.registry.streams().filter(|(_, s)| s.open_sessions() > 0).collect();
        active.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        active.into_iter()
    }

    /// A dial to `failed` was refused or timed out: quarantine, and the shards learn it at once.
    fn dial_failed(&mut self, failed: Option<&OriginId>) {
        let Some(id) = failed else { return };
        if self.registry.quarantine(id, Instant::now()) {
            log::warn!(
                "origin {id}: a dial was refused or timed out; no new streams for {:?}, its streams move",
                self.config.origin_quarantine
            );
            self.publish_snapshot();
        }
    }

    /// Answers a claim from the local registry, or says what Redis must be asked: `Err` with
    /// this proxy's choice when the stream has no usable pin here (redis mode).
    fn claim_here(&mut self, key: &StreamKey, proposed: Option<&OriginId>) -> Result<ClaimReply, Option<OriginId>> {
        let now = Instant::now();
        if self.redis.is_none() {
            let result = self.registry.claim(key, proposed, now);
            match &result {
                Ok(origin) => log::debug!("stream {key} pinned to origin {}", origin.id),
                Err(e) => log::debug!("stream {key}: {e}"),
            }
            return Ok(result);
        }
        match self.registry.pinned(key, now) {
            Some(origin) => Ok(Ok(origin.clone())),
            None => Err(self.registry.choose(key, proposed, now).ok().map(|o| o.id.clone())),
        }
    }

    fn on_event(&mut self, event: ShardEvent) {
        let now = Instant::now();
        match event {
            ShardEvent::IceBind { username, session } => {
                log::debug!("webrtc {} {} bound to ICE username {username:?}", session.role.name(), session.key);
                if let Some((evicted, old)) = self.ice.bind(username, session, now) {
                    self.ice_evicted += 1;
                    let n = self.ice_evicted;
                    let line = || {
                        format!(
                            "webrtc: {} ICE sessions remembered (--webrtc-ice-sessions); the least recently used, {} {} ({evicted:?}), forgotten ({n} so far)",
                            self.config.access.webrtc_ice_sessions,
                            old.role.name(),
                            old.key
                        )
                    };
                    // Each is a session that can no longer be routed: the first 16 are warned,
                    // then every power of two, so a flood of offers cannot flood the log.
                    if n.is_power_of_two() || n < 16 {
                        log::warn!("{}", line());
                    } else {
                        log::debug!("{}", line());
                    }
                }
            }
            ShardEvent::IceEnd { resource, username } => match self.ice.end(&resource, username.as_deref()) {
                Some((username, session)) => log::info!(
                    "webrtc {} {}: resource deleted, ICE session {username:?} ended",
                    session.role.name(),
                    session.key
                ),
                None => log::debug!("webrtc: deleted resource {resource:?} names no session"),
            },
            ShardEvent::Report { shard, traffic, media, counters, udp } => {
                self.on_report(shard, traffic, media, *counters, udp, now);
            }
            ShardEvent::Edge { shard, report } => match self.shards.get_mut(shard) {
                Some(view) => view.edge = report,
                None => log::debug!("edge report from shard {shard}, which is not one of {}", self.shards.len()),
            },
            ShardEvent::Session { key, protocol, role, opened, local } => {
                self.registry.session_delta(&key, (protocol, role), opened, now);
                transcode::on_session(self, &key, role == crate::bridge::Role::Publish, opened, local, now);
            }
            // Claims and lookups are routed by `events::dispatch`, never here.
            other => log::error!("control: event {other:?} needs the shared state"),
        }
    }

    fn tick(&mut self) {
        self.cpu.sample(Instant::now());
        let report = self.registry.tick(Instant::now());
        let known: std::collections::HashSet<&StreamKey> = self.registry.streams().map(|(k, _)| k).collect();
        self.traffic.retain(|k, _| known.contains(k));
        stats::tick_media(&mut self.media, &known, Instant::now());
        self.hls.retain(|k| known.contains(k));
        self.ice.expire(Instant::now());
        self.transcode.tick(Instant::now());
        self.disconnects.expire(Instant::now());
        let reports: Vec<Option<Instant>> = self.shards.iter().map(|v| v.last_report).collect();
        for t in self.traffic.values_mut() {
            t.refresh(&reports, Instant::now());
        }
        let ttl = self.registry.ttl();
        for id in &report.expired {
            log::warn!("origin {id} is dead: no heartbeat for {ttl:?}; new streams avoid it");
        }
        for id in &report.forgotten {
            log::info!("origin {id} forgotten: dead for another {ttl:?}");
        }
        for (key, origin) in &report.unpinned {
            log::debug!("stream {key} unpinned from origin {origin}");
        }
        self.publish_snapshot();
    }
}

/// A stream's byte counters and its bit rates.
#[derive(Debug, Default, Clone)]
pub struct StreamTraffic {
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Bits per second into and out of the proxy, over each shard's last report interval
    /// ([`stats::ShardRates`]).
    pub in_bps: u64,
    pub out_bps: u64,
    /// Bytes in and out per protocol.
    pub by_protocol: std::collections::BTreeMap<Protocol, (u64, u64)>,
    pub rates: stats::ShardRates,
}

/// What the control thread needs to start.
pub struct ControlStart {
    pub config: Arc<Config>,
    pub registry: Registry,
    pub snapshots: watch::Sender<Arc<Snapshot>>,
    pub events: mpsc::Receiver<ShardEvent>,
    /// The certificate gRPC is served with (`--grpc-tls`), or `None` for plaintext gRPC.
    pub grpc_certs: Option<Arc<crate::util::certs::Certs>>,
}

/// A fresh registry with the configured TTL, origin limit, quarantine and overload limit.
pub fn new_registry(config: &Config) -> Registry {
    let limits = Limits {
        max_origins: config.max_origins,
        quarantine: config.origin_quarantine,
        max_load_centi: config.origin_max_load_centi,
        ..Limits::default()
    };
    Registry::new(config.origin_ttl, limits)
}

/// The addresses the control thread listens on, once bound.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub system_api: SocketAddr,
    pub grpc: SocketAddr,
}

/// Runs the control thread until the shards are gone. `ready` gets the bound addresses of the
/// System API and gRPC, or the reason one could not be bound.
pub fn run(start: ControlStart, ready: std::sync::mpsc::Sender<Result<Bound, String>>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start the control runtime: {e}")));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, main_loop(start, ready));
}

async fn main_loop(start: ControlStart, ready: std::sync::mpsc::Sender<Result<Bound, String>>) {
    let ControlStart { config, registry, snapshots, mut events, grpc_certs } = start;
    let redis = match config.load_balancer {
        crate::config::LoadBalancer::Redis => match redis::Shared::new(&config.redis) {
            Ok(shared) => Some(shared),
            Err(e) => {
                let _ = ready.send(Err(format!("cannot use redis (--redis-host, PROXY_REDIS_HOST): {e}")));
                return;
            }
        },
        crate::config::LoadBalancer::Memory => None,
    };
    let addr = config.listen.system_api.0;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            let _ =
                ready.send(Err(format!("cannot listen on System API {addr} (--system-api, PROXY_SYSTEM_API): {e}")));
            return;
        }
    };
    let supervisor = match crate::transcode::Supervisor::new(&config.transcode, &config.local_hls) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot transcode (--transcode, --encoder, --local-hls-dir): {e}")));
            return;
        }
    };
    let state = Rc::new(RefCell::new(State {
        config: config.clone(),
        registry,
        traffic: HashMap::new(),
        hls: HlsIds::default(),
        ice: IceTable::new(config.access.webrtc_ice_sessions, config.access.webrtc_ice_ttl),
        ice_evicted: 0,
        media: HashMap::new(),
        shards: stats::shard_views(config.cpus.len()),
        protocol_bytes: Default::default(),
        started: Instant::now(),
        cpu: process::CpuSampler::default(),
        redis,
        transcode: supervisor,
        disconnects: Default::default(),
        snapshots,
        published: (u64::MAX, u64::MAX, u64::MAX),
        next_snapshot: Instant::now(),
    }));
    let grpc_listener = match grpc::bind(config.listen.grpc.0).await {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    state.borrow_mut().publish_snapshot();
    auth::log_policy(&config);
    let grpc_addr = grpc_listener.local_addr().unwrap_or(config.listen.grpc.0);
    let _ = ready.send(Ok(Bound { system_api: listener.local_addr().unwrap_or(addr), grpc: grpc_addr }));
    let (ask_tx, mut asks) = mpsc::channel::<grpc::Ask>(grpc::ASK_QUEUE);
    let grpc_limits = grpc_listener::GrpcLimits {
        max_connections: config.grpc_max_connections,
        idle_timeout: config.grpc_idle_timeout,
        tls: grpc_certs,
    };
    let grpc = tokio::task::spawn(grpc::serve(grpc_listener, grpc_limits, ask_tx, auth::GrpcAuth::new(&config)));
    let api_state = state.clone();
    let api = tokio::task::spawn_local(http_server::serve(
        listener,
        http_server::ServerLimits {
            head_timeout: config.http_request_timeout,
            body_timeout: config.http_request_timeout,
            name: "System API",
            ..Default::default()
        },
        move |req, body, peer| system_api::handle(api_state.clone(), req, body, peer),
    ));
    if let Some(backend) = default_backend(&config) {
        tokio::task::spawn_local(keep_registered(state.clone(), backend));
    }
    if state.borrow().redis.is_some() {
        tokio::task::spawn_local(redis::supervise(state.clone()));
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // New pins and HLS ids reach the shards' snapshot within this, in one copy per interval
    // however many there were.
    let mut publish = tokio::time::interval(SNAPSHOT_INTERVAL);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => events::dispatch(&state, event),
                None => break,
            },
            _ = tick.tick() => {
                state.borrow_mut().tick();
                probe::start_due(&state);
            }
            _ = publish.tick() => state.borrow_mut().publish_snapshot(),
            Some(ask) = asks.recv() => ask(&mut state.borrow_mut()),
        }
    }
    api.abort();
    grpc.abort();
    state.borrow_mut().transcode.shutdown();
    log::debug!("control thread stopped");
}

/// A fresh HLS id: 16 hex digits from the kernel's random source.
pub fn new_hls_id() -> String {
    format!("{:016x}", crate::util::random_u64())
}

/// The default backend's registration (`PROXY_DEFAULT_BACKEND_*`), if enabled.
fn default_backend(config: &Config) -> Option<Registration> {
    let b = config.default_backend.as_ref()?;
    let service = format!("{:08x}", crate::util::random_u64() as u32);
    let list = |v: &Option<String>| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(",");
    let body = format!(
        r#"{{"device_id":"default","ip":"{}","server":"default","service":"{service}","pid":"{}","rtmp":[{:?}],"http":[{}],"api":[{}],"rtc":[{}],"srt":[{}]}}"#,
        b.ip,
        std::process::id(),
        b.rtmp,
        list(&b.http),
        list(&b.api),
        list(&b.rtc),
        list(&b.srt)
    );
    match Registration::from_json(body.as_bytes()) {
        Ok(r) => Some(r),
        Err(e) => {
            log::error!("default backend not registered: {e}");
            None
        }
    }
}

async fn keep_registered(shared: Rc<RefCell<State>>, registration: Registration) {
    let mut every = tokio::time::interval(DEFAULT_BACKEND_INTERVAL);
    let mut first = true;
    loop {
        every.tick().await;
        let redis_mode = {
            let mut state = shared.borrow_mut();
            match state.registry.register_configured(registration.clone(), Instant::now()) {
                Ok(_) if first => {
                    log::info!("default backend {} registered at {}", registration.id(), registration.ip)
                }
                Ok(_) => {}
                Err(e) => log::error!("default backend not registered: {e}"),
            }
            state.publish_snapshot();
            state.redis.is_some()
        };
        first = false;
        if redis_mode {
            redis::write_origin(&shared, &registration, Instant::now()).await;
        }
    }
}
