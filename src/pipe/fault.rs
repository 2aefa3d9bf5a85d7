//! Fault injection between a pipe end and the kernel.
//!
//! [`FaultyIo`] wraps a descriptor and, on a schedule, turns a read or write into a short one,
//! fails it with `EINTR` (as a signal arriving before any byte moved would) or with `EAGAIN`
//! (as a non-blocking descriptor would). The channel must deliver exactly the same messages
//! regardless: the property tests run generated schedules across real forks, so the retry
//! loops are proven, not assumed.
//!
//! ```
//! use ipcprop::pipe::fault::{Fault, FaultSchedule, FaultyIo};
//! use ipcprop::pipe::{PipeConfig, PipeReceiver, PipeSender};
//! use ipcprop::{Receiver, Sender};
//!
//! let (r, w) = nix::unistd::pipe().unwrap();
//! let every_other = FaultSchedule::new(vec![Fault::Short(1), Fault::Interrupted, Fault::WouldBlock]);
//! let mut tx = PipeSender::with_io(FaultyIo::new(w, every_other.clone()), PipeConfig::new());
//! let mut rx = PipeReceiver::with_io(FaultyIo::new(r, every_other), PipeConfig::new());
//! tx.send(b"survives short writes")?;
//! assert_eq!(rx.recv()?, b"survives short writes");
//! # Ok::<(), ipcprop::Error>(())
//! ```

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
#[cfg(feature = "harness")]
use proptest::prelude::*;

use super::PipeIo;

/// What happens to one read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call goes through unchanged.
    Pass,
    /// The call moves at most this many bytes (at least 1).
    Short(usize),
    /// The call fails with `EINTR` before moving anything.
    Interrupted,
    /// The call fails with `EAGAIN` before moving anything.
    WouldBlock,
}

/// A cyclic list of faults applied to successive calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSchedule {
    faults: Vec<Fault>,
    next: usize,
    /// Never shorten writes (several senders share the pipe: a write of at most `PIPE_BUF`
    /// bytes is atomic in the kernel, and shortening it would fake a failure the kernel never
    /// produces).
    atomic_writes: bool,
}

impl FaultSchedule {
    /// A schedule that applies `faults` to calls in turn, then starts over. An empty list
    /// means no faults.
    pub fn new(faults: Vec<Fault>) -> Self {
        FaultSchedule {
            faults,
            next: 0,
            atomic_writes: false,
        }
    }

    /// Keeps writes whole (turns `Short` into `Pass` on writes), for a pipe shared by several
    /// senders.
    pub fn with_atomic_writes(mut self) -> Self {
        self.atomic_writes = true;
        self
    }

    /// The faults, in order.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    fn take(&mut self) -> Fault {
        if self.faults.is_empty() {
            return Fault::Pass;
        }
        let f = self.faults[self.next % self.faults.len()];
        self.next = (self.next + 1) % self.faults.len();
        f
    }

    /// A proptest strategy: up to 16 faults, mostly short transfers (sizes weighted to
    /// 1 byte and to splitting a frame header), with `EINTR` and `EAGAIN` mixed in. Never
    /// only errors, so every schedule makes progress.
    #[cfg(feature = "harness")]
    pub fn strategy() -> impl Strategy<Value = FaultSchedule> {
        let fault = prop_oneof![
            2 => Just(Fault::Pass),
            3 => prop_oneof![Just(1usize), Just(3), Just(7), Just(8), Just(9), 1usize..5000].prop_map(Fault::Short),
            2 => Just(Fault::Interrupted),
            1 => Just(Fault::WouldBlock),
        ];
        proptest::collection::vec(fault, 0..16).prop_map(|mut faults| {
            if !faults.is_empty()
                && faults
                    .iter()
                    .all(|f| matches!(f, Fault::Interrupted | Fault::WouldBlock))
            {
                faults.push(Fault::Pass);
            }
            FaultSchedule::new(faults)
        })
    }
}

/// A pipe descriptor that misbehaves on a [`FaultSchedule`], as the kernel is allowed to.
#[derive(Debug)]
pub struct FaultyIo<I> {
    inner: I,
    reads: FaultSchedule,
    writes: FaultSchedule,
}

impl<I: PipeIo> FaultyIo<I> {
    /// Wraps `inner`, applying `schedule` to its reads and (a separate copy) to its writes.
    pub fn new(inner: I, schedule: FaultSchedule) -> Self {
        FaultyIo {
            inner,
            reads: schedule.clone(),
            writes: schedule,
        }
    }
}

impl<I: PipeIo> AsFd for FaultyIo<I> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl<I: PipeIo> PipeIo for FaultyIo<I> {
    fn read(&mut self, buf: &mut [u8]) -> nix::Result<usize> {
        match self.reads.take() {
            Fault::Pass => self.inner.read(buf),
            Fault::Short(n) => {
                let n = n.clamp(1, buf.len().max(1)).min(buf.len());
                self.inner.read(&mut buf[..n])
            }
            Fault::Interrupted => Err(Errno::EINTR),
            Fault::WouldBlock => Err(Errno::EAGAIN),
        }
    }

    fn writev(&mut self, bufs: &[IoSlice<'_>]) -> nix::Result<usize> {
        let atomic = self.writes.atomic_writes;
        match self.writes.take() {
            Fault::Short(n) if !atomic => {
                // Offer the kernel only the first `n` bytes of the gathered buffers.
                let mut left = n.max(1);
                let mut short: Vec<IoSlice<'_>> = Vec::with_capacity(bufs.len());
                for b in bufs {
                    if left == 0 {
                        break;
                    }
                    let take = b.len().min(left);
                    short.push(IoSlice::new(&b[..take]));
                    left -= take;
                }
                self.inner.writev(&short)
            }
            Fault::Pass | Fault::Short(_) => self.inner.writev(bufs),
            Fault::Interrupted => Err(Errno::EINTR),
            Fault::WouldBlock => Err(Errno::EAGAIN),
        }
    }
}
