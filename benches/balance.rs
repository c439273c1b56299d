//! Stream-key building and picking: the per-connection work before an origin is dialed, with
//! 10, 100 and 1000 registered origins; an established stream's pin from a shard's snapshot,
//! and the cost of a snapshot with 1000 to 100 000 pins.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use streamgate::balance::registry::{Limits, Registry};
use streamgate::balance::{Registration, StreamKey};

fn registry(origins: usize, now: Instant) -> Registry {
    let mut r = Registry::new(Duration::from_secs(300), Limits::default());
    for i in 0..origins {
        let body = format!(
            r#"{{"ip":"10.0.{}.{}","server":"vid-{i}","service":"s{i}","pid":"{i}","rtmp":["1935"]}}"#,
            i / 250,
            i % 250
        );
        r.register(Registration::from_json(body.as_bytes()).unwrap(), now).unwrap();
    }
    r
}

fn stream_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_key");
    group.bench_function("rtmp", |b| {
        b.iter(|| StreamKey::from_rtmp(black_box("rtmp://live.example.com:1935/live"), black_box("stream?token=1")))
    });
    group.bench_function("http", |b| {
        b.iter(|| StreamKey::from_http(black_box(Some("127.0.0.1:18080")), black_box("/live/stream.flv"), None))
    });
    group.finish();
}

fn picking(c: &mut Criterion) {
    let now = Instant::now();
    let key = StreamKey::from_rtmp("rtmp://127.0.0.1/live", "stream").unwrap();
    let mut group = c.benchmark_group("pick");
    for n in [10usize, 100, 1000] {
        let mut reg = registry(n, now);
        let snapshot = reg.snapshot(now);
        group.bench_with_input(BenchmarkId::new("propose_from_snapshot", n), &n, |b, _| {
            b.iter(|| black_box(snapshot.propose(black_box(&key), now).unwrap().id.0.len()))
        });
        group.bench_with_input(BenchmarkId::new("claim_pinned", n), &n, |b, _| {
            b.iter(|| black_box(reg.claim(black_box(&key), None, now).unwrap().id.0.len()))
        });
        group.bench_with_input(BenchmarkId::new("snapshot", n), &n, |b, _| {
            b.iter(|| black_box(reg.snapshot(now).origins.len()))
        });
    }
    group.finish();
}

/// What a shard does for an established stream (its pin from the snapshot) against what the
/// control thread does for a claim, and what a new snapshot costs with many pins (the control
/// thread builds one at most every 50 ms while pins or HLS ids change).
fn pins(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("pins");
    for streams in [1000usize, 10_000, 100_000] {
        let mut reg = registry(100, now);
        let keys: Vec<StreamKey> =
            (0..streams).map(|i| StreamKey::from_rtmp("rtmp://127.0.0.1/live", &format!("s{i}")).unwrap()).collect();
        for key in &keys {
            reg.claim(key, None, now).unwrap();
        }
        let snapshot = reg.snapshot(now);
        let key = &keys[streams / 2];
        group.bench_with_input(BenchmarkId::new("pinned_from_snapshot", streams), &streams, |b, _| {
            b.iter(|| black_box(snapshot.pinned(black_box(key), now).unwrap().id.0.len()))
        });
        group.bench_with_input(BenchmarkId::new("snapshot_with_pins", streams), &streams, |b, _| {
            b.iter(|| black_box(reg.snapshot(now).pins.len()))
        });
    }
    group.finish();
}

criterion_group!(benches, stream_keys, picking, pins);
criterion_main!(benches);
