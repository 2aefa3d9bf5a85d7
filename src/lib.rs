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
//! All of them implement [`Sender`] and [`Receiver`]. What each promises, the traps each
//! guards against and the tests that show it: `docs/DESIGN.md` in the repository.
//!
//! ## A first message
//! ```
//! use ipcprop::{pipe, Receiver, Sender};
//!
//! let (mut tx, mut rx) = pipe::channel()?;
//! tx.send(b"hello")?;
//! drop(tx); // the last sender is gone...
//! assert_eq!(rx.recv()?, b"hello"); // ...what it sent is still delivered...
//! assert!(rx.recv().unwrap_err().is_disconnected()); // ...then the end is reported
//! # Ok::<(), ipcprop::Error>(())
//! ```
//!
//! ## Across a fork
//! Each process keeps the end it uses and drops the other: a copy of the sender left
//! open in the parent would keep the channel open.
//! ```
//! use ipcprop::{pipe, Receiver, Sender};
//! use nix::sys::wait::{waitpid, WaitStatus};
//! use nix::unistd::{fork, ForkResult};
//!
//! let (mut tx, mut rx) = pipe::channel()?;
//! // SAFETY: a doc test runs in a process of its own, on one thread, so the child may run
//! // any code (no lock can be held by a thread that the fork left behind).
//! match unsafe { fork() }? {
//!     ForkResult::Child => {
//!         drop(rx); // the child only sends
//!         let sent = (1..=3).all(|i| tx.send(format!("Message {i}").as_bytes()).is_ok());
//!         // SAFETY: `_exit` ends the child at once: nothing of the parent's (buffered
//!         // output, the test harness) runs twice.
//!         unsafe { nix::libc::_exit(if sent { 0 } else { 1 }) }
//!     }
//!     ForkResult::Parent { child } => {
//!         drop(tx); // the parent only receives
//!         let mut got = Vec::new();
//!         // Ends once the child's sender is gone and everything it sent was received; a
//!         // broken stream is an error here, never a silent end.
//!         for m in rx.iter() {
//!             got.push(String::from_utf8(m?)?);
//!         }
//!         assert_eq!(got, ["Message 1", "Message 2", "Message 3"]);
//!         assert_eq!(waitpid(child, None)?, WaitStatus::Exited(child, 0));
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//! A program with threads should fork through a runner that knows what a child of a
//! multi-threaded process may do: the harness's `check::fork::ChildGroup` (feature
//! `harness`), or `fork` followed at once by `exec`, with the end handed over as in
//! `examples/pipe_exec.rs`.
//!
//! ## Which transport
//!
//! | you need | take |
//! | --- | --- |
//! | a stream of messages from a parent to its children or back, or to a program you exec; several sending processes with small messages | [`pipe`]: nothing to set up; the kernel counts the copies of each end, so a process that dies closes its copy |
//! | the lowest latency between two processes on one machine, one sender and one receiver | [`shm`]: a ring in a sealed memfd, spinning then sleeping on a futex; fixed capacity, messages up to half of it |
//! | messages that outlive the processes (a crash, a reboot with `Durability::Sync`), any number of producers and consumers, at-least-once delivery with leases | [`queue`]: a file under `flock`, checksummed records |
//!
//! ## Features
//!
//! | feature | enables | extra dependencies |
//! | --- | --- | --- |
//! | (none) | the transports: [`pipe`], [`shm`], [`queue`], [`frame`], [`liveness`] | `nix`, `memmap2`, `thiserror`, `crc32c` |
//! | `serde` (default) | [`typed`]: `TypedSender<T>` / `TypedReceiver<T>`, any serde type over any transport | `serde`, `postcard` |
//! | `testing` | test seams: `pipe::fault` (a pipe that misbehaves on schedule), `queue::storage::SimDisk` (a disk that loses power), `queue::StorageQueue` | none |
//! | `harness` | `check`: the fork-based conformance harness, campaigns with JSON reports, Ctrl-C handling, programs under test in any language (`check --exec`), and `conformance_tests!` (implies `testing`) | `proptest`, `serde`, `serde_json`, `signal-hook`, `tempfile`, `toml` |
//! | `fuzz` (default) | the bodies of the cargo-fuzz targets in `fuzz/` (implies `testing`) | `arbitrary` |
//! | `bench` | `bench`: the benchmark workloads (implies `harness`) | `rtrb`, `crossbeam-channel`, `queue-file` |
//! | `cli` (default) | the `ipcprop` binary (implies `harness`, `bench`) | `clap`, `indicatif` |
//! | `peers` | `bench::peers`: the crates users pick instead, for `ipcprop bench --peers` (implies `bench`; its build needs libclang) | `iceoryx2`, `ipc-channel`, `interprocess`, `rusqlite` (bundled SQLite), `yaque` |
//!
//! The default features (`cli`, `fuzz`, `serde`) serve `cargo run` and `cargo test` in the
//! repository. A library user who wants only the transports writes
//! `ipcprop = { version = "0.1", default-features = false }` and adds the features they use.
//!
//! ## Kernel requirements
//!
//! Linux only. The oldest kernel that runs every transport is **3.17**
//! (`memfd_create` and file sealing, for the ring); the pipe channel and the file queue
//! need nothing newer than 2.6.38. Two newer features are used when the kernel has them:
//! `MADV_WIPEONFORK` (4.14; a queue handle notices a fork without calling `getpid`) and
//! `MFD_NOEXEC_SEAL` (6.3; the ring's memfd is not executable). Every call and its version:
//! `docs/DESIGN.md`, section 6.
//!
//! ## Proving a transport
//! With the `harness` feature, a campaign of generated plans runs a transport across real
//! forked processes and checks what arrived:
//! ```
//! # #[cfg(feature = "harness")] {
//! use ipcprop::check::{builtin::PipeTransport, campaign, CampaignConfig};
//!
//! let config = CampaignConfig { cases: 8, seed: 42, ..CampaignConfig::default() };
//! let report = campaign(&PipeTransport::default(), &config, &mut |_| {})?;
//! assert!(report.failure.is_none());
//! # }
//! # Ok::<(), ipcprop::Error>(())
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
// Docs built without some features still mention their items; those links resolve in the
// default and docs.rs builds, where `cargo doc` denies broken links.
#![cfg_attr(
    not(all(feature = "harness", feature = "testing", feature = "serde")),
    allow(rustdoc::broken_intra_doc_links)
)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(all(feature = "bench", not(ipcprop_loom)))]
#[cfg_attr(docsrs, doc(cfg(feature = "bench")))]
pub mod bench;
#[cfg(all(feature = "harness", not(ipcprop_loom)))]
#[cfg_attr(docsrs, doc(cfg(feature = "harness")))]
pub mod check;
mod error;
mod forkgen;
pub mod frame;
#[cfg(all(feature = "fuzz", not(ipcprop_loom)))]
#[doc(hidden)]
pub mod fuzz;
pub mod liveness;
pub mod pipe;
pub mod queue;
pub mod shm;
mod sync;
pub mod transport;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod typed;

pub use error::{DriverError, Error, Result};
pub use transport::{Receiver, Sender, Wait};
