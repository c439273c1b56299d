//! Who may publish and play, checked on the shard before a session picks its origin, the same
//! way for every protocol ([`admit`]):
//!
//! 1. Signed URL ([`signed`]): with `--publish-secret` / `--play-secret`, the stream's query
//!    must carry a valid, unexpired `token` and `expires`. Pure and local: no round trip.
//! 2. Sessions per stream (`--max-sessions-per-stream`): a slot in the table every shard
//!    shares ([`crate::shard::limits`]), held until the session ends.
//! 3. Callback ([`callback`]): with `--on-publish` / `--on-play`, the configured URL must
//!    answer 200 `{"code":0}` within `--callback-timeout`.
//!
//! An admitted session holds an [`Admitted`]; when it drops (the session ended, however) the
//! stream slot is given back and, with `--on-unpublish` / `--on-stop`, an end notice is
//! queued for the shard's notifier task, which posts it (answers ignored). WebRTC's admission
//! is taken at the offer and handed to the shard that opens the media session
//! ([`Admitted::adopt`], `crate::proxy::webrtc`), so its end is the media session's end.
//!
//! Why callbacks run on the shard and not on the control thread: the session that waits is
//! one task of the shard's executor, so awaiting the answer blocks nothing else (the relay of
//! every other session goes on), the shard already has the HTTP/1 client it asks origins
//! with, and the answer needs no trip through the bridge and back. Bounds: at most
//! `--callback-max-in-flight` callbacks per shard (a session that gets no turn within the
//! timeout is refused), at most `--callback-max-notices` end notices waiting (more are dropped
//! and logged).
//!
//! A refusal is counted (`denied` or `stream_full` in the shard's pick failures) and logged
//! here, rate-limited (peers can cause it at will); each protocol answers it in its own form:
//! RTMP an error onStatus then close, HTTP and WHIP/WHEP 403 with the reason as the body, SRT
//! a rejection ([`Refusal::srt_reason`]). The log line names the reason and that answer
//! ([`Refusal::answer`]): an SRT caller sees only the rejection code.

pub mod callback;
/// Signed URLs live with the stream keys (pure), so the control thread signs the URLs its jobs play.
pub use crate::balance::signed;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::balance::StreamKey;
use crate::bridge::{PickFailure, Protocol, Role};
use crate::config::access::{AccessConfig, CallbackUrl};
use crate::logging::throttle::LogThrottle;
use crate::shard::Shard;
use crate::shard::limits::Slot;

pub use signed::SignError;

/// SRT's access-control rejection for an unauthorized caller (SRT_REJX_UNAUTHORIZED, HTTP 401).
pub const SRT_REJX_UNAUTHORIZED: i32 = 1401;
/// SRT's rejection for an overloaded listener (SRT_REJX_OVERLOAD).
pub const SRT_REJX_OVERLOAD: i32 = 1402;

/// What a session asks for.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub protocol: Protocol,
    pub role: Role,
    pub key: &'a StreamKey,
    /// The stream's query, without `?` (empty for none).
    pub param: &'a str,
    pub peer: SocketAddr,
    /// RTMP's `connect` tcUrl, for the callback body.
    pub tc_url: Option<&'a str>,
}

/// Why a session was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unauthorized: {0}")]
    Signature(#[from] SignError),
    #[error("stream has {0} sessions already (--max-sessions-per-stream)")]
    StreamFull(u32),
    #[error("refused by the {action} callback: {why}")]
    Callback { action: &'static str, why: String },
    #[error("the {action} callback failed: {why}")]
    CallbackFailed { action: &'static str, why: String },
}

impl Refusal {
    /// The HTTP status a refused HTTP or WHIP/WHEP client gets.
    pub fn http_status(&self) -> u16 {
        403
    }

    /// The SRT rejection reason.
    pub fn srt_reason(&self) -> i32 {
        match self {
            Refusal::StreamFull(_) => SRT_REJX_OVERLOAD,
            _ => SRT_REJX_UNAUTHORIZED,
        }
    }

    /// How a `protocol` client is told, for the refusal's log line (an SRT caller sees only
    /// the rejection code, and libsrt callers such as ffmpeg print none).
    pub fn answer(&self, protocol: Protocol) -> String {
        match protocol {
            Protocol::Srt => format!("SRT rejection {}", self.srt_reason()),
            Protocol::Rtmp => "an error onStatus, then close".to_string(),
            _ => format!("HTTP {}", self.http_status()),
        }
    }

    fn counted_as(&self) -> PickFailure {
        match self {
            Refusal::StreamFull(_) => PickFailure::StreamFull,
            _ => PickFailure::Denied,
        }
    }
}

/// An admitted session: gives back its stream slot and sends its end notice when dropped.
#[derive(Debug)]
pub struct Admitted {
    _slot: Option<Slot>,
    end: Option<(CallbackUrl, callback::Hook)>,
    /// One of streamgate's own jobs (loopback, signed with the internal secret).
    internal: bool,
}

impl Admitted {
    /// Whether the session is one of streamgate's own jobs (a local stream's HLS remux or
    /// ladder, an SRT ingest or player job), not a client.
    pub fn internal(&self) -> bool {
        self.internal
    }

    /// Whether it holds anything its end gives back or tells (a stream slot, an end notice).
    pub fn holds_anything(&self) -> bool {
        self._slot.is_some() || self.end.is_some()
    }

    /// Makes the shard this runs on able to send the end notice (WebRTC: the admission moves
    /// from the signalling shard to the one that opens the media session).
    pub fn adopt(self, shard: &Shard) -> Admitted {
        if self.end.is_some() {
            NOTIFIER.with(|n| n.start(&shard.config.access));
        }
        self
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            // try_with: never panic while the thread's locals are being torn down.
            let _ = NOTIFIER.try_with(|n| n.queue(end));
        }
    }
}

/// Checks a session before it picks its origin (see the module documentation); a refusal is
/// counted and logged here.
pub async fn admit(shard: &Shard, ask: &Ask<'_>) -> Result<Admitted, Refusal> {
    match check(shard, ask).await {
        Ok(admitted) => Ok(admitted),
        Err(refusal) => {
            shard.counters.pick_failed(refusal.counted_as());
            let (protocol, role, key, peer) = (ask.protocol.name(), ask.role.name(), ask.key, ask.peer);
            let line = || {
                let answer = refusal.answer(ask.protocol);
                format!("{protocol} {role} {key} from {peer} refused: {refusal}; answered with {answer}")
            };
            WARNINGS.with(|w| {
                let verdict = w.borrow_mut().admit(refusal.counted_as(), Instant::now());
                if let Some(summary) = verdict.summary {
                    log::warn!("access refusals ({}): {}", summary.kind.name(), summary.tail());
                }
                if verdict.write {
                    log::warn!("{}", line());
                }
            });
            Err(refusal)
        }
    }
}

async fn check(shard: &Shard, ask: &Ask<'_>) -> Result<Admitted, Refusal> {
    let access = &shard.config.access;
    // streamgate's own jobs (a local stream's HLS remux and ladder, SRT ingest and players)
    // on loopback: not clients, so not asked of the callbacks nor counted per stream.
    if ask.peer.ip().is_loopback()
        && !access.internal_secret.is_empty()
        && signed::verify(&access.internal_secret, ask.key, ask.param, unix_now()).is_ok()
    {
        return Ok(Admitted { _slot: None, end: None, internal: true });
    }
    let secret = match ask.role {
        Role::Publish => access.publish_secret.as_deref(),
        Role::Play => access.play_secret.as_deref(),
    };
    if let Some(secret) = secret {
        signed::verify(secret, ask.key, ask.param, unix_now())?;
    }
    let slot = match &shard.limits.per_stream {
        Some(counts) => Some(counts.take(ask.key).ok_or(Refusal::StreamFull(counts.limit()))?),
        None => None,
    };
    let (start, end) = callback::actions(ask.role);
    let (start_url, end_url) = match ask.role {
        Role::Publish => (&access.on_publish, &access.on_unpublish),
        Role::Play => (&access.on_play, &access.on_stop),
    };
    let hook = callback::Hook {
        action: start,
        client_id: client_id(shard.index),
        peer: ask.peer,
        key: ask.key.clone(),
        protocol: ask.protocol,
        param: ask.param.to_string(),
        tc_url: ask.tc_url.map(str::to_string),
    };
    if start_url.is_some() || end_url.is_some() {
        let permits = NOTIFIER.with(|n| n.start(access));
        if let Some(url) = start_url {
            ask_callback(access, &permits, url, &hook).await?;
        }
    }
    let end = end_url.clone().map(|url| (url, callback::Hook { action: end, ..hook }));
    Ok(Admitted { _slot: slot, end, internal: false })
}

async fn ask_callback(
    access: &AccessConfig,
    permits: &tokio::sync::Semaphore,
    url: &CallbackUrl,
    hook: &callback::Hook,
) -> Result<(), Refusal> {
    let action = hook.action;
    let failed = |why: String| Refusal::CallbackFailed { action, why };
    let timeout = access.callback_timeout;
    let deadline = Instant::now() + timeout;
    let permit = crate::shard::within(timeout, permits.acquire())
        .await
        .and_then(Result::ok)
        .ok_or_else(|| failed(format!("{} callbacks in flight on this shard", access.callback_max_in_flight)))?;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let answer = callback::post(url, &callback::body(hook), hook.peer, left).await;
    drop(permit);
    let (status, body) = answer.map_err(|e| failed(format!("{}: {e}", url.url)))?;
    callback::allowed(status, &body).map_err(|why| Refusal::Callback { action, why })
}

/// A client id unique in this process: the shard and a counter (SRS's ids are random words; a
/// callback server only needs the start and the end of one session to share it).
fn client_id(shard: usize) -> String {
    thread_local!(static NEXT: Cell<u64> = const { Cell::new(0) });
    let n = NEXT.with(|c| c.replace(c.get() + 1));
    format!("sg{shard}-{n}")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The query of RTMP's stream name, else of its tcUrl (where SRS reads `param` from too).
pub fn rtmp_param<'a>(tc_url: &'a str, stream_name: &'a str) -> &'a str {
    match stream_name.split_once('?') {
        Some((_, q)) if !q.is_empty() => q,
        _ => tc_url.split_once('?').map_or("", |(_, q)| q),
    }
}

thread_local! {
    /// This shard thread's callback turns and end notices.
    static NOTIFIER: Notifier = Notifier::default();
    /// Refusal warnings, at most 5 per kind per 10 s on this shard.
    static WARNINGS: RefCell<LogThrottle<PickFailure>> = RefCell::new(LogThrottle::new(5, Duration::from_secs(10)));
}

/// One shard thread's callback permits and its queue of end notices, with the task that posts
/// them (started on first use).
#[derive(Default)]
struct Notifier {
    permits: RefCell<Option<Rc<tokio::sync::Semaphore>>>,
    notices: RefCell<VecDeque<(CallbackUrl, callback::Hook)>>,
    wake: Rc<tokio::sync::Notify>,
    started: Cell<bool>,
    timeout: Cell<Duration>,
    /// `--callback-max-notices`.
    max_notices: Cell<usize>,
    /// Notices queued or being posted.
    pending: Rc<Cell<usize>>,
}

impl Notifier {
    /// The shard's callback permits (`--callback-max-in-flight`), with the notifier task
    /// started on first use.
    fn start(&self, access: &AccessConfig) -> Rc<tokio::sync::Semaphore> {
        let max = access.callback_max_in_flight;
        let permits =
            self.permits.borrow_mut().get_or_insert_with(|| Rc::new(tokio::sync::Semaphore::new(max))).clone();
        if !self.started.replace(true) {
            self.timeout.set(access.callback_timeout);
            self.max_notices.set(access.callback_max_notices);
            glommio::spawn_local(notify(permits.clone(), self.wake.clone(), self.pending.clone())).detach();
        }
        permits
    }

    fn queue(&self, notice: (CallbackUrl, callback::Hook)) {
        if !self.started.get() {
            return; // no callback configured, so no notice either
        }
        let mut notices = self.notices.borrow_mut();
        let max = self.max_notices.get();
        if notices.len() >= max {
            let (_, hook) = notice;
            return log::warn!(
                "{} {} for {}: dropped, {max} notices waiting (--callback-max-notices)",
                hook.action,
                hook.client_id,
                hook.key
            );
        }
        notices.push_back(notice);
        self.pending.set(self.pending.get() + 1);
        self.wake.notify_one();
    }
}

/// At shutdown, once the shard's sessions are closed: waits until the end notices they queued
/// are posted (answered or failed), for at most `--callback-timeout` and a second.
pub async fn flush(shard: &Shard) {
    let pending = NOTIFIER.with(|n| n.pending.clone());
    if pending.get() == 0 {
        return;
    }
    log::info!("shard {}: posting {} end notices before exiting", shard.index, pending.get());
    let limit = shard.config.access.callback_timeout + Duration::from_secs(1);
    let posted = crate::shard::within(limit, async {
        while pending.get() > 0 {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if posted.is_none() {
        log::warn!("shard {}: {} end notices not posted before exiting", shard.index, pending.get());
    }
}

/// Posts the shard's end notices, each in its own task, holding a callback permit.
async fn notify(permits: Rc<tokio::sync::Semaphore>, wake: Rc<tokio::sync::Notify>, pending: Rc<Cell<usize>>) {
    loop {
        let next = NOTIFIER.with(|n| n.notices.borrow_mut().pop_front());
        let Some((url, hook)) = next else {
            wake.notified().await;
            continue;
        };
        let Ok(permit) = permits.acquire().await else { return };
        permit.forget(); // given back by the task below when its post is done
        let (permits, timeout, pending) = (permits.clone(), NOTIFIER.with(|n| n.timeout.get()), pending.clone());
        glommio::spawn_local(async move {
            let answer = callback::post(&url, &callback::body(&hook), hook.peer, timeout).await;
            permits.add_permits(1);
            pending.set(pending.get().saturating_sub(1));
            match answer {
                Ok((status, _)) => log::debug!("{} {} {}: {status}", hook.action, hook.client_id, hook.key),
                Err(e) => log::info!("{} {} for {} to {}: {e}", hook.action, hook.client_id, hook.key, url.url),
            }
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_params_come_from_the_stream_name_else_the_tc_url() {
        assert_eq!(rtmp_param("rtmp://h/live", "cam?token=a&expires=1"), "token=a&expires=1");
        assert_eq!(rtmp_param("rtmp://h/live?token=b", "cam"), "token=b");
        assert_eq!(rtmp_param("rtmp://h/live?token=b", "cam?"), "token=b");
        assert_eq!(rtmp_param("rtmp://h/live", "cam"), "");
    }

    #[test]
    fn refusals_map_to_each_protocol() {
        let denied = Refusal::Signature(SignError::Missing);
        assert_eq!((denied.http_status(), denied.srt_reason()), (403, SRT_REJX_UNAUTHORIZED));
        assert_eq!(Refusal::StreamFull(3).srt_reason(), SRT_REJX_OVERLOAD);
        assert_eq!(denied.counted_as(), PickFailure::Denied);
        assert_eq!(Refusal::StreamFull(3).counted_as(), PickFailure::StreamFull);
        assert_eq!(denied.answer(Protocol::Srt), "SRT rejection 1401");
        assert_eq!(Refusal::StreamFull(3).answer(Protocol::Srt), "SRT rejection 1402");
        assert_eq!(denied.answer(Protocol::WebRtc), "HTTP 403");
        assert_eq!(denied.answer(Protocol::Hls), "HTTP 403");
        assert_eq!(denied.answer(Protocol::Rtmp), "an error onStatus, then close");
    }
}
