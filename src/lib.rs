//! # streamgate
//!
//! A load-balancing proxy for live-video origins. Origins (SRS, nginx-rtmp, ...) register with
//! SRS heartbeats; publishers and players connect to streamgate, which pins each stream to one
//! origin for every protocol and relays the bytes.
//!
//! ## Threads
//!
//! ```text
//!   SO_REUSEPORT listeners (RTMP, HTTP stream, HTTP API, WebRTC UDP, SRT UDP), bound by every shard
//!        |                 |
//!   shard 0 (CPU 0)   shard 1 (CPU 1)  ...   glommio LocalExecutor each, pinned, !Send state
//!        |  ^              |  ^
//!        |  | snapshots (tokio watch: newest registry copy)
//!        v  | events (bounded tokio mpsc: claims, sessions, one report a second)
//!   control thread: tokio current-thread runtime
//!     System API | gRPC | registry + pins + origin probes | stats + health | default backend
//!     | Redis client (redis mode)
//! ```
//!
//! - A shard ([`shard`]) owns its connections from accept to close and never blocks or locks.
//!   Each connection is one task ([`shard::conn`]): a panic in it is caught and a session that
//!   stalls with its peers gone is ended, both closed on both sides and counted.
//! - The control thread ([`control`]) owns the registry and the pins. A shard serves a stream
//!   its snapshot already has a pin for (and an HLS id its snapshot knows) without asking; for
//!   a new stream it proposes an origin from its snapshot (rendezvous hashing) and claims it;
//!   the control thread keeps the first usable pin, so a stream never has two origins. In
//!   redis mode ([`control::redis`]) the control thread asks Redis for what it does not know,
//!   so a fleet of proxies shares origins, pins, HLS ids and ICE usernames.
//! - Failover: a dial that is refused or times out quarantines its origin and the session is
//!   retried once on the origin picked instead ([`proxy::repick`]).
//!
//! ## Layers
//!
//! One way down, checked by `tests/layering.rs`: [`codec`] and [`balance`] (pure) <-
//! [`bridge`] (what crosses threads, no runtime) <- [`shard`] (runtime, listeners, relays; no
//! protocol) <- [`proxy`] (the protocols; [`proxy::services`] is the table of listeners and
//! handlers the shards serve) <- [`control`] <- [`app`] <- `main`. [`config`], [`util`],
//! [`logging`] and [`version`] serve every layer and import none. [`transcode`] (ABR jobs on
//! their own threads, publish limits) imports only the pure layers: [`proxy`] calls its
//! limits, [`control`] owns its supervisor ([`control::transcode`]).
//!
//! ## One connection
//!
//! identify (protocol handshake, stream name) -> stream key ([`balance::StreamKey`]) -> claim an
//! origin ([`proxy::pick`]) -> dial and replay -> relay until either side closes -> report the
//! session ([`shard::session`]: a guard that reports the close however the task ends).
//!
//! For RTMP ([`proxy::rtmp`]) the proxy answers the handshake and `connect`/`createStream`
//! itself (announcing chunk size 60000 first, as SRS does), then sends the origin every byte
//! the client sent after its handshake, verbatim. A player gets the origin's stream verbatim
//! too, behind a SetChunkSize back to 128, the size that stream starts in; a publisher gets
//! the origin's few messages re-chunked in 60000 ([`proxy::rtmp::handover`]). Each peer reads
//! the other's chunk stream in the size it is written in, so the media is never re-framed.
//! The relay ([`shard::relay`]) is splice(2) through a pipe or a copy loop, with readiness
//! from the shard's io_uring. A publisher's upstream bytes go through the copy loop and a
//! streaming inspector ([`codec::rtmp::inspect`]) that counts frames and reads metadata and the SPS.
//! With `--edge on` (the default), players are served instead from one origin pull per stream and shard
//! ([`proxy::edge`]): the pull's messages go into a ring of shared wire-form buffers that every
//! player of the stream on that shard reads through its own cursor.
//! HTTP requests on both HTTP listeners go through one server ([`proxy::http`]); SRT and WebRTC
//! datagrams through one UDP session table ([`shard::udp`]). Once a second each shard sends the
//! control thread one report ([`bridge::report`]): per-connection bytes ([`shard::traffic`]),
//! its publishers' media ([`shard::media`]) and its counters ([`shard::counters`]), which
//! [`control::stats`] aggregates.
//!
//! ## Modules
//!
//! - [`config`]: flags, environment variables, `.env` -> validated [`config::Config`];
//! - [`codec`]: sans-io parsers and writers (no runtime inside);
//! - [`balance`]: origins, stream keys, registry, picking, pins (pure data, no runtime);
//! - [`bridge`]: the shard link (channels, events) and the report types;
//! - [`shard`]: glommio executors, listeners and their ports, connection gate, connection tasks,
//!   session guards, relays, the UDP session table, traffic and media counters, startup checks;
//! - [`proxy`]: the protocols, and the services table;
//! - [`control`]: the control thread: System API (auth, paged lists, unregister, drain, the
//!   dashboard page [`control::dashboard`], disconnects [`control::disconnect`]), origin
//!   probes, the shards' events ([`control::events`]), Redis mode ([`control::redis`]), gRPC,
//!   stats, health, metrics;
//! - [`transcode`]: `--transcode on`: one job thread per published stream plays it from its
//!   origin and writes an aligned HLS + DASH ladder (ffmpeg-next, feature `transcode`), served
//!   by [`proxy::http_stream::abr`]; the publish limits ([`transcode::limits`]) the RTMP
//!   publish path enforces ([`proxy::rtmp::limits`]);
//! - [`app`]: startup order, signals, shutdown; [`logging`]: text or JSON log lines (text
//!   lines escape control characters; [`logging::throttle`] rate-limits warnings peers cause);
//! - [`util`]: random numbers, TCP_QUICKACK, the accept backoff ([`util::backoff`]);
//!   [`version`]: what this build is.

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
pub mod transcode;
pub mod util;
pub mod version;
