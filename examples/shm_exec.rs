//! Handing one end of a shared-memory ring to a program you exec.
//!
//! A ring end is three descriptors (the sealed memfd, the end's liveness pipe, the pipe that
//! watches the peer), all `O_CLOEXEC`. `inherit_in` lets exactly those three survive the
//! exec of one `Command`, in that child only, and returns their numbers as a string to pass
//! along; the program rebuilds its end with `from_inherited`, which maps the memory again
//! (mappings do not survive exec) and checks it before use.
//!
//! This example execs itself in child mode: `shm_exec --child <descriptors>`.
//!
//! Run: `cargo run --example shm_exec`

use std::process::Command;

use ipcprop::shm::{self, RingReceiver};
use ipcprop::{Receiver, Sender};

fn parent() -> Result<(), Box<dyn std::error::Error>> {
    let (mut tx, rx) = shm::channel()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    let fds = rx.inherit_in(&mut cmd)?;
    cmd.arg("--child").arg(&fds);
    let mut child = cmd.spawn()?;
    drop(rx); // the child holds the receiving end now
    for i in 1..=3 {
        tx.send(format!("Message {i}").as_bytes())?;
    }
    drop(tx);
    let status = child.wait()?;
    println!("parent: child exited with {status}");
    if !status.success() {
        return Err("child failed".into());
    }
    Ok(())
}

fn child(fds: &str) -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: the parent made exactly these descriptors inheritable for us and nothing else
    // in this process uses them.
    let mut rx = unsafe { RingReceiver::from_inherited(fds) }?;
    // Ends at the end of the stream; a failure of the stream is an error, not an end.
    for m in rx.iter() {
        println!("child: received {}", String::from_utf8_lossy(&m?));
    }
    println!("child: the sender is gone");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("--child"), Some(fds)) => child(fds),
        (Some("--child"), None) => Err("usage: shm_exec --child <descriptors>".into()),
        _ => parent(),
    };
    if let Err(e) = result {
        eprintln!("shm_exec example failed: {e}");
        std::process::exit(1);
    }
}
