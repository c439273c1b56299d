//! # streamgate
//!
//! A load-balancing proxy for live-video origins. Origins (SRS, nginx-rtmp, ...) register with
//! SRS heartbeats; publishers and players connect to streamgate, which pins each stream to one
//! origin for every protocol and relays the bytes.
//!
//! ## Threads
//!
//! ```text
//!   SO_REUSEPORT listeners (RTMP, ...), bound by every shard
//!        |                 |
//!   shard 0 (CPU 0)   shard 1 (CPU 1)  ...   glommio LocalExecutor each, pinned, !Send state
//!        |  ^              |  ^
//!        |  | snapshots (tokio watch: newest registry copy)
//!        v  | events (bounded tokio mpsc: claims, sessions, one report a second)
//!   control thread: tokio current-thread runtime
//!     System API (register, versions, origins, streams, shards) | registry + pins | stats | default backend
//! ```
//!
//! - A shard ([`shard`]) owns its connections from accept to close and never blocks or locks.
//! - The control thread ([`control`]) owns the registry and the pins. Shards propose an origin
//!   for a new stream from their snapshot (rendezvous hashing) and claim it; the control thread
//!   keeps the first alive pin, so a stream never has two origins.
//!
//! ## One connection
//!
//! identify (protocol handshake, stream name) -> stream key ([`balance::StreamKey`]) -> claim an
//! origin -> dial and replay -> relay until either side closes -> report the session.
//!
//! For RTMP ([`proxy::rtmp`]) the proxy answers the handshake and `connect`/`createStream`
//! itself, then sends the origin every byte the client sent after its handshake, verbatim, and
//! forwards the origin's stream verbatim too: both peers see each other's chunk stream from its
//! first byte, so the switch to relaying needs no re-framing. The relay
//! ([`shard::relay`]) is splice(2) through a pipe or a copy loop, with readiness from the
//! shard's io_uring. A publisher's upstream bytes go through the copy loop and a streaming
//! inspector ([`codec::rtmp::inspect`]) that counts frames and reads metadata and the SPS.
//! Once a second each shard sends the control thread one report: per-connection bytes
//! ([`shard::traffic`]), its publishers' media ([`shard::media`]) and its counters
//! ([`shard::counters`]), which [`control::stats`] aggregates.
//!
//! ## Modules
//!
//! - [`config`]: flags, environment variables, `.env` -> validated [`config::Config`];
//! - [`codec`]: sans-io parsers and writers (no runtime inside);
//! - [`balance`]: origins, stream keys, registry, picking, pins (pure data, no runtime);
//! - [`shard`]: glommio executors, listeners, connection gate, connection tasks (a panic is
//!   caught and a stalled session ended, both closed and counted: [`shard::conn`]), session
//!   guards, relays, traffic counters, startup checks;
//! - [`proxy`]: per-protocol connection handling;
//! - [`control`]: the control thread, its System API (auth, paged lists), origin probes, gRPC
//!   and the shard bridge;
//! - [`app`]: startup order, signals, shutdown; [`logging`]: text or JSON log lines (text
//!   lines escape control characters; [`logging::throttle`] rate-limits warnings peers cause);
//! - [`util::backoff`]: the accept backoff every listener uses when descriptors run out.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod app;
pub mod balance;
pub mod bridge;
pub mod codec;
pub mod config;
pub mod control;
pub mod logging;
pub mod proxy;
pub mod shard;
pub mod util;
pub mod version;
