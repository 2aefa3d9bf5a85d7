//! A framed stream written the way many are: a 4-byte length and the bytes, over a Unix
//! stream socketpair, correct in every way but one chosen [`NaiveFlaw`]. Each flaw is a
//! mistake real IPC code makes, that only a fault inside an operation shows.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

use crate::check::plan::Capabilities;
use crate::check::Transport;
use crate::error::{Error, Result};
use crate::frame::FrameError;
use crate::transport::{Receiver, Sender, Wait};

/// The one mistake a [`NaiveStreamTransport`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NaiveFlaw {
    /// The receiver polls for readability with the caller's timeout, then reads the whole
    /// message with blocking reads: once part of a message is there, `try_recv` and
    /// `recv_timeout` wait for the rest, whatever their timeout (a sender stopped in the
    /// middle of a message holds the receiver with it).
    WaitsForTheRest,
    /// The sender writes a message with a loop that gives up on `EINTR`, and retries the
    /// whole message from its first byte: a signal that interrupts a write after part of
    /// the message went out makes the receiver read that part twice.
    ResendsAfterEintr,
    /// The sender reports `EINTR` from a write as an error instead of writing on: a send
    /// interrupted by a signal fails (or, if part of the message went out, leaves the
    /// stream cut inside it).
    EintrIsAnError,
    /// At the end of the stream, the receiver delivers the part of a message it holds as
    /// if it were the message: a sender killed in the middle of a message leaves the
    /// receiver with a short, wrong one.
    DeliversAPart,
    /// The receiver reads up to 64 KiB at a time and keeps only the bytes of the message it
    /// is reading, dropping what else the read brought in (the next messages): harmless
    /// while the receiver keeps up, fatal once messages pile up.
    KeepsOneMessagePerRead,
}

impl NaiveFlaw {
    /// Every flaw.
    pub const ALL: [NaiveFlaw; 5] = [
        NaiveFlaw::WaitsForTheRest,
        NaiveFlaw::ResendsAfterEintr,
        NaiveFlaw::EintrIsAnError,
        NaiveFlaw::DeliversAPart,
        NaiveFlaw::KeepsOneMessagePerRead,
    ];
}

/// A 4-byte-length framed stream over a socketpair, with one [`NaiveFlaw`].
#[derive(Debug, Clone, Copy)]
pub struct NaiveStreamTransport {
    /// Its mistake.
    pub flaw: NaiveFlaw,
}

/// The longest message it carries.
const MAX: usize = 16 << 20;

/// The sending end of a [`NaiveStreamTransport`].
#[derive(Debug)]
pub struct NaiveSender {
    fd: OwnedFd,
    flaw: NaiveFlaw,
}

/// The receiving end of a [`NaiveStreamTransport`].
#[derive(Debug)]
pub struct NaiveReceiver {
    fd: OwnedFd,
    flaw: NaiveFlaw,
    /// Bytes of the message being read ([`NaiveFlaw::ResendsAfterEintr`]'s receiver keeps a
    /// part across calls, as a correct one does).
    buf: Vec<u8>,
    ended: bool,
}

impl Transport for NaiveStreamTransport {
    type Sender = NaiveSender;
    type Receiver = NaiveReceiver;

    fn name(&self) -> String {
        format!("naive-stream+{:?}", self.flaw).to_lowercase()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            boundary_sizes: vec![0, 1, 212_992 - 4, 212_992, MAX],
            ..Capabilities::new(MAX)
        }
    }

    fn pair(&self, _senders: usize) -> Result<(NaiveSender, NaiveReceiver)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::sys("socketpair", e))?;
        // One direction only: the receiver's writes and the sender's reads are never used.
        let _ = nix::sys::socket::shutdown(a.as_raw_fd(), nix::sys::socket::Shutdown::Read);
        Ok((
            NaiveSender {
                fd: a,
                flaw: self.flaw,
            },
            NaiveReceiver {
                fd: b,
                flaw: self.flaw,
                buf: Vec::new(),
                ended: false,
            },
        ))
    }
}

impl NaiveSender {
    /// Writes all of `bytes`; `Err(EINTR)` if a signal interrupts a write that wrote
    /// nothing (the naive loop's way).
    fn write_all(&self, bytes: &[u8]) -> std::result::Result<(), Errno> {
        let mut at = 0;
        while at < bytes.len() {
            // MSG_NOSIGNAL: a gone receiver is EPIPE, not a SIGPIPE death.
            match nix::sys::socket::send(self.fd.as_raw_fd(), &bytes[at..], MsgFlags::MSG_NOSIGNAL)
            {
                Ok(n) => at += n,
                Err(Errno::EINTR)
                    if !matches!(
                        self.flaw,
                        NaiveFlaw::ResendsAfterEintr | NaiveFlaw::EintrIsAnError
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Sender for NaiveSender {
    /// The deadline bounds the wait for the socket to be writable at all; once writable,
    /// the frame is written whole, blocking as long as that takes (so an error means
    /// nothing was written).
    fn send_wait(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        if let Some(deadline) = wait.deadline() {
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let ms = PollTimeout::try_from(left.as_micros().div_ceil(1000))
                    .unwrap_or(PollTimeout::MAX);
                let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLOUT)];
                match nix::poll::poll(&mut fds, ms) {
                    Ok(0) if left.is_zero() => return Err(wait.expired_send()),
                    Ok(0) | Err(Errno::EINTR) => continue,
                    Ok(_) => break,
                    Err(e) => return Err(Error::sys("poll", e)),
                }
            }
        }
        self.send(msg)
    }

    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() > MAX {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: MAX,
                why: "the naive stream's limit",
            });
        }
        let mut frame = Vec::with_capacity(4 + msg.len());
        frame.extend_from_slice(&(msg.len() as u32).to_le_bytes());
        frame.extend_from_slice(msg);
        loop {
            match self.write_all(&frame) {
                Ok(()) => return Ok(()),
                // The flaw: the whole frame again, from its first byte.
                Err(Errno::EINTR) if self.flaw == NaiveFlaw::ResendsAfterEintr => continue,
                Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(Error::Disconnected),
                Err(e) => return Err(Error::sys("send", e)),
            }
        }
    }

    fn max_message_len(&self) -> usize {
        MAX
    }
}

impl NaiveReceiver {
    /// Waits until the socket is readable or `wait` passes; false if it passed.
    fn readable(&self, wait: Wait) -> Result<bool> {
        let deadline = wait.deadline();
        loop {
            let ms = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    PollTimeout::try_from(left.as_micros().div_ceil(1000))
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, ms) {
                Ok(0) if deadline.is_some_and(|d| std::time::Instant::now() >= d) => {
                    return Ok(false)
                }
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => return Ok(true),
                Err(e) => return Err(Error::sys("poll", e)),
            }
        }
    }

    /// Reads into `buf` until it holds `want` bytes, blocking; false at end of stream.
    fn fill_blocking(&mut self, want: usize) -> Result<bool> {
        while self.buf.len() < want {
            if !self.read_some(want)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One read of at most what `want` still needs; false at end of stream.
    fn read_some(&mut self, want: usize) -> Result<bool> {
        let have = self.buf.len();
        self.buf.resize(want, 0);
        loop {
            match nix::unistd::read(&self.fd, &mut self.buf[have..]) {
                Ok(0) => {
                    self.buf.truncate(have);
                    return Ok(false);
                }
                Ok(n) => {
                    self.buf.truncate(have + n);
                    return Ok(true);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(Error::sys("read", e));
                }
            }
        }
    }

    /// [`NaiveFlaw::KeepsOneMessagePerRead`]'s read: up to 64 KiB, of which only the
    /// current message is kept; false at end of stream.
    fn read_dropping_the_rest(&mut self, want: usize) -> Result<bool> {
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            match nix::unistd::read(&self.fd, &mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    // All of the current message that came in is kept (its header too,
                    // which may have come with it); whatever follows it in the chunk is
                    // dropped.
                    let have = self.buf.len();
                    self.buf.extend_from_slice(&chunk[..n]);
                    let end = match self.frame_len() {
                        Ok(Some(len)) => 4 + len,
                        _ => want,
                    };
                    self.buf.truncate(end.max(have));
                    return Ok(true);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("read", e)),
            }
        }
    }

    /// The payload length in the buffered header, once it is whole.
    fn frame_len(&self) -> Result<Option<usize>> {
        let Some(h) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len > MAX {
            // A framing error, like the real pipe's: the stream is malformed.
            return Err(Error::Frame(FrameError::TooLarge {
                len: len as u64,
                max: MAX,
            }));
        }
        Ok(Some(len))
    }

    fn cut(&self, needed: usize) -> Error {
        Error::Frame(FrameError::Truncated {
            buffered: self.buf.len(),
            needed,
        })
    }
}

impl Receiver for NaiveReceiver {
    fn recv_with<R>(&mut self, wait: Wait, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        if self.ended {
            return Err(Error::Disconnected);
        }
        loop {
            let need = match self.frame_len()? {
                Some(len) if self.buf.len() == 4 + len => {
                    let v = f(&self.buf[4..]);
                    self.buf.clear();
                    return Ok(v);
                }
                Some(len) => 4 + len,
                None => 4,
            };
            if !self.readable(wait)? {
                return Err(wait.expired());
            }
            let open = match self.flaw {
                // The flaw: once anything is there, the whole message is read, blocking.
                NaiveFlaw::WaitsForTheRest => {
                    self.fill_blocking(4)?
                        && match self.frame_len()? {
                            Some(len) => self.fill_blocking(4 + len)?,
                            None => true,
                        }
                }
                NaiveFlaw::KeepsOneMessagePerRead => self.read_dropping_the_rest(need)?,
                NaiveFlaw::ResendsAfterEintr
                | NaiveFlaw::EintrIsAnError
                | NaiveFlaw::DeliversAPart => self.read_some(need)?,
            };
            if !open {
                if self.flaw == NaiveFlaw::DeliversAPart && self.buf.len() > 4 {
                    // The flaw: the part held is delivered as the message.
                    let v = f(&self.buf[4..]);
                    self.buf.clear();
                    return Ok(v);
                }
                if self.buf.is_empty() {
                    self.ended = true;
                    return Err(Error::Disconnected);
                }
                return Err(self.cut(need));
            }
        }
    }

    fn max_message_len(&self) -> usize {
        MAX
    }
}
