//! The crate's one error type.
//!
//! Every fallible operation of every transport returns [`Error`]. Three variants are not
//! failures but outcomes a caller branches on: [`Error::Disconnected`], [`Error::Empty`] and
//! [`Error::Timeout`]; the rest name what went wrong, with the numbers.

use std::time::Duration;

use crate::frame::FrameError;

/// Shorthand for `Result<T, ipcprop::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong (or end) in an ipcprop transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The other end is gone. For a receiver: every sender has been dropped (or its process
    /// died) and every message that was sent has been delivered. For a sender: the receiver is
    /// gone, so nothing sent now could be delivered.
    #[error("disconnected: the other end of the channel is gone")]
    Disconnected,
    /// A non-blocking receive found no message ready.
    #[error("no message is ready")]
    Empty,
    /// A send that may not wait ([`Sender::try_send`](crate::Sender::try_send)) found no
    /// room for the message. Nothing of the message was sent: sending it again later is not
    /// a duplicate.
    #[error("no room for the message now")]
    Full,
    /// A receive with a deadline found no message before the deadline, or a send with a
    /// deadline ([`Sender::send_timeout`](crate::Sender::send_timeout)) found no room for
    /// its message before it (and sent nothing of it).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A message longer than this transport accepts was refused before anything was sent.
    #[error("message of {len} bytes exceeds the limit of {max} bytes ({why})")]
    MessageTooLarge {
        /// Length of the refused message.
        len: usize,
        /// The largest length accepted in this configuration.
        max: usize,
        /// Which limit applies (for example "the frame maximum" or "PIPE_BUF atomicity with
        /// several senders").
        why: &'static str,
    },
    /// The byte stream from the peer is malformed (oversized length prefix, checksum mismatch,
    /// stream cut inside a frame). The stream has lost sync: later receives return the same
    /// error rather than guess.
    #[error("malformed stream: {0}")]
    Frame(#[from] FrameError),
    /// Shared memory (or a file) written by a peer is not in a valid state: an index out of
    /// range, a record header that fails its check, a length over the maximum. The message
    /// says what and where. The transport refuses to go on rather than guess.
    #[error("corrupt shared state: {0}")]
    Corrupt(String),
    /// An acknowledgement named a message whose lease this handle no longer holds: the
    /// message was already acknowledged, or the lease was given up (the holder was found
    /// dead, which a live handle never is) and the message went to another consumer.
    #[error("the lease on message {seq} is not held by this handle")]
    LeaseLost {
        /// The message's sequence number.
        seq: u64,
    },
    /// A file (or shared memory) carries a format version this build does not read. It is
    /// refused whole rather than half-read: nothing is written to it.
    #[error("{what} is format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// What carries the version (for example "queue file header slot A").
        what: &'static str,
        /// The version found.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A queue operation would leave more messages taken under a lease, or consumed ahead
    /// of an older message that is still leased, than the queue's header can record.
    /// Nothing was consumed; acknowledge (or let expire) some leases first.
    #[error(
        "more than {limit} messages would be leased or consumed out of order at once \
         (the queue header records at most {limit}); acknowledge some leases first"
    )]
    TooManyLeases {
        /// The most the header records.
        limit: usize,
    },
    /// A configuration (or a use the configuration rules out) that cannot work: the message
    /// names the setting and what is wrong with its value. Nothing was created or sent.
    #[error("invalid configuration: {what}: {why}")]
    InvalidConfig {
        /// The setting, as its setter is called (for example `"RingConfig::with_capacity"`).
        what: &'static str,
        /// What is wrong with it, with the value.
        why: String,
    },
    /// The transport does not implement this operation (for example a send with a deadline
    /// on a third-party transport that implements only [`Sender::send`](crate::Sender::send)).
    /// Nothing was sent.
    #[error("not supported by this transport: {0}")]
    Unsupported(&'static str),
    /// A program under test broke the driver protocol (`ipcprop check --exec`, see
    /// `docs/PROTOCOL.md`): it exited or timed out before its roles connected, or a role
    /// wrote a line the protocol does not allow. The case proves nothing about the
    /// program's channel, so it is never counted as a violation of it.
    #[error("{0}")]
    Driver(Box<DriverError>),
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Io {
        /// The operation, named as a syscall or a step ("write to pipe", "fork").
        op: &'static str,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an errno from `nix` with the name of the operation that failed.
    pub(crate) fn sys(op: &'static str, errno: nix::errno::Errno) -> Self {
        Error::Io {
            op,
            source: std::io::Error::from(errno),
        }
    }

    /// A configuration mistake: `what` names the setting, `why` the problem and the value.
    pub(crate) fn config(what: &'static str, why: impl Into<String>) -> Self {
        Error::InvalidConfig {
            what,
            why: why.into(),
        }
    }

    /// Wraps a `std::io::Error` with the name of the operation that failed.
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    pub(crate) fn io(op: &'static str, source: std::io::Error) -> Self {
        Error::Io { op, source }
    }

    /// True for [`Error::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected)
    }

    /// True when the sending side ended in the middle of a message: a stream that stopped
    /// inside a frame ([`FrameError::Truncated`]), as when a sender is killed while writing.
    /// Like [`Error::Disconnected`], it ends the stream; unlike it, it says the last message
    /// was cut short (and not delivered).
    pub fn is_cut_off(&self) -> bool {
        matches!(self, Error::Frame(FrameError::Truncated { .. }))
    }

    /// True for [`Error::Timeout`] only: a wait with a deadline ended without a message (or,
    /// for a send, without room).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// True for [`Error::Empty`] only: a receive that may not wait found no message.
    pub fn is_empty(&self) -> bool {
        matches!(self, Error::Empty)
    }

    /// True for [`Error::Full`] only: a send that may not wait found no room.
    pub fn is_full(&self) -> bool {
        matches!(self, Error::Full)
    }

    /// True for [`Error::Empty`], [`Error::Full`] and [`Error::Timeout`]: nothing went
    /// wrong, the operation just could not complete yet.
    pub fn is_not_ready(&self) -> bool {
        matches!(self, Error::Empty | Error::Full | Error::Timeout(_))
    }
}

/// What a program under test did against the driver protocol ([`Error::Driver`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverError {
    /// The program, as it was given (`python3 pipe.py`).
    pub program: String,
    /// The role the error concerns ("sender 1", "receiver"), if one does.
    pub role: Option<String>,
    /// What was wrong.
    pub what: String,
    /// The offending line, as received (cut to 300 bytes), if a line was at fault.
    pub line: Option<String>,
    /// The last lines the program wrote to its standard output and error.
    pub output: String,
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "driver protocol error: program `{}`", self.program)?;
        if let Some(role) = &self.role {
            write!(f, ", {role}")?;
        }
        write!(f, ": {}", self.what)?;
        if let Some(line) = &self.line {
            write!(f, "\n  offending line: {line}")?;
        }
        if !self.output.trim().is_empty() {
            write!(f, "\n  the program's last output:")?;
            for l in self.output.lines() {
                write!(f, "\n    | {l}")?;
            }
        }
        Ok(())
    }
}
