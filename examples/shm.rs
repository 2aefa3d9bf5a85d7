//! The tutorial's shared-memory program, done right: the child writes three messages into
//! shared memory, the parent reads them.
//!
//! What the tutorial got wrong, and this version fixes:
//! 1. Its memory was not shared: a private mapping (`MAP_PRIVATE`, which is what an
//!    anonymous `memmap2::MmapMut` gives) is copied on write after fork, so the child
//!    wrote into its own copy and the parent read zeros. The ring maps a sealed `memfd`
//!    with `MAP_SHARED`.
//! 2. It had no length or boundary: the parent read a fixed number of bytes and got a
//!    message glued to garbage. Each message here is a record with its length.
//! 3. It polled a flag in a busy loop to wait for the child. The receiver here sleeps on a
//!    futex and is woken when a message is published, or sees the child gone.
//!
//! Run: `cargo run --example shm`

use std::io::Write;

use ipcprop::{shm, Receiver, Sender};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

/// Runs the scenario, printing to stdout.
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (mut tx, mut rx) = shm::channel()?;
    std::io::stdout().flush()?;
    // SAFETY: no other thread exists in this program at this point, so the child starts in a
    // consistent state; it sends three messages and `_exit`s.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(rx); // the child only writes
            let mut code = 0;
            for i in 1..=3 {
                if tx.send(format!("Message {i}").as_bytes()).is_err() {
                    code = 1;
                }
            }
            drop(tx); // the parent sees Disconnected once it has read everything
            ipcprop::check::fork::exit_now(code)
        }
        ForkResult::Parent { child } => {
            drop(tx); // the parent only reads
            for m in rx.iter() {
                println!("parent: read {}", String::from_utf8_lossy(&m?));
            }
            println!("parent: the child is done writing");
            match waitpid(child, None)? {
                WaitStatus::Exited(_, 0) => println!("parent: child {child} finished"),
                other => return Err(format!("child ended abnormally: {other:?}").into()),
            }
        }
    }
    Ok(())
}

#[allow(dead_code)]
fn main() {
    if let Err(e) = run() {
        eprintln!("shm example failed: {e}");
        std::process::exit(1);
    }
}
