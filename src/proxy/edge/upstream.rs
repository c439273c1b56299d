//! A stream's origin pull on one shard: an RTMP client that plays the stream from its origin
//! and pushes every message into the stream's ring.
//!
//! The pull picks the origin the normal way ([`crate::proxy::pick`]). When the pull fails
//! (dial refused or timed out, the origin refuses, resets, closes or sends nothing for
//! `--edge-stall-timeout`), the origin is reported ([`crate::proxy::repick`]: quarantine, the
//! stream's pin moves) and the pull starts again on the origin picked instead, every
//! [`RETRY_PAUSE`], while players stay connected. A new pull passes frames over until its
//! first keyframe, and its timestamps are moved to follow the last ones the players got
//! ([`Timeline`]), so players resume at a keyframe with timestamps that keep going forward.
//! Only when no origin served the stream for `--edge-stall-timeout` are its players closed, or
//! at once when the origin refuses the pull (an error status, a play closed before it started,
//! HTTP 401/403: the query the pull carries was refused), which is not reported against it,
//! or when a stream not served yet has no origin left to try (its players are refused with
//! the last pull's error, as relayed ones would be).
//!
//! The pull ends `--edge-linger` after the stream's last player on the shard left.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncWriteExt, future};
use glommio::net::TcpStream;

use super::Stream;
use super::ring::{Frame, Kind};
use crate::balance::endpoint::first_tcp;
use crate::balance::stream_key::DEFAULT_VHOST;
use crate::balance::{Origin, StreamKey};
use crate::codec::rtmp::client::{self, Answer, STREAM_CSID};
use crate::codec::rtmp::message::{
    self, AUDIO, COMMAND_CSID, DATA_AMF0, UserControl, VIDEO, WINDOW_ACK_SIZE, parse_user_control,
};
use crate::codec::rtmp::{ChunkDecoder, ChunkEncoder, ChunkError, Message};
use crate::config::edge::EdgePull;
use crate::proxy::PickFailure;
use crate::proxy::rtmp::upstream::{UpstreamError, connect};
use crate::shard::relay::recv;
use crate::shard::{Shard, within};

/// Pause between two pulls of a stream whose origin failed.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How often a pull checks whether its stream still has players.
const LINGER_CHECK: Duration = Duration::from_millis(250);
/// The flashVer the pull announces.
const FLASH_VER: &str = "LNX 9,0,124,2 (streamgate edge)";

/// Why a pull ended.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("origin {0} has no RTMP endpoint")]
    NoEndpoint(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("origin chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("origin sent nothing for {0:?}")]
    Silent(Duration),
    #[error("origin answered createStream without a stream id")]
    NoStreamId,
    #[error("origin HTTP-FLV: {0}")]
    Http(String),
    /// The origin closed the play before starting it (nginx-rtmp does when its `on_play`
    /// refuses the query).
    #[error("the origin closed the play before starting it")]
    NotStarted,
    /// The origin's HTTP-FLV endpoint refused the stream with a 4xx status.
    #[error("origin HTTP-FLV answered {0}")]
    HttpRefused(u16),
}

impl PullError {
    /// Whether the origin refused the stream (or the query the pull carries) rather than
    /// failed: that is no reason to stop sending it streams.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            PullError::Upstream(UpstreamError::Refused { .. }) | PullError::NotStarted | PullError::HttpRefused(_)
        )
    }

    /// Whether the origin's RTMP endpoint refused the TCP connection (nothing listens there).
    pub fn connection_refused(&self) -> bool {
        matches!(self, PullError::Upstream(UpstreamError::Dial { source, .. })
            if source.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

/// Runs `stream`'s pull until it lingered out or no origin could serve it.
pub async fn run(shard: Rc<Shard>, stream: Rc<Stream>) {
    let key = stream.key.clone();
    let bound = shard.config.edge.stall_timeout;
    let mut timeline = Timeline::default();
    let mut failed: Option<Arc<Origin>> = None;
    let begun = Instant::now();
    let mut served_at = begun;
    // Why the last pull ended, for the players if none can start.
    let mut last_error: Option<String> = None;
    log::info!("edge {key} on shard {}: first player, pulling from the origin", shard.index);
    let why = loop {
        let picked = match failed.take() {
            Some(origin) => crate::proxy::repick(&shard, &key, &origin).await,
            None => crate::proxy::pick(&shard, &key).await,
        };
        match picked {
            Ok(origin) => {
                let pull = async { Some(pull(&shard, &stream, &origin, &mut timeline).await) };
                let lingered = async {
                    lingered(&shard, &stream).await;
                    None
                };
                match future::or(pull, lingered).await {
                    None => break None,
                    Some(Err(e)) if e.is_refusal() => {
                        // A refusal is about the stream or the query the pull carries (its
                        // first player's token, say), not the origin's health: the origin is not
                        // reported, and the stream ends for its players now.
                        log::warn!(
                            "edge {key} on shard {}: origin {} refused the pull: {e}; closing its players",
                            shard.index,
                            origin.id
                        );
                        break Some(format!("origin {} refused: {e}", origin.id));
                    }
                    Some(result) => {
                        if timeline.fed_since(served_at) {
                            served_at = Instant::now();
                        }
                        let e =
                            result.err().map_or_else(|| "the origin ended the stream".to_string(), |e| e.to_string());
                        log::warn!("edge {key} on shard {}: pull from origin {} ended: {e}", shard.index, origin.id);
                        last_error = Some(e);
                        failed = Some(origin);
                    }
                }
            }
            // Players who never got the stream are told at once, as relayed ones are, when no
            // other origin can take it; once it was served, the pull keeps trying for the bound
            // (the origin may come back, or another register).
            Err(e) if !timeline.fed_since(begun) => {
                log::warn!(
                    "edge {key} on shard {}: no origin can serve the stream: {e}; closing its players",
                    shard.index
                );
                break Some(last_error.unwrap_or_else(|| e.to_string()));
            }
            Err(e) => log::warn!("edge {key} on shard {}: no origin: {e}", shard.index),
        }
        if served_at.elapsed() > bound {
            log::warn!(
                "edge {key} on shard {}: no origin served the stream for {bound:?}; closing its players",
                shard.index
            );
            let last = last_error.map_or_else(String::new, |e| format!(" (last: {e})"));
            break Some(format!("none sent media for {bound:?}{last}"));
        }
        if within(RETRY_PAUSE, lingered(&shard, &stream)).await.is_some() {
            break None;
        }
    };
    super::streams().remove(&stream);
    stream.close(why);
    log::info!("edge {key} on shard {}: pull stopped ({} pulls)", shard.index, stream.pulls.get());
}

/// Resolves once the stream has had no player for `--edge-linger` (or none at all while the
/// shard shuts down).
async fn lingered(shard: &Shard, stream: &Stream) {
    loop {
        if stream.lingered_out(shard, Instant::now()) {
            return;
        }
        glommio::timer::sleep(LINGER_CHECK).await;
    }
}

/// Maps each pull's timestamps onto one timeline that only moves forward: the first pull's
/// are kept as they are; a later pull's first message comes right after the last one fed.
#[derive(Default)]
pub struct Timeline {
    /// The pull's first timestamp and where it lands.
    base: Option<(u32, u32)>,
    /// The last timestamp fed.
    last: Option<u32>,
    /// Frames are passed over until a keyframe.
    need_key: bool,
    /// When a message was last fed.
    fed: Option<Instant>,
}

impl Timeline {
    /// A new pull starts.
    pub fn restart(&mut self) {
        self.base = None;
        self.need_key = true;
    }

    /// The frame to push for an origin message, if any.
    pub fn map(&mut self, msg: Message, now: Instant) -> Option<Frame> {
        if !matches!(msg.type_id, AUDIO | VIDEO | DATA_AMF0) {
            return None;
        }
        let kind = Kind::of(msg.type_id, &msg.payload);
        if !kind.passes(&mut self.need_key) {
            return None;
        }
        let (from, to) = *self.base.get_or_insert_with(|| {
            let to = self.last.map_or(msg.timestamp, |last| last.wrapping_add(1));
            (msg.timestamp, to)
        });
        let timestamp = to.wrapping_add(msg.timestamp.wrapping_sub(from));
        self.last = Some(timestamp);
        // Only frames count as the origin serving the stream: an origin without it still
        // answers the play (nginx-rtmp sends `|RtmpSampleAccess` at once), and that must not
        // keep a stream no origin has alive (its players wait `--edge-stall-timeout`, no more).
        if kind.is_frame() {
            self.fed = Some(now);
        }
        Some(Frame { type_id: msg.type_id, timestamp, payload: msg.payload.into() })
    }

    /// Whether a message was fed after `since`.
    pub fn fed_since(&self, since: Instant) -> bool {
        self.fed.is_some_and(|fed| fed > since)
    }
}

/// One pull from `origin` until it fails or ends: RTMP play, or with `--edge-pull http-flv` a
/// GET of the stream's FLV from the origin's HTTP endpoint (`auto`: when the origin's RTMP
/// endpoint refuses the connection and it has an HTTP one).
async fn pull(shard: &Shard, stream: &Stream, origin: &Origin, timeline: &mut Timeline) -> Result<(), PullError> {
    let pulled = match shard.config.edge.pull {
        EdgePull::HttpFlv => return super::upstream_flv::pull(shard, stream, origin, timeline).await,
        EdgePull::Rtmp => return pull_rtmp(shard, stream, origin, timeline, false).await,
        EdgePull::Auto => pull_rtmp(shard, stream, origin, timeline, true).await,
    };
    match pulled {
        Err(e) if falls_back(origin, &e) => {
            log::info!(
                "edge {} on shard {}: origin {} refuses RTMP connections ({e}); pulling over HTTP-FLV",
                stream.key,
                shard.index,
                origin.id
            );
            super::upstream_flv::pull(shard, stream, origin, timeline).await
        }
        pulled => pulled,
    }
}

/// Whether `origin` is pulled over HTTP-FLV after its RTMP endpoint refused the connection
/// with `e` (`--edge-pull auto`): it registered an HTTP endpoint.
fn falls_back(origin: &Origin, e: &PullError) -> bool {
    e.connection_refused() && crate::proxy::http::origin::http_addr(origin).is_ok()
}

/// [`pull`] over RTMP. With `fallback` (`--edge-pull auto`), a refused connection to an origin
/// that has an HTTP endpoint is returned uncounted: the caller pulls over HTTP-FLV instead.
async fn pull_rtmp(
    shard: &Shard,
    stream: &Stream,
    origin: &Origin,
    timeline: &mut Timeline,
    fallback: bool,
) -> Result<(), PullError> {
    let reg = &origin.registration;
    let Some(endpoint) = first_tcp(&reg.rtmp) else {
        crate::proxy::failed(shard, PickFailure::NoEndpoint);
        return Err(PullError::NoEndpoint(origin.id.0.clone()));
    };
    let addr = SocketAddr::new(reg.ip, endpoint.port);
    let mut conn = match Client::open(addr, shard.config.rtmp_dial_timeout, &stream.key, &stream.param).await {
        Ok(conn) => conn,
        Err(e) if fallback && falls_back(origin, &e) => return Err(e),
        Err(e) => {
            let refused = matches!(e, PullError::Upstream(UpstreamError::Refused { .. }));
            crate::proxy::failed(shard, if refused { PickFailure::Refused } else { PickFailure::DialFailed });
            return Err(e);
        }
    };
    stream.begin_pull(origin);
    log::info!("edge {} on shard {}: pulling from origin {} ({addr})", stream.key, shard.index, origin.id);
    timeline.restart();
    let _pulling = Pulling::new(stream);
    let silence = shard.config.edge.stall_timeout;
    let mut started = false;
    loop {
        let msg = match within(silence, conn.next()).await {
            Some(Ok(Some(msg))) => msg,
            Some(Ok(None)) if !started => return Err(PullError::NotStarted),
            Some(Ok(None)) => return Ok(()),
            Some(Err(e)) => return Err(e),
            None => return Err(PullError::Silent(silence)),
        };
        match client::answer(&msg) {
            Answer::Refused { code, description } => {
                return Err(UpstreamError::Refused { code, description, relayed: false }.into());
            }
            Answer::Status(code) if code == "NetStream.Play.Start" || code == "NetStream.Play.Reset" => started = true,
            _ => {}
        }
        if let Some(frame) = timeline.map(msg, Instant::now()) {
            stream.push(frame);
        }
    }
}

/// How long the origin has to answer an admission check's play.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the stream's origin whether a player with `param` (its query: a token, say) may play
/// `key`, the way a relayed player would be asked: a play of its own with that query, ended
/// once the origin starts it (`NetStream.Play.Start` or `Reset`; an HTTP-FLV pull's origin:
/// status 200). An origin that checks tokens (SRS or nginx-rtmp `on_play`) refuses or closes.
/// The edge asks it for every player whose query differs from the one its pull carries, so a
/// player is never let in on another player's token.
pub async fn origin_admits(shard: &Shard, key: &StreamKey, param: &str) -> Result<(), Denied> {
    let origin = crate::proxy::pick(shard, key).await.map_err(|e| Denied::Failed(e.to_string()))?;
    if shard.config.edge.pull == EdgePull::HttpFlv {
        return super::upstream_flv::origin_admits(shard, key, &origin, param).await;
    }
    let over_rtmp = origin_admits_rtmp(shard, key, &origin, param).await;
    match over_rtmp {
        Err(Denied::FallBack) => super::upstream_flv::origin_admits(shard, key, &origin, param).await,
        asked => asked,
    }
}

/// [`origin_admits`] over RTMP; `Denied::FallBack` when the origin should be asked over
/// HTTP-FLV instead (`--edge-pull auto`, its RTMP endpoint refused the connection).
async fn origin_admits_rtmp(shard: &Shard, key: &StreamKey, origin: &Origin, param: &str) -> Result<(), Denied> {
    let Some(endpoint) = first_tcp(&origin.registration.rtmp) else {
        return Err(Denied::Failed(format!("origin {} has no RTMP endpoint", origin.id)));
    };
    let addr = SocketAddr::new(origin.registration.ip, endpoint.port);
    let id = &origin.id;
    let asked = async {
        let mut conn = match Client::open(addr, shard.config.rtmp_dial_timeout, key, param).await {
            Ok(conn) => conn,
            Err(PullError::Upstream(e @ UpstreamError::Refused { .. })) => {
                return Err(Denied::Refused(format!("origin {id}: {e}")));
            }
            Err(e) if shard.config.edge.pull == EdgePull::Auto && falls_back(origin, &e) => {
                return Err(Denied::FallBack);
            }
            Err(e) => return Err(Denied::Failed(format!("origin {id}: {e}"))),
        };
        loop {
            let Some(msg) = conn.next().await.map_err(|e| Denied::Failed(format!("origin {id}: {e}")))? else {
                return Err(Denied::Refused(format!("origin {id} closed the play")));
            };
            match client::answer(&msg) {
                Answer::Status(code) if code == "NetStream.Play.Start" || code == "NetStream.Play.Reset" => {
                    return Ok(());
                }
                Answer::Refused { code, description } => {
                    return Err(Denied::Refused(format!("origin {id} refused: {code} {description}")));
                }
                _ => {}
            }
        }
    };
    let late = || Err(Denied::Failed(format!("origin {id} did not start the play within {ADMIT_TIMEOUT:?}")));
    within(ADMIT_TIMEOUT, asked).await.unwrap_or_else(late)
}

/// Why [`origin_admits`] did not let a player in.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// The origin refused the play (an error status, a closed play, an HTTP 4xx).
    #[error("{0}")]
    Refused(String),
    /// The origin could not be asked (no origin, unreachable, no answer in time).
    #[error("{0}")]
    Failed(String),
    /// Not an answer: the origin's RTMP endpoint refused the connection; ask it over HTTP-FLV.
    #[error("the origin's RTMP endpoint refused the connection")]
    FallBack,
}

/// The RTMP client side of a pull.
struct Client {
    socket: TcpStream,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    buf: Vec<u8>,
    ready: VecDeque<Message>,
    /// Bytes received, and at the last acknowledgement.
    received: u64,
    acked: u64,
    /// The origin's window acknowledgement size.
    window: u64,
}

/// A stream's app path, tcUrl and stream name on the origin at `addr`; the name carries
/// `param` (the query of the player that started the pull: its token, say) as `name?param`,
/// where ffmpeg and librtmp put a play URL's query and SRS and nginx-rtmp read it.
fn names(key: &StreamKey, addr: SocketAddr, param: &str) -> (String, String, String) {
    let (vhost, path) = key.as_str().split_once('/').unwrap_or((DEFAULT_VHOST, key.as_str()));
    let (app, name) = path.rsplit_once('/').unwrap_or(("live", path));
    let mut tc_url = format!("rtmp://{addr}/{app}");
    if vhost != DEFAULT_VHOST {
        tc_url.push_str(&format!("?vhost={vhost}"));
    }
    let name = if param.is_empty() { name.to_string() } else { format!("{name}?{param}") };
    (app.to_string(), tc_url, name)
}

impl Client {
    /// Dials, handshakes, connects, creates a stream and plays `key` with `param` (a player's
    /// query).
    async fn open(addr: SocketAddr, timeout: Duration, key: &StreamKey, param: &str) -> Result<Client, PullError> {
        let connected = connect(addr, timeout).await?;
        let mut conn = Client {
            socket: connected.stream,
            decoder: ChunkDecoder::new(),
            encoder: ChunkEncoder::new(),
            buf: vec![0u8; 64 * 1024],
            ready: VecDeque::new(),
            received: 0,
            acked: 0,
            window: 2_500_000,
        };
        conn.decode(&connected.first)?;
        let (app, tc_url, name) = names(key, addr, param);
        let mut out = connected.c2;
        conn.encoder.encode(&client::connect(&app, &tc_url, FLASH_VER).to_message(COMMAND_CSID, 0), &mut out)?;
        conn.send(&out).await?;
        let open = async {
            conn.result(1.0).await?;
            let mut out = Vec::new();
            conn.encoder.encode(&client::create_stream(2.0).to_message(COMMAND_CSID, 0), &mut out)?;
            conn.send(&out).await?;
            let created = conn.result(2.0).await?;
            let sid = created.args.first().and_then(|a| a.as_f64()).ok_or(PullError::NoStreamId)? as u32;
            let mut out = Vec::new();
            conn.encoder.encode(&client::play(&name).to_message(STREAM_CSID, sid), &mut out)?;
            conn.send(&out).await
        };
        within(timeout.max(Duration::from_secs(5)), open)
            .await
            .unwrap_or(Err(UpstreamError::Closed("answering connect and createStream in time").into()))?;
        Ok(conn)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), PullError> {
        self.socket.write_all(bytes).await.map_err(|e| PullError::Upstream(e.into()))
    }

    /// Waits for the `_result` of `txid`; an error answer is a refusal.
    async fn result(&mut self, txid: f64) -> Result<crate::codec::rtmp::Command, PullError> {
        loop {
            let Some(msg) = self.next().await? else { return Err(UpstreamError::Closed("answering").into()) };
            match client::answer(&msg) {
                Answer::Result { txid: got, cmd } if got == txid => return Ok(cmd),
                Answer::Refused { code, description } => {
                    return Err(UpstreamError::Refused { code, description, relayed: false }.into());
                }
                _ => {}
            }
        }
    }

    /// The next message from the origin (`None` at its end); answers pings and acknowledges
    /// the origin's window on the way.
    async fn next(&mut self) -> Result<Option<Message>, PullError> {
        loop {
            if let Some(msg) = self.ready.pop_front() {
                return Ok(Some(msg));
            }
            let n = recv(&self.socket, &mut self.buf).await.map_err(|e| PullError::Upstream(e.into()))?;
            if n == 0 {
                return Ok(None);
            }
            self.received += n as u64;
            let input = std::mem::take(&mut self.buf);
            let decoded = self.decode(&input[..n]);
            self.buf = input;
            let answer = decoded?;
            if self.received - self.acked >= self.window {
                self.acked = self.received;
                let mut out = Vec::new();
                self.encoder.encode(&message::acknowledgement(self.received as u32), &mut out)?;
                out.extend_from_slice(&answer);
                self.send(&out).await?;
            } else if !answer.is_empty() {
                self.send(&answer).await?;
            }
        }
    }

    /// Decodes `input` into [`Client::ready`]; returns what to answer (pings).
    fn decode(&mut self, mut input: &[u8]) -> Result<Vec<u8>, PullError> {
        let mut answer = Vec::new();
        while !input.is_empty() {
            let (used, msg) = self.decoder.decode(input)?;
            input = &input[used..];
            let Some(msg) = msg else { break };
            match msg.type_id {
                WINDOW_ACK_SIZE => {
                    if let Ok(size) = message::parse_window_ack_size(&msg.payload) {
                        self.window = u64::from(size.max(1));
                    }
                }
                message::USER_CONTROL => {
                    if let Ok(UserControl::PingRequest(ts)) = parse_user_control(&msg.payload) {
                        self.encoder.encode(&message::ping_response(ts), &mut answer)?;
                    }
                }
                _ => self.ready.push_back(msg),
            }
        }
        Ok(answer)
    }
}

/// Marks the stream's pull as connected while it lives.
pub struct Pulling<'a>(&'a Stream);

impl<'a> Pulling<'a> {
    pub fn new(stream: &'a Stream) -> Self {
        stream.pulling.set(true);
        Pulling(stream)
    }
}

impl Drop for Pulling<'_> {
    fn drop(&mut self) {
        self.0.pulling.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(type_id: u8, timestamp: u32, payload: &[u8]) -> Message {
        Message { csid: 6, timestamp, type_id, stream_id: 1, payload: payload.to_vec() }
    }

    #[test]
    fn a_new_pull_resumes_at_a_keyframe_after_the_last_timestamp() {
        let now = Instant::now();
        let mut t = Timeline::default();
        t.restart();
        assert!(t.map(msg(VIDEO, 1000, &[0x27, 1]), now).is_none(), "no frame before the first keyframe");
        assert_eq!(t.map(msg(VIDEO, 1040, &[0x17, 1]), now).unwrap().timestamp, 1040, "the first pull's own");
        assert_eq!(t.map(msg(AUDIO, 1060, &[0xaf, 1]), now).unwrap().timestamp, 1060);
        t.restart();
        assert!(t.map(msg(AUDIO, 5, &[0xaf, 1]), now).is_none());
        assert_eq!(t.map(msg(VIDEO, 10, &[0x17, 1]), now).unwrap().timestamp, 1061);
        assert_eq!(t.map(msg(VIDEO, 50, &[0x27, 1]), now).unwrap().timestamp, 1101);
        assert!(t.map(msg(message::USER_CONTROL, 0, &[0, 0]), now).is_none());
    }

    #[test]
    fn only_frames_count_as_the_origin_serving_the_stream() {
        let start = Instant::now();
        let later = start + Duration::from_secs(1);
        let mut t = Timeline::default();
        t.restart();
        // nginx-rtmp answers a play of a stream it does not have with `|RtmpSampleAccess`.
        let mut sample_access = vec![2, 0, 17];
        sample_access.extend_from_slice(b"|RtmpSampleAccess");
        assert!(t.map(msg(DATA_AMF0, 0, &sample_access), later).is_some(), "passed on to the players");
        assert!(!t.fed_since(start), "but the stream is not being served");
        assert!(t.map(msg(VIDEO, 0, &[0x17, 0, 0, 0, 0]), later).is_some(), "a sequence header");
        assert!(!t.fed_since(start), "nor by its headers");
        t.map(msg(VIDEO, 40, &[0x17, 1]), later).unwrap();
        assert!(t.fed_since(start), "a frame is");
    }

    #[test]
    fn the_origin_is_asked_for_the_stream_by_app_and_name() {
        let addr: SocketAddr = "10.0.0.1:1935".parse().unwrap();
        let key = StreamKey::from_rtmp("rtmp://1.2.3.4/live/sub", "cam?token=1").unwrap();
        let (app, tc_url, name) = names(&key, addr, "");
        assert_eq!(
            (app.as_str(), tc_url.as_str(), name.as_str()),
            ("live/sub", "rtmp://10.0.0.1:1935/live/sub", "cam")
        );
        assert_eq!(names(&key, addr, "token=1").2, "cam?token=1");
        let key = StreamKey::from_rtmp("rtmp://example.com/live", "cam").unwrap();
        assert_eq!(names(&key, addr, "").1, "rtmp://10.0.0.1:1935/live?vhost=example.com");
    }
}
