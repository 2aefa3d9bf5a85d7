//! Knowing whether the other end of a channel still exists, in any process (used by the
//! shared-memory ring and the file queue's channel).
//!
//! Two pipes nobody writes to. The sender keeps the write end of one (its "I exist" pipe),
//! the receiver the read end of the other. The kernel counts the copies of each descriptor
//! across `fork`, exec and descriptor passing, and closes them when a process dies, even by
//! SIGKILL. So the receiver sees `POLLHUP` on its end of the sender's pipe exactly when the
//! last copy of the sender is gone, and the sender sees `POLLERR` on its end of the
//! receiver's pipe when the last receiver is gone. Dropping a copy in a process that never
//! used it changes nothing while another copy lives: the post-fork cleanup is harmless.

use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};

/// One end's liveness descriptors.
#[derive(Debug)]
pub(crate) struct Liveness {
    /// Our "I exist" descriptor; `None` once given up (on drop). Held, not read, by ends
    /// that let it close with them (the queue channel); the ring gives it up explicitly.
    #[cfg_attr(ipcprop_loom, allow(dead_code))]
    pub(crate) own: Option<OwnedFd>,
    /// The descriptor that tells whether the peer exists.
    pub(crate) peer: OwnedFd,
    /// What `poll` reports on `peer` when the peer is gone.
    gone: PollFlags,
}

/// `(sender's, receiver's)` liveness.
pub(crate) fn pair() -> Result<(Liveness, Liveness)> {
    let (s_read, s_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    let (r_read, r_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    Ok((
        Liveness::sender(s_write, r_write),
        Liveness::receiver(r_read, s_read),
    ))
}

impl Liveness {
    /// The sender's: it holds its own pipe's write end, and watches the receiver's pipe's
    /// write end for `POLLERR` (no reader left).
    pub(crate) fn sender(own: OwnedFd, peer: OwnedFd) -> Liveness {
        Liveness {
            own: Some(own),
            peer,
            gone: PollFlags::POLLERR,
        }
    }

    /// The receiver's: it holds its own pipe's read end, and watches the sender's pipe's read
    /// end for `POLLHUP` (no writer left).
    pub(crate) fn receiver(own: OwnedFd, peer: OwnedFd) -> Liveness {
        Liveness {
            own: Some(own),
            peer,
            gone: PollFlags::POLLHUP,
        }
    }
}

impl Liveness {
    /// False once every copy of the other end is gone (dropped, or its process exited).
    pub(crate) fn alive(&self) -> bool {
        let mut fds = [PollFd::new(self.peer.as_fd(), PollFlags::empty())];
        loop {
            match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
                Ok(0) => return true,
                Ok(_) => {
                    let r = fds[0].revents().unwrap_or(PollFlags::empty());
                    // POLLHUP/POLLERR: the peer is gone. POLLNVAL would be our own bug (a
                    // closed descriptor); treat it as gone rather than wait forever.
                    return !(r.intersects(self.gone | PollFlags::POLLNVAL));
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // poll on one valid descriptor does not fail otherwise; if it did, report
                // the peer alive and let the next check decide.
                Err(_) => return true,
            }
        }
    }
}
