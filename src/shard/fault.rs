//! Faults injected into sessions, for tests of what the shard does when a session's task
//! panics or stops being woken (debug builds only; release builds compile [`inject`] to
//! nothing and never read the variable).
//!
//! `STREAMGATE_FAULT=panic:NAME,freeze:NAME` (read once): the first session of a stream whose
//! name is NAME panics, or waits forever without moving a byte, where its protocol calls
//! [`inject`] (right before its relay starts; an edge or local player's once its session
//! opened). Each fault fires once.

/// Fires the fault set for the current connection's session, if any (debug builds).
#[cfg(debug_assertions)]
pub async fn inject() {
    let Some(key) = super::conn::current().and_then(|c| c.label()).map(|l| l.key) else {
        return;
    };
    use std::sync::{Mutex, OnceLock};
    static FAULTS: OnceLock<Mutex<Vec<(String, String)>>> = OnceLock::new();
    let faults = FAULTS.get_or_init(|| {
        let spec = std::env::var("STREAMGATE_FAULT").unwrap_or_default();
        let parsed = spec.split(',').filter_map(|f| f.split_once(':')).map(|(a, n)| (a.to_string(), n.to_string()));
        Mutex::new(parsed.collect())
    });
    let name = key.as_str().rsplit('/').next().unwrap_or_default();
    let fired = {
        let mut faults = faults.lock().unwrap_or_else(|e| e.into_inner());
        let at = faults.iter().position(|(_, n)| n == name);
        at.map(|i| faults.remove(i).0)
    };
    match fired.as_deref() {
        Some("panic") => panic!("fault injected into {key} (STREAMGATE_FAULT)"),
        Some("freeze") => std::future::pending::<()>().await,
        _ => {}
    }
}

/// Release builds inject nothing.
#[cfg(not(debug_assertions))]
pub async fn inject() {}
