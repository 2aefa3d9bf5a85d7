//! The ring's public ends over a shared mapping: [`RingSender`], [`RingReceiver`], and
//! how they travel between processes.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags};

use super::layout::{self, MIN_CAPACITY};
use super::region::Region;
use super::ring::{Consumer, Memory, Producer};
use crate::error::{Error, Result};
use crate::liveness::{self, Liveness};
use crate::transport::{Receiver, Sender, Wait};

/// Configuration of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    capacity: usize,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            capacity: 256 * 1024,
        }
    }
}

impl RingConfig {
    /// The default: 256 KiB of data.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of data the ring holds: a power of two from [`MIN_CAPACITY`](super::MIN_CAPACITY) to
    /// [`MAX_CAPACITY`](super::MAX_CAPACITY) (checked by [`channel_with`]). Messages go up to half of it, less 8.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// The configured capacity.
    pub fn get_capacity(&self) -> usize {
        self.capacity
    }

    /// The longest message a ring of this capacity carries.
    pub fn max_message_len(&self) -> usize {
        layout::max_message(self.capacity.max(MIN_CAPACITY))
    }
}

/// Makes a ring with the default configuration.
pub fn channel() -> Result<(RingSender, RingReceiver)> {
    channel_with(RingConfig::default())
}

/// Makes a ring with `config`.
pub fn channel_with(config: RingConfig) -> Result<(RingSender, RingReceiver)> {
    let region = Region::create(config.capacity)?;
    let memfd = nix::unistd::dup(region.memfd()).map_err(|e| Error::sys("dup", e))?;
    set_cloexec(&memfd)?;
    let other = Region::attach(memfd)?;
    let (s_live, r_live) = liveness::pair()?;
    let prod = Producer::new(&region)?;
    let cons = Consumer::new(&other)?;
    Ok((
        RingSender {
            region,
            prod,
            live: s_live,
        },
        RingReceiver {
            region: other,
            cons,
            live: r_live,
        },
    ))
}

fn set_cloexec(fd: &OwnedFd) -> Result<()> {
    nix::fcntl::fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| Error::sys("fcntl(F_SETFD)", e))?;
    Ok(())
}

/// The three descriptors that make an end: the ring memory, the end's own liveness
/// descriptor, and the one that watches the peer.
fn end_fds<'a>(region: &'a Region, live: &'a Liveness) -> Result<[std::os::fd::BorrowedFd<'a>; 3]> {
    let own = live.own.as_ref().ok_or(Error::Disconnected)?;
    Ok([region.memfd().as_fd(), own.as_fd(), live.peer.as_fd()])
}

/// Sends an end's descriptors over a Unix socket, tagged with `tag`.
fn send_fds(sock: &UnixStream, tag: u8, fds: [std::os::fd::BorrowedFd<'_>; 3]) -> Result<()> {
    let raw: [RawFd; 3] = fds.map(|f| f.as_raw_fd());
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let iov = [IoSlice::new(std::slice::from_ref(&tag))];
    loop {
        match nix::sys::socket::sendmsg::<()>(
            sock.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("sendmsg(SCM_RIGHTS)", e)),
        }
    }
}

/// Receives an end's descriptors sent by [`send_fds`] with `tag`.
fn recv_fds(sock: &UnixStream, tag: u8) -> Result<[OwnedFd; 3]> {
    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let mut got: Vec<OwnedFd> = Vec::new();
    let n = loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        match nix::sys::socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                for c in msg.cmsgs().map_err(|e| Error::sys("recvmsg", e))? {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        // SAFETY: the kernel just installed these descriptors in this process
                        // for us; nothing else refers to them, so we own them.
                        got.extend(
                            fds.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                break msg.bytes;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("recvmsg(SCM_RIGHTS)", e)),
        }
    };
    if n != 1 || byte[0] != tag {
        return Err(Error::Corrupt(format!(
            "expected a ring end (tag {tag}) on the socket, got {n} byte(s) tagged {}",
            byte[0]
        )));
    }
    let fds: [OwnedFd; 3] = got.try_into().map_err(|v: Vec<OwnedFd>| {
        Error::Corrupt(format!(
            "expected 3 descriptors with a ring end, got {}",
            v.len()
        ))
    })?;
    Ok(fds)
}

/// Lets the three descriptors survive the exec of `cmd` (in that child only) and returns
/// them as `"memfd,own,peer"`.
fn inherit_fds(cmd: &mut Command, fds: [std::os::fd::BorrowedFd<'_>; 3]) -> String {
    let raw: [RawFd; 3] = fds.map(|f| f.as_raw_fd());
    let hook = move || {
        for fd in raw {
            // SAFETY: these descriptors are open in the parent until spawn returns (the end
            // outlives the call, as documented) and fork copied them into this child.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::fcntl::fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
                .map_err(std::io::Error::from)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec; it only calls fcntl (async-signal-safe)
    // and allocates nothing.
    unsafe { cmd.pre_exec(hook) };
    format!("{},{},{}", raw[0], raw[1], raw[2])
}

/// Parses `"memfd,own,peer"` and takes ownership of the descriptors.
///
/// # Safety
/// The three numbers must be open descriptors that this process owns and nothing else uses.
unsafe fn adopt_fds(spec: &str) -> Result<[OwnedFd; 3]> {
    let nums: Vec<RawFd> = spec
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let [m, o, p] = nums[..] else {
        return Err(Error::Io {
            op: "parse ring descriptors",
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("expected \"memfd,own,peer\", got {spec:?}"),
            ),
        });
    };
    // SAFETY: the caller guarantees these are open descriptors owned by nobody else.
    let fds = unsafe {
        [
            OwnedFd::from_raw_fd(m),
            OwnedFd::from_raw_fd(o),
            OwnedFd::from_raw_fd(p),
        ]
    };
    for fd in &fds {
        set_cloexec(fd)?;
    }
    Ok(fds)
}

/// The sending end of a ring.
#[derive(Debug)]
pub struct RingSender {
    region: Region,
    prod: Producer,
    live: Liveness,
}

const SENDER_TAG: u8 = b'S';
const RECEIVER_TAG: u8 = b'R';

impl RingSender {
    fn from_fds([memfd, own, peer]: [OwnedFd; 3]) -> Result<Self> {
        let region = Region::attach(memfd)?;
        let prod = Producer::new(&region)?;
        Ok(RingSender {
            region,
            prod,
            live: Liveness::sender(own, peer),
        })
    }

    /// Data capacity of the ring in bytes.
    pub fn capacity(&self) -> usize {
        self.region.capacity()
    }

    /// The ring memory's descriptor (a sealed memfd), for inspection, or for a test that
    /// plays a hostile peer by mapping it and writing garbage.
    pub fn memory_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.region.memfd().as_fd()
    }

    /// Sends `msg` if there is room now; [`Error::Full`] otherwise.
    pub fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_until(msg, Some(Instant::now()))
            .map_err(|e| match e {
                Error::Empty => Error::Full,
                e => e,
            })
    }

    /// Sends `msg`, waiting at most `timeout` for room; [`Error::Timeout`] otherwise.
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        let deadline = Instant::now().checked_add(timeout);
        self.send_until(msg, deadline).map_err(|e| match e {
            Error::Empty => Error::Timeout(timeout),
            e => e,
        })
    }

    fn send_until(&mut self, msg: &[u8], deadline: Option<Instant>) -> Result<()> {
        let RingSender { region, prod, live } = self;
        prod.send(
            region,
            live,
            &[msg.len()],
            &mut |_, buf| buf.copy_from_slice(msg),
            deadline,
            false,
        )
        .map(drop)
    }

    /// Reserves `len` bytes in the ring, lends them to `fill` to write the message in place
    /// (no copy), then publishes it. Blocks while the ring is full.
    pub fn send_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        let RingSender { region, prod, live } = self;
        let mut fill = Some(fill);
        prod.send(
            region,
            live,
            &[len],
            &mut |_, buf| {
                if let Some(f) = fill.take() {
                    f(buf)
                }
            },
            None,
            false,
        )
        .map(drop)
    }

    /// Hands this end to another process over a Unix socket (SCM_RIGHTS); that process calls
    /// [`RingSender::receive_from`]. This end stays usable here: the ring then has two copies
    /// of its sender, and closes when both are gone. Only one of them may send.
    pub fn send_over(&self, sock: &UnixStream) -> Result<()> {
        send_fds(sock, SENDER_TAG, end_fds(&self.region, &self.live)?)
    }

    /// Receives a sending end sent with [`RingSender::send_over`].
    pub fn receive_from(sock: &UnixStream) -> Result<RingSender> {
        RingSender::from_fds(recv_fds(sock, SENDER_TAG)?)
    }

    /// Arranges for this end to survive the exec of `cmd` (in that child only) and returns
    /// the descriptor list to pass to the program, for [`RingSender::from_inherited`].
    /// Keep `self` alive until `cmd` is spawned.
    pub fn inherit_in(&self, cmd: &mut Command) -> Result<String> {
        Ok(inherit_fds(cmd, end_fds(&self.region, &self.live)?))
    }

    /// Rebuilds a sending end from the list [`RingSender::inherit_in`] returned.
    ///
    /// # Safety
    /// The descriptors named in `spec` must be open, owned by this process, and used by
    /// nothing else (as they are when inherited across exec for this purpose).
    pub unsafe fn from_inherited(spec: &str) -> Result<RingSender> {
        // SAFETY: forwarded from the caller.
        RingSender::from_fds(unsafe { adopt_fds(spec) }?)
    }
}

impl Sender for RingSender {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_until(msg, None)
    }

    fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<()> {
        let lens: Vec<usize> = msgs.iter().map(|m| m.len()).collect();
        let RingSender { region, prod, live } = self;
        prod.send(
            region,
            live,
            &lens,
            &mut |i, buf| buf.copy_from_slice(msgs[i]),
            None,
            true,
        )
        .map(drop)
    }

    fn max_message_len(&self) -> usize {
        layout::max_message(self.region.capacity())
    }
}

impl Drop for RingSender {
    fn drop(&mut self) {
        // Close our "I exist" descriptor first, then wake the receiver so that, if this was
        // the last copy, it notices now rather than at its next liveness check.
        drop(self.live.own.take());
        self.prod.wake_peer(&self.region);
    }
}

/// The receiving end of a ring.
#[derive(Debug)]
pub struct RingReceiver {
    region: Region,
    cons: Consumer,
    live: Liveness,
}

impl RingReceiver {
    fn from_fds([memfd, own, peer]: [OwnedFd; 3]) -> Result<Self> {
        let region = Region::attach(memfd)?;
        let cons = Consumer::new(&region)?;
        Ok(RingReceiver {
            region,
            cons,
            live: Liveness::receiver(own, peer),
        })
    }

    /// Data capacity of the ring in bytes.
    pub fn capacity(&self) -> usize {
        self.region.capacity()
    }

    /// The ring memory's descriptor (a sealed memfd); see [`RingSender::memory_fd`].
    pub fn memory_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.region.memfd().as_fd()
    }

    /// Waits for at least one message, then takes every message already published, up to
    /// `max`, lending each to `f` in order, and frees them all with one index store (so
    /// the sender sees the space at once, and the per-message cost of telling it is paid
    /// once). Returns how many were received; [`Error::Disconnected`] as `recv` does.
    ///
    /// ```
    /// use ipcprop::{shm, Sender, Wait};
    ///
    /// let (mut tx, mut rx) = shm::channel()?;
    /// tx.send_batch(&[b"a", b"b", b"c"])?;
    /// let mut got = Vec::new();
    /// let n = rx.recv_many(16, Wait::Forever, |m| got.push(m.to_vec()))?;
    /// assert_eq!((n, got), (3, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]));
    /// # Ok::<(), ipcprop::Error>(())
    /// ```
    pub fn recv_many(&mut self, max: usize, wait: Wait, mut f: impl FnMut(&[u8])) -> Result<usize> {
        let deadline = wait.deadline();
        let RingReceiver { region, cons, live } = self;
        match cons.drain(region, live, max, &mut f, deadline)? {
            Some(n) => Ok(n),
            None => Err(wait.expired()),
        }
    }

    /// Hands this end to another process over a Unix socket (SCM_RIGHTS); that process
    /// calls [`RingReceiver::receive_from`]. Only one copy of the receiver may receive.
    pub fn send_over(&self, sock: &UnixStream) -> Result<()> {
        send_fds(sock, RECEIVER_TAG, end_fds(&self.region, &self.live)?)
    }

    /// Receives a receiving end sent with [`RingReceiver::send_over`].
    pub fn receive_from(sock: &UnixStream) -> Result<RingReceiver> {
        RingReceiver::from_fds(recv_fds(sock, RECEIVER_TAG)?)
    }

    /// Arranges for this end to survive the exec of `cmd` (in that child only) and returns
    /// the descriptor list to pass to the program, for [`RingReceiver::from_inherited`].
    /// Keep `self` alive until `cmd` is spawned.
    pub fn inherit_in(&self, cmd: &mut Command) -> Result<String> {
        Ok(inherit_fds(cmd, end_fds(&self.region, &self.live)?))
    }

    /// Rebuilds a receiving end from the list [`RingReceiver::inherit_in`] returned.
    ///
    /// # Safety
    /// The descriptors named in `spec` must be open, owned by this process, and used by
    /// nothing else (as they are when inherited across exec for this purpose).
    pub unsafe fn from_inherited(spec: &str) -> Result<RingReceiver> {
        // SAFETY: forwarded from the caller.
        RingReceiver::from_fds(unsafe { adopt_fds(spec) }?)
    }
}

impl Receiver for RingReceiver {
    fn recv_with<R>(&mut self, wait: Wait, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let deadline = wait.deadline();
        let RingReceiver { region, cons, live } = self;
        match cons.recv(region, live, f, deadline)? {
            Some(r) => Ok(r),
            None => Err(wait.expired()),
        }
    }

    fn max_message_len(&self) -> usize {
        layout::max_message(self.region.capacity())
    }
}

impl Drop for RingReceiver {
    fn drop(&mut self) {
        drop(self.live.own.take());
        self.cons.wake_peer(&self.region);
    }
}
