//! `QueueConfig::with_exclusive`: one handle owns the queue while open. Others wait; the format
//! and crash safety are the shared queue's; misuse (a second handle, a forked child) is a
//! clear error, never a second writer.

mod common;

use std::time::{Duration, Instant};

use ipcprop::check::fork::{ChildEnd, ChildGroup};
use ipcprop::queue::{self, FileQueue, QueueConfig};
use ipcprop::Error;

use common::TempDir;

/// Every test here fails, rather than hangs, past this.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

fn exclusive() -> QueueConfig {
    QueueConfig::new().with_exclusive(true)
}

fn is_misuse(e: &Error, says: &str) -> bool {
    matches!(e, Error::InvalidConfig { what, why } if *what == "QueueConfig::with_exclusive"
        && why.contains(says))
}

#[test]
fn operations_persist_and_a_shared_handle_sees_them_after() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("excl-roundtrip");
        let path = dir.file("q");
        let q = FileQueue::open(&path, exclusive()).unwrap();
        q.push(b"one").unwrap();
        q.push_batch(&[b"two", b"three", b""]).unwrap();
        assert_eq!(q.len().unwrap(), 4);
        assert_eq!(q.peek().unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(q.pop().unwrap().as_deref(), Some(&b"one"[..]));
        let leased = q.take().unwrap().unwrap();
        assert_eq!(leased.message(), b"two");
        q.ack(&leased).unwrap();
        drop(q);
        let shared = FileQueue::open(&path, QueueConfig::new()).unwrap();
        assert_eq!(
            shared.pop_batch(10).unwrap(),
            vec![b"three".to_vec(), Vec::new()]
        );
        shared.push(b"four").unwrap();
        drop(shared);
        let q = FileQueue::open(&path, exclusive()).unwrap();
        assert_eq!(q.pop().unwrap().as_deref(), Some(&b"four"[..]));
        assert_eq!(q.pop().unwrap(), None);
    })
}

#[test]
fn another_process_waits_until_the_exclusive_handle_is_dropped() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("excl-wait");
        let path = dir.file("q");
        let marker = dir.file("pushed");
        let q = FileQueue::open(&path, exclusive()).unwrap();
        q.push(b"owner's").unwrap();
        let mut group = ChildGroup::new();
        group
            .spawn("shared pusher", |_| {
                let other =
                    FileQueue::open(&path, QueueConfig::new()).map_err(|e| e.to_string())?;
                other.push(b"other's").map_err(|e| e.to_string())?;
                std::fs::write(&marker, b"done").map_err(|e| e.to_string())
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !marker.exists(),
            "another process used the queue while it was owned"
        );
        drop(q);
        let r = group.wait(Duration::from_secs(20)).remove(0);
        assert_eq!(r.end, ChildEnd::Returned);
        let shared = FileQueue::open(&path, QueueConfig::new()).unwrap();
        assert_eq!(
            shared.pop_batch(10).unwrap(),
            vec![b"owner's".to_vec(), b"other's".to_vec()]
        );
    })
}

#[test]
fn a_forked_child_gets_an_error_and_the_parent_keeps_the_queue() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("excl-fork");
        let path = dir.file("q");
        let q = FileQueue::open(&path, exclusive()).unwrap();
        q.push(b"before").unwrap();
        let mut group = ChildGroup::new();
        group
            .spawn("child", |_| match q.push(b"from the child") {
                Err(e) if is_misuse(&e, "inherited across fork") => Ok(()),
                other => Err(format!("expected the fork misuse error, got {other:?}")),
            })
            .unwrap();
        let r = group.wait(Duration::from_secs(20)).remove(0);
        assert_eq!(r.end, ChildEnd::Returned);
        assert_eq!(q.pop_batch(10).unwrap(), vec![b"before".to_vec()]);
    })
}

#[test]
fn a_second_handle_is_refused() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("excl-second");
        let path = dir.file("q");
        let q = FileQueue::open(&path, exclusive()).unwrap();
        assert!(is_misuse(&q.open_again().unwrap_err(), "second handle"));
        let err = queue::channel(dir.file("chan"), exclusive()).unwrap_err();
        assert!(is_misuse(&err, "allows one"), "{err}");
    })
}

#[test]
fn sigkill_of_an_exclusive_writer_loses_no_acknowledged_push() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("excl-kill");
        let path = dir.file("q");
        drop(FileQueue::open(&path, QueueConfig::new()).unwrap());
        for round in 0..5u64 {
            let mut group = ChildGroup::new();
            group
                .spawn("writer", |rep| {
                    let q = FileQueue::open(&path, exclusive()).map_err(|e| e.to_string())?;
                    for i in 0u64.. {
                        let m = i.to_le_bytes();
                        if i % 3 == 0 {
                            q.push(&m).map_err(|e| e.to_string())?;
                        } else {
                            q.push_batch(&[&m]).map_err(|e| e.to_string())?;
                        }
                        rep.record(&m);
                    }
                    Ok(())
                })
                .unwrap();
            std::thread::sleep(Duration::from_millis(20 + 13 * round));
            let pid = nix::unistd::Pid::from_raw(group.pids()[0]);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
            let r = group.wait(Duration::from_secs(20)).remove(0);
            assert!(matches!(r.end, ChildEnd::Signaled(_)), "{:?}", r.end);
            let acked = r.records.len() as u64;
            // The kernel released the dead owner's lock: open (exclusive again) and drain.
            let start = Instant::now();
            let q = FileQueue::open(&path, exclusive()).unwrap();
            assert!(start.elapsed() < Duration::from_secs(5));
            let got: Vec<u64> = q
                .pop_batch(usize::MAX)
                .unwrap()
                .into_iter()
                .map(|m| u64::from_le_bytes(m.try_into().unwrap()))
                .collect();
            // Every acknowledged push is there, in order, once; at most one more (sent, not
            // yet acknowledged when the kill landed).
            assert!(
                got.len() as u64 >= acked && got.len() as u64 <= acked + 1,
                "{} vs {acked}",
                got.len()
            );
            assert!(
                got.iter().enumerate().all(|(i, &v)| v == i as u64),
                "{got:?}"
            );
        }
    })
}

/// Descriptors of this process that name `path`.
fn fds_naming(path: &std::path::Path) -> Vec<i32> {
    let mut fds = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        if std::fs::read_link(e.path()).is_ok_and(|t| t == path) {
            fds.extend(e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()));
        }
    }
    fds
}

#[test]
fn a_child_forked_while_an_exclusive_open_waits_for_the_lock_does_not_share_it() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("excl-register");
        let path = std::fs::canonicalize(dir.0.clone()).unwrap().join("q");
        drop(FileQueue::open(&path, QueueConfig::new()).unwrap());
        // Hold the lock through a descriptor of our own, so the exclusive open must wait.
        let holder = std::fs::File::open(&path).unwrap();
        holder.lock().unwrap();
        let holder_fd = std::os::fd::AsRawFd::as_raw_fd(&holder);
        let p = path.clone();
        let opener = std::thread::spawn(move || FileQueue::open(&p, exclusive()));
        // Wait until the opener has its descriptor (it is then waiting in flock).
        let deadline = Instant::now() + Duration::from_secs(10);
        while fds_naming(&path).len() < 2 {
            assert!(
                Instant::now() < deadline,
                "the exclusive open never opened the file"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        // A fork now: the child must not get the waiting handle's descriptor, since the lock
        // the parent is about to take on it would be the child's too.
        let mut group = ChildGroup::new();
        let p = path.clone();
        group
            .spawn("inspector", move |_| {
                let leaked: Vec<i32> = fds_naming(&p)
                    .into_iter()
                    .filter(|&fd| fd != holder_fd)
                    .collect();
                if leaked.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "descriptor(s) {leaked:?} of the waiting exclusive handle"
                    ))
                }
            })
            .unwrap();
        let r = group.wait(Duration::from_secs(20)).remove(0);
        holder.unlock().unwrap();
        drop(holder);
        let q = opener.join().unwrap().unwrap();
        q.push(b"mine").unwrap();
        assert_eq!(r.end, ChildEnd::Returned, "{r:?}");
    })
}
