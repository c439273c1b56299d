//! The System API (default port 12025): origin registration and the read-only views.
//!
//! | route | answer |
//! |---|---|
//! | `POST /api/v1/srs/register` | `{"code":0,"pid":"<proxy pid>"}`; 400 with the error text SRS tooling knows or the bound a field broke; 401 without the bearer token when auth is on; 403 from a peer outside `--register-allow`; 503 when the origin table is full of proven origins |
//! | `POST /api/v1/srs/unregister` | an origin leaves at once (body: its register body, or `{"id":"<server>-<service>-<pid>"}`): `{"code":0,"id":..}`; 404 for an unknown origin; who may call it as for register |
//! | `POST /api/v1/origins/drain` | `{"id":..,"draining":true}`: the origin takes no new streams, its streams stay; `false` ends it; 404 for an unknown origin; as for register |
//! | `POST /api/v1/streams/disconnect` | `{"key":"<vhost>/<app>/<stream>"}`: every session of the stream open now (TCP and UDP, on every shard) is closed within about a second ([`super::disconnect`]): `{"code":0,"key":..,"sessions":<open now>}`; 404 for an unknown stream; who may call it as for register |
//! | `GET /api/v1/versions` | `{"signature":"streamgate","version":..,"commit":..}` |
//! | `GET /api/v1/origins` | a page of origins: id, device_id, ip, endpoints, seconds since its heartbeat, alive, proven |
//! | `GET /api/v1/streams` | a page of streams: key, origin, sessions per protocol and role, bytes (in total and per protocol) and rates, and `media` (RTMP publishers: codecs, size, frame rates, frame counts; `null` if never published over RTMP) |
//! | `GET /api/v1/shards` | uptime, bytes per protocol over the process life, and per shard (and in total): connections and sessions accepted and open per listener, connections closed after a panic (`panicked`) or as stalled (`stalled`), idle (`idle`, `--relay-idle-timeout`) or refused at accept (`refused`, `--max-connections-per-ip`) per listener, pick failures by reason, age of its last report, its SRT and WebRTC table sizes now and the largest since start |
//! | `GET /api/v1/listeners` | the shard listeners' addresses, and the URLs a browser reaches the HTTP stream and HTTP API listeners at (for the dashboard's players) |
//! | `GET /`, `/dashboard/...` | the dashboard ([`super::dashboard`]): built-in files, open (the page reads the routes above with the operator's token) |
//! | `GET /metrics` | Prometheus text format ([`super::metrics`]) |
//!
//! Who may call what is [`super::auth`]'s; the two lists are paged ([`super::paging`]), so no
//! answer grows with the registry. Handlers run on the control thread and borrow its state only
//! between awaits.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use serde_json::{Value, json};

use super::State;
use super::auth::{self, Need};
use super::http_server::error_response;
use super::paging::{self, Page};
use super::stats::StreamMedia;
use crate::balance::endpoint::Endpoint;
use crate::balance::registry::Registered;
use crate::balance::{OriginId, Registration};
use crate::bridge::TableSizes;
use crate::bridge::{ControlAsk, Listener, PickFailure, ShardCounters};
use crate::codec::http::{Request, Response};

/// What a path needs from its caller.
fn need(path: &str) -> Need {
    match path {
        "/api/v1/srs/register" | "/api/v1/srs/unregister" | "/api/v1/origins/drain" | "/api/v1/streams/disconnect" => {
            Need::Register
        }
        "/api/v1/origins" | "/api/v1/streams" | "/api/v1/shards" | "/api/v1/listeners" => Need::Admin,
        "/metrics" => Need::Metrics,
        _ => Need::Nothing,
    }
}

/// What a request changed that Redis must hear of (redis mode).
enum Shared {
    Nothing,
    Registered(Box<Registration>),
    Left(OriginId),
}

/// Checks who is asking, then routes one request.
pub async fn handle(shared: Rc<RefCell<State>>, req: Request, body: Vec<u8>, peer: SocketAddr) -> Response {
    let need = need(&req.path);
    let mut change = Shared::Nothing;
    let resp = {
        let mut state = shared.borrow_mut();
        if let Err(e) = auth::check_http(&state.config, &req, peer, need) {
            match need {
                Need::Register => log::warn!("register from {peer} refused: {e}"),
                _ => log::debug!("{} {} from {peer} refused: {e}", req.method, req.path),
            }
            return e.response();
        }
        route(&mut state, &req, &body, peer, &mut change)
    };
    if need == Need::Register {
        super::probe::start_due(&shared);
    }
    if shared.borrow().redis.is_some() {
        match change {
            Shared::Registered(reg) => super::redis::write_origin(&shared, &reg, Instant::now()).await,
            Shared::Left(id) => super::redis::remove_origin(&shared, &id).await,
            Shared::Nothing => {}
        }
    }
    resp
}

fn route(state: &mut State, req: &Request, body: &[u8], peer: SocketAddr, change: &mut Shared) -> Response {
    let page = || Page::from_query(req.query.as_deref());
    match (req.method.as_str(), req.path.as_str()) {
        ("POST" | "PUT", "/api/v1/srs/register") => register(state, body, peer, change),
        ("POST", "/api/v1/srs/unregister") => unregister(state, body, peer, change),
        ("POST", "/api/v1/origins/drain") => drain(state, body, peer),
        ("POST", "/api/v1/streams/disconnect") => disconnect(state, body, peer),
        (_, "/api/v1/srs/register" | "/api/v1/srs/unregister" | "/api/v1/origins/drain")
        | (_, "/api/v1/streams/disconnect") => method_not_allowed("POST"),
        ("GET" | "HEAD", "/api/v1/versions") => crate::version::versions(),
        ("GET" | "HEAD", "/api/v1/origins") => {
            page().map_or_else(|e| error_response(400, &e.to_string()), |p| origins(state, &p))
        }
        ("GET" | "HEAD", "/api/v1/streams") => {
            page().map_or_else(|e| error_response(400, &e.to_string()), |p| streams(state, &p))
        }
        ("GET" | "HEAD", "/api/v1/shards") => shards(state),
        ("GET" | "HEAD", "/api/v1/listeners") => super::dashboard::listeners(&state.config, req),
        ("GET" | "HEAD", "/metrics") => {
            Response::new(200, super::metrics::CONTENT_TYPE, super::metrics::render(state, Instant::now()))
        }
        (_, "/api/v1/versions" | "/api/v1/origins" | "/api/v1/streams" | "/api/v1/shards" | "/api/v1/listeners")
        | (_, "/metrics") => method_not_allowed("GET"),
        (_, path) if super::dashboard::owns(path) => super::dashboard::serve(&state.config, req),
        (method, path) => error_response(404, &format!("no route for {method} {path}")),
    }
}

fn method_not_allowed(allow: &str) -> Response {
    error_response(405, &format!("method not allowed; use {allow}")).with_header("Allow", allow)
}

fn register(state: &mut State, body: &[u8], peer: SocketAddr, change: &mut Shared) -> Response {
    let registration = match Registration::from_json(body) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("register from {peer} refused: {e}");
            return error_response(400, &e.to_string());
        }
    };
    let summary = describe(&registration);
    *change = Shared::Registered(Box::new(registration.clone()));
    match state.registry.register_from(registration, peer.ip(), Instant::now()) {
        Ok(Registered::New) => log::info!("origin registered from {peer}: {summary}"),
        Ok(Registered::Refreshed) => log::debug!("origin heartbeat from {peer}: {summary}"),
        Ok(Registered::Evicted(old)) => {
            log::info!("origin registered from {peer} in the place of unproven origin {old} (table full): {summary}")
        }
        Err(e) => {
            log::warn!("register from {peer} refused: {e}");
            *change = Shared::Nothing;
            return error_response(503, &e.to_string());
        }
    }
    state.publish_snapshot();
    Response::json(200, &json!({ "code": 0, "pid": std::process::id().to_string() }))
}

/// The origin a body names: `{"id":..}`, or `server`, `service` and `pid` as in a registration.
fn origin_named(body: &[u8]) -> Result<OriginId, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("parse body: {e}"))?;
    if let Some(id) = value.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()) {
        return Ok(OriginId(id.to_string()));
    }
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::trim).filter(|v| !v.is_empty());
    match (field("server"), field("service"), field("pid")) {
        (Some(server), Some(service), Some(pid)) => Ok(OriginId(format!("{server}-{service}-{pid}"))),
        _ => Err("name the origin: \"id\", or \"server\", \"service\" and \"pid\" as registered".into()),
    }
}

fn unregister(state: &mut State, body: &[u8], peer: SocketAddr, change: &mut Shared) -> Response {
    let id = match origin_named(body) {
        Ok(id) => id,
        Err(e) => return error_response(400, &e),
    };
    let Some(gone) = state.registry.unregister(&id) else {
        return error_response(404, &format!("no origin {id}"));
    };
    log::info!("origin {id} unregistered from {peer}: it takes no more sessions; its streams move");
    state.publish_snapshot();
    *change = Shared::Left(gone.id.clone());
    Response::json(200, &json!({ "code": 0, "id": id.0 }))
}

fn drain(state: &mut State, body: &[u8], peer: SocketAddr) -> Response {
    let id = match origin_named(body) {
        Ok(id) => id,
        Err(e) => return error_response(400, &e),
    };
    let draining =
        serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("draining")?.as_bool()).unwrap_or(true);
    if !state.registry.set_draining(&id, draining) {
        return error_response(404, &format!("no origin {id}"));
    }
    match draining {
        true => log::info!("origin {id} draining (asked by {peer}): no new streams, its streams stay"),
        false => log::info!("origin {id} no longer draining (asked by {peer})"),
    }
    state.publish_snapshot();
    Response::json(200, &json!({ "code": 0, "id": id.0, "draining": draining }))
}

/// Ends the stream's sessions on every shard within about a second ([`super::disconnect`]).
fn disconnect(state: &mut State, body: &[u8], peer: SocketAddr) -> Response {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error_response(400, &format!("parse body: {e}")),
    };
    let Some(name) = value.get("key").and_then(Value::as_str) else {
        return error_response(
            400,
            "name the stream: {\"key\":\"<vhost>/<app>/<stream>\"} as /api/v1/streams lists it",
        );
    };
    let Some((key, stream)) = state.registry.streams().find(|(k, _)| k.as_str() == name) else {
        return error_response(404, &format!("no stream {name}"));
    };
    let (key, sessions) = (key.clone(), stream.open_sessions());
    log::info!("stream {key}: its {sessions} sessions are being disconnected (asked by {peer})");
    state.disconnects.request(key.clone(), Instant::now());
    state.publish_snapshot();
    Response::json(200, &json!({ "code": 0, "key": key.as_str(), "sessions": sessions }))
}

fn describe(r: &Registration) -> String {
    let list = |l: &[Endpoint]| l.iter().map(Endpoint::to_string).collect::<Vec<_>>().join(",");
    format!(
        "id={} device={:?} ip={} rtmp=[{}] http=[{}] api=[{}] srt=[{}] rtc=[{}]",
        r.id(),
        r.device_id,
        r.ip,
        list(&r.rtmp),
        list(&r.http),
        list(&r.api),
        list(&r.srt),
        list(&r.rtc)
    )
}

fn endpoints(list: &[Endpoint]) -> Value {
    list.iter().map(|e| Value::String(e.to_string())).collect()
}

fn origins(state: &State, page: &Page) -> Response {
    let now = Instant::now();
    let registry = &state.registry;
    let ttl = registry.ttl();
    let mut list = registry.origins_after(page.after.as_deref());
    let chosen: Vec<_> = list.by_ref().take(page.limit).collect();
    let more = list.next().is_some();
    let values: Vec<Value> = chosen
        .iter()
        .map(|o| {
            let r = &o.registration;
            json!({
                "id": o.id.0,
                "device_id": r.device_id,
                "ip": r.ip.to_string(),
                "server": r.server,
                "service": r.service,
                "pid": r.pid,
                "endpoints": {
                    "rtmp": endpoints(&r.rtmp), "http": endpoints(&r.http), "api": endpoints(&r.api),
                    "srt": endpoints(&r.srt), "rtc": endpoints(&r.rtc),
                },
                "heartbeat_age_seconds": now.saturating_duration_since(o.last_seen).as_secs_f64(),
                "registered_seconds": now.saturating_duration_since(o.first_seen).as_secs_f64(),
                "alive": o.is_alive(now, ttl),
                "draining": o.draining,
                "quarantined_seconds": o.quarantined_until.filter(|_| o.quarantined(now)).map(|u| u.saturating_duration_since(now).as_secs_f64()),
                "overloaded": o.overloaded,
                "load_per_cpu": r.load_centi.map(|l| f64::from(l) / 100.0),
                "proven": o.proven(),
                "proof": o.proof.map(|p| p.name()),
                "probe_failures": registry.probe_failures(&o.id),
            })
        })
        .collect();
    let last = chosen.last().map(|o| o.id.0.as_str());
    let (unproven, probing) = registry.unproven();
    let mut answer = json!({ "code": 0, "ttl_seconds": ttl.as_secs_f64(), "unproven": unproven, "probing": probing });
    extend(&mut answer, page.fields("/api/v1/origins", registry.origin_count(), last, more));
    answer["origins"] = Value::Array(values);
    Response::json(200, &answer)
}

fn extend(answer: &mut Value, fields: [(&'static str, Value); 3]) {
    for (name, value) in fields {
        answer[name] = value;
    }
}

fn streams(state: &State, page: &Page) -> Response {
    let now = Instant::now();
    let all = state.registry.streams().map(|(key, stream)| (key.as_str(), (key, stream)));
    let (chosen, more) = paging::smallest_after(all, page.after.as_deref(), page.limit);
    let jobs = super::transcode::routes(&state.transcode);
    let list: Vec<Value> = chosen
        .iter()
        .map(|(_, (key, stream))| {
            let traffic = state.traffic.get(*key);
            let sessions: serde_json::Map<String, Value> =
                stream.sessions.iter().map(|((p, r), n)| (format!("{}_{}", p.name(), r.name()), json!(n))).collect();
            json!({
                "key": key.as_str(),
                "origin": stream.pin.as_ref().map(|p| p.origin.0.as_str()),
                "pinned_seconds": stream.pin.as_ref().map(|p| now.saturating_duration_since(p.since).as_secs_f64()),
                "sessions": sessions,
                "total_sessions": stream.open_sessions(),
                "bytes_in": traffic.map_or(0, |t| t.bytes_in),
                "bytes_out": traffic.map_or(0, |t| t.bytes_out),
                "in_kbps": traffic.map_or(0, |t| t.in_bps / 1000),
                "out_kbps": traffic.map_or(0, |t| t.out_bps / 1000),
                "bytes_by_protocol": traffic.map_or_else(serde_json::Map::new, |t| t
                    .by_protocol
                    .iter()
                    .map(|(p, (i, o))| (p.name().to_string(), json!({ "bytes_in": i, "bytes_out": o })))
                    .collect()),
                "local": super::stats::edge_totals(&state.shards, key).is_some_and(|e| e.local),
                "media": state.media.get(*key).map(|m| media(m, now)),
                "transcode": jobs.get(*key).map(super::transcode::json),
                "edge": super::stats::edge_totals(&state.shards, key).map(|e| json!({
                    "pulls": e.pulls,
                    "players": e.players,
                    "cache_bytes": e.cache_bytes,
                    "dropped_frames": e.dropped_frames,
                    "max_lag_bytes": e.max_lag_bytes,
                    "players_behind": e.players_behind.iter().map(|(shard, p)| json!({
                        "shard": shard,
                        "player": p.player,
                        "peer": p.peer.to_string(),
                        "lag_bytes": p.lag_bytes,
                        "dropped_frames": p.dropped_frames,
                    })).collect::<Vec<_>>(),
                })),
            })
        })
        .collect();
    let last = chosen.last().map(|(k, _)| *k);
    let mut answer = json!({ "code": 0 });
    extend(&mut answer, page.fields("/api/v1/streams", state.registry.stream_count(), last, more));
    answer["streams"] = Value::Array(list);
    Response::json(200, &answer)
}

fn table_sizes(t: &TableSizes) -> Value {
    json!({
        "srt_sessions": t.srt_sessions,
        "webrtc_sessions": t.webrtc_sessions,
        "webrtc_addresses": t.webrtc_addresses,
        "webrtc_lookups": t.webrtc_lookups,
        "webrtc_unknown_usernames": t.webrtc_unknown,
    })
}

fn media(m: &StreamMedia, now: Instant) -> Value {
    json!({
        "video_codec": m.video_codec,
        "audio_codec": m.audio_codec,
        "width": m.width,
        "height": m.height,
        "meta_fps": m.meta_fps,
        "fps": (m.fps * 100.0).round() / 100.0,
        "video_frames": m.video_frames,
        "audio_frames": m.audio_frames,
        "keyframes": m.keyframes,
        "dropped_frames": m.dropped_frames,
        "publishing": m.publishing_since.is_some(),
        "publishing_seconds": m.publishing_since.map(|t| now.saturating_duration_since(t).as_secs_f64()),
        "encoder": m.encoder,
        "audio_sample_rate": m.audio_sample_rate,
        "audio_channels": m.audio_channels,
    })
}

fn by_name<K: Copy>(map: &BTreeMap<K, u64>, name: impl Fn(&K) -> &'static str) -> Value {
    map.iter().map(|(k, v)| (name(k).to_string(), json!(v))).collect::<serde_json::Map<_, _>>().into()
}

fn counters(c: &ShardCounters) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    out.insert("open".into(), json!(c.open));
    out.insert("open_by_listener".into(), by_name(&c.open_by_listener, Listener::name));
    out.insert("accepted".into(), by_name(&c.accepted, Listener::name));
    out.insert("panicked".into(), by_name(&c.panicked, Listener::name));
    out.insert("stalled".into(), by_name(&c.stalled, Listener::name));
    out.insert("idle".into(), by_name(&c.idle, Listener::name));
    out.insert("refused".into(), by_name(&c.refused, Listener::name));
    out.insert("pick_failures".into(), by_name(&c.pick_failures, PickFailure::name));
    out.insert("control_asks".into(), by_name(&c.control_asks, ControlAsk::name));
    out
}

fn shards(state: &State) -> Response {
    let now = Instant::now();
    let mut total = ShardCounters::default();
    let list: Vec<Value> = state
        .shards
        .iter()
        .enumerate()
        .map(|(index, view)| {
            let c = &view.counters;
            total.open += c.open;
            let summed = [
                (&mut total.accepted, &c.accepted),
                (&mut total.open_by_listener, &c.open_by_listener),
                (&mut total.panicked, &c.panicked),
                (&mut total.stalled, &c.stalled),
                (&mut total.idle, &c.idle),
                (&mut total.refused, &c.refused),
            ];
            for (maps, from) in summed {
                for (k, v) in from {
                    *maps.entry(*k).or_default() += v;
                }
            }
            for (k, v) in &c.pick_failures {
                *total.pick_failures.entry(*k).or_default() += v;
            }
            for (k, v) in &c.control_asks {
                *total.control_asks.entry(*k).or_default() += v;
            }
            let mut value = counters(c);
            value.insert("index".into(), json!(index));
            let age = view.last_report.map(|t| now.saturating_duration_since(t).as_secs_f64());
            value.insert("report_age_seconds".into(), json!(age));
            value.insert("udp_tables".into(), table_sizes(&view.udp_tables));
            value.insert("udp_tables_peak".into(), table_sizes(&view.udp_tables_peak));
            let edge = &view.edge;
            value.insert(
                "edge".into(),
                json!({
                    "streams": edge.streams.len(),
                    "pulls": edge.pulls(),
                    "pulls_started": edge.pulls_started,
                    "players": edge.players(),
                    "cache_bytes": edge.cache_bytes(),
                    "dropped_frames": edge.dropped_frames,
                }),
            );
            Value::Object(value)
        })
        .collect();
    let bytes: serde_json::Map<String, Value> = state
        .protocol_bytes
        .iter()
        .map(|(p, (i, o))| (p.name().to_string(), json!({ "bytes_in": i, "bytes_out": o })))
        .collect();
    Response::json(
        200,
        &json!({
            "code": 0,
            "uptime_seconds": now.saturating_duration_since(state.started).as_secs_f64(),
            "bytes_by_protocol": bytes,
            "total": counters(&total),
            "shards": list,
        }),
    )
}
