//! The edge (`--edge on`, the default): per stream and shard, one origin pull feeds a [`ring::Ring`] that
//! every player of the stream on that shard reads from, instead of one relayed origin
//! connection per player.
//!
//! - [`Streams`] (one per shard, in a thread local: a shard is one thread and its state never
//!   leaves it) maps a stream key to its [`Stream`]: the ring, the players' wakers, counters.
//! - The first player of a stream on the shard creates it and starts its pull
//!   ([`upstream::run`]: RTMP play, or [`upstream_flv`] for an origin serving only HTTP-FLV:
//!   `--edge-pull http-flv`, or `auto` when its RTMP endpoint refuses connections); the pull ends `--edge-linger` after the last player left, or when no
//!   origin could serve the stream for `--edge-stall-timeout` (its players are then closed).
//! - Players ([`player`]): once the stream has media, RTMP players get the proxy's own play
//!   answers, HTTP-FLV players the FLV header (a stream no origin served: refused with why,
//!   [`media_or_refusal`]); then each writes what it is behind by from the ring, vectored.
//!
//! Statistics: once a second the shard reports its streams ([`EdgeReport`]: pulls, players,
//! cached bytes, dropped frames, the furthest-behind player's lag) to the control thread.
//!
//! Memory: per stream and shard the ring (at most `--edge-cache-bytes`, shared), per player one
//! batch of references into it (at most [`player::BATCH_BYTES`] of shared bytes, the room for
//! it given back once sent), its cursor, one readiness wait and its connection's task (the
//! relay's and the setup's states are boxed, so an edge player's task is about 2.4 KB; what
//! it sends is discarded by the kernel, no buffer kept). A player more than `--edge-max-lag` behind skips to a keyframe; one that
//! takes nothing for `--edge-stall-timeout` is closed.

pub mod merge;
pub mod player;
pub mod ring;
pub mod upstream;
pub mod upstream_flv;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use std::net::SocketAddr;

use futures_lite::future;
use glommio::net::TcpStream;

use crate::balance::StreamKey;
use crate::bridge::report::PlayerBehind;
use crate::bridge::{EdgeReport, EdgeStream, Protocol, Role, ShardEvent};
use crate::config::EdgeConfig;
use crate::proxy::http::{SERVER, cors, text};
use crate::shard::Shard;
use ring::{Ring, Wire};

/// One stream on one shard.
pub struct Stream {
    pub key: StreamKey,
    pub ring: RefCell<Ring>,
    /// Players now.
    players: Cell<usize>,
    /// When the last player left (while there is none).
    empty_since: Cell<Option<Instant>>,
    /// No origin can serve the stream: its players end.
    closed: Cell<bool>,
    /// Why no origin served it, when that is why it closed.
    unserved: RefCell<Option<String>>,
    /// Players waiting for the ring to grow, by player id.
    wakers: RefCell<HashMap<u64, Waker>>,
    next_player: Cell<u64>,
    /// The origin now pulled from, for logs and statistics.
    pub origin: RefCell<Option<String>>,
    /// Frames players skipped (cumulative).
    pub dropped_frames: Cell<u64>,
    /// Origin pulls started (cumulative: a failover starts another).
    pub pulls: Cell<u64>,
    /// Whether the pull is connected to its origin now.
    pub pulling: Cell<bool>,
    /// Each player's standing (address, lag, frames skipped), as it last looked.
    standings: RefCell<HashMap<u64, Standing>>,
    /// Fed by a local publisher (`crate::proxy::local`), not an origin pull.
    pub local: Cell<bool>,
    /// The query of the player that started the pull (its token, say), passed on to the origin
    /// with every pull of the stream on this shard, as an SRS edge does with its first client's.
    pub param: String,
}

impl Stream {
    fn new(key: StreamKey, config: &EdgeConfig, param: String) -> Self {
        Stream {
            key,
            param,
            ring: RefCell::new(Ring::new(config.cache_bytes, config.max_lag)),
            players: Cell::new(0),
            empty_since: Cell::new(None),
            closed: Cell::new(false),
            unserved: RefCell::new(None),
            wakers: RefCell::default(),
            next_player: Cell::new(0),
            origin: RefCell::new(None),
            dropped_frames: Cell::new(0),
            pulls: Cell::new(0),
            pulling: Cell::new(false),
            standings: RefCell::default(),
            local: Cell::new(false),
        }
    }

    /// Pushes a message into the ring and wakes the players.
    pub fn push(&self, frame: ring::Frame) {
        self.ring.borrow_mut().push(frame);
        self.wake();
    }

    fn wake(&self) {
        for (_, waker) in self.wakers.borrow_mut().drain() {
            waker.wake();
        }
    }

    /// Ends the stream for its players; `unserved`: no origin could serve it, and why.
    pub fn close(&self, unserved: Option<String>) {
        if unserved.is_some() {
            *self.unserved.borrow_mut() = unserved;
        }
        self.closed.set(true);
        self.wake();
    }

    /// What a player that got none of the stream is told when it ended: no origin served it
    /// (and why), or, for a stream fed here, that it ended.
    pub fn why_unserved(&self) -> String {
        match &*self.unserved.borrow() {
            Some(why) => format!("no origin served the stream: {why}"),
            None if self.local.get() => "the stream ended".to_string(),
            None => "no origin served the stream".to_string(),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    pub fn players(&self) -> usize {
        self.players.get()
    }

    /// How long the stream has had no player, if it has none.
    pub fn idle_for(&self, now: Instant) -> Option<std::time::Duration> {
        self.empty_since.get().map(|since| now.saturating_duration_since(since))
    }

    /// Whether what feeds the stream here (an origin pull, a local stream's forward) should
    /// stop: no player for `--edge-linger`, or none at all once the shard is shutting down (no
    /// new player can come then, and the drain waits for the feed).
    pub fn lingered_out(&self, shard: &Shard, now: Instant) -> bool {
        self.idle_for(now).is_some_and(|idle| idle >= shard.config.edge.linger || shard.is_stopping())
    }

    /// A pull of the stream from `origin` starts.
    pub fn begin_pull(&self, origin: &crate::balance::Origin) {
        self.pulls.set(self.pulls.get() + 1);
        let streams = streams();
        streams.pulls_started.set(streams.pulls_started.get() + 1);
        *self.origin.borrow_mut() = Some(origin.id.0.clone());
    }

    /// Notes how far behind `player` is.
    pub fn set_lag(&self, player: u64, lag: u64) {
        if let Some(standing) = self.standings.borrow_mut().get_mut(&player) {
            standing.lag = lag;
        }
    }

    /// Counts frames `player` skipped.
    pub fn dropped(&self, player: u64, frames: u64) {
        self.dropped_frames.set(self.dropped_frames.get() + frames);
        streams().dropped.set(streams().dropped.get() + frames);
        if let Some(standing) = self.standings.borrow_mut().get_mut(&player) {
            standing.dropped += frames;
        }
    }

    /// The [`PLAYERS_BEHIND`] players furthest behind (those behind or that skipped frames),
    /// furthest first.
    fn players_behind(&self) -> Vec<PlayerBehind> {
        let standings = self.standings.borrow();
        let mut behind: Vec<PlayerBehind> = standings
            .iter()
            .filter(|(_, s)| s.lag > 0 || s.dropped > 0)
            .map(|(&player, s)| PlayerBehind { player, peer: s.peer, lag_bytes: s.lag, dropped_frames: s.dropped })
            .collect();
        crate::bridge::report::keep_furthest_behind(&mut behind, |p| p);
        behind
    }

    /// What the shard reports of it.
    fn report(&self) -> EdgeStream {
        let players_behind = self.players_behind();
        EdgeStream {
            key: self.key.clone(),
            origin: self.origin.borrow().clone(),
            pulling: self.pulling.get(),
            players: self.players.get() as u64,
            cache_bytes: self.ring.borrow().memory() as u64,
            dropped_frames: self.dropped_frames.get(),
            // The furthest behind comes first (none is behind when the list is empty).
            max_lag_bytes: players_behind.first().map_or(0, |p| p.lag_bytes),
            players_behind,
        }
    }

    /// Waits until the ring has an entry at `seq` or later, or the stream closed.
    pub async fn changed(&self, player: u64, seq: u64) {
        poll_fn(|cx| {
            if self.closed.get() || self.ring.borrow().head() > seq {
                self.wakers.borrow_mut().remove(&player);
                return Poll::Ready(());
            }
            self.wakers.borrow_mut().insert(player, cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// One player's standing in its stream, for the statistics.
struct Standing {
    peer: SocketAddr,
    /// Payload bytes behind the ring's head, as it last looked.
    lag: u64,
    /// Frames it skipped to catch up.
    dropped: u64,
}

/// A player's membership of a stream; leaving (drop) starts the linger when it was the last.
pub struct Membership {
    pub stream: Rc<Stream>,
    pub id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let stream = &self.stream;
        stream.wakers.borrow_mut().remove(&self.id);
        stream.standings.borrow_mut().remove(&self.id);
        stream.players.set(stream.players.get().saturating_sub(1));
        if stream.players.get() == 0 {
            stream.empty_since.set(Some(Instant::now()));
        }
    }
}

/// The shard's streams.
#[derive(Default)]
pub struct Streams {
    map: RefCell<HashMap<StreamKey, Rc<Stream>>>,
    /// Whether the shard's reporter runs (started with the first player).
    reporting: Cell<bool>,
    /// Pulls started and frames dropped since the shard started.
    pub pulls_started: Cell<u64>,
    pub dropped: Cell<u64>,
}

thread_local! {
    static STREAMS: Rc<Streams> = Rc::default();
}

/// This shard's streams.
pub fn streams() -> Rc<Streams> {
    STREAMS.with(Rc::clone)
}

impl Streams {
    /// Every stream now.
    pub fn all(&self) -> Vec<Rc<Stream>> {
        self.map.borrow().values().cloned().collect()
    }

    /// The shard's edge now.
    pub fn report(&self) -> EdgeReport {
        EdgeReport {
            streams: self.map.borrow().values().map(|s| s.report()).collect(),
            pulls_started: self.pulls_started.get(),
            dropped_frames: self.dropped.get(),
        }
    }

    /// The live stream of `key` on this shard, if any.
    pub fn get(&self, key: &StreamKey) -> Option<Rc<Stream>> {
        self.map.borrow().get(key).filter(|s| !s.is_closed()).cloned()
    }

    /// Forgets `stream` if it is still the one registered under its key.
    pub fn remove(&self, stream: &Rc<Stream>) {
        let mut map = self.map.borrow_mut();
        if map.get(&stream.key).is_some_and(|s| Rc::ptr_eq(s, stream)) {
            map.remove(&stream.key);
        }
    }
}

/// Joins `key`'s stream on this shard as the player at `peer`, starting its origin pull if it
/// has none; `param` (the player's query, without `?`) goes to the origin with that pull.
pub fn join(shard: &Rc<Shard>, key: &StreamKey, peer: SocketAddr, param: String) -> Membership {
    let streams = streams();
    start_reporting(shard, &streams);
    let existing = streams.get(key);
    let stream = existing.unwrap_or_else(|| {
        let stream = Rc::new(Stream::new(key.clone(), &shard.config.edge, param));
        streams.map.borrow_mut().insert(key.clone(), stream.clone());
        if !shard.spawn_background(upstream::run(shard.clone(), stream.clone())) {
            // Shutting down: no pull starts; the player ends at once.
            streams.remove(&stream);
            stream.close(None);
        }
        stream
    });
    stream.players.set(stream.players.get() + 1);
    stream.empty_since.set(None);
    let id = stream.next_player.get();
    stream.next_player.set(id + 1);
    stream.standings.borrow_mut().insert(id, Standing { peer, lag: 0, dropped: 0 });
    Membership { stream, id }
}

/// Lets a player of `key` with `param` (its query) in as a relayed player would be: the origin
/// is asked ([`upstream::origin_admits`]) when this shard pulls `key` with another query. Not
/// when it pulls it with the same one (the origin let that in), serves it as a local stream,
/// or does not pull it yet (the player's join starts a pull that carries its own query, which
/// the origin checks then; a burst of first players makes one origin connection, not one each).
pub async fn admit(shard: &Shard, key: &StreamKey, param: &str) -> Result<(), upstream::Denied> {
    let asks = streams().get(key).is_some_and(|s| !s.local.get() && s.param != param);
    if !asks {
        return Ok(());
    }
    upstream::origin_admits(shard, key, param).await
}

/// Starts the shard's reporter if it does not run yet.
fn start_reporting(shard: &Rc<Shard>, streams: &Streams) {
    if !streams.reporting.replace(true) {
        let reporter = report_every_second(shard.clone());
        let stopping = shard.clone();
        // The reporter ends when shutdown starts (the shard's drain waits for it).
        shard.spawn_background(async move { future::or(reporter, stopping.stopping()).await });
    }
}

pub use crate::bridge::report::LOCAL_ORIGIN;

/// Registers a stream fed on this shard by a local source (`crate::proxy::local`: a local
/// publisher, or the forward of one on another shard) instead of an origin pull; players join
/// it like any other. `None` while a live local stream already has `key` here.
pub fn open_local(shard: &Rc<Shard>, key: &StreamKey) -> Option<Rc<Stream>> {
    let streams = streams();
    start_reporting(shard, &streams);
    if local(key).is_some() {
        return None;
    }
    let stream = Rc::new(Stream::new(key.clone(), &shard.config.edge, String::new()));
    stream.local.set(true);
    *stream.origin.borrow_mut() = Some(LOCAL_ORIGIN.to_string());
    streams.map.borrow_mut().insert(key.clone(), stream.clone());
    Some(stream)
}

/// This shard's live local stream of `key`, if any.
pub fn local(key: &StreamKey) -> Option<Rc<Stream>> {
    streams().get(key).filter(|s| s.local.get())
}

/// Sends the control thread the shard's edge once a second (the reporter waits for room in the
/// event queue, never a player).
async fn report_every_second(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(crate::shard::REPORT_INTERVAL).await;
        let event = ShardEvent::Edge { shard: shard.index, report: streams().report() };
        if shard.link.events.send(event).await.is_err() {
            return;
        }
    }
}

/// Serves an RTMP player (its `play` of `name` answered by the proxy) from the shard's pull
/// of `key`; `param` is its query ([`join`]).
pub async fn play_rtmp(
    shard: &Rc<Shard>,
    client: &TcpStream,
    peer: SocketAddr,
    key: &StreamKey,
    name: &str,
    param: String,
) {
    let prelude = player::Prelude { head: Vec::new(), body: player::rtmp_prelude(name) };
    play(shard, client, peer, (key, param), Protocol::Rtmp, player::Framing::Raw, prelude).await;
}

/// Serves an HTTP-FLV player from the shard's pull of `stream` (its key and the player's query,
/// [`join`]): `head` (the response head, which
/// says `Transfer-Encoding: chunked` when `framing` is chunked), the FLV header, then the stream
/// until either side ends it; a chunked body then ends with its last chunk.
pub async fn play_flv(
    shard: &Rc<Shard>,
    client: &TcpStream,
    peer: SocketAddr,
    stream: (&StreamKey, String),
    head: Vec<u8>,
    framing: player::Framing,
) {
    let prelude = player::Prelude { head, body: crate::codec::flv::FILE_HEADER.to_vec() };
    play(shard, client, peer, stream, Protocol::HttpFlv, framing, prelude).await;
}

/// Serves one player of `protocol` (RTMP or HTTP-FLV) of `key` (with its query, [`join`]):
/// `prelude`, then the stream.
async fn play(
    shard: &Rc<Shard>,
    client: &TcpStream,
    peer: SocketAddr,
    (key, param): (&StreamKey, String),
    protocol: Protocol,
    framing: player::Framing,
    prelude: player::Prelude,
) {
    let wire = if protocol == Protocol::Rtmp { Wire::Rtmp } else { Wire::Flv };
    let member = join(shard, key, peer, param);
    let session = shard.open_session(key, protocol, Role::Play).await;
    crate::shard::fault::inject().await;
    let started = Instant::now();
    if !media_or_refusal(client, &member, protocol, peer).await {
        return;
    }
    let dropped = Cell::new(0);
    let traffic = &session.traffic;
    let form = (wire, framing);
    let ended = player::serve(client, &member, &shard.config.edge, form, prelude, &traffic.bytes_out, &dropped).await;
    let _ = client.shutdown(std::net::Shutdown::Both).await;
    log_end(protocol.name(), key, peer, started, ended, traffic.bytes_out.get(), dropped.get());
}

/// A player is answered (the RTMP play's `NetStream.Play.Start`, the HTTP status) once its
/// stream has media: true then. When the stream ended first (no origin served it: the pull was
/// refused, no origin could be reached, or none sent media within `--edge-stall-timeout`), the
/// player is refused as a relayed one is, with the reason (RTMP: an error `onStatus`
/// `NetStream.Play.StreamNotFound`; HTTP: 502, not a 200 with an empty body), and false.
pub(crate) async fn media_or_refusal(
    client: &TcpStream,
    member: &Membership,
    protocol: Protocol,
    peer: SocketAddr,
) -> bool {
    if answerable(member).await {
        return true;
    }
    let why = member.stream.why_unserved();
    let answered = if protocol == Protocol::Rtmp {
        crate::proxy::rtmp::refuse(client, Role::Play, crate::proxy::rtmp::identify::CHUNK_SIZE, &why).await;
        "an error onStatus"
    } else {
        let answer = cors(text(502, &why)).with_header("Server", SERVER);
        let _ = crate::shard::relay::send_all(client, &answer.encode(false)).await;
        "HTTP 502"
    };
    let key = &member.stream.key;
    log::info!("{} play {key} from {peer} via the edge refused: {why}; answered with {answered}", protocol.name());
    false
}

/// Waits until `member`'s stream has media (metadata, a sequence header, a keyframe: what an
/// origin that has the stream sends first) and says true, or ended without (false). An origin
/// without the stream may still answer the play (nginx-rtmp sends `|RtmpSampleAccess`).
async fn answerable(member: &Membership) -> bool {
    let stream = &member.stream;
    loop {
        let seq = {
            let ring = stream.ring.borrow();
            if ring.headers().next().is_some() || !ring.start().need_key {
                return true;
            }
            ring.head()
        };
        if stream.is_closed() {
            return false;
        }
        stream.changed(member.id, seq).await;
    }
}

/// One line for a player's end (the edge's players and the HTTP-TS players muxed from a ring).
pub(crate) fn log_end(
    protocol: &str,
    key: &StreamKey,
    peer: SocketAddr,
    started: Instant,
    ended: std::io::Result<player::End>,
    bytes: u64,
    dropped: u64,
) {
    let took = started.elapsed();
    match ended {
        Ok(end @ player::End::Stalled(_)) => log::warn!(
            "{protocol} play {key} from {peer} via the edge ended after {took:.1?}: {end}; {bytes} bytes out, {dropped} frames dropped"
        ),
        Ok(end) => log::info!(
            "{protocol} play {key} from {peer} via the edge ended after {took:.1?}: {end}; {bytes} bytes out, {dropped} frames dropped"
        ),
        Err(e) => log::info!(
            "{protocol} play {key} from {peer} via the edge ended after {took:.1?}: {e}; {bytes} bytes out, {dropped} frames dropped"
        ),
    }
}
