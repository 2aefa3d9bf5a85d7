//! The tutorial's pipe program, done right: the parent sends "Message 1" to "Message 3"
//! through a pipe, the child prints each as it arrives, and the parent reaps the child.
//!
//! What the tutorial got wrong, and this version fixes:
//! 1. Each process kept both ends open, so the child never saw end of stream and hung. Each
//!    process here drops the end it does not use, and the child stops at `Disconnected`.
//! 2. It wrote raw strings, so two messages could arrive glued together or split. The
//!    channel frames each message (length and checksum), so the child gets them whole.
//! 3. It did not flush before forking and did not reap the child.
//!
//! Run: `cargo run --example pipe`

use std::io::Write;

use ipcprop::{pipe, Receiver, Sender};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

/// Runs the scenario, printing to stdout.
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (mut tx, mut rx) = pipe::channel()?;
    std::io::stdout().flush()?;
    // SAFETY: no other thread exists in this program at this point, so the child starts in a
    // consistent state; it receives, prints, flushes and `_exit`s.
    match unsafe { fork() }? {
        ForkResult::Child => {
            // The child only reads. Its copy of the write end would keep the pipe open, and
            // it would wait for itself forever.
            drop(tx);
            let code = loop {
                match rx.recv() {
                    Ok(msg) => println!("child: received {}", String::from_utf8_lossy(&msg)),
                    Err(e) if e.is_disconnected() => {
                        println!("child: the parent closed the pipe");
                        break 0;
                    }
                    Err(e) => {
                        println!("child: receive failed: {e}");
                        break 1;
                    }
                }
            };
            let code = if std::io::stdout().flush().is_ok() {
                code
            } else {
                1
            };
            ipcprop::check::fork::exit_now(code)
        }
        ForkResult::Parent { child } => {
            drop(rx); // the parent only writes
            for i in 1..=3 {
                tx.send(format!("Message {i}").as_bytes())?;
            }
            drop(tx); // end of stream: the child's receive loop ends
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
        eprintln!("pipe example failed: {e}");
        std::process::exit(1);
    }
}
