//! A local stream's players on shards other than its owner's: the owning shard forwards the
//! publisher's messages to each such shard over one bounded glommio shared channel (a lock-free
//! single-producer queue between the two executors, with its own wake-up), never through the
//! control thread. One channel per shard, whatever its number of players there: the receiving
//! shard pushes what arrives into its own ring for the stream, which its players share.
//!
//! - Subscribing ([`subscribe`], on the player's shard): opens the shard's local stream,
//!   leaves the channel's sending half in the stream's table entry ([`super::Owned`]) for the
//!   owner, and receives until the owner ends the stream (its publisher left) or the stream
//!   has had no player there for `--edge-linger`.
//! - Forwarding ([`Fanout`], on the owner): the publisher picks up new subscriptions as its
//!   messages arrive, sends each new shard the metadata, sequence headers and the ring from its
//!   last keyframe, then every message. A shard whose channel is full misses messages until the
//!   next keyframe (counted as dropped frames): the publisher never waits for a slow shard.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use glommio::GlommioError;
use glommio::channels::shared_channel::{self, ConnectedSender, SharedSender};

use super::Owned;
use crate::balance::StreamKey;
use crate::proxy::edge::{self, Stream, ring::Frame, ring::Kind};
use crate::shard::{Shard, within};

/// Messages a shard's channel holds (a few seconds of a stream's audio and video).
pub const CAPACITY: usize = 1024;
/// Longest wait for the other side of a new channel to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a receiving shard checks whether its stream still has players.
const LINGER_CHECK: Duration = Duration::from_millis(250);
/// Most subscriptions waiting for the owner at once (one per shard at most, in practice).
const MAX_PENDING: usize = 1024;

/// Opens `key`'s local stream on this shard, fed from the owner's forward; `None` when the
/// stream could not be opened here.
pub fn subscribe(shard: &Rc<Shard>, key: &StreamKey, owned: &Owned) -> Option<Rc<Stream>> {
    let (tx, rx) = shared_channel::new_bounded(CAPACITY);
    {
        let mut pending = owned.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= MAX_PENDING {
            return None;
        }
        pending.push(tx);
    }
    owned.subscribed.store(true, Ordering::Release);
    let stream = edge::open_local(shard, key)?;
    log::info!("local {key}: players on shard {}, forwarded from shard {}", shard.index, owned.shard);
    let (owner, fed) = (shard.clone(), stream.clone());
    let spawned = shard.spawn_background(async move {
        receive(&owner, &fed, rx).await;
        edge::streams().remove(&fed);
        fed.close(None);
    });
    if !spawned {
        // Shutting down: the channel's receiving half is gone, so the owner forgets it.
        edge::streams().remove(&stream);
        stream.close(None);
        return None;
    }
    Some(stream)
}

/// Pushes what the owner forwards into `stream` until the owner ends it or the stream lingered
/// out here.
async fn receive(shard: &Shard, stream: &Stream, rx: shared_channel::SharedReceiver<Frame>) {
    let key = &stream.key;
    let Some(rx) = within(CONNECT_TIMEOUT, rx.connect()).await else {
        return log::warn!(
            "local {key} on shard {}: the owner did not connect within {CONNECT_TIMEOUT:?}",
            shard.index
        );
    };
    let linger = shard.config.edge.linger;
    loop {
        match within(LINGER_CHECK, rx.recv()).await {
            Some(Some(frame)) => stream.push(frame),
            Some(None) => return log::info!("local {key} on shard {}: the publisher left", shard.index),
            None if stream.lingered_out(shard, Instant::now()) => {
                return log::info!(
                    "local {key} on shard {}: no player for {linger:?} (or none while shutting down); forward stopped",
                    shard.index
                );
            }
            None => {}
        }
    }
}

/// The owner's forwards of one local stream to other shards.
#[derive(Default)]
pub struct Fanout {
    subs: RefCell<Vec<Sub>>,
    /// Frames a full channel made a shard miss.
    pub dropped: Cell<u64>,
}

/// One shard's channel.
struct Sub {
    tx: ConnectedSender<Frame>,
    /// Frames wait for a keyframe (the shard missed some).
    need_key: bool,
}

impl Fanout {
    /// Starts the subscriptions that arrived since the last call (each connects on its own
    /// task, then gets the catch-up and joins the fan-out).
    pub fn accept(self: &Rc<Self>, owned: &Owned, stream: &Rc<Stream>) {
        if !owned.subscribed.swap(false, Ordering::AcqRel) {
            return;
        }
        let pending: Vec<SharedSender<Frame>> =
            std::mem::take(&mut *owned.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for tx in pending {
            let (fanout, stream) = (self.clone(), stream.clone());
            glommio::spawn_local(async move {
                let Some(tx) = within(CONNECT_TIMEOUT, tx.connect()).await else { return };
                let mut sub = Sub { tx, need_key: false };
                for frame in catch_up(&stream) {
                    if !sub.send(frame, &fanout.dropped) {
                        return;
                    }
                }
                fanout.subs.borrow_mut().push(sub);
            })
            .detach();
        }
    }

    /// Sends `frame` to every shard; forgets shards that hung up.
    pub fn send(&self, frame: &Frame) {
        let mut subs = self.subs.borrow_mut();
        if subs.is_empty() {
            return;
        }
        subs.retain_mut(|sub| sub.send(frame.clone(), &self.dropped));
    }
}

impl Sub {
    /// Sends one frame (passed over while a keyframe is awaited); false once the shard hung up.
    fn send(&mut self, frame: Frame, dropped: &Cell<u64>) -> bool {
        let kind = Kind::of(frame.type_id, &frame.payload);
        if !kind.passes(&mut self.need_key) {
            dropped.set(dropped.get() + 1);
            return true;
        }
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(GlommioError::Closed(_)) => false,
            Err(_) => {
                self.need_key = true;
                dropped.set(dropped.get() + u64::from(kind.is_frame()));
                true
            }
        }
    }
}

/// What a new shard gets first: the metadata and sequence headers, then the ring from its last
/// keyframe.
fn catch_up(stream: &Stream) -> Vec<Frame> {
    let ring = stream.ring.borrow();
    let start = ring.start();
    let mut frames: Vec<Frame> = ring.headers().map(|e| e.frame.clone()).collect();
    if !start.need_key {
        frames.extend(ring.entries_from(start.seq).map(|e| e.frame.clone()));
    }
    frames
}
