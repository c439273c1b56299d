//! HLS players as sessions, for access control that has a start and an end (`--on-play`,
//! `--on-stop`, `--max-sessions-per-stream`): without them a player's every playlist refresh
//! would be a new admission (one `on_play` and one `on_stop` per refresh, a stream slot held only
//! while the playlist is fetched).
//!
//! As SRS does with its `hls_ctx`, a playlist request without a session is admitted once and
//! given one: a media playlist is answered with a one-variant master playlist whose variant is
//! the same URL with `spbhs=<token>` added, so the player's refreshes carry it; a master
//! playlist (the origin's own variants) gets the token added to its variant URIs. A request
//! carrying a known token of its stream only marks the session alive ([`touch`]). A session with
//! no request for `--hls-session-timeout` ends: its admission is dropped on the shard that made
//! it (stream slot back, `on_stop` sent). A request with an unknown token (its session timed
//! out, or another proxy's) is admitted again under that token and served the media playlist.
//!
//! Sessions are kept in one process-wide table (a player's refreshes land on any shard),
//! bounded by `--hls-max-sessions`: past it a new player gets 503 (logged, rate-limited).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::balance::StreamKey;
use crate::logging::throttle::LogThrottle;
use crate::proxy::access::Admitted;
use crate::shard::Shard;

/// The query parameter that carries a player's session.
pub const PARAM: &str = "spbhs";

/// One player's session.
struct Entry {
    key: StreamKey,
    /// The shard whose admission it holds (which sends its end notice).
    shard: usize,
    seen: Instant,
    admitted: Admitted,
}

/// Every HLS session, by token.
static SESSIONS: Mutex<Option<HashMap<String, Entry>>> = Mutex::new(None);

thread_local! {
    static SWEEPING: Cell<bool> = const { Cell::new(false) };
    static WARNINGS: RefCell<LogThrottle<&'static str>> = RefCell::new(LogThrottle::new(5, Duration::from_secs(10)));
}

fn table<R>(f: impl FnOnce(&mut HashMap<String, Entry>) -> R) -> R {
    let mut guard = SESSIONS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// Whether this configuration needs HLS sessions: an admission with an end or a slot.
pub fn wanted(shard: &Shard) -> bool {
    let access = &shard.config.access;
    access.on_play.is_some() || access.on_stop.is_some() || access.max_sessions_per_stream > 0
}

/// Marks the session `token` of `key` alive; `false` if there is none.
pub fn touch(token: &str, key: &StreamKey) -> bool {
    table(|t| match t.get_mut(token) {
        Some(entry) if entry.key == *key => {
            entry.seen = Instant::now();
            true
        }
        _ => false,
    })
}

/// Why a session could not be kept.
pub enum NotKept {
    /// `--hls-max-sessions` are open.
    Full(usize),
    /// The token names another stream's session; the admission comes back.
    Taken(Box<Admitted>),
}

/// Keeps `admitted` as the session `token` (a new random one when `None`) of `key`, ended by
/// this shard's sweep; the token.
pub fn open(shard: &Shard, token: Option<String>, key: &StreamKey, admitted: Admitted) -> Result<String, NotKept> {
    let max = shard.config.access.hls_max_sessions;
    let token =
        token.unwrap_or_else(|| format!("{:016x}{:016x}", crate::util::random_u64(), crate::util::random_u64()));
    let kept = table(|t| {
        if t.contains_key(&token) {
            return Err(NotKept::Taken(Box::new(admitted)));
        }
        if t.len() >= max {
            return Err(NotKept::Full(t.len()));
        }
        let entry = Entry { key: key.clone(), shard: shard.index, seen: Instant::now(), admitted };
        t.insert(token.clone(), entry);
        Ok(())
    });
    if let Err(NotKept::Full(n)) = &kept {
        let line = format!("hls play {key}: {n} HLS sessions open (--hls-max-sessions); refused");
        WARNINGS.with(|w| {
            let verdict = w.borrow_mut().admit("hls sessions full", Instant::now());
            if let Some(summary) = verdict.summary {
                log::warn!("hls sessions full: ... {}", summary.tail());
            }
            if verdict.write {
                log::warn!("{line}");
            }
        });
    }
    kept?;
    if !SWEEPING.with(|s| s.replace(true)) {
        glommio::spawn_local(sweep(shard.index, shard.config.access.hls_session_timeout)).detach();
    }
    Ok(token)
}

/// Once a second: ends this shard's sessions that had no request for `timeout`.
async fn sweep(shard: usize, timeout: Duration) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        let over: Vec<Entry> = table(|t| {
            let tokens: Vec<String> = t
                .iter()
                .filter(|(_, e)| e.shard == shard && now.saturating_duration_since(e.seen) >= timeout)
                .map(|(token, _)| token.clone())
                .collect();
            tokens.iter().filter_map(|token| t.remove(token)).collect()
        });
        for entry in over {
            log::info!("hls play {}: no playlist request for {timeout:?}; session ended", entry.key);
            drop(entry.admitted); // the stream slot back, on_stop sent (on this shard)
        }
    }
}

/// Ends every session of this shard (at shutdown): their admissions dropped here.
pub fn end_all(shard: &Shard) {
    let mine: Vec<Entry> = table(|t| {
        let tokens: Vec<String> = t.iter().filter(|(_, e)| e.shard == shard.index).map(|(k, _)| k.clone()).collect();
        tokens.iter().filter_map(|token| t.remove(token)).collect()
    });
    if !mine.is_empty() {
        log::info!("shard {}: {} HLS sessions ended (shutting down)", shard.index, mine.len());
    }
}

/// The one-variant master playlist that gives a player its session: the variant is the
/// requested playlist (`name`, the last path segment, with its `query`) with the token added.
pub fn wrapper(name: &str, query: Option<&str>, token: &str) -> String {
    let query = match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{q}&{PARAM}={token}"),
        None => format!("{PARAM}={token}"),
    };
    format!("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,AVERAGE-BANDWIDTH=1\n{name}?{query}\n")
}

/// Whether `playlist` is a master playlist (it names variants).
pub fn is_master(playlist: &[u8]) -> bool {
    playlist.windows(18).any(|w| w == b"#EXT-X-STREAM-INF:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_points_at_the_same_playlist_with_the_token() {
        let w = wrapper("cam.m3u8", Some("token=ab&expires=9"), "T");
        assert_eq!(
            w,
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,AVERAGE-BANDWIDTH=1\ncam.m3u8?token=ab&expires=9&spbhs=T\n"
        );
        assert!(wrapper("cam.m3u8", None, "T").ends_with("\ncam.m3u8?spbhs=T\n"));
        assert!(wrapper("cam.m3u8", Some(""), "T").ends_with("\ncam.m3u8?spbhs=T\n"));
        assert!(is_master(w.as_bytes()));
        assert!(!is_master(b"#EXTM3U\n#EXTINF:2.0,\nx-1.ts\n"));
    }
}
