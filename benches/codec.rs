//! Codec parse rates in bytes per second: RTMP chunks (media at the chunk sizes ffmpeg/OBS,
//! nginx-rtmp and SRS use), AMF0 command decoding, HTTP request heads, HLS playlist rewriting,
//! STUN binding requests and SRT handshakes.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use streamgate::codec::http::{self, Limits};
use streamgate::codec::m3u8;
use streamgate::codec::rtmp::amf0::{self, Amf0Value};
use streamgate::codec::rtmp::message::{COMMAND_CSID, Command, Message, VIDEO};
use streamgate::codec::rtmp::{ChunkDecoder, ChunkEncoder};
use streamgate::codec::srt::{self, Extension, Handshake};
use streamgate::codec::stun;

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

/// A live media playlist as nginx-rtmp writes it: six 2 s segments.
fn nginx_rtmp_live_playlist() -> String {
    let mut p = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:12\n#EXT-X-TARGETDURATION:3\n");
    for seq in 12..18 {
        p.push_str(&format!("#EXTINF:2.000,\nlivestream-{seq}.ts\n"));
    }
    p
}

/// A VOD-style playlist of 1000 fMP4 segments, each with a query (as SRS's `hls_ctx` or a
/// token-signing CDN would write), an init section and a key.
fn vod_playlist() -> String {
    let mut p = String::from(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-MAP:URI=\"init.mp4?hls_ctx=8k2n7x1q\"\n#EXT-X-KEY:METHOD=AES-128,URI=\"keys/k1.bin\",IV=0x1234\n",
    );
    for seq in 0..1000 {
        p.push_str(&format!("#EXTINF:6.006,\nvideo/seg-{seq:05}.m4s?hls_ctx=8k2n7x1q&exp=1767225600\n"));
    }
    p.push_str("#EXT-X-ENDLIST\n");
    p
}

fn m3u8_rewrite(c: &mut Criterion) {
    let mut group = c.benchmark_group("m3u8_rewrite");
    for (name, playlist) in
        [("nginx_rtmp_live_6", nginx_rtmp_live_playlist()), ("vod_1000_with_queries", vod_playlist())]
    {
        group.throughput(Throughput::Bytes(playlist.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(m3u8::add_query_param(black_box(playlist.as_bytes()), "spbhid", "o7f3").unwrap()))
        });
    }
    group.finish();
}

/// RFC 5769 §2.1 "Sample Request": an ICE Binding request with USERNAME "evtj:h6vY".
const RFC5769_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf,
    0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65,
    0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51,
    0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20,
    0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2,
    0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

fn stun_binding_requests(c: &mut Criterion) {
    let mut group = c.benchmark_group("stun_parse");
    group.throughput(Throughput::Bytes(RFC5769_REQUEST.len() as u64));
    group.bench_function("rfc5769_request_username", |b| {
        b.iter(|| {
            let bytes = black_box(&RFC5769_REQUEST[..]);
            let kind = stun::classify(bytes);
            let msg = stun::Message::parse(bytes).unwrap();
            black_box((kind, msg.username()))
        })
    });
    group.finish();
}

fn srt_handshakes(c: &mut Criterion) {
    // A libsrt caller's INDUCTION and its CONCLUSION with HSREQ and a stream id.
    let induction = Handshake {
        version: 4,
        encryption_field: 0,
        extension_field: srt::UDT_DGRAM,
        initial_seq: 0x2a3f_1c5d,
        mtu: 1500,
        flow_window: 8192,
        handshake_type: srt::HS_INDUCTION,
        socket_id: 0x1d4a_7f3b,
        syn_cookie: 0,
        peer_ip: srt::encode_peer_ip([127, 0, 0, 1].into()),
        extensions: vec![],
    };
    let conclusion = Handshake {
        version: 5,
        extension_field: srt::HS_EXT_HSREQ | srt::HS_EXT_CONFIG,
        handshake_type: srt::HS_CONCLUSION,
        syn_cookie: 0x418d_5e4e,
        extensions: vec![
            Extension { type_: srt::EXT_HSREQ, contents: vec![0, 1, 4, 4, 0, 0, 0, 0xbf, 0, 0x78, 0, 0] },
            srt::encode_stream_id("#!::r=live/livestream,m=publish"),
        ],
        ..induction.clone()
    };
    let mut group = c.benchmark_group("srt_handshake_parse");
    for (name, hs) in [("induction", &induction), ("conclusion_stream_id", &conclusion)] {
        let bytes = hs.encode(20_000, 0);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let (_, hs) = Handshake::parse(black_box(&bytes)).unwrap();
                let sid = srt::stream_id(&hs).map(|s| srt::parse_stream_id(&s).map(|id| id.resource));
                black_box((hs.syn_cookie, sid))
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    chunk_decoding,
    amf0_commands,
    http_heads,
    m3u8_rewrite,
    stun_binding_requests,
    srt_handshakes
);
criterion_main!(benches);
