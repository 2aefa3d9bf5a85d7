//! No descriptor the crate creates leaks into a program another thread starts: while one
//! thread makes and drops every kind of transport in a loop, another spawns a program again
//! and again that lists its own open descriptors. Anything beyond stdin, stdout, stderr and
//! the listing's own directory descriptor was inherited across exec: a descriptor that was
//! not close-on-exec at that instant (issue 11, item 7: the ring's memfd was `dup`ed and
//! only then marked close-on-exec, a window in which 27 of 3,948 children got it).

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipcprop::queue::{self, FileQueue, QueueConfig};
use ipcprop::shm::{self, RingConfig};
use ipcprop::{pipe, Receiver, Sender};

use common::TempDir;

/// The test fails, rather than hangs, past this.
const LIMIT: Duration = Duration::from_secs(120);

/// How many threads make transports meanwhile.
const MAKERS: usize = 8;

/// How many children to start (each lists its descriptors).
const SPAWNS: usize = 3000;

/// The descriptors a child has open beyond 0, 1 and 2 and the directory `ls` reads
/// (`/proc/<pid>/fd` itself), as "number -> target".
fn inherited() -> Vec<String> {
    let out = Command::new("ls")
        .args(["-l", "/proc/self/fd/"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run ls");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            let fd: u32 = left.rsplit(' ').next()?.parse().ok()?;
            let own_dir = target.starts_with("/proc/") && target.ends_with("/fd");
            (fd > 2 && !own_dir).then(|| format!("{fd} -> {target}"))
        })
        .collect()
}

/// Makes and drops a ring (the transport with the most descriptors); every 64th round also
/// makes, uses and drops each of the other transports.
fn churn(dir: &TempDir, i: usize) {
    let (tx, rx) = shm::channel_with(RingConfig::new().with_capacity(4096)).unwrap();
    drop((tx, rx));
    if !i.is_multiple_of(64) {
        return;
    }
    let (mut tx, mut rx) = shm::channel_with(RingConfig::new().with_capacity(4096)).unwrap();
    tx.send(b"ring").unwrap();
    assert_eq!(rx.recv().unwrap(), b"ring");
    drop((tx, rx));
    let (mut tx, mut rx) = pipe::channel().unwrap();
    tx.send(b"pipe").unwrap();
    assert_eq!(rx.recv().unwrap(), b"pipe");
    drop((tx, rx));
    let q = FileQueue::open(dir.file("q"), QueueConfig::new()).unwrap();
    q.push(b"queue").unwrap();
    assert_eq!(q.pop_timeout(Duration::ZERO).unwrap().unwrap(), b"queue");
    drop(q);
    let (mut tx, mut rx) = queue::channel(dir.file("c"), QueueConfig::new()).unwrap();
    tx.send(b"queue channel").unwrap();
    assert_eq!(rx.recv().unwrap(), b"queue channel");
    drop((tx, rx));
    std::fs::remove_file(dir.file("q")).unwrap();
    std::fs::remove_file(dir.file("c")).unwrap();
}

#[test]
fn no_descriptor_leaks_into_a_program_another_thread_execs() {
    common::within(LIMIT, || {
        // What a child inherits when nothing is being made: descriptors this test process
        // was itself started with (by whatever ran it), none of the crate's.
        let baseline = inherited();
        let stop = Arc::new(AtomicBool::new(false));
        // Several makers: a maker preempted between two steps of making a descriptor holds
        // that window open for a whole time slice, as happens in real programs.
        let makers: Vec<_> = (0..MAKERS)
            .map(|m| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let dir = TempDir::new(&format!("cloexec-{m}"));
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        churn(&dir, i);
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        let start = Instant::now();
        let mut leaks = Vec::new();
        let mut children = 0;
        while children < SPAWNS && start.elapsed() < Duration::from_secs(30) {
            let mut got = inherited();
            got.retain(|fd| !baseline.contains(fd));
            children += 1;
            if !got.is_empty() {
                leaks.push(got);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let made: usize = makers
            .into_iter()
            .map(|m| m.join().expect("a maker thread panicked"))
            .sum();
        assert!(made > 0, "the maker threads made nothing");
        assert!(
            leaks.is_empty(),
            "{} of {children} children inherited descriptors (while {made} rounds of \
             transports were made), e.g. {:?}",
            leaks.len(),
            leaks.first()
        );
        eprintln!("{children} children, {made} rounds of transports: nothing inherited");
    })
}
