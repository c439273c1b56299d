//! WebRTC sessions by ICE username: the control thread's table that lets a shard route a STUN
//! binding request from an address it has never seen (a new session, a NAT rebinding, an ICE
//! restart landing on another shard) to the origin that answered the session's offer.
//!
//! The key is the whole USERNAME a client sends, `answerUfrag:offerUfrag`. Entries are written by signalling, read by shards, and bounded twice: at most
//! `max` entries (`--webrtc-ice-sessions`; the least recently used goes first) and none unused
//! for `ttl` (`--webrtc-ice-ttl`).
//!
//! A session's WHIP/WHEP resource (the `Location` its client `DELETE`s) is indexed too: the
//! `DELETE` ends the session ([`IceTable::end`]), which forgets it and raises its [`Ended`]
//! flag, so the shard relaying its media closes it at once (and sends its end notice).

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
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
    /// Raised when the client deletes the session's resource; clones share it.
    pub ended: Ended,
    /// The WHIP/WHEP resource the client was given (`Location`, relative: path and query).
    pub resource: Option<String>,
}

/// A flag raised once, from any thread, that tasks on any thread can await: the end of a WebRTC
/// session asked for by its client (`DELETE` of its resource). Clones share it. Runtime-free
/// (this layer knows no executor): the wakers of the tasks waiting, one per task.
#[derive(Clone, Default)]
pub struct Ended(Arc<EndedInner>);

#[derive(Default)]
struct EndedInner {
    raised: AtomicBool,
    /// The waiting tasks' wakers; a task that polls again replaces its own, so this holds one
    /// per waiting task (a session's media task), and empties when the flag is raised.
    waiters: Mutex<Vec<Waker>>,
}

impl Ended {
    /// Raises the flag and wakes every waiter.
    pub fn end(&self) {
        self.0.raised.store(true, Ordering::Release);
        let waiters = std::mem::take(&mut *self.0.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        waiters.into_iter().for_each(Waker::wake);
    }

    pub fn is_ended(&self) -> bool {
        self.0.raised.load(Ordering::Acquire)
    }

    /// Returns once the flag is raised.
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.is_ended() {
                return Poll::Ready(());
            }
            let mut waiters = self.0.waiters.lock().unwrap_or_else(|e| e.into_inner());
            // Checked again under the lock: `end` takes the list under it after raising the
            // flag, so a waker put here after that check is always woken.
            if self.is_ended() {
                return Poll::Ready(());
            }
            match waiters.iter_mut().find(|w| w.will_wake(cx.waker())) {
                Some(w) => w.clone_from(cx.waker()),
                None => waiters.push(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

impl PartialEq for Ended {
    fn eq(&self, other: &Ended) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Ended {}

impl fmt::Debug for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ended({})", self.is_ended())
    }
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

/// The username -> session table, with the sessions' resources -> usernames.
#[derive(Debug)]
pub struct IceTable {
    entries: HashMap<String, Entry>,
    resources: HashMap<String, String>,
    max: usize,
    ttl: Duration,
}

impl IceTable {
    pub fn new(max: usize, ttl: Duration) -> Self {
        IceTable { entries: HashMap::new(), resources: HashMap::new(), max: max.max(1), ttl }
    }

    /// Records a session; when full, the least recently used entry is dropped first, and
    /// returned.
    pub fn bind(&mut self, username: String, session: IceSession, now: Instant) -> Option<(String, IceSession)> {
        let mut evicted = None;
        if !self.entries.contains_key(&username) && self.entries.len() >= self.max {
            let oldest = self.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                evicted = self.remove(&oldest).map(|s| (oldest, s));
            }
        }
        self.remove(&username);
        if let Some(resource) = &session.resource {
            self.resources.insert(resource.clone(), username.clone());
        }
        self.entries.insert(username, Entry { session, used: now });
        evicted
    }

    /// Ends the session whose resource is `resource` (else, SRS's form, whose username is
    /// `username`): forgotten here, its [`Ended`] raised. `None` if there is none.
    pub fn end(&mut self, resource: &str, username: Option<&str>) -> Option<(String, IceSession)> {
        let username = match self.resources.get(resource) {
            Some(u) => u.clone(),
            None => username.filter(|u| self.entries.contains_key(*u))?.to_string(),
        };
        let session = self.remove(&username)?;
        session.ended.end();
        Some((username, session))
    }

    fn remove(&mut self, username: &str) -> Option<IceSession> {
        let entry = self.entries.remove(username)?;
        self.forget_resource(username, &entry.session);
        Some(entry.session)
    }

    /// Drops `session`'s resource from the index if it still points at `username`.
    fn forget_resource(&mut self, username: &str, session: &IceSession) {
        if let Some(resource) = &session.resource
            && self.resources.get(resource).is_some_and(|u| u == username)
        {
            self.resources.remove(resource);
        }
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
        let resources = &mut self.resources;
        self.entries.retain(|username, e| {
            let keep = now.saturating_duration_since(e.used) < ttl;
            if !keep
                && let Some(resource) = &e.session.resource
                && resources.get(resource).is_some_and(|u| u == username)
            {
                resources.remove(resource);
            }
            keep
        });
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
            ended: Ended::default(),
            resource: Some(format!("/rtc/v1/whep/?stream={stream}")),
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
        assert_eq!(table.resolve("c:1", t0 + Duration::from_secs(3)).map(|s| s.key.clone()), Some(session("c").key));
        table.expire(t0 + Duration::from_secs(62));
        assert_eq!(table.len(), 1, "a was last used at 2 s, c at 3 s");
        table.expire(t0 + Duration::from_secs(64));
        assert!(table.is_empty());
        assert!(table.resources.is_empty(), "resources leave with their sessions: {:?}", table.resources);
    }

    #[test]
    fn a_deleted_resource_ends_its_session() {
        let t0 = Instant::now();
        let mut table = IceTable::new(2, Duration::from_secs(60));
        let a = session("a");
        let ended = a.ended.clone();
        assert!(table.bind("a:1".into(), a, t0).is_none());
        table.bind("b:1".into(), session("b"), t0);
        assert!(table.end("/rtc/v1/whep/?stream=x", None).is_none(), "no such resource");
        let (username, _) = table.end("/rtc/v1/whep/?stream=a", None).expect("ended by its resource");
        assert_eq!(username, "a:1");
        assert!(ended.is_ended());
        assert!(table.resolve("a:1", t0).is_none(), "forgotten");
        assert!(table.end("/rtc/v1/whep/?stream=a", None).is_none(), "once");
        // SRS's form: the resource names the session by its username.
        assert!(table.end("/rtc/v1/whip/?session=b:1", Some("b:1")).is_some());
        assert!(table.is_empty() && table.resources.is_empty());
        // Full: the least recently used goes, with its resource.
        table.bind("c:1".into(), session("c"), t0);
        table.bind("d:1".into(), session("d"), t0 + Duration::from_secs(1));
        let (evicted, _) = table.bind("e:1".into(), session("e"), t0 + Duration::from_secs(2)).expect("evicted");
        assert_eq!(evicted, "c:1");
        assert!(table.end("/rtc/v1/whep/?stream=c", None).is_none());
        assert_eq!(table.resources.len(), 2);
    }

    #[test]
    fn ended_wakes_a_waiter_on_another_thread() {
        let ended = Ended::default();
        let waiter = ended.clone();
        let thread = std::thread::spawn(move || futures_lite::future::block_on(waiter.wait()));
        std::thread::sleep(Duration::from_millis(20));
        ended.end();
        thread.join().unwrap();
        futures_lite::future::block_on(ended.wait()); // raised already: returns at once
    }
}
