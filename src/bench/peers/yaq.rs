//! `yaque` 0.6, a file queue (one sender, one receiver, each may be in its own process):
//! a directory of append-only segment files, a sender that appends each message with one
//! `write` (no fsync: the class of the queue's
//! [`Durability::None`](crate::queue::Durability::None)), a receiver that follows the
//! segment's tail and sleeps on inotify (through `notify`) when it has read everything.
//!
//! Its API is async. The sender uses `Sender::try_send`, which is synchronous and what the
//! async `send` calls (it only waits when a maximum queue size is set, and none is here).
//! The receiver uses the async `Receiver::recv`, run by [`block_on`], a minimal executor
//! of a few lines that parks the thread until the future's waker unparks it (no runtime:
//! `recv` is runtime-agnostic, and yaque's own examples use `futures`' `block_on`, which
//! does the same). Each message is then committed as yaque's users do, with
//! `RecvGuard::commit` (without it, dropping the guard rolls the receive back); the
//! default receiver saves its read position to disk every 250 commits and when dropped.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use yaque::{Receiver, Sender, TryRecvError};

use crate::bench::queue::{expect_none_left, producer_consumer, take_n, BenchDir};
use crate::bench::{consume, expect_count, failed, payload};
use crate::Result;

/// Wakes a thread parked in [`block_on`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `f` to completion on this thread, parking it while `f` is pending. A wake before
/// the park leaves the thread's token set, so the park returns at once: no wake is lost.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn io_err(what: &str, e: std::io::Error) -> String {
    format!("yaque {what}: {e}")
}

/// One process sending `n` messages of `size` bytes (`try_send` each). Only the sends are
/// timed; afterwards a receiver takes, reads ([`consume`]) and commits every message, and
/// the run fails unless exactly `n` messages of `size` bytes were there.
pub fn push(dir: &BenchDir, n: u64, size: usize) -> Result<Duration> {
    push_sending(dir, n, n, size)
}

/// [`push`], sending `sent` messages and expecting `n`.
fn push_sending(dir: &BenchDir, sent: u64, n: u64, size: usize) -> Result<Duration> {
    let scratch = dir.subdir("yaque")?;
    let mut tx = Sender::open(scratch.path()).map_err(|e| failed(io_err("open sender", e)))?;
    let msg = payload(size);
    let start = Instant::now();
    for _ in 0..sent {
        tx.try_send(&msg[..])
            .map_err(|e| failed(format!("yaque send: {e}")))?;
    }
    let t = start.elapsed();
    drop(tx);
    let got = drain(scratch.path()).map_err(failed)?;
    expect_count(got, n, size).map_err(failed)?;
    Ok(t)
}

/// Takes, reads and commits every message in the queue at `base` without waiting; returns
/// how many there were and their bytes.
fn drain(base: &std::path::Path) -> std::result::Result<(u64, u64), String> {
    let mut rx = Receiver::open(base).map_err(|e| io_err("open receiver", e))?;
    let mut got = (0u64, 0u64);
    loop {
        match rx.try_recv() {
            Ok(m) => {
                consume(&m);
                got = (got.0 + 1, got.1 + m.len() as u64);
                m.commit().map_err(|e| io_err("commit", e))?;
            }
            Err(TryRecvError::QueueEmpty) => return Ok(got),
            Err(TryRecvError::Io(e)) => return Err(io_err("receive", e)),
        }
    }
}

/// Two processes on one queue, each opening its end after the fork: a producer sending
/// `n` messages of `size` bytes (`try_send` each), a consumer receiving them with
/// `recv` (sleeping on inotify when it has read everything), reading every byte
/// ([`consume`]) and committing each. Fails unless the consumer got exactly `n` messages
/// of `size` bytes and nothing is left afterwards. The time from the first send (once
/// both ends are open) until the consumer has committed the last message.
///
/// `recv` has no deadline: a consumer still waiting after two minutes (a message lost) is
/// killed and reported as hung.
pub fn pair(dir: &BenchDir, n: u64, size: usize) -> Result<Duration> {
    pair_sending(dir, n, n, size)
}

/// [`pair`], the producer sending `sent` messages where the consumer expects `n`.
fn pair_sending(dir: &BenchDir, sent: u64, n: u64, size: usize) -> Result<Duration> {
    let scratch = dir.subdir("yaque")?;
    let base = scratch.path();
    // The queue's directory, version file and first segment are made here, so the two
    // processes only open them.
    drop(Sender::open(base).map_err(|e| failed(io_err("open sender", e)))?);
    let msg = payload(size);
    let t = producer_consumer(
        |marks| {
            let mut tx = Sender::open(base).map_err(|e| io_err("open sender", e))?;
            marks.start()?;
            for _ in 0..sent {
                tx.try_send(&msg[..])
                    .map_err(|e| format!("yaque send: {e}"))?;
            }
            Ok(())
        },
        |marks| {
            let mut rx = Receiver::open(base).map_err(|e| io_err("open receiver", e))?;
            marks.ready()?;
            // `recv` waits as long as it takes: it never comes back empty.
            take_n(marks, n, size, || {
                let m = block_on(rx.recv()).map_err(|e| io_err("receive", e))?;
                consume(&m);
                let len = m.len();
                m.commit().map_err(|e| io_err("commit", e))?;
                Ok(Some(len))
            })
        },
    )?;
    let (left, _) = drain(base).map_err(failed)?;
    expect_none_left(left, "queue", n)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::peers::testing::{bench_dir, serial};

    #[test]
    fn push_checks_out_at_every_size() {
        let _serial = serial();
        let dir = bench_dir();
        for size in [0, 64, 4096] {
            let took = push(&dir, 100, size).unwrap_or_else(|e| panic!("size {size}: {e}"));
            assert!(took > Duration::ZERO, "size {size}: nothing timed");
        }
    }

    #[test]
    fn pair_moves_every_message_between_two_processes() {
        let _serial = serial();
        let dir = bench_dir();
        for size in [0, 64, 4096] {
            let took = pair(&dir, 100, size).unwrap_or_else(|e| panic!("size {size}: {e}"));
            assert!(took > Duration::ZERO, "size {size}: nothing timed");
        }
    }

    #[test]
    fn a_count_that_is_off_fails_the_run() {
        let _serial = serial();
        let dir = bench_dir();
        assert!(push_sending(&dir, 10, 10, 64).is_ok());
        assert!(push_sending(&dir, 9, 10, 64).is_err());
        assert!(push_sending(&dir, 11, 10, 64).is_err());
        assert!(pair_sending(&dir, 10, 10, 64).is_ok());
        let e = pair_sending(&dir, 11, 10, 64).unwrap_err();
        assert!(e.to_string().contains("1 messages left"), "{e}");
    }

    #[test]
    fn block_on_waits_for_a_wake_from_another_thread() {
        // A future that is pending until another thread sets the flag and wakes it.
        struct Flag(Arc<std::sync::Mutex<(bool, Option<Waker>)>>);
        impl Future for Flag {
            type Output = u8;
            fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u8> {
                let mut s = self.0.lock().unwrap();
                if s.0 {
                    Poll::Ready(7)
                } else {
                    s.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
        // Wakers are woken by value or by reference: both must unpark the thread.
        for by_ref in [false, true] {
            let shared = Arc::new(std::sync::Mutex::new((false, None::<Waker>)));
            let other = shared.clone();
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                let mut s = other.lock().unwrap();
                s.0 = true;
                if let Some(w) = s.1.take() {
                    if by_ref {
                        w.wake_by_ref();
                    } else {
                        w.wake();
                    }
                }
            });
            assert_eq!(block_on(Flag(shared)), 7, "by_ref: {by_ref}");
            t.join().unwrap();
        }
    }

    #[test]
    fn io_errors_name_yaque_and_the_step() {
        let e = io_err("open sender", std::io::Error::other("no space"));
        assert_eq!(e, "yaque open sender: no space");
    }
}
