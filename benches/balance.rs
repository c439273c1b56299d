//! Stream-key building and picking: the per-connection work before an origin is dialed, with
//! 10, 100 and 1000 registered origins.

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
        let snapshot = reg.snapshot();
        group.bench_with_input(BenchmarkId::new("propose_from_snapshot", n), &n, |b, _| {
            b.iter(|| black_box(snapshot.propose(black_box(&key), now).unwrap().id.0.len()))
        });
        group.bench_with_input(BenchmarkId::new("claim_pinned", n), &n, |b, _| {
            b.iter(|| black_box(reg.claim(black_box(&key), None, now).unwrap().id.0.len()))
        });
        group.bench_with_input(BenchmarkId::new("snapshot", n), &n, |b, _| {
            b.iter(|| black_box(reg.snapshot().origins.len()))
        });
    }
    group.finish();
}

criterion_group!(benches, stream_keys, picking);
criterion_main!(benches);
