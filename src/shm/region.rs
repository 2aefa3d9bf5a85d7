//! The ring's memory: a sealed `memfd` mapped `MAP_SHARED`.
//!
//! `memfd_create` gives anonymous memory with a descriptor, so the region is shared across
//! `fork` (the mapping is inherited) and can be attached by any process that receives the
//! descriptor (inherited across exec, or passed over a Unix socket), which maps it again.
//! Its size is sealed (`F_SEAL_SHRINK | F_SEAL_GROW`, then `F_SEAL_SEAL`) before it is
//! shared, so no peer can shrink it under a reader and fault it with `SIGBUS`. Nothing is
//! left behind: the memory is freed when the last descriptor and mapping go away.

use std::os::fd::{AsFd, OwnedFd};
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
            return Err(invalid(format!(
                "ring capacity {capacity} must be a power of two from {MIN_CAPACITY} to {MAX_CAPACITY}"
            )));
        }
        let fd = nix::sys::memfd::memfd_create(
            c"ipcprop-ring",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| Error::sys("memfd_create", e))?;
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

impl Memory for Region {
    fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned (so 128-aligned) and at least DATA_OFFSET
        // bytes, which holds a Header (384 bytes). Header is repr(C) and made only of
        // atomics, for which every bit pattern is valid, and every access to shared words
        // is atomic, so concurrent writes by other processes are well-defined. The
        // reference lives no longer than &self, which keeps the mapping alive.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn write(&self, off: usize, src: &[u8]) {
        assert!(self.in_bounds(off, src.len()), "ring write out of bounds");
        // SAFETY: in bounds (checked above) of the live mapping; `src` is local memory, so
        // the ranges cannot overlap. The protocol gives these bytes to the producer alone
        // (free space between tail and head + capacity).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.data().add(off), src.len()) }
    }

    fn fill<R>(&self, off: usize, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        assert!(self.in_bounds(off, len), "ring fill out of bounds");
        // SAFETY: in bounds of the live mapping, and the protocol gives these free bytes to
        // the producer alone until it publishes them, which happens after `f` returns; the
        // slice does not outlive this call. A peer that breaks the protocol can change the
        // bytes under us, which for u8 is only wrong data, never invalid values.
        let buf = unsafe { std::slice::from_raw_parts_mut(self.data().add(off), len) };
        f(buf)
    }

    fn read<R>(&self, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        assert!(self.in_bounds(off, len), "ring read out of bounds");
        // SAFETY: in bounds of the live mapping; the protocol keeps these published bytes
        // unchanged until the consumer frees them, after `f` returns, and the slice does not
        // outlive this call. A misbehaving peer can only make them wrong data.
        let buf = unsafe { std::slice::from_raw_parts(self.data().add(off), len) };
        f(buf)
    }

    fn read_header(&self, off: usize) -> [u8; RECORD_HEADER] {
        assert!(
            self.in_bounds(off, RECORD_HEADER),
            "ring header read out of bounds"
        );
        // SAFETY: in bounds; a volatile read copies the 8 bytes exactly once, so the header
        // we validate is the header we use (no double fetch).
        unsafe { std::ptr::read_volatile(self.data().add(off) as *const [u8; RECORD_HEADER]) }
    }

    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Duration) {
        futex::wait(word, expected, timeout);
    }

    fn wake(&self, word: &AtomicU32) {
        futex::wake(word);
    }
}
