//! `--static-files`: everything on the HTTP stream listener that is not a stream (SRS's own
//! players at `/players/*.html`, for example). GET and HEAD; `dir/` means `dir/index.html`;
//! paths are resolved and must stay inside the directory (symbolic links included), else 404.
//! Files are read through the shard's io_uring in 64 KiB pieces.

use std::path::{Path, PathBuf};

use glommio::io::BufferedFile;

use crate::balance::stream_key::percent_decode;
use crate::codec::http;
use crate::proxy::http::{Exchange, Next, SERVER, text};
use crate::shard::relay;

/// Bytes read from a file at a time.
const READ_SIZE: usize = 64 * 1024;

/// Serves a file from the static directory, or 404.
pub async fn serve(ex: &Exchange<'_>) -> Next {
    let not_found = || text(404, &format!("no stream or file at {}", ex.req.path));
    let Some(root) = &ex.shard.config.static_files else {
        return ex.reply(not_found()).await;
    };
    let Some(path) = resolve(root, &ex.req.path) else {
        return ex.reply(not_found()).await;
    };
    let file = match BufferedFile::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            log::debug!("static file {}: {e}", path.display());
            return ex.reply(not_found()).await;
        }
    };
    let next = send_file(ex, &file, content_type(&path), &[]).await;
    let _ = file.close().await;
    next
}

/// Sends `file` as the answer, with `extra` headers after the usual ones.
pub async fn send_file(ex: &Exchange<'_>, file: &BufferedFile, kind: &str, extra: &[(&str, &[u8])]) -> Next {
    let (client, req, keep) = (ex.client, ex.req, ex.keep);
    let Ok(size) = opened_size(file) else {
        return ex.reply(text(500, "cannot read the file's size")).await;
    };
    let length = size.to_string();
    let connection: &[u8] = if keep == Next::KeepAlive { b"keep-alive" } else { b"close" };
    let mut head = Vec::new();
    let headers = [
        ("Content-Type", kind.as_bytes()),
        ("Content-Length", length.as_bytes()),
        ("Server", SERVER.as_bytes()),
        ("Connection", connection),
    ];
    http::write_head(&mut head, 200, "", headers.into_iter().chain(extra.iter().copied()));
    if relay::send_all(client, &head).await.is_err() {
        return Next::Close;
    }
    if req.method == "HEAD" {
        return keep;
    }
    let mut at = 0;
    while at < size {
        let piece = match file.read_at(at, READ_SIZE).await {
            Ok(piece) if !piece.is_empty() => piece,
            // The file shrank or failed under us: the length is already sent, so only closing
            // tells the player.
            _ => return Next::Close,
        };
        let piece = &piece[..piece.len().min(usize::try_from(size - at).unwrap_or(usize::MAX))];
        if relay::send_all(client, piece).await.is_err() {
            return Next::Close;
        }
        at += piece.len() as u64;
    }
    keep
}

/// The size of the file `file` has open. Not glommio's `file_size`: that stats the path, and a
/// writer that replaces files by renaming (ffmpeg's playlists, for one) can put a different,
/// longer file at the path between our open and our stat; the reply would then promise more
/// bytes than the open file holds and end short.
fn opened_size(file: &BufferedFile) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and `st` is a valid
    // out-pointer that fstat fills when it returns 0.
    if unsafe { libc::fstat(file.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstat returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok(u64::try_from(st.st_size).unwrap_or(0))
}

/// The file a request path names under `root` (already canonical), if it is a regular file
/// inside it. Resolving touches the file system (a few stat calls, served from the kernel's
/// caches for any directory a player can name twice).
fn resolve(root: &Path, request_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(request_path);
    let mut relative = decoded.trim_start_matches('/').to_string();
    if relative.is_empty() || relative.ends_with('/') {
        relative.push_str("index.html");
    }
    let full = root.join(relative).canonicalize().ok()?;
    (full.starts_with(root) && full.is_file()).then_some(full)
}

/// The Content-Type for a file name.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "m3u8" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        "flv" => "video/x-flv",
        "mp4" | "m4s" => "video/mp4",
        "mpd" => "application/dash+xml",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_is_the_open_files_even_when_the_path_is_renamed_over() {
        let dir = std::env::temp_dir().join(format!("streamgate-static-size-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("media_0.m3u8");
        std::fs::write(&path, "short").unwrap();
        let handle = glommio::LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn({
                let (dir, path) = (dir.clone(), path.clone());
                move || async move {
                    let file = BufferedFile::open(&path).await.unwrap();
                    // As ffmpeg does: write the next version aside, rename it over the path.
                    std::fs::write(dir.join("media_0.m3u8.tmp"), "a longer playlist").unwrap();
                    std::fs::rename(dir.join("media_0.m3u8.tmp"), &path).unwrap();
                    let size = opened_size(&file).unwrap();
                    let _ = file.close().await;
                    size
                }
            })
            .unwrap();
        assert_eq!(handle.join().unwrap(), 5, "the size of the file that is open, not the path's");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resolves_inside_the_root_only() {
        let root = std::env::temp_dir().join(format!("streamgate-static-{}", std::process::id()));
        std::fs::create_dir_all(root.join("players")).unwrap();
        std::fs::write(root.join("players/whep.html"), "x").unwrap();
        std::fs::write(root.join("index.html"), "i").unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(resolve(&root, "/players/whep.html"), Some(root.join("players/whep.html")));
        assert_eq!(resolve(&root, "/players%2Fwhep.html"), Some(root.join("players/whep.html")));
        assert_eq!(resolve(&root, "/"), Some(root.join("index.html")));
        assert_eq!(resolve(&root, "/players"), None, "a directory is not a file");
        assert_eq!(resolve(&root, "/missing.js"), None);
        assert_eq!(resolve(&root, "/players/../../etc/passwd"), None);
        std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
        assert_eq!(resolve(&root, "/escape"), None, "a link out of the root is not served");
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(content_type(Path::new("a/b.HTML")), "text/html; charset=utf-8");
    }
}
