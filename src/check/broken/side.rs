//! The side channel of [`Defect::EndOnAnySenderDeath`](super::Defect::EndOnAnySenderDeath):
//! one pipe per sender process, on which a sender that ends cleanly says goodbye; the
//! receiver takes a pipe that hangs up without a goodbye for the end of the whole stream.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::SharedLock;
use crate::error::{Error, Result};

/// The senders' side: every pipe's write end until a process claims one.
#[derive(Debug)]
pub(super) struct SideSender {
    ends: Vec<OwnedFd>,
    /// Hands out the pipes, one per sender process.
    counter: SharedLock,
    /// The pipe this process claimed, if it is a sender.
    claimed: Option<usize>,
}

/// The receiver's side: every pipe's read end.
#[derive(Debug)]
pub(super) struct SideWatch {
    ends: Vec<OwnedFd>,
    /// Pipes whose sender said goodbye or hung up.
    settled: Vec<bool>,
    /// A pipe hung up without a goodbye.
    died: bool,
}

/// One pipe per sender (at least one).
pub(super) fn side_channels(senders: usize) -> Result<(SideSender, SideWatch)> {
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for _ in 0..senders.max(1) {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
        reads.push(r);
        writes.push(w);
    }
    let n = reads.len();
    Ok((
        SideSender {
            ends: writes,
            counter: SharedLock::new()?,
            claimed: None,
        },
        SideWatch {
            ends: reads,
            settled: vec![false; n],
            died: false,
        },
    ))
}

impl SideSender {
    /// In a sender process: claims the next pipe and closes this process's copies of the
    /// others.
    pub(super) fn claim(&mut self) {
        let n = self.ends.len();
        let k = self.counter.word().fetch_add(1, Ordering::Relaxed) as usize % n;
        self.claimed = Some(k);
        let mine = self.ends.swap_remove(k);
        self.ends = vec![mine];
    }

    /// On a clean end: the goodbye.
    pub(super) fn goodbye(&mut self) {
        if self.claimed.is_some() {
            if let Some(fd) = self.ends.first() {
                let _ = nix::unistd::write(fd, b".");
            }
        }
    }
}

impl SideWatch {
    /// True once some sender's pipe hung up without its goodbye.
    pub(super) fn any_died(&mut self) -> bool {
        for (i, fd) in self.ends.iter().enumerate() {
            if self.settled[i] {
                continue;
            }
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            if !matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(1)) {
                continue;
            }
            // Readable: the goodbye, or end of file (the write end closed without one).
            let mut b = [0u8; 1];
            match nix::unistd::read(fd, &mut b) {
                Ok(1) => self.settled[i] = true,
                Ok(_) => {
                    self.settled[i] = true;
                    self.died = true;
                }
                Err(_) => {}
            }
        }
        self.died
    }
}
