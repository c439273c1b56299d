//! Chunk headers (sans-io), read one way for both readers of a chunk stream: the
//! [`ChunkDecoder`](super::ChunkDecoder), which reassembles messages, and the
//! [`Inspector`](super::Inspector), which counts and captures without reassembling.
//!
//! - [`HeaderReader`] reads one chunk header (a 1-3 byte basic header, a fmt 0-3 message
//!   header, an extended timestamp) from bytes split anywhere: [`Status::Complete`] with a
//!   [`ChunkHeader`] and the bytes it used, or [`Status::Partial`] once all input is buffered.
//!   A header wholly inside the input is parsed in place, without a copy.
//! - [`ChunkStreams`] tracks the chunk streams: per stream the [`StreamHeader`] that fmt 1/2/3
//!   headers compress against, plus a caller's own state `T` (the decoder's payload, the
//!   inspector's capture). [`ChunkStreams::begin_chunk`] applies a header to its stream.
//!
//! ## Rules (as an origin's decoder applies them)
//!
//! - A chunk stream starts with a fmt 0 header; a fmt 1/2/3 header on a chunk stream never
//!   seen is [`HeaderError::MissingPreviousHeader`]. At most `limit` streams are tracked.
//! - fmt 0 carries an absolute timestamp (which is also the delta a following fmt 3 message
//!   adds), length, type id and message stream id; fmt 1 a delta, length and type id; fmt 2 a
//!   delta; fmt 3 nothing: a new message on fmt 3 adds the last delta again.
//! - A 24-bit timestamp field of [`EXTENDED_TIMESTAMP`] means 4 more bytes hold it. A fmt 3
//!   header carries those 4 bytes exactly when the last fmt 0/1/2 header of its chunk stream
//!   did (continuation chunks repeat them). When a fmt 3 header starts a new message its
//!   extended field becomes the delta; on a continuation chunk it is read and ignored.
//! - While a message is incomplete on a chunk stream, only fmt 3 (continuation) headers may
//!   follow there; fmt 0/1/2 is [`HeaderError::HeaderInsideMessage`]. A continuation changes
//!   no header state. Callers count payload bytes with [`StreamHeader::advance`] and end a
//!   message with [`StreamHeader::end_message`] (when complete, or on Abort).
//!
//! ## Invariants
//!
//! - The reader holds at most [`MAX_HEADER_LEN`] bytes and never consumes a byte past the
//!   header it completes; `Partial` means all input was used.
//! - INVARIANT: an index from [`ChunkStreams::begin_chunk`] stays valid for the life of the
//!   table (streams are added, never removed).
//! - No input makes this module panic: indexing is checked, arithmetic saturates.
#![deny(clippy::indexing_slicing)]

use thiserror::Error;

/// 24-bit timestamp value meaning "an extended 32-bit timestamp follows".
pub const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;
/// Longest chunk header: 3-byte basic + 11-byte fmt 0 + 4-byte extended timestamp.
pub const MAX_HEADER_LEN: usize = 18;
/// Default bound on the number of chunk streams tracked at once.
pub const DEFAULT_MAX_CHUNK_STREAMS: usize = 64;
/// Smallest chunk stream id.
pub const MIN_CSID: u32 = 2;
/// Largest chunk stream id (3-byte basic header).
pub const MAX_CSID: u32 = 65599;
/// Largest payload a message header can declare (24-bit field).
pub const MAX_PAYLOAD_LEN: usize = 0xFF_FFFF;

/// A chunk header that breaks the chunk stream. The peer is out of sync afterwards.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// A fmt 1/2/3 chunk on a chunk stream that never had a fmt 0 header.
    #[error("fmt {fmt} chunk on chunk stream {csid} without a previous header")]
    MissingPreviousHeader {
        /// Chunk stream id.
        csid: u32,
        /// Header format of the offending chunk.
        fmt: u8,
    },
    /// A fmt 0/1/2 header while a message on that chunk stream is incomplete.
    #[error("fmt {fmt} header on chunk stream {csid} inside a message ({received} of {length} bytes)")]
    HeaderInsideMessage {
        /// Chunk stream id.
        csid: u32,
        /// Header format of the offending chunk.
        fmt: u8,
        /// Payload bytes received so far.
        received: usize,
        /// Declared message length.
        length: u32,
    },
    /// A new chunk stream id appeared while the maximum were already tracked.
    #[error("chunk stream {csid} would exceed the limit of {limit} chunk streams")]
    TooManyChunkStreams {
        /// The new chunk stream id.
        csid: u32,
        /// Configured maximum.
        limit: usize,
    },
}

/// Outcome of reading: a whole value, or "need more input" (not an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// The value is whole.
    Complete(T),
    /// All input was used and more is needed.
    Partial,
}

/// One chunk header as read from the wire (fields a format omits are 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Header format, 0-3.
    pub fmt: u8,
    /// Chunk stream id.
    pub csid: u32,
    /// Timestamp (fmt 0) or delta (fmt 1/2), or the extended field of fmt 3 (0 if absent).
    pub ts_field: u32,
    /// Whether an extended timestamp was present.
    pub extended: bool,
    /// Message length (fmt 0/1).
    pub length: u32,
    /// Message type id (fmt 0/1).
    pub type_id: u8,
    /// Message stream id (fmt 0).
    pub stream_id: u32,
}

impl ChunkHeader {
    /// Appends this header as it goes on the wire (the shortest basic header for its csid):
    /// a decoder whose chunk stream state is the sender's reads it back as this header.
    pub fn write(&self, out: &mut Vec<u8>) {
        write_basic_header(out, self.fmt, self.csid);
        let field = if self.extended { EXTENDED_TIMESTAMP } else { self.ts_field.min(EXTENDED_TIMESTAMP) };
        if self.fmt <= 2 {
            let [_, t2, t1, t0] = field.to_be_bytes();
            out.extend_from_slice(&[t2, t1, t0]);
        }
        if self.fmt <= 1 {
            let [_, l2, l1, l0] = self.length.min(EXTENDED_TIMESTAMP).to_be_bytes();
            out.extend_from_slice(&[l2, l1, l0, self.type_id]);
        }
        if self.fmt == 0 {
            out.extend_from_slice(&self.stream_id.to_le_bytes());
        }
        if self.extended {
            out.extend_from_slice(&self.ts_field.to_be_bytes());
        }
    }

    /// The fmt 0 header that starts a message with these fields on its own, whatever came
    /// before on its chunk stream (as [`super::chunk::write_chunks`] writes it).
    pub fn full(csid: u32, timestamp: u32, length: u32, type_id: u8, stream_id: u32) -> ChunkHeader {
        let extended = timestamp >= EXTENDED_TIMESTAMP;
        ChunkHeader { fmt: 0, csid, ts_field: timestamp, extended, length, type_id, stream_id }
    }
}

/// Reads chunk headers from input split anywhere, buffering a header cut by the input's end.
#[derive(Debug, Clone, Default)]
pub struct HeaderReader {
    buf: [u8; MAX_HEADER_LEN],
    /// INVARIANT: `len <= MAX_HEADER_LEN`, and `len > 0` only between calls that split a header.
    len: usize,
}

impl HeaderReader {
    /// A reader expecting the first byte of a header.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the next header from `input`; `streams` tells whether a fmt 3 header carries an
    /// extended timestamp. Returns the bytes used (all of `input` on `Partial`).
    #[inline]
    pub fn read<T>(
        &mut self,
        input: &[u8],
        streams: &ChunkStreams<T>,
    ) -> Result<(usize, Status<ChunkHeader>), HeaderError> {
        if self.len == 0 {
            // `header_len` returns at most `input.len()` only once the header is whole.
            let need = header_len(input, streams)?;
            if let Some(whole) = input.get(..need) {
                return Ok((need, Status::Complete(parse(whole))));
            }
        }
        self.read_buffered(input, streams)
    }

    fn read_buffered<T>(
        &mut self,
        input: &[u8],
        streams: &ChunkStreams<T>,
    ) -> Result<(usize, Status<ChunkHeader>), HeaderError> {
        let mut used = 0usize;
        loop {
            let need = header_len(self.bytes(), streams)?;
            if self.len >= need {
                break;
            }
            let src = input.get(used..).unwrap_or_default();
            let n = need.saturating_sub(self.len).min(src.len());
            if n == 0 {
                return Ok((used, Status::Partial));
            }
            let end = self.len.saturating_add(n);
            if let (Some(dst), Some(s)) = (self.buf.get_mut(self.len..end), src.get(..n)) {
                dst.copy_from_slice(s);
            }
            self.len = end;
            used = used.saturating_add(n);
        }
        let header = parse(self.bytes());
        self.len = 0;
        Ok((used, Status::Complete(header)))
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Whether no part of a header is buffered (the next byte starts a header).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Total length of the header that `h` begins, as far as `h` tells: a value above `h.len()`
/// is how far to read before asking again; at most `h.len()` means the header is whole.
#[inline]
fn header_len<T>(h: &[u8], streams: &ChunkStreams<T>) -> Result<usize, HeaderError> {
    let Some(&first) = h.first() else {
        return Ok(1);
    };
    let basic = basic_header_len(first);
    if h.len() < basic {
        return Ok(basic);
    }
    let fmt = first >> 6;
    let base = basic.saturating_add(message_header_len(fmt));
    if h.len() < base {
        return Ok(base);
    }
    let extended = if fmt == 3 {
        let csid = basic_csid(h);
        let stream = streams.position(csid).and_then(|i| streams.get(i));
        stream.ok_or(HeaderError::MissingPreviousHeader { csid, fmt })?.header.has_extended
    } else {
        be_u24(h, basic) == EXTENDED_TIMESTAMP
    };
    Ok(if extended { base.saturating_add(4) } else { base })
}

/// Parses a whole header (its length as `header_len` found it). Only the fields its format
/// carries are read; the others stay 0.
#[inline]
fn parse(h: &[u8]) -> ChunkHeader {
    let first = h.first().copied().unwrap_or(0);
    let (fmt, basic) = (first >> 6, basic_header_len(first));
    let base = basic.saturating_add(message_header_len(fmt));
    let extended = h.len() > base;
    let mut header =
        ChunkHeader { fmt, csid: basic_csid(h), ts_field: 0, extended, length: 0, type_id: 0, stream_id: 0 };
    let message = h.get(basic..).unwrap_or_default();
    if fmt <= 2 {
        header.ts_field = be_u24(message, 0);
    }
    if fmt <= 1 {
        header.length = be_u24(message, 3);
        header.type_id = message.get(6).copied().unwrap_or(0);
    }
    if fmt == 0 {
        header.stream_id = le_u32(message, 7);
    }
    if extended {
        header.ts_field = be_u32(h, base);
    }
    header
}

/// Where a reader that does not reassemble chunks into one buffer is in the byte stream
/// (the inspector, the filter): at a header, or inside a chunk's payload.
#[derive(Debug, Clone, Copy)]
pub(super) enum Phase {
    Header,
    /// `remaining` payload bytes of the current chunk on the chunk stream at `index`.
    Payload {
        index: usize,
        remaining: usize,
    },
}

/// What a header did to its chunk stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// It begins a message (payload counting restarts at 0).
    NewMessage,
    /// It continues the incomplete message on its chunk stream.
    Continuation,
}

/// A chunk stream's header state: the fields fmt 1/2/3 headers leave out, and how far its
/// current message has come.
#[derive(Debug, Clone, Default)]
pub struct StreamHeader {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Whether the last fmt 0/1/2 header had an extended timestamp (so fmt 3 ones do).
    has_extended: bool,
    in_message: bool,
    /// INVARIANT: payload bytes of the current message counted so far; callers never count
    /// past `length` (they read at most [`StreamHeader::chunk_len`] bytes per chunk).
    received: usize,
}

impl StreamHeader {
    /// Applies a header under the rules in the module docs.
    #[inline]
    fn apply(&mut self, h: &ChunkHeader) -> Result<Start, HeaderError> {
        if self.in_message {
            if h.fmt == 3 {
                return Ok(Start::Continuation);
            }
            let (received, length) = (self.received, self.length);
            return Err(HeaderError::HeaderInsideMessage { csid: h.csid, fmt: h.fmt, received, length });
        }
        self.apply_timestamp(h);
        if h.fmt <= 1 {
            self.length = h.length;
            self.type_id = h.type_id;
        }
        if h.fmt == 0 {
            self.stream_id = h.stream_id;
        }
        self.in_message = true;
        self.received = 0;
        Ok(Start::NewMessage)
    }

    /// fmt 0 is absolute (and the delta a following fmt 3 message reuses); fmt 1/2 carry a
    /// delta; fmt 3 reuses it, or takes its extended field as the new delta.
    #[inline]
    fn apply_timestamp(&mut self, h: &ChunkHeader) {
        match h.fmt {
            0 => {
                self.timestamp = h.ts_field;
                self.delta = h.ts_field;
            }
            1 | 2 => {
                self.delta = h.ts_field;
                self.timestamp = self.timestamp.wrapping_add(h.ts_field);
            }
            _ => {
                if h.extended {
                    self.delta = h.ts_field;
                }
                self.timestamp = self.timestamp.wrapping_add(self.delta);
            }
        }
        if h.fmt <= 2 {
            self.has_extended = h.extended;
        }
    }

    /// Whether a header of format `fmt` starting a message reads the same against this state as
    /// against `other`: fmt 0 always; fmt 1 needs the same stream id and timestamp (it adds a
    /// delta); fmt 2 also the same length and type; fmt 3 everything, the delta it adds again
    /// and whether it carries an extended timestamp included. After such a header both states
    /// are equal in every field, so `reads_alike(other, 3)` means "in step".
    pub fn reads_alike(&self, other: &StreamHeader, fmt: u8) -> bool {
        if self.in_message || other.in_message {
            return false;
        }
        let fmt1 = self.stream_id == other.stream_id && self.timestamp == other.timestamp;
        let fmt2 = fmt1 && self.length == other.length && self.type_id == other.type_id;
        match fmt {
            0 => true,
            1 => fmt1,
            2 => fmt2,
            _ => fmt2 && self.delta == other.delta && self.has_extended == other.has_extended,
        }
    }

    /// Timestamp of the current (or last) message.
    #[inline]
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Declared length of the current message.
    #[inline]
    pub fn length(&self) -> u32 {
        self.length
    }

    /// Type id of the current message.
    #[inline]
    pub fn type_id(&self) -> u8 {
        self.type_id
    }

    /// Message stream id of the current message.
    #[inline]
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// Payload bytes of the current message counted so far.
    #[inline]
    pub fn received(&self) -> usize {
        self.received
    }

    /// Whether a message is incomplete on this chunk stream.
    #[inline]
    pub fn in_message(&self) -> bool {
        self.in_message
    }

    /// Payload bytes of the chunk just begun, at `chunk_size` bytes per chunk.
    #[inline]
    pub fn chunk_len(&self, chunk_size: usize) -> usize {
        to_usize(self.length).saturating_sub(self.received).min(chunk_size)
    }

    /// Whether all of the current message's payload has been counted.
    #[inline]
    pub fn is_complete(&self) -> bool {
        self.received >= to_usize(self.length)
    }

    /// Counts `n` payload bytes of the current message.
    #[inline]
    pub fn advance(&mut self, n: usize) {
        self.received = self.received.saturating_add(n);
    }

    /// Ends the current message (complete, or aborted): the next header starts a new one.
    #[inline]
    pub fn end_message(&mut self) {
        self.in_message = false;
    }
}

/// One tracked chunk stream: its header state and the caller's state.
#[derive(Debug, Default)]
pub struct ChunkStream<T> {
    /// Header state, changed only through [`ChunkStreams::begin_chunk`] and the counting calls.
    pub header: StreamHeader,
    /// The caller's per-stream state.
    pub body: T,
}

/// The chunk streams of one direction of a connection, at most `limit` of them.
///
/// A linear search over ids: peers use a handful of chunk streams, and the limit (64 by
/// default) bounds the search.
#[derive(Debug)]
pub struct ChunkStreams<T> {
    /// Ids, in the order of `streams`, kept apart so the search reads one small array.
    csids: Vec<u32>,
    streams: Vec<ChunkStream<T>>,
    limit: usize,
}

impl<T> ChunkStreams<T> {
    /// Bytes one tracked chunk stream takes, not counting what `T` owns on the heap.
    pub const STREAM_SIZE: usize = std::mem::size_of::<ChunkStream<T>>() + std::mem::size_of::<u32>();

    /// An empty table tracking at most `limit` chunk streams.
    pub fn new(limit: usize) -> Self {
        ChunkStreams { csids: Vec::new(), streams: Vec::new(), limit }
    }

    /// Index of chunk stream `csid`, if tracked.
    #[inline]
    pub fn position(&self, csid: u32) -> Option<usize> {
        self.csids.iter().position(|&c| c == csid)
    }

    /// The chunk stream at `index`.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&ChunkStream<T>> {
        self.streams.get(index)
    }

    /// The chunk stream at `index`, mutably.
    #[inline]
    pub fn get_mut(&mut self, index: usize) -> Option<&mut ChunkStream<T>> {
        self.streams.get_mut(index)
    }

    /// Chunk stream `csid`, if tracked.
    #[inline]
    pub fn find_mut(&mut self, csid: u32) -> Option<&mut ChunkStream<T>> {
        self.position(csid).and_then(|i| self.streams.get_mut(i))
    }

    /// Every tracked chunk stream with its id.
    pub fn entries(&self) -> impl Iterator<Item = (u32, &ChunkStream<T>)> {
        self.csids.iter().copied().zip(self.streams.iter())
    }

    /// Every tracked chunk stream.
    pub fn iter(&self) -> impl Iterator<Item = &ChunkStream<T>> {
        self.streams.iter()
    }

    /// Number of tracked chunk streams.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no chunk stream is tracked.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

impl<T: Default> ChunkStreams<T> {
    /// Applies a complete header to its chunk stream (tracking a new one on fmt 0). Returns
    /// the stream's index and whether the chunk begins or continues a message.
    #[inline]
    pub fn begin_chunk(&mut self, h: &ChunkHeader) -> Result<(usize, Start), HeaderError> {
        let index = match self.position(h.csid) {
            Some(index) => index,
            None => self.insert(h)?,
        };
        let stream =
            self.streams.get_mut(index).ok_or(HeaderError::MissingPreviousHeader { csid: h.csid, fmt: h.fmt })?;
        Ok((index, stream.header.apply(h)?))
    }

    fn insert(&mut self, h: &ChunkHeader) -> Result<usize, HeaderError> {
        if h.fmt != 0 {
            return Err(HeaderError::MissingPreviousHeader { csid: h.csid, fmt: h.fmt });
        }
        if self.streams.len() >= self.limit {
            return Err(HeaderError::TooManyChunkStreams { csid: h.csid, limit: self.limit });
        }
        self.csids.push(h.csid);
        self.streams.push(ChunkStream::default());
        Ok(self.streams.len() - 1)
    }
}

/// Appends a basic header for `csid` (in `MIN_CSID..=MAX_CSID`) with header format `fmt`.
#[inline]
pub fn write_basic_header(out: &mut Vec<u8>, fmt: u8, csid: u32) {
    let fmt_bits = fmt << 6;
    match csid {
        0..=63 => out.push(fmt_bits | (csid as u8)),
        64..=319 => out.extend_from_slice(&[fmt_bits, (csid - 64) as u8]),
        _ => {
            let id = csid.saturating_sub(64);
            out.extend_from_slice(&[fmt_bits | 1, (id & 0xFF) as u8, ((id >> 8) & 0xFF) as u8]);
        }
    }
}

/// `u32` to `usize`, saturating on 16-bit targets.
#[inline]
pub(super) fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn basic_header_len(first: u8) -> usize {
    match first & 0x3F {
        0 => 2,
        1 => 3,
        _ => 1,
    }
}

fn message_header_len(fmt: u8) -> usize {
    match fmt {
        0 => 11,
        1 => 7,
        2 => 3,
        _ => 0,
    }
}

fn byte(h: &[u8], at: usize) -> u32 {
    u32::from(h.get(at).copied().unwrap_or(0))
}

fn basic_csid(h: &[u8]) -> u32 {
    match byte(h, 0) & 0x3F {
        0 => 64 + byte(h, 1),
        1 => 64 + byte(h, 1) + (byte(h, 2) << 8),
        n => n,
    }
}

fn be_u24(h: &[u8], at: usize) -> u32 {
    (byte(h, at) << 16) | (byte(h, at.saturating_add(1)) << 8) | byte(h, at.saturating_add(2))
}

fn be_u32(h: &[u8], at: usize) -> u32 {
    (byte(h, at) << 24) | be_u24(h, at.saturating_add(1))
}

fn le_u32(h: &[u8], at: usize) -> u32 {
    (0..4).rev().fold(0, |acc, i| (acc << 8) | byte(h, at.saturating_add(i)))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests;
