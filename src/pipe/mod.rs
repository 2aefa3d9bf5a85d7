//! A framed message channel over an anonymous pipe.
//!
//! [`channel`] makes a pipe (`pipe2(O_CLOEXEC)`) and returns its two ends. Each message
//! travels as one frame ([`crate::frame`]): an 8-byte header (length, CRC-32C) and the payload,
//! so the receiver hands out whole messages, checked, whatever chunks the kernel delivers.
//!
//! # What it promises
//! - **Whole, checked, in order.** Short reads and writes, `EINTR` and `EAGAIN` are retried;
//!   a receive never returns part of a message.
//! - **End of stream is [`Error::Disconnected`]**, returned once every copy of the sending
//!   end is closed (dropped, or its process exited or was killed) and every message written
//!   before was received. A stream that ends inside a frame (a sender killed mid-write)
//!   returns [`FrameError::Truncated`](crate::frame::FrameError::Truncated) instead, so a
//!   half-written message is never mistaken for a clean end.
//! - **No `SIGPIPE` death.** A send after the receiving end is gone returns
//!   [`Error::Disconnected`], whatever the process's `SIGPIPE` disposition: the signal is
//!   blocked in the sending thread for the duration of the write and the one it raised is
//!   consumed.
//! - **Several sender processes** (the sender inherited across `fork`) are safe only in
//!   shared mode ([`PipeConfig::with_shared_senders`]): every `write` is then at most `PIPE_BUF`
//!   (4096) bytes and holds whole frames, which POSIX makes atomic, so frames never
//!   interleave. A message whose frame would exceed `PIPE_BUF` (payload over
//!   [`MAX_SHARED_PAYLOAD`] bytes) is refused with [`Error::MessageTooLarge`]. In the
//!   default single-sender mode messages go up to the frame maximum; two processes writing
//!   large messages at once would interleave them, which the receiver then reports as a
//!   checksum error (never as a wrong message).
//! - **One receiving process.** Timed receives `poll` and then `read`; two processes reading
//!   one pipe would steal each other's bytes.
//! - **No leaks across exec.** Both descriptors are `O_CLOEXEC`. To hand an end to a program
//!   you exec, use [`PipeSender::inherit_in`] / [`PipeReceiver::inherit_in`]: only that
//!   descriptor, only in that child, loses `O_CLOEXEC`. The program rebuilds its end with
//!   [`PipeSender::from_fd`] / [`PipeReceiver::from_fd`] (see `examples/pipe_exec.rs`).
//!
//! # Sending with a deadline
//! [`Sender::try_send`] and [`Sender::send_timeout`] (through [`Sender::send_wait`]) never
//! leave half a frame in the pipe, and when they return [`Error::Full`] or
//! [`Error::Timeout`] nothing of the message was written: a stream is only as good as its
//! frames, and a half-written one would corrupt every later message, while one that
//! completed after the error would be a duplicate of the retry. The deadline bounds the
//! wait to *start* the frame; a frame started is one that fits, so it is never left
//! waiting for the reader:
//! - A frame of at most [`PIPE_BUF`] bytes (every frame in shared mode) goes in one
//!   non-blocking `write`, which the kernel makes all-or-nothing (a frame of at most a page
//!   goes into one pipe buffer, or the write fails with `EAGAIN`). The write goes through
//!   a second open file description of the same pipe, opened `O_NONBLOCK` through
//!   `/proc/self/fd` on the first such send and kept by this sender: `O_NONBLOCK` is a
//!   property of the description, and the sender's own one may be shared with other
//!   processes, so it is never flipped. This is exact with any number of senders.
//! - A larger frame (one sending process only) starts only when the pipe is empty: an
//!   empty pipe takes a frame up to its capacity whole, and with a single writer it can
//!   only get emptier until the write. (How much room a pipe that is not empty has cannot
//!   be read from outside: the kernel packs bytes into page-sized buffers, some part
//!   full.) So such a send may report [`Error::Full`] while part of the pipe is free.
//!   The sender first grows the pipe as for any large frame (see
//!   [`PipeConfig::with_capacity`]); a frame still larger than the pipe's buffer could
//!   only be written with the reader's help, so a deadline send refuses it with
//!   [`Error::MessageTooLarge`] (nothing written; [`Sender::send`] sends it, blocking).
//!
//! # Example
//! ```
//! use ipcprop::pipe;
//! use ipcprop::{Receiver, Sender};
//!
//! let (mut tx, mut rx) = pipe::channel()?;
//! tx.send(b"hello")?;
//! tx.send_batch(&[b"a", b"", b"bc"])?;
//! drop(tx);
//! assert_eq!(rx.recv()?, b"hello");
//! assert_eq!(rx.recv()?, b"a");
//! assert_eq!(rx.recv()?, b"");
//! assert_eq!(rx.recv_with(ipcprop::Wait::Forever, |m| m.len())?, 2);
//! assert!(rx.recv().unwrap_err().is_disconnected());
//! # Ok::<(), ipcprop::Error>(())
//! ```

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod fault;
mod io;

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};

pub use io::PipeIo;
use io::SigpipeGuard;

use crate::error::{Error, Result};
use crate::frame::{self, FrameDecoder, DEFAULT_MAX_FRAME_LEN, HEADER_LEN};
use crate::transport::{Receiver, Sender, Wait};

/// Writes of at most this many bytes to a pipe are atomic (POSIX `PIPE_BUF`; 4096 on Linux).
pub const PIPE_BUF: usize = nix::libc::PIPE_BUF;

/// The largest payload whose frame fits in one atomic write: `PIPE_BUF - HEADER_LEN`.
pub const MAX_SHARED_PAYLOAD: usize = PIPE_BUF - HEADER_LEN;

/// How many bytes a batched send gathers into one `write` in single-sender mode (the
/// default pipe capacity on Linux).
const BATCH_WRITE_BYTES: usize = 64 * 1024;

/// How many bytes a receive asks the kernel for at once, at least.
const READ_CHUNK: usize = 64 * 1024;

/// The largest pipe buffer a sender grows its pipe to on its own (see
/// [`PipeConfig::with_capacity`]); 1 MiB is also the kernel's default `pipe-max-size`.
pub const AUTO_PIPE_MAX: usize = 1 << 20;

/// Messages up to this long are copied behind their header and written with one `write`;
/// longer ones go out as a two-part `writev` without a copy.
const SMALL_COPY: usize = 1024;

/// Configuration of a pipe channel, shared by both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeConfig {
    max_message_len: usize,
    shared_senders: bool,
    sigpipe_ignored: bool,
    capacity: Option<usize>,
}

impl Default for PipeConfig {
    fn default() -> Self {
        PipeConfig {
            max_message_len: DEFAULT_MAX_FRAME_LEN,
            shared_senders: false,
            sigpipe_ignored: false,
            capacity: None,
        }
    }
}

impl PipeConfig {
    /// The default: messages up to 16 MiB, one sending process.
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest message either end accepts (checked by the sender before writing and by
    /// the receiver before allocating). At most `u32::MAX`. With
    /// [`PipeConfig::with_shared_senders`] a sender also refuses messages longer than
    /// [`MAX_SHARED_PAYLOAD`].
    pub fn with_max_message_len(mut self, max: usize) -> Self {
        self.max_message_len = max.min(u32::MAX as usize);
        self
    }

    /// Several processes will send on this pipe (the sender is inherited across `fork`):
    /// every write is made atomic, and messages longer than [`MAX_SHARED_PAYLOAD`] are
    /// refused.
    pub fn with_shared_senders(mut self, shared: bool) -> Self {
        self.shared_senders = shared;
        self
    }

    /// Promise that this process ignores `SIGPIPE` (`SIG_IGN`, which is what the Rust
    /// runtime sets before `main` in every Rust binary) and will keep ignoring it while the
    /// sender exists. Each write then skips the guard that otherwise blocks and unblocks
    /// `SIGPIPE` around it: two `rt_sigprocmask` calls per `send`, which cost more than the
    /// `write` of a small message (see the README's benchmark table).
    ///
    /// The promise is checked when a sender is made ([`channel_with`],
    /// [`PipeSender::from_fd`]): if `SIGPIPE` is not ignored then, that fails with
    /// [`Error::InvalidConfig`]. Breaking it later (setting `SIGPIPE` back to its default while
    /// the sender is in use) means a send to a pipe whose receiver is gone kills the process,
    /// as a plain `write` would, instead of returning [`Error::Disconnected`].
    ///
    /// ```
    /// use ipcprop::pipe::{self, PipeConfig};
    /// use ipcprop::{Receiver, Sender};
    ///
    /// // A Rust binary (and this doc-test) ignores SIGPIPE from the start.
    /// let (mut tx, rx) = pipe::channel_with(PipeConfig::new().with_sigpipe_ignored(true))?;
    /// drop(rx);
    /// assert!(tx.send(b"nobody reads this").unwrap_err().is_disconnected());
    /// # Ok::<(), ipcprop::Error>(())
    /// ```
    pub fn with_sigpipe_ignored(mut self, ignored: bool) -> Self {
        self.sigpipe_ignored = ignored;
        self
    }

    /// Asks the kernel for a pipe buffer of at least `bytes` (`F_SETPIPE_SZ`; the default
    /// is 64 KiB). A buffer larger than the messages lets a large message go in one write
    /// without waiting for the reader.
    ///
    /// Without this setting a sender grows the buffer by itself, the first time a frame
    /// does not fit, to the next power of two up to [`AUTO_PIPE_MAX`] (best effort: if the
    /// kernel refuses, frames go in pieces as they always can). With it, the size is fixed.
    /// Unprivileged processes may ask up to
    /// `/proc/sys/fs/pipe-max-size` (1 MiB by default), and big buffers count against the
    /// per-user `pipe-user-pages-soft` limit; [`channel_with`] fails with the kernel's error
    /// (`EPERM`, `EINVAL`) rather than silently keep the default.
    pub fn with_capacity(mut self, bytes: usize) -> Self {
        self.capacity = Some(bytes);
        self
    }

    /// The longest message either end accepts ([`PipeConfig::with_max_message_len`]): what
    /// a receiver accepts, and a sender with one sending process. With shared senders a
    /// sender accepts at most [`MAX_SHARED_PAYLOAD`] of it; its
    /// [`Sender::max_message_len`] says so.
    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// Whether several sending processes are allowed
    /// ([`PipeConfig::with_shared_senders`]).
    pub fn shared_senders(&self) -> bool {
        self.shared_senders
    }

    /// Whether this process promised to ignore `SIGPIPE`
    /// ([`PipeConfig::with_sigpipe_ignored`]).
    pub fn sigpipe_ignored(&self) -> bool {
        self.sigpipe_ignored
    }

    /// The pipe buffer size asked for ([`PipeConfig::with_capacity`]); `None`: the kernel's
    /// default, grown by the sender as large frames need.
    pub fn capacity(&self) -> Option<usize> {
        self.capacity
    }
}

/// Makes a pipe channel with the default configuration.
pub fn channel() -> Result<(PipeSender, PipeReceiver)> {
    channel_with(PipeConfig::default())
}

/// Makes a pipe channel with `config`.
pub fn channel_with(config: PipeConfig) -> Result<(PipeSender, PipeReceiver)> {
    check_sigpipe_promise(&config)?;
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    if let Some(bytes) = config.capacity {
        let size = i32::try_from(bytes).unwrap_or(i32::MAX);
        nix::fcntl::fcntl(&w, FcntlArg::F_SETPIPE_SZ(size))
            .map_err(|e| Error::sys("fcntl(F_SETPIPE_SZ)", e))?;
    }
    Ok((
        PipeSender::with_io(w, config),
        PipeReceiver::with_io(r, config),
    ))
}

/// With [`PipeConfig::with_sigpipe_ignored`], checks that `SIGPIPE` is ignored now.
fn check_sigpipe_promise(config: &PipeConfig) -> Result<()> {
    if config.sigpipe_ignored && !io::sigpipe_ignored()? {
        return Err(Error::config(
            "PipeConfig::with_sigpipe_ignored",
            "true, but SIGPIPE is not ignored in this process (its disposition is not \
             SIG_IGN), so the per-write SIGPIPE guard cannot be skipped",
        ));
    }
    Ok(())
}

/// Checks that `fd` is a pipe (or FIFO) and sets `FD_CLOEXEC` on it again. The descriptor
/// is the caller's: whatever happened to it before this call (an exec by another thread
/// while it lacked the flag) is outside the crate's reach.
fn adopt(fd: &OwnedFd) -> Result<()> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| Error::sys("fstat", e))?;
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFIFO {
        return Err(Error::Io {
            op: "adopt pipe descriptor",
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("descriptor {} is not a pipe", fd.as_raw_fd()),
            ),
        });
    }
    nix::fcntl::fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| Error::sys("fcntl(F_SETFD)", e))?;
    Ok(())
}

/// Lets descriptor `raw` survive the exec of `cmd`, in the child only.
fn inherit_in(raw: RawFd, cmd: &mut Command) -> RawFd {
    let hook = move || {
        // SAFETY: `raw` is open in the parent until `spawn` returns (the end borrowed by the
        // caller outlives the call that registered this hook, as documented), and fork copies
        // the descriptor table, so `raw` is open in the child here.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        nix::fcntl::fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
            .map(drop)
            .map_err(std::io::Error::from)
    };
    // SAFETY: the hook runs between fork and exec in the child; it only calls fcntl, which is
    // async-signal-safe, and neither allocates nor takes locks.
    unsafe { cmd.pre_exec(hook) };
    raw
}

/// Waits until `fd` is ready for `events` or `deadline` passes. Returns false on timeout.
fn wait_ready(fd: BorrowedFd<'_>, events: PollFlags, deadline: Option<Instant>) -> Result<bool> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so a deadline 0.4 ms away is not polled as "now" forever.
                let ms = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(fd, events)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() < d) {
                    continue; // woke early (rounding); wait for the rest
                }
                return Ok(false);
            }
            // Readable, writable, hung up or in error: the read or write will tell which.
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("poll", e)),
        }
    }
}

/// The sending end of a pipe channel.
///
/// Dropping it closes this copy of the write end; the receiver sees
/// [`Error::Disconnected`] once every copy (in every process) is closed.
#[derive(Debug)]
pub struct PipeSender<I: PipeIo = OwnedFd> {
    io: I,
    config: PipeConfig,
    /// Reused buffer for batched sends.
    batch: Vec<u8>,
    /// Set after a failed write: the stream may hold a partial frame, so nothing more may be
    /// written after it.
    broken: bool,
    /// The pipe buffer size as last seen or set (0: not asked yet), for growing it to fit
    /// large frames; `usize::MAX` once growing has failed (the kernel's limit is reached).
    pipe_size: usize,
    /// A second open file description of the pipe, `O_NONBLOCK`, for the all-or-nothing
    /// writes of sends with a deadline (opened on the first one).
    nonblocking: Option<OwnedFd>,
}

impl PipeSender<OwnedFd> {
    /// Rebuilds a sending end from a descriptor, typically one inherited across exec (see
    /// [`PipeSender::inherit_in`]). Fails if `fd` is not a pipe; sets `FD_CLOEXEC` on it.
    /// The descriptor was created (or inherited) by the caller: if it lacked `FD_CLOEXEC`,
    /// a `fork` + `exec` by another thread before this call passes it on, and that window
    /// is the caller's (adopt inherited descriptors before starting such threads).
    pub fn from_fd(fd: OwnedFd, config: PipeConfig) -> Result<Self> {
        adopt(&fd)?;
        check_sigpipe_promise(&config)?;
        Ok(Self::with_io(fd, config))
    }

    /// Arranges for this end to survive the exec of `cmd` (only in that child: the
    /// descriptor keeps `O_CLOEXEC` here and in every other child) and returns its number,
    /// to pass to the program (say, as an argument). Keep `self` alive until `cmd` is
    /// spawned.
    pub fn inherit_in(&self, cmd: &mut Command) -> RawFd {
        inherit_in(self.io.as_raw_fd(), cmd)
    }

    /// Another sender on the same pipe, for another thread or to hand to another process:
    /// its own copy of the write end (`F_DUPFD_CLOEXEC`: close-on-exec from its first
    /// instant). The receiver sees the end of the stream once every copy is gone.
    ///
    /// Only in shared mode ([`PipeConfig::with_shared_senders`]), whose atomic writes keep
    /// the frames of several senders whole; in single-sender mode it is refused with
    /// [`Error::InvalidConfig`].
    ///
    /// ```
    /// use ipcprop::pipe::{self, PipeConfig};
    /// use ipcprop::{Receiver, Sender};
    ///
    /// let (mut tx, mut rx) = pipe::channel_with(PipeConfig::new().with_shared_senders(true))?;
    /// let mut tx2 = tx.try_clone()?;
    /// std::thread::spawn(move || tx2.send(b"from a thread")).join().unwrap()?;
    /// drop(tx);
    /// assert_eq!(rx.recv()?, b"from a thread");
    /// assert!(rx.recv().unwrap_err().is_disconnected());
    /// # Ok::<(), ipcprop::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Self> {
        if !self.config.shared_senders {
            return Err(Error::config(
                "PipeConfig::with_shared_senders",
                "false, so the pipe has one sender: PipeSender::try_clone would make a second \
                 one, whose large frames could interleave with this one's",
            ));
        }
        let io = self
            .io
            .try_clone()
            .map_err(|e| Error::io("dup(F_DUPFD_CLOEXEC)", e))?;
        Ok(PipeSender {
            io,
            config: self.config,
            batch: Vec::new(),
            broken: self.broken,
            pipe_size: self.pipe_size,
            nonblocking: None,
        })
    }
}

impl<I: PipeIo> PipeSender<I> {
    /// Wraps an already-open write end (or a fault-injecting wrapper around one).
    pub fn with_io(io: I, config: PipeConfig) -> Self {
        PipeSender {
            io,
            config,
            batch: Vec::new(),
            broken: false,
            pipe_size: 0,
            nonblocking: None,
        }
    }

    /// Before a frame of `len` bytes: if it would not fit the pipe buffer, grows the buffer
    /// (`F_SETPIPE_SZ`) to the next power of two up to [`AUTO_PIPE_MAX`], so the frame goes
    /// in one write instead of in pieces, each waiting for the reader. Best effort: if the
    /// kernel refuses (the per-user pipe memory limit), the sender stops trying and writes
    /// in pieces as before. Not done with an explicit [`PipeConfig::with_capacity`].
    fn fit(&mut self, len: usize) {
        if self.config.capacity.is_some() || len <= self.pipe_size {
            return;
        }
        let fd = self.io.as_fd();
        if self.pipe_size == 0 {
            match nix::fcntl::fcntl(fd, FcntlArg::F_GETPIPE_SZ) {
                Ok(n) if n > 0 => self.pipe_size = n as usize,
                _ => {
                    self.pipe_size = usize::MAX;
                    return;
                }
            }
            if len <= self.pipe_size {
                return;
            }
        }
        let want = len.next_power_of_two().min(AUTO_PIPE_MAX);
        if want <= self.pipe_size {
            // Already at the ceiling: this frame goes in pieces.
            return;
        }
        self.pipe_size = match nix::fcntl::fcntl(fd, FcntlArg::F_SETPIPE_SZ(want as i32)) {
            Ok(n) if n > 0 => n as usize,
            _ => usize::MAX,
        };
    }

    /// This end's configuration.
    pub fn config(&self) -> &PipeConfig {
        &self.config
    }

    /// Gives back the descriptor (or wrapper) this end writes to.
    pub fn into_inner(self) -> I {
        self.io
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.config.max_message_len {
            return Err(Error::MessageTooLarge {
                len,
                max: self.config.max_message_len,
                why: "the frame maximum",
            });
        }
        if self.config.shared_senders && len > MAX_SHARED_PAYLOAD {
            return Err(Error::MessageTooLarge {
                len,
                max: MAX_SHARED_PAYLOAD,
                why: "PIPE_BUF atomicity with several senders",
            });
        }
        Ok(())
    }

    /// An error if an earlier write failed (the stream may hold a partial frame).
    fn check_not_broken(&self) -> Result<()> {
        if self.broken {
            return Err(Error::Io {
                op: "write to pipe",
                source: std::io::Error::other(
                    "an earlier write failed; the stream may hold a partial frame",
                ),
            });
        }
        Ok(())
    }

    /// The `SIGPIPE` guard for one write, unless the caller promised `SIGPIPE` is ignored
    /// (and creation checked it): a write to a pipe without reader then just fails with
    /// `EPIPE`.
    fn sigpipe_guard(&self) -> Result<Option<SigpipeGuard>> {
        if self.config.sigpipe_ignored {
            Ok(None)
        } else {
            SigpipeGuard::new()
                .map(Some)
                .map_err(|e| Error::sys("pthread_sigmask", e))
        }
    }

    /// An error unless this end writes to a pipe: the all-or-nothing send with a deadline
    /// relies on what the kernel promises for pipes (a write of at most `PIPE_BUF` bytes is
    /// whole or nothing; the buffer's size; a second description through `/proc`). A stream
    /// socket promises none of it (a non-blocking send may write part of a frame), so over
    /// one ([`PipeSender::with_io`]) a send with a deadline is [`Error::Unsupported`], and
    /// sends nothing.
    fn check_is_pipe(&self) -> Result<()> {
        let st = nix::sys::stat::fstat(self.io.as_fd()).map_err(|e| Error::sys("fstat", e))?;
        if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFIFO {
            Ok(())
        } else {
            Err(Error::Unsupported(
                "a send with a deadline over a descriptor that is not a pipe",
            ))
        }
    }

    /// The sender's non-blocking description of the pipe, opened on first use.
    fn nonblocking_fd(&mut self) -> Result<BorrowedFd<'_>> {
        if self.nonblocking.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            let path = format!("/proc/self/fd/{}", self.io.as_fd().as_raw_fd());
            // std opens with O_CLOEXEC. Opening the pipe again makes a new open file
            // description of it, whose O_NONBLOCK is this sender's alone.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&path);
            let file = match file {
                Ok(f) => f,
                // O_WRONLY | O_NONBLOCK on a pipe without reader.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => {
                    return Err(Error::Disconnected)
                }
                Err(e) => return Err(Error::io("open /proc/self/fd/N O_NONBLOCK (pipe)", e)),
            };
            self.nonblocking = Some(OwnedFd::from(file));
        }
        match &self.nonblocking {
            Some(fd) => Ok(fd.as_fd()),
            None => Err(Error::Disconnected),
        }
    }

    /// Writes `frame` (at most [`PIPE_BUF`] bytes) whole with one non-blocking write, or
    /// nothing: waits for room until `deadline`, then `wait.expired_send()`.
    fn write_atomic_before(&mut self, frame: &[u8], deadline: Instant, wait: Wait) -> Result<()> {
        debug_assert!(frame.len() <= PIPE_BUF);
        let guard = self.sigpipe_guard()?;
        let result = loop {
            let fd = self.nonblocking_fd()?;
            match nix::unistd::write(fd, frame) {
                Ok(n) if n == frame.len() => break Ok(()),
                Ok(n) => {
                    // The kernel keeps writes of at most PIPE_BUF bytes whole; if it ever did
                    // not, the stream now holds part of a frame.
                    self.broken = true;
                    break Err(Error::Io {
                        op: "write to pipe",
                        source: std::io::Error::other(format!(
                            "a write of {} bytes (at most PIPE_BUF) wrote only {n}",
                            frame.len()
                        )),
                    });
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    // No room: wait until a pipe buffer is free, or the deadline.
                    match wait_ready(fd, PollFlags::POLLOUT, Some(deadline)) {
                        Ok(true) => continue,
                        Ok(false) => break Err(wait.expired_send()),
                        Err(e) => break Err(e),
                    }
                }
                Err(Errno::EPIPE | Errno::ECONNRESET) => {
                    if let Some(g) = &guard {
                        g.consume_raised();
                    }
                    break Err(Error::Disconnected);
                }
                Err(e) => break Err(Error::sys("write to pipe", e)),
            }
        };
        drop(guard);
        result
    }

    /// Waits until the pipe holds no unread byte, or `deadline`: `Ok(false)` then.
    /// `Ok(true)` also when the reader is gone (the write that follows says so).
    fn wait_empty(&self, deadline: Instant) -> Result<bool> {
        let fd = self.io.as_fd();
        let mut pause = Duration::from_micros(50);
        loop {
            let mut queued: nix::libc::c_int = 0;
            // SAFETY: FIONREAD on a pipe stores the number of unread bytes as an int through
            // the pointer, which points to a live, writable c_int; `fd` is open (borrowed
            // from this end for the call).
            let rc = unsafe {
                nix::libc::ioctl(fd.as_raw_fd(), nix::libc::FIONREAD, &mut queued as *mut _)
            };
            if rc != 0 {
                return Err(Error::sys("ioctl(FIONREAD)", Errno::last()));
            }
            if queued == 0 {
                return Ok(true);
            }
            let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
            match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
                Ok(_)
                    if fds[0]
                        .revents()
                        .is_some_and(|r| r.contains(PollFlags::POLLERR)) =>
                {
                    return Ok(true); // no reader left
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::sys("poll", e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            // Nothing wakes a writer when the pipe becomes empty: look again soon.
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Writes all of `bufs`, retrying short writes, `EINTR` and `EAGAIN`.
    fn write_all(&mut self, bufs: &mut [IoSlice<'_>]) -> Result<()> {
        self.check_not_broken()?;
        let guard = self.sigpipe_guard()?;
        let mut bufs = bufs;
        let result = loop {
            if bufs.iter().all(|b| b.is_empty()) {
                break Ok(());
            }
            let written = match bufs {
                // One part (a small frame, a gathered batch): plain write(2), which skips
                // the kernel's iovec import.
                [one] => self.io.write(one),
                _ => self.io.writev(bufs),
            };
            match written {
                Ok(0) => {
                    break Err(Error::Io {
                        op: "write to pipe",
                        source: std::io::ErrorKind::WriteZero.into(),
                    })
                }
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    // Somebody made the descriptor non-blocking: wait for room, do not spin.
                    if let Err(e) = wait_ready(self.io.as_fd(), PollFlags::POLLOUT, None) {
                        break Err(e);
                    }
                }
                // ECONNRESET: the same over a socket whose reader closed with data unread.
                Err(Errno::EPIPE | Errno::ECONNRESET) => {
                    if let Some(g) = &guard {
                        g.consume_raised();
                    }
                    break Err(Error::Disconnected);
                }
                Err(e) => break Err(Error::sys("write to pipe", e)),
            }
        };
        drop(guard);
        if matches!(result, Err(ref e) if !e.is_disconnected()) {
            self.broken = true;
        }
        result
    }

    /// Writes `bytes` to the stream as they are, with no frame around them (retrying short
    /// writes, `EINTR` and `EAGAIN`, and returning [`Error::Disconnected`] with no
    /// `SIGPIPE` death, as a send does). For the harness only, which plays a hostile peer
    /// with it ([`Transport::forge_header`](crate::check::Transport::forge_header)):
    /// whatever is written is read as frames by the receiver.
    #[cfg_attr(any(ipcprop_loom, not(feature = "harness")), allow(dead_code))]
    pub(crate) fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_all(&mut [IoSlice::new(bytes)])
    }

    /// Writes the frames gathered in `self.batch` and empties it.
    fn flush_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let result = self.write_all(&mut [IoSlice::new(&batch)]);
        self.batch = batch;
        self.batch.clear();
        result
    }
}

impl<I: PipeIo> Sender for PipeSender<I> {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.check_len(msg.len())?;
        if msg.len() <= SMALL_COPY {
            // Small: one contiguous write; copying the bytes costs less than the kernel's
            // handling of a second iovec.
            let mut buf = std::mem::take(&mut self.batch);
            buf.clear();
            let encoded = frame::encode_into(msg, &mut buf);
            let result = match encoded {
                Ok(()) => self.write_all(&mut [IoSlice::new(&buf)]),
                Err(e) => Err(e.into()),
            };
            self.batch = buf;
            return result;
        }
        let header = frame::header(msg)?;
        self.fit(HEADER_LEN + msg.len());
        // One writev: header and payload leave together, without a copy.
        self.write_all(&mut [IoSlice::new(&header), IoSlice::new(msg)])
    }

    /// See the module documentation, "Sending with a deadline": the deadline bounds the
    /// wait to start the frame; a frame is written whole or not at all.
    fn send_wait(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        let Some(deadline) = wait.deadline() else {
            return self.send(msg); // Wait::Forever, or a wait too long to reckon
        };
        self.check_len(msg.len())?;
        self.check_not_broken()?;
        self.check_is_pipe()?;
        let len = frame::encoded_len(msg.len());
        if len <= PIPE_BUF {
            let mut buf = std::mem::take(&mut self.batch);
            buf.clear();
            let result = match frame::encode_into(msg, &mut buf) {
                Ok(()) => self.write_atomic_before(&buf, deadline, wait),
                Err(e) => Err(e.into()),
            };
            self.batch = buf;
            return result;
        }
        // Only in single-sender mode (shared mode refuses frames over PIPE_BUF).
        self.fit(len);
        let capacity = nix::fcntl::fcntl(self.io.as_fd(), FcntlArg::F_GETPIPE_SZ)
            .map_err(|e| Error::sys("fcntl(F_GETPIPE_SZ)", e))?;
        let capacity = usize::try_from(capacity).unwrap_or(0);
        if len > capacity {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: capacity.saturating_sub(HEADER_LEN),
                why: "a pipe send with a deadline: the frame must fit the pipe buffer",
            });
        }
        if !self.wait_empty(deadline)? {
            return Err(wait.expired_send());
        }
        // The pipe is empty and this is its only writer: the frame fits whole, the write
        // does not wait for the reader.
        self.send(msg)
    }

    fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<()> {
        for m in msgs {
            self.check_len(m.len())?;
        }
        // Gather whole frames into writes of at most `limit` bytes. In shared mode each write
        // is then atomic and never splits a frame; in single mode the limit only bounds the
        // copy. A frame too large to gather goes out on its own, without a copy.
        let limit = if self.config.shared_senders {
            PIPE_BUF
        } else {
            BATCH_WRITE_BYTES
        };
        self.batch.clear();
        let result = (|| {
            for m in msgs {
                let len = frame::encoded_len(m.len());
                if self.batch.len() + len > limit {
                    self.flush_batch()?;
                }
                if len > limit {
                    let header = frame::header(m)?;
                    self.fit(len);
                    self.write_all(&mut [IoSlice::new(&header), IoSlice::new(m)])?;
                } else {
                    frame::encode_into(m, &mut self.batch)?;
                }
            }
            self.flush_batch()
        })();
        self.batch.clear();
        result
    }

    fn max_message_len(&self) -> usize {
        if self.config.shared_senders {
            self.config.max_message_len.min(MAX_SHARED_PAYLOAD)
        } else {
            self.config.max_message_len
        }
    }
}

impl<I: PipeIo> AsFd for PipeSender<I> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

/// The receiving end of a pipe channel.
#[derive(Debug)]
pub struct PipeReceiver<I: PipeIo = OwnedFd> {
    io: I,
    config: PipeConfig,
    decoder: FrameDecoder,
    /// The write ends are all closed; what is buffered is all there will be.
    eof: bool,
}

impl PipeReceiver<OwnedFd> {
    /// Rebuilds a receiving end from a descriptor, typically one inherited across exec (see
    /// [`PipeReceiver::inherit_in`]). Fails if `fd` is not a pipe; sets `FD_CLOEXEC` on it.
    /// The descriptor was created (or inherited) by the caller: if it lacked `FD_CLOEXEC`,
    /// a `fork` + `exec` by another thread before this call passes it on, and that window
    /// is the caller's (adopt inherited descriptors before starting such threads).
    pub fn from_fd(fd: OwnedFd, config: PipeConfig) -> Result<Self> {
        adopt(&fd)?;
        Ok(Self::with_io(fd, config))
    }

    /// Arranges for this end to survive the exec of `cmd` (only in that child) and returns its
    /// number. Keep `self` alive until `cmd` is spawned.
    pub fn inherit_in(&self, cmd: &mut Command) -> RawFd {
        inherit_in(self.io.as_raw_fd(), cmd)
    }
}

impl<I: PipeIo> PipeReceiver<I> {
    /// Wraps an already-open read end (or a fault-injecting wrapper around one).
    pub fn with_io(io: I, config: PipeConfig) -> Self {
        PipeReceiver {
            io,
            config,
            decoder: FrameDecoder::with_max_message_len(config.max_message_len),
            eof: false,
        }
    }

    /// This end's configuration.
    pub fn config(&self) -> &PipeConfig {
        &self.config
    }

    /// Gives back the descriptor (or wrapper) this end reads from. Bytes already read from
    /// it but not yet returned as messages are dropped.
    pub fn into_inner(self) -> I {
        self.io
    }

    /// Reads once from the pipe into the decoder. `Ok(false)` if `deadline` passed first.
    fn fill(&mut self, deadline: Option<Instant>) -> Result<bool> {
        loop {
            if deadline.is_some() && !wait_ready(self.io.as_fd(), PollFlags::POLLIN, deadline)? {
                return Ok(false);
            }
            let want = self.decoder.read_hint().max(READ_CHUNK);
            let buf = self.decoder.spare(want);
            match self.io.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(true);
                }
                Ok(n) => {
                    self.decoder.commit(n);
                    return Ok(true);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    // A non-blocking descriptor with nothing to read: wait, do not spin.
                    if !wait_ready(self.io.as_fd(), PollFlags::POLLIN, deadline)? {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(Error::sys("read from pipe", e)),
            }
        }
    }
}

impl<I: PipeIo> Receiver for PipeReceiver<I> {
    fn recv_with<R>(&mut self, wait: Wait, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let deadline = wait.deadline();
        loop {
            if let Some(msg) = self.decoder.next_frame()? {
                return Ok(f(msg));
            }
            if self.eof {
                self.decoder.finish()?;
                return Err(Error::Disconnected);
            }
            if !self.fill(deadline)? {
                return Err(wait.expired());
            }
        }
    }

    fn max_message_len(&self) -> usize {
        self.config.max_message_len
    }
}

crate::transport::receiver_into_iter!({I: PipeIo} PipeReceiver<I>);

impl<I: PipeIo> AsFd for PipeReceiver<I> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}
