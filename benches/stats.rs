//! The cost of collecting the shards' statistics: `TrafficTable::take` and `MediaTable::take`
//! (what the once-a-second reporter does) with 100 / 1000 / 10000 connections, the counters'
//! snapshot, and the publisher inspector's throughput over RTMP publish byte streams (a real
//! ffmpeg capture, and an ffmpeg FLV file re-chunked at 128 and 60000 bytes).

use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamgate::balance::StreamKey;
use streamgate::balance::session::Protocol;
use streamgate::bridge::{Listener, PickFailure};
use streamgate::codec::flv;
use streamgate::codec::rtmp::message::{self, Message};
use streamgate::codec::rtmp::{ChunkEncoder, Inspector};
use streamgate::shard::counters::Counters;
use streamgate::shard::media::MediaTable;
use streamgate::shard::traffic::TrafficTable;

/// ffmpeg 5.1 publishing 2 s of 320x180 x264 + AAC, the bytes after C2 (chunk size 4096).
const FFMPEG_PUBLISH: &[u8] = include_bytes!("../tests/data/media/ffmpeg_publish_320x180.rtmp");
/// 1 s of 640x360 x264 + AAC as an FLV file.
const FLV_640X360: &[u8] = include_bytes!("../tests/data/media/x264_640x360.flv");

fn keys(n: usize) -> Vec<StreamKey> {
    // About 10 connections per stream, as players fan out.
    (0..n).map(|i| StreamKey::from_rtmp("rtmp://127.0.0.1/live", &format!("s{}", i / 10)).unwrap()).collect()
}

fn collecting(c: &mut Criterion) {
    let mut group = c.benchmark_group("stats_collect");
    for n in [100usize, 1000, 10_000] {
        let table = TrafficTable::default();
        let conns: Vec<_> = keys(n).iter().map(|k| table.register(k, Protocol::Rtmp)).collect();
        group.bench_with_input(BenchmarkId::new("traffic_take", n), &n, |b, _| {
            b.iter(|| {
                for t in &conns {
                    t.bytes_out.set(t.bytes_out.get() + 4096);
                }
                black_box(table.take().len())
            })
        });
        // Media: one probe per publisher, each having read a real publish (codecs, metadata
        // with its encoder string, frame counts), reporting every second.
        let media = MediaTable::default();
        let now = Instant::now();
        let probes: Vec<_> = (0..n)
            .map(|i| {
                let key = StreamKey::from_rtmp("rtmp://127.0.0.1/live", &format!("p{i}")).unwrap();
                let probe = media.register(&key, now);
                probe.feed(FFMPEG_PUBLISH);
                probe
            })
            .collect();
        let mut t = now;
        group.bench_with_input(BenchmarkId::new("media_take", n), &n, |b, _| {
            b.iter(|| {
                t += Duration::from_secs(1);
                black_box(media.take(t).len())
            })
        });
        drop(probes);
    }
    let counters = Rc::new(Counters::default());
    let _open = counters.accepted(Listener::Rtmp);
    counters.pick_failed(PickFailure::NoOrigin);
    group.bench_function("counters_snapshot", |b| b.iter(|| black_box(counters.snapshot().open)));
    group.finish();
}

/// The FLV file's tags as a publisher's chunk stream at `chunk_size`, repeated `times`.
fn flv_publish(chunk_size: u32, times: u32) -> Vec<u8> {
    let mut enc = ChunkEncoder::new();
    let mut out = Vec::new();
    enc.encode(&message::set_chunk_size(chunk_size), &mut out).unwrap();
    for round in 0..times {
        for tag in flv::tags(FLV_640X360) {
            let csid = if tag.tag_type == flv::TAG_AUDIO { 4 } else { 6 };
            let timestamp = tag.timestamp + round * 1000;
            let msg = Message { csid, timestamp, type_id: tag.tag_type, stream_id: 1, payload: tag.data.to_vec() };
            enc.encode(&msg, &mut out).unwrap();
        }
    }
    out
}

fn inspecting(c: &mut Criterion) {
    let mut group = c.benchmark_group("inspector");
    let streams = [
        ("ffmpeg_capture_4096".to_string(), FFMPEG_PUBLISH.to_vec()),
        ("flv_640x360_chunk_128".to_string(), flv_publish(128, 4)),
        ("flv_640x360_chunk_60000".to_string(), flv_publish(60000, 4)),
    ];
    for (name, bytes) in &streams {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut i = Inspector::new();
                // As the copy relay hands it over: reads of up to 64 KiB.
                for piece in bytes.chunks(16 * 1024) {
                    i.feed(piece).unwrap();
                }
                black_box(i.info().video_frames)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = collecting, inspecting
}
criterion_main!(benches);
