//! The dashboard: a page at `/` and `/dashboard/` of the System API that shows origins,
//! streams and shards live, plays each stream (HLS with hls.js, HTTP-FLV with mpegts.js,
//! WebRTC with WHEP in the browser, and a transcoded stream's ladder with hls.js) and offers the operator's actions (drain, unregister,
//! disconnect a stream's sessions).
//!
//! Its files (`src/control/dashboard/`: the page, its script and style, and the two players
//! pinned from the npm registry with their licences; see the README there) are built into the
//! binary, so nothing is fetched at run time and no other web server is needed. The page holds
//! no data: it polls the JSON routes the API tests check (`/api/v1/origins`, `/streams`,
//! `/shards`, and [`listeners`] for the stream listeners' URLs) once a second, with the bearer
//! token the operator typed when auth is on (the page is told whether it is, and asks for the
//! token before its first request). The files themselves need no token.
//!
//! Every file goes out with a Content-Security-Policy ([`policy`]) that allows scripts, styles
//! and images from this server only, and connections to this server and to the two stream
//! listeners the players use (HTTP stream, HTTP API): nothing remote.

use serde_json::json;

use crate::codec::http::{Request, Response};
use crate::config::{Config, ListenAddr};

/// hls.js, pinned from the npm registry (see `dashboard/README.md`).
pub const HLS_JS: &str = "hls-1.7.4.min.js";
/// mpegts.js, pinned from the npm registry.
pub const MPEGTS_JS: &str = "mpegts-1.8.2.min.js";

/// One built-in file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Versioned names are kept by browsers for a day; the rest is asked again each load.
    immutable: bool,
}

const INDEX: &[u8] = include_bytes!("dashboard/index.html");

const ASSETS: &[Asset] = &[
    Asset {
        path: "/dashboard/dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/dashboard.js"),
        immutable: false,
    },
    Asset {
        path: "/dashboard/dashboard.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("dashboard/dashboard.css"),
        immutable: false,
    },
    Asset {
        path: "/dashboard/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("dashboard/favicon.svg"),
        immutable: false,
    },
    Asset {
        path: "/dashboard/vendor/hls-1.7.4.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/vendor/hls-1.7.4.min.js"),
        immutable: true,
    },
    Asset {
        path: "/dashboard/vendor/mpegts-1.8.2.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/vendor/mpegts-1.8.2.min.js"),
        immutable: true,
    },
];

/// Whether `path` is one of the dashboard's (the router sends those here).
pub fn owns(path: &str) -> bool {
    path == "/" || path == "/dashboard" || path.starts_with("/dashboard/")
}

/// Answers a request for a dashboard path (see [`owns`]).
pub fn serve(config: &Config, req: &Request) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        let resp = super::http_server::error_response(405, "method not allowed; use GET");
        return resp.with_header("Allow", "GET, HEAD");
    }
    let found = match req.path.as_str() {
        "/dashboard" => return Response::new(301, "text/plain", "").with_header("Location", "/dashboard/"),
        "/" | "/dashboard/" | "/dashboard/index.html" => Some((index(config), false)),
        path => {
            ASSETS.iter().find(|a| a.path == path).map(|a| (Response::new(200, a.content_type, a.body), a.immutable))
        }
    };
    let Some((resp, immutable)) = found else {
        let resp = super::http_server::error_response(404, &format!("no dashboard file {}", req.path));
        return secured(resp, config, req);
    };
    let cache = if immutable { "public, max-age=86400" } else { "no-cache" };
    secured(resp.with_header("Cache-Control", cache), config, req)
}

/// The page, told whether the API wants a token (so it asks for one before its first request
/// instead of collecting 401s).
fn index(config: &Config) -> Response {
    let auth = if config.register_token.is_some() { "on" } else { "off" };
    let page = String::from_utf8_lossy(INDEX).replacen("data-auth=\"AUTH\"", &format!("data-auth=\"{auth}\""), 1);
    Response::new(200, "text/html; charset=utf-8", page)
}

fn secured(resp: Response, config: &Config, req: &Request) -> Response {
    resp.with_header("Content-Security-Policy", policy(config, req))
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Referrer-Policy", "no-referrer")
        .with_header("X-Frame-Options", "DENY")
}

/// The page's Content-Security-Policy: its own scripts, styles and images only; connections
/// to itself and to the stream listeners' URLs ([`stream_urls`]); media from those through
/// blob URLs (the players feed Media Source Extensions); no frames, objects or forms elsewhere.
pub fn policy(config: &Config, req: &Request) -> String {
    let mut connect = String::from("'self'");
    for url in stream_urls(config, req).into_iter().flatten() {
        connect.push(' ');
        connect.push_str(&url);
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src {connect}; media-src 'self' blob:; worker-src 'self' blob:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// The URLs a browser reaches the HTTP stream and HTTP API listeners at: the host it reached
/// this server at (its `Host` header) when a listener is bound to every address, else the
/// listener's own address. `None` where the `Host` header is missing or not a plain host name
/// or address (it goes into a header, so nothing else is let through).
pub fn stream_urls(config: &Config, req: &Request) -> [Option<String>; 2] {
    let host = req.header("host").and_then(host_of);
    let url = |listen: &ListenAddr| {
        let addr = listen.0;
        let name = if addr.ip().is_unspecified() {
            host.clone()?
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        Some(format!("http://{name}:{}", addr.port()))
    };
    [url(&config.listen.http_stream), url(&config.listen.http_api)]
}

/// The host of a `Host` header value without its port: a name of letters, digits, `-` and `.`,
/// or a bracketed IPv6 address.
fn host_of(value: &str) -> Option<String> {
    let value = value.trim();
    let host = if let Some(rest) = value.strip_prefix('[') {
        let end = rest.find(']')?;
        let inner = &rest[..end];
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        format!("[{inner}]")
    } else {
        let name = value.rsplit_once(':').map_or(value, |(h, _)| h);
        let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        plain.then(|| name.to_ascii_lowercase())?
    };
    (host.len() <= 255).then_some(host)
}

/// `GET /api/v1/listeners`: every shard listener's address (`null` for a TLS one that is off),
/// and the URLs a browser reaches the
/// HTTP stream and HTTP API listeners at (`null` when it cannot be told, see [`stream_urls`]).
pub fn listeners(config: &Config, req: &Request) -> Response {
    let l = &config.listen;
    let [http_stream, http_api] = stream_urls(config, req);
    Response::json(
        200,
        &json!({
            "code": 0,
            "listeners": {
                "rtmp": l.rtmp.0.to_string(),
                "http_stream": l.http_stream.0.to_string(),
                "http_api": l.http_api.0.to_string(),
                "webrtc": l.webrtc.0.to_string(),
                "srt": l.srt.0.to_string(),
                "rtmps": config.tls.rtmps.map(|a| a.0.to_string()),
                "https_stream": config.tls.https_stream.map(|a| a.0.to_string()),
                "https_api": config.tls.https_api.map(|a| a.0.to_string()),
            },
            "urls": { "http_stream": http_stream, "http_api": http_api },
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_values_become_hosts_or_nothing() {
        assert_eq!(host_of("127.0.0.1:12025").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_of("Proxy.Example.com").as_deref(), Some("proxy.example.com"));
        assert_eq!(host_of("[::1]:12025").as_deref(), Some("[::1]"));
        for bad in ["", "a b:1", "x;script-src *", "[zz]:1", "[::1", "h\"x"] {
            assert_eq!(host_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_asset_is_built_in_and_the_page_names_only_built_in_files() {
        let page = std::str::from_utf8(INDEX).unwrap();
        for asset in ASSETS {
            assert!(!asset.body.is_empty(), "{}", asset.path);
        }
        for link in page.split(['"', '\'']).filter(|s| s.starts_with("/dashboard/")) {
            assert!(ASSETS.iter().any(|a| a.path == link), "the page names {link}, which is not built in");
        }
        assert!(!page.contains("http://") && !page.contains("https://"), "the page names a remote URL");
        assert!(!page.contains("<script>") && !page.contains("style="), "inline script or style (the CSP refuses it)");
        assert!(page.contains("data-auth=\"AUTH\""), "the place index() fills in");
    }
}
