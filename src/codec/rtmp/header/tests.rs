//! Tests of the chunk-header reader and the header state rules, against hand-written headers
//! and a real ffmpeg publish capture.

use proptest::prelude::*;

use super::*;
use crate::codec::rtmp::message::{self, SET_CHUNK_SIZE};
use crate::codec::rtmp::{ChunkDecoder, ChunkError};

/// ffmpeg 5.1 publishing to nginx-rtmp, the bytes after C2 (SetChunkSize 4096, fmt 0-3 headers).
const FFMPEG_PUBLISH: &[u8] = include_bytes!("../../../../tests/data/media/ffmpeg_publish_320x180.rtmp");

/// One header as a walk saw it: the header, what it did, and its chunk stream's state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    header: ChunkHeader,
    start: Start,
    timestamp: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

/// Follows a chunk stream with the header reader alone: payloads are counted and skipped,
/// except SetChunkSize's, which is obeyed.
struct Walk {
    reader: HeaderReader,
    streams: ChunkStreams<Vec<u8>>,
    chunk_size: usize,
    /// (stream index, payload bytes left in the current chunk)
    payload: Option<(usize, usize)>,
    seen: Vec<Seen>,
}

impl Walk {
    fn new() -> Self {
        let streams = ChunkStreams::new(DEFAULT_MAX_CHUNK_STREAMS);
        Walk { reader: HeaderReader::new(), streams, chunk_size: 128, payload: None, seen: Vec::new() }
    }

    fn feed(&mut self, mut input: &[u8]) -> Result<(), HeaderError> {
        while !input.is_empty() {
            let used = match self.payload {
                None => self.header(input)?,
                Some((index, remaining)) => self.skip(input, index, remaining),
            };
            assert!(used > 0 && used <= input.len(), "used {used} of {}", input.len());
            assert!(self.reader.len <= MAX_HEADER_LEN);
            input = &input[used..];
        }
        Ok(())
    }

    fn header(&mut self, input: &[u8]) -> Result<usize, HeaderError> {
        let (used, status) = self.reader.read(input, &self.streams)?;
        let Status::Complete(header) = status else {
            assert_eq!(used, input.len(), "Partial uses all input");
            return Ok(used);
        };
        let (index, start) = self.streams.begin_chunk(&header)?;
        let s = self.streams.get_mut(index).unwrap();
        if start == Start::NewMessage {
            s.body.clear();
        }
        let h = &s.header;
        let (timestamp, length, type_id, stream_id) = (h.timestamp(), h.length(), h.type_id(), h.stream_id());
        self.seen.push(Seen { header, start, timestamp, length, type_id, stream_id });
        if h.is_complete() {
            self.end_message(index);
        } else {
            self.payload = Some((index, h.chunk_len(self.chunk_size)));
        }
        Ok(used)
    }

    fn skip(&mut self, input: &[u8], index: usize, remaining: usize) -> usize {
        let n = remaining.min(input.len());
        let s = self.streams.get_mut(index).unwrap();
        if s.header.type_id() == SET_CHUNK_SIZE {
            s.body.extend_from_slice(&input[..n]);
        }
        s.header.advance(n);
        self.payload = (n < remaining).then_some((index, remaining - n));
        if n == remaining && s.header.is_complete() {
            self.end_message(index);
        }
        n
    }

    fn end_message(&mut self, index: usize) {
        let s = self.streams.get_mut(index).unwrap();
        s.header.end_message();
        if s.header.type_id() == SET_CHUNK_SIZE
            && let Ok(size) = message::parse_set_chunk_size(&s.body)
        {
            self.chunk_size = size as usize;
        }
    }
}

fn walk(bytes: &[u8]) -> Walk {
    let mut w = Walk::new();
    w.feed(bytes).unwrap();
    w
}

/// A fmt 0 header: basic header for `csid`, then timestamp (extended when >= 0xFFFFFF),
/// length, type and stream id.
fn fmt0(csid: u32, timestamp: u32, length: u32, type_id: u8, stream_id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    write_basic_header(&mut out, 0, csid);
    out.extend_from_slice(&timestamp.min(EXTENDED_TIMESTAMP).to_be_bytes()[1..]);
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&stream_id.to_le_bytes());
    if timestamp >= EXTENDED_TIMESTAMP {
        out.extend_from_slice(&timestamp.to_be_bytes());
    }
    out
}

#[test]
fn basic_headers_of_every_width() {
    let streams = ChunkStreams::<()>::new(1);
    for csid in MIN_CSID..=MAX_CSID {
        let bytes = fmt0(csid, 0, 0, 8, 1);
        let width = match csid {
            ..=63 => 1,
            64..=319 => 2,
            _ => 3,
        };
        assert_eq!(bytes.len(), width + 11);
        let (used, status) = HeaderReader::new().read(&bytes, &streams).unwrap();
        let Status::Complete(h) = status else { panic!("csid {csid}: {status:?}") };
        assert_eq!((used, h.fmt, h.csid, h.type_id, h.stream_id), (bytes.len(), 0, csid, 8, 1));
    }
}

#[test]
fn fmt0_fields_and_nothing_past_the_header() {
    let mut bytes = fmt0(320, 0x0012_3456, 0x00AB_CDEF, 9, 0x0102_0304);
    bytes.extend_from_slice(&[0xEE; 10]);
    let (used, status) = HeaderReader::new().read(&bytes, &ChunkStreams::<()>::new(1)).unwrap();
    let want = ChunkHeader {
        fmt: 0,
        csid: 320,
        ts_field: 0x0012_3456,
        extended: false,
        length: 0x00AB_CDEF,
        type_id: 9,
        stream_id: 0x0102_0304,
    };
    assert_eq!((used, status), (14, Status::Complete(want)));
}

#[test]
fn a_header_split_anywhere_is_the_same_header() {
    // The longest header: 3-byte basic, fmt 0, extended timestamp.
    let bytes = fmt0(1000, 0x0100_0000, 5, 9, 1);
    assert_eq!(bytes.len(), MAX_HEADER_LEN);
    let streams = ChunkStreams::<()>::new(1);
    let (_, whole) = HeaderReader::new().read(&bytes, &streams).unwrap();
    assert!(matches!(whole, Status::Complete(ChunkHeader { extended: true, ts_field: 0x0100_0000, .. })));
    for cut in 0..bytes.len() {
        let mut r = HeaderReader::new();
        assert_eq!(r.read(&bytes[..cut], &streams).unwrap(), (cut, Status::Partial), "cut {cut}");
        assert_eq!(r.read(&bytes[cut..], &streams).unwrap(), (bytes.len() - cut, whole), "cut {cut}");
    }
    let mut r = HeaderReader::new();
    let last = bytes.iter().map(|b| r.read(std::slice::from_ref(b), &streams).unwrap()).last();
    assert_eq!(last, Some((1, whole)));
}

/// The spec's audio example (also in chunk.rs): fmt 0, fmt 2, then two fmt 3 messages.
#[test]
fn fmt2_and_fmt3_reuse_the_previous_header() {
    let mut bytes = vec![0x03, 0x00, 0x03, 0xE8, 0x00, 0x00, 0x20, 0x08, 0x01, 0x00, 0x00, 0x00];
    bytes.extend([0xAA; 32]);
    bytes.extend([0x83, 0x00, 0x00, 0x14]);
    bytes.extend([0xBB; 32]);
    bytes.extend([0xC3].iter().chain(&[0xCC; 32]).chain(&[0xC3]).chain(&[0xDD; 32]));
    let seen = walk(&bytes).seen;
    let got: Vec<_> = seen.iter().map(|s| (s.header.fmt, s.start, s.timestamp, s.length, s.type_id)).collect();
    let new = Start::NewMessage;
    assert_eq!(got, [(0, new, 1000, 32, 8), (2, new, 1020, 32, 8), (3, new, 1040, 32, 8), (3, new, 1060, 32, 8)]);
    assert!(seen.iter().all(|s| s.stream_id == 1 && s.header.csid == 3));
}

#[test]
fn fmt1_sets_length_and_type_and_keeps_the_stream_id() {
    let mut bytes = fmt0(4, 5, 2, 9, 7);
    bytes.extend([0, 0]);
    bytes.extend([0x44, 0x00, 0x00, 0x21, 0x00, 0x00, 0x03, 0x08, 1, 1, 1]);
    let got: Vec<_> = walk(&bytes).seen.iter().map(|s| (s.timestamp, s.length, s.type_id, s.stream_id)).collect();
    assert_eq!(got, [(5, 2, 9, 7), (38, 3, 8, 7)]);
}

#[test]
fn extended_timestamps_on_fmt3() {
    // A 300-byte message at 0x01234567: both continuation chunks repeat the 4 bytes, which
    // do not move the timestamp.
    let mut bytes = fmt0(4, 0x0123_4567, 300, 9, 1);
    for part in [128, 128, 44] {
        if bytes.len() > 16 {
            bytes.extend([0xC4, 0x01, 0x23, 0x45, 0x67]);
        }
        bytes.extend(vec![0u8; part]);
    }
    // Then fmt 1 with an extended delta of 16, and a fmt 3 message whose extended field (32)
    // becomes the new delta; then a fmt 2 delta of 1 (not extended) and a fmt 3 message
    // without extended bytes, reusing that delta.
    bytes.extend([0x44, 0xFF, 0xFF, 0xFF, 0, 0, 1, 8, 0, 0, 0, 0x10, 0]);
    bytes.extend([0xC4, 0, 0, 0, 0x20, 0]);
    bytes.extend([0x84, 0, 0, 1, 0, 0xC4, 0]);
    let seen = walk(&bytes).seen;
    let got: Vec<_> = seen.iter().map(|s| (s.header.fmt, s.header.extended, s.start, s.timestamp)).collect();
    let (new, cont) = (Start::NewMessage, Start::Continuation);
    let base = 0x0123_4567;
    let want = [
        (0, true, new, base),
        (3, true, cont, base),
        (3, true, cont, base),
        (1, true, new, base + 16),
        (3, true, new, base + 48),
        (2, false, new, base + 49),
        (3, false, new, base + 50),
    ];
    assert_eq!(got, want);
}

#[test]
fn timestamp_field_of_exactly_0xffffff_needs_four_more_bytes() {
    let streams = ChunkStreams::<()>::new(1);
    let edge = fmt0(4, 0xFF_FFFF, 1, 9, 1);
    assert_eq!(edge.len(), 12 + 4);
    assert_eq!(HeaderReader::new().read(&edge[..12], &streams).unwrap(), (12, Status::Partial));
    let below = fmt0(4, 0xFF_FFFE, 1, 9, 1);
    assert!(matches!(HeaderReader::new().read(&below, &streams).unwrap(), (12, Status::Complete(_))));
}

#[test]
fn header_rule_errors() {
    let streams = ChunkStreams::<()>::new(2);
    let missing = |csid, fmt| HeaderError::MissingPreviousHeader { csid, fmt };
    // fmt 3 needs the previous header to know its length; fmt 1/2 fail when applied.
    assert_eq!(HeaderReader::new().read(&[0xC5], &streams), Err(missing(5, 3)));
    for (fmt, bytes) in [(1u8, vec![0x45, 0, 0, 0, 0, 0, 1, 8]), (2, vec![0x85, 0, 0, 0])] {
        let Ok((_, Status::Complete(h))) = HeaderReader::new().read(&bytes, &streams) else { panic!() };
        assert_eq!(ChunkStreams::<()>::new(2).begin_chunk(&h), Err(missing(5, fmt)));
    }
    let mut streams = ChunkStreams::<()>::new(2);
    let header = |bytes: &[u8], streams: &ChunkStreams<()>| match HeaderReader::new().read(bytes, streams) {
        Ok((_, Status::Complete(h))) => h,
        other => panic!("{other:?}"),
    };
    let h = header(&fmt0(3, 0, 200, 9, 1), &streams);
    assert_eq!(streams.begin_chunk(&h), Ok((0, Start::NewMessage)));
    streams.get_mut(0).unwrap().header.advance(128);
    assert_eq!(streams.begin_chunk(&header(&[0xC3], &streams)), Ok((0, Start::Continuation)));
    let inside = HeaderError::HeaderInsideMessage { csid: 3, fmt: 0, received: 128, length: 200 };
    assert_eq!(streams.begin_chunk(&h), Err(inside));
    assert_eq!(streams.begin_chunk(&header(&fmt0(4, 0, 0, 8, 1), &streams)), Ok((1, Start::NewMessage)));
    let third = header(&fmt0(400, 0, 0, 8, 1), &streams);
    assert_eq!(streams.begin_chunk(&third), Err(HeaderError::TooManyChunkStreams { csid: 400, limit: 2 }));
    assert_eq!(streams.len(), 2);
}

#[test]
fn decoder_errors_read_as_before() {
    let err = ChunkError::from(HeaderError::MissingPreviousHeader { csid: 3, fmt: 1 });
    assert_eq!(err.to_string(), "fmt 1 chunk on chunk stream 3 without a previous header");
    let err = ChunkError::from(HeaderError::TooManyChunkStreams { csid: 5, limit: 2 });
    assert_eq!(err.to_string(), "chunk stream 5 would exceed the limit of 2 chunk streams");
}

#[test]
fn real_capture_headers_agree_with_the_decoder() {
    let w = walk(FFMPEG_PUBLISH);
    assert_eq!(w.chunk_size, 4096, "ffmpeg's SetChunkSize was obeyed");
    assert!(w.payload.is_none() && w.reader.len == 0, "the capture ends on a chunk boundary");
    for fmt in 0..=3 {
        assert!(w.seen.iter().any(|s| s.header.fmt == fmt), "fmt {fmt} appears");
    }
    let starts: Vec<_> = w.seen.iter().filter(|s| s.start == Start::NewMessage).collect();
    let messages = ChunkDecoder::new().decode_all(FFMPEG_PUBLISH).unwrap();
    assert_eq!(starts.len(), messages.len());
    for (s, (m, _)) in starts.iter().zip(&messages) {
        let got = (s.header.csid, s.timestamp, s.length as usize, s.type_id, s.stream_id);
        assert_eq!(got, (m.csid, m.timestamp, m.payload.len(), m.type_id, m.stream_id));
    }
}

/// Bytes that look like chunk headers more often than uniform noise does.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![(0u8..4, 0u8..8).prop_map(|(fmt, csid)| fmt << 6 | csid), Just(0xFF), any::<u8>()];
    proptest::collection::vec(byte, 0..2000)
}

proptest! {
    #[test]
    fn any_split_of_a_real_capture_gives_the_same_headers(
        cuts in proptest::collection::vec(0usize..FFMPEG_PUBLISH.len(), 0..40),
    ) {
        let mut cuts = cuts;
        cuts.extend([0, FFMPEG_PUBLISH.len()]);
        cuts.sort_unstable();
        let mut w = Walk::new();
        for pair in cuts.windows(2) {
            w.feed(&FFMPEG_PUBLISH[pair[0]..pair[1]]).unwrap();
        }
        prop_assert_eq!(w.seen, walk(FFMPEG_PUBLISH).seen);
    }

    #[test]
    fn garbage_never_panics(bytes in noise(), split in 1usize..64) {
        let mut w = Walk::new();
        for piece in bytes.chunks(split) {
            if w.feed(piece).is_err() {
                break;
            }
        }
        prop_assert!(w.streams.len() <= DEFAULT_MAX_CHUNK_STREAMS);
    }

    #[test]
    fn flipped_real_streams_never_panic(
        flips in proptest::collection::vec((0usize..FFMPEG_PUBLISH.len(), any::<u8>()), 1..8),
    ) {
        let mut bytes = FFMPEG_PUBLISH.to_vec();
        for (at, b) in flips {
            bytes[at] = b;
        }
        let mut w = Walk::new();
        for piece in bytes.chunks(1500) {
            if w.feed(piece).is_err() {
                break;
            }
        }
        prop_assert!(w.reader.len <= MAX_HEADER_LEN);
    }
}
