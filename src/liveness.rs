//! Knowing whether the other end of a channel still exists, in any process: the end of
//! stream of the shared-memory ring and the file queue's channel, and a way to add
//! [`Error::Disconnected`] to a transport of your own that lacks it.
//!
//! Two pipes nobody writes to. The sender keeps the write end of one (its "I exist" pipe),
//! the receiver the read end of the other. The kernel counts the copies of each descriptor
//! across `fork`, exec and descriptor passing, and closes them when a process dies, even by
//! SIGKILL. So the receiver sees `POLLHUP` on its end of the sender's pipe exactly when the
//! last copy of the sender is gone, and the sender sees `POLLERR` on its end of the
//! receiver's pipe when the last receiver is gone. Dropping a copy in a process that never
//! used it changes nothing while another copy lives: the post-fork cleanup is harmless.
//! Every descriptor is made with `O_CLOEXEC`: a program either end execs does not keep the
//! other end alive.
//!
//! ```
//! use ipcprop::liveness;
//!
//! let (sender_side, receiver_side) = liveness::pair()?;
//! assert!(receiver_side.alive() && sender_side.alive());
//! drop(sender_side); // or its process exits, or is SIGKILLed
//! assert!(!receiver_side.alive());
//! # Ok::<(), ipcprop::Error>(())
//! ```
//!
//! [`with_end_of_stream`] wraps the two ends of any transport so that the receiver says
//! `Disconnected` once every copy of the sender is gone and everything it sent was
//! received, and the sender says `Disconnected` once the receiver is gone (see there for
//! what it costs).

use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};

/// One end's liveness descriptors: its own "I exist" descriptor and the one that tells
/// whether the peer exists. Made by [`pair`].
#[derive(Debug)]
pub struct Liveness {
    /// Our "I exist" descriptor; `None` once given up (on drop). Held, not read, by ends
    /// that let it close with them (the queue channel); the ring gives it up explicitly.
    #[cfg_attr(ipcprop_loom, allow(dead_code))]
    pub(crate) own: Option<OwnedFd>,
    /// The descriptor that tells whether the peer exists.
    pub(crate) peer: OwnedFd,
    /// What `poll` reports on `peer` when the peer is gone.
    gone: PollFlags,
}

/// `(sender's, receiver's)` liveness: give the first to the sending end, the second to the
/// receiving end, before the processes fork.
///
/// # Errors
///
/// [`Error::Io`] if the pipes cannot be made (the descriptor limit).
pub fn pair() -> Result<(Liveness, Liveness)> {
    let (s_read, s_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    let (r_read, r_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    Ok((
        Liveness::sender(s_write, r_write),
        Liveness::receiver(r_read, s_read),
    ))
}

impl Liveness {
    /// The sender's: it holds its own pipe's write end, and watches the receiver's pipe's
    /// write end for `POLLERR` (no reader left).
    pub(crate) fn sender(own: OwnedFd, peer: OwnedFd) -> Liveness {
        Liveness {
            own: Some(own),
            peer,
            gone: PollFlags::POLLERR,
        }
    }

    /// The receiver's: it holds its own pipe's read end, and watches the sender's pipe's read
    /// end for `POLLHUP` (no writer left).
    pub(crate) fn receiver(own: OwnedFd, peer: OwnedFd) -> Liveness {
        Liveness {
            own: Some(own),
            peer,
            gone: PollFlags::POLLHUP,
        }
    }
}

impl Liveness {
    /// Another copy of this end's liveness (both descriptors duplicated with
    /// `F_DUPFD_CLOEXEC`), for a second handle of the same end: the peer sees this end gone
    /// once every copy is.
    pub(crate) fn try_clone(&self) -> Result<Liveness> {
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| Error::io("dup(F_DUPFD_CLOEXEC)", e))
        };
        Ok(Liveness {
            own: self.own.as_ref().map(dup).transpose()?,
            peer: dup(&self.peer)?,
            gone: self.gone,
        })
    }

    /// False once every copy of the other end is gone (dropped, or its process exited or
    /// was killed). One `poll` with no wait.
    pub fn alive(&self) -> bool {
        let mut fds = [PollFd::new(self.peer.as_fd(), PollFlags::empty())];
        loop {
            match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
                Ok(0) => return true,
                Ok(_) => {
                    let r = fds[0].revents().unwrap_or(PollFlags::empty());
                    // POLLHUP/POLLERR: the peer is gone. POLLNVAL would be our own bug (a
                    // closed descriptor); treat it as gone rather than wait forever.
                    return !(r.intersects(self.gone | PollFlags::POLLNVAL));
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // poll on one valid descriptor does not fail otherwise; if it did, report
                // the peer alive and let the next check decide.
                Err(_) => return true,
            }
        }
    }
}

/// A sending end that says [`Error::Disconnected`] once its receiver is gone. Made by
/// [`with_end_of_stream`].
#[derive(Debug)]
pub struct LiveSender<S> {
    inner: S,
    live: Liveness,
}

/// A receiving end that says [`Error::Disconnected`] once every copy of its sender is gone
/// and everything sent was received. Made by [`with_end_of_stream`].
#[derive(Debug)]
pub struct LiveReceiver<R> {
    inner: R,
    live: Liveness,
}

/// Wraps the two ends of a transport that has no end of stream (a FIFO its reader opened
/// read-write, a pipe whose reader kept a copy of the write end, a POSIX message queue, a
/// ring in shared memory with nothing else) so that it has one: the receiver returns
/// [`Error::Disconnected`] once every copy of the sending end is gone (dropped, exited,
/// killed) and a receive finds nothing more, and the sender returns it once the receiver
/// is gone. Call it before the processes fork, then treat the wrapped ends as the
/// originals.
///
/// What it costs: the receiver waits in slices of at most 10 ms, checking the sender's
/// liveness (one `poll`) whenever a slice ends empty, so `Disconnected` comes at most about
/// 10 ms after the last sender is gone, and a blocked receive wakes 100 times a second;
/// each send costs one `poll` on the receiver's liveness first. A send already blocked
/// when the receiver dies stays blocked: only the transport itself can end that wait.
///
/// ```
/// use ipcprop::{liveness, pipe, Error, Receiver, Sender};
///
/// let (tx, rx) = pipe::channel()?; // stands in for a transport with no end of stream
/// let (mut tx, mut rx) = liveness::with_end_of_stream(tx, rx)?;
/// tx.send(b"last words")?;
/// drop(tx);
/// assert_eq!(rx.recv()?, b"last words");
/// assert!(matches!(rx.recv(), Err(Error::Disconnected)));
/// # Ok::<(), ipcprop::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Io`] if the liveness pipes cannot be made.
pub fn with_end_of_stream<S, R>(tx: S, rx: R) -> Result<(LiveSender<S>, LiveReceiver<R>)> {
    let (s, r) = pair()?;
    Ok((
        LiveSender { inner: tx, live: s },
        LiveReceiver { inner: rx, live: r },
    ))
}

impl<S> LiveSender<S> {
    /// The wrapped sending end.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<R> LiveReceiver<R> {
    /// The wrapped receiving end.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<S: crate::Sender> crate::Sender for LiveSender<S> {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if !self.live.alive() {
            return Err(Error::Disconnected);
        }
        self.inner.send(msg)
    }

    fn send_wait(&mut self, msg: &[u8], wait: crate::Wait) -> Result<()> {
        if !self.live.alive() {
            return Err(Error::Disconnected);
        }
        self.inner.send_wait(msg, wait)
    }

    fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<()> {
        if !self.live.alive() {
            return Err(Error::Disconnected);
        }
        self.inner.send_batch(msgs)
    }

    fn max_message_len(&self) -> usize {
        self.inner.max_message_len()
    }
}

crate::transport::receiver_into_iter!({R: crate::Receiver} LiveReceiver<R>);

/// The longest a [`LiveReceiver`] waits before it looks at its sender's liveness again.
const SLICE: std::time::Duration = std::time::Duration::from_millis(10);

impl<R: crate::Receiver> crate::Receiver for LiveReceiver<R> {
    fn recv_with<T>(&mut self, wait: crate::Wait, f: impl FnOnce(&[u8]) -> T) -> Result<T> {
        use crate::Wait;
        let deadline = wait.deadline();
        let mut f = Some(f);
        let mut take = |inner: &mut R, w: Wait| inner.recv_with(w, |m| f.take().map(|g| g(m)));
        loop {
            let slice = match deadline {
                _ if wait == Wait::Never => Wait::Never,
                None => Wait::For(SLICE),
                Some(d) => Wait::For(
                    d.saturating_duration_since(std::time::Instant::now())
                        .min(SLICE),
                ),
            };
            match take(&mut self.inner, slice) {
                Ok(Some(v)) => return Ok(v),
                // The closure is taken only once, by the call that returns it.
                Ok(None) => return Err(Error::Empty),
                Err(e) if e.is_not_ready() => {}
                Err(e) => return Err(e),
            }
            if !self.live.alive() {
                // The last sender is gone: whatever it sent before is already here.
                return match take(&mut self.inner, Wait::Never) {
                    Ok(Some(v)) => Ok(v),
                    Ok(None) => Err(Error::Empty),
                    Err(e) if e.is_not_ready() => Err(Error::Disconnected),
                    Err(e) => Err(e),
                };
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(wait.expired());
            }
        }
    }

    fn max_message_len(&self) -> usize {
        self.inner.max_message_len()
    }
}

#[cfg(all(test, feature = "harness"))]
mod tests {
    use super::*;
    use crate::{Receiver, Sender, Wait};
    use std::time::{Duration, Instant};

    use crate::check::foreign::{KeptWriterPipeTransport, KeptWriterReceiver};
    use crate::check::Transport;

    /// A pipe whose reader keeps a write end (no end of stream of its own), wrapped: every
    /// Disconnected the receiver reports comes from the liveness pipes.
    fn wrapped() -> (
        LiveSender<crate::pipe::PipeSender>,
        LiveReceiver<KeptWriterReceiver>,
    ) {
        let (tx, rx) = KeptWriterPipeTransport.pair(1).unwrap();
        with_end_of_stream(tx, rx).unwrap()
    }

    #[test]
    fn the_wrapped_ends_keep_the_inner_maximum() {
        let (tx, rx) = crate::pipe::channel().unwrap();
        let (max_tx, max_rx) = (tx.max_message_len(), rx.max_message_len());
        let (mut tx, mut rx) = with_end_of_stream(tx, rx).unwrap();
        assert_eq!(tx.max_message_len(), max_tx);
        assert_eq!(rx.max_message_len(), max_rx);
        assert_eq!(tx.get_mut().max_message_len(), max_tx);
        assert_eq!(rx.get_mut().max_message_len(), max_rx);
    }

    #[test]
    fn nothing_there_is_empty_or_a_timeout_while_the_sender_lives() {
        let (_tx, mut rx) = wrapped();
        assert!(matches!(rx.try_recv(), Err(Error::Empty)));
        let start = Instant::now();
        let wait = Duration::from_millis(25);
        assert!(matches!(rx.recv_timeout(wait), Err(Error::Timeout(d)) if d == wait));
        assert!(start.elapsed() >= wait);
    }

    #[test]
    fn what_was_sent_arrives_then_the_end_in_every_wait_mode() {
        let (mut tx, mut rx) = wrapped();
        tx.send(b"one").unwrap();
        tx.send_batch(&[b"two", b"three"]).unwrap();
        drop(tx);
        assert_eq!(rx.recv().unwrap(), b"one");
        assert_eq!(rx.try_recv().unwrap(), b"two");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), b"three");
        for wait in [
            Wait::Never,
            Wait::For(Duration::from_millis(5)),
            Wait::Forever,
        ] {
            assert!(matches!(
                rx.recv_with(wait, |m| m.len()),
                Err(Error::Disconnected)
            ));
        }
    }

    #[test]
    fn a_blocked_receive_wakes_with_the_end_when_the_sender_goes() {
        let (tx, mut rx) = wrapped();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(tx);
        });
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
        t.join().unwrap();
    }

    #[test]
    fn a_sender_whose_receiver_is_gone_is_told_so() {
        let (mut tx, rx) = wrapped();
        assert!(tx.send(b"while it lives").is_ok());
        drop(rx);
        assert!(matches!(tx.send(b"after"), Err(Error::Disconnected)));
        assert!(matches!(
            tx.send_batch(&[b"a", b"b"]),
            Err(Error::Disconnected)
        ));
    }

    /// A receive that finds the stream broken says so: the error is not taken for "nothing
    /// yet".
    #[test]
    fn an_error_of_the_inner_receiver_is_returned_not_waited_out() {
        let (mut tx, mut rx) = wrapped();
        // A frame header claiming far more than the maximum.
        tx.get_mut()
            .write_raw(&[0xf0, 0xff, 0xff, 0xff, 0, 0, 0, 0])
            .unwrap();
        let got = rx.recv_timeout(Duration::from_millis(200));
        assert!(matches!(got, Err(Error::Frame(_))), "{got:?}");
    }

    /// A receive that waits sleeps between its looks at the sender's liveness: a 100 ms wait
    /// costs the thread far less than 100 ms of CPU.
    #[test]
    fn a_waiting_receive_sleeps_rather_than_spins() {
        use nix::sys::resource::{getrusage, UsageWho};
        let cpu = || {
            let u = getrusage(UsageWho::RUSAGE_THREAD).unwrap();
            Duration::from_micros(
                (u.user_time().tv_sec() * 1_000_000 + u.user_time().tv_usec()) as u64
                    + (u.system_time().tv_sec() * 1_000_000 + u.system_time().tv_usec()) as u64,
            )
        };
        let (_tx, mut rx) = wrapped();
        let before = cpu();
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(100)),
            Err(Error::Timeout(_))
        ));
        let used = cpu() - before;
        assert!(used < Duration::from_millis(50), "{used:?} of CPU");
    }

    #[test]
    fn liveness_follows_the_other_end() {
        let (s, r) = pair().unwrap();
        assert!(s.alive() && r.alive());
        drop(r);
        assert!(!s.alive());
        let (s, r) = pair().unwrap();
        drop(s);
        assert!(!r.alive());
    }
}
