//! Output: one progress line per interval on stderr, then the summary as a table on stderr
//! and (with `--json`) as one JSON object on one line of stdout.
//!
//! Progress line, per interval (rates per second over that interval; `open` is a gauge,
//! `setups` / `cycles` / `errors` are counts within the interval; `tx` is publishers' bytes):
//! `[  12.0s] rx 9.6 MB/s 76.5 Mbit/s | video 1250/s audio 2150/s key 50/s | tx 0.2 MB/s |
//! open 51 | setups 0 | cycles 0 | errors 0`
//!
//! JSON keys: `url play_url protocol seconds threads publishers players churn paced`;
//! received / sent:
//! `bytes_received rx_mbit_per_s bytes_sent tx_mbit_per_s messages video_frames audio_frames
//! keyframes video_fps audio_fps video_fps_per_player rx_mbit_per_s_per_player`; connections:
//! `connections_opened setups setups_per_sec churn_cycles churn_cycles_per_sec open_at_end
//! players_without_media_at_end`; latencies `first_media_ms` and `setup_ms`, each
//! `{count p50 p90 p99 mean max}` (null without samples); `errors_total`, `errors` (count by
//! kind, `rtmp_status:CODE` / `http_status:CODE` per status, only kinds that occurred),
//! `error_examples` (first message per key); the generator's own use: `cpu_seconds cpu_user_seconds
//! cpu_system_seconds cpu_seconds_per_gib_received cpu_utilization max_rss_kib` (getrusage of
//! the whole process, all threads, so runs can subtract or compare it).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Ctx;
use crate::stats::{Histogram, Snapshot};

const MB: f64 = 1e6;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Gauges read just before the run stops (the runtimes then drop every connection).
#[derive(Debug, Clone, Copy)]
pub struct EndState {
    /// Run time in seconds, start to stop.
    pub elapsed: f64,
    /// Connections open at the end.
    pub open: i64,
    /// Players open at the end that never received audio/video.
    pub waiting_media: i64,
}

/// Prints progress lines until `--duration` passes or `stop_early()` is true; returns the
/// state at the end. The caller then stops the workers.
pub fn progress(ctx: &Ctx, started: Instant, stop_early: impl Fn() -> bool) -> EndState {
    let end = started + Duration::from_secs_f64(ctx.args.duration);
    let every = Duration::from_secs_f64(ctx.args.report_every);
    let (mut next, mut last, mut last_at) = (started + every, ctx.stats.snapshot(), started);
    loop {
        let now = Instant::now();
        if now >= end || stop_early() {
            break;
        }
        if now >= next {
            let snap = ctx.stats.snapshot();
            line(ctx, &snap.since(&last), now - last_at, now - started);
            (last, last_at, next) = (snap, now, next + every);
            continue;
        }
        std::thread::sleep(next.min(end).saturating_duration_since(now).min(Duration::from_millis(100)));
    }
    let stats = &ctx.stats;
    let (open, waiting_media) = (stats.open.load(Relaxed), stats.waiting_media.load(Relaxed));
    EndState { elapsed: started.elapsed().as_secs_f64(), open, waiting_media }
}

fn line(ctx: &Ctx, d: &Snapshot, span: Duration, at: Duration) {
    let s = span.as_secs_f64().max(1e-3);
    let rate = |n: u64| n as f64 / s;
    eprintln!(
        "[{:7.1}s] rx {:.1} MB/s {:.1} Mbit/s | video {:.0}/s audio {:.0}/s key {:.0}/s | tx {:.1} MB/s | \
         open {} | setups {} | cycles {} | errors {}",
        at.as_secs_f64(),
        rate(d.rx_bytes) / MB,
        rate(d.rx_bytes) * 8.0 / MB,
        rate(d.video),
        rate(d.audio),
        rate(d.keyframes),
        rate(d.tx_bytes) / MB,
        ctx.stats.open.load(Relaxed),
        d.setups,
        d.cycles,
        d.errors,
    );
}

/// Builds the summary; prints the table on stderr and, with `--json`, the JSON on stdout.
pub fn summary(ctx: &Ctx, end: &EndState) {
    let (a, s, cpu) = (&ctx.args, ctx.stats.snapshot(), crate::cpu::usage());
    let secs = end.elapsed.max(1e-3);
    let per_s = |n: u64| n as f64 / secs;
    let gib_rx = s.rx_bytes as f64 / GIB;
    let per_player = |x: f64| (a.players > 0).then(|| x / a.players as f64);
    let summary = json!({
        "url": a.url,
        "play_url": a.play_url.as_deref().unwrap_or(&a.url),
        "protocol": ctx.play.protocol.name(),
        "seconds": secs,
        "threads": a.threads,
        "publishers": a.publishers,
        "players": a.players,
        "churn": a.churn,
        "paced": a.paced,
        "bytes_received": s.rx_bytes,
        "rx_mbit_per_s": per_s(s.rx_bytes) * 8.0 / MB,
        "bytes_sent": s.tx_bytes,
        "tx_mbit_per_s": per_s(s.tx_bytes) * 8.0 / MB,
        "messages": s.messages,
        "video_frames": s.video,
        "audio_frames": s.audio,
        "keyframes": s.keyframes,
        "video_fps": per_s(s.video),
        "audio_fps": per_s(s.audio),
        "video_fps_per_player": per_player(per_s(s.video)),
        "rx_mbit_per_s_per_player": per_player(per_s(s.rx_bytes) * 8.0 / MB),
        "connections_opened": ctx.stats.opened.load(Relaxed),
        "setups": s.setups,
        "setups_per_sec": per_s(s.setups),
        "churn_cycles": s.cycles,
        "churn_cycles_per_sec": per_s(s.cycles),
        "open_at_end": end.open,
        "players_without_media_at_end": end.waiting_media,
        "first_media_ms": latency(&ctx.stats.ttfm),
        "setup_ms": latency(&ctx.stats.setup),
        "errors_total": s.errors,
        "errors": ctx.stats.errors_by_kind(),
        "error_examples": ctx.stats.examples(),
        "cpu_seconds": cpu.total_s(),
        "cpu_user_seconds": cpu.user_s,
        "cpu_system_seconds": cpu.system_s,
        "cpu_seconds_per_gib_received": (gib_rx > 0.0).then(|| cpu.total_s() / gib_rx),
        "cpu_utilization": cpu.total_s() / secs,
        "max_rss_kib": cpu.max_rss_kib,
    });
    table(&summary);
    if a.json {
        println!("{summary}");
    }
}

fn latency(h: &Histogram) -> Value {
    json!({
        "count": h.count(),
        "p50": h.quantile_ms(0.50),
        "p90": h.quantile_ms(0.90),
        "p99": h.quantile_ms(0.99),
        "mean": h.mean_ms(),
        "max": h.max_ms(),
    })
}

/// The summary as aligned `name  value` rows on stderr.
fn table(v: &Value) {
    let num = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let opt = |k: &str| v.get(k).and_then(Value::as_f64);
    let rows = [
        ("duration", format!("{:.1} s", num("seconds"))),
        ("received", format!("{:.1} MB ({:.1} Mbit/s)", num("bytes_received") / MB, num("rx_mbit_per_s"))),
        ("sent (publishers)", format!("{:.1} MB ({:.1} Mbit/s)", num("bytes_sent") / MB, num("tx_mbit_per_s"))),
        ("video frames", format!("{} ({:.1}/s)", num("video_frames"), num("video_fps"))),
        ("audio frames", format!("{} ({:.1}/s)", num("audio_frames"), num("audio_fps"))),
        ("keyframes", format!("{}", num("keyframes"))),
        ("per player", per_player(opt("video_fps_per_player"), opt("rx_mbit_per_s_per_player"))),
        ("connections opened", format!("{}", num("connections_opened"))),
        ("setups", format!("{} ({:.1}/s)", num("setups"), num("setups_per_sec"))),
        ("churn cycles", format!("{} ({:.1}/s)", num("churn_cycles"), num("churn_cycles_per_sec"))),
        (
            "open at end",
            format!("{} ({} players without media)", num("open_at_end"), num("players_without_media_at_end")),
        ),
        ("time to first media", latency_row(v.get("first_media_ms"))),
        ("setup time", latency_row(v.get("setup_ms"))),
        ("cpu (generator)", cpu_row(&opt)),
        ("errors", format!("{}", num("errors_total"))),
    ];
    eprintln!("---- streamgate-load summary ----");
    for (name, value) in rows {
        eprintln!("{name:<22}{value}");
    }
    let examples = v.get("error_examples");
    for (kind, n) in v.get("errors").and_then(Value::as_object).into_iter().flatten() {
        let example = examples.and_then(|e| e.get(kind)).and_then(Value::as_str).unwrap_or_default();
        eprintln!("  {kind:<20} {n}  (e.g. {example})");
    }
}

fn latency_row(l: Option<&Value>) -> String {
    let get = |q: &str| l.and_then(|l| l.get(q)).and_then(Value::as_f64);
    let p = |q: &str| get(q).map_or("-".to_owned(), |x| format!("{x:.1}"));
    let count = l.and_then(|l| l.get("count")).and_then(Value::as_u64).unwrap_or(0);
    format!("p50 {} p90 {} p99 {} max {} ms (n={count})", p("p50"), p("p90"), p("p99"), p("max"))
}

fn per_player(fps: Option<f64>, mbit: Option<f64>) -> String {
    match (fps, mbit) {
        (Some(f), Some(m)) => format!("{f:.1} video frames/s, {m:.2} Mbit/s"),
        _ => "-".to_owned(),
    }
}

fn cpu_row(get: &dyn Fn(&str) -> Option<f64>) -> String {
    let per_gib = get("cpu_seconds_per_gib_received").map_or("-".to_owned(), |x| format!("{x:.2}"));
    format!(
        "{:.2} s user + {:.2} s sys = {:.2} s ({:.0}% of one core), {per_gib} s/GiB received, max RSS {:.0} MiB",
        get("cpu_user_seconds").unwrap_or(0.0),
        get("cpu_system_seconds").unwrap_or(0.0),
        get("cpu_seconds").unwrap_or(0.0),
        get("cpu_utilization").unwrap_or(0.0) * 100.0,
        get("max_rss_kib").unwrap_or(0.0) / 1024.0,
    )
}
