//! Running closures in forked child processes, safely, from a multi-threaded program.
//!
//! A test binary runs tests on threads, and after `fork` only the forking thread exists in
//! the child: any lock another thread held at that instant (the stdout lock, the output
//! capture of the test harness, the panic-backtrace lock) stays locked forever in the child.
//! [`ChildGroup`] keeps children clear of those traps:
//!
//! - the child reports to the parent over its own pipe (frames of the crate's codec), never
//!   through `std::io::stdout`/`stderr`;
//! - its panics are caught (a panic hook, installed once in the parent, records the message
//!   in a child instead of printing it; the message is sent to the parent) and it leaves by
//!   `_exit`, so no destructor, `atexit` handler or stdio flush of
//!   the copied parent state runs;
//! - it dies with the parent (`PR_SET_PDEATHSIG`), so a killed test binary leaves no
//!   orphans;
//! - the parent reaps every child; a watchdog kills whatever is still running at the
//!   deadline and reports it as hung, with the last record it sent (what it was doing);
//! - dropping the group (say, when the parent's test panics) kills and reaps all children.
//!
//! The hook defers to the one it replaced in every process but a forked child. If you set
//! a panic hook of your own after the first [`ChildGroup::spawn`], children use yours.
//!
//! What the closure may do in the child: allocate (glibc's `malloc` is made fork-safe by
//! glibc itself), make system calls, use the objects it captured. What it must not do:
//! print through `std::io` or take locks that other threads of the parent may have held
//! (it would hang, and the watchdog would report the hang).
//!
//! ```
//! use ipcprop::check::fork::{ChildEnd, ChildGroup};
//! use std::time::Duration;
//!
//! let mut group = ChildGroup::new();
//! group.spawn("adder", |report| {
//!     report.record(&(2u32 + 2).to_le_bytes());
//!     Ok(())
//! })?;
//! group.spawn("quitter", |_| Err("gave up".to_string()))?;
//! let reports = group.wait(Duration::from_secs(10));
//! assert_eq!(reports[0].records, vec![4u32.to_le_bytes().to_vec()]);
//! assert_eq!(reports[0].end, ChildEnd::Returned);
//! assert_eq!(reports[1].end, ChildEnd::Failed("gave up".into()));
//! # Ok::<(), ipcprop::Error>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use crate::error::{Error, Result};
use crate::frame::{self, FrameDecoder};

/// Tags of the frames a child sends to its parent.
const TAG_RECORD: u8 = 0;
const TAG_RETURNED: u8 = 1;
const TAG_FAILED: u8 = 2;
const TAG_PANICKED: u8 = 3;

/// Exit code of a child whose parent was already gone when it started.
const EXIT_ORPHANED: i32 = 125;

thread_local! {
    /// The last panic message seen by the child's panic hook.
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The child's channel to its parent: records sent here reach the parent as they are made,
/// so a child that hangs or is killed has still told the parent how far it got.
#[derive(Debug)]
pub struct Reporter {
    fd: OwnedFd,
    /// Read end of the parent's "go" pipe ([`Reporter::rendezvous`]).
    go: OwnedFd,
    buf: Vec<u8>,
}

impl Reporter {
    /// Sends one record (arbitrary bytes) to the parent. Blocks while the report pipe is
    /// full; ignores errors (the parent is gone, and the child dies with it).
    pub fn record(&mut self, bytes: &[u8]) {
        let mut stamped = Vec::with_capacity(8 + bytes.len());
        stamped.extend_from_slice(&monotonic_ns().to_le_bytes());
        stamped.extend_from_slice(bytes);
        self.send(TAG_RECORD, &stamped);
    }

    /// Sends `bytes` as a record, then waits until the parent lets this child go
    /// ([`Control::release`]) or `limit` passes. Returns true if the parent released it.
    /// The parent, having seen the record, can then act at a moment measured from a known
    /// instant: a nemesis aims its fault at the operation the child starts next.
    pub fn rendezvous(&mut self, bytes: &[u8], limit: Duration) -> bool {
        self.record(bytes);
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = [PollFd::new(self.go.as_fd(), PollFlags::POLLIN)];
            let timeout = nix::sys::time::TimeSpec::from_duration(left);
            match nix::poll::ppoll(&mut fds, Some(timeout), None) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => return false,
            }
            let mut byte = [0u8; 1];
            match nix::unistd::read(&self.go, &mut byte) {
                Ok(1) => return true,
                Ok(_) => return false, // the parent is gone
                Err(Errno::EINTR | Errno::EAGAIN) => continue,
                Err(_) => return false,
            }
        }
    }

    /// True if the parent has let this child go ([`Control::release`]) since the last
    /// call, or is gone; never waits. A child that runs for long checks it between steps,
    /// to learn that the parent wants it to stop.
    pub fn released(&mut self) -> bool {
        let mut fds = [PollFd::new(self.go.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(n) if n > 0 => {}
            _ => return false,
        }
        let mut byte = [0u8; 1];
        // A byte (released), or the end of the pipe (the parent is gone).
        matches!(nix::unistd::read(&self.go, &mut byte), Ok(0 | 1))
    }

    fn send(&mut self, tag: u8, bytes: &[u8]) {
        self.buf.clear();
        self.buf.push(tag);
        self.buf.extend_from_slice(bytes);
        let mut frame = Vec::with_capacity(frame::encoded_len(self.buf.len()));
        if frame::encode_into(&self.buf, &mut frame).is_err() {
            return; // over 4 GiB: cannot happen for the records the harness sends
        }
        let mut rest = &frame[..];
        while !rest.is_empty() {
            match nix::unistd::write(&self.fd, rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildEnd {
    /// The closure returned `Ok`.
    Returned,
    /// The closure returned `Err` with this message.
    Failed(String),
    /// The closure panicked; the panic message and location.
    Panicked(String),
    /// The child was killed by this signal (named, e.g. "SIGKILL") before finishing.
    Signaled(String),
    /// The child exited with this code without reporting an outcome.
    Exited(i32),
    /// Still running at the deadline: the watchdog killed it.
    Hung,
}

impl fmt::Display for ChildEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildEnd::Returned => write!(f, "finished"),
            ChildEnd::Failed(m) => write!(f, "failed: {m}"),
            ChildEnd::Panicked(m) => write!(f, "panicked: {m}"),
            ChildEnd::Signaled(s) => write!(f, "killed by {s}"),
            ChildEnd::Exited(c) => write!(f, "exited with code {c} without reporting"),
            ChildEnd::Hung => write!(f, "hung (killed by the watchdog)"),
        }
    }
}

/// What one child did: the records it sent, in order, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildReport {
    /// The name given to [`ChildGroup::spawn`].
    pub name: String,
    /// The child's process id.
    pub pid: i32,
    /// Every record the child sent with [`Reporter::record`].
    pub records: Vec<Vec<u8>>,
    /// When each record was made: `CLOCK_MONOTONIC` nanoseconds, comparable across the
    /// processes of one machine ([`monotonic_ns`]).
    pub record_times: Vec<u64>,
    /// How it ended.
    pub end: ChildEnd,
}

#[derive(Debug)]
struct Running {
    name: String,
    pid: Pid,
    /// Read end of the report pipe; `None` once it reached end of stream.
    report: Option<OwnedFd>,
    /// Write end of the child's "go" pipe ([`Reporter::rendezvous`]).
    go: OwnedFd,
    decoder: FrameDecoder,
    records: Vec<Vec<u8>>,
    record_times: Vec<u64>,
    outcome: Option<ChildEnd>,
    /// The exit status, once reaped.
    status: Option<WaitStatus>,
    hung: bool,
}

impl Running {
    /// Reads what is available on the report pipe. Returns false at end of stream.
    fn pump(&mut self) -> bool {
        let Some(fd) = self.report.as_ref() else {
            return false;
        };
        let buf = self.decoder.spare(64 * 1024);
        let n = match nix::unistd::read(fd, buf) {
            Ok(n) => n,
            Err(Errno::EINTR | Errno::EAGAIN) => return true,
            Err(_) => 0,
        };
        if n == 0 {
            self.report = None;
            return false;
        }
        self.decoder.commit(n);
        loop {
            match self.decoder.next_frame() {
                Ok(Some(f)) => match f.split_first() {
                    Some((&TAG_RECORD, rest)) if rest.len() >= 8 => {
                        let (at, bytes) = rest.split_at(8);
                        self.record_times
                            .push(u64::from_le_bytes(at.try_into().unwrap_or_default()));
                        self.records.push(bytes.to_vec());
                    }
                    Some((&TAG_RETURNED, _)) => self.outcome = Some(ChildEnd::Returned),
                    Some((&TAG_FAILED, m)) => {
                        self.outcome = Some(ChildEnd::Failed(String::from_utf8_lossy(m).into()))
                    }
                    Some((&TAG_PANICKED, m)) => {
                        self.outcome = Some(ChildEnd::Panicked(String::from_utf8_lossy(m).into()))
                    }
                    _ => {}
                },
                Ok(None) => return true,
                // Only our own child writes here; a malformed report means it was cut off.
                Err(_) => return true,
            }
        }
    }

    /// True if the report pipe has data (or its end) to read now.
    fn readable(&self) -> bool {
        let Some(fd) = self.report.as_ref() else {
            return false;
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        matches!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
            Ok(n) if n > 0
        )
    }

    /// Reaps the child if it has exited. Returns true when reaped.
    fn try_reap(&mut self, flags: Option<WaitPidFlag>) -> bool {
        if self.status.is_some() {
            return true;
        }
        loop {
            match nix::sys::wait::waitpid(self.pid, flags) {
                Ok(WaitStatus::StillAlive) => return false,
                Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    self.status = Some(s);
                    return true;
                }
                Ok(_) => continue, // stopped/continued: not an end
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    // ECHILD: somebody else reaped it (a SIGCHLD handler set to SIG_IGN does
                    // this). Record it as exited with an unknown status.
                    self.status = Some(WaitStatus::Exited(self.pid, -1));
                    return true;
                }
            }
        }
    }

    fn kill(&self) {
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
    }

    fn into_report(self) -> ChildReport {
        let end = if self.hung {
            ChildEnd::Hung
        } else if let Some(o) = self.outcome.clone() {
            o
        } else {
            match self.status {
                Some(WaitStatus::Signaled(_, sig, _)) => {
                    ChildEnd::Signaled(sig.as_str().to_string())
                }
                Some(WaitStatus::Exited(_, code)) => ChildEnd::Exited(code),
                _ => ChildEnd::Exited(-1),
            }
        };
        ChildReport {
            pid: self.pid.as_raw(),
            name: self.name,
            records: self.records,
            record_times: self.record_times,
            end,
        }
    }
}

/// Watches a [`ChildGroup`] while its children run ([`ChildGroup::wait_observed`]), and may
/// signal them: the seam a nemesis plugs into.
pub trait Observer {
    /// Child `child` (spawn order) sent `record`; the parent read it at `now`.
    fn record(&mut self, child: usize, record: &[u8], now: Instant) {
        let _ = (child, record, now);
    }

    /// The next instant [`Observer::act`] wants to run at, if any. The group calls `act`
    /// after every batch of records and whenever this instant passes.
    fn next_wake(&self) -> Option<Instant> {
        None
    }

    /// Acts at `now`, through `ctl` (signal a child, or freeze it and look at what it last
    /// reported).
    fn act(&mut self, now: Instant, ctl: &mut Control<'_>) {
        let _ = (now, ctl);
    }

    /// Give up collecting after this long without a record or a signal (a hang, reported
    /// sooner than the deadline). `None`: wait for the deadline.
    fn stall_limit(&self) -> Option<Duration> {
        None
    }
}

/// What an [`Observer`] may do to the children of a group while they run.
#[derive(Debug)]
pub struct Control<'a> {
    children: &'a mut dyn Children,
    signalled: bool,
}

/// The processes an [`Observer`] acts on, by index: the children of a [`ChildGroup`], or
/// the role processes of a program under test ([`super::exec`]).
pub(crate) trait Children: fmt::Debug {
    /// The process id of process `child`, while it may still be signalled.
    fn pid(&self, child: usize) -> Option<Pid>;
    /// Sends `sig` to process `child`; true if it was sent.
    fn send_signal(&mut self, child: usize, sig: Signal) -> bool;
    /// Lets process `child` go on from a rendezvous.
    fn release(&mut self, child: usize);
    /// Reads everything process `child` reported so far (it is stopped); returns its last
    /// record.
    fn drain(&mut self, child: usize) -> Vec<u8>;
}

impl<'a> Control<'a> {
    pub(crate) fn new(children: &'a mut dyn Children) -> Control<'a> {
        Control {
            children,
            signalled: false,
        }
    }

    /// True if a signal was sent through this control.
    pub(crate) fn signalled(&self) -> bool {
        self.signalled
    }

    /// Sends `sig` to child `child` (spawn order). Returns whether it was sent.
    pub fn signal(&mut self, child: usize, sig: Signal) -> bool {
        if self.children.pid(child).is_none() {
            return false;
        }
        self.signalled = true;
        self.children.send_signal(child, sig)
    }

    /// Moves child `child` off the CPU this (parent) process runs on, when it may run on
    /// others: a child the parent wakes up then runs elsewhere instead of preempting the
    /// parent, which can stop it a few microseconds later. Returns whether it moved.
    /// [`Control::unpin`] undoes it.
    pub fn keep_apart(&mut self, child: usize) -> bool {
        use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
        let (Some(pid), Ok(mine), Ok(here)) = (
            self.children.pid(child),
            sched_getaffinity(Pid::from_raw(0)),
            sched_getcpu(),
        ) else {
            return false;
        };
        let mut apart = CpuSet::new();
        let mut any = false;
        for cpu in 0..CpuSet::count() {
            if cpu != here && mine.is_set(cpu).unwrap_or(false) && apart.set(cpu).is_ok() {
                any = true;
            }
        }
        any && sched_setaffinity(pid, &apart).is_ok()
    }

    /// Lets child `child` run on every CPU this process may use again.
    pub fn unpin(&mut self, child: usize) {
        use nix::sched::{sched_getaffinity, sched_setaffinity};
        if let (Some(pid), Ok(mine)) = (
            self.children.pid(child),
            sched_getaffinity(Pid::from_raw(0)),
        ) {
            let _ = sched_setaffinity(pid, &mine);
        }
    }

    /// Lets child `child` go on from a [`Reporter::rendezvous`].
    pub fn release(&mut self, child: usize) {
        self.children.release(child);
    }

    /// Stops child `child` (SIGSTOP), waits until it is stopped (at most `limit`), then reads
    /// everything it reported before it stopped. Returns its last record then (empty if it
    /// reported nothing), or `None` if it could not be stopped in time (it exited, say): it
    /// is then continued again. A frozen child stays stopped until the observer sends it
    /// SIGCONT or SIGKILL.
    pub fn freeze(&mut self, child: usize, limit: Duration) -> Option<Vec<u8>> {
        if !self.signal(child, Signal::SIGSTOP) {
            return None;
        }
        let pid = self.children.pid(child)?;
        let until = Instant::now() + limit;
        loop {
            match process_state(pid) {
                Some('T' | 't') => break,
                Some('Z' | 'X') | None => return None,
                Some(_) if Instant::now() >= until => {
                    self.children.send_signal(child, Signal::SIGCONT);
                    return None;
                }
                Some(_) => std::thread::sleep(Duration::from_micros(10)),
            }
        }
        // Stopped: whatever it wrote is in the pipe now. Read it all.
        Some(self.children.drain(child))
    }
}

impl Children for Vec<Running> {
    fn pid(&self, child: usize) -> Option<Pid> {
        // Not reaped yet (reaping starts after collection), so the pid is still ours: at
        // worst a zombie, which ignores signals.
        self.get(child).map(|c| c.pid)
    }

    fn send_signal(&mut self, child: usize, sig: Signal) -> bool {
        self.get(child)
            .is_some_and(|c| nix::sys::signal::kill(c.pid, sig).is_ok())
    }

    fn release(&mut self, child: usize) {
        if let Some(c) = self.get(child) {
            // The pipe is empty (one byte per rendezvous, read before the next) and the
            // child may be gone: either way a failed write changes nothing.
            let _ = nix::unistd::write(&c.go, &[1]);
        }
    }

    fn drain(&mut self, child: usize) -> Vec<u8> {
        let Some(c) = self.get_mut(child) else {
            return Vec::new();
        };
        while c.report.is_some() && c.readable() && c.pump() {}
        c.records.last().cloned().unwrap_or_default()
    }
}

/// The state letter of process `pid` (`R`, `S`, `D`, `T`, `Z`, ...), from `/proc`.
pub(crate) fn process_state(pid: Pid) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The observer of [`ChildGroup::wait`]: watches nothing, sends nothing.
struct NoObserver;

impl Observer for NoObserver {}

/// A set of forked children, supervised together: collected, reaped, killed on drop.
#[derive(Debug, Default)]
pub struct ChildGroup {
    children: Vec<Running>,
}

impl ChildGroup {
    /// An empty group.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many children have been spawned.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// True if no child has been spawned.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// The process ids of the children, in spawn order.
    pub fn pids(&self) -> Vec<i32> {
        self.children.iter().map(|c| c.pid.as_raw()).collect()
    }

    /// Forks a child that runs `body` and exits. In the parent, `body` is dropped without
    /// running (so capture what the child needs by reference, or take it out of an
    /// `Option` in the child, never by a move whose drop matters to the parent).
    pub fn spawn<F>(&mut self, name: impl Into<String>, body: F) -> Result<()>
    where
        F: FnOnce(&mut Reporter) -> std::result::Result<(), String>,
    {
        let name = name.into();
        install_hook();
        let (report_r, report_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
        let (go_r, go_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
        let parent = nix::unistd::getpid();
        // SAFETY: in the child only the forking thread exists. It runs `run_child`, which
        // keeps clear of state other threads may have held: it never touches std's stdio
        // (reports go to a pipe it owns), records panics through a hook installed before
        // the fork that takes no stdio or backtrace lock, and leaves by `_exit` without
        // running destructors or atexit handlers. Memory allocation is fork-safe with glibc's malloc, whose fork
        // wrapper resets the allocator's locks in the child. The memory-safety of `body`
        // itself is the closure's own (it is safe Rust); at worst it waits on a lock that
        // will never be released, which the watchdog reports as a hang.
        match unsafe { nix::unistd::fork() } {
            Err(e) => Err(Error::sys("fork", e)),
            Ok(ForkResult::Child) => {
                drop(report_r);
                drop(go_w);
                run_child(parent, report_w, go_r, body)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(report_w);
                drop(go_r);
                self.children.push(Running {
                    name,
                    pid: child,
                    report: Some(report_r),
                    go: go_w,
                    decoder: FrameDecoder::new(),
                    records: Vec::new(),
                    record_times: Vec::new(),
                    outcome: None,
                    status: None,
                    hung: false,
                });
                Ok(())
            }
        }
    }

    /// Collects every child's records until each has exited, or `timeout` passes; then
    /// kills what is still running (reported as [`ChildEnd::Hung`]) and reaps every child.
    pub fn wait(self, timeout: Duration) -> Vec<ChildReport> {
        self.wait_observed(timeout, &mut NoObserver)
    }

    /// [`ChildGroup::wait`], with `observer` told of every record as it arrives and given
    /// the chance to signal the children while they run (a nemesis that kills or pauses
    /// them at chosen moments). If [`Observer::stall_limit`] is `Some(d)` and no record
    /// arrives and no signal is sent for `d`, collection stops early: what is still running
    /// is killed and reported as hung, as at the deadline.
    ///
    /// Children are only signalled while none of them has been reaped, so a signal never
    /// reaches a recycled process id.
    pub fn wait_observed(
        mut self,
        timeout: Duration,
        observer: &mut dyn Observer,
    ) -> Vec<ChildReport> {
        let deadline = Instant::now() + timeout;
        let stopped = self.collect(deadline, observer);
        // Asked to stop (Ctrl-C): kill what still runs now rather than wait for it.
        self.reap(if stopped { Instant::now() } else { deadline });
        std::mem::take(&mut self.children)
            .into_iter()
            .map(Running::into_report)
            .collect()
    }

    /// Lets `observer` act now; returns true if it sent a signal.
    fn act(&mut self, observer: &mut dyn Observer) -> bool {
        let mut ctl = Control::new(&mut self.children);
        observer.act(Instant::now(), &mut ctl);
        ctl.signalled()
    }

    /// Tells `observer` of every record it has not seen yet; returns true if there was one.
    fn notify(&self, observer: &mut dyn Observer, seen: &mut [usize]) -> bool {
        let now = Instant::now();
        let mut any = false;
        for (i, c) in self.children.iter().enumerate() {
            for r in &c.records[seen[i]..] {
                observer.record(i, r, now);
                any = true;
            }
            seen[i] = c.records.len();
        }
        any
    }

    /// Reads report pipes until every one reaches end of stream, the deadline passes, or
    /// nothing happens for the observer's stall limit. Returns true if it stopped because
    /// a stop was asked for ([`super::interrupt`]).
    fn collect(&mut self, deadline: Instant, observer: &mut dyn Observer) -> bool {
        let mut last_activity = Instant::now();
        let mut seen = vec![0; self.children.len()];
        loop {
            if super::interrupt::requested().is_some() {
                return true;
            }
            if self.act(observer) {
                last_activity = Instant::now();
            }
            // Records read while the observer froze a child.
            if self.notify(observer, &mut seen) {
                last_activity = Instant::now();
            }
            let open: Vec<usize> = (0..self.children.len())
                .filter(|&i| self.children[i].report.is_some())
                .collect();
            if open.is_empty() {
                return false;
            }
            let now = Instant::now();
            let mut until = deadline;
            if let Some(stall) = observer.stall_limit() {
                if now >= last_activity + stall {
                    return false;
                }
                until = until.min(last_activity + stall);
            }
            if let Some(wake) = observer.next_wake() {
                until = until.min(wake.max(now));
            }
            if now >= deadline {
                return false;
            }
            // Wake at least this often to see a stop request that came from another thread
            // (a signal to this one interrupts the wait anyway).
            until = until.min(now + STOP_POLL);
            // ppoll, not poll: a fault planned a few microseconds after an event must not
            // wait for the next whole millisecond.
            let timeout =
                nix::sys::time::TimeSpec::from_duration(until.saturating_duration_since(now));
            let ready: Vec<bool> = {
                let mut fds: Vec<PollFd<'_>> = open
                    .iter()
                    .filter_map(|&i| self.children[i].report.as_ref())
                    .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                    .collect();
                match nix::poll::ppoll(&mut fds, Some(timeout), None) {
                    Ok(0) => continue,
                    Ok(_) => fds
                        .iter()
                        .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                        .collect(),
                    Err(Errno::EINTR) => continue,
                    // Cannot poll (ENOMEM): stop collecting; `reap` then kills what still
                    // runs and keeps what was reported. A blocking read here could hang.
                    Err(_) => return false,
                }
            };
            for (k, &i) in open.iter().enumerate() {
                if ready[k] {
                    self.children[i].pump();
                }
            }
            if self.notify(observer, &mut seen) {
                last_activity = Instant::now();
            }
        }
    }

    /// Reaps every child; one still running at the deadline (or whose report never ended)
    /// is killed and marked hung.
    fn reap(&mut self, deadline: Instant) {
        // A child an observer stopped just after it closed its report pipe (a pause not yet
        // over when the last pipe ended) would never exit: continue every child first.
        // Not reaped yet, so each pid is still ours; SIGCONT harms no running child.
        for c in &self.children {
            if c.status.is_none() {
                let _ = nix::sys::signal::kill(c.pid, Signal::SIGCONT);
            }
        }
        let mut pause = Duration::from_micros(20);
        loop {
            let mut pending = false;
            for c in &mut self.children {
                if c.report.is_none() && !c.try_reap(Some(WaitPidFlag::WNOHANG)) {
                    pending = true;
                }
            }
            if !pending || Instant::now() >= deadline {
                break;
            }
            // The report pipe closes a moment before the child becomes reapable.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        for c in &mut self.children {
            if c.status.is_none() {
                c.hung = true;
                c.kill();
                c.try_reap(None);
                // Keep whatever it managed to report before it was killed.
                while c.report.is_some() && c.pump() {}
            }
        }
    }
}

/// The longest a wait for children goes without looking for a stop request.
const STOP_POLL: Duration = Duration::from_millis(50);

impl Drop for ChildGroup {
    fn drop(&mut self) {
        for c in &mut self.children {
            if c.status.is_none() {
                c.kill();
                c.try_reap(None);
            }
        }
    }
}

/// Set in a forked child (in its own copy of memory): panics are recorded for the report.
static IN_CHILD: AtomicBool = AtomicBool::new(false);

/// Installs, once and in the parent, a panic hook that defers to the previous one except
/// in a forked child, where it only records the message.
///
/// The default hook takes the stderr and backtrace locks, which another thread of the
/// parent may have held at the fork. Replacing the hook in the child instead would take
/// the hook's own lock for writing, and a thread of the parent that was panicking at the
/// fork holds it (for reading) forever in the child: that hang was seen in this crate's own
/// tests.
fn install_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_CHILD.load(Ordering::Relaxed) {
                let msg = info.to_string();
                PANIC_MESSAGE.with(|m| *m.borrow_mut() = Some(msg));
            } else {
                previous(info);
            }
        }));
    });
}

/// The child's side: run `body`, report its outcome, `_exit`. Never returns.
fn run_child<F>(parent: Pid, report: OwnedFd, go: OwnedFd, body: F) -> !
where
    F: FnOnce(&mut Reporter) -> std::result::Result<(), String>,
{
    // Die with the parent, so a killed test binary leaves no orphans. If the parent died
    // before this took effect, stop now.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid() != parent {
        exit_now(EXIT_ORPHANED);
    }
    // From here on, panics in this process are recorded, not printed (see `install_hook`).
    IN_CHILD.store(true, Ordering::Relaxed);
    let mut reporter = Reporter {
        fd: report,
        go,
        buf: Vec::new(),
    };
    match catch_unwind(AssertUnwindSafe(|| body(&mut reporter))) {
        Ok(Ok(())) => reporter.send(TAG_RETURNED, b""),
        Ok(Err(msg)) => reporter.send(TAG_FAILED, msg.as_bytes()),
        Err(payload) => {
            let msg = PANIC_MESSAGE
                .with(|m| m.borrow_mut().take())
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panicked with a non-string payload".to_string());
            reporter.send(TAG_PANICKED, msg.as_bytes());
            // Leak the payload: its destructor is user code we need not run.
            std::mem::forget(payload);
        }
    }
    exit_now(0)
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the machine, so the
/// records of different children can be put on one timeline.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            (t.tv_sec() as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(t.tv_nsec() as u64)
        })
        .unwrap_or(0)
}

/// `_exit(2)`: leaves at once, running no destructor, `atexit` handler or stdio flush.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and always safe to call; it does not return.
    unsafe { nix::libc::_exit(code) }
}
