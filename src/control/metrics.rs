//! Prometheus metrics, text exposition format 0.0.4, at `GET /metrics` on the System API.
//!
//! Everything is read from the control thread's state when scraped: the shards' once-a-second
//! reports (connections, pick failures, bytes), the registry (origins, sessions) and the
//! process (`/proc/self`). Names follow the Prometheus conventions: a `streamgate_` prefix,
//! base units (bytes, seconds, bits per second), `_total` for counters.
//!
//! Stream labels are bounded: per-stream series exist for at most `--metrics-streams` streams
//! (default 100), those moving the most bits per second (in + out) at the scrape; the rest
//! are counted in `streamgate_stream_series_omitted`. Every other label set is bounded by the
//! configuration (shards, listeners, protocols, roles, pick-failure reasons) or by the origin
//! registry, whose dead origins are forgotten after a second TTL.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::State;
use super::health::Level;
use super::process;
use super::stats::ShardView;
use crate::bridge::Listener;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes families of samples.
pub(super) struct Out(String);

impl Out {
    /// Starts a family: its HELP and TYPE lines.
    pub(super) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"");
                escape_label(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(value));
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Integers without a fraction, the rest as Rust prints them; never NaN or infinite.
fn number(v: f64) -> String {
    if !v.is_finite() {
        "0".to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The whole exposition, now.
pub fn render(state: &State, now: Instant) -> String {
    let mut out = Out(String::with_capacity(8 * 1024));
    let o = &mut out;

    o.family("streamgate_build_info", "gauge", "Version and commit of this build (always 1).");
    o.sample(
        "streamgate_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("commit", env!("STREAMGATE_COMMIT"))],
        1.0,
    );
    o.family("streamgate_relay_mode", "gauge", "The relay established streams use (--relay): 1 for the mode in use.");
    o.sample("streamgate_relay_mode", &[("mode", state.config.relay.name())], 1.0);

    let health = state.health(now);
    o.family(
        "streamgate_health",
        "gauge",
        "1 for the current health level (the same rules as gRPC HealthCheck), 0 for the others.",
    );
    for level in [Level::Healthy, Level::Degraded, Level::Unhealthy] {
        o.sample("streamgate_health", &[("level", level.name())], f64::from(u8::from(level == health.level)));
    }
    o.family("streamgate_health_problems", "gauge", "Active problems counted by the health rules.");
    o.sample("streamgate_health_problems", &[], health.problems.len() as f64);

    redis(o, state);
    shards(o, state, now);
    traffic(o, state);
    origins(o, state, now);
    sessions(o, state);
    streams(o, state);
    super::transcode::metrics(o, state);
    edge(o, state);
    process_metrics(o, state, now);
    out.0
}

/// Redis mode only: whether Redis answers, its last round trip, connections opened.
fn redis(o: &mut Out, state: &State) {
    let Some(redis) = &state.redis else { return };
    let status = &redis.status;
    o.family("streamgate_redis_up", "gauge", "Redis mode: 1 while Redis answers, 0 while it does not.");
    o.sample("streamgate_redis_up", &[], f64::from(u8::from(status.up)));
    o.family("streamgate_redis_latency_seconds", "gauge", "Redis mode: the last round trip to Redis.");
    o.sample("streamgate_redis_latency_seconds", &[], status.latency.map_or(0.0, |l| l.as_secs_f64()));
    o.family("streamgate_redis_connects_total", "counter", "Redis mode: connections to Redis opened.");
    o.sample("streamgate_redis_connects_total", &[], status.connects as f64);
}

fn shards(o: &mut Out, state: &State, now: Instant) {
    o.family(
        "streamgate_connections_accepted_total",
        "counter",
        "Connections (UDP: sessions) accepted, per shard and listener.",
    );
    for (i, shard) in state.shards.iter().enumerate() {
        let shard_label = i.to_string();
        for (listener, n) in &shard.counters.accepted {
            o.sample(
                "streamgate_connections_accepted_total",
                &[("shard", &shard_label), ("listener", listener.name())],
                *n as f64,
            );
        }
    }
    let ended = [
        (
            "streamgate_connections_panicked_total",
            "Connections closed (both sides) after a panic in their task, per shard and listener.",
            (|s: &ShardView| &s.counters.panicked) as fn(&ShardView) -> &BTreeMap<Listener, u64>,
        ),
        (
            "streamgate_connections_stalled_total",
            "Connections the shard closed because their session moved no byte for --stall-timeout while a peer had hung up, per shard and listener.",
            |s: &ShardView| &s.counters.stalled,
        ),
        (
            "streamgate_connections_idle_total",
            "Connections the shard closed because their session moved no byte for --relay-idle-timeout, per shard and listener.",
            |s: &ShardView| &s.counters.idle,
        ),
        (
            "streamgate_connections_refused_total",
            "Connections closed at accept because their IP held --max-connections-per-ip, per shard and listener.",
            |s: &ShardView| &s.counters.refused,
        ),
    ];
    for (name, help, counts) in ended {
        o.family(name, "counter", help);
        for (i, shard) in state.shards.iter().enumerate() {
            let shard_label = i.to_string();
            for (listener, n) in counts(shard) {
                o.sample(name, &[("shard", &shard_label), ("listener", listener.name())], *n as f64);
            }
        }
    }
    o.family("streamgate_connections_open", "gauge", "Client connections open now, per shard.");
    for (i, shard) in state.shards.iter().enumerate() {
        o.sample("streamgate_connections_open", &[("shard", &i.to_string())], shard.counters.open as f64);
    }
    o.family(
        "streamgate_shard_report_age_seconds",
        "gauge",
        "Seconds since the shard's last report (shards report once a second; -1 before the first).",
    );
    for (i, shard) in state.shards.iter().enumerate() {
        let age = shard.last_report.map_or(-1.0, |at| now.saturating_duration_since(at).as_secs_f64());
        o.sample("streamgate_shard_report_age_seconds", &[("shard", &i.to_string())], age);
    }
    shard_tables(o, state);
    shard_outcomes(o, state);
}

/// The sizes of each shard's UDP tables.
fn shard_tables(o: &mut Out, state: &State) {
    o.family(
        "streamgate_udp_table_entries",
        "gauge",
        "Entries in a shard's SRT and WebRTC tables now (each has a fixed bound, see the README).",
    );
    for (i, shard) in state.shards.iter().enumerate() {
        let t = &shard.udp_tables;
        let tables = [
            ("srt_sessions", t.srt_sessions),
            ("webrtc_sessions", t.webrtc_sessions),
            ("webrtc_addresses", t.webrtc_addresses),
            ("webrtc_lookups", t.webrtc_lookups),
            ("webrtc_unknown_usernames", t.webrtc_unknown),
        ];
        for (table, n) in tables {
            o.sample("streamgate_udp_table_entries", &[("shard", &i.to_string()), ("table", table)], n as f64);
        }
    }
}

/// What the shards asked the control thread, and the streams they could not give an origin.
fn shard_outcomes(o: &mut Out, state: &State) {
    o.family(
        "streamgate_control_asks_total",
        "counter",
        "Questions a shard asked the control thread and waited for (new pins, HLS ids, ICE usernames it did not know), by kind.",
    );
    for (i, shard) in state.shards.iter().enumerate() {
        for (kind, n) in &shard.counters.control_asks {
            o.sample("streamgate_control_asks_total", &[("shard", &i.to_string()), ("kind", kind.name())], *n as f64);
        }
    }
    let mut failures = BTreeMap::new();
    for shard in &state.shards {
        for (reason, n) in &shard.counters.pick_failures {
            *failures.entry(reason.name()).or_insert(0u64) += n;
        }
    }
    o.family("streamgate_pick_failures_total", "counter", "Clients that could not be given an origin, by reason.");
    for (reason, n) in failures {
        o.sample("streamgate_pick_failures_total", &[("reason", reason)], n as f64);
    }
}

fn traffic(o: &mut Out, state: &State) {
    o.family("streamgate_received_bytes_total", "counter", "Bytes received from clients, by protocol.");
    for (protocol, (bytes_in, _)) in &state.protocol_bytes {
        o.sample("streamgate_received_bytes_total", &[("protocol", protocol.name())], *bytes_in as f64);
    }
    o.family("streamgate_sent_bytes_total", "counter", "Bytes sent to clients, by protocol.");
    for (protocol, (_, bytes_out)) in &state.protocol_bytes {
        o.sample("streamgate_sent_bytes_total", &[("protocol", protocol.name())], *bytes_out as f64);
    }
}

fn origins(o: &mut Out, state: &State, now: Instant) {
    let ttl = state.registry.ttl();
    o.family("streamgate_origin_up", "gauge", "1 while the origin's last heartbeat is within the TTL, else 0.");
    for origin in state.registry.origins() {
        let up = f64::from(u8::from(origin.is_alive(now, ttl)));
        o.sample("streamgate_origin_up", &[("origin", &origin.id.0)], up);
    }
    o.family("streamgate_origin_heartbeat_age_seconds", "gauge", "Seconds since the origin's last heartbeat.");
    for origin in state.registry.origins() {
        let age = now.saturating_duration_since(origin.last_seen).as_secs_f64();
        o.sample("streamgate_origin_heartbeat_age_seconds", &[("origin", &origin.id.0)], age);
    }
}

fn sessions(o: &mut Out, state: &State) {
    let mut by_kind = BTreeMap::new();
    for (_, stream) in state.registry.streams() {
        for ((protocol, role), n) in &stream.sessions {
            *by_kind.entry((protocol.name(), role.name())).or_insert(0u64) += n;
        }
    }
    o.family("streamgate_sessions", "gauge", "Open sessions, by protocol and role (publish or play).");
    for ((protocol, role), n) in by_kind {
        o.sample("streamgate_sessions", &[("protocol", protocol), ("role", role)], n as f64);
    }
    o.family("streamgate_streams", "gauge", "Streams with at least one open session.");
    o.sample("streamgate_streams", &[], state.active_streams().count() as f64);
}

fn streams(o: &mut Out, state: &State) {
    let mut ranked: Vec<_> = state.traffic.iter().collect();
    ranked.sort_by(|a, b| {
        (b.1.in_bps + b.1.out_bps).cmp(&(a.1.in_bps + a.1.out_bps)).then(a.0.as_str().cmp(b.0.as_str()))
    });
    let limit = state.config.metrics_streams;
    let omitted = ranked.len().saturating_sub(limit);
    ranked.truncate(limit);
    type Value = fn(&super::StreamTraffic, Option<&super::stats::StreamMedia>) -> f64;
    let families: [(&str, &str, &str, Value); 5] = [
        ("streamgate_stream_received_bytes_total", "counter", "Bytes received from the stream's clients.", |t, _| {
            t.bytes_in as f64
        }),
        ("streamgate_stream_sent_bytes_total", "counter", "Bytes sent to the stream's clients.", |t, _| {
            t.bytes_out as f64
        }),
        (
            "streamgate_stream_received_bits_per_second",
            "gauge",
            "Bits per second from the stream's clients over the last second.",
            |t, _| t.in_bps as f64,
        ),
        (
            "streamgate_stream_sent_bits_per_second",
            "gauge",
            "Bits per second to the stream's clients over the last second.",
            |t, _| t.out_bps as f64,
        ),
        (
            "streamgate_stream_fps",
            "gauge",
            "Video frames per second of the stream's RTMP publisher over the last second.",
            |_, m| m.map_or(0.0, |m| m.fps),
        ),
    ];
    for (name, kind, help, value) in families {
        o.family(name, kind, help);
        for (key, t) in &ranked {
            o.sample(name, &[("stream", key.as_str())], value(t, state.media.get(*key)));
        }
    }
    o.family(
        "streamgate_stream_series_omitted",
        "gauge",
        "Streams left out of the per-stream series (more than --metrics-streams).",
    );
    o.sample("streamgate_stream_series_omitted", &[], omitted as f64);
}

/// A metric family read from a shard's edge report: name, type, help, value.
type EdgeFamily = (&'static str, &'static str, &'static str, fn(&crate::bridge::EdgeReport) -> u64);

/// `--edge on`: per shard, origin pulls, players, cached bytes and frames skipped.
fn edge(o: &mut Out, state: &State) {
    let views = || state.shards.iter().enumerate().map(|(i, v)| (i.to_string(), &v.edge));
    let families: [EdgeFamily; 5] = [
        (
            "streamgate_edge_pulls",
            "gauge",
            "Edge: origin pulls connected now (one origin connection per stream and shard).",
            |e| e.pulls(),
        ),
        (
            "streamgate_edge_pulls_started_total",
            "counter",
            "Edge: origin pulls started (a failover starts another).",
            |e| e.pulls_started,
        ),
        ("streamgate_edge_players", "gauge", "Edge: players served from the shard's pulls now.", |e| e.players()),
        (
            "streamgate_edge_cache_bytes",
            "gauge",
            "Edge: memory held by the shard's stream rings (GOP caches: entries and their wire forms; at most --edge-cache-bytes per stream).",
            |e| e.cache_bytes(),
        ),
        (
            "streamgate_edge_dropped_frames_total",
            "counter",
            "Edge: frames players skipped to catch up after falling behind --edge-max-lag.",
            |e| e.dropped_frames,
        ),
    ];
    for (name, kind, help, value) in families {
        o.family(name, kind, help);
        for (shard, edge) in views() {
            o.sample(name, &[("shard", &shard)], value(edge) as f64);
        }
    }
}

fn process_metrics(o: &mut Out, state: &State, now: Instant) {
    o.family("process_cpu_seconds_total", "counter", "User and system CPU time of the process, all threads.");
    o.sample("process_cpu_seconds_total", &[], process::cpu_seconds().unwrap_or(state.cpu.total_seconds));
    o.family("process_resident_memory_bytes", "gauge", "Resident memory of the process.");
    o.sample("process_resident_memory_bytes", &[], process::resident_bytes().unwrap_or(0) as f64);
    if let Some(fds) = process::open_fds() {
        o.family("process_open_fds", "gauge", "Open file descriptors of the process.");
        o.sample("process_open_fds", &[], fds as f64);
    }
    let uptime = now.saturating_duration_since(state.started);
    let start = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().saturating_sub(uptime);
    o.family("process_start_time_seconds", "gauge", "When the process started, in seconds since the Unix epoch.");
    o.sample("process_start_time_seconds", &[], start.as_secs_f64().floor());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_numbers_plain() {
        let mut o = Out(String::new());
        o.family("x_total", "counter", "Help.");
        o.sample("x_total", &[("a", "q\"b\\c\nd"), ("z", "1")], 3.0);
        o.sample("x_total", &[], 0.25);
        o.sample("x_total", &[], f64::NAN);
        assert_eq!(
            o.0,
            "# HELP x_total Help.\n# TYPE x_total counter\nx_total{a=\"q\\\"b\\\\c\\nd\",z=\"1\"} 3\nx_total 0.25\nx_total 0\n"
        );
    }
}
