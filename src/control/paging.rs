//! Pages of the System API's lists (`/api/v1/origins`, `/api/v1/streams`), so that no answer
//! grows with the registry and no request holds the control thread for long.
//!
//! A page is `?limit=N&after=CURSOR`: at most `N` entries ([`DEFAULT_LIMIT`] when absent, at
//! most [`MAX_LIMIT`]: a bigger `N` is cut to it), in id (or key) order, starting after
//! `CURSOR` (from the first when absent). The answer tells `total` (entries in the whole list),
//! `limit` (the page size used) and `next` (the path of the next page, `null` on the last one).
//! A cursor, unlike an offset, neither skips nor repeats entries when others come and go
//! between two pages. Building a page costs `O(log n + limit)` for a sorted table and
//! `O(n log limit)` for a hashed one, never a sort or a copy of the whole list.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde_json::{Value, json};

use crate::balance::stream_key::query_param;

/// Entries in a page when the request names no limit.
pub const DEFAULT_LIMIT: usize = 100;
/// Most entries in a page.
pub const MAX_LIMIT: usize = 1000;

/// Why a page request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("limit {0:?} is not a number of entries from 1 to {MAX_LIMIT}")]
    BadLimit(String),
}

/// One page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    pub after: Option<String>,
}

impl Page {
    /// Reads `limit` and `after` from a query string.
    pub fn from_query(query: Option<&str>) -> Result<Page, PageError> {
        let limit = match query_param(query, "limit") {
            None => DEFAULT_LIMIT,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => n.min(MAX_LIMIT),
                // A number too large for usize is still a request for the biggest page.
                Err(_) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => MAX_LIMIT,
                _ => return Err(PageError::BadLimit(v)),
            },
        };
        Ok(Page { limit, after: query_param(query, "after") })
    }

    /// The paging fields of an answer: `total`, `limit` and `next` (the path of the next page
    /// when there is one after `last`).
    pub fn fields(&self, path: &str, total: usize, last: Option<&str>, more: bool) -> [(&'static str, Value); 3] {
        let next = match last {
            Some(last) if more => json!(format!("{path}?limit={}&after={}", self.limit, encode_component(last))),
            _ => Value::Null,
        };
        [("total", json!(total)), ("limit", json!(self.limit)), ("next", next)]
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a query value.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An entry ordered by its key alone.
struct ByKey<'a, T>(&'a str, T);

impl<T> PartialEq for ByKey<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<T> Eq for ByKey<'_, T> {}
impl<T> PartialOrd for ByKey<'_, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for ByKey<'_, T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(other.0)
    }
}

/// The `limit` entries with the smallest keys greater than `after`, in key order, from an
/// unordered collection, and whether more follow. Holds at most `limit + 1` entries at a time.
pub fn smallest_after<'a, T>(
    items: impl Iterator<Item = (&'a str, T)>,
    after: Option<&str>,
    limit: usize,
) -> (Vec<(&'a str, T)>, bool) {
    let mut heap: BinaryHeap<ByKey<'a, T>> = BinaryHeap::with_capacity(limit + 2);
    for (key, item) in items {
        if after.is_some_and(|a| key <= a) {
            continue;
        }
        if heap.len() <= limit {
            heap.push(ByKey(key, item));
        } else if heap.peek().is_some_and(|top| key < top.0) {
            heap.pop();
            heap.push(ByKey(key, item));
        }
    }
    let more = heap.len() > limit;
    let mut page: Vec<(&'a str, T)> = heap.into_sorted_vec().into_iter().map(|ByKey(k, t)| (k, t)).collect();
    page.truncate(limit);
    (page, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_requests() {
        assert_eq!(Page::from_query(None), Ok(Page { limit: DEFAULT_LIMIT, after: None }));
        assert_eq!(Page::from_query(Some("limit=5&after=a%2Fb")), Ok(Page { limit: 5, after: Some("a/b".into()) }));
        assert_eq!(Page::from_query(Some("limit=5000")).unwrap().limit, MAX_LIMIT);
        assert_eq!(Page::from_query(Some("limit=99999999999999999999999")).unwrap().limit, MAX_LIMIT);
        for bad in ["limit=0", "limit=-1", "limit=ten", "limit=1.5"] {
            assert!(Page::from_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_links_round_trip_any_cursor() {
        let page = Page { limit: 2, after: None };
        let [_, _, (_, next)] = page.fields("/api/v1/streams", 9, Some("v.com/live/a b+c&d=é"), true);
        let next = next.as_str().unwrap().to_string();
        let query = next.split_once('?').unwrap().1;
        assert_eq!(Page::from_query(Some(query)).unwrap().after.as_deref(), Some("v.com/live/a b+c&d=é"));
        let [_, _, (_, last)] = page.fields("/x", 9, Some("k"), false);
        assert!(last.is_null());
    }

    #[test]
    fn smallest_after_walks_every_entry_once() {
        let keys: Vec<String> = (0..1000).map(|i| format!("k{:04}", (i * 7919) % 1000)).collect();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, more) = smallest_after(keys.iter().map(|k| (k.as_str(), ())), after.as_deref(), 64);
            assert!(page.len() <= 64);
            assert!(page.windows(2).all(|w| w[0].0 < w[1].0));
            seen.extend(page.iter().map(|(k, _)| k.to_string()));
            after = page.last().map(|(k, _)| k.to_string());
            if !more {
                break;
            }
        }
        let mut want = keys.clone();
        want.sort();
        assert_eq!(seen, want);
        assert_eq!(smallest_after(std::iter::empty::<(&str, ())>(), None, 5), (vec![], false));
    }
}
