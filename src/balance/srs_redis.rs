//! What the SRS proxy keeps in Redis, byte for byte, so a fleet may mix streamgate and SRS
//! proxies on one Redis (`--load-balancer redis`): key names, JSON shapes and TTLs.
//!
//! | key (after `<prefix>:` when a prefix is set) | value | TTL |
//! |---|---|---|
//! | `srs-proxy-server:<id>` | the origin record, [`server_json`] | the origin TTL |
//! | `srs-proxy-all-servers` | JSON array of the full server key names | none |
//! | `srs-proxy-url:<stream key>` | the pinned origin's full server key name | none |
//! | `srs-proxy-hls:<stream key>`, `srs-proxy-spbhid:<id>` | `{"spbhid","stream_url","full_url"}` | [`SESSION_TTL`] |
//! | `srs-proxy-rtc:<stream key>`, `srs-proxy-ufrag:<username>` | `{"stream_url","ufrag"}` | [`SESSION_TTL`] |
//!
//! Pure data: building names and JSON, reading them back. The control thread's Redis client
//! (`control::redis`) does the I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::endpoint::Endpoint;
use super::origin::{OriginId, RegisterError, Registration};
use super::stream_key::StreamKey;

/// TTL of the HLS and WebRTC session keys (the SRS proxy's `HLSAliveDuration` and
/// `RTCAliveDuration`).
pub const SESSION_TTL: Duration = Duration::from_secs(120);

/// Key names, with the optional `PROXY_REDIS_KEY_PREFIX`.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` as `PROXY_REDIS_KEY_PREFIX` gives it (`None` or empty: no prefix).
    pub fn new(prefix: Option<&str>) -> Keys {
        Keys { prefix: prefix.filter(|p| !p.is_empty()).map(|p| format!("{p}:")).unwrap_or_default() }
    }

    fn key(&self, name: &str, arg: &str) -> String {
        format!("{}{name}{arg}", self.prefix)
    }

    pub fn server(&self, id: &OriginId) -> String {
        self.key("srs-proxy-server:", &id.0)
    }

    /// The start of every server key name (an id follows it).
    pub fn server_prefix(&self) -> String {
        self.key("srs-proxy-server:", "")
    }

    pub fn all_servers(&self) -> String {
        self.key("srs-proxy-all-servers", "")
    }

    pub fn url(&self, key: &StreamKey) -> String {
        self.key("srs-proxy-url:", key.as_str())
    }

    pub fn hls(&self, key: &StreamKey) -> String {
        self.key("srs-proxy-hls:", key.as_str())
    }

    pub fn spbhid(&self, id: &str) -> String {
        self.key("srs-proxy-spbhid:", id)
    }

    /// The start of every `spbhid` key name.
    pub fn spbhid_prefix(&self) -> String {
        self.key("srs-proxy-spbhid:", "")
    }

    pub fn rtc(&self, key: &StreamKey) -> String {
        self.key("srs-proxy-rtc:", key.as_str())
    }

    pub fn ufrag(&self, username: &str) -> String {
        self.key("srs-proxy-ufrag:", username)
    }
}

/// The server record as the SRS proxy stores it (every field omitted when empty).
#[derive(Debug, Default, Serialize, Deserialize)]
struct ServerRecord {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    device_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    server_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    service_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rtmp: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    http: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    api: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    srt: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rtc: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    update_at: String,
}

fn strings(list: &[Endpoint]) -> Vec<String> {
    list.iter().map(Endpoint::to_string).collect()
}

/// The origin record for `srs-proxy-server:<id>`, heard at `heard`.
pub fn server_json(reg: &Registration, heard: SystemTime) -> String {
    let record = ServerRecord {
        ip: reg.ip.to_string(),
        device_id: reg.device_id.clone(),
        server_id: reg.server.clone(),
        service_id: reg.service.clone(),
        pid: reg.pid.clone(),
        rtmp: strings(&reg.rtmp),
        http: strings(&reg.http),
        api: strings(&reg.api),
        srt: strings(&reg.srt),
        rtc: strings(&reg.rtc),
        update_at: rfc3339(heard),
    };
    serde_json::to_string(&record).unwrap_or_default()
}

/// Reads an origin record (written by streamgate or the SRS proxy): the registration, checked
/// like any heartbeat, and when it was heard (`None` when `update_at` is missing or unreadable).
pub fn parse_server(json: &[u8]) -> Result<(Registration, Option<SystemTime>), RegisterError> {
    let record: ServerRecord = serde_json::from_slice(json).map_err(|e| RegisterError::Parse(e.to_string()))?;
    let body = serde_json::json!({
        "device_id": record.device_id, "ip": record.ip, "server": record.server_id,
        "service": record.service_id, "pid": record.pid, "rtmp": record.rtmp, "http": record.http,
        "api": record.api, "srt": record.srt, "rtc": record.rtc,
    });
    let reg = Registration::from_json(body.to_string().as_bytes())?;
    Ok((reg, parse_rfc3339(&record.update_at)))
}

/// An HLS session as the SRS proxy stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HlsRecord {
    pub spbhid: String,
    pub stream_url: String,
    #[serde(default)]
    pub full_url: String,
}

impl HlsRecord {
    /// The record of HLS id `id` for `key`; `full_url` as the SRS proxy writes it
    /// (`http://<vhost>/<app>/<stream>.m3u8`).
    pub fn new(id: &str, key: &StreamKey) -> HlsRecord {
        HlsRecord { spbhid: id.into(), stream_url: key.as_str().into(), full_url: format!("http://{key}.m3u8") }
    }
}

/// A WebRTC session as the SRS proxy stores it: its stream and its ICE username.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcRecord {
    pub stream_url: String,
    pub ufrag: String,
}

/// The stream key a stored `stream_url` (`vhost/app/stream`) names.
pub fn stream_key(stream_url: &str) -> Option<StreamKey> {
    let (vhost, path) = stream_url.split_once('/')?;
    StreamKey::new(Some(vhost), &format!("/{path}")).ok().filter(|k| k.as_str() == stream_url)
}

/// `2026-01-01T00:00:00.123456789Z`, as Go writes a UTC `time.Time`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, secs) = ((d.as_secs() / 86_400) as i64, d.as_secs() % 86_400);
    let (y, m, day) = civil_from_days(days);
    let (h, min, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{y:04}-{m:02}-{day:02}T{h:02}:{min:02}:{s:02}.{:09}Z", d.subsec_nanos())
}

/// Reads an RFC 3339 UTC time (`Z`, or a numeric offset), fraction optional.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d, h, min, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = s.get(19..)?;
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let text = format!("{:0<9}", &frac[..digits.min(9)]);
        nanos = text.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest.get(1..3)?.parse::<i64>().ok()? * 3600 + rest.get(4..6)?.parse::<i64>().ok()? * 60)
        }
    };
    let secs = days_from_civil(y, m, d) * 86_400 + h * 3600 + min * 60 + sec - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server record in the SRS proxy's shape (every field it writes).
    const SRS_SERVER: &str = r#"{"ip":"1.2.3.4","device_id":"dev-x","server_id":"srv-abc","service_id":"svc-1","pid":"12345","rtmp":["1935"],"http":["8080"],"api":["1985"],"srt":["10080"],"rtc":["8000"],"update_at":"2026-01-01T00:00:00.123456789Z"}"#;

    #[test]
    fn key_names_with_and_without_prefix() {
        let key = StreamKey::from_url("rtmp://h/live/s").unwrap();
        let id = OriginId("vid-a-b-1".into());
        let plain = Keys::new(None);
        assert_eq!(plain.server(&id), "srs-proxy-server:vid-a-b-1");
        assert_eq!(plain.all_servers(), "srs-proxy-all-servers");
        assert_eq!(plain.url(&key), "srs-proxy-url:__defaultVhost__/live/s");
        assert_eq!(plain.hls(&key), "srs-proxy-hls:__defaultVhost__/live/s");
        assert_eq!(plain.spbhid("s"), "srs-proxy-spbhid:s");
        assert_eq!(plain.rtc(&key), "srs-proxy-rtc:__defaultVhost__/live/s");
        assert_eq!(plain.ufrag("a:b"), "srs-proxy-ufrag:a:b");
        let prefixed = Keys::new(Some("fleet"));
        assert_eq!(prefixed.server(&id), "fleet:srs-proxy-server:vid-a-b-1");
        assert_eq!(prefixed.all_servers(), "fleet:srs-proxy-all-servers");
        assert_eq!(Keys::new(Some("")).all_servers(), "srs-proxy-all-servers");
    }

    #[test]
    fn the_reference_server_record_reads_and_writes_back_the_same() {
        let (reg, heard) = parse_server(SRS_SERVER.as_bytes()).unwrap();
        assert_eq!(reg.id().0, "srv-abc-svc-1-12345");
        assert_eq!((reg.device_id.as_str(), reg.rtmp[0].port, reg.rtc[0].port), ("dev-x", 1935, 8000));
        let heard = heard.unwrap();
        assert_eq!(rfc3339(heard), "2026-01-01T00:00:00.123456789Z");
        assert_eq!(server_json(&reg, heard), SRS_SERVER, "the same bytes, field order included");
        let lean = r#"{"ip":"10.0.0.1","server_id":"s","service_id":"v","pid":"1","rtmp":["udp://0.0.0.0:1935","tcp://:19350"]}"#;
        let (reg, heard) = parse_server(lean.as_bytes()).unwrap();
        assert_eq!((reg.rtmp.len(), heard), (2, None));
        assert!(!server_json(&reg, UNIX_EPOCH).contains("device_id"), "empty fields are omitted as in Go");
        assert!(parse_server(br#"{"ip":"10.0.0.1"}"#).unwrap_err().to_string().contains("empty server"));
    }

    #[test]
    fn hls_and_rtc_records() {
        let key = StreamKey::from_url("rtmp://h/live/s").unwrap();
        let hls = HlsRecord::new("0123abcd", &key);
        let json = serde_json::to_string(&hls).unwrap();
        assert_eq!(
            json,
            r#"{"spbhid":"0123abcd","stream_url":"__defaultVhost__/live/s","full_url":"http://__defaultVhost__/live/s.m3u8"}"#
        );
        let srs: HlsRecord = serde_json::from_str(
            r#"{"spbhid":"a1b2c3d","stream_url":"example.com/live/x","full_url":"http://example.com/live/x.m3u8"}"#,
        )
        .unwrap();
        assert_eq!(stream_key(&srs.stream_url).unwrap().as_str(), "example.com/live/x");
        let rtc = serde_json::to_string(&RtcRecord { stream_url: key.to_string(), ufrag: "a:b".into() }).unwrap();
        assert_eq!(rtc, r#"{"stream_url":"__defaultVhost__/live/s","ufrag":"a:b"}"#);
        assert_eq!(stream_key("nokey"), None);
        assert_eq!(stream_key("Example.com/live/x"), None, "a stream_url is already a normalized key");
    }

    #[test]
    fn times_round_trip() {
        for text in
            ["1970-01-01T00:00:00.000000000Z", "2000-02-29T23:59:59.999999999Z", "2026-12-31T12:00:00.000000001Z"]
        {
            assert_eq!(rfc3339(parse_rfc3339(text).unwrap()), text);
        }
        let offset = parse_rfc3339("2026-01-01T02:00:00+02:00").unwrap();
        assert_eq!(rfc3339(offset), "2026-01-01T00:00:00.000000000Z");
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00.5Z").unwrap(),
            parse_rfc3339("2026-01-01T00:00:00.500Z").unwrap()
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339(""), None);
    }
}
