//! # ipcprop: inter-process communication you can trust, and the harness that proves it
//!
//! Transports between a parent and its forked children on Linux, each keeping the same
//! promises: what one sender sends arrives in order, exactly once,
//! byte-exact; when every sender is gone the receiver drains what was sent and then reports
//! [`Error::Disconnected`], never hangs; a sender whose receiver is gone gets an error, never
//! a `SIGPIPE` death; dropping an end in a process that never used it does not close the
//! channel; bad bytes from a peer give a typed error, never a panic.
//!
//! | transport | module | status |
//! | --- | --- | --- |
//! | framed channel over an anonymous pipe | [`pipe`] | here |
//! | shared-memory ring (memfd, futex wait/wake) | [`shm`] | here |
//! | crash-safe file queue under `flock` | [`queue`] | here |
//!
//! All of them implement [`Sender`] and [`Receiver`], so the conformance harness in
//! [`check`] (fork runner, proptest plans, history checker, campaigns) runs over each, and
//! over yours.
//!
//! ## The pipe channel
//! ```
//! use ipcprop::{pipe, Receiver, Sender};
//! use ipcprop::check::fork::ChildGroup;
//! use std::time::Duration;
//!
//! let (mut tx, rx) = pipe::channel()?;
//! let mut rx = Some(rx);
//! let mut children = ChildGroup::new();
//! children.spawn("child", |_| {
//!     drop(rx.take()); // the child only sends
//!     for i in 1..=3 {
//!         tx.send(format!("Message {i}").as_bytes()).map_err(|e| e.to_string())?;
//!     }
//!     Ok(())
//! })?;
//! drop(tx); // the parent only receives: its copy must not keep the pipe open
//! let mut rx = rx.take().unwrap();
//! let mut got = Vec::new();
//! for m in rx.iter() {
//!     got.push(String::from_utf8(m?).unwrap()); // ends when every sender is gone
//! }
//! assert_eq!(got, ["Message 1", "Message 2", "Message 3"]);
//! children.wait(Duration::from_secs(10));
//! # Ok::<(), ipcprop::Error>(())
//! ```
//!
//! ## Proving a transport
//! ```
//! use ipcprop::check::{builtin::PipeTransport, campaign, CampaignConfig};
//!
//! let config = CampaignConfig { cases: 8, seed: 42, ..CampaignConfig::default() };
//! let report = campaign(&PipeTransport::default(), &config, &mut |_| {})?;
//! assert!(report.failure.is_none());
//! # Ok::<(), ipcprop::Error>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(all(feature = "bench", not(ipcprop_loom)))]
pub mod bench;
#[cfg(not(ipcprop_loom))]
pub mod check;
mod error;
mod forkgen;
pub mod frame;
#[cfg(not(ipcprop_loom))]
#[doc(hidden)]
pub mod fuzz;
pub mod liveness;
pub mod pipe;
pub mod queue;
pub mod shm;
mod sync;
pub mod transport;

pub use error::{Error, Result};
pub use transport::{Receiver, Sender, Wait};
