//! # RTMP codec (sans-io)
//!
//! Parsers and writers for the RTMP wire protocol, enough for a proxy that
//! accepts publishers and players, answers their `connect`/`createStream`
//! exchange, reads the stream name, then dials an origin and relays bytes.
//! Nothing here touches sockets, clocks, randomness or a runtime: callers
//! feed received bytes in and get typed results plus bytes to send out; the
//! current time and random bytes are passed in as arguments.
//!
//! ## Layers and key types
//!
//! - [`handshake`]: [`ServerHandshake`] (answers C0+C1 with S0+S1+S2, using
//!   the digest ("complex") handshake when C1 carries a valid Flash Player
//!   digest, the echo handshake otherwise) and [`ClientHandshake`] (simple
//!   handshake towards an origin). Both return a [`HandshakeProgress`] saying
//!   how many input bytes they consumed, what to send, and whether they are
//!   done.
//! - [`header`]: the one chunk-header reader (fmt 0-3 headers, 1-3 byte basic
//!   headers, extended timestamps) and the per-chunk-stream header state that
//!   fmt 1/2/3 headers compress against, shared by the decoder and the inspector.
//! - [`chunk`]: [`ChunkDecoder`] reassembles [`Message`]s from the chunk
//!   stream (interleaved chunk streams, SetChunkSize, Abort, message limits);
//!   [`ChunkEncoder`] splits messages into chunks.
//! - [`message`]: type id constants, [`Command`] parsing (AMF0 type 20 and
//!   AMF3-wrapped type 17), control message parsers and the builders a server
//!   sends while accepting a connection (`_result`, `onStatus`, `_error`,
//!   WindowAckSize, SetPeerBandwidth, SetChunkSize, StreamBegin).
//! - [`client`]: the commands a client sends to publish or play, and how to read the answers
//!   (the edge's origin pull and the load generator).
//! - [`amf0`]: [`Amf0Value`] with [`amf0::decode_all`] and [`amf0::encode`].
//! - [`filter`]: [`filter::ChunkFilter`], a chunk stream passed on with some messages left out,
//!   rewritten so that its receiver reads every other message as sent (the origin's answers
//!   to commands the proxy answered itself), until it may be relayed verbatim.
//! - [`inspect`]: [`Inspector`], a bounded-memory reader of a publisher's chunk stream that
//!   counts frames and reads metadata and sequence headers without reassembling media.
//!
//! ## Invariants
//!
//! - Handshakes never consume bytes past their last packet: whatever follows
//!   C2 (or S2) is chunk stream data and is left to the caller.
//! - The chunk decoder stops right after each completed message, so
//!   [`ChunkDecoder::consumed`] then equals the offset in the total input at
//!   which that message's last chunk ended; a proxy can forward exactly the
//!   raw bytes up to a message boundary. "Need more input" is the `Ok(None)`
//!   status, never an error; partial input is buffered inside the decoder.
//! - A received SetChunkSize (or Abort) message is applied by the decoder
//!   itself before the message is returned, so the next chunk is read with the
//!   new size. The encoder likewise switches size after encoding SetChunkSize.
//! - Resource use is bounded by the input: declared message lengths are capped
//!   (16 MiB by default), tracked chunk streams are capped (64 by default),
//!   allocations never trust declared lengths or counts, and AMF0 nesting is
//!   limited to [`amf0::MAX_DEPTH`].
//!
//! ## Failure behaviour
//!
//! No input can make this module panic (indexing is checked, arithmetic on
//! wire values saturates or wraps). Malformed input yields the error enum of
//! the layer that found it ([`HandshakeError`], [`HeaderError`] (wrapped by
//! [`ChunkError`] and [`InspectError`]),
//! [`Amf0Error`], [`MessageError`]), each variant naming what failed and
//! carrying the offending values. After a handshake or chunk error the peer
//! is out of sync and the connection should be closed; AMF0 and message
//! errors concern one message only.

pub mod amf0;
pub mod chunk;
pub mod client;
pub mod filter;
pub mod handshake;
pub mod header;
pub mod inspect;
pub mod message;

pub use amf0::{Amf0Error, Amf0Value};
pub use chunk::{ChunkDecoder, ChunkEncoder, ChunkError};
pub use handshake::{ClientHandshake, HandshakeError, HandshakeProgress, ServerHandshake};
pub use header::HeaderError;
pub use inspect::{InspectError, Inspector, MediaInfo};
pub use message::{Command, Message, MessageError};
