//! WebRTC sessions by ICE username: the control thread's table that lets a shard route a STUN
//! binding request from an address it has never seen (a new session, a NAT rebinding, an ICE
//! restart landing on another shard) to the origin that answered the session's offer.
//!
//! The key is the whole USERNAME a client sends, `answerUfrag:offerUfrag`. Entries are written by signalling, read by shards, and bounded twice: at most
//! `max` entries (the least recently used goes first) and none unused for `ttl`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::origin::OriginId;
use super::session::Role;
use super::stream_key::StreamKey;

/// What signalling learned about one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceSession {
    pub key: StreamKey,
    pub origin: OriginId,
    pub role: Role,
}

#[derive(Debug)]
struct Entry {
    session: IceSession,
    used: Instant,
}

/// The username -> session table.
#[derive(Debug)]
pub struct IceTable {
    entries: HashMap<String, Entry>,
    max: usize,
    ttl: Duration,
}

impl IceTable {
    pub fn new(max: usize, ttl: Duration) -> Self {
        IceTable { entries: HashMap::new(), max: max.max(1), ttl }
    }

    /// Records a session; when full, the least recently used entry is dropped first.
    pub fn bind(&mut self, username: String, session: IceSession, now: Instant) {
        if !self.entries.contains_key(&username) && self.entries.len() >= self.max {
            let oldest = self.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(username, Entry { session, used: now });
    }

    /// The session of `username`, marked as used now.
    pub fn resolve(&mut self, username: &str, now: Instant) -> Option<&IceSession> {
        let entry = self.entries.get_mut(username)?;
        entry.used = now;
        Some(&entry.session)
    }

    /// Drops entries unused for the TTL.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.entries.retain(|_, e| now.saturating_duration_since(e.used) < ttl);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(stream: &str) -> IceSession {
        IceSession {
            key: StreamKey::from_url(&format!("rtmp://h/live/{stream}")).unwrap(),
            origin: OriginId("o".into()),
            role: Role::Play,
        }
    }

    #[test]
    fn bounded_by_size_and_age() {
        let t0 = Instant::now();
        let mut table = IceTable::new(2, Duration::from_secs(60));
        table.bind("a:1".into(), session("a"), t0);
        table.bind("b:1".into(), session("b"), t0 + Duration::from_secs(1));
        assert!(table.resolve("a:1", t0 + Duration::from_secs(2)).is_some(), "a is now the most recent");
        table.bind("c:1".into(), session("c"), t0 + Duration::from_secs(3));
        assert_eq!(table.len(), 2);
        assert!(table.resolve("b:1", t0).is_none(), "the least recently used went first");
        assert_eq!(table.resolve("c:1", t0 + Duration::from_secs(3)), Some(&session("c")));
        table.expire(t0 + Duration::from_secs(62));
        assert_eq!(table.len(), 1, "a was last used at 2 s, c at 3 s");
        table.expire(t0 + Duration::from_secs(64));
        assert!(table.is_empty());
    }
}
