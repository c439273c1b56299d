//! Per-protocol connection handling on the shards: codec + balance + shard I/O.
//!
//! - [`rtmp`]: RTMP publish and play.

pub mod rtmp;
