//! The descriptor-level operations a pipe end performs, behind a trait so that
//! [`super::fault::FaultyIo`] can inject short reads, short writes, `EINTR` and `EAGAIN`
//! between the channel and the kernel.

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// Reads and writes on one end of a pipe.
///
/// The channel calls these and handles every outcome the kernel can produce: a short count,
/// `EINTR`, `EAGAIN`, `EPIPE`. Implemented by [`OwnedFd`] (the real descriptor) and by
/// [`super::fault::FaultyIo`].
pub trait PipeIo: AsFd {
    /// `read(2)` into `buf`; `Ok(0)` means end of stream.
    fn read(&mut self, buf: &mut [u8]) -> nix::Result<usize>;
    /// `writev(2)` of `bufs`; may write any prefix of them.
    fn writev(&mut self, bufs: &[IoSlice<'_>]) -> nix::Result<usize>;
    /// `write(2)` of `buf`; may write any prefix of it. By default a one-part `writev`.
    fn write(&mut self, buf: &[u8]) -> nix::Result<usize> {
        self.writev(&[IoSlice::new(buf)])
    }
}

impl PipeIo for OwnedFd {
    fn read(&mut self, buf: &mut [u8]) -> nix::Result<usize> {
        nix::unistd::read(&*self, buf)
    }

    fn writev(&mut self, bufs: &[IoSlice<'_>]) -> nix::Result<usize> {
        nix::sys::uio::writev(&*self, bufs)
    }

    fn write(&mut self, buf: &[u8]) -> nix::Result<usize> {
        nix::unistd::write(&*self, buf)
    }
}

/// Keeps `SIGPIPE` from killing the process while a write to a pipe is in progress.
///
/// A write to a pipe with no reader raises `SIGPIPE` on the writing thread and then fails
/// with `EPIPE`. A library cannot assume the process ignores `SIGPIPE` (Rust binaries do,
/// C hosts and many test runners do not), so around each write the signal is blocked in this
/// thread; if the write failed with `EPIPE` the signal this write raised is then consumed,
/// and the old mask restored. A `SIGPIPE` that was already pending before (the caller had it
/// blocked) is left alone for the caller.
pub(crate) struct SigpipeGuard {
    /// True when this guard blocked the signal and must unblock it on drop.
    unblock: bool,
    /// True when a `SIGPIPE` was pending before the write: it is not ours to consume.
    pending_before: bool,
}

fn sigpipe_set() -> SigSet {
    SigSet::from(Signal::SIGPIPE)
}

impl SigpipeGuard {
    pub(crate) fn new() -> Result<Self, Errno> {
        let mut old = SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            SigmaskHow::SIG_BLOCK,
            Some(&sigpipe_set()),
            Some(&mut old),
        )?;
        if !old.contains(Signal::SIGPIPE) {
            // It was not blocked, so none can have been left pending for this thread.
            return Ok(SigpipeGuard {
                unblock: true,
                pending_before: false,
            });
        }
        Ok(SigpipeGuard {
            unblock: false,
            pending_before: sigpipe_pending(),
        })
    }

    /// Called after a write failed with `EPIPE`: discards the `SIGPIPE` that write raised.
    pub(crate) fn consume_raised(&self) {
        if self.pending_before {
            // Ours merged into the caller's pending one (standard signals do not queue).
            return;
        }
        let set = sigpipe_set();
        let zero = nix::libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `set` is a valid, initialised sigset_t that outlives the call; a null info
        // pointer is allowed; `zero` is a valid timespec, so the call polls without blocking.
        // nix has no wrapper for sigtimedwait. If nothing is pending it fails with EAGAIN,
        // which is fine: nothing to consume.
        unsafe {
            nix::libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &zero);
        }
    }
}

impl Drop for SigpipeGuard {
    fn drop(&mut self) {
        if self.unblock {
            // Cannot fail with a valid `how` and set; nothing useful to do if it did.
            let _ = nix::sys::signal::pthread_sigmask(
                SigmaskHow::SIG_UNBLOCK,
                Some(&sigpipe_set()),
                None,
            );
        }
    }
}

/// True if this process's `SIGPIPE` disposition is `SIG_IGN`.
pub(crate) fn sigpipe_ignored() -> Result<bool, crate::Error> {
    let mut old = std::mem::MaybeUninit::<nix::libc::sigaction>::zeroed();
    // SAFETY: with a null new action, sigaction only writes the current disposition into
    // `old`, which points to (zeroed) storage of the right type; nix only wraps the form
    // that installs an action.
    let rc =
        unsafe { nix::libc::sigaction(nix::libc::SIGPIPE, std::ptr::null(), old.as_mut_ptr()) };
    if rc != 0 {
        return Err(crate::Error::sys("sigaction(SIGPIPE)", Errno::last()));
    }
    // SAFETY: sigaction returned 0, so it filled `old` (and it was zeroed before anyway).
    let old = unsafe { old.assume_init() };
    Ok(old.sa_sigaction == nix::libc::SIG_IGN)
}

fn sigpipe_pending() -> bool {
    let mut pending = std::mem::MaybeUninit::<nix::libc::sigset_t>::uninit();
    // SAFETY: sigpending writes a full sigset_t into the pointer it is given, which points to
    // storage of that type; nix has no wrapper for sigpending.
    let rc = unsafe { nix::libc::sigpending(pending.as_mut_ptr()) };
    if rc != 0 {
        // Only EFAULT is possible, which a valid pointer rules out; assume pending so we never
        // consume a signal that might be the caller's.
        return true;
    }
    // SAFETY: sigpending returned 0, so it initialised the set, and a set filled by the
    // kernel holds only valid signals.
    let pending = unsafe { SigSet::from_sigset_t_unchecked(pending.assume_init()) };
    pending.contains(Signal::SIGPIPE)
}
