//! Sans-io parsers and writers: bytes in, typed results out. No sockets, clocks or runtime
//! here (a test in `tests/layering.rs` keeps it so), which makes every codec unit-testable,
//! fuzzable and benchmarkable without a network.
//!
//! - [`http`]: HTTP/1.x request heads (httparse) and responses.

pub mod http;
