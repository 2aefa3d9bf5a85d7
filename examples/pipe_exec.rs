//! Handing one end of a pipe channel to a program you exec.
//!
//! Every descriptor the crate opens is `O_CLOEXEC`, so nothing leaks into programs you
//! start. To pass one end on purpose, `inherit_in` registers that one descriptor with the
//! `Command`: it loses `O_CLOEXEC` in that child only, between fork and exec. The child
//! program rebuilds its end from the number with `PipeReceiver::from_fd`.
//!
//! This example execs itself in child mode: `pipe_exec --child <read fd> <write fd>`. The
//! child reads the messages, and checks that the parent's write end did not leak into it.
//!
//! Run: `cargo run --example pipe_exec`

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;

use ipcprop::pipe::{self, PipeConfig, PipeReceiver};
use ipcprop::{Receiver, Sender};

fn parent() -> Result<(), Box<dyn std::error::Error>> {
    let (mut tx, rx) = pipe::channel()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    let fd = rx.inherit_in(&mut cmd);
    cmd.arg("--child")
        .arg(fd.to_string())
        .arg(tx.as_fd().as_raw_fd().to_string());
    let mut child = cmd.spawn()?;
    drop(rx); // the child has its own copy now
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

fn child(read_fd: RawFd, parent_write_fd: RawFd) -> Result<(), Box<dyn std::error::Error>> {
    // The write end kept O_CLOEXEC, so it must not be open here.
    // SAFETY: the descriptor is only borrowed for one fcntl call that queries it; if the
    // number is not open, fcntl fails with EBADF, which is what we expect.
    let leaked = nix::fcntl::fcntl(
        unsafe { BorrowedFd::borrow_raw(parent_write_fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    );
    if leaked.is_ok() {
        return Err(format!("descriptor {parent_write_fd} leaked across exec").into());
    }
    println!("child: only the read end was inherited");
    // SAFETY: the parent passed us this descriptor on purpose and nothing else in this
    // process uses it, so we may own it.
    let fd = unsafe { OwnedFd::from_raw_fd(read_fd) };
    let mut rx = PipeReceiver::from_fd(fd, PipeConfig::new())?;
    // Ends at the end of the stream; a failure of the stream is an error, not an end.
    for m in rx.iter() {
        println!("child: received {}", String::from_utf8_lossy(&m?));
    }
    println!("child: end of stream");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("--child") => {
            let num = |i: usize| args.get(i).and_then(|s| s.parse::<RawFd>().ok());
            match (num(2), num(3)) {
                (Some(r), Some(w)) => child(r, w),
                _ => Err("usage: pipe_exec --child <read fd> <write fd>".into()),
            }
        }
        _ => parent(),
    };
    if let Err(e) = result {
        eprintln!("pipe_exec example failed: {e}");
        std::process::exit(1);
    }
}
