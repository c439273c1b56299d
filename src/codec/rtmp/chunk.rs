//! Chunk stream layer: [`ChunkDecoder`] reassembles messages from chunks,
//! [`ChunkEncoder`] splits messages into chunks. Chunk headers are read and
//! applied by [`super::header`]; this file owns reassembly, its limits and
//! the control messages (SetChunkSize, Abort) that change how chunks are read.
#![deny(clippy::indexing_slicing)]

use thiserror::Error;

use super::header::{
    ChunkHeader, ChunkStream, ChunkStreams, EXTENDED_TIMESTAMP, HeaderError, HeaderReader, Start, Status, to_usize,
    write_basic_header,
};
pub use super::header::{DEFAULT_MAX_CHUNK_STREAMS, MAX_CSID, MAX_PAYLOAD_LEN, MIN_CSID};
use super::message::{self, Message};

/// Chunk size both directions start with.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Largest chunk size the spec allows (31 bits).
pub const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
/// Default bound on a declared message length (16 MiB).
pub const DEFAULT_MAX_MESSAGE_LEN: u32 = 16 * 1024 * 1024;

/// Initial payload buffer reservation cap, so a declared length is not trusted.
const INITIAL_RESERVE: usize = 64 * 1024;

/// Errors from chunk decoding and encoding. After a decode error the
/// connection state is undefined: drop the decoder and close the connection.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk header broke the chunk stream.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A chunk size of 0 or with the high bit set.
    #[error("chunk size {size} outside 1..=0x7FFFFFFF")]
    InvalidChunkSize {
        /// The rejected size.
        size: u32,
    },
    /// A message header declared a length above the configured maximum.
    #[error("message length {length} on chunk stream {csid} exceeds limit {limit}")]
    MessageTooLarge {
        /// Chunk stream id.
        csid: u32,
        /// Declared length.
        length: u32,
        /// Configured maximum.
        limit: u32,
    },
    /// A SetChunkSize or Abort message whose payload is malformed.
    #[error("invalid control message type {type_id}: {source}")]
    InvalidControlMessage {
        /// Message type id.
        type_id: u8,
        /// What was wrong with it.
        source: message::MessageError,
    },
    /// Encoding on a chunk stream id outside 2..=65599.
    #[error("chunk stream id {csid} outside 2..=65599")]
    InvalidCsid {
        /// The rejected id.
        csid: u32,
    },
    /// Encoding a payload that does not fit the 24-bit length field.
    #[error("payload of {len} bytes exceeds the 24-bit message length field")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
    },
}

fn check_chunk_size(size: u32) -> Result<u32, ChunkError> {
    if size == 0 || size > MAX_CHUNK_SIZE {
        return Err(ChunkError::InvalidChunkSize { size });
    }
    Ok(size)
}

/// A chunk stream as the decoder keeps it: header state plus the payload so far.
/// INVARIANT: while a message is in progress, `body.len() == header.received()`.
type Stream = ChunkStream<Vec<u8>>;

/// Ends the message on `stream` and hands it over.
fn take_message(stream: &mut Stream, csid: u32) -> Message {
    stream.header.end_message();
    let h = &stream.header;
    let (timestamp, type_id, stream_id) = (h.timestamp(), h.type_id(), h.stream_id());
    Message { csid, timestamp, type_id, stream_id, payload: std::mem::take(&mut stream.body) }
}

/// Where the decoder is inside the byte stream.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Header,
    /// `remaining` payload bytes of the current chunk on chunk stream `csid` (at `index`).
    Payload {
        index: usize,
        csid: u32,
        remaining: usize,
    },
}

/// Outcome of one decoding step.
enum Step {
    NeedMore,
    Continue,
    Done(Message),
}

/// Incremental chunk stream decoder (sans-io).
///
/// Feed bytes with [`ChunkDecoder::decode`]; partial headers and payloads are
/// buffered internally, so input may be split anywhere. Decoding stops right
/// after a message completes, so when a message is returned
/// [`ChunkDecoder::consumed`] is the stream offset where its last chunk ended.
#[derive(Debug)]
pub struct ChunkDecoder {
    chunk_size: u32,
    max_message_len: u32,
    streams: ChunkStreams<Vec<u8>>,
    reader: HeaderReader,
    phase: Phase,
    consumed: u64,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkDecoder {
    /// Decoder with chunk size 128, a 16 MiB message limit and 64 chunk streams.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_MESSAGE_LEN, DEFAULT_MAX_CHUNK_STREAMS)
    }

    /// Decoder with explicit bounds on message length and tracked chunk streams.
    pub fn with_limits(max_message_len: u32, max_chunk_streams: usize) -> Self {
        ChunkDecoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_message_len,
            streams: ChunkStreams::new(max_chunk_streams),
            reader: HeaderReader::new(),
            phase: Phase::Header,
            consumed: 0,
        }
    }

    /// Current read chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Sets the read chunk size; it takes effect from the next chunk header.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        self.chunk_size = check_chunk_size(size)?;
        Ok(())
    }

    /// Total bytes consumed since creation. Right after `decode` returns a
    /// message this is the offset at which that message's last chunk ended.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Discards the partial message on `csid` (what an Abort message asks).
    pub fn abort(&mut self, csid: u32) {
        if let Some(stream) = self.streams.find_mut(csid) {
            stream.header.end_message();
            stream.body = Vec::new();
        }
    }

    /// Consumes bytes from `input` until one message completes or the input
    /// runs out. Returns the bytes consumed and the message, if any; `None`
    /// means more input is needed (all of `input` was consumed). Received
    /// SetChunkSize and Abort messages are applied before being returned.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), ChunkError> {
        let mut pos = 0usize;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            let (used, step) = match self.phase {
                Phase::Header => self.read_header(rest)?,
                Phase::Payload { index, csid, remaining } => self.read_payload(rest, index, csid, remaining)?,
            };
            pos = pos.saturating_add(used);
            self.consumed = self.consumed.saturating_add(used as u64);
            match step {
                Step::NeedMore => return Ok((pos, None)),
                Step::Continue => {}
                Step::Done(msg) => {
                    self.apply_control(&msg)?;
                    return Ok((pos, Some(msg)));
                }
            }
        }
    }

    /// Decodes every complete message in `input`, with each one's end offset.
    pub fn decode_all(&mut self, input: &[u8]) -> Result<Vec<(Message, u64)>, ChunkError> {
        let mut out = Vec::new();
        let mut pos = 0usize;
        loop {
            let (used, msg) = self.decode(input.get(pos..).unwrap_or_default())?;
            pos = pos.saturating_add(used);
            match msg {
                Some(m) => out.push((m, self.consumed)),
                None => return Ok(out),
            }
        }
    }

    fn apply_control(&mut self, msg: &Message) -> Result<(), ChunkError> {
        let invalid = |source| ChunkError::InvalidControlMessage { type_id: msg.type_id, source };
        match msg.type_id {
            message::SET_CHUNK_SIZE => {
                self.chunk_size = message::parse_set_chunk_size(&msg.payload).map_err(invalid)?;
            }
            message::ABORT => self.abort(message::parse_abort(&msg.payload).map_err(invalid)?),
            _ => {}
        }
        Ok(())
    }

    /// Reads the next header; once it is whole, starts its chunk.
    fn read_header(&mut self, input: &[u8]) -> Result<(usize, Step), ChunkError> {
        let (used, status) = self.reader.read(input, &self.streams)?;
        let Status::Complete(header) = status else {
            return Ok((used, Step::NeedMore));
        };
        Ok((used, self.begin_chunk(&header)?))
    }

    fn begin_chunk(&mut self, h: &ChunkHeader) -> Result<Step, ChunkError> {
        let (index, start) = self.streams.begin_chunk(h)?;
        let stream = stream_at(&mut self.streams, index, h.csid, h.fmt)?;
        if start == Start::NewMessage {
            if h.fmt <= 1 && h.length > self.max_message_len {
                let limit = self.max_message_len;
                return Err(ChunkError::MessageTooLarge { csid: h.csid, length: h.length, limit });
            }
            stream.body = Vec::with_capacity(to_usize(stream.header.length()).min(INITIAL_RESERVE));
        }
        if stream.header.is_complete() {
            return Ok(Step::Done(take_message(stream, h.csid)));
        }
        let remaining = stream.header.chunk_len(to_usize(self.chunk_size));
        self.phase = Phase::Payload { index, csid: h.csid, remaining };
        Ok(Step::Continue)
    }

    fn read_payload(
        &mut self,
        input: &[u8],
        index: usize,
        csid: u32,
        remaining: usize,
    ) -> Result<(usize, Step), ChunkError> {
        let n = remaining.min(input.len());
        if n == 0 {
            return Ok((0, Step::NeedMore));
        }
        let stream = stream_at(&mut self.streams, index, csid, 3)?;
        stream.body.extend_from_slice(input.get(..n).unwrap_or_default());
        stream.header.advance(n);
        let left = remaining.saturating_sub(n);
        if left > 0 {
            self.phase = Phase::Payload { index, csid, remaining: left };
            return Ok((n, Step::NeedMore));
        }
        self.phase = Phase::Header;
        if stream.header.is_complete() {
            return Ok((n, Step::Done(take_message(stream, csid))));
        }
        Ok((n, Step::Continue))
    }
}

/// The chunk stream at `index` (from `begin_chunk`, so present: see the header module's
/// INVARIANT); a missing one reads as a chunk without a previous header.
fn stream_at(streams: &mut ChunkStreams<Vec<u8>>, index: usize, csid: u32, fmt: u8) -> Result<&mut Stream, ChunkError> {
    Ok(streams.get_mut(index).ok_or(HeaderError::MissingPreviousHeader { csid, fmt })?)
}

/// What a message's first chunk header says of it, apart from its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub csid: u32,
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
}

/// Appends `payload` as one message's chunks of `chunk_size` bytes to `out`: a fmt 0 header
/// (absolute timestamp), then fmt 3 continuations. Every message written this way decodes the
/// same whatever came before it on the connection, so the bytes can be shared by many
/// receivers. The caller keeps `head.csid` in 2..=65599, `chunk_size` >= 1 and the payload
/// under 16 MiB (what [`ChunkEncoder::encode`] checks).
pub fn write_chunks(head: &Head, payload: &[u8], chunk_size: u32, out: &mut Vec<u8>) {
    let extended = head.timestamp >= EXTENDED_TIMESTAMP;
    write_basic_header(out, 0, head.csid);
    let [_, t2, t1, t0] = head.timestamp.min(EXTENDED_TIMESTAMP).to_be_bytes();
    let [_, l2, l1, l0] = u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&[t2, t1, t0, l2, l1, l0, head.type_id]);
    out.extend_from_slice(&head.stream_id.to_le_bytes());
    for (i, chunk) in payload.chunks(to_usize(chunk_size.max(1))).enumerate() {
        if i > 0 {
            write_basic_header(out, 3, head.csid);
        }
        if extended {
            out.extend_from_slice(&head.timestamp.to_be_bytes());
        }
        out.extend_from_slice(chunk);
    }
    if payload.is_empty() && extended {
        out.extend_from_slice(&head.timestamp.to_be_bytes());
    }
}

/// Splits messages into chunks (sans-io: appends to a caller's buffer).
///
/// Every message starts with a fmt 0 header; continuation chunks use fmt 3
/// and repeat the extended timestamp when the timestamp is >= 0xFFFFFF.
#[derive(Debug, Clone)]
pub struct ChunkEncoder {
    chunk_size: u32,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    /// Encoder with the default chunk size of 128.
    pub fn new() -> Self {
        ChunkEncoder { chunk_size: DEFAULT_CHUNK_SIZE }
    }

    /// Current write chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Sets the write chunk size for subsequent messages.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        self.chunk_size = check_chunk_size(size)?;
        Ok(())
    }

    /// Appends `msg` as chunks to `out`. Encoding a SetChunkSize message also
    /// switches this encoder to the new size for the messages after it.
    pub fn encode(&mut self, msg: &Message, out: &mut Vec<u8>) -> Result<(), ChunkError> {
        let new_size = Self::validate(msg)?;
        let head = Head { csid: msg.csid, timestamp: msg.timestamp, type_id: msg.type_id, stream_id: msg.stream_id };
        write_chunks(&head, &msg.payload, self.chunk_size, out);
        if let Some(size) = new_size {
            self.chunk_size = size;
        }
        Ok(())
    }

    /// Checks the message can be encoded; returns a new chunk size if it is a
    /// SetChunkSize message.
    fn validate(msg: &Message) -> Result<Option<u32>, ChunkError> {
        if !(MIN_CSID..=MAX_CSID).contains(&msg.csid) {
            return Err(ChunkError::InvalidCsid { csid: msg.csid });
        }
        if msg.payload.len() > MAX_PAYLOAD_LEN {
            return Err(ChunkError::PayloadTooLarge { len: msg.payload.len() });
        }
        if msg.type_id != message::SET_CHUNK_SIZE {
            return Ok(None);
        }
        let size = message::parse_set_chunk_size(&msg.payload)
            .map_err(|source| ChunkError::InvalidControlMessage { type_id: msg.type_id, source })?;
        Ok(Some(size))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn msg(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, len: usize) -> Message {
        let payload = (0..len).map(|i| (i * 7 + csid as usize) as u8).collect();
        Message { csid, timestamp, type_id, stream_id, payload }
    }

    fn encode_all(enc: &mut ChunkEncoder, msgs: &[Message]) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        let mut ends = Vec::new();
        for m in msgs {
            enc.encode(m, &mut out).unwrap();
            ends.push(out.len() as u64);
        }
        (out, ends)
    }

    fn decode_bytewise(dec: &mut ChunkDecoder, bytes: &[u8]) -> Vec<(Message, u64)> {
        let mut out = Vec::new();
        for b in bytes {
            let (used, m) = dec.decode(std::slice::from_ref(b)).unwrap();
            assert_eq!(used, 1);
            out.extend(m.map(|m| (m, dec.consumed())));
        }
        out
    }

    fn mixed_messages() -> Vec<Message> {
        vec![
            msg(3, 0, message::COMMAND_AMF0, 0, 300),
            message::set_chunk_size(4096),
            msg(4, 1000, message::AUDIO, 1, 5000),
            msg(6, 0x0100_0000, message::VIDEO, 1, 9000),
            msg(64, 5, message::VIDEO, 1, 10),
            msg(319, 6, message::AUDIO, 1, 0),
            msg(320, 7, message::DATA_AMF0, 1, 4097),
            msg(MAX_CSID, 0xFFFF_FFFF, message::VIDEO, 7, 8193),
            message::set_chunk_size(60000),
            msg(4, 2000, message::AUDIO, 1, 70000),
        ]
    }

    #[test]
    fn roundtrip_at_several_chunk_sizes() {
        for size in [128u32, 4096, 60000] {
            let mut enc = ChunkEncoder::new();
            enc.set_chunk_size(size).unwrap();
            let mut dec = ChunkDecoder::new();
            dec.set_chunk_size(size).unwrap();
            let msgs: Vec<Message> = [0usize, 1, 127, 128, 129, 4096, 5000, 60001, 200_000]
                .iter()
                .enumerate()
                .map(|(i, &len)| msg(3 + i as u32, i as u32 * 40, message::VIDEO, 1, len))
                .collect();
            let (bytes, ends) = encode_all(&mut enc, &msgs);
            let got = dec.decode_all(&bytes).unwrap();
            assert_eq!(got.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>(), msgs);
            assert_eq!(got.iter().map(|(_, e)| *e).collect::<Vec<_>>(), ends);
        }
    }

    #[test]
    fn bytewise_matches_bulk_with_same_offsets() {
        let msgs = mixed_messages();
        let (bytes, ends) = encode_all(&mut ChunkEncoder::new(), &msgs);
        let bulk = ChunkDecoder::new().decode_all(&bytes).unwrap();
        let single = decode_bytewise(&mut ChunkDecoder::new(), &bytes);
        assert_eq!(bulk, single);
        assert_eq!(bulk.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>(), msgs);
        assert_eq!(bulk.iter().map(|(_, e)| *e).collect::<Vec<_>>(), ends);
    }

    #[test]
    fn set_chunk_size_in_stream_changes_next_chunk() {
        let mut enc = ChunkEncoder::new();
        let msgs = [message::set_chunk_size(4096), msg(5, 0, message::VIDEO, 1, 3000)];
        let (bytes, _) = encode_all(&mut enc, &msgs);
        // One fmt 0 chunk of 3000 bytes: no continuation headers after the switch.
        assert_eq!(bytes.len(), (12 + 4) + (12 + 3000));
        let mut dec = ChunkDecoder::new();
        let got = dec.decode_all(&bytes).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0, msgs[1]);
        assert_eq!(dec.chunk_size(), 4096);
        assert_eq!(enc.chunk_size(), 4096);
    }

    /// Splits one encoded message (csid < 64, no extended timestamp) into chunks.
    fn split_chunks(bytes: &[u8], chunk_size: usize) -> Vec<Vec<u8>> {
        let first = 12 + chunk_size.min(bytes.len() - 12);
        let mut chunks = vec![bytes[..first].to_vec()];
        chunks.extend(bytes[first..].chunks(1 + chunk_size).map(<[u8]>::to_vec));
        chunks
    }

    #[test]
    fn interleaved_chunk_streams() {
        let a = msg(4, 10, message::AUDIO, 1, 500);
        let b = msg(6, 20, message::VIDEO, 1, 700);
        let mut enc = ChunkEncoder::new();
        let (ea, _) = encode_all(&mut enc, std::slice::from_ref(&a));
        let (eb, _) = encode_all(&mut enc, std::slice::from_ref(&b));
        let (ca, cb) = (split_chunks(&ea, 128), split_chunks(&eb, 128));
        let mut stream = Vec::new();
        for i in 0..ca.len().max(cb.len()) {
            ca.get(i).into_iter().chain(cb.get(i)).for_each(|c| stream.extend_from_slice(c));
        }
        let got = ChunkDecoder::new().decode_all(&stream).unwrap();
        assert_eq!(got.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(got[1].1, stream.len() as u64);
    }

    #[test]
    fn extended_timestamp_repeats_on_continuations() {
        let m = msg(4, 0x0123_4567, message::VIDEO, 1, 300);
        let (bytes, _) = encode_all(&mut ChunkEncoder::new(), std::slice::from_ref(&m));
        assert_eq!(&bytes[1..4], &[0xFF, 0xFF, 0xFF]);
        assert_eq!(&bytes[12..16], &[0x01, 0x23, 0x45, 0x67]);
        let second = 16 + 128;
        assert_eq!(&bytes[second..second + 5], &[0xC4, 0x01, 0x23, 0x45, 0x67]);
        assert_eq!(bytes.len(), 16 + 300 + 2 * 5);
        let got = decode_bytewise(&mut ChunkDecoder::new(), &bytes);
        assert_eq!(got, vec![(m, bytes.len() as u64)]);
        let edge = msg(4, 0xFF_FFFF, message::VIDEO, 1, 1);
        let (bytes, _) = encode_all(&mut ChunkEncoder::new(), std::slice::from_ref(&edge));
        assert_eq!(bytes.len(), 12 + 4 + 1);
        assert_eq!(ChunkDecoder::new().decode_all(&bytes).unwrap()[0].0, edge);
    }

    /// The spec's audio example: fmt 0, fmt 2, then two fmt 3 messages.
    #[test]
    fn hand_written_fmt0_fmt2_fmt3_sequence() {
        let mut bytes = vec![0x03, 0x00, 0x03, 0xE8, 0x00, 0x00, 0x20, 0x08, 0x01, 0x00, 0x00, 0x00];
        bytes.extend([0xAA; 32]);
        bytes.extend([0x83, 0x00, 0x00, 0x14]);
        bytes.extend([0xBB; 32]);
        bytes.push(0xC3);
        bytes.extend([0xCC; 32]);
        bytes.push(0xC3);
        bytes.extend([0xDD; 32]);
        let got = ChunkDecoder::new().decode_all(&bytes).unwrap();
        let stamps: Vec<u32> = got.iter().map(|(m, _)| m.timestamp).collect();
        assert_eq!(stamps, [1000, 1020, 1040, 1060]);
        assert!(got.iter().all(|(m, _)| m.type_id == 8 && m.stream_id == 1 && m.csid == 3));
        assert_eq!(got[3].0.payload, vec![0xDD; 32]);
        let ends: Vec<u64> = got.iter().map(|(_, e)| *e).collect();
        assert_eq!(ends, [44, 80, 113, 146]);
    }

    #[test]
    fn hand_written_fmt1_and_continuation() {
        // fmt 0, csid 4, ts 5, length 200, video, stream 1; 128 + 72 bytes.
        let mut bytes = vec![0x04, 0x00, 0x00, 0x05, 0x00, 0x00, 0xC8, 0x09, 0x01, 0x00, 0x00, 0x00];
        bytes.extend([1u8; 128]);
        bytes.push(0xC4);
        bytes.extend([2u8; 72]);
        // fmt 1: delta 33, length 5, audio.
        bytes.extend([0x44, 0x00, 0x00, 0x21, 0x00, 0x00, 0x05, 0x08]);
        bytes.extend([3u8; 5]);
        let got = ChunkDecoder::new().decode_all(&bytes).unwrap();
        assert_eq!(got.len(), 2);
        let (first, second) = (&got[0].0, &got[1].0);
        assert_eq!((first.timestamp, first.payload.len()), (5, 200));
        assert_eq!(&first.payload[126..130], &[1, 1, 2, 2]);
        assert_eq!((second.timestamp, second.type_id, second.stream_id), (38, 8, 1));
        assert_eq!(second.payload, vec![3u8; 5]);
    }

    #[test]
    fn hand_written_extended_and_multibyte_basic_headers() {
        // csid 100 (2-byte basic header), fmt 0 with extended timestamp 0x01000000.
        let mut bytes = vec![0x00, 36, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0xC8, 0x09, 0x01, 0x00, 0x00, 0x00];
        bytes.extend([0x01, 0x00, 0x00, 0x00]);
        bytes.extend([7u8; 128]);
        bytes.extend([0xC0, 36, 0x01, 0x00, 0x00, 0x00]);
        bytes.extend([8u8; 72]);
        // csid 1000 (3-byte basic header): fmt 0, ts 0, length 2; then fmt 1
        // with an extended delta of 16, then a fmt 3 message repeating it.
        bytes.extend([0x01, 0xA8, 0x03, 0, 0, 0, 0, 0, 2, 0x08, 0, 0, 0, 0, 9, 9]);
        bytes.extend([0x41, 0xA8, 0x03, 0xFF, 0xFF, 0xFF, 0, 0, 2, 0x08, 0, 0, 0, 0x10, 5, 5]);
        bytes.extend([0xC1, 0xA8, 0x03, 0, 0, 0, 0x10, 6, 6]);
        let got = decode_bytewise(&mut ChunkDecoder::new(), &bytes);
        let summary: Vec<(u32, u32, usize)> = got.iter().map(|(m, _)| (m.csid, m.timestamp, m.payload.len())).collect();
        assert_eq!(summary, [(100, 0x0100_0000, 200), (1000, 0, 2), (1000, 16, 2), (1000, 32, 2)]);
        assert_eq!(got[3].0.payload, [6, 6]);
        assert_eq!(got[3].1, bytes.len() as u64);
    }

    #[test]
    fn zero_length_and_abort() {
        let mut bytes = vec![0x04, 0, 0, 1, 0, 0, 0, 0x12, 0, 0, 0, 0];
        // Start a 200-byte message on csid 5, abort it, then restart it.
        bytes.extend([0x05, 0, 0, 2, 0, 0, 0xC8, 0x09, 1, 0, 0, 0]);
        bytes.extend([0u8; 128]);
        bytes.extend([0x02, 0, 0, 0, 0, 0, 4, 0x02, 0, 0, 0, 0, 0, 0, 0, 5]);
        bytes.extend([0x05, 0, 0, 3, 0, 0, 0x01, 0x09, 1, 0, 0, 0, 0xEE]);
        let got = ChunkDecoder::new().decode_all(&bytes).unwrap();
        let types: Vec<(u32, u8, usize)> = got.iter().map(|(m, _)| (m.csid, m.type_id, m.payload.len())).collect();
        assert_eq!(types, [(4, 0x12, 0), (2, message::ABORT, 4), (5, 9, 1)]);
        assert_eq!(got[0].1, 12);
    }

    #[test]
    fn protocol_errors() {
        let mut dec = ChunkDecoder::new();
        assert_eq!(dec.set_chunk_size(0), Err(ChunkError::InvalidChunkSize { size: 0 }));
        assert!(dec.set_chunk_size(0x8000_0000).is_err());
        let bad_size = [0x02, 0, 0, 0, 0, 0, 4, 0x01, 0, 0, 0, 0, 0x80, 0, 0, 0];
        assert!(matches!(dec.decode(&bad_size), Err(ChunkError::InvalidControlMessage { type_id: 1, .. })));
        let too_big = [0x03, 0, 0, 0, 0x00, 0x07, 0xD0, 0x09, 0, 0, 0, 0];
        let err = ChunkDecoder::with_limits(1000, 4).decode(&too_big).unwrap_err();
        assert_eq!(err, ChunkError::MessageTooLarge { csid: 3, length: 2000, limit: 1000 });
        let orphan = [0x43, 0, 0, 0, 0, 0, 1, 0x09, 0];
        let err = ChunkDecoder::new().decode(&orphan).unwrap_err();
        assert_eq!(err, ChunkError::Header(HeaderError::MissingPreviousHeader { csid: 3, fmt: 1 }));
        assert!(ChunkDecoder::new().decode(&[0xC3]).is_err());
        let mut inside = vec![0x03, 0, 0, 0, 0, 1, 0, 0x09, 0, 0, 0, 0];
        inside.extend([0u8; 128]);
        inside.extend([0x03, 0, 0, 0, 0, 0, 1, 0x09, 0, 0, 0, 0]);
        assert!(matches!(
            ChunkDecoder::new().decode_all(&inside),
            Err(ChunkError::Header(HeaderError::HeaderInsideMessage { .. }))
        ));
    }

    #[test]
    fn chunk_stream_limit() {
        let mut dec = ChunkDecoder::with_limits(DEFAULT_MAX_MESSAGE_LEN, 2);
        for csid in [3u8, 4, 3] {
            assert!(dec.decode(&[csid, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0]).unwrap().1.is_some());
        }
        let err = dec.decode(&[5, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(err, ChunkError::Header(HeaderError::TooManyChunkStreams { csid: 5, limit: 2 }));
    }

    #[test]
    fn encoder_rejects_bad_input() {
        let mut enc = ChunkEncoder::new();
        let mut out = Vec::new();
        assert_eq!(enc.encode(&msg(1, 0, 8, 0, 1), &mut out), Err(ChunkError::InvalidCsid { csid: 1 }));
        assert!(enc.encode(&msg(65600, 0, 8, 0, 1), &mut out).is_err());
        assert!(enc.encode(&msg(3, 0, 8, 0, MAX_PAYLOAD_LEN + 1), &mut out).is_err());
        let bad = Message { payload: vec![0, 0, 0, 0], ..message::set_chunk_size(1) };
        assert!(enc.encode(&bad, &mut out).is_err());
        assert!(out.is_empty());
        assert!(enc.set_chunk_size(0).is_err());
    }

    #[test]
    fn every_truncation_is_need_more() {
        let (bytes, ends) = encode_all(&mut ChunkEncoder::new(), &mixed_messages()[..6]);
        for len in 0..=bytes.len() {
            let got = ChunkDecoder::new().decode_all(&bytes[..len]).unwrap();
            assert_eq!(got.len(), ends.iter().filter(|&&e| e <= len as u64).count());
        }
    }

    fn drain(bytes: &[u8]) -> usize {
        let mut dec = ChunkDecoder::with_limits(1 << 16, 8);
        let (mut pos, mut count) = (0, 0);
        while let Ok((used, Some(_))) = dec.decode(&bytes[pos..]) {
            pos += used;
            count += 1;
        }
        count
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (valid, _) = encode_all(&mut ChunkEncoder::new(), &mixed_messages()[..5]);
        let mut decoded = 0;
        for case in 0..10_000 {
            let bytes: Vec<u8> = if case % 2 == 0 {
                let len = (next() % 300) as usize;
                (0..len)
                    .map(|_| match next() % 4 {
                        0 => (next() % 8) as u8 | ((next() % 4) as u8) << 6,
                        1 => 0xFF,
                        _ => next() as u8,
                    })
                    .collect()
            } else {
                // Flip a few bytes of a valid stream to reach deeper states.
                let mut b = valid.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % b.len();
                    b[at] = next() as u8;
                }
                b
            };
            decoded += drain(&bytes);
        }
        assert!(decoded > 0);
    }
}
