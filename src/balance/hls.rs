//! HLS session ids (`spbhid`): one id per stream key, the same on every shard of this proxy,
//! written into every URI of the stream's playlists so that segment requests (which carry no
//! stream name the proxy can trust: SRS segments are `livestream-12.ts`, variants may have any
//! name) reach the origin that serves the playlist.
//!
//! The control thread owns the table. An id lives as long as the registry knows its stream
//! (pinned, or with sessions open), so the table is bounded by the registry's stream limit;
//! [`HlsIds::retain`] drops the rest once a second. Ids are random (chosen by the caller), so
//! they cannot be guessed from a stream name; 16 hex digits make them hard to guess at all.

use std::collections::HashMap;
use std::sync::Arc;

use super::stream_key::StreamKey;

/// The stream key <-> id table.
#[derive(Debug, Default)]
pub struct HlsIds {
    by_key: HashMap<StreamKey, Arc<str>>,
    by_id: HashMap<Arc<str>, StreamKey>,
    /// Bumped on every change (the control thread republishes the shards' copy then).
    version: u64,
}

impl HlsIds {
    /// The id of `key`, made with `new_id` the first time (retried if it collides).
    pub fn id_for(&mut self, key: &StreamKey, mut new_id: impl FnMut() -> String) -> Arc<str> {
        if let Some(id) = self.by_key.get(key) {
            return id.clone();
        }
        let id: Arc<str> = loop {
            let candidate = new_id();
            if !self.by_id.contains_key(candidate.as_str()) {
                break candidate.into();
            }
        };
        self.by_key.insert(key.clone(), id.clone());
        self.by_id.insert(id.clone(), key.clone());
        self.version += 1;
        id
    }

    /// The id of `key` if it has one.
    pub fn id_of(&self, key: &StreamKey) -> Option<&Arc<str>> {
        self.by_key.get(key)
    }

    /// Gives `key` the id `id` (one another proxy of the fleet gave out), replacing its own.
    pub fn insert(&mut self, key: &StreamKey, id: &str) -> Arc<str> {
        if let Some(old) = self.by_key.get(key) {
            if &**old == id {
                return old.clone();
            }
            self.by_id.remove(old);
        }
        if let Some(other) = self.by_id.remove(id) {
            self.by_key.remove(&other);
        }
        let id: Arc<str> = id.into();
        self.by_key.insert(key.clone(), id.clone());
        self.by_id.insert(id.clone(), key.clone());
        self.version += 1;
        id
    }

    /// Every (stream, id).
    pub fn entries(&self) -> Vec<(StreamKey, Arc<str>)> {
        self.by_key.iter().map(|(k, id)| (k.clone(), id.clone())).collect()
    }

    /// Copies of both directions, for the shards' snapshot.
    pub fn maps(&self) -> (HashMap<StreamKey, Arc<str>>, HashMap<Arc<str>, StreamKey>) {
        (self.by_key.clone(), self.by_id.clone())
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The stream an id was given to.
    pub fn key_of(&self, id: &str) -> Option<&StreamKey> {
        self.by_id.get(id)
    }

    /// Keeps the ids of the streams `known` says yes to.
    pub fn retain(&mut self, mut known: impl FnMut(&StreamKey) -> bool) {
        let before = self.by_key.len();
        self.by_key.retain(|key, _| known(key));
        let by_key = &self.by_key;
        self.by_id.retain(|_, key| by_key.contains_key(key));
        if self.by_key.len() != before {
            self.version += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stable_id_per_stream_and_forgotten_with_it() {
        let mut ids = HlsIds::default();
        let (a, b) = (StreamKey::from_url("rtmp://h/live/a").unwrap(), StreamKey::from_url("rtmp://h/live/b").unwrap());
        let mut next = ["dup", "dup", "x2"].into_iter().map(String::from);
        let ia = ids.id_for(&a, || next.next().unwrap());
        assert_eq!(&*ia, "dup");
        assert_eq!(ids.id_for(&a, || unreachable!()), ia, "stable across calls");
        let ib = ids.id_for(&b, || next.next().unwrap());
        assert_eq!(&*ib, "x2", "a colliding id is not reused");
        assert_eq!(ids.key_of("x2"), Some(&b));
        assert_eq!(ids.key_of("nope"), None);
        ids.retain(|k| k == &b);
        assert_eq!((ids.key_of("dup"), ids.len()), (None, 1));
        let v = ids.version();
        assert_eq!(&*ids.insert(&b, "fleet"), "fleet", "an id from another proxy replaces ours");
        assert_eq!((ids.key_of("x2"), ids.key_of("fleet")), (None, Some(&b)));
        assert!(ids.version() > v, "a change is seen by the snapshot");
    }
}
