//! The std-or-loom facade. The ring's algorithm imports its atomics from here, so the same
//! code runs on std atomics over shared memory in production and on loom's model-checked
//! atomics under `--cfg ipcprop_loom` (namespaced, as crossbeam does, so enabling it does not
//! switch every dependency that reads `cfg(loom)`).

#[cfg(ipcprop_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
#[cfg(not(ipcprop_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64};

pub(crate) use std::sync::atomic::Ordering;

/// A hint that we are spinning; under loom, a yield so the model can make progress.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(ipcprop_loom)]
    loom::thread::yield_now();
    #[cfg(not(ipcprop_loom))]
    std::hint::spin_loop();
}

/// Process-shared futex wait and wake on a word in shared memory (production only; loom
/// emulates them with a condition variable, see `shm::model`).
#[cfg(not(ipcprop_loom))]
pub(crate) mod futex {
    use std::time::Duration;

    use super::AtomicU32;

    /// Sleeps while `*word == expected`, for at most `timeout`. Returns on a wake, a change,
    /// a signal or the timeout: callers re-check their condition in a loop.
    pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        let ts = nix::libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as nix::libc::time_t,
            tv_nsec: timeout.subsec_nanos().into(),
        };
        // SAFETY: `word` is a live, 4-byte aligned AtomicU32 (in a shared mapping or the
        // heap) for the whole call; FUTEX_WAIT only reads it. `ts` is a valid relative
        // timeout. No FUTEX_PRIVATE_FLAG: the word is shared between processes. nix has no
        // futex wrapper. Errors (EAGAIN: value changed, EINTR, ETIMEDOUT) all mean "re-check".
        unsafe {
            nix::libc::syscall(
                nix::libc::SYS_futex,
                word.as_ptr(),
                nix::libc::FUTEX_WAIT,
                expected,
                &ts as *const nix::libc::timespec,
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }

    /// Wakes every process sleeping on `word`.
    pub(crate) fn wake(word: &AtomicU32) {
        // SAFETY: `word` is a live, aligned AtomicU32; FUTEX_WAKE does not touch its value.
        unsafe {
            nix::libc::syscall(
                nix::libc::SYS_futex,
                word.as_ptr(),
                nix::libc::FUTEX_WAKE,
                i32::MAX,
            );
        }
    }
}
