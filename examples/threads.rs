//! The tutorial's threading program, done right: three named threads greet by name and the
//! main thread joins every one of them.
//!
//! What the tutorial got wrong, and this version fixes:
//! 1. It started threads and let the program end without joining them, so greetings were
//!    lost or cut off. We join each handle.
//! 2. It ignored a thread that failed. `join` returns the thread's panic, which we report.
//! 3. Its threads had no names, so its "greeting by name" read a global that raced. Each
//!    thread here is named through `thread::Builder` and reads its own name.
//!
//! Run: `cargo run --example threads`

use std::thread;

/// Runs the scenario, printing to stdout.
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let handles = (1..=3)
        .map(|i| {
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(|| {
                    let me = thread::current();
                    let name = me.name().unwrap_or("unnamed");
                    println!("Hello from {name}");
                    name.len()
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for h in handles {
        let name = h.thread().name().unwrap_or("unnamed").to_string();
        h.join().map_err(|_| format!("{name} panicked"))?;
    }
    println!("main: all 3 threads joined");
    Ok(())
}

#[allow(dead_code)]
fn main() {
    if let Err(e) = run() {
        eprintln!("threads example failed: {e}");
        std::process::exit(1);
    }
}
