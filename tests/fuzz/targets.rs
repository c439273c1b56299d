//! The fuzz targets: every parser that reads bytes from the network or from files a user
//! writes, with seeds from the real captures (`tests/data`, the SRS heartbeats in
//! `/work/shared/fixtures` are the same files as `tests/data/heartbeats`) and, where a format
//! has no capture here, inputs built with the codec's own writers. Each target checks what
//! must hold beyond "does not panic": bounds on what a decoder consumed or holds, and round
//! trips where the codec promises one.

use streamgate::balance::{Registration, StreamKey};
use streamgate::codec::http::{self, ChunkedDecoder, Limits, Status};
use streamgate::codec::rtmp::handshake::RANDOM_LEN;
use streamgate::codec::rtmp::{
    ChunkDecoder, ChunkEncoder, ClientHandshake, Command, Inspector, ServerHandshake, amf0, message,
};
use streamgate::codec::{flv, m3u8, sdp, srt, stun};
use streamgate::config::dotenv;

use super::engine::{Target, outcome};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

fn read(path: &str) -> Vec<u8> {
    std::fs::read(format!("{DATA}/{path}")).unwrap_or_else(|e| panic!("seed {path}: {e}"))
}

fn files(dir: &str) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> =
        std::fs::read_dir(format!("{DATA}/{dir}")).unwrap().filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// ffmpeg publishing to nginx-rtmp: every byte it sent after C2 (chunk stream).
fn publish_capture() -> Vec<u8> {
    read("media/ffmpeg_publish_320x180.rtmp")
}

/// Cuts of `bytes`: its start and a few windows, so mutations work on small inputs too.
fn cuts(bytes: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut out = vec![bytes.to_vec()];
    for &n in sizes {
        out.push(bytes[..n.min(bytes.len())].to_vec());
        let mid = bytes.len() / 2;
        out.push(bytes[mid..(mid + n).min(bytes.len())].to_vec());
    }
    out
}

/// Feeds `input` to `feed` in pieces whose sizes come from the input's first byte, so the
/// same bytes are also tried split at different places.
fn in_pieces(input: &[u8], mut feed: impl FnMut(&[u8]) -> bool) {
    let step = 1 + usize::from(input.first().copied().unwrap_or(0)) * 7;
    for piece in input.chunks(step) {
        if !feed(piece) {
            return;
        }
    }
}

// ---------------------------------------------------------------- RTMP

fn handshake_seeds() -> Vec<Vec<u8>> {
    let random = vec![0x5a; RANDOM_LEN];
    let client = ClientHandshake::new(1, &random).unwrap();
    let c0c1 = client.c0c1().to_vec();
    // The server's S0S1S2 for that C0C1, and a whole client side (C0C1 + C2 + the capture).
    let mut server = ServerHandshake::new(2, &random).unwrap();
    let s0s1s2 = server.feed(&c0c1).unwrap().output;
    let c2 = vec![0u8; 1536];
    let simple = [&[3u8][..], &[0u8; 1536]].concat();
    let capture = publish_capture();
    vec![c0c1.clone(), [&c0c1[..], &c2, &capture[..200]].concat(), simple, s0s1s2]
}

fn run_handshake(input: &[u8]) -> u64 {
    let random = vec![0x33; RANDOM_LEN];
    let mut server = ServerHandshake::new(0, &random).unwrap();
    let mut result = Ok(());
    let mut out = 0;
    in_pieces(input, |piece| match server.feed(piece) {
        Ok(p) => {
            out += p.output.len();
            assert!(p.consumed <= piece.len(), "consumed {} of {}", p.consumed, piece.len());
            !p.done
        }
        Err(e) => {
            result = Err(e);
            false
        }
    });
    let mut client = ClientHandshake::new(0, &random).unwrap();
    let client_result = client.feed(input).map(|p| p.done);
    let digest = streamgate::codec::rtmp::handshake::find_client_digest(input).is_some();
    outcome(&(result, client_result, server.is_done(), digest), out.min(1))
}

fn chunk_seeds() -> Vec<Vec<u8>> {
    cuts(&publish_capture(), &[64, 512, 4096])
}

/// Most bytes one message may have, and chunk streams open, in the fuzzed decoders.
const MAX_MESSAGE: u32 = 1 << 20;

fn run_chunks(input: &[u8]) -> u64 {
    let mut decoder = ChunkDecoder::with_limits(MAX_MESSAGE, 64);
    let (mut messages, mut error) = (0usize, None);
    in_pieces(input, |mut piece| {
        while !piece.is_empty() {
            match decoder.decode(piece) {
                Ok((used, msg)) => {
                    assert!(used <= piece.len(), "used {used} of {}", piece.len());
                    piece = &piece[used..];
                    let Some(msg) = msg else { return true };
                    assert!(msg.payload.len() <= MAX_MESSAGE as usize, "a {}-byte message", msg.payload.len());
                    messages += 1;
                    message_parsers(&msg);
                }
                Err(e) => {
                    error = Some(e);
                    return false;
                }
            }
        }
        true
    });
    assert!(decoder.consumed() <= input.len() as u64);
    outcome(&error, messages.min(16))
}

/// Every parser a decoded message may go to.
fn message_parsers(msg: &message::Message) {
    let _ = Command::from_message(msg);
    let p = &msg.payload;
    let _ = (message::parse_set_chunk_size(p), message::parse_abort(p), message::parse_acknowledgement(p));
    let _ = (message::parse_window_ack_size(p), message::parse_set_peer_bandwidth(p), message::parse_user_control(p));
    // What decodes re-encodes and decodes to the same message.
    let mut encoder = ChunkEncoder::new();
    let mut wire = Vec::new();
    if encoder.set_chunk_size(4096).is_ok() && encoder.encode(msg, &mut wire).is_ok() {
        let mut again = ChunkDecoder::with_limits(MAX_MESSAGE, 64);
        again.set_chunk_size(4096).unwrap();
        let decoded = again.decode_all(&wire).unwrap_or_else(|e| panic!("re-encoded message does not decode: {e}"));
        assert_eq!(decoded.len(), 1, "re-encoded message decodes to {} messages", decoded.len());
        assert_eq!(decoded[0].0.payload, msg.payload);
        assert_eq!((decoded[0].0.type_id, decoded[0].0.stream_id), (msg.type_id, msg.stream_id));
    }
}

fn amf0_seeds() -> Vec<Vec<u8>> {
    let mut decoder = ChunkDecoder::new();
    let messages = decoder.decode_all(&publish_capture()).unwrap();
    let mut seeds: Vec<Vec<u8>> = messages
        .into_iter()
        .filter(|(m, _)| m.type_id == message::COMMAND_AMF0 || m.type_id == message::DATA_AMF0)
        .map(|(m, _)| m.payload)
        .collect();
    seeds.extend(flv::tags(&read("media/x264_640x360.flv")).filter(|t| t.tag_type == 18).map(|t| t.data.to_vec()));
    seeds
}

fn run_amf0(input: &[u8]) -> u64 {
    let decoded = amf0::decode_all(input);
    if let Ok(values) = &decoded {
        // What decodes encodes to bytes that decode and encode the same again.
        let wire = amf0::encode_all(values);
        let again = amf0::decode_all(&wire).unwrap_or_else(|e| panic!("re-encoded AMF0 does not decode: {e}"));
        assert_eq!(amf0::encode_all(&again), wire, "AMF0 round trip changed the bytes");
        for v in values {
            let _ = (v.get("app"), v.as_str(), v.as_f64(), v.as_bool(), v.kind());
        }
    }
    let _ = amf0::decode(input);
    outcome(&decoded.as_ref().map(|v| v.len()), decoded.as_ref().map_or(0, |v| v.len().min(8)))
}

fn run_inspector(input: &[u8]) -> u64 {
    let mut inspector = Inspector::new();
    let mut result = Ok(());
    in_pieces(input, |piece| {
        result = inspector.feed(piece);
        // It holds at most one message's head and a bounded part of a message.
        assert!(inspector.held() <= 2 * MAX_MESSAGE as usize, "holds {} bytes", inspector.held());
        result.is_ok() && !inspector.stopped()
    });
    let info = inspector.info();
    let _ = (info.size(), info.video_codec(), info.audio_codec(), info.meta_fps());
    outcome(&result, usize::from(inspector.stopped()))
}

// ---------------------------------------------------------------- HTTP, HLS, FLV

fn http_seeds() -> Vec<Vec<u8>> {
    let mut seeds = files("heartbeats");
    seeds.extend(files("register").into_iter().filter(|f| f.starts_with(b"POST")));
    seeds.push(b"GET /live/x.flv?token=a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n".to_vec());
    seeds.push(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec());
    seeds.push(b"4\r\nwxyz\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\n".to_vec());
    seeds
}

fn run_http(input: &[u8]) -> u64 {
    let limits = Limits { max_head: 16 * 1024, max_headers: 64 };
    let request = http::parse_request(input, limits);
    if let Ok(Status::Complete(req)) = &request {
        assert!(req.head_len <= input.len(), "head of {} in {} bytes", req.head_len, input.len());
        let _ = (req.keep_alive(), req.content_length(), req.header("host"), req.header_has_token("connection", "x"));
        let _ = StreamKey::from_http(req.header("host"), &req.path, req.query.as_deref());
    }
    let response = http::parse_response(input, limits);
    if let Ok(Status::Complete(head)) = &response {
        let _ = (head.body_length("GET"), head.body_length("HEAD"), head.header("content-type"));
    }
    let mut chunked = ChunkedDecoder::default();
    let mut body = Vec::new();
    let mut decoded = Ok(0);
    in_pieces(input, |piece| {
        decoded = chunked.decode(piece, &mut body);
        matches!(decoded, Ok(n) if n <= piece.len()) && !chunked.is_done()
    });
    assert!(body.len() <= input.len(), "chunked body of {} from {} bytes", body.len(), input.len());
    let request = request.as_ref().map(|s| matches!(s, Status::Complete(_)));
    let response = response.as_ref().map(|s| matches!(s, Status::Complete(_)));
    outcome(&(request, response, decoded.map(|_| ())), 0)
}

fn m3u8_seeds() -> Vec<Vec<u8>> {
    let media = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:4\n\
#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-KEY:METHOD=AES-128,URI=\"key?id=1\",IV=0x1\n#EXTINF:2.0,\nlive/x-4.ts\n\
#EXT-X-PART:DURATION=0.5,URI=\"p.0.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p.1.m4s\"\n#EXTINF:2.0,\n\
https://cdn/x-5.ts\r\n";
    let master = "\u{feff}#EXTM3U\r\n#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.4d401e,mp4a.40.2\"\r\n\
low/index.m3u8?x=1#frag\r\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en, main\",URI=\"audio.m3u8\"\r\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"iframes.m3u8\"";
    vec![media.as_bytes().to_vec(), master.as_bytes().to_vec(), b"#EXTM3U".to_vec()]
}

fn run_m3u8(input: &[u8]) -> u64 {
    let rewritten = m3u8::add_query_param(input, "spbhid", "abc123");
    if let Ok(out) = &rewritten {
        // Rewriting is idempotent: every URI already carries the parameter (with that value).
        let twice = m3u8::add_query_param(out, "spbhid", "abc123").expect("a rewritten playlist is a playlist");
        assert!(twice == *out, "a second rewrite changed the playlist");
    }
    if let Ok(text) = std::str::from_utf8(input) {
        let uri = m3u8::add_to_uri(text, "spbhid", "x");
        assert_eq!(m3u8::add_to_uri(&uri, "spbhid", "x"), uri, "add_to_uri is not idempotent");
    }
    outcome(&rewritten.as_ref().map(|o| o.len() > input.len()), 0)
}

fn flv_seeds() -> Vec<Vec<u8>> {
    let file = read("media/x264_640x360.flv");
    let mut seeds = cuts(&file, &[256, 2048]);
    seeds.extend(flv::tags(&file).take(12).map(|t| [&[t.tag_type][..], t.data].concat()));
    seeds.extend([read("media/x265_1280x720.hvcc"), read("media/x265_1920x1080.hvcc")]);
    seeds
}

fn run_flv(input: &[u8]) -> u64 {
    let tags = flv::tags(input).take(10_000).count();
    let body = input.get(1..).unwrap_or_default();
    let video = flv::video_tag(body);
    let audio = flv::audio_tag(body);
    let _ = (flv::metadata(body, false), flv::metadata(body, true), flv::aac_config(body));
    let _ = (flv::h264_sps_size(body), flv::hevc_sps_size(body), flv::avc_config_size(body));
    let _ = (flv::hevc_config_size(input), flv::config_size(Some("H264"), body), flv::config_size(Some("HEVC"), body));
    outcome(&(video.is_some(), audio.is_some()), tags.min(8))
}

// ---------------------------------------------------------------- UDP: STUN, SDP, SRT

fn stun_seeds() -> Vec<Vec<u8>> {
    // A binding request as an ICE agent sends it: USERNAME, PRIORITY, ICE-CONTROLLED,
    // MESSAGE-INTEGRITY and FINGERPRINT (values are placeholders of the right sizes).
    let mut attrs = Vec::new();
    let mut attr = |t: u16, v: &[u8]| {
        attrs.extend_from_slice(&t.to_be_bytes());
        attrs.extend_from_slice(&(v.len() as u16).to_be_bytes());
        attrs.extend_from_slice(v);
        attrs.resize(attrs.len().div_ceil(4) * 4, 0x20);
    };
    attr(0x0006, b"evtj:h6vY");
    attr(0x0024, &[0x6e, 0, 1, 0xff]);
    attr(0x8029, &[0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36]);
    attr(0x0008, &[0x9a; 20]);
    attr(0x8028, &[0xe5, 0x7a, 0x3b, 0xcf]);
    let mut request = vec![0x00, 0x01];
    request.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    request.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    request.extend_from_slice(&[0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae]);
    request.extend_from_slice(&attrs);
    let mut response = request.clone();
    response[0..2].copy_from_slice(&[0x01, 0x01]);
    vec![request, response, vec![0x80, 0x60, 0, 1, 0, 0, 0, 0], vec![0x16, 0xfe, 0xfd, 0, 0]]
}

fn run_stun(input: &[u8]) -> u64 {
    let kind = stun::classify(input);
    let parsed = stun::Message::parse(input);
    if let Ok(m) = &parsed {
        let attributes = m.attributes().take(10_000).count();
        let _ = (m.method(), m.class(), m.is_binding_request(), m.attribute(0x0008));
        if let Some(name) = m.username() {
            let _ = stun::split_username(name);
        }
        return outcome(&kind, attributes.min(8));
    }
    outcome(&(kind, parsed.map(|_| ())), 0)
}

fn sdp_seeds() -> Vec<Vec<u8>> {
    let offer = "v=0\r\no=- 3912345 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:h6vY\r\na=ice-pwd:6Rx2f7qkLw3x9y8tZ1a0b2c3\r\n\
a=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
a=candidate:1 1 udp 2130706431 10.0.0.5 8000 typ host generation 0\r\n\
a=candidate:2 1 udp 1694498815 1.2.3.4 8000 typ srflx raddr 10.0.0.5 rport 8000\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=candidate:3 1 tcp 1518280447 10.0.0.5 8000 typ host tcptype passive\r\n";
    vec![offer.as_bytes().to_vec(), offer.replace("\r\n", "\n").into_bytes()]
}

fn run_sdp(input: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(input);
    let credentials = sdp::ice_credentials(&text);
    let ip = Some(std::net::IpAddr::from([192, 0, 2, 1]));
    let rewritten = sdp::rewrite_host_candidates(&text, &[8000], 18000, ip);
    let unchanged = sdp::rewrite_host_candidates(&text, &[], 18000, None);
    // Nothing but the matching candidates changes: with no origin port, nothing at all.
    assert!(unchanged == text, "rewriting without origin ports changed the SDP");
    assert_eq!(rewritten.split('\n').count(), text.split('\n').count(), "rewriting changed the line count");
    outcome(&(credentials.is_some(), rewritten != text), rewritten.matches("a=candidate").count().min(4))
}

fn srt_seeds() -> Vec<Vec<u8>> {
    let induction = srt::Handshake {
        version: 4,
        encryption_field: 0,
        extension_field: 2,
        initial_seq: 0x1234_5678,
        mtu: 1500,
        flow_window: 8192,
        handshake_type: 1,
        socket_id: 0x0abc_def0,
        syn_cookie: 0,
        peer_ip: srt::encode_peer_ip(std::net::IpAddr::from([127, 0, 0, 1])),
        extensions: Vec::new(),
    };
    let mut conclusion = srt::induction_response(&induction, 0x5eed);
    conclusion.handshake_type = -1;
    conclusion.extensions = vec![
        srt::Extension { type_: 1, contents: vec![0, 1, 5, 3, 0, 0, 0, 0xbf, 0, 0x78, 0, 0x78] },
        srt::encode_stream_id("#!::r=live/livestream,m=publish"),
    ];
    let rejection = srt::rejection(&conclusion, 1403);
    vec![
        induction.encode(0, 0),
        conclusion.encode(1000, 0x1111),
        rejection.encode(2000, 0x2222),
        vec![0x00, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0x47, 0x40],
    ]
}

fn run_srt(input: &[u8]) -> u64 {
    let header = srt::Header::parse(input).map(|h| (h.dest_socket_id(), h.timestamp()));
    let _ = (srt::is_control(input), srt::control_type(input), srt::dest_socket_id(input));
    let handshake = srt::Handshake::parse(input);
    if let Ok((_, hs)) = &handshake {
        let _ = (hs.rejection_reason(), hs.extension(1));
        if let Some(sid) = srt::stream_id(hs)
            && let Ok(id) = srt::parse_stream_id(&sid)
        {
            let _ = (id.is_publish(), id.stream_url());
        }
        // What parses encodes to a packet that parses to the same handshake.
        let again = srt::Handshake::parse(&hs.encode(7, 9)).expect("an encoded handshake parses");
        assert_eq!(&again.1, hs, "SRT handshake round trip changed it");
    }
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = srt::parse_stream_id(text).map(|id| id.stream_url());
        let _ = srt::stream_query(text);
    }
    outcome(&(header.map(|_| ()), handshake.map(|(_, h)| h.extensions.len())), 0)
}

// ---------------------------------------------------------------- registration, .env, keys

fn register_seeds() -> Vec<Vec<u8>> {
    let mut seeds = files("register");
    seeds.extend(files("heartbeats"));
    // The bodies alone: what `from_json` gets.
    let bodies: Vec<Vec<u8>> = seeds
        .iter()
        .filter_map(|f| f.windows(4).position(|w| w == b"\r\n\r\n").map(|at| f[at + 4..].to_vec()))
        .collect();
    seeds.extend(bodies);
    seeds
}

fn run_register(input: &[u8]) -> u64 {
    let parsed = Registration::from_json(input);
    if let Ok(reg) = &parsed {
        let _ = (reg.id(), reg.rtmp_addr());
    }
    outcome(&parsed.map(|_| ()), 0)
}

fn dotenv_seeds() -> Vec<Vec<u8>> {
    let env = "# SRS proxy settings\nPROXY_RTMP_SERVER=11935\nexport PROXY_HTTP_SERVER=\"18080\"\n\
PROXY_REDIS_PASSWORD='a b#c'\nPROXY_LOAD_BALANCER_TYPE=memory # inline\n\n  SPACED = value  \n\
MULTI=\"line\\nbreak\"\r\nEMPTY=\nNOEQUALS\n=novalue\n";
    vec![env.as_bytes().to_vec()]
}

fn run_dotenv(input: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(input);
    let pairs = dotenv::parse(&text);
    assert!(pairs.len() <= text.lines().count().max(1), "{} pairs from {} lines", pairs.len(), text.lines().count());
    outcome(&(), pairs.len().min(8))
}

fn key_seeds() -> Vec<Vec<u8>> {
    vec![
        b"rtmp://127.0.0.1:1935/live?vhost=v\0livestream?token=1".to_vec(),
        b"rtmp://[::1]/a/b/c\0s.flv".to_vec(),
        b"http://host:8080/live/x.m3u8?spbhid=1".to_vec(),
    ]
}

fn run_keys(input: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(input);
    let (a, b) = text.split_once('\0').unwrap_or((&text, ""));
    let rtmp = StreamKey::from_rtmp(a, b);
    let url = StreamKey::from_url(&text);
    let http = StreamKey::from_http(Some(a), b, Some(a));
    outcome(&(rtmp.map(|_| ()), url.map(|_| ()), http.map(|_| ())), 0)
}

/// Every target.
pub const TARGETS: [Target; 13] = [
    Target { name: "rtmp_handshake", seeds: handshake_seeds, run: run_handshake, max_len: 8192 },
    Target { name: "rtmp_chunks", seeds: chunk_seeds, run: run_chunks, max_len: 64 * 1024 },
    Target { name: "amf0", seeds: amf0_seeds, run: run_amf0, max_len: 8192 },
    Target { name: "rtmp_inspector", seeds: chunk_seeds, run: run_inspector, max_len: 64 * 1024 },
    Target { name: "http_heads", seeds: http_seeds, run: run_http, max_len: 20 * 1024 },
    Target { name: "m3u8", seeds: m3u8_seeds, run: run_m3u8, max_len: 8192 },
    Target { name: "flv_tags", seeds: flv_seeds, run: run_flv, max_len: 64 * 1024 },
    Target { name: "stun", seeds: stun_seeds, run: run_stun, max_len: 2048 },
    Target { name: "sdp", seeds: sdp_seeds, run: run_sdp, max_len: 8192 },
    Target { name: "srt_handshake", seeds: srt_seeds, run: run_srt, max_len: 2048 },
    Target { name: "register_json", seeds: register_seeds, run: run_register, max_len: 8192 },
    Target { name: "dotenv", seeds: dotenv_seeds, run: run_dotenv, max_len: 8192 },
    Target { name: "stream_keys", seeds: key_seeds, run: run_keys, max_len: 2048 },
];
