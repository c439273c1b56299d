//! Sans-io parsers and writers: bytes in, typed results out. No sockets, clocks or runtime
//! here (a test in `tests/layering.rs` keeps it so), which makes every codec unit-testable,
//! fuzzable and benchmarkable without a network.
//!
//! - [`http`]: HTTP/1.x request heads (httparse) and responses;
//! - [`m3u8`]: HLS playlist rewriting (sticky segments);
//! - [`rtmp`]: RTMP handshake, chunk stream, AMF0 and messages.

pub mod http;
pub mod m3u8;
pub mod rtmp;
pub mod sdp;
pub mod stun;
