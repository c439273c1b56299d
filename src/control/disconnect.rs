//! An operator's "disconnect this stream's sessions" (`POST /api/v1/streams/disconnect`, the
//! dashboard's Disconnect button), carried to the shards in the snapshot they already get.
//!
//! The control thread lists the stream with the time of the request; every shard's
//! once-a-second sweep ends its TCP connections and UDP sessions of that stream that opened
//! before then (`shard::conn::ConnTable::disconnect`, the UDP table's sweep), so a client
//! that reconnects at once is not cut again. An entry is held for [`HOLD`], several sweeps,
//! then dropped. At most [`MAX_ENTRIES`] are held (the oldest goes first), so the snapshot
//! never grows with requests. In redis mode it ends this proxy's sessions only.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::balance::StreamKey;

/// How long a disconnect stays listed: every shard sweeps at least once a second.
pub const HOLD: Duration = Duration::from_secs(5);
/// Most disconnects listed at once.
pub const MAX_ENTRIES: usize = 256;

/// The disconnects the shards must still act on.
#[derive(Debug, Default)]
pub struct Disconnects {
    entries: VecDeque<(StreamKey, Instant)>,
    version: u64,
}

impl Disconnects {
    /// Lists `key` as disconnected at `now` (a repeated request moves its time on).
    pub fn request(&mut self, key: StreamKey, now: Instant) {
        self.entries.retain(|(k, _)| *k != key);
        if self.entries.len() == MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back((key, now));
        self.version += 1;
    }

    /// Drops the entries held for [`HOLD`].
    pub fn expire(&mut self, now: Instant) {
        let before = self.entries.len();
        self.entries.retain(|(_, at)| now.saturating_duration_since(*at) < HOLD);
        if self.entries.len() != before {
            self.version += 1;
        }
    }

    /// Changes whenever the list does.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The list, for a snapshot.
    pub fn list(&self) -> Vec<(StreamKey, Instant)> {
        self.entries.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> StreamKey {
        StreamKey::from_url(&format!("rtmp://h/live/{name}")).unwrap()
    }

    #[test]
    fn entries_are_held_for_a_while_bounded_and_versioned() {
        let mut d = Disconnects::default();
        let t0 = Instant::now();
        d.request(key("a"), t0);
        d.request(key("a"), t0 + Duration::from_secs(1));
        assert_eq!(d.list(), vec![(key("a"), t0 + Duration::from_secs(1))], "one entry per stream, the newest time");
        let v = d.version();
        d.expire(t0 + HOLD);
        assert_eq!((d.list().len(), d.version()), (1, v), "held for HOLD after the last request");
        d.expire(t0 + Duration::from_secs(1) + HOLD);
        assert!(d.list().is_empty());
        assert!(d.version() > v);
        for i in 0..MAX_ENTRIES + 3 {
            d.request(key(&i.to_string()), t0);
        }
        assert_eq!(d.list().len(), MAX_ENTRIES);
        assert_eq!(d.list()[0].0, key("3"), "the oldest went first");
    }
}
