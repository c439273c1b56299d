//! The transcoded ladders (`--transcode on`), served from `--transcode-dir` by the shard that
//! took the request (the files are read through its io_uring; no job and no control thread
//! involved):
//!
//! | request | file |
//! |---|---|
//! | `/streams/NAME/master.m3u8`, `/streams/NAME/media_N.m3u8` | HLS (with `--transcode-hls`) |
//! | `/streams/NAME/dash/manifest.mpd` | DASH (with `--transcode-dash`) |
//! | `/streams/NAME/FILE.m4s`, `/streams/NAME/dash/FILE.m4s` | the segments both share |
//!
//! NAME is [`crate::transcode::output_name`]. Anything else under `/streams/NAME/` is 404.
//! Playlists and the manifest are sent with `Cache-Control: no-cache`, segments as they are;
//! every answer carries the CORS headers of the other stream routes.

use glommio::io::BufferedFile;

use crate::codec::http::Response;
use crate::proxy::http::{CORS, Exchange, Next, cors, text};

use super::static_files::{content_type, send_file};

/// Whether a path is one of the ladder's (`/streams/NAME/...`, at least three segments);
/// `/streams/x.m3u8` stays an origin's HLS stream.
pub fn is_abr_path(path: &str) -> bool {
    path.strip_prefix("/streams/").is_some_and(|rest| rest.contains('/'))
}

/// What file under the stream folder a request names, if it names one this route serves.
fn file_of(path: &str, hls: bool, dash: bool) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/streams/")?;
    let (name, file) = rest.split_once('/')?;
    let (file, in_dash) = match file.strip_prefix("dash/") {
        Some(f) => (f, true),
        None => (file, false),
    };
    let safe = |s: &str| {
        !s.is_empty() && !s.starts_with('.') && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    };
    if !safe(name) || !safe(file) {
        return None;
    }
    let allowed = if file.ends_with(".m4s") {
        true
    } else if file == "manifest.mpd" {
        dash && in_dash
    } else if file.ends_with(".m3u8") {
        hls && !in_dash
    } else {
        false
    };
    allowed.then_some((name, file))
}

/// Serves a ladder file, or 404.
pub async fn serve(ex: &Exchange<'_>) -> Next {
    let config = &ex.shard.config.transcode;
    let Some((name, file)) = file_of(&ex.req.path, config.hls, config.dash) else {
        return ex.reply(cors(text(404, &format!("no transcoded file at {}", ex.req.path)))).await;
    };
    let path = config.dir.join(name).join(file);
    let opened = match BufferedFile::open(&path).await {
        Ok(f) => f,
        Err(_) => {
            let body = format!("no transcoded file at {} (no job for {name}, or not written yet)", ex.req.path);
            return ex.reply(cors(text(404, &body))).await;
        }
    };
    let kind = content_type(&path);
    let mut extra: Vec<(&str, &[u8])> = CORS.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    if !file.ends_with(".m4s") {
        extra.push(("Cache-Control", b"no-cache"));
    }
    let next = send_file(ex, &opened, kind, &extra).await;
    let _ = opened.close().await;
    next
}

/// The answer to a ladder request while transcoding is off.
pub fn off() -> Response {
    cors(text(404, "transcoding is off (--transcode)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(is_abr_path("/streams/cam/master.m3u8"));
        assert!(!is_abr_path("/streams/cam.m3u8"));
        assert_eq!(file_of("/streams/cam/master.m3u8", true, true), Some(("cam", "master.m3u8")));
        assert_eq!(file_of("/streams/cam/dash/manifest.mpd", true, true), Some(("cam", "manifest.mpd")));
        assert_eq!(
            file_of("/streams/cam/dash/chunk-stream0-00001.m4s", true, true),
            Some(("cam", "chunk-stream0-00001.m4s"))
        );
        assert_eq!(file_of("/streams/cam/dash/manifest.mpd", true, false), None, "DASH off");
        assert_eq!(file_of("/streams/cam/master.m3u8", false, true), None, "HLS off");
        assert_eq!(file_of("/streams/cam/manifest.mpd", true, true), None, "the manifest is under dash/");
        assert_eq!(file_of("/streams/cam/x/y.m4s", true, true), None);
        assert_eq!(file_of("/streams/.hidden/a.m4s", true, true), None);
        assert_eq!(file_of("/streams/cam/other.txt", true, true), None);
    }
}
