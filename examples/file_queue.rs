//! The tutorial's file-based message queue, done right: the child pushes three messages,
//! the parent pops them, both under the file lock.
//!
//! What the tutorial got wrong, and this version fixes:
//! 1. It opened the file before forking and locked it in both processes. An `flock` belongs
//!    to the open file description, which fork shares, so the two "locks" excluded nothing.
//!    A `FileQueue` notices it is in a new process and reopens its own description.
//! 2. It appended lines and rewrote the file to remove the first: a crash in between lost
//!    or duplicated messages, and a message containing a newline became two. Records here
//!    carry their length, sequence number and checksum; the consumer's position lives in
//!    two checksummed header slots.
//! 3. It polled the file in a sleep loop. `pop_timeout` sleeps on inotify.
//!
//! Run: `cargo run --example file_queue`

use std::io::Write;
use std::time::Duration;

use ipcprop::queue::{FileQueue, QueueConfig};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

/// Runs the scenario in a temporary directory, printing to stdout.
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("ipcprop-file-queue-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = exchange(&dir.join("messages.q"));
    std::fs::remove_dir_all(&dir)?;
    result
}

fn exchange(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    // Opened before the fork on purpose: the handle copes (it reopens in the child).
    let q = FileQueue::open(path, QueueConfig::new())?;
    std::io::stdout().flush()?;
    // SAFETY: no other thread exists in this program at this point, so the child starts in a
    // consistent state; it pushes three messages and `_exit`s.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let mut code = 0;
            for i in 1..=3 {
                if q.push(format!("Message {i}").as_bytes()).is_err() {
                    code = 1;
                }
            }
            ipcprop::check::fork::exit_now(code)
        }
        ForkResult::Parent { child } => {
            for _ in 0..3 {
                match q.pop_timeout(Duration::from_secs(30))? {
                    Some(m) => println!("parent: popped {}", String::from_utf8_lossy(&m)),
                    None => return Err("no message within 30 s".into()),
                }
            }
            match waitpid(child, None)? {
                WaitStatus::Exited(_, 0) => println!(
                    "parent: child {child} finished; queue now holds {}",
                    q.len()?
                ),
                other => return Err(format!("child ended abnormally: {other:?}").into()),
            }
        }
    }
    Ok(())
}

#[allow(dead_code)]
fn main() {
    if let Err(e) = run() {
        eprintln!("file_queue example failed: {e}");
        std::process::exit(1);
    }
}
