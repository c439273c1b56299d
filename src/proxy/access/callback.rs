//! HTTP callbacks in SRS's form: `POST` a JSON object naming the action, the client and the
//! stream to a configured URL; a session is allowed when the answer is `200` with a body of
//! `{"code": 0}` (or a bare `0`), as SRS's own `http_hooks` read it. The request goes out on
//! the shard that holds the session, over the same HTTP/1 client the proxy asks origins with
//! ([`crate::proxy::http::origin`]), `Connection: close`, within one timeout for the dial,
//! the request and the whole answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::balance::StreamKey;
use crate::bridge::{Protocol, Role};
use crate::codec::http::Request;
use crate::config::access::CallbackUrl;
use crate::proxy::http::origin;

/// Largest callback answer read (SRS's are a few bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// What a callback names.
#[derive(Debug, Clone)]
pub struct Hook {
    pub action: &'static str,
    pub client_id: String,
    pub peer: SocketAddr,
    pub key: StreamKey,
    pub protocol: Protocol,
    /// The stream's query, without `?`.
    pub param: String,
    /// RTMP's `connect` tcUrl; built from the key for the other protocols.
    pub tc_url: Option<String>,
}

/// The action of the callback asked before a session of `role` starts, and of the one told
/// when it ends.
pub fn actions(role: Role) -> (&'static str, &'static str) {
    match role {
        Role::Publish => ("on_publish", "on_unpublish"),
        Role::Play => ("on_play", "on_stop"),
    }
}

/// The JSON body SRS sends for `hook`.
pub fn body(hook: &Hook) -> Vec<u8> {
    let key = hook.key.as_str();
    let (vhost, path) = key.split_once('/').unwrap_or(("", key));
    let (app, stream) = path.rsplit_once('/').unwrap_or(("", path));
    let param = if hook.param.is_empty() { String::new() } else { format!("?{}", hook.param) };
    let scheme = match hook.protocol {
        Protocol::Rtmp => "rtmp",
        Protocol::Srt => "srt",
        Protocol::WebRtc => "webrtc",
        _ => "http",
    };
    let tc_url = hook.tc_url.clone().unwrap_or_else(|| format!("{scheme}://{vhost}/{app}"));
    let value = json!({
        "server_id": "streamgate",
        "action": hook.action,
        "client_id": hook.client_id,
        "ip": hook.peer.ip().to_string(),
        "vhost": vhost,
        "app": app,
        "tcUrl": tc_url,
        "stream": stream,
        "param": param,
        "stream_url": format!("/{app}/{stream}"),
        "protocol": hook.protocol.name(),
    });
    value.to_string().into_bytes()
}

/// Whether an answer allows the session; if not, why.
pub fn allowed(status: u16, answer: &[u8]) -> Result<(), String> {
    if status != 200 {
        return Err(format!("answered HTTP {status}"));
    }
    let value: Value = serde_json::from_slice(answer).map_err(|_| "answered 200 without a JSON body".to_string())?;
    let code = match &value {
        Value::Number(n) => n.as_i64(),
        Value::Object(o) => o.get("code").and_then(Value::as_i64),
        _ => None,
    };
    match code {
        Some(0) => Ok(()),
        Some(code) => Err(format!("answered code {code}")),
        None => Err("answered 200 without a code".to_string()),
    }
}

/// Why a callback got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error(transparent)]
    Http(#[from] origin::OriginError),
    #[error("answer longer than {MAX_ANSWER} bytes")]
    TooLong,
}

/// Posts `body` to `url` and reads the answer, all within `timeout`: its status and body.
pub async fn post(
    url: &CallbackUrl,
    body: &[u8],
    peer: SocketAddr,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), CallbackError> {
    let deadline = Instant::now() + timeout;
    let (path, query) = match url.path.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (url.path.clone(), None),
    };
    let headers = vec![
        ("Host".to_string(), url.host.clone().into_bytes()),
        ("Content-Type".to_string(), b"application/json".to_vec()),
        ("Content-Length".to_string(), body.len().to_string().into_bytes()),
    ];
    let req = Request { method: "POST".into(), path, query, version: 1, headers, head_len: 0 };
    let mut answered = origin::request(url.addr, &req, body, peer, false, timeout).await?;
    let answer = origin::read_body(&mut answered, "POST", deadline).await?;
    if answer.len() > MAX_ANSWER {
        return Err(CallbackError::TooLong);
    }
    Ok((answered.head.status, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_srs_fields() {
        let hook = Hook {
            action: "on_publish",
            client_id: "0-7".into(),
            peer: "192.0.2.9:5000".parse().unwrap(),
            key: StreamKey::from_url("rtmp://example.com/live/sub/cam").unwrap(),
            protocol: Protocol::Rtmp,
            param: "token=ab&expires=9".into(),
            tc_url: Some("rtmp://example.com/live/sub".into()),
        };
        let v: Value = serde_json::from_slice(&body(&hook)).unwrap();
        assert_eq!(v["action"], "on_publish");
        assert_eq!(v["client_id"], "0-7");
        assert_eq!(v["ip"], "192.0.2.9");
        assert_eq!(v["vhost"], "example.com");
        assert_eq!(v["app"], "live/sub");
        assert_eq!(v["stream"], "cam");
        assert_eq!(v["param"], "?token=ab&expires=9");
        assert_eq!(v["stream_url"], "/live/sub/cam");
        assert_eq!(v["tcUrl"], "rtmp://example.com/live/sub");
        let play = Hook { action: "on_play", protocol: Protocol::HttpFlv, param: String::new(), tc_url: None, ..hook };
        let v: Value = serde_json::from_slice(&body(&play)).unwrap();
        assert_eq!((v["param"].as_str(), v["protocol"].as_str()), (Some(""), Some("http_flv")));
    }

    #[test]
    fn only_200_with_code_0_allows() {
        assert_eq!(allowed(200, br#"{"code":0}"#), Ok(()));
        assert_eq!(allowed(200, b"0"), Ok(()));
        assert_eq!(allowed(200, br#"{"code":0,"data":{}}"#), Ok(()));
        assert!(allowed(200, br#"{"code":403}"#).unwrap_err().contains("403"));
        assert!(allowed(403, br#"{"code":0}"#).is_err());
        assert!(allowed(200, b"").is_err());
        assert!(allowed(200, b"ok").is_err());
        assert!(allowed(200, br#"{"code":"0"}"#).is_err());
        assert!(allowed(200, b"[0]").is_err());
    }
}
