//! Stream keys: every protocol reduces a stream to `"<vhost>/<app>/<stream>"` so that all of
//! them reach the same origin.
//!
//! The vhost is the URL's host when it contains a dot and is not an IPv4 literal, else
//! `__defaultVhost__` (SRS's rule, so an SRS origin and the proxy agree); ports and queries
//! never count. An HTTP `Host` header without a port uses its host as RTMP does, so an HTTP
//! player and an RTMP publisher of one stream always share its key, and a tcUrl with a query
//! does not swallow the stream name. Hosts are lowercased, percent-escapes
//! in paths are decoded and repeated slashes collapsed, so an RTMP stream name and the path of
//! an HTTP request for the same stream give the same key. A `vhost=` query parameter (SRS's way
//! of naming a vhost on an IP address) takes the place of the host.

use std::fmt;

/// The vhost used when the host names none.
pub const DEFAULT_VHOST: &str = "__defaultVhost__";
/// Longest key accepted; anything longer comes from a misbehaving client.
pub const MAX_KEY_LEN: usize = 1024;

/// A normalized stream key, `vhost/app/.../stream`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey(String);

/// Why no stream key could be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a URL with a scheme")]
    NotAUrl(String),
    #[error("{0:?} names no app and stream")]
    NoStream(String),
    #[error("stream key longer than {MAX_KEY_LEN} bytes")]
    TooLong,
}

impl StreamKey {
    /// Builds a key from a host (with or without port; `None` for none) and a path
    /// `/app/stream`.
    pub fn new(host: Option<&str>, path: &str) -> Result<Self, KeyError> {
        let path = normalize_path(path);
        if path.matches('/').count() < 2 {
            return Err(KeyError::NoStream(path));
        }
        let key = format!("{}{path}", vhost_of(host.unwrap_or("")));
        if key.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
        Ok(StreamKey(key))
    }

    /// The key of a stream URL, `scheme://host[:port]/app/stream[?query]`.
    pub fn from_url(url: &str) -> Result<Self, KeyError> {
        let parts = UrlParts::parse(url).ok_or_else(|| KeyError::NotAUrl(url.into()))?;
        let host = query_param(parts.query, "vhost").unwrap_or_else(|| parts.host.to_string());
        Self::new(Some(&host), parts.path)
    }

    /// RTMP: the `connect` tcUrl and the `publish`/`play` stream name (whose query is ignored
    /// except for `vhost=`).
    pub fn from_rtmp(tc_url: &str, stream_name: &str) -> Result<Self, KeyError> {
        let tc = UrlParts::parse(tc_url).ok_or_else(|| KeyError::NotAUrl(tc_url.into()))?;
        let (name, name_query) = split_query(stream_name);
        let vhost = query_param(name_query, "vhost").or_else(|| query_param(tc.query, "vhost"));
        let host = vhost.unwrap_or_else(|| tc.host.to_string());
        Self::new(Some(&host), &format!("{}/{name}", tc.path))
    }

    /// HTTP: the `Host` header, the request path (`/app/stream.ext`) and its query; `?app=`
    /// and `?stream=` replace the path (as WHIP/WHEP URLs name the stream).
    pub fn from_http(host_header: Option<&str>, path: &str, query: Option<&str>) -> Result<Self, KeyError> {
        let (app, stream) = (query_param(query, "app"), query_param(query, "stream"));
        let path = if app.is_some() || stream.is_some() {
            format!("/{}/{}", app.unwrap_or_default(), stream.unwrap_or_default())
        } else {
            strip_extension(path).to_string()
        };
        let host = query_param(query, "vhost").or_else(|| host_header.map(str::to_string));
        Self::new(host.as_deref(), &path)
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The vhost for a host (with or without port): the host itself when it has a dot and is not
/// an IPv4 literal, else [`DEFAULT_VHOST`].
pub fn vhost_of(host: &str) -> String {
    let host = strip_port(host.trim()).to_ascii_lowercase();
    if host.is_empty() || !host.contains('.') || host.parse::<std::net::Ipv4Addr>().is_ok() {
        DEFAULT_VHOST.to_string()
    } else {
        host
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host; // an IPv6 literal: no dot-free test needed, it has no dot anyway
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The pieces of `scheme://authority/path?query#fragment` this module needs.
struct UrlParts<'a> {
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    fn parse(url: &'a str) -> Option<Self> {
        let (scheme, rest) = url.trim().split_once("://")?;
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
            return None;
        }
        let rest = rest.split('#').next().unwrap_or("");
        let (before_query, query) = split_query(rest);
        let (authority, path) = match before_query.find('/') {
            Some(at) => before_query.split_at(at),
            None => (before_query, ""),
        };
        let host = authority.rsplit('@').next().unwrap_or(authority);
        Some(UrlParts { host, path, query })
    }
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (s, None),
    }
}

/// The decoded value of `name` in a query string, if present and non-empty.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(&v.replace('+', " ")))
        .filter(|v| !v.is_empty())
}

/// The path without the extension of its last segment (Go's `path.Ext`).
fn strip_extension(path: &str) -> &str {
    let last_slash = path.rfind('/').map_or(0, |i| i + 1);
    match path[last_slash..].rfind('.') {
        Some(dot) => &path[..last_slash + dot],
        None => path,
    }
}

/// Decodes `%XX` escapes; malformed escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes escapes, collapses repeated slashes, drops a trailing slash, ensures a leading one.
fn normalize_path(path: &str) -> String {
    let decoded = percent_decode(path);
    let mut out = String::with_capacity(decoded.len() + 1);
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
    }
    out
}

#[cfg(test)]
mod tests;
