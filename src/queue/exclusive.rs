//! Exclusive handles across `fork`.
//!
//! An exclusive handle ([`super::QueueConfig::with_exclusive`]) holds the queue file's `flock`
//! for its whole life, and a `flock` belongs to the open file description, which a forked
//! child shares through its copy of the descriptor. Left alone, every child forked while the
//! handle is open would hold the lock too, until it exits or execs (the descriptor is
//! close-on-exec): the owner dropping its handle would not free the queue, and a child that
//! opened the queue itself would wait on its own inherited copy forever.
//!
//! So the descriptors of open exclusive handles are listed here, and a `pthread_atfork`
//! handler, run in every child right after `fork`, points each of them at `/dev/null`
//! (`dup3`): the child no longer refers to the lock, and the handle it inherited, which
//! notices it is in another process ([`crate::forkgen`]), refuses to be used. A
//! descriptor is listed before its lock is taken, and a fork cannot fall between its
//! `open` and its listing (a gate that the prepare handler waits for). A child made
//! by a fork that skips atfork handlers (glibc's `_Fork`, a raw `clone`) keeps the lock
//! until it exits or execs, as above.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Once;

use crate::error::Result;

/// Open exclusive handles per process at most.
pub(crate) const MAX_EXCLUSIVE: usize = 64;

/// Descriptors of the open exclusive handles; -1 marks a free slot. Atomics, because the
/// atfork handler reads them in the child, where no lock may be taken.
static SLOTS: [AtomicI32; MAX_EXCLUSIVE] = [const { AtomicI32::new(-1) }; MAX_EXCLUSIVE];

/// Held from the moment an exclusive handle's descriptor is opened until it is listed in
/// [`SLOTS`]; `fork` waits for it (the prepare handler takes it, the parent and child
/// handlers give it back). Without it a fork between the `open` and the listing would give
/// the child the descriptor, and with it the open file description on which the parent
/// then takes the lock: the child would hold the queue's lock too.
static GATE: AtomicBool = AtomicBool::new(false);

static ATFORK: Once = Once::new();

fn close_gate() {
    while GATE
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

fn open_gate() {
    GATE.store(false, Ordering::Release);
}

/// Runs in the forking thread before `fork`: waits until no exclusive handle is between
/// its `open` and its listing.
extern "C" fn before_fork() {
    close_gate();
}

/// Runs in the parent right after `fork`.
extern "C" fn in_parent() {
    open_gate();
}

/// Runs in the child right after `fork`, before `fork` returns there.
extern "C" fn in_child() {
    open_gate();
    // SAFETY: a child just forked has one thread; this calls only open, dup3 and close,
    // which are async-signal-safe, with a valid NUL-terminated path and descriptors this
    // process holds (the slots name descriptors of exclusive handles open at the fork:
    // the gate kept any half-opened one from existing at that instant).
    unsafe {
        let null = nix::libc::open(
            c"/dev/null".as_ptr(),
            nix::libc::O_RDONLY | nix::libc::O_CLOEXEC,
        );
        if null < 0 {
            return;
        }
        for slot in &SLOTS {
            let fd = slot.load(Ordering::Acquire);
            if fd >= 0 {
                nix::libc::dup3(null, fd, nix::libc::O_CLOEXEC);
            }
        }
        nix::libc::close(null);
    }
}

/// Opens an exclusive handle's descriptor with `open` and lists it, so that children
/// forked from then on drop their copy; no fork can fall between the two (see [`GATE`]).
/// Call it before taking the lock on the descriptor. Returns what `open` returned and the
/// slot, for [`unregister`].
pub(crate) fn open_registered<T>(
    open: impl FnOnce() -> Result<T>,
    fd_of: impl FnOnce(&T) -> RawFd,
) -> Result<(T, usize)> {
    ATFORK.call_once(|| {
        // SAFETY: registers handlers with C ABI and no arguments that stay valid for the
        // life of the program (plain functions); glibc copies the pointers. They are
        // registered before any exclusive descriptor exists, so every fork from then on
        // runs them.
        unsafe {
            nix::libc::pthread_atfork(Some(before_fork), Some(in_parent), Some(in_child));
        }
    });
    close_gate();
    let result = open().and_then(|t| {
        let slot = register(fd_of(&t))?;
        Ok((t, slot))
    });
    open_gate();
    result
}

/// Lists `fd` in a free slot.
fn register(fd: RawFd) -> Result<usize> {
    for (i, slot) in SLOTS.iter().enumerate() {
        if slot
            .compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(i);
        }
    }
    Err(super::exclusive_misuse(&format!(
        "at most {MAX_EXCLUSIVE} exclusive queue handles can be open in one process"
    )))
}

/// Unlists a handle's descriptor: called before the descriptor is closed, so that a fork in
/// between never finds a number that may already name another file.
pub(crate) fn unregister(slot: usize) {
    if let Some(s) = SLOTS.get(slot) {
        s.store(-1, Ordering::Release);
    }
}
