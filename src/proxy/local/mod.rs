//! The local origin (`--local-origin auto|on|off`): with no origin to relay a publisher to
//! (`auto`) or always (`on`), streamgate is the origin itself.
//!
//! - [`publish`]: the RTMP publisher is answered as SRS answers it (`onStatus`
//!   `NetStream.Publish.Start` after the `connect`/`createStream` answers
//!   [`super::rtmp::identify`] already sent), its chunk stream decoded and every audio, video
//!   and metadata message pushed into the stream's edge ring ([`super::edge::open_local`]) on
//!   the shard that accepted it (the stream's owner).
//! - Players (RTMP and HTTP-FLV) of a local stream are served from the ring by the edge's player
//!   code ([`super::edge::play_rtmp`], [`super::edge::play_flv`]), whether or not `--edge` is on;
//!   HTTP-TS players from the ring too, each muxing its own MPEG-TS ([`ts`]).
//! - SRT publishers ([`srt`]): the caller's session is relayed to an ingest job on loopback
//!   that demuxes its MPEG-TS and publishes it over RTMP to streamgate's own listener, so it
//!   becomes a local RTMP publisher as above.
//! - A second publisher of a live local stream is refused with `NetStream.Publish.BadName`, as
//!   SRS refuses it. When the publisher leaves, the stream closes and its players end.
//! - Which streams are local, and on which shard, is in one process-wide table ([`owner`]), so
//!   every protocol and shard can tell.
//! - HLS: the publish session is reported local ([`Shard::open_session_of`]), so the control
//!   thread starts a remux job that plays the stream from streamgate's own RTMP listener and
//!   writes MPEG-TS segments (`crate::transcode`), which
//!   [`super::http_stream::local_hls`] serves at `/APP/STREAM.m3u8`; with `--transcode on` the
//!   ladder job plays it the same way.

pub mod forward;
pub mod publish;
pub mod srt;
pub mod ts;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use glommio::channels::shared_channel::SharedSender;
use glommio::net::TcpStream;

use crate::balance::StreamKey;
use crate::bridge::Role;
use crate::config::local::LocalOrigin;
use crate::proxy::edge::{self, ring::Frame};
use crate::shard::Shard;

/// A local stream's entry in the process-wide table.
#[derive(Debug)]
pub struct Owned {
    /// The shard whose publisher feeds it.
    pub shard: usize,
    /// Channels of shards whose players want the stream, until the owner connects them
    /// ([`forward`]).
    pending: Mutex<Vec<SharedSender<Frame>>>,
    /// Whether `pending` has some.
    subscribed: AtomicBool,
}

/// Every live local stream, by key (process-wide: read by every shard, written by owners).
static LOCAL: Mutex<Option<HashMap<StreamKey, Arc<Owned>>>> = Mutex::new(None);

fn table<R>(f: impl FnOnce(&mut HashMap<StreamKey, Arc<Owned>>) -> R) -> R {
    let mut guard = LOCAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// The live local stream of `key`, if any shard has one.
pub fn owner(key: &StreamKey) -> Option<Arc<Owned>> {
    table(|t| t.get(key).cloned())
}

/// Every live local stream's key.
pub fn keys() -> Vec<StreamKey> {
    table(|t| t.keys().cloned().collect())
}

/// Why a local publisher could not claim its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unclaimed {
    /// The stream is live already.
    Live,
    /// The table holds `--local-max-streams` streams.
    Full(usize),
}

/// Claims `key` for a local publisher on `shard`, unless it is live already or `max` local
/// streams are (`--local-max-streams`).
fn claim(key: &StreamKey, shard: usize, max: usize) -> Result<Arc<Owned>, Unclaimed> {
    table(|t| {
        if t.contains_key(key) {
            return Err(Unclaimed::Live);
        }
        if t.len() >= max {
            return Err(Unclaimed::Full(t.len()));
        }
        let owned = Arc::new(Owned { shard, pending: Mutex::default(), subscribed: AtomicBool::new(false) });
        t.insert(key.clone(), owned.clone());
        Ok(owned)
    })
}

/// Forgets `key`'s entry if it is still `owned`.
fn release(key: &StreamKey, owned: &Arc<Owned>) {
    table(|t| {
        if t.get(key).is_some_and(|o| Arc::ptr_eq(o, owned)) {
            t.remove(key);
        }
    })
}

/// Whether a new publisher of `key` is served locally: `on`, or `auto` with no registered
/// origin alive to take it (none pinned, none proposed by the shard's snapshot).
pub fn publishes_locally(shard: &Shard, key: &StreamKey) -> bool {
    match shard.config.local_origin {
        LocalOrigin::Off => false,
        LocalOrigin::On => true,
        LocalOrigin::Auto => super::pinned(shard, key).is_none() && super::propose(shard, key).is_none(),
    }
}

/// Whether a player of `key` on this shard is served from a local stream: it is live, and this
/// shard has it (the owner's, or a forward to this shard, subscribed now if need be).
pub fn ready(shard: &Rc<Shard>, key: &StreamKey) -> bool {
    if edge::local(key).is_some() {
        return true;
    }
    match owner(key) {
        Some(owned) if owned.shard != shard.index => forward::subscribe(shard, key, &owned).is_some(),
        _ => false,
    }
}

/// Whether this RTMP client is served locally: a publisher of a live local stream (to be
/// refused) or of one [`publishes_locally`] takes, or a player of a live local stream.
pub fn takes(shard: &Rc<Shard>, key: &StreamKey, role: Role) -> bool {
    match role {
        Role::Publish => owner(key).is_some() || publishes_locally(shard, key),
        Role::Play => ready(shard, key),
    }
}

/// Serves an RTMP client [`takes`] took.
pub async fn serve_rtmp(
    shard: &Rc<Shard>,
    client: &TcpStream,
    peer: SocketAddr,
    key: &StreamKey,
    name: &str,
    role: Role,
    replay: Vec<u8>,
) {
    match role {
        Role::Publish => publish::serve(shard, client, peer, key, replay).await,
        Role::Play => edge::play_rtmp(shard, client, peer, key, name, String::new()).await,
    }
}
