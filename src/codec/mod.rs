//! Sans-io parsers and writers: bytes in, typed results out. No sockets, clocks or runtime
//! here (a test in `tests/layering.rs` keeps it so), which makes every codec unit-testable,
//! fuzzable and benchmarkable without a network.
//!
//! - [`flv`]: FLV tag bodies (codecs, frame types, `onMetaData`, H.264/HEVC SPS picture size);
//! - [`http`]: HTTP/1.x request heads (httparse) and responses;
//! - [`m3u8`]: HLS playlist rewriting (sticky segments);
//! - [`rtmp`]: RTMP handshake, chunk stream, AMF0, messages and the publisher inspector;
//! - [`sdp`]: ICE credentials and host-candidate rewriting in WebRTC offers and answers;
//! - [`srt`]: SRT headers, handshakes, stream ids and the listener's induction reply;
//! - [`ts`]: FLV/RTMP H.264 and AAC messages to MPEG-TS (HTTP-TS players of local streams);
//! - [`stun`]: STUN parsing (ICE USERNAME) and RFC 7983 demultiplexing of the WebRTC port.

pub mod flv;
pub mod http;
pub mod m3u8;
pub mod rtmp;
pub mod sdp;
pub mod srt;
pub mod stun;
pub mod ts;
