//! Sizes of a shard's UDP tables (SRT sessions, WebRTC sessions, addresses, lookups and
//! remembered unknown usernames): the current size and the largest seen since start. The
//! shard reports them with its traffic once a second and `GET /api/v1/shards` shows them, so a
//! flood of datagrams can be seen to leave every table within its bound.

use std::cell::Cell;

pub use crate::bridge::TableSizes;

/// The current and the largest [`TableSizes`] of one shard.
#[derive(Debug, Default)]
pub struct UdpTables {
    now: Cell<TableSizes>,
    peak: Cell<TableSizes>,
}

impl UdpTables {
    /// Updates the current sizes (and the peaks) after a table changed.
    pub fn update(&self, f: impl FnOnce(&mut TableSizes)) {
        let mut now = self.now.get();
        f(&mut now);
        self.now.set(now);
        self.peak.set(self.peak.get().max(now));
    }

    /// The current sizes and the largest seen.
    pub fn get(&self) -> (TableSizes, TableSizes) {
        (self.now.get(), self.peak.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_stay_when_tables_shrink() {
        let t = UdpTables::default();
        t.update(|s| s.webrtc_unknown = 4096);
        t.update(|s| s.srt_sessions = 2);
        t.update(|s| s.webrtc_unknown = 3);
        let (now, peak) = t.get();
        assert_eq!(now, TableSizes { srt_sessions: 2, webrtc_unknown: 3, ..Default::default() });
        assert_eq!(peak, TableSizes { srt_sessions: 2, webrtc_unknown: 4096, ..Default::default() });
    }
}
