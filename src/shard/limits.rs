//! Limits counted across the shards without a lock: connections per client IP per listener
//! (`--max-connections-per-ip`; SRT and WebRTC sessions on the UDP listeners) and sessions per stream
//! (`--max-sessions-per-stream`).
//!
//! A client's connections spread over every shard (SO_REUSEPORT hashes the whole address), so a
//! per-shard count would let one IP hold the limit once per shard. Each limit is instead a
//! [`Counts`]: a fixed table of atomic counters shared by every shard, two rows of
//! [`BUCKETS`], each name (an IP, a stream key) counted in one bucket per row chosen by a
//! hash with a per-process random key (a client cannot aim at another's buckets). A name's
//! count is the smaller of its two buckets, which is its own count unless both buckets are
//! shared with other names: then it can only read high, so a limit may refuse early, never let
//! more through. The table's size is fixed (128 KiB per limit), whatever the traffic.
//!
//! [`Counts::take`] adds one to both buckets and gives it back at once if the count went past
//! the limit; the [`Slot`] it returns gives its one back when dropped, however the
//! connection or session ends.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::bridge::Listener;
use crate::config::access::AccessConfig;

/// Buckets per row.
pub const BUCKETS: usize = 1 << 14;

/// Counts per name, bounded (see the module documentation).
pub struct Counts {
    limit: u32,
    hasher: std::collections::hash_map::RandomState,
    rows: [Box<[AtomicU32]>; 2],
}

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counts").field("limit", &self.limit).finish_non_exhaustive()
    }
}

/// One taken unit of a [`Counts`]; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Counts>,
    buckets: [usize; 2],
}

impl Drop for Slot {
    fn drop(&mut self) {
        for (row, &b) in self.counts.rows.iter().zip(&self.buckets) {
            row[b].fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Counts {
    /// A table that lets at most `limit` units per name.
    pub fn new(limit: u32) -> Arc<Counts> {
        let row = || (0..BUCKETS).map(|_| AtomicU32::new(0)).collect::<Box<[AtomicU32]>>();
        Arc::new(Counts { limit, hasher: Default::default(), rows: [row(), row()] })
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    fn buckets(&self, name: &impl Hash) -> [usize; 2] {
        let h = self.hasher.hash_one(name);
        [(h as usize) % BUCKETS, ((h >> 32) as usize) % BUCKETS]
    }

    /// Takes one unit for `name`, or `None` when it already has `limit`.
    pub fn take(self: &Arc<Self>, name: &impl Hash) -> Option<Slot> {
        let buckets = self.buckets(name);
        let after = self.rows.iter().zip(&buckets).map(|(row, &b)| row[b].fetch_add(1, Ordering::AcqRel) + 1).min();
        let slot = Slot { counts: self.clone(), buckets };
        (after.unwrap_or(0) <= self.limit).then_some(slot)
    }

    /// The count of `name` now (an upper bound, see the module documentation).
    pub fn count(&self, name: &impl Hash) -> u32 {
        let buckets = self.buckets(name);
        self.rows.iter().zip(&buckets).map(|(row, &b)| row[b].load(Ordering::Acquire)).min().unwrap_or(0)
    }
}

/// Every shared limit of the process, made once and handed to every shard.
#[derive(Debug, Default)]
pub struct Limits {
    /// Per listener: connections (UDP: sessions) per client IP.
    per_ip: [Option<Arc<Counts>>; Listener::ALL.len()],
    /// Sessions per stream.
    pub per_stream: Option<Arc<Counts>>,
}

impl Limits {
    pub fn new(config: &AccessConfig) -> Limits {
        let ip = config.max_connections_per_ip;
        let mut per_ip: [Option<Arc<Counts>>; Listener::ALL.len()] = Default::default();
        let limits = [
            (Listener::Rtmp, ip.rtmp),
            (Listener::HttpStream, ip.http),
            (Listener::HttpApi, ip.api),
            (Listener::SrtUdp, ip.srt),
            (Listener::WebrtcUdp, ip.webrtc),
        ];
        for (listener, limit) in limits {
            per_ip[listener.index()] = limit.map(Counts::new);
        }
        let per_stream = (config.max_sessions_per_stream > 0).then(|| Counts::new(config.max_sessions_per_stream));
        Limits { per_ip, per_stream }
    }

    /// A connection slot for `ip` on `listener`: `Ok(None)` where there is no limit,
    /// `Err(limit)` when the IP already holds that many.
    pub fn connection(&self, listener: Listener, ip: std::net::IpAddr) -> Result<Option<Slot>, u32> {
        match &self.per_ip[listener.index()] {
            None => Ok(None),
            Some(counts) => counts.take(&ip).map(Some).ok_or(counts.limit()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_gets_its_limit_and_slots_come_back() {
        let counts = Counts::new(3);
        let held: Vec<Slot> = (0..3).map(|_| counts.take(&"a").unwrap()).collect();
        assert!(counts.take(&"a").is_none(), "a fourth is refused");
        assert_eq!(counts.count(&"a"), 3, "the refused one was given back");
        assert!(counts.take(&"b").is_some(), "other names are not affected");
        drop(held);
        assert_eq!(counts.count(&"a"), 0);
        assert!(counts.take(&"a").is_some());
    }

    #[test]
    fn thousands_of_names_well_under_their_limit_are_not_refused() {
        // Each of 5000 names holds half its limit: one is refused early only when both its
        // buckets hold two other names or more.
        let counts = Counts::new(8);
        let mut held = Vec::new();
        let mut refused = 0;
        for name in 0..5000u32 {
            for _ in 0..4 {
                match counts.take(&name) {
                    Some(slot) => held.push(slot),
                    None => refused += 1,
                }
            }
        }
        assert!(refused < 50, "{refused} of 20000 refused");
        drop(held);
        assert!((0..5000u32).all(|n| counts.count(&n) == 0));
    }

    #[test]
    fn limits_per_listener() {
        let config = AccessConfig {
            max_connections_per_ip: "rtmp=1".parse().unwrap(),
            max_sessions_per_stream: 0,
            ..Default::default()
        };
        let limits = Limits::new(&config);
        let ip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let first = limits.connection(Listener::Rtmp, ip).unwrap();
        assert!(first.is_some());
        assert_eq!(limits.connection(Listener::Rtmp, ip).unwrap_err(), 1);
        assert!(limits.connection(Listener::HttpStream, ip).unwrap().is_none(), "no limit there");
        assert!(limits.per_stream.is_none());
    }
}
