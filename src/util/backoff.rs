//! Backing off an accept loop that the kernel refuses for lack of resources. Runtime-free (the
//! caller passes the time in and does the waiting), so the shards' glommio accept loops and the
//! control thread's tokio servers (System API, gRPC) share it.
//!
//! When the process is out of descriptors (`EMFILE`), the system is (`ENFILE`) or the kernel
//! lacks memory for a socket (`ENOBUFS`, `ENOMEM`), `accept(2)` fails *without* taking the
//! connection off the backlog: the listener stays readable, and a loop that retries at once
//! spins a core and logs every failure (3 515 warnings in 35 s were seen). [`AcceptBackoff`]
//! makes that one episode: the first failure logs one warning and asks for a wait of
//! [`FIRST_WAIT`], doubling up to [`MAX_WAIT`] while failures go on (an accept that works
//! resets the wait). The episode ends, with one info line saying how many accepts failed and
//! for how long, at the first accept that works [`SETTLE`] or more after the last failure: a
//! listener whose descriptors come back one at a time (idle clients timing out while more wait
//! in the backlog) flips between failing and working many times a second, and that stays one
//! episode and two lines instead of two lines per flip. Errors the kernel reports for one pending connection only (`ECONNABORTED`, `EPROTO`,
//! a network error passed on by Linux: accept(2), "Error handling") are logged at debug and
//! retried at once; they cost their sender a connection each, so they cannot spin. Any other
//! error is treated like a resource error: an unknown failure that repeats must not spin either.

use std::io;
use std::time::{Duration, Instant};

/// The wait after the first resource failure of an episode.
pub const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between two accepts while failures go on.
pub const MAX_WAIT: Duration = Duration::from_secs(1);
/// How long accepting must have worked (no failure) for an episode to end.
pub const SETTLE: Duration = Duration::from_secs(5);

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
    /// Accepts failed in the current episode.
    failed: u64,
    /// The current episode's first and last failures.
    episode: Option<(Instant, Instant)>,
    wait: Duration,
}

impl AcceptBackoff {
    /// `listener` names it in the log lines (`rtmp on shard 0`, `System API 127.0.0.1:12025`).
    pub fn new(listener: impl Into<String>) -> Self {
        AcceptBackoff { listener: listener.into(), failed: 0, episode: None, wait: FIRST_WAIT }
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
        let wait = self.wait;
        self.wait = (self.wait * 2).min(MAX_WAIT);
        if let Some((_, last)) = &mut self.episode {
            *last = now;
            return (wait, None);
        }
        self.episode = Some((now, now));
        let line = format!(
            "{} accept failed: {e}; waiting {FIRST_WAIT:?} growing to {MAX_WAIT:?} between tries until accepting works again (pending clients wait in the backlog)",
            self.listener
        );
        (wait, Some(Note::Started(line)))
    }

    /// Records a successful accept: the next failure waits [`FIRST_WAIT`] again, and an
    /// episode whose last failure is [`SETTLE`] or more ago ends, with one line.
    pub fn accepted(&mut self, now: Instant) -> Option<Note> {
        self.wait = FIRST_WAIT;
        let (first, last) = self.episode?;
        if now.saturating_duration_since(last) < SETTLE {
            return None;
        }
        self.episode = None;
        let failed = std::mem::take(&mut self.failed);
        let lasted = last.saturating_duration_since(first);
        Some(Note::Ended(format!("{} accepting again after {failed} failed accepts over {lasted:.1?}", self.listener)))
    }

    /// Whether an episode is going on.
    pub fn failing(&self) -> bool {
        self.episode.is_some()
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

        assert_eq!(b.accepted(t0 + Duration::from_secs(12)), None, "working for 2 s only: not settled");
        assert!(b.failing());
        let Some(Note::Ended(info)) = b.accepted(t0 + Duration::from_secs(15)) else { panic!("no end") };
        assert_eq!(info, "rtmp on shard 0 accepting again after 10000 failed accepts over 10.0s");
        assert!(!b.failing());
        assert_eq!(b.accepted(t0 + Duration::from_secs(16)), None, "no episode, nothing to say");

        let (wait, note) = b.failed(&os(libc::ENFILE), t0 + Duration::from_secs(20));
        assert_eq!(wait, FIRST_WAIT, "a new episode starts from the first wait");
        assert!(matches!(note, Some(Note::Started(_))), "{note:?}");
    }

    /// Descriptors coming back one at a time: every accept that works is followed by one that
    /// fails, for a minute. One episode, one warning, the wait reset by each success; it ends
    /// once accepting has worked for SETTLE.
    #[test]
    fn flapping_is_one_episode() {
        let mut b = AcceptBackoff::new("http_stream on shard 1");
        let t0 = Instant::now();
        let mut notes = Vec::new();
        let mut t = t0;
        while t < t0 + Duration::from_secs(60) {
            let (wait, note) = b.failed(&os(libc::EMFILE), t);
            assert_eq!(wait, FIRST_WAIT, "a success in between resets the wait");
            notes.extend(note);
            t += wait;
            notes.extend(b.accepted(t));
        }
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(matches!(&notes[0], Note::Started(_)));
        let last_failure = t - FIRST_WAIT;
        let Some(Note::Ended(info)) = b.accepted(last_failure + SETTLE) else { panic!("no end") };
        assert!(info.contains("after 600 failed accepts over 59.9s"), "{info}");
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
        assert!(b.failing(), "not settled yet");
        assert_eq!(b.check::<u8, _>(Err(os(libc::EMFILE)), now), Err(FIRST_WAIT), "the wait starts over");
        assert_eq!(b.check(Ok::<_, io::Error>(9), now + SETTLE), Ok(9));
        assert!(!b.failing());
    }
}
