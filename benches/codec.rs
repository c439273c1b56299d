//! Codec parse rates in bytes per second: RTMP chunks (media at the chunk sizes ffmpeg/OBS,
//! nginx-rtmp and SRS use), AMF0 command decoding, HTTP request heads.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use streamgate::codec::http::{self, Limits};
use streamgate::codec::rtmp::amf0::{self, Amf0Value};
use streamgate::codec::rtmp::message::{COMMAND_CSID, Command, Message, VIDEO};
use streamgate::codec::rtmp::{ChunkDecoder, ChunkEncoder};

/// 2 s of 25 fps video at about 2 Mbit/s: one 40 KB keyframe, then 10 KB frames.
fn media_stream(chunk_size: u32) -> Vec<u8> {
    let mut enc = ChunkEncoder::new();
    enc.set_chunk_size(chunk_size).unwrap();
    let mut out = Vec::new();
    for i in 0..50u32 {
        let len = if i % 50 == 0 { 40_000 } else { 10_000 };
        let msg = Message { csid: 6, timestamp: i * 40, type_id: VIDEO, stream_id: 1, payload: vec![0x27; len] };
        enc.encode(&msg, &mut out).unwrap();
    }
    out
}

fn chunk_decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtmp_chunk_decode");
    for chunk_size in [128u32, 4096, 60000] {
        let mut stream = Vec::new();
        if chunk_size != 128 {
            ChunkEncoder::new()
                .encode(&streamgate::codec::rtmp::message::set_chunk_size(chunk_size), &mut stream)
                .unwrap();
        }
        stream.extend(media_stream(chunk_size));
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_function(format!("chunk_size_{chunk_size}"), |b| {
            b.iter(|| {
                let mut dec = ChunkDecoder::new();
                let mut pos = 0;
                let mut messages = 0;
                while pos < stream.len() {
                    let (used, msg) = dec.decode(&stream[pos..]).unwrap();
                    pos += used;
                    messages += usize::from(msg.is_some());
                }
                black_box(messages)
            })
        });
    }
    group.finish();
}

fn amf0_commands(c: &mut Criterion) {
    let connect = Command::new(
        "connect",
        1.0,
        Amf0Value::object([
            ("app", Amf0Value::string("live")),
            ("flashVer", Amf0Value::string("FMLE/3.0 (compatible; Lavf59.27.100)")),
            ("tcUrl", Amf0Value::string("rtmp://127.0.0.1:11935/live")),
            ("type", Amf0Value::string("nonprivate")),
            ("fpad", Amf0Value::Boolean(false)),
            ("capabilities", Amf0Value::Number(15.0)),
            ("audioCodecs", Amf0Value::Number(4071.0)),
            ("videoCodecs", Amf0Value::Number(252.0)),
            ("videoFunction", Amf0Value::Number(1.0)),
        ]),
        vec![],
    );
    let payload = connect.encode();
    let mut group = c.benchmark_group("amf0");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("decode_connect", |b| b.iter(|| black_box(amf0::decode_all(black_box(&payload)).unwrap())));
    group.bench_function("parse_connect_command", |b| {
        let msg = connect.to_message(COMMAND_CSID, 0);
        b.iter(|| black_box(Command::from_message(black_box(&msg)).unwrap()))
    });
    group.finish();
}

fn http_heads(c: &mut Criterion) {
    let heartbeat =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/heartbeats/srs7-bare-ports.http")).unwrap();
    let player = b"GET /live/livestream.flv?token=abc HTTP/1.1\r\nHost: 127.0.0.1:18080\r\nUser-Agent: Lavf/59.27.100\r\nAccept: */*\r\nRange: bytes=0-\r\nConnection: close\r\nIcy-MetaData: 1\r\n\r\n";
    let mut group = c.benchmark_group("http_request_head");
    for (name, bytes) in [("srs_heartbeat", &heartbeat[..]), ("flv_player", &player[..])] {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| b.iter(|| black_box(http::parse_request(black_box(bytes), Limits::default()))));
    }
    group.finish();
}

criterion_group!(benches, chunk_decoding, amf0_commands, http_heads);
criterion_main!(benches);
