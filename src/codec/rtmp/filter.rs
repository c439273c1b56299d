//! A chunk stream passed on message by message with some messages left out, written so that
//! its receiver decodes every message passed on exactly as the sender meant it (sans-io).
//!
//! The proxy answers a client's `connect` and `createStream` itself, then replays them to the
//! origin; the origin's own answers to those must not reach the client, which is not waiting
//! for them (strict clients fail on a `_result` whose transaction is not pending). Leaving a
//! message out of a chunk stream is not just leaving its bytes out: the next message on the
//! same chunk stream may have a compressed header (fmt 1/2/3) that leans on the left-out one.
//! [`ChunkFilter`] therefore follows both sides:
//!
//! - the sender's chunk streams, as its decoder reads them (the header module's rules; chunk
//!   sizes; Abort);
//! - the receiver's, as it will read what the filter writes: its chunk size and, per chunk
//!   stream, the header state that what it was given leaves (seeded with what the proxy wrote
//!   to it before, [`ChunkFilter::wrote`]).
//!
//! A message passed on goes out as the sender's own chunks when the receiver reads its first
//! header alike ([`StreamHeader::reads_alike`]) and its chunks were cut in one chunk size,
//! behind a SetChunkSize when the receiver's differs and the message spans chunks; otherwise
//! it goes out as one fmt 0 header and its payload in the receiver's chunk size. Messages go
//! out whole, each once its last byte is in (messages interleaved chunk by chunk come out one
//! after the other, in the order they complete). An Abort from the sender drops what it held of
//! that chunk stream's message and is not passed on (none of that message went out).
//!
//! [`ChunkFilter::in_step`] says when the receiver's state equals the sender's on every chunk
//! stream the sender has used, at a message boundary and in the same chunk size: from there
//! the sender's bytes may be relayed verbatim. A chunk stream the sender has not used yet is
//! in step whatever the receiver holds for it: a sender starts every chunk stream with fmt 0.
//!
//! Bounds: a message's declared length by `max_message_len`; the sender's chunk streams, and
//! the receiver's, by the table limits; what is held (the chunks and payloads of incomplete
//! messages) is reported by [`ChunkFilter::held`] for the caller to bound.
#![deny(clippy::indexing_slicing)]

use super::chunk::{ChunkError, DEFAULT_CHUNK_SIZE, Head, write_chunks};
use super::header::{
    ChunkHeader, ChunkStreams, HeaderError, HeaderReader, Phase, Start, Status, StreamHeader, to_usize,
};
use super::message::{self, Message};

/// What to do with a complete message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Pass it on (else it is left out).
    pub forward: bool,
    /// Stop reading right after it.
    pub stop: bool,
}

/// Chunk streams the receiver may track beyond the sender's (the proxy's own messages).
const RECEIVER_EXTRA_STREAMS: usize = 8;
/// Payload buffer reserved up front, so a declared length is not trusted.
const INITIAL_RESERVE: usize = 64 * 1024;

/// The sender's message in progress on one chunk stream.
#[derive(Debug, Default)]
struct Held {
    /// Its first chunk header.
    first: Option<ChunkHeader>,
    /// Whether the receiver reads `first` as the sender meant it.
    alike: bool,
    /// The sender's chunk size epoch at its first chunk.
    epoch: u64,
    /// Its chunks as they go on the wire, headers included.
    raw: Vec<u8>,
    payload: Vec<u8>,
}

/// See the module docs.
#[derive(Debug)]
pub struct ChunkFilter {
    source: ChunkStreams<Held>,
    reader: HeaderReader,
    phase: Phase,
    /// The sender's chunk size, and how many times it changed.
    chunk_size: u32,
    epoch: u64,
    max_message_len: u32,
    /// Sender messages in progress, and the bytes they hold.
    in_progress: usize,
    held: usize,
    receiver: ChunkStreams<()>,
    receiver_chunk_size: u32,
    out: Vec<u8>,
}

impl ChunkFilter {
    /// A filter for a sender starting at the RTMP default chunk size and a receiver that reads
    /// `receiver_chunk_size` now, has seen nothing yet, and is told nothing of the sender's
    /// first messages before they come (the caller seeds it with [`ChunkFilter::wrote`]).
    pub fn new(receiver_chunk_size: u32, max_message_len: u32, max_chunk_streams: usize) -> Self {
        ChunkFilter {
            source: ChunkStreams::new(max_chunk_streams),
            reader: HeaderReader::new(),
            phase: Phase::Header,
            chunk_size: DEFAULT_CHUNK_SIZE,
            epoch: 0,
            max_message_len,
            in_progress: 0,
            held: 0,
            receiver: ChunkStreams::new(max_chunk_streams.saturating_add(RECEIVER_EXTRA_STREAMS)),
            receiver_chunk_size,
            out: Vec::new(),
        }
    }

    /// Notes a message written to the receiver by someone else (with a fmt 0 header, as
    /// [`super::ChunkEncoder`] writes), `length` bytes long.
    pub fn wrote(&mut self, head: &Head, length: u32) -> Result<(), ChunkError> {
        self.note(&ChunkHeader::full(head.csid, head.timestamp, length, head.type_id, head.stream_id))
    }

    /// The chunk size the receiver reads its next message with.
    pub fn receiver_chunk_size(&self) -> u32 {
        self.receiver_chunk_size
    }

    /// Bytes held for incomplete messages (their chunks and their payloads).
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether the sender's bytes from here on may go to the receiver verbatim: no message or
    /// header is in progress, both read the same chunk size, and the receiver's header state
    /// equals the sender's on every chunk stream the sender has used.
    pub fn in_step(&self) -> bool {
        self.in_progress == 0
            && self.reader.is_empty()
            && self.receiver_chunk_size == self.chunk_size
            && self.source.entries().all(|(csid, s)| {
                let receiver = self.receiver.position(csid).and_then(|i| self.receiver.get(i));
                receiver.is_some_and(|r| r.header.reads_alike(&s.header, 3))
            })
    }

    /// Takes what is ready to go to the receiver.
    pub fn output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Reads `input`, the sender's next bytes, until `judge` says stop after a message or the
    /// input ends; returns how many bytes of `input` were read. `judge` sees every complete
    /// message but Abort, whose effect is applied here.
    pub fn feed(&mut self, input: &[u8], mut judge: impl FnMut(&Message) -> Decision) -> Result<usize, ChunkError> {
        let mut pos = 0usize;
        while pos < input.len() {
            let rest = input.get(pos..).unwrap_or_default();
            let (used, done) = match self.phase {
                Phase::Header => self.read_header(rest)?,
                Phase::Payload { index, remaining } => self.read_payload(rest, index, remaining)?,
            };
            pos = pos.saturating_add(used);
            if let Some(index) = done
                && self.complete(index, &mut judge)?
            {
                break;
            }
        }
        Ok(pos)
    }

    /// Reads the next header; returns the bytes used and the index of a message it completes.
    fn read_header(&mut self, input: &[u8]) -> Result<(usize, Option<usize>), ChunkError> {
        let (used, status) = self.reader.read(input, &self.source)?;
        let Status::Complete(h) = status else {
            return Ok((used, None));
        };
        // The state this header leans on, before it is applied.
        let before = self.source.position(h.csid).and_then(|i| self.source.get(i)).map(|s| s.header.clone());
        let (index, start) = self.source.begin_chunk(&h)?;
        let alike = start == Start::NewMessage && self.reads_alike(before.as_ref(), &h);
        let (epoch, limit, chunk_size) = (self.epoch, self.max_message_len, self.chunk_size);
        let stream =
            self.source.get_mut(index).ok_or(HeaderError::MissingPreviousHeader { csid: h.csid, fmt: h.fmt })?;
        if start == Start::NewMessage {
            let length = stream.header.length();
            if length > limit {
                return Err(ChunkError::MessageTooLarge { csid: h.csid, length, limit });
            }
            let payload = Vec::with_capacity(to_usize(length).min(INITIAL_RESERVE));
            stream.body = Held { first: Some(h), alike, epoch, raw: Vec::new(), payload };
            self.in_progress = self.in_progress.saturating_add(1);
        }
        let was = stream.body.raw.len();
        h.write(&mut stream.body.raw);
        self.held = self.held.saturating_add(stream.body.raw.len().saturating_sub(was));
        if stream.header.is_complete() {
            return Ok((used, Some(index)));
        }
        self.phase = Phase::Payload { index, remaining: stream.header.chunk_len(to_usize(chunk_size)) };
        Ok((used, None))
    }

    /// Whether the receiver reads `h`, a header starting a message, as the sender meant it
    /// (`before`: the sender's state it leans on).
    fn reads_alike(&self, before: Option<&StreamHeader>, h: &ChunkHeader) -> bool {
        if h.fmt == 0 {
            return true;
        }
        let receiver = self.receiver.position(h.csid).and_then(|i| self.receiver.get(i));
        match (before, receiver) {
            (Some(sender), Some(receiver)) => receiver.header.reads_alike(sender, h.fmt),
            _ => false,
        }
    }

    /// Takes up to `remaining` payload bytes of the current chunk; returns the bytes used and
    /// the index of a message they complete.
    fn read_payload(
        &mut self,
        input: &[u8],
        index: usize,
        remaining: usize,
    ) -> Result<(usize, Option<usize>), ChunkError> {
        let n = remaining.min(input.len());
        let piece = input.get(..n).unwrap_or_default();
        let stream = self.source.get_mut(index).ok_or(HeaderError::MissingPreviousHeader { csid: 0, fmt: 3 })?;
        stream.body.raw.extend_from_slice(piece);
        stream.body.payload.extend_from_slice(piece);
        stream.header.advance(n);
        self.held = self.held.saturating_add(n.saturating_mul(2));
        let left = remaining.saturating_sub(n);
        if left > 0 {
            self.phase = Phase::Payload { index, remaining: left };
            return Ok((n, None));
        }
        self.phase = Phase::Header;
        Ok((n, stream.header.is_complete().then_some(index)))
    }

    /// The sender's message on chunk stream `index` is complete: apply it, ask `judge`, pass
    /// it on or leave it out. Returns whether to stop.
    fn complete(&mut self, index: usize, judge: &mut impl FnMut(&Message) -> Decision) -> Result<bool, ChunkError> {
        let Some(stream) = self.source.get_mut(index) else { return Ok(false) };
        stream.header.end_message();
        let held = std::mem::take(&mut stream.body);
        let h = &stream.header;
        let Some(first) = held.first else { return Ok(false) };
        let msg = Message {
            csid: first.csid,
            timestamp: h.timestamp(),
            type_id: h.type_id(),
            stream_id: h.stream_id(),
            payload: held.payload,
        };
        let raw = held.raw;
        self.in_progress = self.in_progress.saturating_sub(1);
        self.held = self.held.saturating_sub(raw.len().saturating_add(msg.payload.len()));
        let invalid = |source| ChunkError::InvalidControlMessage { type_id: msg.type_id, source };
        let new_size = match msg.type_id {
            message::SET_CHUNK_SIZE => Some(message::parse_set_chunk_size(&msg.payload).map_err(invalid)?),
            message::ABORT => {
                self.abort(message::parse_abort(&msg.payload).map_err(invalid)?);
                return Ok(false);
            }
            _ => None,
        };
        let decision = judge(&msg);
        if decision.forward {
            let verbatim = held.alike && held.epoch == self.epoch;
            self.emit(&msg, first, verbatim.then_some(raw.as_slice()))?;
        }
        if let Some(size) = new_size {
            self.chunk_size = size;
            self.epoch = self.epoch.wrapping_add(1);
        }
        Ok(decision.stop)
    }

    /// Drops what is held of the message in progress on chunk stream `csid`.
    fn abort(&mut self, csid: u32) {
        let Some(stream) = self.source.find_mut(csid) else { return };
        if stream.header.in_message() {
            stream.header.end_message();
            let held = std::mem::take(&mut stream.body);
            self.held = self.held.saturating_sub(held.raw.len().saturating_add(held.payload.len()));
            self.in_progress = self.in_progress.saturating_sub(1);
        }
    }

    /// Writes `msg` for the receiver: `raw`, the sender's chunks (when the receiver reads
    /// them alike and they were cut in the sender's current chunk size), or a fmt 0 header
    /// and the payload in the receiver's chunk size.
    fn emit(&mut self, msg: &Message, first: ChunkHeader, raw: Option<&[u8]>) -> Result<(), ChunkError> {
        let length = u32::try_from(msg.payload.len()).unwrap_or(u32::MAX);
        match raw {
            Some(raw) => {
                let size = self.chunk_size;
                if self.receiver_chunk_size != size && length > size.min(self.receiver_chunk_size) {
                    self.announce(size)?;
                }
                self.out.extend_from_slice(raw);
                self.note(&first)?;
            }
            None => {
                let head =
                    Head { csid: msg.csid, timestamp: msg.timestamp, type_id: msg.type_id, stream_id: msg.stream_id };
                write_chunks(&head, &msg.payload, self.receiver_chunk_size, &mut self.out);
                self.wrote(&head, length)?;
            }
        }
        if msg.type_id == message::SET_CHUNK_SIZE {
            let invalid = |source| ChunkError::InvalidControlMessage { type_id: msg.type_id, source };
            self.receiver_chunk_size = message::parse_set_chunk_size(&msg.payload).map_err(invalid)?;
        }
        Ok(())
    }

    /// Tells the receiver the chunk size `size`, on a chunk stream the sender has not used (so
    /// the sender's chunk streams keep the receiver state they had).
    fn announce(&mut self, size: u32) -> Result<(), ChunkError> {
        let csid =
            (message::CONTROL_CSID..).find(|&c| self.source.position(c).is_none()).unwrap_or(message::CONTROL_CSID);
        let mut msg = message::set_chunk_size(size);
        msg.csid = csid;
        let head = Head { csid, timestamp: msg.timestamp, type_id: msg.type_id, stream_id: msg.stream_id };
        write_chunks(&head, &msg.payload, self.receiver_chunk_size, &mut self.out);
        self.wrote(&head, 4)?;
        self.receiver_chunk_size = size;
        Ok(())
    }

    /// Applies a header the receiver reads, starting (and, as the filter writes whole
    /// messages, ending) a message on its chunk stream.
    fn note(&mut self, h: &ChunkHeader) -> Result<(), ChunkError> {
        let (index, _) = self.receiver.begin_chunk(h)?;
        if let Some(stream) = self.receiver.get_mut(index) {
            stream.header.end_message();
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests;
