//! The traits every transport implements.
//!
//! A transport is a pair of ends: a [`Sender`] and a [`Receiver`]. Both are moved into (or
//! inherited by) the processes that use them. The conformance harness in [`crate::check`] is
//! written against these traits only, so a transport of your own plugs in by implementing
//! them.
//!
//! The contract: what one sender sends arrives in order, exactly once,
//! byte-exact; once every sender is gone and everything sent was delivered, the receiver
//! reports [`Error::Disconnected`]; a sender whose receiver is gone gets
//! [`Error::Disconnected`] too, never a signal death and never a silent drop.
//!
//! # As `std::sync::mpsc` and `crossbeam-channel` users expect
//! - Receiving: [`Receiver::recv`], [`Receiver::try_recv`], [`Receiver::recv_timeout`];
//!   [`Receiver::iter`] and [`Receiver::try_iter`]; every built-in receiver is
//!   [`IntoIterator`] (by value and by `&mut`). Sending: [`Sender::send`],
//!   [`Sender::try_send`], [`Sender::send_timeout`].
//! - "Nothing arrived" is an error at this layer: [`Error::Empty`] from a receive that may
//!   not wait, [`Error::Timeout`] from one whose deadline passed, and likewise
//!   [`Error::Full`] / [`Error::Timeout`] from a send that found no room (sending nothing).
//!   A channel call has three kinds of outcome (a message, the end of the stream, nothing
//!   yet) besides real failures, and std and crossbeam spell the third as an error too
//!   ([`Error::is_not_ready`] tells it from a failure). The file queue's own API
//!   ([`FileQueue::pop`](crate::queue::FileQueue::pop),
//!   [`FileQueue::pop_timeout`](crate::queue::FileQueue::pop_timeout)) returns `Ok(None)`
//!   instead: a queue has no end of stream, so "no message" is its only non-message
//!   outcome, and an `Option` says that without an error to match.
//! - The iterators yield `Result<Vec<u8>>`, not bare messages as std's do: a receiver here
//!   can fail for real (a malformed stream, a failed system call), and that must not look
//!   like a clean end. [`Error::Disconnected`] ends the iteration (`None`); any other error
//!   is yielded once, and then the iteration ends.
//! - Both traits are object-safe: `Box<dyn Receiver>` and `Box<dyn Sender>` (and `&mut dyn`
//!   ones) work, and implement the traits themselves. Receiving through them copies each
//!   message into a buffer ([`Receiver::recv_into`]) since [`Receiver::recv_with`] is
//!   generic; it needs a sized receiver.
//!
//! ```
//! use ipcprop::{pipe, Receiver, Sender};
//!
//! let (mut tx, rx) = pipe::channel()?;
//! tx.send(b"one")?;
//! tx.try_send(b"two")?;
//! drop(tx); // the end of the stream
//! let mut rx: Box<dyn Receiver> = Box::new(rx);
//! let got: Vec<Vec<u8>> = rx.iter().collect::<Result<_, _>>()?;
//! assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
//! # Ok::<(), ipcprop::Error>(())
//! ```

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a receive may wait for a message, or a send for room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Do not wait: a receive returns [`Error::Empty`] if no whole message is ready, a send
    /// [`Error::Full`] if there is no room for the message now.
    Never,
    /// Wait as long as it takes (until a message or room, or disconnection).
    Forever,
    /// Wait at most this long, then return [`Error::Timeout`].
    For(Duration),
}

impl Wait {
    /// The absolute deadline this wait implies, taken from `now`: `None` for
    /// [`Wait::Forever`].
    pub fn deadline_from(self, now: Instant) -> Option<Instant> {
        match self {
            Wait::Never => Some(now),
            Wait::Forever => None,
            // A duration too large to add is as good as forever.
            Wait::For(d) => now.checked_add(d),
        }
    }

    /// The absolute deadline this wait implies, from the clock now: `None` for
    /// [`Wait::Forever`], which does not read the clock (a receive loop calls this once per
    /// message, and a clock read costs as much as the rest of a shared-memory receive).
    pub fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Forever => None,
            other => other.deadline_from(Instant::now()),
        }
    }

    /// The error a receive returns when the deadline passes without a message.
    pub fn expired(self) -> Error {
        match self {
            Wait::For(d) => Error::Timeout(d),
            Wait::Never | Wait::Forever => Error::Empty,
        }
    }

    /// The error a send returns when the deadline passes without room for its message:
    /// [`Error::Full`] for [`Wait::Never`], [`Error::Timeout`] for [`Wait::For`].
    pub fn expired_send(self) -> Error {
        match self {
            Wait::For(d) => Error::Timeout(d),
            Wait::Never | Wait::Forever => Error::Full,
        }
    }
}

/// The sending end of a transport.
///
/// Object-safe: `Box<dyn Sender>` and `&mut dyn Sender` work and are senders themselves.
pub trait Sender {
    /// Sends one message, blocking while the transport is full.
    ///
    /// `Ok` means the message is committed: it will be delivered unless the receiver goes
    /// away first. Returns [`Error::Disconnected`] if the receiver is gone and
    /// [`Error::MessageTooLarge`] (sending nothing) if `msg` is longer than
    /// [`Sender::max_message_len`].
    fn send(&mut self, msg: &[u8]) -> Result<()>;

    /// Sends one message, waiting for room as `wait` says: [`Wait::Forever`] is
    /// [`Sender::send`]; otherwise, if the message cannot be sent in time, returns
    /// [`Error::Full`] ([`Wait::Never`]) or [`Error::Timeout`] ([`Wait::For`]), and then
    /// nothing of the message was sent: sending it again is not a duplicate. The other
    /// errors are [`Sender::send`]'s.
    ///
    /// What the deadline bounds is each transport's to say (for the pipe, starting the
    /// frame; for the file queue, getting its lock), but never at the price of half a
    /// message: a message is sent whole or not at all.
    ///
    /// Every built-in transport implements it. The default, for a transport of your own
    /// that implements only [`Sender::send`], sends with [`Wait::Forever`] and returns
    /// [`Error::Unsupported`] (sending nothing) for any other wait.
    fn send_wait(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        match wait {
            Wait::Forever => self.send(msg),
            Wait::Never | Wait::For(_) => Err(Error::Unsupported(
                "a send that does not wait forever (this transport implements only \
                 Sender::send, not Sender::send_wait)",
            )),
        }
    }

    /// Sends `msg` if it can be sent without waiting; else [`Error::Full`], having sent
    /// nothing. Same as [`Sender::send_wait`] with [`Wait::Never`].
    fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_wait(msg, Wait::Never)
    }

    /// Sends `msg`, waiting at most `timeout` for room; else [`Error::Timeout`], having sent
    /// nothing. Same as [`Sender::send_wait`] with [`Wait::For`].
    fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send_wait(msg, Wait::For(timeout))
    }

    /// Sends several messages, in order, with as few system calls as the transport allows.
    ///
    /// Every message is checked against the size limit before anything is sent. On an error
    /// a prefix of `msgs` may have been committed. The default sends them one by one.
    fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<()> {
        msgs.iter().try_for_each(|m| self.send(m))
    }

    /// The longest message this sender accepts.
    fn max_message_len(&self) -> usize;
}

impl<S: Sender + ?Sized> Sender for Box<S> {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        (**self).send(msg)
    }

    fn send_wait(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        (**self).send_wait(msg, wait)
    }

    fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<()> {
        (**self).send_batch(msgs)
    }

    fn max_message_len(&self) -> usize {
        (**self).max_message_len()
    }
}

impl<S: Sender + ?Sized> Sender for &mut S {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        (**self).send(msg)
    }

    fn send_wait(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        (**self).send_wait(msg, wait)
    }

    fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<()> {
        (**self).send_batch(msgs)
    }

    fn max_message_len(&self) -> usize {
        (**self).max_message_len()
    }
}

mod private {
    use super::{Receiver, Result, Wait};

    /// The object-safe form of [`Receiver::recv_with`], implemented for every sized
    /// receiver: it is what a `dyn Receiver` receives through.
    pub trait RecvDyn {
        /// [`Receiver::recv_with`] with the closure behind a reference.
        fn recv_dyn(&mut self, wait: Wait, f: &mut dyn FnMut(&[u8])) -> Result<()>;
    }

    impl<R: Receiver> RecvDyn for R {
        fn recv_dyn(&mut self, wait: Wait, f: &mut dyn FnMut(&[u8])) -> Result<()> {
            self.recv_with(wait, f)
        }
    }
}

/// The receiving end of a transport.
///
/// Object-safe: `Box<dyn Receiver>` and `&mut dyn Receiver` work and are receivers
/// themselves. (The supertrait is implemented for every sized receiver: implement this
/// trait only.)
pub trait Receiver: private::RecvDyn {
    /// Waits as `wait` says for the next message and lends it to `f` without copying or
    /// allocating; returns what `f` returns.
    ///
    /// Errors: [`Error::Disconnected`] once every sender is gone and everything sent was
    /// delivered; [`Error::Empty`] or [`Error::Timeout`] when nothing arrived in time; any
    /// other error means the transport is broken (a malformed stream, a failed syscall) and
    /// later calls return an error too.
    ///
    /// Generic, so not callable on a `dyn Receiver` itself (a `Box<dyn Receiver>` has it);
    /// [`Receiver::recv_into`] is the object-safe way.
    fn recv_with<R>(&mut self, wait: Wait, f: impl FnOnce(&[u8]) -> R) -> Result<R>
    where
        Self: Sized;

    /// Waits as `wait` says for the next message and copies it into `buf` (cleared first;
    /// its capacity is reused), returning its length. Errors as
    /// [`Receiver::recv_with`]; on an error `buf` is left as it was.
    fn recv_into(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<usize> {
        self.recv_dyn(wait, &mut |m| {
            buf.clear();
            buf.extend_from_slice(m);
        })?;
        Ok(buf.len())
    }

    /// Blocks until the next message arrives and returns a copy of it.
    fn recv(&mut self) -> Result<Vec<u8>> {
        let mut m = Vec::new();
        self.recv_into(&mut m, Wait::Forever)?;
        Ok(m)
    }

    /// Returns the next message if one is ready, else [`Error::Empty`].
    fn try_recv(&mut self) -> Result<Vec<u8>> {
        let mut m = Vec::new();
        self.recv_into(&mut m, Wait::Never)?;
        Ok(m)
    }

    /// Waits at most `timeout` for the next message, else [`Error::Timeout`].
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let mut m = Vec::new();
        self.recv_into(&mut m, Wait::For(timeout))?;
        Ok(m)
    }

    /// The longest message this receiver accepts.
    fn max_message_len(&self) -> usize;

    /// An iterator that blocks for each message ([`Receiver::recv`]) and ends at
    /// [`Error::Disconnected`]. It yields `Ok(message)`, or a real error (a malformed
    /// stream, a stream cut inside a message, a failed system call) once, after which it
    /// ends: the end of the stream and a failure never look alike.
    ///
    /// ```
    /// use ipcprop::{pipe, Receiver, Sender};
    ///
    /// let (mut tx, mut rx) = pipe::channel()?;
    /// tx.send_batch(&[b"a", b"b"])?;
    /// drop(tx);
    /// for msg in rx.iter() {
    ///     let msg = msg?; // a failure of the stream stops here, with its error
    ///     assert_eq!(msg.len(), 1);
    /// }
    /// # Ok::<(), ipcprop::Error>(())
    /// ```
    ///
    /// On a `&mut dyn Receiver` call it as `Iter::new(rx)` (a `Box<dyn Receiver>` has
    /// `.iter()`).
    fn iter(&mut self) -> Iter<'_, Self>
    where
        Self: Sized,
    {
        Iter::new(self)
    }

    /// An iterator over the messages ready now ([`Receiver::try_recv`]): it ends when none
    /// is ready ([`Error::Empty`]) or at [`Error::Disconnected`], without waiting. A real
    /// error is yielded once, then it ends. Call it again later for what arrived since.
    ///
    /// ```
    /// use ipcprop::{shm, Receiver, Sender};
    ///
    /// let (mut tx, mut rx) = shm::channel()?;
    /// tx.send_batch(&[b"a", b"b"])?;
    /// assert_eq!(rx.try_iter().count(), 2); // the sender lives on: nothing more now
    /// tx.send(b"c")?;
    /// assert_eq!(rx.try_iter().next().transpose()?, Some(b"c".to_vec()));
    /// # Ok::<(), ipcprop::Error>(())
    /// ```
    fn try_iter(&mut self) -> TryIter<'_, Self>
    where
        Self: Sized,
    {
        TryIter::new(self)
    }
}

/// Lends through `inner`'s object-safe primitive: what a receiver behind a pointer does.
fn recv_with_dyn<R: Receiver + ?Sized, T>(
    inner: &mut R,
    wait: Wait,
    f: impl FnOnce(&[u8]) -> T,
) -> Result<T> {
    let mut f = Some(f);
    let mut out = None;
    inner.recv_dyn(wait, &mut |m| out = f.take().map(|g| g(m)))?;
    // A receiver that returns Ok without lending a message breaks its contract; say
    // "nothing" rather than invent one.
    out.ok_or(Error::Empty)
}

impl<R: Receiver + ?Sized> Receiver for Box<R> {
    fn recv_with<T>(&mut self, wait: Wait, f: impl FnOnce(&[u8]) -> T) -> Result<T> {
        recv_with_dyn(&mut **self, wait, f)
    }

    fn recv_into(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<usize> {
        (**self).recv_into(buf, wait)
    }

    fn max_message_len(&self) -> usize {
        (**self).max_message_len()
    }
}

impl<R: Receiver + ?Sized> Receiver for &mut R {
    fn recv_with<T>(&mut self, wait: Wait, f: impl FnOnce(&[u8]) -> T) -> Result<T> {
        recv_with_dyn(&mut **self, wait, f)
    }

    fn recv_into(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<usize> {
        (**self).recv_into(buf, wait)
    }

    fn max_message_len(&self) -> usize {
        (**self).max_message_len()
    }
}

/// The next item of a blocking iteration: a message, `None` at the end of the stream, a
/// real error once (and `None` after it).
fn next_item(
    done: &mut bool,
    got: Result<Vec<u8>>,
    end_when_not_ready: bool,
) -> Option<Result<Vec<u8>>> {
    match got {
        Ok(m) => Some(Ok(m)),
        Err(Error::Disconnected) => {
            *done = true;
            None
        }
        Err(e) if end_when_not_ready && e.is_not_ready() => {
            *done = true;
            None
        }
        Err(e) => {
            *done = true;
            Some(Err(e))
        }
    }
}

/// The iterator of [`Receiver::iter`]: a blocking receive per item, ending at
/// [`Error::Disconnected`]; a real error is yielded once, then it ends.
#[derive(Debug)]
pub struct Iter<'a, R: Receiver + ?Sized> {
    rx: &'a mut R,
    done: bool,
}

impl<'a, R: Receiver + ?Sized> Iter<'a, R> {
    /// Iterates over what `rx` receives (for a `&mut dyn Receiver`, which has no
    /// [`Receiver::iter`] of its own).
    pub fn new(rx: &'a mut R) -> Self {
        Iter { rx, done: false }
    }
}

impl<R: Receiver + ?Sized> Iterator for Iter<'_, R> {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let got = self.rx.recv();
        next_item(&mut self.done, got, false)
    }
}

impl<R: Receiver + ?Sized> std::iter::FusedIterator for Iter<'_, R> {}

/// The iterator of [`Receiver::try_iter`]: the messages ready now, ending at
/// [`Error::Empty`] or [`Error::Disconnected`]; a real error is yielded once, then it ends.
#[derive(Debug)]
pub struct TryIter<'a, R: Receiver + ?Sized> {
    rx: &'a mut R,
    done: bool,
}

impl<'a, R: Receiver + ?Sized> TryIter<'a, R> {
    /// Iterates over what `rx` has ready now (for a `&mut dyn Receiver`, which has no
    /// [`Receiver::try_iter`] of its own).
    pub fn new(rx: &'a mut R) -> Self {
        TryIter { rx, done: false }
    }
}

impl<R: Receiver + ?Sized> Iterator for TryIter<'_, R> {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let got = self.rx.try_recv();
        next_item(&mut self.done, got, true)
    }
}

impl<R: Receiver + ?Sized> std::iter::FusedIterator for TryIter<'_, R> {}

/// The iterator a receiver turns into (`for msg in rx`): [`Iter`], owning the receiver.
#[derive(Debug)]
pub struct IntoIter<R: Receiver> {
    rx: R,
    done: bool,
}

impl<R: Receiver> IntoIter<R> {
    /// Iterates over what `rx` receives, owning it.
    pub fn new(rx: R) -> Self {
        IntoIter { rx, done: false }
    }

    /// Gives the receiver back.
    pub fn into_inner(self) -> R {
        self.rx
    }
}

impl<R: Receiver> Iterator for IntoIter<R> {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let got = self.rx.recv();
        next_item(&mut self.done, got, false)
    }
}

impl<R: Receiver> std::iter::FusedIterator for IntoIter<R> {}

/// `impl IntoIterator` for a receiver type, by value ([`IntoIter`]) and by `&mut`
/// ([`Iter`]).
macro_rules! receiver_into_iter {
    ($({$($gen:tt)*} $ty:ty),* $(,)?) => {$(
        impl<$($gen)*> IntoIterator for $ty {
            type Item = $crate::Result<Vec<u8>>;
            type IntoIter = $crate::transport::IntoIter<Self>;

            fn into_iter(self) -> Self::IntoIter {
                $crate::transport::IntoIter::new(self)
            }
        }

        impl<'a, $($gen)*> IntoIterator for &'a mut $ty {
            type Item = $crate::Result<Vec<u8>>;
            type IntoIter = $crate::transport::Iter<'a, $ty>;

            fn into_iter(self) -> Self::IntoIter {
                $crate::transport::Iter::new(self)
            }
        }
    )*};
}
pub(crate) use receiver_into_iter;
