//! Redis mode (`--load-balancer redis`): origins, stream pins, HLS ids and WebRTC ICE usernames
//! shared by every proxy of a fleet through one Redis, under the SRS proxy's key names, JSON
//! and TTLs ([`crate::balance::srs_redis`]), so streamgate and SRS proxies may share it.
//!
//! The local registry stays the data plane's source: shards resolve pinned streams and HLS ids
//! from their snapshots. Redis is asked only for what this proxy does not know yet:
//! - a new stream's pin: one script, atomic in Redis, keeps an existing pin whose origin key
//!   still exists (and is not the origin this proxy saw fail) or else writes this proxy's
//!   choice; so the first proxy to see a stream, whatever the protocol, decides its origin for
//!   the fleet, and a dead (expired, unregistered) or failed origin's pins move;
//! - an HLS id or ICE username another proxy gave out (a segment or STUN request landing here);
//! - origins registered through other proxies: read every [`SYNC_INTERVAL`] (and with each
//!   pin), so picking here knows them;
//! - the fleet's pins of the streams pinned here, read back every [`SYNC_INTERVAL`] (at most
//!   [`PIN_SYNC_BATCH`] at a time): a pin another proxy moved is adopted here for new sessions
//!   (its live ones stay), since a claim answered from the local pin does not ask Redis.
//!
//! Writes: each heartbeat received here (`SET srs-proxy-server:<id> EX ttl`, and the server
//! list updated by a script, atomic, pruning expired keys), unregistrations, new HLS ids and
//! ICE usernames (120 s, refreshed while the stream is known here).
//!
//! Redis down or slow (no answer within [`REDIS_TIMEOUT`]): the connection is dropped and
//! reopened with back-off (0.2 s doubling to 5 s); a new connection counts as up only once
//! Redis has answered on it (a stopped Redis still has its connections accepted by the kernel). Meanwhile live sessions go on, streams
//! pinned here go on (new players included: their pins are local), brand-new streams are
//! refused with the reason, health is degraded and `/metrics` says so. Once Redis is back, this
//! proxy writes back what it knows: its alive origins, its pins (without replacing a pin
//! another proxy wrote meanwhile) and its HLS ids.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use redis::aio::MultiplexedConnection;

use super::State;
use crate::balance::ice::IceSession;
use crate::balance::registry::RegistryError;
use crate::balance::srs_redis::{self, HlsRecord, Keys, RtcRecord, SESSION_TTL};
use crate::balance::{Origin, OriginId, Registration, StreamKey};
use crate::bridge::Role;
use crate::config::RedisConfig;

/// Longest wait for one Redis answer (and for a connection).
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// How often origins registered through other proxies are read.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How often the HLS ids this proxy knows get their TTL back.
pub const HLS_REFRESH: Duration = Duration::from_secs(40);
/// Reconnection back-off: first wait and longest wait.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// Keeps an existing pin whose origin key exists and is not `ARGV[2]`, else pins to `ARGV[1]`
/// if its key exists. Returns `{server key, server JSON}` or nil.
pub const PIN_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[2] then
  local json = redis.call('GET', cur)
  if json then return {cur, json} end
end
if ARGV[1] == '' then return false end
local json = redis.call('GET', ARGV[1])
if not json then return false end
redis.call('SET', KEYS[1], ARGV[1])
return {ARGV[1], json}
";

/// Adds `ARGV[1]` to the server list `KEYS[1]` (or removes it when `ARGV[2]` is `del`), dropping
/// keys that no longer exist; an empty list is written `[]` as Go writes it.
const LIST_SCRIPT: &str = r"
local list = redis.call('GET', KEYS[1])
local keys = {}
if list then
  local ok, decoded = pcall(cjson.decode, list)
  if ok and type(decoded) == 'table' then keys = decoded end
end
local out, seen = {}, false
for _, k in ipairs(keys) do
  if type(k) == 'string' then
    if k == ARGV[1] then seen = true end
    if not (k == ARGV[1] and ARGV[2] == 'del') and redis.call('EXISTS', k) == 1 then table.insert(out, k) end
  end
end
if not seen and ARGV[2] ~= 'del' then table.insert(out, ARGV[1]) end
if #out == 0 then redis.call('SET', KEYS[1], '[]') else redis.call('SET', KEYS[1], cjson.encode(out)) end
return #out
";

/// Keeps an existing HLS id of the stream `KEYS[1]` (refreshing both its keys) or stores
/// `ARGV[1]` under it and under `ARGV[2]`. Returns the existing id, or '' when `ARGV[1]` was
/// stored. `ARGV[3]`: the spbhid key prefix; `ARGV[4]`: the TTL in seconds.
const HLS_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, obj = pcall(cjson.decode, cur)
  if ok and type(obj) == 'table' and type(obj.spbhid) == 'string' and obj.spbhid ~= '' then
    redis.call('EXPIRE', KEYS[1], ARGV[4])
    redis.call('SET', ARGV[3] .. obj.spbhid, cur, 'EX', ARGV[4])
    return obj.spbhid
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
redis.call('SET', ARGV[2], ARGV[1], 'EX', ARGV[4])
return ''
";

/// Whether Redis answers, for health and `/metrics`.
#[derive(Debug, Clone)]
pub struct Status {
    pub up: bool,
    /// Since when it is up or down.
    pub since: Instant,
    /// Why it is down (the last error).
    pub error: Option<String>,
    /// The last round trip.
    pub latency: Option<Duration>,
    /// Connections opened since start.
    pub connects: u64,
}

/// The Redis side of the control thread's state.
pub struct Shared {
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    pub keys: Keys,
    pub status: Status,
    /// Origins whose server key was there at the last sync (one that disappears left the fleet).
    seen: HashSet<OriginId>,
    /// Where the next read-back of this proxy's pins starts ([`sync_pins`]).
    pin_cursor: usize,
}

impl Shared {
    /// The client for `config` (no connection yet; [`supervise`] opens it).
    pub fn new(config: &RedisConfig) -> Result<Shared, String> {
        let mut settings = redis::RedisConnectionInfo::default().set_db(i64::from(config.db)).set_skip_set_lib_name();
        if let Some(password) = &config.password {
            settings = settings.set_password(password);
        }
        let addr = redis::ConnectionAddr::Tcp(config.host.clone(), config.port);
        let info = redis::IntoConnectionInfo::into_connection_info(addr)
            .map_err(|e| e.to_string())?
            .set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        let status = Status {
            up: false,
            since: Instant::now(),
            error: Some("not connected yet".into()),
            latency: None,
            connects: 0,
        };
        Ok(Shared {
            client,
            conn: None,
            keys: Keys::new(config.key_prefix.as_deref()),
            status,
            seen: HashSet::new(),
            pin_cursor: 0,
        })
    }

    fn down(&mut self, error: String) {
        if self.status.up {
            log::warn!("redis: {error}; new streams are refused until it is back");
            self.status.since = Instant::now();
        }
        self.status.up = false;
        self.status.error = Some(error);
        self.conn = None;
    }
}

/// Runs `cmd` on the shared connection within [`REDIS_TIMEOUT`]; a failure marks Redis down.
async fn query<T: redis::FromRedisValue>(shared: &Rc<RefCell<State>>, cmd: &redis::Cmd) -> Result<T, String> {
    let conn = {
        let state = shared.borrow();
        let redis = state.redis.as_ref().ok_or("not in redis mode")?;
        redis.conn.clone().ok_or_else(|| redis.status.error.clone().unwrap_or_else(|| "not connected".into()))?
    };
    let mut conn = conn;
    let started = Instant::now();
    let result = match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<T>(&mut conn)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => Err(e.to_string()),
        Ok(Err(e)) => return Err(e.to_string()), // an answer (a script error): Redis is up
        Err(_) => Err(format!("no answer within {REDIS_TIMEOUT:?}")),
    };
    let mut state = shared.borrow_mut();
    if let Some(redis) = state.redis.as_mut() {
        match &result {
            Ok(_) => redis.status.latency = Some(started.elapsed()),
            Err(e) => redis.down(e.clone()),
        }
    }
    result
}

/// Most commands in one pipeline (write-back, TTL refresh).
const REWRITE_BATCH: usize = 1000;

/// Runs a pipeline like [`query`] runs one command.
async fn pipeline(shared: &Rc<RefCell<State>>, pipe: &redis::Pipeline) -> Result<(), String> {
    let conn = shared.borrow().redis.as_ref().and_then(|r| r.conn.clone());
    let mut conn = conn.ok_or("not connected")?;
    let result = match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {REDIS_TIMEOUT:?}"),
    };
    if let Some(redis) = shared.borrow_mut().redis.as_mut() {
        redis.down(result.clone());
    }
    Err(result)
}

fn script(body: &str, keys: &[&str], args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(body).arg(keys.len()).arg(keys).arg(args);
    cmd
}

/// Keeps the connection open (reconnecting with back-off), writes back what this proxy knows
/// after each (re)connection, reads the fleet's origins every [`SYNC_INTERVAL`] and refreshes
/// HLS ids every [`HLS_REFRESH`].
pub async fn supervise(shared: Rc<RefCell<State>>) {
    let mut backoff = BACKOFF.0;
    let mut refreshed = Instant::now();
    loop {
        let connected = shared.borrow().redis.as_ref().is_some_and(|r| r.conn.is_some());
        if !connected {
            if let Err(e) = connect(&shared).await {
                if let Some(redis) = shared.borrow_mut().redis.as_mut() {
                    redis.down(e);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
                continue;
            }
            backoff = BACKOFF.0;
            rewrite(&shared).await;
        }
        sync(&shared).await;
        sync_pins(&shared).await;
        if refreshed.elapsed() >= HLS_REFRESH {
            refreshed = Instant::now();
            refresh_hls(&shared).await;
        }
        tokio::time::sleep(SYNC_INTERVAL).await;
    }
}

async fn connect(shared: &Rc<RefCell<State>>) -> Result<(), String> {
    let client = shared.borrow().redis.as_ref().map(|r| r.client.clone()).ok_or("not in redis mode")?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| e.to_string())?;
    // Without a password or a database to select, opening sends nothing: a Redis that accepts
    // connections but does not answer (stopped, hung) would count as up until the next
    // command timed out. It is up once it has answered.
    match tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PING").query_async::<()>(&mut conn)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("connected, but no answer to PING within {REDIS_TIMEOUT:?}")),
    }
    let mut state = shared.borrow_mut();
    let redis = state.redis.as_mut().ok_or("not in redis mode")?;
    let down_for = redis.status.since.elapsed();
    redis.conn = Some(conn);
    redis.status =
        Status { up: true, since: Instant::now(), error: None, latency: None, connects: redis.status.connects + 1 };
    log::info!("redis: connected (after {down_for:.1?} without)");
    Ok(())
}

/// Writes what this proxy knows after a (re)connection: its alive origins, its pins (kept where
/// another proxy pinned meanwhile) and its HLS ids.
async fn rewrite(shared: &Rc<RefCell<State>>) {
    let (origins, pins, hls) = {
        let state = shared.borrow();
        let (now, ttl) = (Instant::now(), state.registry.ttl());
        let origins: Vec<_> = state.registry.origins().filter(|o| o.is_alive(now, ttl)).cloned().collect();
        let pins: Vec<_> =
            state.registry.streams().filter_map(|(k, s)| Some((k.clone(), s.pin.as_ref()?.origin.clone()))).collect();
        (origins, pins, state.hls.entries())
    };
    for origin in &origins {
        write_origin(shared, &origin.registration, origin.last_seen).await;
    }
    let keys = keys(shared);
    for chunk in pins.chunks(REWRITE_BATCH) {
        let mut pipe = redis::pipe();
        for (key, id) in chunk {
            pipe.cmd("SET").arg(keys.url(key)).arg(keys.server(id)).arg("NX").ignore();
        }
        if pipeline(shared, &pipe).await.is_err() {
            return;
        }
    }
    for (key, id) in &hls {
        let _ = store_hls(shared, key, id).await;
    }
    log::info!("redis: wrote back {} origins, {} pins, {} HLS ids", origins.len(), pins.len(), hls.len());
}

fn keys(shared: &Rc<RefCell<State>>) -> Keys {
    shared.borrow().redis.as_ref().map(|r| r.keys.clone()).unwrap_or_default()
}

/// Writes a heartbeat heard at `heard`: the server key with the origin TTL (less the time since
/// the heartbeat) and the server list.
pub async fn write_origin(shared: &Rc<RefCell<State>>, reg: &Registration, heard: Instant) {
    let ttl = shared.borrow().registry.ttl();
    let left = ttl.saturating_sub(heard.elapsed());
    if left.is_zero() {
        return;
    }
    let keys = keys(shared);
    let server = keys.server(&reg.id());
    let wall = SystemTime::now() - heard.elapsed();
    let json = srs_redis::server_json(reg, wall);
    let set = redis::cmd("SET").arg(&server).arg(json).arg("PX").arg(left.as_millis() as u64).clone();
    if query::<()>(shared, &set).await.is_ok() {
        let list = script(LIST_SCRIPT, &[&keys.all_servers()], &[&server, "add"]);
        let _ = query::<i64>(shared, &list).await;
    }
}

/// Removes an origin that left (unregistered) from Redis.
pub async fn remove_origin(shared: &Rc<RefCell<State>>, id: &OriginId) {
    let keys = keys(shared);
    let server = keys.server(id);
    if query::<()>(shared, redis::cmd("DEL").arg(&server)).await.is_ok() {
        let _ = query::<i64>(shared, &script(LIST_SCRIPT, &[&keys.all_servers()], &[&server, "del"])).await;
    }
}

/// Reads the fleet's origins: each listed server key's record joins (or refreshes) the local
/// registry; an origin whose key was there at the previous sync and is gone now left the fleet.
async fn sync(shared: &Rc<RefCell<State>>) {
    let keys = keys(shared);
    let Ok(list) = query::<Option<String>>(shared, redis::cmd("GET").arg(keys.all_servers())).await else { return };
    let names: Vec<String> = list.and_then(|l| serde_json::from_str(&l).ok()).unwrap_or_default();
    let prefix = keys.server_prefix();
    let names: Vec<String> = names.into_iter().filter(|n| n.starts_with(&prefix)).take(MAX_SYNC).collect();
    let values: Vec<Option<String>> = if names.is_empty() {
        Vec::new()
    } else {
        match query(shared, redis::cmd("MGET").arg(&names)).await {
            Ok(values) => values,
            Err(_) => return,
        }
    };
    let mut present = HashSet::new();
    let mut state = shared.borrow_mut();
    for (name, value) in names.iter().zip(values) {
        let Some(json) = value else { continue };
        if let Some(id) = learn(&mut state, name, json.as_bytes()) {
            present.insert(id);
        }
    }
    let Some(redis) = state.redis.as_mut() else { return };
    let gone: Vec<OriginId> = redis.seen.difference(&present).cloned().collect();
    redis.seen = present;
    for id in gone {
        if state.registry.unregister(&id).is_some() {
            log::info!("origin {id} left the fleet (its redis key is gone)");
        }
    }
    state.publish_snapshot();
}

/// Most pins read back per sync: a proxy holding more reads them in turns (in the pin table's
/// order, which a growing table reshuffles: a pin may wait a turn or two longer).
pub const PIN_SYNC_BATCH: usize = 1000;

/// Reads back the fleet's pins of the streams pinned here, up to [`PIN_SYNC_BATCH`] per sync
/// (in turns when there are more). A claim answered from the local pin never asks Redis, so
/// where another proxy moved a pin (a failover it saw, or its pin kept over this proxy's at a
/// write-back), this proxy adopts the fleet's origin here: its new sessions of the stream go
/// where the fleet's go within a sync or two; its live sessions stay where they are. A pin
/// Redis lost (flushed, restarted empty without this proxy reconnecting) is written back
/// (`SET NX`, so another proxy's pin written meanwhile wins).
async fn sync_pins(shared: &Rc<RefCell<State>>) {
    let keys = keys(shared);
    let held = held_pins(shared);
    if held.is_empty() {
        return;
    }
    let names: Vec<String> = held.iter().map(|(key, _)| keys.url(key)).collect();
    let Ok(values) = query::<Vec<Option<String>>>(shared, redis::cmd("MGET").arg(&names)).await else { return };
    let mut lost = redis::pipe();
    {
        let mut state = shared.borrow_mut();
        let (prefix, now, ttl) = (keys.server_prefix(), Instant::now(), state.registry.ttl());
        for ((key, here), value) in held.iter().zip(values) {
            let Some(name) = value else {
                lost.cmd("SET").arg(keys.url(key)).arg(keys.server(here)).arg("NX").ignore();
                continue;
            };
            let Some(fleet) = name.strip_prefix(&prefix).map(|id| OriginId(id.to_string())) else { continue };
            // Re-pinned here during the read: this proxy's newer claim stands.
            let unchanged = state.registry.pin(key).is_some_and(|p| p.origin == *here);
            // An origin unknown, dead or failed here keeps this proxy's pin; its next claim
            // through Redis settles it.
            let usable = state.registry.origin(&fleet).is_some_and(|o| o.keeps_pins(now, ttl));
            if fleet == *here || !unchanged || !usable {
                continue;
            }
            if state.registry.set_pin(key, &fleet, now).is_ok() {
                log::info!(
                    "stream {key}: the fleet pinned it to origin {fleet} (was {here} here); new sessions go there"
                );
            }
        }
        state.publish_snapshot();
    }
    if !lost.is_empty() {
        let _ = pipeline(shared, &lost).await;
    }
}

/// The next [`PIN_SYNC_BATCH`] of this proxy's pins, from the cursor on (wrapping to the start).
fn held_pins(shared: &Rc<RefCell<State>>) -> Vec<(StreamKey, OriginId)> {
    let mut state = shared.borrow_mut();
    let state = &mut *state;
    let Some(redis) = state.redis.as_mut() else { return Vec::new() };
    let pins = state.registry.streams().filter_map(|(k, s)| Some((k.clone(), s.pin.as_ref()?.origin.clone())));
    let batch: Vec<_> = pins.skip(redis.pin_cursor).take(PIN_SYNC_BATCH).collect();
    redis.pin_cursor = if batch.len() < PIN_SYNC_BATCH { 0 } else { redis.pin_cursor + batch.len() };
    batch
}

/// Most server keys read per sync.
const MAX_SYNC: usize = crate::balance::registry::MAX_ORIGINS;

/// One server record read from Redis into the local registry; its id, or `None` if unreadable.
fn learn(state: &mut State, name: &str, json: &[u8]) -> Option<OriginId> {
    let (reg, heard) = match srs_redis::parse_server(json) {
        Ok(parsed) => parsed,
        Err(e) => {
            log::debug!("redis: {name} unreadable: {e}");
            return None;
        }
    };
    let id = reg.id();
    let (now, wall) = (Instant::now(), SystemTime::now());
    let age = heard.and_then(|h| wall.duration_since(h).ok()).unwrap_or_default();
    let heard = now.checked_sub(age).unwrap_or(now);
    match state.registry.learn(reg, heard, now) {
        Ok(Some(crate::balance::registry::Registered::New)) => log::info!("origin {id} learned from redis"),
        Ok(_) => {}
        Err(e) => log::debug!("redis: origin {id} not learned: {e}"),
    }
    Some(id)
}

/// Pins `key` through Redis: the fleet's pin if it has a live one (not `failed`), else
/// `proposal`. The origin joins the local registry if it was not known here.
pub async fn claim(
    shared: &Rc<RefCell<State>>,
    key: &StreamKey,
    proposal: Option<&OriginId>,
    failed: Option<&OriginId>,
) -> Result<Arc<Origin>, RegistryError> {
    let keys = keys(shared);
    let proposed = proposal.map(|id| keys.server(id)).unwrap_or_default();
    let excluded = failed.map(|id| keys.server(id)).unwrap_or_default();
    let cmd = script(PIN_SCRIPT, &[&keys.url(key)], &[&proposed, &excluded]);
    let answer = query::<Option<Vec<String>>>(shared, &cmd).await.map_err(RegistryError::Shared)?;
    let no_origin = || RegistryError::Pick(crate::balance::PickError::NoOriginAlive(key.to_string()));
    let [name, json] = answer.and_then(|a| <[String; 2]>::try_from(a).ok()).ok_or_else(no_origin)?;
    let mut state = shared.borrow_mut();
    let id = learn(&mut state, &name, json.as_bytes()).ok_or_else(no_origin)?;
    let now = Instant::now();
    let origin = state.registry.origin(&id).cloned().ok_or_else(no_origin)?;
    state.registry.set_pin(key, &id, now)?;
    log::debug!("stream {key} pinned to origin {id} (redis)");
    Ok(origin)
}

/// Stores `id` as the HLS id of `key` unless the fleet has one: the id to use.
pub async fn store_hls(shared: &Rc<RefCell<State>>, key: &StreamKey, id: &str) -> Result<String, String> {
    let keys = keys(shared);
    let json = serde_json::to_string(&HlsRecord::new(id, key)).unwrap_or_default();
    let ttl = SESSION_TTL.as_secs().to_string();
    let args = [json.as_str(), &keys.spbhid(id), &keys.spbhid_prefix(), &ttl];
    let existing: String = query(shared, &script(HLS_SCRIPT, &[&keys.hls(key)], &args)).await?;
    Ok(if existing.is_empty() { id.to_string() } else { existing })
}

/// The stream another proxy gave HLS id `id` to.
pub async fn load_hls(shared: &Rc<RefCell<State>>, id: &str) -> Result<Option<StreamKey>, String> {
    let json: Option<String> = query(shared, redis::cmd("GET").arg(keys(shared).spbhid(id))).await?;
    let record: Option<HlsRecord> = json.and_then(|j| serde_json::from_str(&j).ok());
    Ok(record.filter(|r| r.spbhid == id).and_then(|r| srs_redis::stream_key(&r.stream_url)))
}

/// Gives the HLS ids this proxy knows their TTL back.
async fn refresh_hls(shared: &Rc<RefCell<State>>) {
    let entries = shared.borrow().hls.entries();
    let keys = keys(shared);
    let ttl = SESSION_TTL.as_secs();
    for chunk in entries.chunks(REWRITE_BATCH) {
        let mut pipe = redis::pipe();
        for (key, id) in chunk {
            pipe.cmd("EXPIRE").arg(keys.hls(key)).arg(ttl).ignore();
            pipe.cmd("EXPIRE").arg(keys.spbhid(id)).arg(ttl).ignore();
        }
        if pipeline(shared, &pipe).await.is_err() {
            return;
        }
    }
}

/// Writes a WebRTC session's ICE username for the fleet (both keys, 120 s).
pub async fn store_ice(shared: &Rc<RefCell<State>>, username: &str, key: &StreamKey) {
    let keys = keys(shared);
    let json =
        serde_json::to_string(&RtcRecord { stream_url: key.to_string(), ufrag: username.into() }).unwrap_or_default();
    let ttl = SESSION_TTL.as_secs();
    for name in [keys.rtc(key), keys.ufrag(username)] {
        let _ = query::<()>(shared, redis::cmd("SET").arg(name).arg(&json).arg("EX").arg(ttl)).await;
    }
}

/// The session of an ICE username another proxy recorded: its stream (the role is not stored
/// in the SRS proxy's record: such sessions count as players here).
pub async fn load_ice(shared: &Rc<RefCell<State>>, username: &str) -> Option<(StreamKey, Role)> {
    let json: Option<String> = query(shared, redis::cmd("GET").arg(keys(shared).ufrag(username))).await.ok()?;
    let record: RtcRecord = serde_json::from_str(&json?).ok()?;
    (record.ufrag == username).then_some(())?;
    Some((srs_redis::stream_key(&record.stream_url)?, Role::Play))
}

/// An [`IceSession`] for a session learned from Redis.
pub fn ice_session(key: StreamKey, origin: &Origin, role: Role) -> IceSession {
    IceSession { key, origin: origin.id.clone(), role, handover: None, ended: Default::default(), resource: None }
}
