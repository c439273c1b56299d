//! Long-run tests of the readiness waits and the relays, on a real glommio executor and real
//! loopback sockets. A relayed session waits on both of its directions in one task, so the
//! quiet direction's wait is polled again each time the busy one wakes the task: these tests
//! poll one pending wait far more often than any 16-bit count allows (the vendored glommio
//! once kept one waker clone per such poll, and the task died at 32,768).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::future;
use glommio::LocalExecutorBuilder;
use glommio::net::{TcpListener, TcpStream, UdpSocket};

use super::*;

/// Runs `f` on a fresh glommio executor and returns its output; fails the test if it has not
/// finished within [`DEADLINE`] (a frozen task never wakes again, so it would hang instead).
fn on_executor<T: Send + 'static, F: Future<Output = T> + 'static>(f: impl FnOnce() -> F + Send + 'static) -> T {
    let handle = LocalExecutorBuilder::default().io_memory(1 << 20).spawn(f).expect("executor");
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(handle.join());
    });
    match finished.recv_timeout(DEADLINE) {
        Ok(result) => result.expect("executor thread"),
        Err(_) => panic!("the executor's task did not finish within {DEADLINE:?}: it froze"),
    }
}

const DEADLINE: Duration = Duration::from_secs(120);

/// Like [`on_executor`] for long runs whose speed depends on how busy the machine is: `f` bumps
/// the counter it is given as it makes progress, and the test fails when the counter has not
/// moved for [`STALL`] (a frozen task), not after a fixed total time.
fn on_executor_with_progress<T: Send + 'static, F: Future<Output = T> + 'static>(
    f: impl FnOnce(Arc<AtomicU64>) -> F + Send + 'static,
) -> T {
    let progress = Arc::new(AtomicU64::new(0));
    let theirs = Arc::clone(&progress);
    let handle = LocalExecutorBuilder::default().io_memory(1 << 20).spawn(move || f(theirs)).expect("executor");
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(handle.join());
    });
    let mut last = (0, std::time::Instant::now());
    loop {
        match finished.recv_timeout(Duration::from_secs(1)) {
            Ok(result) => return result.expect("executor thread"),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("executor thread: {e}"),
        }
        let now = progress.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, std::time::Instant::now());
        } else if last.1.elapsed() > STALL {
            panic!("no progress for {STALL:?} after {now} steps: the executor's task froze");
        }
    }
}

const STALL: Duration = Duration::from_secs(30);

/// A connected loopback pair: (the accepted side, the connecting side).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, connected) = future::zip(listener.accept(), TcpStream::connect(addr)).await;
    (accepted.unwrap(), connected.unwrap())
}

/// Wakes its own task and stays pending `polls - 1` times, then is ready: every wake-up makes
/// the executor poll the whole task again, the other futures joined with it included.
struct WakeItself {
    left: u64,
}

impl Future for WakeItself {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.left -= 1;
        if self.left == 0 {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

const MILLION: u64 = 1_000_000;

/// Races `wait` against a million self-wake-ups in one task: the wait must still be pending
/// (and alive) at the end.
async fn survives_a_million_polls(wait: impl Future<Output = ()>) {
    let woken = future::or(
        async {
            wait.await;
            false
        },
        async {
            WakeItself { left: MILLION }.await;
            true
        },
    )
    .await;
    assert!(woken, "the quiet wait completed although nothing happened on its socket");
}

#[test]
fn a_pending_readable_wait_polled_a_million_times_keeps_its_task_and_still_fires() {
    on_executor(|| async {
        let (quiet, peer) = pair().await;
        let wait = quiet.readable();
        futures_lite::pin!(wait);
        survives_a_million_polls(async { wait.as_mut().await.unwrap() }).await;
        // The same wait, polled a million times, still completes when its event comes.
        let mut peer = peer;
        futures_lite::AsyncWriteExt::write_all(&mut peer, b"x").await.unwrap();
        wait.await.unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(recv(&quiet, &mut byte).await.unwrap(), 1);
    });
}

#[test]
fn a_pending_writable_wait_polled_a_million_times_keeps_its_task_and_still_fires() {
    on_executor(|| async {
        let (full, peer) = pair().await;
        // Fill the socket and its peer's receive buffer: no one reads.
        let chunk = vec![0u8; 64 * 1024];
        let mut queued = 0usize;
        loop {
            // SAFETY: send reads at most `chunk.len()` bytes from the valid `chunk`.
            let n = unsafe {
                libc::send(
                    full.as_raw_fd(),
                    chunk.as_ptr().cast(),
                    chunk.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n <= 0 {
                break;
            }
            queued += n as usize;
        }
        let wait = full.writable();
        futures_lite::pin!(wait);
        survives_a_million_polls(async { wait.as_mut().await.unwrap() }).await;
        // Drain the peer: the wait fires.
        let mut buf = vec![0u8; 1 << 20];
        let mut drained = 0usize;
        while drained < queued {
            drained += recv(&peer, &mut buf).await.unwrap();
        }
        wait.await.unwrap();
    });
}

#[test]
fn a_pending_datagram_receive_polled_a_million_times_keeps_its_task() {
    on_executor(|| async {
        let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = quiet.local_addr().unwrap();
        let mut buf = [0u8; 16];
        let n = {
            let received = quiet.recv_from(&mut buf);
            futures_lite::pin!(received);
            survives_a_million_polls(async {
                received.as_mut().await.unwrap();
            })
            .await;
            // The same receive, polled a million times, still gets the next datagram.
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sender.send_to(b"hi", addr).unwrap();
            received.await.unwrap().0
        };
        assert_eq!(n, 2);
        assert_eq!(&buf[..2], b"hi");
    });
}

/// Messages sent through a relayed session (busy: `client` -> `origin`), one at a time, each
/// waiting for the previous to arrive, so each is its own wake-up of the session's task, while
/// the other direction (origin -> client) stays quiet in the same task, as a publisher's
/// acknowledgements do.
const RELAYED_MESSAGES: u64 = 100_000;

fn relay_carries_messages_one_wake_up_each(mode: RelayMode) {
    on_executor_with_progress(move |progress| async move {
        let (client_far, client) = pair().await;
        let (origin, origin_far) = pair().await;
        let (bytes_up, bytes_down) = (Cell::new(0u64), Cell::new(0u64));
        let session = async {
            let up = one_way(mode, &client, &origin, &bytes_up, Duration::ZERO);
            let down = one_way(mode, &origin, &client, &bytes_down, Duration::ZERO);
            future::or(up, down).await
        };
        let driver = async {
            let mut byte = [0u8; 1];
            for i in 0..RELAYED_MESSAGES {
                send_all(&client_far, &[i as u8]).await.unwrap();
                assert_eq!(recv(&origin_far, &mut byte).await.unwrap(), 1, "message {i}");
                assert_eq!(byte[0], i as u8);
                progress.store(i + 1, Ordering::Relaxed);
            }
            // The quiet direction still works after all that.
            send_all(&origin_far, b"ack").await.unwrap();
            let mut ack = [0u8; 3];
            let mut got = 0;
            while got < 3 {
                got += recv(&client_far, &mut ack[got..]).await.unwrap();
            }
            assert_eq!(&ack, b"ack");
            client_far.shutdown(std::net::Shutdown::Both).await.unwrap();
        };
        let (ended, ()) = future::zip(session, driver).await;
        assert_eq!(ended.unwrap(), RELAYED_MESSAGES, "the session ends when the client closes");
        assert_eq!((bytes_up.get(), bytes_down.get()), (RELAYED_MESSAGES, 3));
    });
}

#[test]
fn the_splice_relay_carries_a_hundred_thousand_wake_ups_with_a_quiet_direction() {
    relay_carries_messages_one_wake_up_each(RelayMode::Splice);
}

#[test]
fn the_copy_relay_carries_a_hundred_thousand_wake_ups_with_a_quiet_direction() {
    relay_carries_messages_one_wake_up_each(RelayMode::Copy);
}

/// The vendored glommio keeps its preemption timer armed across reactor loops (fewer
/// io_uring enters per wake-up, see vendor/glommio/STREAMGATE-PATCH.md), so it can fire
/// between the reactor's poll, which wakes tasks, and the run of the task queues. The
/// executor then ran nothing and used to park with the woken tasks still queued, and
/// nothing left to wake it: the relay froze within a few thousand messages. A short
/// preemption period makes that window frequent.
#[test]
fn tasks_woken_just_before_the_preemption_timer_fires_still_run() {
    let handle = LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .preempt_timer(Duration::from_micros(50))
        .spawn(|| async {
            let (a_far, a) = pair().await;
            let (b, b_far) = pair().await;
            let counter = Cell::new(0u64);
            let relay = one_way(RelayMode::Copy, &a, &b, &counter, Duration::ZERO);
            let driver = async {
                let mut byte = [0u8; 1];
                for i in 0..20_000u32 {
                    send_all(&a_far, &[i as u8]).await.unwrap();
                    assert_eq!(recv(&b_far, &mut byte).await.unwrap(), 1);
                }
                a_far.shutdown(std::net::Shutdown::Both).await.unwrap();
            };
            let (moved, ()) = future::zip(relay, driver).await;
            assert_eq!(moved.unwrap(), 20_000);
        })
        .expect("executor");
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(handle.join());
    });
    finished
        .recv_timeout(Duration::from_secs(300))
        .expect("the executor parked with runnable tasks: it froze")
        .expect("executor thread");
}
