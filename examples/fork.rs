//! The tutorial's first program, done right: the parent forks, both processes report their
//! pids, and the parent reaps the child.
//!
//! What the tutorial got wrong, and this version fixes:
//! 1. It printed before `fork` without flushing, so the buffered text was copied into the
//!    child and printed twice. We flush before forking.
//! 2. Its child fell through into the parent's code after its work. Ours leaves with
//!    `_exit`, which runs no destructor and flushes nothing of the parent's state.
//! 3. It never waited for the child, leaving a zombie. We reap it and report how it ended.
//!
//! Run: `cargo run --example fork`

use std::io::Write;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, getpid, getppid, ForkResult};

/// Runs the scenario, printing to stdout.
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    println!("parent: my pid is {}", getpid());
    // Whatever sits in stdout's buffer at fork time would be printed by both processes.
    std::io::stdout().flush()?;
    // SAFETY: no other thread exists in this program at this point, so the child starts in a
    // consistent state and may run ordinary code; it prints, flushes and `_exit`s.
    match unsafe { fork() }? {
        ForkResult::Child => {
            println!(
                "child: my pid is {}, my parent's is {}",
                getpid(),
                getppid()
            );
            let code = if std::io::stdout().flush().is_ok() {
                0
            } else {
                1
            };
            ipcprop::check::fork::exit_now(code)
        }
        ForkResult::Parent { child } => match waitpid(child, None)? {
            WaitStatus::Exited(pid, code) => {
                println!("parent: child {pid} exited with code {code}");
                if code != 0 {
                    return Err(format!("child failed with code {code}").into());
                }
            }
            other => return Err(format!("child ended abnormally: {other:?}").into()),
        },
    }
    Ok(())
}

#[allow(dead_code)]
fn main() {
    if let Err(e) = run() {
        eprintln!("fork example failed: {e}");
        std::process::exit(1);
    }
}
