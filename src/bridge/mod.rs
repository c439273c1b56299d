//! What crosses between the shards and the control thread: the channels, the events, and the
//! reports ([`report`]). No runtime here, only tokio's runtime-agnostic sync primitives, so
//! `shard` and `proxy` use it without knowing the control thread, and `control` without
//! knowing the shards.
//!
//! - control -> shards: a `watch` of the newest [`Snapshot`]. Only the latest version matters,
//!   so a slow shard never makes the control thread wait and never queues stale copies.
//! - shards -> control: one bounded `mpsc` of [`ShardEvent`]s ([`EVENT_QUEUE`] deep). A claim
//!   waits for room (back-pressure on that one new connection, never on a relay); session
//!   events wait the same way, so counts are never lost.
//!
//! tokio's sync primitives are runtime-agnostic: glommio tasks await them directly (a wake-up
//! across threads measured about 44 µs at the median on the development machine).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::balance::ice::IceSession;
use crate::balance::registry::RegistryError;
pub use crate::balance::session::{Protocol, Role};
use crate::balance::{Origin, OriginId, Snapshot, StreamKey};
pub mod report;

pub use report::{
    ControlAsk, EdgeReport, EdgeStream, Listener, MediaDelta, PickFailure, ShardCounters, TableSizes, TrafficDelta,
};

/// Capacity of the shard -> control event queue.
pub const EVENT_QUEUE: usize = 4096;

/// The answer to a claim.
pub type ClaimReply = Result<Arc<Origin>, RegistryError>;
/// The answer to an HLS claim: the origin and the stream's `spbhid`.
pub type HlsClaimReply = Result<(Arc<Origin>, Arc<str>), RegistryError>;
/// The answer to an `spbhid` lookup: `None` for an unknown id, else the stream and its claim.
pub type HlsResolveReply = Option<(StreamKey, Arc<str>, ClaimReply)>;

/// What a shard tells the control thread.
#[derive(Debug)]
pub enum ShardEvent {
    /// Pin `key` (to `proposed` if it has no usable pin yet) and say where it is pinned.
    /// `failed`: a dial to this origin was just refused or timed out (it goes into quarantine
    /// and the stream moves off it).
    Claim { key: StreamKey, proposed: Option<OriginId>, failed: Option<OriginId>, reply: oneshot::Sender<ClaimReply> },
    /// Like `Claim`, and also the stream's HLS id (made on first use).
    ClaimHls {
        key: StreamKey,
        proposed: Option<OriginId>,
        failed: Option<OriginId>,
        reply: oneshot::Sender<HlsClaimReply>,
    },
    /// Which stream an HLS id belongs to, and that stream's claim.
    ResolveHls { id: String, reply: oneshot::Sender<HlsResolveReply> },
    /// Signalling answered a WebRTC offer: STUN with this USERNAME belongs to that session.
    IceBind { username: String, session: IceSession },
    /// A WebRTC client deleted its resource (`DELETE` of the `Location` it was given, path and
    /// query; `username`: SRS's `session=` in it): its session ends.
    IceEnd { resource: String, username: Option<String> },
    /// Which session (and its origin, if still alive) a STUN USERNAME belongs to.
    IceResolve { username: String, reply: oneshot::Sender<Option<(IceSession, Arc<Origin>)>> },
    /// A session of `key` opened or closed; `local`: a publisher served by streamgate itself
    /// (`--local-origin`), not relayed to an origin.
    Session { key: StreamKey, protocol: Protocol, role: Role, opened: bool, local: bool },
    /// A shard's once-a-second report: bytes moved per stream and its publishers' media since
    /// its previous report, its counters (cumulative since it started) and its UDP table sizes.
    Report {
        shard: usize,
        traffic: Vec<TrafficDelta>,
        media: Vec<MediaDelta>,
        /// Boxed: the largest part, kept out of every other event's size.
        counters: Box<ShardCounters>,
        /// Its SRT and WebRTC table sizes now and the largest since start.
        udp: (TableSizes, TableSizes),
    },
    /// A shard's edge streams now (`--edge on`), once a second while it has or had some.
    Edge { shard: usize, report: EdgeReport },
}

/// The shard's end of the bridge; cheap to clone, one per shard.
#[derive(Clone, Debug)]
pub struct ShardLink {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub events: mpsc::Sender<ShardEvent>,
}

/// Why a claim could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the control thread is gone (shutting down)")]
    ControlGone,
}

impl ShardLink {
    /// Asks the control thread which origin serves `key`; `failed` names an origin a dial to
    /// just failed.
    pub async fn claim(
        &self,
        key: &StreamKey,
        proposed: Option<OriginId>,
        failed: Option<OriginId>,
    ) -> Result<Arc<Origin>, ClaimError> {
        let (reply, answer) = oneshot::channel();
        let event = ShardEvent::Claim { key: key.clone(), proposed, failed, reply };
        self.events.send(event).await.map_err(|_| ClaimError::ControlGone)?;
        Ok(answer.await.map_err(|_| ClaimError::ControlGone)??)
    }

    /// Asks which origin serves `key` and the stream's HLS id.
    pub async fn claim_hls(
        &self,
        key: &StreamKey,
        proposed: Option<OriginId>,
        failed: Option<OriginId>,
    ) -> Result<(Arc<Origin>, Arc<str>), ClaimError> {
        let (reply, answer) = oneshot::channel();
        let event = ShardEvent::ClaimHls { key: key.clone(), proposed, failed, reply };
        self.events.send(event).await.map_err(|_| ClaimError::ControlGone)?;
        Ok(answer.await.map_err(|_| ClaimError::ControlGone)??)
    }

    /// Looks up the stream of an HLS id and claims it: `Ok(None)` for an unknown id.
    pub async fn resolve_hls(&self, id: &str) -> Result<Option<(StreamKey, Arc<str>, Arc<Origin>)>, ClaimError> {
        let (reply, answer) = oneshot::channel();
        let event = ShardEvent::ResolveHls { id: id.to_string(), reply };
        self.events.send(event).await.map_err(|_| ClaimError::ControlGone)?;
        match answer.await.map_err(|_| ClaimError::ControlGone)? {
            None => Ok(None),
            Some((key, id, claim)) => Ok(Some((key, id, claim?))),
        }
    }

    /// Records a WebRTC session's ICE username.
    pub async fn ice_bind(&self, username: String, session: IceSession) {
        let _ = self.events.send(ShardEvent::IceBind { username, session }).await;
    }

    /// Ends the WebRTC session whose client deleted `resource`.
    pub async fn ice_end(&self, resource: String, username: Option<String>) {
        let _ = self.events.send(ShardEvent::IceEnd { resource, username }).await;
    }

    /// The WebRTC session of a STUN USERNAME, with its origin while that is registered.
    pub async fn ice_resolve(&self, username: &str) -> Option<(IceSession, Arc<Origin>)> {
        let (reply, answer) = oneshot::channel();
        let event = ShardEvent::IceResolve { username: username.to_string(), reply };
        self.events.send(event).await.ok()?;
        answer.await.ok().flatten()
    }

    /// Reports a session opening or closing.
    pub async fn session(&self, key: &StreamKey, protocol: Protocol, role: Role, opened: bool) {
        self.session_of(key, protocol, role, opened, false).await
    }

    /// Reports a session opening or closing, saying whether it is a local publisher's.
    pub async fn session_of(&self, key: &StreamKey, protocol: Protocol, role: Role, opened: bool, local: bool) {
        let event = ShardEvent::Session { key: key.clone(), protocol, role, opened, local };
        let _ = self.events.send(event).await;
    }
}

/// Creates both ends: the control thread keeps the sender of snapshots and the receiver of
/// events.
pub fn channel(first: Snapshot) -> (watch::Sender<Arc<Snapshot>>, mpsc::Receiver<ShardEvent>, ShardLink) {
    let (snap_tx, snap_rx) = watch::channel(Arc::new(first));
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    (snap_tx, ev_rx, ShardLink { snapshots: snap_rx, events: ev_tx })
}
