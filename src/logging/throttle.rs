//! Rate limits for log lines that remote peers can cause at will (a refused handshake, a bad
//! stream id): a listener keeps one [`LogThrottle`] and asks it before each such line.
//! Runtime-free, with the time passed in, so any listener on any runtime can use it and tests
//! need no clock.
//!
//! Per kind of line (a small closed set, such as an enum: the table never holds more than
//! [`MAX_KINDS`]), at most `limit` lines are written per `interval`, counted from the first line
//! of a window; later ones are only counted. Once the window is over, the count comes back as a
//! [`Summary`] ("... and K more like it in the last S s"): from [`LogThrottle::admit`] when the
//! next line of that kind arrives, or from [`LogThrottle::flush`], which the listener calls
//! from a periodic task so that the count of a flood that has stopped is not lost. So a
//! flood costs `limit` lines plus one summary per interval per kind, and the first lines of
//! each window still show what is going on.

use std::time::{Duration, Instant};

/// Most kinds one throttle tracks; lines of further kinds are suppressed uncounted (the kinds
/// are meant to be an enum's variants, far fewer than this).
pub const MAX_KINDS: usize = 32;

/// Lines of one kind suppressed over one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary<K> {
    pub kind: K,
    /// Lines not written.
    pub suppressed: u64,
    /// From the window's first line to when the summary was made.
    pub over: Duration,
}

impl<K> Summary<K> {
    /// `and K more like it in the last S s`, for the end of a summary line.
    pub fn tail(&self) -> String {
        format!("and {} more like it in the last {} s", self.suppressed, self.over.as_secs().max(1))
    }
}

/// What to do with one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admit<K> {
    /// Write this line.
    pub write: bool,
    /// Write this summary of the kind's previous window first.
    pub summary: Option<Summary<K>>,
}

#[derive(Debug)]
struct Window<K> {
    kind: K,
    started: Instant,
    written: u32,
    suppressed: u64,
}

/// One listener's warning windows, by kind.
#[derive(Debug)]
pub struct LogThrottle<K> {
    limit: u32,
    interval: Duration,
    windows: Vec<Window<K>>,
}

impl<K: Copy + Eq> LogThrottle<K> {
    /// At most `limit` lines of each kind per `interval`.
    pub fn new(limit: u32, interval: Duration) -> Self {
        LogThrottle { limit, interval, windows: Vec::new() }
    }

    /// Counts one line of `kind` at `now` and says whether to write it, and any summary due.
    pub fn admit(&mut self, kind: K, now: Instant) -> Admit<K> {
        let Some(i) = self.windows.iter().position(|w| w.kind == kind) else {
            if self.windows.len() >= MAX_KINDS {
                return Admit { write: false, summary: None };
            }
            self.windows.push(Window { kind, started: now, written: 1, suppressed: 0 });
            return Admit { write: self.limit > 0, summary: None };
        };
        let interval = self.interval;
        let w = &mut self.windows[i];
        let mut summary = None;
        if now.saturating_duration_since(w.started) >= interval {
            summary = summarize(w, now);
            *w = Window { kind, started: now, written: 0, suppressed: 0 };
        }
        if w.written < self.limit {
            w.written += 1;
            Admit { write: true, summary }
        } else {
            w.suppressed += 1;
            Admit { write: false, summary }
        }
    }

    /// Ends every window that is over at `now`, handing `out` the summary of each that
    /// suppressed lines; forgets the kinds that are quiet.
    pub fn flush(&mut self, now: Instant, mut out: impl FnMut(Summary<K>)) {
        let interval = self.interval;
        self.windows.retain_mut(|w| {
            if now.saturating_duration_since(w.started) < interval {
                return true;
            }
            if let Some(summary) = summarize(w, now) {
                out(summary);
            }
            false
        });
    }

    /// Kinds with an open window (for tests and bounds).
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

fn summarize<K: Copy>(w: &Window<K>, now: Instant) -> Option<Summary<K>> {
    (w.suppressed > 0).then(|| Summary {
        kind: w.kind,
        suppressed: w.suppressed,
        over: now.saturating_duration_since(w.started),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Kind {
        BadId,
        Full,
    }

    const SEC: Duration = Duration::from_secs(1);

    /// A flood of 100 000 lines of one kind over 60 s at a limit of 5 per 10 s writes 5 lines
    /// per window and one summary per window with the rest, and loses no count.
    #[test]
    fn a_flood_costs_limit_lines_and_one_summary_per_interval() {
        let mut t = LogThrottle::new(5, 10 * SEC);
        let t0 = Instant::now();
        let (mut written, mut summaries) = (0u64, Vec::new());
        for i in 0..100_000u64 {
            let now = t0 + Duration::from_micros(i * 600); // 60 s in all
            let a = t.admit(Kind::BadId, now);
            written += u64::from(a.write);
            summaries.extend(a.summary);
            if i % 1000 == 0 {
                t.flush(now, |s| summaries.push(s));
            }
        }
        t.flush(t0 + 100 * SEC, |s| summaries.push(s));
        assert_eq!(written, 6 * 5, "5 lines in each of 6 windows");
        assert_eq!(summaries.len(), 6, "{summaries:?}");
        let suppressed: u64 = summaries.iter().map(|s| s.suppressed).sum();
        assert_eq!(written + suppressed, 100_000);
        assert!(summaries.iter().all(|s| s.kind == Kind::BadId && s.over >= 10 * SEC));
        assert!(t.is_empty(), "quiet kinds are forgotten");
    }

    #[test]
    fn kinds_are_limited_apart() {
        let mut t = LogThrottle::new(2, 10 * SEC);
        let now = Instant::now();
        let writes: Vec<bool> = [Kind::BadId, Kind::BadId, Kind::BadId, Kind::Full, Kind::Full, Kind::Full]
            .into_iter()
            .map(|k| t.admit(k, now).write)
            .collect();
        assert_eq!(writes, [true, true, false, true, true, false]);
        assert_eq!(t.len(), 2);
    }

    /// The summary of a window comes with the next line after it, or from flush; a window
    /// with nothing suppressed has no summary.
    #[test]
    fn summaries_come_once() {
        let mut t = LogThrottle::new(1, 10 * SEC);
        let t0 = Instant::now();
        assert!(t.admit(Kind::Full, t0).write);
        assert!(!t.admit(Kind::Full, t0 + SEC).write);
        assert!(!t.admit(Kind::Full, t0 + 2 * SEC).write);
        let mut flushed = Vec::new();
        t.flush(t0 + 9 * SEC, |s| flushed.push(s));
        assert!(flushed.is_empty(), "the window is not over");
        let a = t.admit(Kind::Full, t0 + 12 * SEC);
        assert!(a.write);
        let s = a.summary.expect("the previous window's count");
        assert_eq!((s.suppressed, s.over), (2, 12 * SEC));
        assert_eq!(s.tail(), "and 2 more like it in the last 12 s");
        t.flush(t0 + 30 * SEC, |s| flushed.push(s));
        assert!(flushed.is_empty(), "the new window suppressed nothing: {flushed:?}");
        assert!(t.is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = LogThrottle::new(1, SEC);
        let now = Instant::now();
        for k in 0..1000u32 {
            t.admit(k, now);
        }
        assert_eq!(t.len(), MAX_KINDS);
        assert!(!t.admit(5000, now).write, "a kind past the bound is not written");
    }
}
