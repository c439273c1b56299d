//! SRT publishers of local streams (`#!::r=APP/STREAM,m=publish` with no origin to take it):
//! the shard relays the caller's session, as it relays one to an origin, to an ingest job
//! listening on a loopback port ([`crate::transcode::ingest`]: libsrt, on its own thread),
//! which demuxes the MPEG-TS and publishes the H.264 and AAC over RTMP to streamgate's own RTMP
//! listener. That publish is an ordinary local publish ([`super::publish`]): its messages feed
//! the stream's ring, RTMP and HTTP-FLV players on any shard play it, its HLS and ladder start.
//!
//! - A second SRT publisher of a stream that is live locally (or whose ingest is starting) is
//!   refused with `SRT_REJX_CONFLICT` (1409), the SRT access-control answer for a resource
//!   already being published.
//! - The ingest's RTMP publish is signed with `--publish-secret` when there is one (the SRT
//!   caller's own access was checked by the relay already).
//! - Bounds: at most `--local-max-streams` ingests at once (one thread each).
//! - The job's thread picks its loopback port and binds it; the shard relays to it only once
//!   the job says where it listens ([`SrtLocal::Relay`]).
//! - SRT players (`m=request`) of a live local stream are relayed the same way to a player job
//!   ([`crate::transcode::ingest::play`]) that plays the stream from streamgate's own RTMP
//!   listener (signed with `--play-secret`) and copies it into MPEG-TS over SRT; at most
//!   [`MAX_SRT_PLAYERS`] at once (past it: 1404 and a log line).
//! - Needs the cargo feature `transcode` (libavformat built with libsrt); without it the caller
//!   is refused (1404) with a log line saying why.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;

use crate::balance::StreamKey;
use crate::shard::Shard;
use crate::util::oneshot;

/// What becomes of an SRT caller.
#[derive(Debug)]
pub enum SrtLocal {
    /// Not a local stream: relay it to an origin as before.
    ToOrigin,
    /// The stream is live locally already, or its ingest is starting.
    Busy,
    /// Relay the caller to its job (ingest or player), which tells the loopback port its
    /// listener is bound to once it is (nothing if it cannot listen): see
    /// [`crate::transcode::ingest::Listener`].
    Relay(oneshot::Receiver<u16>),
    /// It would be local, but cannot be (why).
    Refused(String),
}

/// Streams whose SRT ingest runs (process-wide; each one a thread).
static INGESTS: Mutex<Option<HashSet<StreamKey>>> = Mutex::new(None);

fn ingests<R>(f: impl FnOnce(&mut HashSet<StreamKey>) -> R) -> R {
    let mut guard = INGESTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(guard.get_or_insert_with(HashSet::new))
}

/// Whether an SRT publisher's ingest job runs (or is starting) for `key`.
pub fn ingesting(key: &StreamKey) -> bool {
    ingests(|t| t.contains(key))
}

/// Decides for an SRT publisher of `key` on `shard`; starts its ingest when it is local.
pub fn publish(shard: &Shard, key: &StreamKey) -> SrtLocal {
    if super::owner(key).is_some() || ingesting(key) {
        return SrtLocal::Busy;
    }
    if !super::publishes_locally(shard, key) {
        return SrtLocal::ToOrigin;
    }
    start(shard, key)
}

/// Most SRT players of local streams at once, process-wide (a thread each).
pub const MAX_SRT_PLAYERS: usize = 256;

/// SRT players of local streams now.
#[cfg(feature = "transcode")]
static PLAYERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Decides for an SRT player of `key`: a live local stream gets a player job (relayed to it).
pub fn play(shard: &Shard, key: &StreamKey, peer: SocketAddr) -> SrtLocal {
    if super::owner(key).is_none() {
        return SrtLocal::ToOrigin;
    }
    start_player(shard, key, peer)
}

#[cfg(not(feature = "transcode"))]
fn start_player(_: &Shard, _: &StreamKey, _: SocketAddr) -> SrtLocal {
    SrtLocal::Refused("an SRT player of a local stream needs the cargo feature `transcode` (libsrt)".into())
}

#[cfg(feature = "transcode")]
fn start_player(shard: &Shard, key: &StreamKey, peer: SocketAddr) -> SrtLocal {
    use std::sync::atomic::Ordering;
    if PLAYERS.fetch_add(1, Ordering::AcqRel) >= MAX_SRT_PLAYERS {
        PLAYERS.fetch_sub(1, Ordering::AcqRel);
        return SrtLocal::Refused(format!("{MAX_SRT_PLAYERS} SRT players of local streams play already"));
    }
    let (tell, told) = oneshot::channel();
    let listener = crate::transcode::ingest::Listener::new(tell);
    let source = crate::transcode::supervisor::local_source(&shard.config, key);
    let params = crate::transcode::ingest::PlayParams { name: format!("{key} from {peer}"), listener, source };
    let spawned = std::thread::Builder::new().name("srt player".into()).spawn(move || {
        match crate::transcode::ingest::play(&params) {
            Ok(bytes) => log::info!("srt play {}: ended ({bytes} bytes copied)", params.name),
            Err(e) => log::warn!("srt play {}: stopped: {e}", params.name),
        }
        PLAYERS.fetch_sub(1, Ordering::AcqRel);
    });
    match spawned {
        Ok(_) => SrtLocal::Relay(told),
        Err(e) => {
            PLAYERS.fetch_sub(1, Ordering::AcqRel);
            SrtLocal::Refused(format!("cannot start its player thread: {e}"))
        }
    }
}

#[cfg(not(feature = "transcode"))]
fn start(_: &Shard, _: &StreamKey) -> SrtLocal {
    SrtLocal::Refused("an SRT publisher of a local stream needs the cargo feature `transcode` (libsrt)".into())
}

#[cfg(feature = "transcode")]
fn start(shard: &Shard, key: &StreamKey) -> SrtLocal {
    use crate::transcode::ingest;
    let max = shard.config.local_max_streams;
    let reserved = ingests(|t| {
        if t.len() >= max {
            return false;
        }
        t.insert(key.clone())
    });
    if !reserved {
        return SrtLocal::Refused(format!("{max} SRT ingests run already (--local-max-streams)"));
    }
    let forget = |key: &StreamKey| ingests(|t| t.remove(key));
    let (tell, told) = oneshot::channel();
    let target = crate::transcode::supervisor::local_source(&shard.config, key);
    let params = ingest::Params { name: key.to_string(), listener: ingest::Listener::new(tell), target };
    let owned = key.clone();
    let spawned = std::thread::Builder::new().name("srt ingest".into()).spawn(move || {
        match ingest::run(&params) {
            Ok(bytes) => log::info!("srt ingest {}: ended ({bytes} bytes copied)", params.name),
            Err(e) => log::warn!("srt ingest {}: stopped: {e}", params.name),
        }
        forget(&owned);
    });
    match spawned {
        Ok(_) => SrtLocal::Relay(told),
        Err(e) => {
            forget(key);
            SrtLocal::Refused(format!("cannot start its ingest thread: {e}"))
        }
    }
}
