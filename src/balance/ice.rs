//! WebRTC sessions by ICE username: the control thread's table that lets a shard route a STUN
//! binding request from an address it has never seen (a new session, a NAT rebinding, an ICE
//! restart landing on another shard) to the origin that answered the session's offer.
//!
//! The key is the whole USERNAME a client sends, `answerUfrag:offerUfrag`. Entries are written by signalling, read by shards, and bounded twice: at most
//! `max` entries (the least recently used goes first) and none unused for `ttl`.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
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
    /// What the shard that opens the session's media takes over from signalling (opaque here:
    /// the offer's admission, whose end sends `on_unpublish`/`on_stop`), or `None`.
    pub handover: Option<Handover>,
}

/// A value that exactly one taker gets: the first media session of an ICE username, or the
/// signalling shard when no media came in time. Clones share it.
#[derive(Clone, Default)]
pub struct Handover(Arc<Mutex<Option<Box<dyn Any + Send>>>>);

impl Handover {
    pub fn new(value: impl Any + Send) -> Handover {
        Handover(Arc::new(Mutex::new(Some(Box::new(value)))))
    }

    /// The value, to the first caller only.
    pub fn take(&self) -> Option<Box<dyn Any + Send>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Whether someone has taken it.
    pub fn is_taken(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }
}

impl PartialEq for Handover {
    fn eq(&self, other: &Handover) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Handover {}

impl fmt::Debug for Handover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.0.lock().map(|v| v.is_some()).unwrap_or(false);
        write!(f, "Handover({})", if held { "held" } else { "taken" })
    }
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
            handover: None,
        }
    }

    #[test]
    fn a_handover_goes_to_one_taker() {
        let first = Handover::new(7u32);
        let clone = first.clone();
        assert_eq!(first, clone);
        assert!(!clone.is_taken());
        assert_ne!(first, Handover::new(7u32));
        assert_eq!(clone.take().and_then(|v| v.downcast::<u32>().ok()).map(|v| *v), Some(7));
        assert!(first.take().is_none() && first.is_taken(), "taken once");
        assert_eq!(format!("{first:?}"), "Handover(taken)");
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
