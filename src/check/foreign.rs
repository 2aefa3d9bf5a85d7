//! Adapters for transports this crate did not write, to run the battery over them:
//! a `UnixStream` socketpair carrying this crate's frames, a `SOCK_SEQPACKET`
//! socketpair carrying one message per packet, and a pipe whose reader keeps a copy of the
//! write end (no end of stream; with [`crate::liveness`], one). What the battery finds in them is a result
//! about those transports (see `tests/foreign.rs`), not a failure of the harness.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

use super::plan::Capabilities;
use super::Transport;
use crate::error::{Error, Result};
use crate::frame::DEFAULT_MAX_FRAME_LEN;
use crate::liveness::{LiveReceiver, LiveSender};
use crate::pipe::{PipeConfig, PipeReceiver, PipeSender, MAX_SHARED_PAYLOAD};
use crate::transport::{Receiver, Sender, Wait};

fn pair_of(kind: SockType) -> Result<(OwnedFd, OwnedFd)> {
    socketpair(AddressFamily::Unix, kind, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| Error::sys("socketpair", e))
}

/// A `SOCK_STREAM` Unix socketpair carrying frames (the pipe channel's code over a socket).
/// Stream writes from several processes may interleave, so it declares one sender.
#[derive(Debug, Clone, Default)]
pub struct UnixStreamTransport;

impl Transport for UnixStreamTransport {
    type Sender = PipeSender;
    type Receiver = PipeReceiver;

    fn name(&self) -> String {
        "unix-stream".into()
    }

    fn capabilities(&self) -> Capabilities {
        let max = DEFAULT_MAX_FRAME_LEN;
        Capabilities {
            multi_sender: None,
            boundary_sizes: vec![0, 1, 212_992 - 8, 212_992, 212_992 + 1, max - 1, max],
            ..Capabilities::new(max)
        }
    }

    fn pair(&self, _senders: usize) -> Result<(PipeSender, PipeReceiver)> {
        let (a, b) = pair_of(SockType::Stream)?;
        Ok((
            PipeSender::with_io(a, PipeConfig::new()),
            PipeReceiver::with_io(b, PipeConfig::new()),
        ))
    }

    fn forge_header(&self, tx: &mut PipeSender, claimed_len: u64) -> Result<bool> {
        super::builtin::forge_frame_header(tx, claimed_len)
    }
}

/// The largest packet the seqpacket adapter sends (under the default socket buffer).
pub const SEQPACKET_MAX: usize = 64 * 1024;

/// A `SOCK_SEQPACKET` Unix socketpair: one message per packet, no framing of ours. Packets
/// are atomic, so several sender processes may share the sending end. It has no header to
/// forge (a packet's length is its message's), so it keeps the default
/// [`Transport::forge_header`].
#[derive(Debug, Clone, Default)]
pub struct SeqpacketTransport;

/// The sending end of [`SeqpacketTransport`].
#[derive(Debug)]
pub struct SeqpacketSender(OwnedFd);

/// The receiving end of [`SeqpacketTransport`].
#[derive(Debug)]
pub struct SeqpacketReceiver {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Transport for SeqpacketTransport {
    type Sender = SeqpacketSender;
    type Receiver = SeqpacketReceiver;

    fn name(&self) -> String {
        "unix-seqpacket".into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            multi_sender: Some(SEQPACKET_MAX),
            boundary_sizes: vec![0, 1, 4095, 4096, 4097, SEQPACKET_MAX - 1, SEQPACKET_MAX],
            ..Capabilities::new(SEQPACKET_MAX)
        }
    }

    fn pair(&self, _senders: usize) -> Result<(SeqpacketSender, SeqpacketReceiver)> {
        let (a, b) = pair_of(SockType::SeqPacket)?;
        Ok((
            SeqpacketSender(a),
            SeqpacketReceiver {
                fd: b,
                buf: vec![0; SEQPACKET_MAX + 1],
            },
        ))
    }
}

impl Sender for SeqpacketSender {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_wait(msg, Wait::Forever)
    }

    /// A packet is sent whole or not at all: without waiting (`MSG_DONTWAIT`) the socket
    /// refuses it with `EAGAIN` while the receiver's queue is full, and the send then waits
    /// for `POLLOUT` until the deadline.
    fn send_wait(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        if msg.len() > SEQPACKET_MAX {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: SEQPACKET_MAX,
                why: "the seqpacket adapter's packet size",
            });
        }
        let deadline = wait.deadline();
        let flags = match deadline {
            None => MsgFlags::MSG_NOSIGNAL,
            Some(_) => MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        };
        loop {
            // MSG_NOSIGNAL: a gone receiver is EPIPE, not a SIGPIPE death.
            match nix::sys::socket::send(std::os::fd::AsRawFd::as_raw_fd(&self.0), msg, flags) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    let Some(d) = deadline else { continue };
                    let ms = d
                        .saturating_duration_since(Instant::now())
                        .as_micros()
                        .div_ceil(1000);
                    if ms == 0 {
                        return Err(wait.expired_send());
                    }
                    let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLOUT)];
                    match nix::poll::poll(
                        &mut fds,
                        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
                    ) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(e) => return Err(Error::sys("poll", e)),
                    }
                }
                Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(Error::Disconnected),
                Err(e) => return Err(Error::sys("send(SOCK_SEQPACKET)", e)),
            }
        }
    }

    fn max_message_len(&self) -> usize {
        SEQPACKET_MAX
    }
}

impl Receiver for SeqpacketReceiver {
    fn recv_with<R>(&mut self, wait: Wait, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let deadline = wait.deadline();
        loop {
            if let Some(d) = deadline {
                let ms = d
                    .saturating_duration_since(Instant::now())
                    .as_micros()
                    .div_ceil(1000);
                let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
                match nix::poll::poll(
                    &mut fds,
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
                ) {
                    Ok(0) => return Err(wait.expired()),
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(Error::sys("poll", e)),
                }
            }
            match nix::sys::socket::recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                &mut self.buf,
                MsgFlags::empty(),
            ) {
                // Zero bytes: end of stream, or an empty packet. The socket API cannot tell
                // them apart; this adapter, like most code, reads it as end of stream.
                Ok(0) => return Err(Error::Disconnected),
                Ok(n) => return Ok(f(&self.buf[..n])),
                Err(Errno::EINTR | Errno::EAGAIN) => continue,
                Err(e) => return Err(Error::sys("recv(SOCK_SEQPACKET)", e)),
            }
        }
    }

    fn max_message_len(&self) -> usize {
        SEQPACKET_MAX
    }
}

/// A pipe carrying this crate's frames whose reader keeps a copy of the write end, as a
/// reader does that forgets to close its copy after `fork`, or that opens a FIFO
/// read-write so that its `open` does not block: the read end never sees end of file, so
/// the transport has no end of stream. It says so
/// ([`Capabilities::end_of_stream`] false); the harness then ends each case itself once
/// the senders are gone. Several senders share it (frames up to `PIPE_BUF` are written
/// whole).
#[derive(Debug, Clone, Default)]
pub struct KeptWriterPipeTransport;

/// The receiving end of [`KeptWriterPipeTransport`]: a pipe receiver and the copy of the
/// write end it keeps.
#[derive(Debug)]
pub struct KeptWriterReceiver {
    rx: PipeReceiver,
    _writer: OwnedFd,
}

impl Receiver for KeptWriterReceiver {
    fn recv_with<R>(&mut self, wait: Wait, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.rx.recv_with(wait, f)
    }

    fn max_message_len(&self) -> usize {
        self.rx.max_message_len()
    }
}

fn kept_writer_pair(senders: usize) -> Result<(PipeSender, KeptWriterReceiver)> {
    let config = PipeConfig::new().with_shared_senders(senders > 1);
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    // std makes the copy with F_DUPFD_CLOEXEC: close-on-exec from its first instant.
    let kept = w.try_clone().map_err(|e| Error::Io {
        op: "dup(F_DUPFD_CLOEXEC)",
        source: e,
    })?;
    Ok((
        PipeSender::with_io(w, config),
        KeptWriterReceiver {
            rx: PipeReceiver::with_io(r, config),
            _writer: kept,
        },
    ))
}

fn kept_writer_caps() -> Capabilities {
    let max = DEFAULT_MAX_FRAME_LEN;
    Capabilities {
        multi_sender: Some(MAX_SHARED_PAYLOAD),
        boundary_sizes: vec![0, 1, MAX_SHARED_PAYLOAD, 65_536 - 8, 65_536, max],
        ..Capabilities::new(max)
    }
}

impl Transport for KeptWriterPipeTransport {
    type Sender = PipeSender;
    type Receiver = KeptWriterReceiver;

    fn name(&self) -> String {
        "pipe-kept-writer".into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            end_of_stream: false,
            ..kept_writer_caps()
        }
    }

    fn pair(&self, senders: usize) -> Result<(PipeSender, KeptWriterReceiver)> {
        kept_writer_pair(senders)
    }
}

/// [`KeptWriterPipeTransport`] with an end of stream added by
/// [`liveness::with_end_of_stream`](crate::liveness::with_end_of_stream): it declares one,
/// and keeps it.
#[derive(Debug, Clone, Default)]
pub struct LiveKeptWriterPipeTransport;

impl Transport for LiveKeptWriterPipeTransport {
    type Sender = LiveSender<PipeSender>;
    type Receiver = LiveReceiver<KeptWriterReceiver>;

    fn name(&self) -> String {
        "pipe-kept-writer+liveness".into()
    }

    fn capabilities(&self) -> Capabilities {
        kept_writer_caps()
    }

    fn pair(&self, senders: usize) -> Result<(Self::Sender, Self::Receiver)> {
        let (tx, rx) = kept_writer_pair(senders)?;
        crate::liveness::with_end_of_stream(tx, rx)
    }
}
