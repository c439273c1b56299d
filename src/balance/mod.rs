//! Origins, stream keys, the registry and picking: pure data, no runtime.
//!
//! - [`endpoint`]: the listen endpoints SRS reports (`1935`, `ip:port`, `udp://:8000`, ...);
//! - [`hls`]: the `spbhid` ids that keep HLS segments on their playlist's origin;
//! - [`ice`]: WebRTC sessions by ICE username, for routing STUN from new addresses;
//! - [`origin`]: registration requests and origin records;
//! - [`stream_key`]: the `vhost/app/stream` key every protocol of one stream shares;
//! - [`pick`]: rendezvous hashing and the immutable [`pick::Snapshot`] shards see;
//! - [`registry`]: the control thread's origins (proven or not, bounded, probed), pins and
//!   session counts;
//! - [`session`]: session kinds (protocol, role);
//! - [`srs_redis`]: the SRS proxy's Redis key names and JSON (redis mode).
//!
//! Nothing here imports glommio or tokio (a test in `tests/layering.rs` keeps it so); time is a
//! parameter, so every rule is testable without sleeping.

pub mod endpoint;
pub mod hls;
pub mod ice;
pub mod origin;
pub mod pick;
pub mod registry;
pub mod session;
pub mod signed;
pub mod srs_redis;
pub mod stream_key;

pub use origin::{Origin, OriginId, Registration};
pub use pick::{PickError, Snapshot};
pub use registry::Registry;
pub use stream_key::StreamKey;
