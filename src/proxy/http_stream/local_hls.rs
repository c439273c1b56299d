//! HLS of local streams (`--local-origin`, `--local-hls-jobs`): the remux job of each local
//! stream (`crate::transcode`, on its own thread) writes its playlist and MPEG-TS segments into
//! `--local-hls-dir`/NAME/ (NAME: [`output_name`]); the shard that takes the request reads them
//! from there through its io_uring, as it serves the ladder ([`super::abr`]).
//!
//! | request | file |
//! |---|---|
//! | `/APP/STREAM.m3u8` of a local stream (or one whose folder is still there) | NAME/[`HLS_PLAYLIST`] |
//! | `/APP/STREAM-N.ts` (N digits) while NAME/STREAM-N.ts exists | that segment |
//!
//! A playlist is asked of [`crate::proxy::access`] like any HLS play; its segments ride on it
//! (their names are in the playlist), as an origin's do in [`super::hls`]. With `--on-play`,
//! `--on-stop` or `--max-sessions-per-stream` a player is asked once and holds a session
//! ([`super::hls_sessions`]): its first request gets the one-variant master that names its
//! token, and its refreshes keep the session alive. A `vhost=` the
//! playlist was asked with is added to the segments' URIs, so they name the same stream. A
//! segment name that is not in a local stream's folder is an HTTP-TS play as before; an HLS
//! request of a relayed stream goes to its origin ([`super::hls`]). Without the cargo feature
//! `transcode` (or with `--local-hls-jobs 0`) a local stream's playlist is a 404 saying why.

use glommio::io::BufferedFile;

use crate::balance::StreamKey;
use crate::balance::stream_key::query_param;
use crate::bridge::{Protocol, Role};
use crate::codec::http::Response;
use crate::codec::m3u8;
use crate::proxy::http::{CORS, Exchange, Next, cors, text};
use crate::shard::Shard;
use crate::transcode::{HLS_PLAYLIST, output_name};

use super::hls_sessions::{self as sessions, NotKept};
use super::static_files::send_file;

/// Most bytes of a playlist read (6 segments take well under 1 KiB).
const MAX_PLAYLIST: usize = 64 * 1024;

/// Whether this process writes HLS of local streams at all.
fn enabled(shard: &Shard) -> bool {
    shard.config.local_origin != crate::config::local::LocalOrigin::Off
}

/// Why a local stream has no playlist to serve, when it cannot have one.
fn unavailable(shard: &Shard) -> Option<&'static str> {
    if !cfg!(feature = "transcode") {
        Some(
            "this binary is built without the cargo feature `transcode` (libavformat), which HLS of local streams needs",
        )
    } else if shard.config.local_hls.max_jobs == 0 {
        Some("HLS of local streams is off (--local-hls-jobs 0)")
    } else {
        None
    }
}

/// A playlist request: `None` when `key` is neither a local stream nor has a folder (the
/// caller asks its origin), else the answer sent.
pub async fn playlist(ex: &Exchange<'_>, key: &StreamKey) -> Option<Next> {
    let shard = ex.shard;
    if !enabled(shard) {
        return None;
    }
    let local = crate::proxy::local::owner(key).is_some();
    if let Some(why) = unavailable(shard) {
        return match local {
            true => Some(ex.reply(cors(text(404, &format!("no HLS for the local stream {key}: {why}")))).await),
            false => None,
        };
    }
    let name = output_name(key)?;
    let path = shard.config.local_hls.dir.join(&name).join(HLS_PLAYLIST);
    let file = match BufferedFile::open(&path).await {
        Ok(file) => file,
        Err(_) if local => {
            let why = format!("no HLS for the local stream {key} yet: its first segment is not written");
            return Some(ex.reply(cors(text(404, &why))).await);
        }
        Err(_) => return None,
    };
    let token = query_param(ex.req.query.as_deref(), sessions::PARAM);
    let alive = token.as_deref().is_some_and(|t| sessions::touch(t, key));
    let admitted = match alive {
        true => None,
        false => match super::admit(ex, key, Protocol::Hls).await {
            Ok(admitted) => Some(admitted),
            Err(refused) => {
                let _ = file.close().await;
                return Some(ex.reply(refused).await);
            }
        },
    };
    // Held for this request only, unless kept as the player's session.
    let _admitted = match admitted {
        Some(admitted) if sessions::wanted(shard) => {
            let kept = sessions::open(shard, token.clone(), key, admitted);
            match (kept, token.is_some()) {
                (Err(NotKept::Full(_)), _) => {
                    let _ = file.close().await;
                    return Some(ex.reply(cors(text(503, "too many HLS sessions"))).await);
                }
                (Ok(new), false) => {
                    let _ = file.close().await;
                    let name = ex.req.path.rsplit('/').next().unwrap_or_default();
                    let wrapper = sessions::wrapper(name, ex.req.query.as_deref(), &new);
                    let response = Response::new(200, "application/vnd.apple.mpegurl", wrapper)
                        .with_header("Cache-Control", "no-cache");
                    log::debug!("hls {} {key} from {} (local): new session", ex.req.path, ex.peer);
                    return Some(ex.reply(cors(response)).await);
                }
                (Err(NotKept::Taken(admitted)), _) => Some(*admitted),
                (Ok(_), true) => None,
            }
        }
        other => other,
    };
    let read = file.read_at(0, MAX_PLAYLIST).await.map(|r| r.to_vec());
    let _ = file.close().await;
    let body = match read {
        Ok(body) => with_vhost(body, ex.req.query.as_deref()),
        Err(e) => {
            log::warn!("hls {key}: cannot read {}: {e}", path.display());
            return Some(ex.reply(cors(text(500, "cannot read the playlist"))).await);
        }
    };
    let session = shard.open_session(key, Protocol::Hls, Role::Play).await;
    session.traffic.bytes_out.set(body.len() as u64);
    log::debug!("hls {} {key} from {} (local): {} bytes", ex.req.path, ex.peer, body.len());
    let response = Response::new(200, "application/vnd.apple.mpegurl", body).with_header("Cache-Control", "no-cache");
    Some(ex.reply(cors(response)).await)
}

/// The playlist with the request's `vhost=` added to its URIs (when it is a plain host name).
fn with_vhost(body: Vec<u8>, query: Option<&str>) -> Vec<u8> {
    let Some(vhost) = query_param(query, "vhost") else { return body };
    let safe = !vhost.is_empty() && vhost.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    match safe {
        true => m3u8::add_query_param(&body, "vhost", &vhost).unwrap_or(body),
        false => body,
    }
}

/// A segment's stream and file name: `/APP/STREAM-N.ts` is STREAM's segment `STREAM-N.ts`.
fn segment_of(host: Option<&str>, path: &str, query: Option<&str>) -> Option<(StreamKey, String)> {
    let stem = path.strip_suffix(".ts")?;
    let (stream_path, number) = stem.rsplit_once('-')?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let file = path.rsplit('/').next()?;
    let safe = !file.starts_with('.') && file.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
    if !safe {
        return None;
    }
    let key = StreamKey::from_http(host, stream_path, query).ok()?;
    Some((key, file.to_string()))
}

/// A segment request: `None` when it names no segment of a local stream's folder (the caller
/// plays it as HTTP-TS), else the answer sent.
pub async fn segment(ex: &Exchange<'_>) -> Option<Next> {
    let shard = ex.shard;
    if !enabled(shard) || unavailable(shard).is_some() {
        return None;
    }
    let (key, file) = segment_of(ex.req.header("host"), &ex.req.path, ex.req.query.as_deref())?;
    let path = shard.config.local_hls.dir.join(output_name(&key)?).join(&file);
    let opened = BufferedFile::open(&path).await.ok()?;
    let session = shard.open_session(&key, Protocol::Hls, Role::Play).await;
    let extra: Vec<(&str, &[u8])> = CORS.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    let next = send_file(ex, &opened, "video/mp2t", &extra).await;
    session.traffic.bytes_out.set(opened.file_size().await.unwrap_or(0));
    let _ = opened.close().await;
    log::debug!("hls {} {key} from {} (local segment)", ex.req.path, ex.peer);
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_name_their_stream() {
        let seg = |path: &str, query: Option<&str>| {
            segment_of(Some("127.0.0.1:8080"), path, query).map(|(k, f)| (k.as_str().to_string(), f))
        };
        assert_eq!(
            seg("/live/cam-1767225600.ts", None),
            Some(("__defaultVhost__/live/cam".into(), "cam-1767225600.ts".into()))
        );
        assert_eq!(
            seg("/live/my-cam-12.ts", Some("vhost=example.com")),
            Some(("example.com/live/my-cam".into(), "my-cam-12.ts".into()))
        );
        assert_eq!(seg("/live/cam.ts", None), None, "HTTP-TS of cam");
        assert_eq!(seg("/live/cam-.ts", None), None);
        assert_eq!(seg("/live/cam-12a.ts", None), None);
        assert_eq!(seg("/live/cam-1.flv", None), None);
    }

    #[test]
    fn a_vhost_follows_the_segments() {
        let list = b"#EXTM3U\n#EXTINF:2.0,\ncam-1.ts\n".to_vec();
        assert_eq!(
            with_vhost(list.clone(), Some("vhost=example.com")),
            b"#EXTM3U\n#EXTINF:2.0,\ncam-1.ts?vhost=example.com\n"
        );
        assert_eq!(with_vhost(list.clone(), None), list);
        assert_eq!(with_vhost(list.clone(), Some("vhost=a%26b")), list, "not a plain host name");
    }
}
