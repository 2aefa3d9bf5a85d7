//! The ring's memory: a sealed `memfd` mapped `MAP_SHARED`.
//!
//! `memfd_create` gives anonymous memory with a descriptor, so the region is shared across
//! `fork` (the mapping is inherited) and can be attached by any process that receives the
//! descriptor (inherited across exec, or passed over a Unix socket), which maps it again.
//! Its size is sealed (`F_SEAL_SHRINK | F_SEAL_GROW`, then `F_SEAL_SEAL`) before it is
//! shared, so no peer can shrink it under a reader and fault it with `SIGBUS`. Nothing is
//! left behind: the memory is freed when the last descriptor and mapping go away.

use std::cell::Cell;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::MFdFlags;

use super::layout::{
    Header, DATA_OFFSET, MAGIC, MAX_CAPACITY, MIN_CAPACITY, RECORD_HEADER, VERSION,
};
use super::ring::Memory;
use crate::error::{Error, Result};
use crate::sync::{futex, AtomicU32, Ordering};

/// `MFD_NOEXEC_SEAL` (Linux 6.3): the memfd is not executable, and sealed so (`F_SEAL_EXEC`).
/// Not in nix's flags yet.
const MFD_NOEXEC_SEAL: nix::libc::c_uint = 0x0008;

/// Creates the ring's memfd: close-on-exec, sealable, and not executable where the kernel
/// knows `MFD_NOEXEC_SEAL`; older kernels refuse the unknown flag with `EINVAL`, and get a
/// memfd without it.
fn create_memfd() -> Result<OwnedFd> {
    let base = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let noexec = base | MFdFlags::from_bits_retain(MFD_NOEXEC_SEAL);
    match nix::sys::memfd::memfd_create(c"ipcprop-ring", noexec) {
        Err(nix::errno::Errno::EINVAL) => nix::sys::memfd::memfd_create(c"ipcprop-ring", base),
        other => other,
    }
    .map_err(|e| Error::sys("memfd_create", e))
}

/// A mapped ring region.
#[derive(Debug)]
pub(crate) struct Region {
    map: MmapRaw,
    memfd: OwnedFd,
    capacity: usize,
}

fn invalid(what: String) -> Error {
    Error::Io {
        op: "attach ring memory",
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, what),
    }
}

impl Region {
    /// Creates a sealed region with `capacity` data bytes (a power of two).
    pub(crate) fn create(capacity: usize) -> Result<Region> {
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(Error::config(
                "RingConfig::with_capacity",
                format!(
                    "ring capacity {capacity} must be a power of two from {MIN_CAPACITY} to \
                     {MAX_CAPACITY}"
                ),
            ));
        }
        let fd = create_memfd()?;
        // memfds are created with mode 0777 (0666 with MFD_NOEXEC_SEAL); the ring is for
        // this user's processes alone, and the mode is what a reopen of the memory through
        // /proc/<pid>/fd/<n> is checked against.
        nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| Error::sys("fchmod", e))?;
        let size = DATA_OFFSET + capacity;
        nix::unistd::ftruncate(&fd, size as i64).map_err(|e| Error::sys("ftruncate", e))?;
        nix::fcntl::fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
        )
        .map_err(|e| Error::sys("fcntl(F_ADD_SEALS)", e))?;
        nix::fcntl::fcntl(&fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SEAL))
            .map_err(|e| Error::sys("fcntl(F_ADD_SEALS)", e))?;
        let region = Region::map(fd, size, capacity)?;
        let fixed = &region.header().fixed.0;
        // Written before the region is shared with anyone (fork or fd passing come after).
        fixed.capacity.store(capacity as u64, Ordering::Relaxed);
        fixed.version.store(VERSION, Ordering::Relaxed);
        fixed.magic.store(MAGIC, Ordering::Release);
        Ok(region)
    }

    /// Maps a region received as a descriptor, after checking that it is sealed against
    /// shrinking, large enough, and carries a ring header of this version.
    pub(crate) fn attach(fd: OwnedFd) -> Result<Region> {
        let seals = nix::fcntl::fcntl(&fd, FcntlArg::F_GET_SEALS)
            .map_err(|e| Error::sys("fcntl(F_GET_SEALS)", e))?;
        let seals = SealFlag::from_bits_truncate(seals);
        if !seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW) {
            return Err(invalid("ring memory is not sealed against resizing".into()));
        }
        let st = nix::sys::stat::fstat(&fd).map_err(|e| Error::sys("fstat", e))?;
        let size = usize::try_from(st.st_size).unwrap_or(0);
        if size < DATA_OFFSET + MIN_CAPACITY {
            return Err(invalid(format!("ring memory of {size} bytes is too small")));
        }
        // Map the header page alone first to read the capacity it claims.
        let probe = Region::map(fd, DATA_OFFSET, 0)?;
        let fixed = &probe.header().fixed.0;
        let (magic, version) = (
            fixed.magic.load(Ordering::Acquire),
            fixed.version.load(Ordering::Relaxed),
        );
        let capacity = fixed.capacity.load(Ordering::Relaxed);
        if magic != MAGIC {
            return Err(invalid(format!("not a ring: magic {magic:#018x}")));
        }
        if version != VERSION {
            return Err(invalid(format!(
                "ring layout version {version}, this build reads {VERSION}"
            )));
        }
        let capacity = usize::try_from(capacity).unwrap_or(0);
        if !capacity.is_power_of_two()
            || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity)
            || DATA_OFFSET + capacity != size
        {
            return Err(invalid(format!(
                "ring claims capacity {capacity} in {size} bytes of memory"
            )));
        }
        let Region { memfd, .. } = probe;
        Region::map(memfd, size, capacity)
    }

    fn map(memfd: OwnedFd, size: usize, capacity: usize) -> Result<Region> {
        // MmapRaw hands out only a raw pointer; every access goes through this module's
        // methods, which keep to `size` bytes. The memfd is sealed against shrinking
        // (checked by `attach`, done by `create`), so the pages stay backed: no SIGBUS.
        let map = MmapOptions::new()
            .len(size)
            .map_raw(&memfd)
            .map_err(|e| Error::Io {
                op: "mmap ring memory",
                source: e,
            })?;
        Ok(Region {
            map,
            memfd,
            capacity,
        })
    }

    /// The descriptor, to pass to another process.
    pub(crate) fn memfd(&self) -> &OwnedFd {
        &self.memfd
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: DATA_OFFSET is within the mapping (size >= DATA_OFFSET + capacity).
        unsafe { self.map.as_mut_ptr().add(DATA_OFFSET) }
    }

    /// `n` aligned 8-byte words of the data area from `off`, as atomics. Every access this
    /// module makes to the data area on its own goes through these (or through the header's
    /// atomics): the peer may write any of these bytes at any moment, and an atomic access
    /// racing with it is defined behaviour (any bit pattern is a valid `u64`), where a
    /// plain (or volatile) access would be a data race.
    fn words(&self, off: usize, n: usize) -> &[AtomicU64] {
        assert!(
            off.is_multiple_of(8) && n.checked_mul(8).is_some_and(|b| self.in_bounds(off, b)),
            "ring word access out of bounds or misaligned"
        );
        // SAFETY: `off..off + 8n` lies in the data area of the live mapping (checked above),
        // which `&self` keeps mapped for the life of the slice; the data area starts at a
        // page boundary and `off` is a multiple of 8, so the pointer is aligned for
        // AtomicU64 (align 8), which has the size and bit validity of `u64`. The slice is
        // shared (`&`) and only ever accessed atomically through it. Other processes'
        // writes to the same bytes are, to this process, stores by another agent; the ring
        // itself only ever accesses these bytes as whole aligned 8-byte atomics (never of
        // another size), except in the unsafe trusted mode (`lend`/`lend_mut`), whose
        // plain accesses the ring's protocol orders after or before these by
        // release/acquire on the indices.
        unsafe { std::slice::from_raw_parts(self.data().add(off).cast::<AtomicU64>(), n) }
    }

    /// Stores `src` at `off` (a multiple of 8) with relaxed atomic word stores; the bytes
    /// of the last word past `src` are stored as zero (they are the record's padding).
    pub(crate) fn store(&self, off: usize, src: &[u8]) {
        let words = self.words(off, src.len().div_ceil(8));
        let whole = src.len() / 8;
        let from = src.as_ptr();
        for (i, w) in words[..whole].iter().enumerate() {
            // SAFETY: i < src.len() / 8, so bytes 8i..8i+8 lie in `src`, which is this
            // process's own memory (a caller's slice or an end's private buffer, never the
            // mapping), borrowed shared for this call; read_unaligned needs no alignment,
            // and any 8 bytes are a valid u64.
            w.store(
                unsafe { from.add(i * 8).cast::<u64>().read_unaligned() },
                Ordering::Relaxed,
            );
        }
        let rest = &src[whole * 8..];
        if let (Some(w), false) = (words.last(), rest.is_empty()) {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
        }
    }

    /// Copies the `len` bytes at `off` (a multiple of 8) into `buf` (grown if needed) with
    /// relaxed atomic word loads: the copy is ours, whatever the peer writes meanwhile.
    pub(crate) fn load(&self, off: usize, len: usize, buf: &mut Vec<u8>) {
        let words = self.words(off, len.div_ceil(8));
        if buf.len() < words.len() * 8 {
            buf.resize(words.len() * 8, 0);
        }
        let dst = buf.as_mut_ptr();
        for (i, w) in words.iter().enumerate() {
            // SAFETY: `buf` is a private Vec we hold `&mut`, at least words.len() * 8 bytes
            // long (grown above), so bytes 8i..8i+8 are in it and nothing else accesses
            // them; write_unaligned needs no alignment.
            unsafe {
                dst.add(i * 8)
                    .cast::<u64>()
                    .write_unaligned(w.load(Ordering::Relaxed))
            };
        }
    }

    /// The addresses of this mapping (for tests of where a lent slice lives).
    #[cfg(test)]
    pub(crate) fn span(&self) -> std::ops::Range<usize> {
        let base = self.map.as_ptr() as usize;
        base..base + self.map.len()
    }

    /// Whether `off..off+len` lies in the data area. The ring validates every offset it
    /// derives from shared memory before calling in; the asserts on this are the last line
    /// that keeps a bug of ours from becoming an out-of-bounds access.
    fn in_bounds(&self, off: usize, len: usize) -> bool {
        off.checked_add(len).is_some_and(|end| end <= self.capacity)
    }
}

impl AsFd for Region {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.memfd.as_fd()
    }
}

/// The ring's memory as the default ends see it: every payload is copied between shared
/// memory and a private buffer with atomic word accesses ([`Region::load`],
/// [`Region::store`]), so the closures of `recv_with`, `recv_many` and `send_with` only
/// ever see memory this process owns. A peer scribbling on the ring meanwhile changes
/// nothing they see, and is no data race.
pub(crate) struct Copying<'a> {
    region: &'a Region,
    /// The private buffer, taken out while in use (a `Cell`, as `Memory` takes `&self`).
    buf: Cell<Vec<u8>>,
    /// Where the buffer goes back to, for reuse by the next call.
    home: &'a mut Vec<u8>,
}

impl<'a> Copying<'a> {
    /// A view of `region` that copies through `buf` (kept for the next call on drop).
    pub(crate) fn new(region: &'a Region, buf: &'a mut Vec<u8>) -> Copying<'a> {
        Copying {
            region,
            buf: Cell::new(std::mem::take(buf)),
            home: buf,
        }
    }
}

impl Drop for Copying<'_> {
    fn drop(&mut self) {
        *self.home = self.buf.take();
    }
}

impl Memory for Copying<'_> {
    fn header(&self) -> &Header {
        self.region.header()
    }

    fn capacity(&self) -> usize {
        self.region.capacity
    }

    fn write(&self, off: usize, src: &[u8]) {
        self.region.store(off, src);
    }

    /// Straight from the caller's slice into the ring with atomic word stores, as `fill`
    /// copies its private buffer: one copy instead of two.
    fn copy_in(&self, off: usize, src: &[u8]) {
        self.region.store(off, src);
    }

    fn fill<R>(&self, off: usize, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut buf = self.buf.take();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let r = f(&mut buf[..len]);
        self.region.store(off, &buf[..len]);
        self.buf.set(buf);
        r
    }

    fn read<R>(&self, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let mut buf = self.buf.take();
        self.region.load(off, len, &mut buf);
        let r = f(&buf[..len]);
        self.buf.set(buf);
        r
    }

    fn read_header(&self, off: usize) -> [u8; RECORD_HEADER] {
        self.region.read_header(off)
    }

    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Duration) {
        futex::wait(word, expected, timeout);
    }

    fn wake(&self, word: &AtomicU32) {
        futex::wake(word);
    }
}

/// The region itself is the ring's memory as the *trusted* ends see it (after the unsafe
/// `trust_peer`): payloads are lent in place, no copy. Record headers and indices are still
/// read and written atomically; only the payload bytes are accessed plainly, which is sound
/// exactly when no process writes them outside the protocol (the promise `trust_peer`
/// takes from its caller).
impl Memory for Region {
    fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned (so 128-aligned) and at least DATA_OFFSET
        // bytes, which holds a Header (640 bytes). Header is repr(C) and made only of
        // atomics, for which every bit pattern is valid, and every access to shared words
        // is atomic, so concurrent writes by other processes are well-defined. The
        // reference lives no longer than &self, which keeps the mapping alive.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn write(&self, off: usize, src: &[u8]) {
        self.store(off, src);
    }

    fn fill<R>(&self, off: usize, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        assert!(self.in_bounds(off, len), "ring fill out of bounds");
        // SAFETY: in bounds of the live mapping (checked above), and the slice does not
        // outlive this call. Exclusive access for its duration: the protocol gives these
        // free bytes to the producer alone until it publishes them (a `Release` store of
        // tail after `f` returns), so the consumer neither reads nor writes them meanwhile,
        // and the end's owner promised (`RingSender::trust_peer`, an unsafe fn) that no
        // process writes or reads the region outside the protocol. Any bytes are valid u8.
        let buf = unsafe { std::slice::from_raw_parts_mut(self.data().add(off), len) };
        f(buf)
    }

    fn read<R>(&self, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        assert!(self.in_bounds(off, len), "ring read out of bounds");
        // SAFETY: in bounds of the live mapping; the slice does not outlive this call. No
        // write races with the reads through it: the producer wrote these bytes before its
        // `Release` store of tail, which our `Acquire` load of tail saw, and it does not
        // write them again until we free them with a store of head after `f` returns;
        // and the end's owner promised (`RingReceiver::trust_peer`, an unsafe fn) that no
        // process writes the region outside the protocol.
        let buf = unsafe { std::slice::from_raw_parts(self.data().add(off), len) };
        f(buf)
    }

    fn read_header(&self, off: usize) -> [u8; RECORD_HEADER] {
        // One atomic load: the header we validate is the header we use (no double fetch),
        // and a peer writing it meanwhile is no data race.
        self.words(off, 1)[0].load(Ordering::Relaxed).to_ne_bytes()
    }

    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Duration) {
        futex::wait(word, expected, timeout);
    }

    fn wake(&self, word: &AtomicU32) {
        futex::wake(word);
    }
}
