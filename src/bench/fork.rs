//! Forked property cases against the bare cost of a process: `fork`, `_exit`, `waitpid`.

use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;

use super::failed;
use crate::check::builtin::PipeTransport;
use crate::check::case::{lock_cases, run_case};
use crate::check::plan::Plan;
use crate::check::RunConfig;
use crate::{Error, Result};

/// The floor: `n` times, fork a child that `_exit`s at once and reap it.
pub fn bare_fork(n: u64) -> Result<Duration> {
    // Forks made here must not inherit a concurrent case's descriptors either.
    let _serial = lock_cases();
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: the child calls only `_exit`, which is async-signal-safe, so it is sound
        // to run in a child forked from a multi-threaded process.
        match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))? {
            ForkResult::Child => {
                // SAFETY: `_exit` ends the child without running anything of the parent's
                // (no atexit handlers, no destructors, no stdio flush).
                unsafe { nix::libc::_exit(0) }
            }
            ForkResult::Parent { child } => match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => {}
                other => return Err(failed(format!("bare child ended: {other:?}"))),
            },
        }
    }
    Ok(start.elapsed())
}

/// `n` property cases of the smallest plan (one sender, one 8-byte message, a blocking
/// receiver) over the pipe channel: two forked processes per case, their reports, and the
/// history check.
pub fn tiny_cases(n: u64) -> Result<Duration> {
    let transport = PipeTransport::default();
    let config = RunConfig::default();
    let start = Instant::now();
    for seed in 0..n {
        let outcome = run_case(&transport, &Plan::simple(seed, vec![8]), &config)?;
        if !outcome.passed() {
            return Err(failed(format!(
                "tiny case {seed} failed: {:?}",
                outcome.violations
            )));
        }
    }
    Ok(start.elapsed())
}
