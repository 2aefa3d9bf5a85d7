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

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a receive may wait for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Do not wait: return [`Error::Empty`] if no whole message is ready.
    Never,
    /// Wait as long as it takes (until a message or disconnection).
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

    /// The error to return when the deadline passes without a message.
    pub fn expired(self) -> Error {
        match self {
            Wait::For(d) => Error::Timeout(d),
            Wait::Never | Wait::Forever => Error::Empty,
        }
    }
}

/// The sending end of a transport.
pub trait Sender {
    /// Sends one message, blocking while the transport is full.
    ///
    /// `Ok` means the message is committed: it will be delivered unless the receiver goes
    /// away first. Returns [`Error::Disconnected`] if the receiver is gone and
    /// [`Error::MessageTooLarge`] (sending nothing) if `msg` is longer than
    /// [`Sender::max_message_len`].
    fn send(&mut self, msg: &[u8]) -> Result<()>;

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

/// The receiving end of a transport.
pub trait Receiver {
    /// Waits as `wait` says for the next message and lends it to `f` without copying or
    /// allocating; returns what `f` returns.
    ///
    /// Errors: [`Error::Disconnected`] once every sender is gone and everything sent was
    /// delivered; [`Error::Empty`] or [`Error::Timeout`] when nothing arrived in time; any
    /// other error means the transport is broken (a malformed stream, a failed syscall) and
    /// later calls return an error too.
    fn recv_with<R>(&mut self, wait: Wait, f: impl FnOnce(&[u8]) -> R) -> Result<R>;

    /// Blocks until the next message arrives and returns a copy of it.
    fn recv(&mut self) -> Result<Vec<u8>> {
        self.recv_with(Wait::Forever, <[u8]>::to_vec)
    }

    /// Returns the next message if one is ready, else [`Error::Empty`].
    fn try_recv(&mut self) -> Result<Vec<u8>> {
        self.recv_with(Wait::Never, <[u8]>::to_vec)
    }

    /// Waits at most `timeout` for the next message, else [`Error::Timeout`].
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_with(Wait::For(timeout), <[u8]>::to_vec)
    }

    /// The longest message this receiver accepts.
    fn max_message_len(&self) -> usize;
}
