//! The file queue as a channel: [`QueueSender`] and [`QueueReceiver`] implement the crate's
//! [`Sender`] and [`Receiver`], so the conformance harness and `ipcprop check` run over it.
//!
//! The queue itself is persistent and has no ends; the channel adds the one thing a
//! receiver needs to stop: knowing that every sender is gone. As with the ring, that is a
//! pair of liveness pipes whose copies the kernel counts across fork and SIGKILL (a
//! waiting receiver sleeps on the file's writes and on that pipe, and wakes as soon as the
//! last sender is gone). Messages stay in the file whatever happens to either end.
//!
//! As on every channel, "nothing arrived" is an error here ([`Error::Empty`],
//! [`Error::Timeout`]), where [`FileQueue::pop`] and [`FileQueue::pop_timeout`] return
//! `Ok(None)`: the channel has three outcomes (a message, the end of the stream, nothing
//! yet) and spells the last two as errors, as `std::sync::mpsc` does; the queue has no end
//! of stream, and its `Option` is the plainer way to say "no message".
//!
//! Sending with a deadline ([`Sender::try_send`], [`Sender::send_timeout`]): the queue is
//! unbounded (on disk), so a push never waits for room; what it may wait for is the
//! queue's lock, held by another handle inside an operation (or stopped there). The
//! deadline bounds that wait: [`Error::Full`] (or [`Error::Timeout`]) means the lock was
//! not free in time, and nothing was written.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{FileQueue, QueueConfig};
use crate::error::{Error, Result};
use crate::liveness::{self, Liveness};
use crate::transport::{Receiver, Sender, Wait};

/// The longest a waiting receiver sleeps before it looks again (it also wakes for every
/// write to the file and when the last sender goes).
const LIVENESS_PERIOD: Duration = Duration::from_millis(20);

/// Opens (creating it if needed) the queue at `path` as a channel: any number of processes
/// may send on copies of the sender; one receives.
///
/// ```
/// use ipcprop::queue::{self, QueueConfig};
/// use ipcprop::{Receiver, Sender};
/// # let dir = std::env::temp_dir().join(format!("ipcprop-chan-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let (mut tx, mut rx) = queue::channel(dir.join("c.q"), QueueConfig::new())?;
/// tx.send(b"persisted")?;
/// drop(tx);
/// assert_eq!(rx.recv()?, b"persisted");
/// assert!(rx.recv().unwrap_err().is_disconnected());
/// # drop(rx); std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn channel(
    path: impl AsRef<Path>,
    config: QueueConfig,
) -> Result<(QueueSender, QueueReceiver)> {
    let path = path.as_ref();
    if config.exclusive() {
        return Err(super::exclusive_misuse(
            "a channel is two handles on one queue; an exclusive configuration allows one",
        ));
    }
    let (s_live, r_live) = liveness::pair()?;
    Ok((
        QueueSender {
            queue: FileQueue::open(path, config)?,
            max: config.max_message_len,
            _live: s_live,
        },
        QueueReceiver {
            queue: FileQueue::open(path, config)?,
            max: config.max_message_len,
            live: r_live,
            period: LIVENESS_PERIOD,
        },
    ))
}

/// The sending end of a file-queue channel.
#[derive(Debug)]
pub struct QueueSender {
    queue: FileQueue,
    max: usize,
    /// Held, never read: its existence is what the receiver watches.
    _live: Liveness,
}

impl QueueSender {
    /// The queue under this end.
    pub fn queue(&self) -> &FileQueue {
        &self.queue
    }

    /// Another sender on the same queue (any number may send): its own handle on the file
    /// ([`FileQueue::open_again`]) and its own copy of this end's liveness, so the receiver
    /// sees [`Error::Disconnected`] once every copy is gone.
    ///
    /// ```
    /// use ipcprop::queue::{self, QueueConfig};
    /// use ipcprop::{Receiver, Sender};
    /// # let dir = std::env::temp_dir().join(format!("ipcprop-clone-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let (mut tx, mut rx) = queue::channel(dir.join("c.q"), QueueConfig::new())?;
    /// let mut tx2 = tx.try_clone()?;
    /// tx.send(b"one")?;
    /// drop(tx);
    /// tx2.send(b"two")?;
    /// drop(tx2);
    /// let got: Vec<Vec<u8>> = rx.iter().collect::<Result<_, _>>()?;
    /// assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    /// # drop(rx); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_clone(&self) -> Result<QueueSender> {
        Ok(QueueSender {
            queue: self.queue.open_again()?,
            max: self.max,
            _live: self._live.try_clone()?,
        })
    }
}

impl Sender for QueueSender {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.queue.push(msg)
    }

    /// The deadline bounds the wait for the queue's lock (the queue itself is never full):
    /// [`Error::Full`] / [`Error::Timeout`] mean another handle held it until then, and
    /// nothing was written.
    fn send_wait(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        let Some(deadline) = wait.deadline() else {
            return self.queue.push(msg);
        };
        if self.queue.push_before(msg, deadline)? {
            Ok(())
        } else {
            Err(wait.expired_send())
        }
    }

    fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<()> {
        self.queue.push_batch(msgs)
    }

    fn max_message_len(&self) -> usize {
        self.max
    }
}

/// The receiving end of a file-queue channel.
#[derive(Debug)]
pub struct QueueReceiver {
    queue: FileQueue,
    max: usize,
    live: Liveness,
    /// [`LIVENESS_PERIOD`]; tests set it long, to show what wakes the receiver sooner.
    period: Duration,
}

impl QueueReceiver {
    /// The queue under this end.
    pub fn queue(&self) -> &FileQueue {
        &self.queue
    }

    /// A new receiving end on the same queue file, for a consumer that restarts after every
    /// sender is gone: it drains what is there, then reports Disconnected.
    pub fn reattach(&self) -> Result<QueueReceiver> {
        let (senders, live) = liveness::pair()?;
        drop(senders); // no sender of this new pair will ever exist
        Ok(QueueReceiver {
            queue: self.queue.open_again()?,
            max: self.max,
            live,
            period: self.period,
        })
    }
}

impl Receiver for QueueReceiver {
    fn recv_with<R>(&mut self, wait: Wait, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let deadline = wait.deadline();
        // Whether the watch is set and the writes it saw are forgotten since before the
        // last look: only then may the receiver sleep on it. While messages flow, a look
        // finds one and the watch costs nothing.
        let mut armed = false;
        loop {
            // A sender stopped (or slow) inside a push holds the lock: a receive with a
            // deadline does not wait for it past the deadline.
            let popped = match deadline {
                Some(d) => self.queue.pop_before(d)?,
                None => self.queue.pop()?,
            };
            if let Some(m) = popped {
                return Ok(f(&m));
            }
            if !self.live.alive() {
                // The last sender may have pushed just before it went: look once more.
                return match self.queue.pop()? {
                    Some(m) => Ok(f(&m)),
                    None => Err(Error::Disconnected),
                };
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => self.period,
            };
            if left.is_zero() {
                return Err(wait.expired());
            }
            if !armed {
                // Watch, then look again: a push after this wakes the wait below.
                self.queue.arm_watch()?;
                armed = true;
                continue;
            }
            // Woken by a write, by the last sender going (its liveness pipe closes), or
            // after the period; the wait forgets the writes it saw, so it stays armed.
            self.queue
                .wait_for_write_or(left.min(self.period), Some(self.live.peer.as_fd()))?;
        }
    }

    fn max_message_len(&self) -> usize {
        self.max
    }
}

crate::transport::receiver_into_iter!({} QueueReceiver);

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel in a fresh directory (removed on drop) whose receiver would sleep an hour
    /// between looks: anything that returns sooner was woken.
    fn sleepy() -> (tempfile::TempDir, QueueSender, QueueReceiver) {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = channel(dir.path().join("c.q"), QueueConfig::new()).unwrap();
        rx.period = Duration::from_secs(3600);
        (dir, tx, rx)
    }

    /// Runs `rx.recv()` in a thread while this one sleeps 50 ms and then runs `then`;
    /// fails if the receive has not returned 30 s later.
    fn recv_while(rx: QueueReceiver, then: impl FnOnce()) -> Result<Vec<u8>> {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let mut rx = rx;
            let _ = done_tx.send(rx.recv());
        });
        std::thread::sleep(Duration::from_millis(50));
        then();
        let got = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the waiting receiver was not woken");
        waiter.join().unwrap();
        got
    }

    #[test]
    fn a_waiting_receiver_wakes_when_the_last_sender_goes() {
        let (_dir, tx, rx) = sleepy();
        let tx2 = tx.try_clone().unwrap();
        let got = recv_while(rx, move || {
            drop(tx);
            drop(tx2);
        });
        assert!(matches!(got, Err(Error::Disconnected)), "{got:?}");
    }

    #[test]
    fn a_waiting_receiver_wakes_for_a_push() {
        let (_dir, tx, rx) = sleepy();
        // Pushed through another handle on the file, as another process would.
        let other = tx.queue().open_again().unwrap();
        assert_eq!(
            recv_while(rx, move || other.push(b"late").unwrap()).unwrap(),
            b"late"
        );
        drop(tx);
    }

    /// The CPU time this thread has used.
    fn thread_cpu() -> Duration {
        use nix::time::{clock_gettime, ClockId};
        let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
        Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
    }

    #[test]
    fn a_waiting_receiver_sleeps() {
        let (_dir, tx, rx) = sleepy();
        let other = tx.queue().open_again().unwrap();
        let (cpu_tx, cpu_rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let mut rx = rx;
            let before = thread_cpu();
            let got = rx.recv();
            let _ = cpu_tx.send(thread_cpu() - before);
            got
        });
        std::thread::sleep(Duration::from_millis(500));
        other.push(b"at last").unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), b"at last");
        // Half a second of looking over and over takes far more, even on a loaded machine.
        let cpu = cpu_rx.recv().unwrap();
        assert!(
            cpu < Duration::from_millis(50),
            "{cpu:?} of CPU while waiting"
        );
        drop(tx);
    }

    #[test]
    fn both_ends_report_the_configured_maximum_message_length() {
        let dir = tempfile::tempdir().unwrap();
        let config = QueueConfig::new().with_max_message_len(1000);
        let (tx, rx) = channel(dir.path().join("c.q"), config).unwrap();
        assert_eq!(tx.max_message_len(), 1000);
        assert_eq!(rx.max_message_len(), 1000);
        assert_eq!(rx.reattach().unwrap().max_message_len(), 1000);
        assert_eq!(tx.try_clone().unwrap().max_message_len(), 1000);
    }

    #[test]
    fn a_receive_that_does_not_wait_answers_with_what_it_finds() {
        let (_dir, mut tx, mut rx) = sleepy();
        assert!(matches!(rx.try_recv(), Err(Error::Empty)));
        tx.send(b"m").unwrap();
        assert_eq!(rx.try_recv().unwrap(), b"m");
        drop(tx);
        // Waits: a child another test forks meanwhile may hold a copy of the sender's
        // liveness pipe for a moment.
        let end = rx.recv_timeout(Duration::from_secs(30));
        assert!(matches!(end, Err(Error::Disconnected)), "{end:?}");
    }
}
