//! The crates users pick instead of ours, as the same two-process workloads (feature
//! `peers`; `ipcprop bench --peers`, `cargo bench --bench peers --features peers`).
//!
//! Each peer is measured the way its users would use it between two processes, within the
//! same guarantee class as the ipcprop row it is compared with: a busy-polling receiver
//! against a busy-polling receiver, a blocking one against a blocking one; SQLite with
//! `synchronous = FULL` against the queue's `Durability::Sync`, `NORMAL` and `OFF` against
//! `Durability::None`. As everywhere in [`crate::bench`], every receiver reads every byte
//! ([`super::consume`]) and fails the run unless it got exactly what was sent.

pub mod iceoryx;
pub mod interproc;
pub mod ipc_chan;
pub mod sqlite;
pub mod yaq;

/// How a receiver waits when nothing has arrived yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wake {
    /// It polls in a loop, keeping its core busy.
    Poll,
    /// It sleeps until the sender wakes it (an event, a futex, a blocking read).
    Block,
}

/// What the tests of the peers share.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Mutex, MutexGuard};

    use crate::bench::queue::BenchDir;

    /// Held by the tests of the peers with process-wide state that a `pair`'s fork could
    /// catch half made by a test in another thread: SQLite's global mutexes (locked inside
    /// SQLite there, they would stay locked forever in the children), yaque's lazily made
    /// token and the watcher threads of `notify`.
    static SERIAL: Mutex<()> = Mutex::new(());

    pub(crate) fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Under the system's temporary directory: these tests check what the runs deliver,
    /// not their speed, so the disk does not matter.
    pub(crate) fn bench_dir() -> BenchDir {
        BenchDir::new(&std::env::temp_dir()).expect("bench dir")
    }
}
