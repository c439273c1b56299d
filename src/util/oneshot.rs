//! One value handed from any thread to one task on any executor: a job's thread telling the
//! shard task that waits for it where the job's listener is bound. Runtime-free: the waiting
//! task's waker, under a lock.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

struct Inner<T> {
    value: Option<T>,
    /// The sender is gone (it sent, or was dropped without sending).
    closed: bool,
    waker: Option<Waker>,
}

/// The sending end: [`Sender::send`] once, or drop it to say there will be no value.
pub struct Sender<T>(Arc<Mutex<Inner<T>>>);

/// The receiving end: [`Receiver::recv`].
pub struct Receiver<T>(Arc<Mutex<Inner<T>>>);

/// A new channel for one value.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Mutex::new(Inner { value: None, closed: false, waker: None }));
    (Sender(inner.clone()), Receiver(inner))
}

fn lock<T>(inner: &Mutex<Inner<T>>) -> MutexGuard<'_, Inner<T>> {
    inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T> Sender<T> {
    /// Hands `value` over and wakes the receiver (dropping `self` closes the channel).
    pub fn send(self, value: T) {
        lock(&self.0).value = Some(value);
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut inner = lock(&self.0);
            inner.closed = true;
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The value, once sent; `None` if the sender was dropped without sending.
    pub async fn recv(self) -> Option<T> {
        poll_fn(|cx| {
            let mut inner = lock(&self.0);
            if let Some(value) = inner.value.take() {
                return Poll::Ready(Some(value));
            }
            if inner.closed {
                return Poll::Ready(None);
            }
            inner.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("oneshot::Receiver")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn a_value_sent_from_another_thread_is_received() {
        let (tx, rx) = channel();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tx.send(7u16);
        });
        assert_eq!(block_on(rx.recv()), Some(7));
        sender.join().unwrap();
    }

    #[test]
    fn a_sender_dropped_without_sending_ends_the_wait() {
        let (tx, rx) = channel::<u16>();
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(tx);
        });
        assert_eq!(block_on(rx.recv()), None);
        dropper.join().unwrap();
    }
}
