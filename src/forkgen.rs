//! Which process is this, without a system call: a number that differs in every process
//! forked from this one, for handles that must notice they were inherited across `fork`
//! (a queue handle shares its open file description, and with it its `flock`, with the
//! parent).
//!
//! `getpid(2)` answers the same question, but costs a system call each time (glibc stopped
//! caching it), which was two of the thirteen system calls of a queue push+pop. Here the
//! answer is read from a private page marked `MADV_WIPEONFORK` (Linux 4.14): the kernel
//! hands a forked child that page zero-filled, whatever way the fork was made (`fork`,
//! `_Fork`, `clone` without `CLONE_VM`), so a zero means "first look in this process". The
//! first look takes a new number from a counter that every child inherits, so a process
//! never reuses a number an ancestor handed out. Where the page cannot be made (an old
//! kernel), the process id serves, as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use memmap2::MmapMut;

/// The last generation handed out in this process's lineage (inherited across fork).
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The wipe-on-fork page: private on purpose (it must *not* be shared with children), so
/// an anonymous mapping is the right tool here, unlike for the ring's shared memory.
static PAGE: OnceLock<Option<MmapMut>> = OnceLock::new();

fn page() -> Option<&'static AtomicU64> {
    let map = PAGE
        .get_or_init(|| {
            let map = MmapMut::map_anon(4096).ok()?;
            // SAFETY: the range is exactly the mapping just made, which stays mapped for the
            // life of the process (it is kept in a static and never dropped); WIPEONFORK only
            // changes what a forked child sees there.
            let advised = unsafe {
                nix::sys::mman::madvise(
                    std::ptr::NonNull::new(map.as_ptr() as *mut std::ffi::c_void)?,
                    map.len(),
                    nix::sys::mman::MmapAdvise::MADV_WIPEONFORK,
                )
            };
            advised.ok().map(|()| map)
        })
        .as_ref()?;
    // SAFETY: the mapping is page-aligned (so 8-aligned), at least 8 bytes long, lives for
    // the rest of the process, starts zeroed, and its first word is only ever accessed
    // through this atomic.
    Some(unsafe { AtomicU64::from_ptr(map.as_ptr() as *mut u64) })
}

/// This process's generation: the same on every call in one process, different in every
/// process forked from it (and from any other process that called it).
pub(crate) fn current() -> u64 {
    let Some(word) = page() else {
        // No wipe-on-fork page: the process id (tagged so it cannot meet a counter value).
        return (1 << 63) | u64::from(std::process::id());
    };
    match word.load(Ordering::Acquire) {
        0 => {
            let mine = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
            match word.compare_exchange(0, mine, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => mine,
                Err(other) => other, // another thread of this process got there first
            }
        }
        g => g,
    }
}

#[cfg(all(test, feature = "harness", not(ipcprop_loom)))]
mod tests {
    use super::*;
    use crate::check::fork::{ChildEnd, ChildGroup};
    use std::time::Duration;

    #[test]
    fn stable_in_a_process_and_new_in_each_fork_and_grandchild() {
        let me = current();
        assert_eq!(current(), me);
        assert!(page().is_some(), "this kernel has MADV_WIPEONFORK");
        let mut group = ChildGroup::new();
        group
            .spawn("child", |_| {
                let child = current();
                if child == me || current() != child {
                    return Err(format!("parent {me}, child {child}"));
                }
                let mut inner = ChildGroup::new();
                inner
                    .spawn("grandchild", |_| {
                        let g = current();
                        if g == me || g == child {
                            return Err(format!("grandchild {g} reuses {me} or {child}"));
                        }
                        Ok(())
                    })
                    .map_err(|e| e.to_string())?;
                match inner.wait(Duration::from_secs(10)).remove(0).end {
                    ChildEnd::Returned => Ok(()),
                    other => Err(format!("grandchild: {other:?}")),
                }
            })
            .unwrap();
        let r = group.wait(Duration::from_secs(20)).remove(0);
        assert_eq!(r.end, ChildEnd::Returned);
        assert_eq!(current(), me);
    }
}
