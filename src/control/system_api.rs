//! The System API (default port 12025): origin registration and the read-only views.
//!
//! | route | answer |
//! |---|---|
//! | `POST /api/v1/srs/register` | `{"code":0,"pid":"<proxy pid>"}`; 400 with the SRS proxy's error text; 401 without the bearer token when auth is on |
//! | `GET /api/v1/versions` | `{"signature":"streamgate","version":..,"commit":..}` |
//! | `GET /api/v1/origins` | every origin: id, device_id, ip, endpoints, seconds since its heartbeat, alive |
//! | `GET /api/v1/streams` | every pinned stream: key, origin, sessions per protocol and role, bytes (in total and per protocol) and rates, and `media` (RTMP publishers: codecs, size, frame rates, frame counts; `null` if never published over RTMP) |
//! | `GET /api/v1/shards` | uptime, bytes per protocol over the process life, and per shard (and in total): connections and sessions accepted and open per listener, connections closed after a panic (`panicked`) or as stalled (`stalled`) per listener, pick failures by reason, age of its last report, its SRT and WebRTC table sizes now and the largest since start |
//! | `GET /metrics` | Prometheus text format ([`super::metrics`]) |
//!
//! Handlers run on the control thread and borrow its state only between awaits.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use serde_json::{Value, json};

use super::State;
use super::http_server::error_response;
use super::stats::{Listener, PickFailure, ShardCounters, StreamMedia};
use crate::balance::Registration;
use crate::balance::endpoint::Endpoint;
use crate::balance::registry::Registered;
use crate::codec::http::{Request, Response};
use crate::shard::tables::TableSizes;

/// Routes one request.
pub async fn handle(state: Rc<RefCell<State>>, req: Request, body: Vec<u8>, peer: SocketAddr) -> Response {
    let mut state = state.borrow_mut();
    match (req.method.as_str(), req.path.as_str()) {
        ("POST" | "PUT", "/api/v1/srs/register") => register(&mut state, &req, &body, peer),
        (_, "/api/v1/srs/register") => method_not_allowed("POST"),
        ("GET" | "HEAD", "/api/v1/versions") => versions(),
        ("GET" | "HEAD", "/api/v1/origins") => origins(&state),
        ("GET" | "HEAD", "/api/v1/streams") => streams(&state),
        ("GET" | "HEAD", "/api/v1/shards") => shards(&state),
        ("GET" | "HEAD", "/metrics") => {
            Response::new(200, super::metrics::CONTENT_TYPE, super::metrics::render(&state, Instant::now()))
        }
        (_, "/api/v1/versions" | "/api/v1/origins" | "/api/v1/streams" | "/api/v1/shards" | "/metrics") => {
            method_not_allowed("GET")
        }
        (method, path) => error_response(404, &format!("no route for {method} {path}")),
    }
}

fn method_not_allowed(allow: &str) -> Response {
    error_response(405, &format!("method not allowed; use {allow}")).with_header("Allow", allow)
}

/// The version body shared by the API servers.
pub fn versions() -> Response {
    Response::json(
        200,
        &json!({
            "signature": "streamgate",
            "version": env!("CARGO_PKG_VERSION"),
            "commit": env!("STREAMGATE_COMMIT"),
        }),
    )
}

fn register(state: &mut State, req: &Request, body: &[u8], peer: SocketAddr) -> Response {
    if let Some(token) = &state.config.register_token
        && !bearer_matches(req.header("authorization"), token)
    {
        log::warn!("register from {peer} refused: missing or wrong bearer token");
        return error_response(401, "Unauthorized").with_header("WWW-Authenticate", "Bearer");
    }
    let registration = match Registration::from_json(body) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("register from {peer} refused: {e}");
            return error_response(400, &e.to_string());
        }
    };
    let summary = describe(&registration);
    match state.registry.register(registration, Instant::now()) {
        Ok(Registered::New) => log::info!("origin registered from {peer}: {summary}"),
        Ok(Registered::Refreshed) => log::debug!("origin heartbeat from {peer}: {summary}"),
        Err(e) => {
            log::warn!("register from {peer} refused: {e}");
            return error_response(503, &e.to_string());
        }
    }
    state.publish_snapshot();
    Response::json(200, &json!({ "code": 0, "pid": std::process::id().to_string() }))
}

/// Constant-time comparison of `Authorization: Bearer <token>` against the expected token.
pub fn bearer_matches(header: Option<&str>, expected: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (given, expected) = (given.trim().as_bytes(), expected.as_bytes());
    let mut diff = given.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ e);
    }
    diff == 0 && !expected.is_empty()
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

fn origins(state: &State) -> Response {
    let now = Instant::now();
    let ttl = state.registry.ttl();
    let list: Vec<Value> = state
        .registry
        .origins()
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
            })
        })
        .collect();
    Response::json(200, &json!({ "code": 0, "ttl_seconds": ttl.as_secs_f64(), "origins": list }))
}

fn streams(state: &State) -> Response {
    let now = Instant::now();
    let mut list: Vec<(&str, Value)> = state
        .registry
        .streams()
        .map(|(key, stream)| {
            let traffic = state.traffic.get(key);
            let sessions: serde_json::Map<String, Value> =
                stream.sessions.iter().map(|((p, r), n)| (format!("{}_{}", p.name(), r.name()), json!(n))).collect();
            let value = json!({
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
                "media": state.media.get(key).map(|m| media(m, now)),
            });
            (key.as_str(), value)
        })
        .collect();
    list.sort_by(|a, b| a.0.cmp(b.0));
    let list: Vec<Value> = list.into_iter().map(|(_, v)| v).collect();
    Response::json(200, &json!({ "code": 0, "streams": list }))
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
    out.insert("pick_failures".into(), by_name(&c.pick_failures, PickFailure::name));
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
            ];
            for (maps, from) in summed {
                for (k, v) in from {
                    *maps.entry(*k).or_default() += v;
                }
            }
            for (k, v) in &c.pick_failures {
                *total.pick_failures.entry(*k).or_default() += v;
            }
            let mut value = counters(c);
            value.insert("index".into(), json!(index));
            let age = view.last_report.map(|t| now.saturating_duration_since(t).as_secs_f64());
            value.insert("report_age_seconds".into(), json!(age));
            value.insert("udp_tables".into(), table_sizes(&view.udp_tables));
            value.insert("udp_tables_peak".into(), table_sizes(&view.udp_tables_peak));
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

#[cfg(test)]
mod tests {
    use super::bearer_matches;

    #[test]
    fn bearer_tokens() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cretX"), "s3cret"));
        assert!(!bearer_matches(Some("bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
        assert!(!bearer_matches(Some("Bearer "), ""));
    }
}
