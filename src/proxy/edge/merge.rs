//! Merged writes' waits (`--edge-merge-write D`): a player that sent everything it had waits
//! until D after its last send before it takes what came meanwhile.
//!
//! One ticker task per shard wakes every wait that is due, instead of a timer per player and
//! wait: a glommio timer is allocated and armed for each, which at 25 waits a second per player
//! doubled the shard's allocations (heaptrack, 600 players: 1.14 million calls in 14 s against
//! 0.65 million without merged writes). The waits are in a thread-local table (one entry per
//! waiting player, removed when its wait ends or is dropped, so bounded by the shard's
//! players); the ticker sleeps until the earliest one is due and wakes all that are due within
//! [`SLACK`] of it, so players whose sends fell close together go on together. It runs only
//! while some wait is pending.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future;

/// A wait due within this much of now counts as due (so one wake serves waits a little apart).
pub const SLACK: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Waits {
    /// Each pending wait: when it is due and its task's waker.
    pending: RefCell<HashMap<u64, (Instant, Waker)>>,
    next_id: Cell<u64>,
    /// The ticker runs, and when it means to wake next.
    ticking: Cell<bool>,
    target: Cell<Option<Instant>>,
    /// The ticker's own waker while it sleeps, to bring it forward for an earlier wait.
    ticker: RefCell<Option<Waker>>,
    /// An earlier wait came while the ticker slept.
    kicked: Cell<bool>,
}

thread_local! {
    static WAITS: Waits = Waits::default();
}

/// Whether a wait until `due` is over (due within [`SLACK`]).
pub fn is_due(due: Instant) -> bool {
    Instant::now() + SLACK >= due
}

/// Resolves once `due` is reached ([`is_due`]).
pub async fn until(due: Instant) {
    let id = WAITS.with(|w| w.next_id.replace(w.next_id.get() + 1));
    let _leave = Leave(id);
    poll_fn(|cx| {
        if is_due(due) {
            return Poll::Ready(());
        }
        WAITS.with(|w| {
            w.pending.borrow_mut().insert(id, (due, cx.waker().clone()));
            if !w.ticking.replace(true) {
                glommio::spawn_local(tick()).detach();
            } else if w.target.get().is_some_and(|target| due + SLACK < target) {
                w.kicked.set(true);
                if let Some(ticker) = w.ticker.borrow_mut().take() {
                    ticker.wake();
                }
            }
        });
        Poll::Pending
    })
    .await
}

/// Removes a wait from the table when it ends or its task drops it.
struct Leave(u64);

impl Drop for Leave {
    fn drop(&mut self) {
        // try_with: never panic while the thread's locals are being torn down.
        let _ = WAITS.try_with(|w| w.pending.borrow_mut().remove(&self.0));
    }
}

/// Wakes the waits as they fall due, until none is pending.
async fn tick() {
    loop {
        let next = WAITS.with(|w| w.pending.borrow().values().map(|(due, _)| *due).min());
        let Some(next) = next else {
            WAITS.with(|w| {
                w.ticking.set(false);
                w.target.set(None);
            });
            return;
        };
        WAITS.with(|w| w.target.set(Some(next)));
        let wait = next.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            let kicked = poll_fn(|cx| {
                WAITS.with(|w| {
                    if w.kicked.replace(false) {
                        return Poll::Ready(());
                    }
                    *w.ticker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                })
            });
            future::or(glommio::timer::sleep(wait), kicked).await;
        }
        let horizon = Instant::now() + SLACK;
        let due: Vec<Waker> = WAITS.with(|w| {
            let mut pending = w.pending.borrow_mut();
            let ids: Vec<u64> = pending.iter().filter(|(_, (at, _))| *at <= horizon).map(|(id, _)| *id).collect();
            ids.iter().filter_map(|id| pending.remove(id)).map(|(_, waker)| waker).collect()
        });
        due.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// Many waits at spread times on one executor: each ends no earlier than [`SLACK`] before
    /// its time and not long after it, the table empties and the ticker stops; a wait dropped
    /// before it is due leaves no entry.
    #[test]
    fn waits_end_when_due_and_leave_nothing_behind() {
        let handle = glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let start = Instant::now();
                let late = Rc::new(Cell::new(Duration::ZERO));
                let mut tasks = Vec::new();
                // Later waits first, so an earlier one has to bring the ticker forward.
                for i in (0..200u64).rev() {
                    let due = start + Duration::from_millis(20 + (i % 50) * 3);
                    let late = late.clone();
                    tasks.push(glommio::spawn_local(async move {
                        until(due).await;
                        let now = Instant::now();
                        assert!(now + SLACK >= due, "woke {:?} early", due - now);
                        late.set(late.get().max(now.saturating_duration_since(due)));
                    }));
                }
                let dropped = glommio::spawn_local(until(start + Duration::from_secs(60)));
                glommio::timer::sleep(Duration::from_millis(5)).await;
                drop(dropped);
                for task in tasks {
                    task.await;
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
                WAITS.with(|w| {
                    assert!(w.pending.borrow().is_empty(), "waits left in the table");
                    assert!(!w.ticking.get(), "the ticker still runs with nothing to wake");
                });
                late.get()
            })
            .unwrap();
        let late = handle.join().unwrap();
        assert!(late < Duration::from_millis(100), "a wait ended {late:?} after it was due");
    }
}
