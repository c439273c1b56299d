//! WebRTC signalling on the HTTP API listener (default 11985): WHIP `/rtc/v1/whip/`, WHEP
//! `/rtc/v1/whep/`, and SRS's legacy JSON `/rtc/v1/publish/` and `/rtc/v1/play/`.
//!
//! A request is forwarded to the pinned origin's `api` endpoint with its method, path, query,
//! end-to-end headers (`Content-Type`, `Authorization`, ...) and body. The origin's status and
//! headers come back (`Content-Type` and `Location` included: WHIP clients need both), with:
//! - `Location` made relative, so the WHIP resource (`DELETE`/`PATCH`) is asked of the proxy,
//!   which sends it to the same origin (the resource URL names the stream);
//! - the answer's host candidates on the origin's WebRTC ports rewritten to the proxy's
//!   WebRTC port and to `--webrtc-candidate` (default: the address the client reached the
//!   proxy at), so media flows through the proxy and never to an origin-internal address;
//! - the session's ICE username (`answerUfrag:offerUfrag`) recorded with the control thread,
//!   so the shard that gets the client's first STUN request knows its origin.
//!
//! A dial to the origin that is refused or times out is retried once on the origin picked
//! instead (the failed one goes into quarantine).
//!
//! The stream: WHIP/WHEP from `?app=&stream=` (or the path), legacy from the body's
//! `streamurl`. An offer (POST) asks [`access`] first; a refusal is 403. The admission (its
//! slot of `--max-sessions-per-stream` and its `on_unpublish`/`on_stop` notice) goes with the
//! ICE username to the shard that opens the media session ([`Handover`]), and ends with it
//! (`crate::proxy::webrtc::media`). An offer whose media session does not open within
//! `--webrtc-media-timeout` ends here then; one that gets no answer with ICE credentials ends
//! at once. At most `--webrtc-max-sessions` admissions per shard wait for their media like
//! that; past it an offer's admission ends at once (the session still works, unnoticed).
//!
//! A `DELETE` of the WHIP/WHEP resource (the `Location` the client was given) that the origin
//! accepts (2xx) ends the session here too: the control thread forgets its ICE username and
//! raises its [`Ended`] flag, so the shard relaying its media closes it at once, or, before any
//! media, the shard holding its admission ends that within a second; either way the end notice
//! goes out then, not `--udp-idle-timeout` later.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use serde_json::Value;

use crate::balance::endpoint::{first_tcp, parse_list};
use crate::balance::ice::{Ended, Handover, IceSession};
use crate::balance::stream_key::query_param;
use crate::balance::{Origin, StreamKey};
use crate::bridge::PickFailure;
use crate::bridge::{Protocol, Role};
use crate::codec::http::{Request, Response};
use crate::codec::sdp;
use crate::proxy::access;
use crate::proxy::http::origin::{self as http_origin, OriginError};
use crate::proxy::http::{Exchange, Next, cors, passed_on, text};
use crate::shard::Shard;

/// Largest offer accepted.
pub const MAX_OFFER: usize = 64 * 1024;

/// An offer's admission waiting for its media session: until when (`--webrtc-media-timeout`
/// after the answer), and what; `ended` when its client deleted the resource meanwhile.
struct Waiting {
    until: Instant,
    handover: Handover,
    ended: Ended,
    key: StreamKey,
    role: Role,
}

thread_local! {
    /// This shard's admissions waiting for their media session (at most
    /// `--webrtc-max-sessions`), oldest first; swept once a second by [`sweep_waiting`].
    static WAITING: RefCell<VecDeque<Waiting>> = const { RefCell::new(VecDeque::new()) };
    static SWEEPING: Cell<bool> = const { Cell::new(false) };
}

/// The signalling APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Whip,
    Whep,
    LegacyPublish,
    LegacyPlay,
}

impl Api {
    fn from_path(path: &str) -> Option<Api> {
        match path.trim_end_matches('/') {
            "/rtc/v1/whip" => Some(Api::Whip),
            "/rtc/v1/whep" => Some(Api::Whep),
            "/rtc/v1/publish" => Some(Api::LegacyPublish),
            "/rtc/v1/play" => Some(Api::LegacyPlay),
            _ => None,
        }
    }

    fn role(self) -> Role {
        match self {
            Api::Whip | Api::LegacyPublish => Role::Publish,
            Api::Whep | Api::LegacyPlay => Role::Play,
        }
    }

    fn legacy(self) -> bool {
        matches!(self, Api::LegacyPublish | Api::LegacyPlay)
    }
}

/// Serves one connection of the HTTP API listener.
pub async fn serve(shard: Rc<Shard>, client: TcpStream, peer: SocketAddr) {
    crate::proxy::http::serve(shard, client, peer, route).await
}

/// Answers one request on the HTTP API listener.
async fn route(ex: &mut Exchange<'_>) -> Next {
    let req = ex.req;
    if req.path == "/api/v1/versions" {
        return ex.reply(crate::version::versions()).await;
    }
    let Some(api) = Api::from_path(&req.path) else {
        return ex.reply(text(404, &format!("no route for {}", req.path))).await;
    };
    if req.method == "OPTIONS" {
        return ex.reply(cors(Response::new(200, "text/plain", ""))).await;
    }
    let body = match req.content_length() {
        Ok(None) => Vec::new(),
        Ok(Some(n)) if n > MAX_OFFER as u64 => {
            return ex.reply_then(cors(text(413, &format!("body over {MAX_OFFER} bytes"))), Next::Close).await;
        }
        Ok(Some(n)) => match ex.read_body(n as usize).await {
            Ok(body) => body,
            Err(answer) => return ex.reply_then(cors(answer), Next::Close).await,
        },
        Err(e) => return ex.reply_then(cors(text(411, &e.to_string())), Next::Close).await,
    };
    match signal(ex, api, &body).await {
        Ok(response) | Err(response) => ex.reply(cors(response)).await,
    }
}

async fn signal(ex: &Exchange<'_>, api: Api, body: &[u8]) -> Result<Response, Response> {
    let (shard, req, peer) = (ex.shard, ex.req, ex.peer);
    let role = api.role();
    let offer = offer_sdp(api, body);
    let key = stream_key(req, api, body).map_err(|e| text(400, &e))?;
    let mut admitted = None;
    if req.method == "POST" {
        let param = stream_param(req, api, body);
        let ask = access::Ask { protocol: Protocol::WebRtc, role, key: &key, param: &param, peer, tc_url: None };
        admitted = Some(access::admit(shard, &ask).await.map_err(|r| text(r.http_status(), &r.to_string()))?);
    }
    let origin = crate::proxy::pick(shard, &key).await.map_err(|reason| {
        log::warn!("webrtc {} {key} from {peer} refused: {reason}", role.name());
        text(503, &format!("no origin for {key}: {reason}"))
    })?;
    let (origin, mut answered) = ask_origin(ex, &key, origin, body, role).await?;
    let reg = &origin.registration;
    let timeout = shard.config.http_origin_timeout;
    let failed = |e: OriginError| {
        crate::proxy::failed(shard, e.pick_failure());
        log::warn!("webrtc {} {key} from {peer}: {e}", role.name());
        text(e.status(), &e.to_string())
    };
    let answer = http_origin::read_body(&mut answered, &req.method, Instant::now() + timeout).await.map_err(failed)?;
    let status = answered.head.status;
    let candidate_ip = shard.config.webrtc_candidate.or_else(|| reached_at(ex.client));
    let rtc_ports: Vec<u16> = parse_list(&reg.rtc.iter().map(ToString::to_string).collect::<Vec<_>>())
        .map(|list| list.iter().map(|e| e.port).collect())
        .unwrap_or_default();
    let proxy_port = shard.config.listen.webrtc.0.port();
    let rewrite = |sdp_text: &str| sdp::rewrite_host_candidates(sdp_text, &rtc_ports, proxy_port, candidate_ip);
    let (answer, answer_sdp) = if (200..300).contains(&status) && !answer.is_empty() {
        rewrite_answer(api, &answer, rewrite)
    } else {
        (answer, None)
    };
    let mut response = passed_on(status, &answered.head.headers, answer);
    let mut resource = None;
    for (name, value) in &mut response.headers {
        if name.eq_ignore_ascii_case("location") {
            *value = relative_location(value);
            resource = Some(value.clone());
        }
    }
    if let (Some(offer), Some(answer_sdp)) = (offer.as_deref(), answer_sdp.as_deref())
        && let (Some(o), Some(a)) = (sdp::ice_credentials(offer), sdp::ice_credentials(answer_sdp))
    {
        let username = format!("{}:{}", a.ufrag, o.ufrag);
        let ended = Ended::default();
        let handover = admitted.take().and_then(|admitted| hand_over(shard, admitted, &key, role, &ended));
        let session = IceSession { key: key.clone(), origin: origin.id.clone(), role, handover, ended, resource };
        shard.link.ice_bind(username, session).await;
    } else if req.method == "POST" && (200..300).contains(&status) {
        log::warn!("webrtc {} {key}: no ICE credentials in the offer or the origin's answer", role.name());
    }
    if req.method == "DELETE" && (200..300).contains(&status) {
        let resource = match &req.query {
            Some(query) => format!("{}?{query}", req.path),
            None => req.path.clone(),
        };
        let username = query_param(req.query.as_deref(), "session");
        shard.link.ice_end(resource, username).await;
    }
    log::info!("webrtc {} {} {key} from {peer} via origin {}: {status}", role.name(), req.method, origin.id);
    Ok(response)
}

/// The offer's admission, to be taken over by the shard that opens its media session; this
/// shard ends it after `--webrtc-media-timeout`, or once `ended`, if none has. `None` (and the
/// admission ends now) when it holds nothing, or when this shard has `--webrtc-max-sessions`
/// waiting.
fn hand_over(
    shard: &Shard,
    admitted: access::Admitted,
    key: &StreamKey,
    role: Role,
    ended: &Ended,
) -> Option<Handover> {
    if !admitted.holds_anything() {
        return None;
    }
    let max = shard.config.access.webrtc_max_sessions;
    let handover = Handover::new(admitted);
    let until = Instant::now() + shard.config.access.webrtc_media_timeout;
    let waiting = Waiting { until, handover: handover.clone(), ended: ended.clone(), key: key.clone(), role };
    let full = WAITING.with(|w| {
        let mut w = w.borrow_mut();
        if w.len() >= max {
            w.retain(|e| !e.handover.is_taken());
        }
        if w.len() >= max {
            return true;
        }
        w.push_back(waiting);
        false
    });
    if full {
        log::warn!(
            "webrtc {} {key}: {max} offers on this shard wait for their media (--webrtc-max-sessions); this one's end is sent now",
            role.name()
        );
        drop(handover.take());
        return None;
    }
    if !SWEEPING.with(|s| s.replace(true)) {
        glommio::spawn_local(sweep_waiting(shard.config.access.webrtc_media_timeout)).detach();
    }
    Some(handover)
}

/// Ends every admission of this shard still waiting for its media (at shutdown).
pub fn end_waiting() {
    let waiting: VecDeque<Waiting> = WAITING.with(|w| std::mem::take(&mut *w.borrow_mut()));
    for e in waiting {
        drop(e.handover.take());
    }
}

/// Once a second: forgets the waiting admissions a media session took, and ends those that
/// waited `timeout` (`--webrtc-media-timeout`) for one or whose client deleted the resource.
async fn sweep_waiting(timeout: Duration) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        let over: VecDeque<Waiting> = WAITING.with(|w| {
            let mut w = w.borrow_mut();
            w.retain(|e| !e.handover.is_taken());
            let (over, waiting) = w.drain(..).partition(|e| e.until <= now || e.ended.is_ended());
            *w = waiting;
            over
        });
        for e in over {
            if let Some(admitted) = e.handover.take() {
                let (role, key) = (e.role.name(), &e.key);
                match e.ended.is_ended() {
                    true => log::info!("webrtc {role} {key}: resource deleted before any media; ended"),
                    false => log::info!("webrtc {role} {key}: no media session within {timeout:?}; ended"),
                }
                drop(admitted);
            }
        }
    }
}

/// The origin's api address, or the answer saying it has none (counted).
fn api_addr(shard: &Shard, key: &StreamKey, origin: &Origin, role: Role) -> Result<SocketAddr, Response> {
    let reg = &origin.registration;
    let endpoint = first_tcp(&reg.api).ok_or_else(|| {
        crate::proxy::failed(shard, PickFailure::NoEndpoint);
        log::warn!("webrtc {} {key}: origin {} has no api endpoint", role.name(), origin.id);
        text(502, &format!("origin {} has no api endpoint", origin.id))
    })?;
    Ok(SocketAddr::new(reg.ip, endpoint.port))
}

/// Sends the signalling request to the origin's api endpoint and reads the response head. A
/// dial that is refused or times out is reported (quarantine) and retried once on the origin
/// picked instead.
async fn ask_origin(
    ex: &Exchange<'_>,
    key: &StreamKey,
    origin: Arc<Origin>,
    body: &[u8],
    role: Role,
) -> Result<(Arc<Origin>, http_origin::Answered), Response> {
    let (shard, req, peer) = (ex.shard, ex.req, ex.peer);
    let timeout = shard.config.http_origin_timeout;
    let addr = api_addr(shard, key, &origin, role)?;
    let (origin, answered) = match http_origin::request(addr, req, body, peer, false, timeout).await {
        Err(e) if e.is_dial_failure() => match crate::proxy::repick(shard, key, &origin).await {
            Ok(next) => {
                crate::proxy::failed(shard, e.pick_failure());
                let addr = api_addr(shard, key, &next, role)?;
                (next, http_origin::request(addr, req, body, peer, false, timeout).await)
            }
            Err(_) => (origin, Err(e)),
        },
        answered => (origin, answered),
    };
    answered.map(|a| (origin, a)).map_err(|e| {
        crate::proxy::failed(shard, e.pick_failure());
        log::warn!("webrtc {} {key} from {peer}: {e}", role.name());
        text(e.status(), &e.to_string())
    })
}

/// The stream's query (for a signed URL and the callbacks): the legacy envelope's `streamurl`'s,
/// else the request's.
fn stream_param(req: &Request, api: Api, body: &[u8]) -> String {
    let legacy_url = api.legacy().then(|| serde_json::from_slice::<Value>(body).ok()).flatten();
    let url = legacy_url.as_ref().and_then(|v| v.get("streamurl")).and_then(Value::as_str);
    match url {
        Some(url) => url.split_once('?').map_or(String::new(), |(_, q)| q.to_string()),
        None => req.query.clone().unwrap_or_default(),
    }
}

/// The offer's SDP: the body itself, or the legacy envelope's `sdp`.
fn offer_sdp(api: Api, body: &[u8]) -> Option<String> {
    if api.legacy() {
        let value: Value = serde_json::from_slice(body).ok()?;
        return value.get("sdp")?.as_str().map(str::to_string);
    }
    std::str::from_utf8(body).ok().map(str::to_string)
}

/// The stream: the legacy envelope's `streamurl`, else `?app=&stream=` or the path.
fn stream_key(req: &Request, api: Api, body: &[u8]) -> Result<StreamKey, String> {
    if api.legacy() && req.method == "POST" {
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("legacy body is not JSON: {e}"))?;
        let url = value.get("streamurl").and_then(Value::as_str).ok_or("legacy body has no streamurl")?;
        return StreamKey::from_url(url).map_err(|e| e.to_string());
    }
    let query = req.query.as_deref();
    if query_param(query, "app").is_none() || query_param(query, "stream").is_none() {
        return Err(format!("{} names no stream; add ?app=APP&stream=STREAM", req.path));
    }
    StreamKey::from_http(req.header("host"), &req.path, query).map_err(|e| e.to_string())
}

/// The answer with its candidates rewritten, and its SDP text.
fn rewrite_answer(api: Api, answer: &[u8], rewrite: impl Fn(&str) -> String) -> (Vec<u8>, Option<String>) {
    if api.legacy() {
        let Ok(mut value) = serde_json::from_slice::<Value>(answer) else {
            return (answer.to_vec(), None);
        };
        let Some(sdp_text) = value.get("sdp").and_then(Value::as_str).map(&rewrite) else {
            return (answer.to_vec(), None);
        };
        value["sdp"] = Value::String(sdp_text.clone());
        return (value.to_string().into_bytes(), Some(sdp_text));
    }
    match std::str::from_utf8(answer) {
        Ok(text) => {
            let new = rewrite(text);
            (new.clone().into_bytes(), Some(new))
        }
        Err(_) => (answer.to_vec(), None),
    }
}

/// An absolute `Location` (`http://origin:1985/rtc/v1/whip/?...`) as a path on the proxy.
fn relative_location(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(at) => rest[at..].to_string(),
            None => "/".to_string(),
        },
        None => location.to_string(),
    }
}

/// The local address a client reached the proxy at, unless unspecified (behind TLS the
/// socket is not the client's: the connection knows).
fn reached_at(client: &TcpStream) -> Option<IpAddr> {
    let local = client.local_addr().ok().or_else(|| crate::shard::conn::current()?.reached());
    let ip = local?.ip();
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::http::{self, Limits, Status};

    fn req(raw: &str) -> Request {
        match http::parse_request(raw.as_bytes(), Limits::default()).unwrap() {
            Status::Complete(r) => r,
            Status::Partial => panic!(),
        }
    }

    #[test]
    fn stream_keys_for_every_api() {
        let whip = req("POST /rtc/v1/whip/?app=live&stream=livestream HTTP/1.1\r\nHost: 127.0.0.1:11985\r\n\r\n");
        assert_eq!(stream_key(&whip, Api::Whip, b"v=0").unwrap().as_str(), "__defaultVhost__/live/livestream");
        let legacy = req("POST /rtc/v1/play/ HTTP/1.1\r\nHost: h\r\n\r\n");
        let body = br#"{"api":"x","streamurl":"webrtc://example.com/live/cam1","sdp":"v=0"}"#;
        assert_eq!(stream_key(&legacy, Api::LegacyPlay, body).unwrap().as_str(), "example.com/live/cam1");
        assert!(stream_key(&legacy, Api::LegacyPlay, b"{}").is_err());
        let bare = req("POST /rtc/v1/whep/ HTTP/1.1\r\n\r\n");
        assert!(stream_key(&bare, Api::Whep, b"").unwrap_err().contains("?app=APP&stream=STREAM"));
        assert_eq!(Api::from_path("/rtc/v1/whip"), Some(Api::Whip));
        assert_eq!(Api::from_path("/rtc/v1/other/"), None);
    }

    #[test]
    fn legacy_answers_are_rewritten_inside_their_json() {
        let answer = br#"{"code":0,"server":"vid-1","sdp":"v=0\r\na=candidate:0 1 udp 2130706431 10.0.0.5 8000 typ host generation 0\r\n","sessionid":"s:c"}"#;
        let rewrite = |s: &str| s.replace("10.0.0.5 8000", "192.0.2.1 18000");
        let (body, sdp_text) = rewrite_answer(Api::LegacyPlay, answer, rewrite);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["sessionid"], "s:c");
        assert!(value["sdp"].as_str().unwrap().contains("192.0.2.1 18000 typ host"));
        assert_eq!(sdp_text.as_deref(), value["sdp"].as_str());
        assert_eq!(
            relative_location("http://10.0.0.5:1985/rtc/v1/whip/?action=delete&token=t"),
            "/rtc/v1/whip/?action=delete&token=t"
        );
        assert_eq!(relative_location("/rtc/v1/whip/?x"), "/rtc/v1/whip/?x");
    }
}
