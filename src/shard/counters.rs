//! Per-shard counters: connections and sessions accepted and open per listener, connections
//! that panicked or that the shard ended as stalled, why streams could not be given an
//! origin, and the questions it asked the control thread. Plain `Cell`s on the shard's own thread: no atomic,
//! no lock; the reporter copies them into a [`ShardCounters`] once a second.

use std::cell::Cell;
use std::rc::Rc;

use crate::bridge::{ControlAsk, Listener, PickFailure, ShardCounters};

/// The shard's counters.
#[derive(Debug, Default)]
pub struct Counters {
    accepted: [Cell<u64>; Listener::ALL.len()],
    open: [Cell<u64>; Listener::ALL.len()],
    panicked: [Cell<u64>; Listener::ALL.len()],
    stalled: [Cell<u64>; Listener::ALL.len()],
    idle: [Cell<u64>; Listener::ALL.len()],
    refused: [Cell<u64>; Listener::ALL.len()],
    pick_failures: [Cell<u64>; PickFailure::ALL.len()],
    control_asks: [Cell<u64>; ControlAsk::ALL.len()],
}

fn bump(cell: Option<&Cell<u64>>, by: i64) {
    if let Some(c) = cell {
        c.set(c.get().saturating_add_signed(by));
    }
}

impl Counters {
    /// Counts a connection or session accepted on `listener`; it is open until the guard drops.
    pub fn accepted(self: &Rc<Self>, listener: Listener) -> OpenGuard {
        bump(self.accepted.get(listener.index()), 1);
        bump(self.open.get(listener.index()), 1);
        OpenGuard { counters: self.clone(), listener }
    }

    /// Counts a connection whose task panicked (it was closed).
    pub fn panicked(&self, listener: Listener) {
        bump(self.panicked.get(listener.index()), 1);
    }

    /// Counts a connection the shard ended because its session stalled.
    pub fn stalled(&self, listener: Listener) {
        bump(self.stalled.get(listener.index()), 1);
    }

    /// Counts a connection the shard ended because its session moved no byte for
    /// `--relay-idle-timeout`.
    pub fn idle(&self, listener: Listener) {
        bump(self.idle.get(listener.index()), 1);
    }

    /// Counts a connection closed at accept (`--max-connections-per-ip`).
    pub fn refused(&self, listener: Listener) {
        bump(self.refused.get(listener.index()), 1);
    }

    /// Counts a stream that could not be given an origin.
    pub fn pick_failed(&self, why: PickFailure) {
        bump(self.pick_failures.get(why.index()), 1);
    }

    /// Counts a question about to be asked of the control thread (a session waits for it).
    pub fn asked(&self, what: ControlAsk) {
        bump(self.control_asks.get(what.index()), 1);
    }

    /// A copy for the report.
    pub fn snapshot(&self) -> ShardCounters {
        let by_listener = |cells: &[Cell<u64>]| Listener::ALL.iter().zip(cells).map(|(l, c)| (*l, c.get())).collect();
        let open_by_listener: std::collections::BTreeMap<Listener, u64> = by_listener(&self.open);
        ShardCounters {
            accepted: by_listener(&self.accepted),
            open: open_by_listener.values().sum(),
            open_by_listener,
            panicked: by_listener(&self.panicked),
            stalled: by_listener(&self.stalled),
            idle: by_listener(&self.idle),
            refused: by_listener(&self.refused),
            pick_failures: PickFailure::ALL.iter().zip(&self.pick_failures).map(|(p, c)| (*p, c.get())).collect(),
            control_asks: ControlAsk::ALL.iter().zip(&self.control_asks).map(|(a, c)| (*a, c.get())).collect(),
        }
    }
}

/// An open connection or session: counted open until dropped.
#[derive(Debug)]
pub struct OpenGuard {
    counters: Rc<Counters>,
    listener: Listener,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        bump(self.counters.open.get(self.listener.index()), -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_guards() {
        let c = Rc::new(Counters::default());
        let a = c.accepted(Listener::Rtmp);
        let b = c.accepted(Listener::Rtmp);
        let s = c.accepted(Listener::SrtUdp);
        c.pick_failed(PickFailure::NoOrigin);
        c.panicked(Listener::HttpStream);
        c.stalled(Listener::Rtmp);
        c.asked(ControlAsk::HlsResolve);
        drop(b);
        let snap = c.snapshot();
        assert_eq!((snap.accepted[&Listener::Rtmp], snap.open_by_listener[&Listener::Rtmp]), (2, 1));
        assert_eq!((snap.open, snap.pick_failures[&PickFailure::NoOrigin]), (2, 1));
        assert_eq!(snap.accepted.len(), Listener::ALL.len(), "zeros included");
        assert_eq!((snap.panicked[&Listener::HttpStream], snap.panicked[&Listener::Rtmp]), (1, 0));
        assert_eq!(snap.stalled[&Listener::Rtmp], 1);
        assert_eq!((snap.control_asks[&ControlAsk::HlsResolve], snap.control_asks[&ControlAsk::Claim]), (1, 0));
        drop((a, s));
        assert_eq!(c.snapshot().open, 0);
        assert_eq!(c.snapshot().accepted[&Listener::Rtmp], 2, "accepted only grows");
    }
}
