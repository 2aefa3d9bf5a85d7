//! Stopping a campaign cleanly on Ctrl-C or `SIGTERM`.
//!
//! A campaign runs forked children, may hold a temporary directory (the file queue's
//! [`builtin::QueueTransport`](super::builtin::QueueTransport)), and takes minutes. Killed by
//! the default action of `SIGINT`, it would leave that directory behind and print nothing of
//! what it had done. With [`install`] (the `ipcprop` binary calls it), the first `SIGINT` or
//! `SIGTERM` only *asks* the harness to stop:
//!
//! - the case that is running stops at once: its children are killed and reaped, and its
//!   outcome is thrown away (a case cut short by the user is not a violation);
//! - no further case starts, shrinking gives up and keeps the smallest failing plan found so
//!   far, the failure is not run again to count how often it reproduces;
//! - [`campaign`](super::campaign()) returns normally, with
//!   [`CampaignReport::interrupted`](super::CampaignReport::interrupted) set, so the caller
//!   prints a partial summary and every destructor runs (temporary directories are removed).
//!
//! A second signal of the same kind ends the process at once, with exit status 130 for
//! `SIGINT` and 143 for `SIGTERM` (128 + the signal number, as a shell reports it). Forked
//! children never outlive the harness either way: each asks the kernel for `SIGKILL` when its
//! parent dies (see [`fork`](super::fork)).
//!
//! A program that drives campaigns itself can use [`request_stop`] instead (from another
//! thread, say) and [`requested`] to learn whether a stop is pending.
//!
//! ```
//! use ipcprop::check::interrupt;
//!
//! // No signal has arrived, so nothing stops.
//! assert_eq!(interrupt::requested(), None);
//! ```

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};

/// The signal that asked for the stop (0: none yet).
fn which() -> &'static Arc<AtomicUsize> {
    static WHICH: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    WHICH.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// Set by the first signal; the second one, seeing it set, ends the process.
fn seen() -> &'static Arc<AtomicBool> {
    static SEEN: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    SEEN.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Asks every campaign of this process to stop at its next check, as if `signal` had
/// arrived (use `libc::SIGINT` or `libc::SIGTERM`; any positive number is kept as given).
pub fn request_stop(signal: i32) {
    let sig = usize::try_from(signal).unwrap_or(0).max(1);
    // The first request names the signal; later ones do not overwrite it.
    let _ = which().compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// The signal that asked for a stop, if one did.
pub fn requested() -> Option<i32> {
    match which().load(Ordering::SeqCst) {
        0 => None,
        s => Some(i32::try_from(s).unwrap_or(i32::MAX)),
    }
}

/// The exit status a shell reports for a process ended by `signal`: 128 + its number.
pub fn exit_status(signal: i32) -> u8 {
    u8::try_from(128 + signal.clamp(0, 127)).unwrap_or(255)
}

/// Installs handlers for `SIGINT` and `SIGTERM` in this process: the first asks for a stop
/// ([`requested`] then returns its number); a second signal of either kind ends the process
/// at once with [`exit_status`] of that signal. Calling it again does nothing more.
///
/// The handlers only store to atomics (async-signal-safe). Forked children inherit them,
/// which is harmless: a child's flag is its own copy, and the harness ends its children
/// with `SIGKILL`, which no handler catches.
pub fn install() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let code = i32::from(exit_status(sig));
            // Registered first, so it sees the flag as the previous signal left it: set
            // means this is the second signal.
            signal_hook::flag::register_conditional_shutdown(sig, code, Arc::clone(seen()))
                .map_err(|e| e.to_string())?;
            signal_hook::flag::register(sig, Arc::clone(seen())).map_err(|e| e.to_string())?;
            // A plain store of the number: a second signal ends the process before anyone
            // reads it again, so what is read is the first signal's number.
            signal_hook::flag::register_usize(sig, Arc::clone(which()), sig as usize)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .clone()
    .map_err(|e| Error::Io {
        op: "install the SIGINT and SIGTERM handlers",
        source: std::io::Error::other(e),
    })
}

/// Forgets a stop request, so that later campaigns of this process run again (a handler
/// installed by [`install`] stays installed, and the next signal is a *first* one).
pub fn reset() {
    which().store(0, Ordering::SeqCst);
    seen().store(false, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_is_what_a_shell_reports() {
        assert_eq!(exit_status(2), 130);
        assert_eq!(exit_status(15), 143);
        assert_eq!(exit_status(9), 137);
    }
}
