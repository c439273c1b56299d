//! Backing off an accept loop that the kernel refuses for lack of resources. Runtime-free (the
//! caller passes the time in and does the waiting), so the shards' glommio accept loops and the
//! control thread's tokio servers (System API, gRPC) share it.
//!
//! When the process is out of descriptors (`EMFILE`), the system is (`ENFILE`) or the kernel
//! lacks memory for a socket (`ENOBUFS`, `ENOMEM`), `accept(2)` fails *without* taking the
//! connection off the backlog: the listener stays readable, and a loop that retries at once
//! spins a core and logs every failure (3 515 warnings in 35 s were seen). [`AcceptBackoff`]
//! makes that one episode: the first failure logs one warning and asks for a wait of
//! [`FIRST_WAIT`], doubling up to [`MAX_WAIT`] while failures go on; the first accept that
//! works again logs one info line with how many accepts failed and for how long, and resets the
//! wait. Errors the kernel reports for one pending connection only (`ECONNABORTED`, `EPROTO`,
//! a network error passed on by Linux: accept(2), "Error handling") are logged at debug and
//! retried at once; they cost their sender a connection each, so they cannot spin. Any other
//! error is treated like a resource error: an unknown failure that repeats must not spin either.

use std::io;
use std::time::{Duration, Instant};

/// The wait after the first resource failure of an episode.
pub const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between two accepts while failures go on.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// How one accept error is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Out of descriptors or kernel memory: back off until it clears.
    Resource,
    /// One pending connection failed (reset before it was accepted, ...): retry at once.
    Connection,
    /// Anything else: backed off like [`ErrorClass::Resource`].
    Other,
}

impl ErrorClass {
    pub fn of(e: &io::Error) -> ErrorClass {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => ErrorClass::Resource,
            Some(
                libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::EINTR
                | libc::EAGAIN
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ECONNRESET
                | libc::ETIMEDOUT,
            ) => ErrorClass::Connection,
            _ => ErrorClass::Other,
        }
    }
}

/// A log line the caller's accept loop should write (returned rather than written, for tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// An episode started: one warning.
    Started(String),
    /// Accepting works again: one info line.
    Ended(String),
    /// A failure of one pending connection: debug.
    Dropped(String),
}

impl Note {
    /// Writes the line at its level.
    pub fn log(&self) {
        match self {
            Note::Started(line) => log::warn!("{line}"),
            Note::Ended(line) => log::info!("{line}"),
            Note::Dropped(line) => log::debug!("{line}"),
        }
    }
}

/// One listener's accept failures: the current episode, if any, and the next wait.
#[derive(Debug)]
pub struct AcceptBackoff {
    listener: String,
    /// Accepts failed in the current episode (0: none going on).
    failed: u64,
    since: Option<Instant>,
    wait: Duration,
}

impl AcceptBackoff {
    /// `listener` names it in the log lines (`rtmp on shard 0`, `System API 127.0.0.1:12025`).
    pub fn new(listener: impl Into<String>) -> Self {
        AcceptBackoff { listener: listener.into(), failed: 0, since: None, wait: FIRST_WAIT }
    }

    /// Passes an accepted connection through (ending an episode), or logs the failure as
    /// [`AcceptBackoff::failed`] does and returns how long to wait before the next accept.
    pub fn check<T, E: Into<io::Error>>(&mut self, accepted: Result<T, E>, now: Instant) -> Result<T, Duration> {
        match accepted {
            Ok(conn) => {
                if let Some(note) = self.accepted(now) {
                    note.log();
                }
                Ok(conn)
            }
            Err(e) => {
                let (wait, note) = self.failed(&e.into(), now);
                if let Some(note) = note {
                    note.log();
                }
                Err(wait)
            }
        }
    }

    /// Records a failed accept: how long to wait before the next one, and the line to log
    /// (only for the first failure of an episode, or at debug for a one-connection failure).
    pub fn failed(&mut self, e: &io::Error, now: Instant) -> (Duration, Option<Note>) {
        if ErrorClass::of(e) == ErrorClass::Connection {
            return (
                Duration::ZERO,
                Some(Note::Dropped(format!("{} accept failed for one connection: {e}", self.listener))),
            );
        }
        self.failed += 1;
        if self.since.is_some() {
            let wait = self.wait;
            self.wait = (self.wait * 2).min(MAX_WAIT);
            return (wait, None);
        }
        self.since = Some(now);
        self.wait = (FIRST_WAIT * 2).min(MAX_WAIT);
        let line = format!(
            "{} accept failed: {e}; waiting {FIRST_WAIT:?} growing to {MAX_WAIT:?} between tries until accepting works again (pending clients wait in the backlog)",
            self.listener
        );
        (FIRST_WAIT, Some(Note::Started(line)))
    }

    /// Records a successful accept; ends an episode with one line.
    pub fn accepted(&mut self, now: Instant) -> Option<Note> {
        let since = self.since.take()?;
        let failed = std::mem::take(&mut self.failed);
        self.wait = FIRST_WAIT;
        let lasted = now.saturating_duration_since(since);
        Some(Note::Ended(format!("{} accepting again after {failed} failed accepts over {lasted:.1?}", self.listener)))
    }

    /// Whether an episode is going on.
    pub fn failing(&self) -> bool {
        self.since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn classes() {
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(ErrorClass::of(&os(code)), ErrorClass::Resource, "{code}");
        }
        for code in [libc::ECONNABORTED, libc::EPROTO, libc::ENETUNREACH] {
            assert_eq!(ErrorClass::of(&os(code)), ErrorClass::Connection, "{code}");
        }
        assert_eq!(ErrorClass::of(&os(libc::EBADF)), ErrorClass::Other);
        assert_eq!(ErrorClass::of(&io::Error::other("no errno")), ErrorClass::Other);
    }

    /// Ten thousand failures in a row: one warning, waits 100 ms, 200, 400, 800, then 1 s each;
    /// the next accept logs one info line with the count, and a new episode starts afresh.
    #[test]
    fn one_warning_per_episode_and_a_growing_wait() {
        let mut b = AcceptBackoff::new("rtmp on shard 0");
        let t0 = Instant::now();
        let mut waits = Vec::new();
        let mut notes = Vec::new();
        for i in 0..10_000u64 {
            let (wait, note) = b.failed(&os(libc::EMFILE), t0 + Duration::from_millis(i));
            waits.push(wait);
            notes.extend(note);
        }
        assert!(b.failing());
        let ms: Vec<u128> = waits.iter().take(6).map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert!(waits.iter().all(|w| *w <= MAX_WAIT));
        let [Note::Started(warn)] = notes.as_slice() else { panic!("{notes:?}") };
        assert!(warn.starts_with("rtmp on shard 0 accept failed: Too many open files"), "{warn}");

        let Some(Note::Ended(info)) = b.accepted(t0 + Duration::from_secs(12)) else { panic!("no end") };
        assert_eq!(info, "rtmp on shard 0 accepting again after 10000 failed accepts over 12.0s");
        assert!(!b.failing());
        assert_eq!(b.accepted(t0 + Duration::from_secs(13)), None, "no episode, nothing to say");

        let (wait, note) = b.failed(&os(libc::ENFILE), t0 + Duration::from_secs(20));
        assert_eq!(wait, FIRST_WAIT, "a new episode starts from the first wait");
        assert!(matches!(note, Some(Note::Started(_))), "{note:?}");
    }

    #[test]
    fn one_connection_failures_neither_wait_nor_start_an_episode() {
        let mut b = AcceptBackoff::new("gRPC");
        let now = Instant::now();
        let (wait, note) = b.failed(&os(libc::ECONNABORTED), now);
        assert_eq!(wait, Duration::ZERO);
        assert!(matches!(note, Some(Note::Dropped(_))), "{note:?}");
        assert!(!b.failing());
        assert_eq!(b.accepted(now), None);
    }

    #[test]
    fn check_passes_connections_through_and_turns_errors_into_waits() {
        let mut b = AcceptBackoff::new("System API");
        let now = Instant::now();
        assert_eq!(b.check(Ok::<_, io::Error>(7), now), Ok(7));
        assert_eq!(b.check::<u8, _>(Err(os(libc::EMFILE)), now), Err(FIRST_WAIT));
        assert_eq!(b.check::<u8, _>(Err(os(libc::EMFILE)), now), Err(FIRST_WAIT * 2));
        assert_eq!(b.check(Ok::<_, io::Error>(8), now), Ok(8));
        assert!(!b.failing());
    }
}
