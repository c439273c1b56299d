//! Per-stream traffic counters on a shard.
//!
//! Each relayed connection gets a [`Traffic`] (two `Cell`s, bumped by the relay with no lock
//! and no atomic). Once a second the shard's reporter collects what every connection moved
//! since the last report, sums it per stream and sends one batch to the control thread; a
//! finished connection is dropped from the table after its last bytes were reported.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use crate::balance::StreamKey;
use crate::balance::session::Protocol;
use crate::bridge::TrafficDelta;

/// Bytes a connection moved: `bytes_in` from its client, `bytes_out` to its client. Both only
/// grow; the table remembers how much of them it already reported.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    reported: Cell<(u64, u64)>,
}

impl Traffic {
    /// What moved since the previous call.
    fn take_delta(&self) -> (u64, u64) {
        let (i, o) = (self.bytes_in.get(), self.bytes_out.get());
        let (ri, ro) = self.reported.replace((i, o));
        (i.saturating_sub(ri), o.saturating_sub(ro))
    }
}

/// The shard's live connections' counters.
#[derive(Debug, Default)]
pub struct TrafficTable {
    entries: RefCell<Vec<(StreamKey, Protocol, Rc<Traffic>)>>,
}

impl TrafficTable {
    /// Counters for a new connection of `key` speaking `protocol`.
    pub fn register(&self, key: &StreamKey, protocol: Protocol) -> Rc<Traffic> {
        let traffic = Rc::new(Traffic::default());
        self.entries.borrow_mut().push((key.clone(), protocol, traffic.clone()));
        traffic
    }

    /// What every connection moved since the previous call, summed per stream and protocol;
    /// forgets connections that have ended.
    pub fn take(&self) -> Vec<TrafficDelta> {
        let mut sums: HashMap<(StreamKey, Protocol), (u64, u64)> = HashMap::new();
        self.entries.borrow_mut().retain(|(key, protocol, t)| {
            let (i, o) = t.take_delta();
            if i + o > 0 {
                let sum = sums.entry((key.clone(), *protocol)).or_default();
                sum.0 += i;
                sum.1 += o;
            }
            Rc::strong_count(t) > 1
        });
        sums.into_iter()
            .map(|((key, protocol), (bytes_in, bytes_out))| TrafficDelta { key, protocol, bytes_in, bytes_out })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_stream_and_forgets_finished_connections() {
        let table = TrafficTable::default();
        let k = StreamKey::from_url("rtmp://h/live/a").unwrap();
        let (a, b) = (table.register(&k, Protocol::Rtmp), table.register(&k, Protocol::Rtmp));
        a.bytes_in.set(10);
        b.bytes_out.set(5);
        drop(b);
        let rtmp = |bytes_in, bytes_out| TrafficDelta { key: k.clone(), protocol: Protocol::Rtmp, bytes_in, bytes_out };
        assert_eq!(table.take(), vec![rtmp(10, 5)]);
        assert!(table.take().is_empty(), "nothing moved since");
        assert_eq!(a.bytes_in.get(), 10, "the connection keeps its totals");
        a.bytes_out.set(1);
        assert_eq!(table.take(), vec![rtmp(0, 1)]);
        assert_eq!(table.entries.borrow().len(), 1, "the finished connection is gone");
        let flv = table.register(&k, Protocol::HttpFlv);
        flv.bytes_out.set(7);
        a.bytes_out.set(2);
        let mut batch = table.take();
        batch.sort_by_key(|d| d.protocol);
        let http = TrafficDelta { key: k.clone(), protocol: Protocol::HttpFlv, bytes_in: 0, bytes_out: 7 };
        assert_eq!(batch, vec![rtmp(0, 1), http], "one delta per protocol");
    }
}
