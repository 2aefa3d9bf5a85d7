//! The ring's public ends over a shared mapping: [`RingSender`], [`RingReceiver`], and
//! how they travel between processes.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::fcntl::{FcntlArg, FdFlag};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags};

use super::layout::{self, MIN_CAPACITY};
use super::region::{Copying, Region};
use super::ring::{Consumer, Memory, Messages, Producer, Until};
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

    /// Bytes of data the ring holds: a power of two from [`MIN_CAPACITY`] to
    /// [`MAX_CAPACITY`](super::MAX_CAPACITY) (checked by [`channel_with`], which refuses
    /// another with [`Error::InvalidConfig`]). Messages go up to half of it, less 8.
    pub fn with_capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// The configured capacity ([`RingConfig::with_capacity`]).
    pub fn capacity(&self) -> usize {
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
    let memfd = dup_cloexec(region.memfd())?;
    let other = Region::attach(memfd)?;
    let (s_live, r_live) = liveness::pair()?;
    let prod = Producer::new(&region)?;
    let cons = Consumer::new(&other)?;
    Ok((
        RingSender {
            region,
            prod,
            live: s_live,
            scratch: Scratch::default(),
            trusted: false,
        },
        RingReceiver {
            region: other,
            cons,
            live: r_live,
            scratch: Scratch::default(),
            trusted: false,
        },
    ))
}

/// Duplicates `fd` with `FD_CLOEXEC` set atomically (`F_DUPFD_CLOEXEC`): a `dup` followed
/// by setting the flag would leave a window in which another thread's `fork` + `exec` hands
/// the ring's memory, read-write, to an unrelated program.
fn dup_cloexec(fd: &OwnedFd) -> Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(0))
        .map_err(|e| Error::sys("fcntl(F_DUPFD_CLOEXEC)", e))?;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) just returned this new descriptor; nothing else in the
    // process knows its number, so this OwnedFd is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Sets `FD_CLOEXEC` on a descriptor the crate did not create (adopted from the caller).
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

/// Parses `"memfd,own,peer"`, takes ownership of the descriptors and sets `FD_CLOEXEC` on
/// them (they were inherited without it). Until then a concurrent `fork` + `exec` by
/// another thread of the caller's would pass them on: that window is the caller's.
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
    /// The private buffer `send_with` lends (unless trusted).
    scratch: Scratch,
    /// Set by [`RingSender::trust_peer`]: lend the ring's memory itself.
    trusted: bool,
}

/// An end's private buffer for payloads. Its `Debug` shows its size, not its bytes (it
/// holds up to a maximum-size message).
#[derive(Default)]
struct Scratch(Vec<u8>);

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scratch({} bytes)", self.0.len())
    }
}

/// Runs `$call` with `$mem` bound to the ring's memory as this end sees it: copying
/// through the private buffer (the default), or the region itself (trusted).
macro_rules! with_memory {
    ($end:expr, |$mem:ident| $call:expr) => {
        if $end.trusted {
            let $mem = &$end.region;
            $call
        } else {
            let $mem = &Copying::new(&$end.region, &mut $end.scratch.0);
            $call
        }
    };
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
            scratch: Scratch::default(),
            trusted: false,
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

    fn send_until(&mut self, msg: &[u8], deadline: Until) -> Result<()> {
        // Copied straight from `msg` (this process's memory) into the ring: one copy.
        with_memory!(self, |mem| self.prod.send(
            mem,
            &self.live,
            Messages::Copy(&[msg]),
            deadline,
            false
        ))
        .map(drop)
    }

    /// Reserves `len` bytes in the ring, lends `len` bytes to `fill` to write the message,
    /// then publishes it. Blocks while the ring is full. By default the bytes lent are a
    /// private buffer, copied into the ring after `fill` returns (with atomic stores); after
    /// [`RingSender::trust_peer`] they are the reserved bytes of the ring itself (no copy).
    /// Either way their content on entry is unspecified: write all `len` of them.
    pub fn send_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        let mut fill = Some(fill);
        let fill = &mut |_: usize, buf: &mut [u8]| {
            if let Some(f) = fill.take() {
                f(buf)
            }
        };
        with_memory!(self, |mem| self.prod.send(
            mem,
            &self.live,
            Messages::Fill { lens: &[len], fill },
            Until::Forever,
            false
        ))
        .map(drop)
    }

    /// Zero-copy sending: [`send_with`](RingSender::send_with) lends the ring's own memory
    /// instead of a private buffer, and `send` and `send_batch` copy into it with plain
    /// writes rather than atomic word stores.
    ///
    /// # Safety
    /// The caller promises that, while this end exists, no process (the peer included)
    /// reads or writes the ring's data bytes outside the protocol: the receiver reads a
    /// record only after it is published and frees it before the space is reused, and
    /// nobody else touches the memory. A peer that breaks this (a bug, or a hostile or
    /// compromised process holding the memory descriptor) then races with the plain
    /// accesses of this process, which is undefined behaviour in it, not merely wrong
    /// data. Without this call (the default) the end is sound whatever the peer writes.
    pub unsafe fn trust_peer(mut self) -> RingSender {
        self.trusted = true;
        self.scratch = Scratch::default();
        self
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

    /// Rebuilds a sending end from the list [`RingSender::inherit_in`] returned, setting
    /// `FD_CLOEXEC` on the descriptors. They were inherited without it, so between the exec
    /// and this call a `fork` + `exec` by another thread would pass them on too: call it
    /// before starting threads that spawn programs (that window is the caller's).
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
        self.send_until(msg, Until::Forever)
    }

    /// Waits for room in the ring until the deadline: a record is reserved and published
    /// whole or not at all, so [`Error::Full`] / [`Error::Timeout`] mean nothing was sent.
    fn send_wait(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        self.send_until(msg, Until::of(wait)).map_err(|e| match e {
            Error::Empty => wait.expired_send(),
            e => e,
        })
    }

    fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<()> {
        with_memory!(self, |mem| self.prod.send(
            mem,
            &self.live,
            Messages::Copy(msgs),
            Until::Forever,
            true
        ))
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
    /// The private buffer each message is copied into (unless trusted).
    scratch: Scratch,
    /// Set by [`RingReceiver::trust_peer`]: lend messages in place.
    trusted: bool,
}

impl RingReceiver {
    fn from_fds([memfd, own, peer]: [OwnedFd; 3]) -> Result<Self> {
        let region = Region::attach(memfd)?;
        let cons = Consumer::new(&region)?;
        Ok(RingReceiver {
            region,
            cons,
            live: Liveness::receiver(own, peer),
            scratch: Scratch::default(),
            trusted: false,
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
    /// `max`, lending each to `f` in order (a private copy, or in place once trusted, as
    /// [`recv_with`](crate::Receiver::recv_with) does), and frees them all with one index store (so
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
        let deadline = Until::of(wait);
        let got = with_memory!(self, |mem| self
            .cons
            .drain(mem, &self.live, max, &mut f, deadline));
        match got? {
            Some(n) => Ok(n),
            None => Err(wait.expired()),
        }
    }

    /// Zero-copy receiving: [`recv_with`](crate::Receiver::recv_with) and
    /// [`recv_many`](RingReceiver::recv_many) lend each message in place, in the ring's
    /// memory, instead of a private copy of it.
    ///
    /// # Safety
    /// The caller promises that, while this end exists, no process (the peer included)
    /// writes the ring's data bytes outside the protocol: the sender writes a record only
    /// before publishing it and never writes it again until the receiver has freed it, and
    /// nobody else touches the memory. A slice lent in place while some process writes
    /// under it is a data race in this process, which is undefined behaviour (the compiler
    /// may, for one, assume bytes it read twice are equal), not merely wrong data. Without
    /// this call (the default) the end is sound whatever the peer writes: it copies each
    /// message out with atomic loads first.
    pub unsafe fn trust_peer(mut self) -> RingReceiver {
        self.trusted = true;
        self.scratch = Scratch::default();
        self
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

    /// Rebuilds a receiving end from the list [`RingReceiver::inherit_in`] returned, setting
    /// `FD_CLOEXEC` on the descriptors. They were inherited without it, so between the exec
    /// and this call a `fork` + `exec` by another thread would pass them on too: call it
    /// before starting threads that spawn programs (that window is the caller's).
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
        let deadline = Until::of(wait);
        let got = with_memory!(self, |mem| self.cons.recv(mem, &self.live, f, deadline));
        match got? {
            Some(r) => Ok(r),
            None => Err(wait.expired()),
        }
    }

    fn max_message_len(&self) -> usize {
        layout::max_message(self.region.capacity())
    }
}

crate::transport::receiver_into_iter!({} RingReceiver);

impl Drop for RingReceiver {
    fn drop(&mut self) {
        drop(self.live.own.take());
        self.cons.wake_peer(&self.region);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the slices `send_with`, `recv_with` and `recv_many` lend lie in the ring's
    /// mapping: private memory by default (a peer writing the ring cannot change them under
    /// the closure), the mapping itself once trusted.
    fn lent_inside_mapping(trusted: bool) -> [bool; 3] {
        let (mut tx, mut rx) = channel_with(RingConfig::new().with_capacity(4096)).unwrap();
        if trusted {
            // SAFETY: both ends stay in this test and are used only through the crate.
            (tx, rx) = unsafe { (tx.trust_peer(), rx.trust_peer()) };
        }
        let (tx_map, rx_map) = (tx.region.span(), rx.region.span());
        let mut inside = [false; 3];
        tx.send_with(100, |buf| {
            inside[0] = tx_map.contains(&(buf.as_ptr() as usize));
            buf.fill(7);
        })
        .unwrap();
        tx.send(&[8; 100]).unwrap();
        let m = rx
            .recv_with(Wait::Never, |m| {
                (rx_map.contains(&(m.as_ptr() as usize)), m.to_vec())
            })
            .unwrap();
        assert_eq!(m.1, vec![7; 100]);
        inside[1] = m.0;
        rx.recv_many(1, Wait::Never, |m| {
            assert_eq!(m, [8; 100]);
            inside[2] = rx_map.contains(&(m.as_ptr() as usize));
        })
        .unwrap();
        inside
    }

    #[test]
    fn send_and_send_batch_copy_straight_into_the_ring_not_through_the_private_buffer() {
        let (mut tx, mut rx) = channel_with(RingConfig::new().with_capacity(8192)).unwrap();
        tx.send(&[1; 3000]).unwrap();
        tx.send_batch(&[&[2; 100], &[3; 1000]]).unwrap();
        assert_eq!(rx.recv().unwrap(), vec![1; 3000]);
        assert_eq!(rx.recv().unwrap(), vec![2; 100]);
        assert_eq!(rx.recv().unwrap(), vec![3; 1000]);
        // The sender's private buffer was never used (one copy, not two); the receiver's
        // holds the largest message it copied out.
        assert!(format!("{tx:?}").contains("Scratch(0 bytes)"), "{tx:?}");
        assert!(format!("{rx:?}").contains("Scratch(3000 bytes)"), "{rx:?}");
    }

    #[test]
    fn debug_output_leaves_out_the_private_buffers() {
        let (mut tx, mut rx) = channel_with(RingConfig::new().with_capacity(8192)).unwrap();
        tx.send_with(4000, |b| b.fill(0xab)).unwrap();
        assert_eq!(rx.recv().unwrap(), vec![0xab; 4000]);
        for dbg in [format!("{tx:?}"), format!("{rx:?}")] {
            assert!(dbg.contains("Scratch(4000 bytes)"), "{dbg}");
            assert!(dbg.len() < 2000, "{} bytes of Debug output", dbg.len());
        }
    }

    #[test]
    fn by_default_the_lent_slices_are_private_memory() {
        assert_eq!(lent_inside_mapping(false), [false; 3]);
    }

    #[test]
    fn trusted_ends_lend_the_mapping_itself() {
        assert_eq!(lent_inside_mapping(true), [true; 3]);
    }
}
