//! A shared-memory ring between processes: variable-length messages, one copy on each side
//! by default (zero-copy for peers you trust), futex wait/wake, peer death detected.
//!
//! [`channel`](fn@channel) creates a sealed `memfd`, maps it `MAP_SHARED`, and returns the two ends.
//! Fork, and each process keeps the end it uses and drops the other; or hand an end to
//! another process as descriptors ([`RingSender::send_over`] over a Unix socket, or
//! [`RingReceiver::inherit_in`] across exec).
//!
//! # What it promises
//! - **One sender, one receiver** (single producer, single consumer), messages from 0 bytes
//!   to [`max_message_len`](crate::Sender::max_message_len) (half the capacity, less 8), in order, intact.
//! - **Sound whatever the peer writes** (the default): each payload is copied between the
//!   ring and a private buffer of the end with atomic word loads and stores.
//!   [`recv_with`](crate::Receiver::recv_with) and [`RingReceiver::recv_many`] lend your
//!   closure that private copy, and [`RingSender::send_with`] a private buffer it then
//!   copies in. So no slice you are lent ever points into shared memory, and a peer writing
//!   the ring at any moment cannot change the bytes under your closure; lending the shared
//!   bytes themselves would make such a write a data race, which is undefined behaviour
//!   in this process under Rust's memory model, not merely wrong bytes.
//!   [`send_batch`](crate::Sender::send_batch) publishes a whole batch with one index store.
//! - **Zero copy, for a peer you trust**: [`RingReceiver::trust_peer`] and
//!   [`RingSender::trust_peer`] (both `unsafe`) lend the ring's memory itself, saving the
//!   copy. Their contract is the trust model: while the end exists, no process writes the
//!   ring's memory outside the protocol (the sender writes a record only before publishing
//!   it, the receiver reads it only after, and nothing else holds the descriptor). The
//!   cost of the copy is measured by the `trusted (zero-copy)` rows of `ipcprop bench`.
//! - **Blocking without spinning forever**: a short spin, then a process-shared futex
//!   wait; a side only issues a wake when the other is asleep. An idle blocked receiver uses
//!   no CPU beyond a liveness check every 20 ms.
//! - **Closure**: the ring closes when the last copy of an end is gone, in whatever process,
//!   whether dropped or killed by SIGKILL; dropping a copy in a process that never used it
//!   changes nothing. The receiver drains what was published, then gets
//!   [`Error::Disconnected`](crate::Error::Disconnected) (within ~20 ms of a SIGKILL, at once after a drop); a sender
//!   gets [`Error::Disconnected`](crate::Error::Disconnected) on its first send that finds the ring full, on every
//!   batch, and at least every 1024 sends, once the receiver is gone.
//! - **Hostile peer**: every index and length read from shared memory is read once,
//!   validated, then used; garbage yields [`Error::Corrupt`](crate::Error::Corrupt), never a panic, an
//!   out-of-bounds access or an endless loop. Every access to shared memory is atomic
//!   (except the payload accesses of trusted ends), so a peer writing at the same time is
//!   no data race.
//! - **Hardened memory**: the memfd is close-on-exec from its creation (and so is every
//!   copy of it the crate makes), mode 0600, and not executable (`MFD_NOEXEC_SEAL`, on
//!   kernels that have it: Linux 6.3 and later).
//!
//! ```
//! use ipcprop::shm;
//! use ipcprop::{Receiver, Sender};
//!
//! let (mut tx, mut rx) = shm::channel()?;
//! tx.send(b"hello")?;
//! tx.send_with(5, |slot| slot.copy_from_slice(b"world"))?; // written, then copied in
//! assert_eq!(rx.recv()?, b"hello");
//! assert_eq!(rx.recv_with(ipcprop::Wait::Forever, |m| m == b"world")?, true);
//! drop(tx);
//! assert!(rx.recv().unwrap_err().is_disconnected());
//! # Ok::<(), ipcprop::Error>(())
//! ```

#[cfg(not(ipcprop_loom))]
mod channel;
mod layout;
#[cfg(not(ipcprop_loom))]
mod region;
pub(crate) mod ring;

/// The loom model of the ring (heap memory, emulated futex): built only under
/// `--cfg ipcprop_loom`, for `tests/loom.rs`.
#[cfg(ipcprop_loom)]
#[doc(hidden)]
pub mod model;

#[cfg(not(ipcprop_loom))]
pub use channel::{channel, channel_with, RingConfig, RingReceiver, RingSender};
pub use layout::{MAX_CAPACITY, MIN_CAPACITY};
