//! The file queue through its public API: operations, persistence, recovery from torn and
//! truncated files, space reclamation, waiting, and the flock traps (see the module docs of `ipcprop::queue`).

mod common;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipcprop::check::fork::{ChildEnd, ChildGroup};
use ipcprop::queue::{Durability, FileQueue, QueueConfig};
use ipcprop::Error;

use common::TempDir;

/// Every test here fails, rather than hangs, past this.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

fn open(path: &Path) -> FileQueue {
    FileQueue::open(path, QueueConfig::new()).unwrap()
}

fn msg(i: u32, len: usize) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.resize(len.max(4), (i % 251) as u8);
    v.truncate(len.max(4));
    v
}

#[test]
fn fifo_batches_peek_len_and_empty() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("fifo");
        let q = open(&dir.file("q"));
        assert_eq!(q.pop().unwrap(), None);
        assert!(q.is_empty().unwrap());
        q.push(b"").unwrap();
        q.push_batch(&[b"a", b"bb", b"ccc"]).unwrap();
        assert_eq!(q.len().unwrap(), 4);
        assert_eq!(q.peek().unwrap(), Some(vec![]));
        assert_eq!(q.pop().unwrap(), Some(vec![]));
        assert_eq!(q.pop_batch(2).unwrap(), vec![b"a".to_vec(), b"bb".to_vec()]);
        assert_eq!(q.pop_batch(10).unwrap(), vec![b"ccc".to_vec()]);
        assert_eq!(q.pop().unwrap(), None);
    })
}

#[test]
fn the_file_is_private_and_survives_reopening() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("persist");
        let path = dir.file("q");
        {
            let q = open(&path);
            for i in 0..100 {
                q.push(&msg(i, 10 + i as usize)).unwrap();
            }
            q.pop().unwrap();
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let q = open(&path);
        assert_eq!(q.len().unwrap(), 99);
        for i in 1..100 {
            assert_eq!(q.pop().unwrap(), Some(msg(i, 10 + i as usize)));
        }
    })
}

#[test]
fn oversized_messages_are_refused_and_nothing_is_written() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("max");
        let q =
            FileQueue::open(dir.file("q"), QueueConfig::new().with_max_message_len(100)).unwrap();
        q.push(&[0; 100]).unwrap();
        let err = q.push_batch(&[b"ok", &[0; 101]]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MessageTooLarge {
                    len: 101,
                    max: 100,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(q.len().unwrap(), 1);
    })
}

#[test]
fn a_file_that_is_not_a_queue_is_refused() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("foreign");
        let path = dir.file("q");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let err = FileQueue::open(&path, QueueConfig::new()).unwrap_err();
        assert!(
            err.to_string().contains("both header slots are invalid"),
            "{err}"
        );
        std::fs::write(&path, b"short").unwrap();
        let err = FileQueue::open(&path, QueueConfig::new()).unwrap_err();
        assert!(err.to_string().contains("shorter than"), "{err}");
    })
}

#[test]
fn a_torn_or_garbage_tail_is_not_delivered_and_is_overwritten() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("torn");
        let path = dir.file("q");
        let q = open(&path);
        for i in 0..10 {
            q.push(&msg(i, 50)).unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        // A record cut short: header and half a payload, as a writer killed mid-write leaves.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut torn = vec![0u8; 40];
        torn[..4].copy_from_slice(&200u32.to_le_bytes());
        torn[8..16].copy_from_slice(&10u64.to_le_bytes());
        f.write_all_at(&torn, len).unwrap();
        assert_eq!(q.len().unwrap(), 10, "the torn record is not a message");
        q.push(&msg(10, 50)).unwrap();
        // Garbage appended after the last record.
        let len = std::fs::metadata(&path).unwrap().len();
        f.write_all_at(&[0xff; 100], len).unwrap();
        let q2 = open(&path);
        assert_eq!(q2.len().unwrap(), 11);
        for i in 0..11 {
            assert_eq!(q2.pop().unwrap(), Some(msg(i, 50)));
        }
        assert_eq!(q2.pop().unwrap(), None);
    })
}

#[test]
fn a_torn_header_slot_falls_back_to_the_other() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("slot");
        let path = dir.file("q");
        let q = open(&path);
        for i in 0..5 {
            q.push(&msg(i, 20)).unwrap();
        }
        q.pop().unwrap(); // generation 2 goes to slot B (offset 4096)
        q.pop().unwrap(); // generation 3 to slot A
        drop(q);
        // Tear slot A (the newest): its checksum fails, slot B (generation 2) wins.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xaa; 20], 20).unwrap();
        let q = open(&path);
        // The pop whose header write was torn was never acknowledged: its message is back.
        assert_eq!(q.len().unwrap(), 4);
        assert_eq!(q.pop().unwrap(), Some(msg(1, 20)));
    })
}

#[test]
fn a_file_truncated_anywhere_recovers_to_a_valid_prefix() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("trunc");
        let path = dir.file("q");
        let q = open(&path);
        let msgs: Vec<Vec<u8>> = (0..30)
            .map(|i| msg(i, 1 + (i as usize * 37) % 300))
            .collect();
        for m in &msgs {
            q.push(m).unwrap();
        }
        drop(q);
        let full = std::fs::read(&path).unwrap();
        for cut in (8192..full.len()).step_by(7) {
            std::fs::write(&path, &full[..cut]).unwrap();
            let q = open(&path);
            let got = q.pop_batch(100).unwrap();
            assert!(got.len() <= msgs.len());
            assert_eq!(&got[..], &msgs[..got.len()], "cut at {cut}");
        }
        // Cut before the second header slot is whole: not a queue any more, said so.
        for cut in [1usize, 100, 4096, 4100, 4159] {
            std::fs::write(&path, &full[..cut]).unwrap();
            let err = FileQueue::open(&path, QueueConfig::new()).unwrap_err();
            assert!(
                err.to_string().contains("shorter than"),
                "cut at {cut}: {err}"
            );
        }
        // Cut to nothing: an empty file is a new queue (as a temporary file just made is).
        std::fs::write(&path, b"").unwrap();
        let q = open(&path);
        assert_eq!(q.len().unwrap(), 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192, "initialized");
        drop(q);
        // Cut after the slots but before the records: the longest valid prefix is empty.
        for cut in [4160usize, 8191] {
            std::fs::write(&path, &full[..cut]).unwrap();
            let q = open(&path);
            assert_eq!(q.len().unwrap(), 0, "cut at {cut}");
        }
    })
}

#[test]
fn a_drained_queue_gives_its_space_back_and_a_lagging_one_compacts() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("space");
        let path = dir.file("q");
        let q = open(&path);
        for i in 0..1000 {
            q.push(&msg(i, 1000)).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() > 1_000_000);
        while q.pop().unwrap().is_some() {}
        // Drained: what is left is at most the reclaim threshold (256 KiB by default).
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= 8192 + 256 * 1024, "drained, yet {size} bytes");
        // With a threshold of 0, a drained queue is back to its bare header.
        let tight = FileQueue::open(&path, QueueConfig::new().with_reclaim_over(0)).unwrap();
        tight.push(b"one").unwrap();
        tight.pop().unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            8192,
            "drained: back to the header"
        );
        // Keep a backlog while consuming far past it: the file must not grow without bound.
        for i in 0..200 {
            q.push(&msg(i, 1000)).unwrap();
        }
        for i in 200..5000 {
            q.push(&msg(i, 1000)).unwrap();
            assert_eq!(q.pop().unwrap(), Some(msg(i - 200, 1000)));
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(
            size < 3_000_000,
            "file grew to {size} bytes with a 200 KiB backlog"
        );
        assert_eq!(q.len().unwrap(), 200);
        for i in 4800..5000 {
            assert_eq!(q.pop().unwrap(), Some(msg(i, 1000)));
        }
    })
}

#[test]
fn sync_durability_works_the_same() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("sync");
        let q = FileQueue::open(
            dir.file("q"),
            QueueConfig::new().with_durability(Durability::Sync),
        )
        .unwrap();
        q.push_batch(&[b"x", b"y"]).unwrap();
        assert_eq!(q.pop_batch(5).unwrap(), vec![b"x".to_vec(), b"y".to_vec()]);
    })
}

#[test]
fn pop_timeout_waits_for_another_process_without_spinning() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("wait");
        let path = dir.file("q");
        let q = open(&path);
        let start = Instant::now();
        assert_eq!(q.pop_timeout(Duration::from_millis(50)).unwrap(), None);
        assert!(start.elapsed() >= Duration::from_millis(50));
        let mut group = ChildGroup::new();
        group
            .spawn("late producer", |_| {
                std::thread::sleep(Duration::from_millis(300));
                let q = FileQueue::open(&path, QueueConfig::new()).map_err(|e| e.to_string())?;
                q.push(b"worth the wait").map_err(|e| e.to_string())
            })
            .unwrap();
        let cpu_before =
            nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).unwrap();
        let got = q.pop_timeout(Duration::from_secs(30)).unwrap();
        let cpu_after =
            nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).unwrap();
        assert_eq!(got, Some(b"worth the wait".to_vec()));
        let used = (cpu_after.user_time() - cpu_before.user_time())
            + (cpu_after.system_time() - cpu_before.system_time());
        let used_us = used.tv_sec() * 1_000_000 + used.tv_usec();
        // A 300 ms busy wait would use ~300 ms of CPU; sleeping on inotify uses almost none.
        assert!(used_us < 50_000, "waiting used {used_us} us of CPU");
        assert_eq!(
            group.wait(Duration::from_secs(30))[0].end,
            ChildEnd::Returned
        );
    })
}

/// Trap: a handle opened before fork shares its open file description (and so its flock)
/// with the child. Both sides pushing at once must still give one consistent FIFO.
#[test]
fn a_handle_opened_before_fork_is_safe_on_both_sides() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("forktrap");
        let q = open(&dir.file("q"));
        let mut group = ChildGroup::new();
        group
            .spawn("child producer", |_| {
                for i in 0..2000 {
                    q.push(&msg(1_000_000 + i, 40)).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .unwrap();
        for i in 0..2000 {
            q.push(&msg(i, 40)).unwrap();
        }
        assert_eq!(
            group.wait(Duration::from_secs(60))[0].end,
            ChildEnd::Returned
        );
        let all = q.pop_batch(10_000).unwrap();
        assert_eq!(all.len(), 4000, "messages lost or duplicated");
        let (mine, theirs): (Vec<_>, Vec<_>) = all
            .iter()
            .partition(|m| u32::from_le_bytes(m[..4].try_into().unwrap()) < 1_000_000);
        assert_eq!(
            mine,
            (0..2000)
                .map(|i| msg(i, 40))
                .collect::<Vec<_>>()
                .iter()
                .collect::<Vec<_>>()
        );
        assert_eq!(theirs.len(), 2000);
    })
}

/// Trap: threads sharing one handle share its open file description: flock alone would not
/// exclude them. The handle's mutex must.
#[test]
fn threads_sharing_a_handle_and_several_handles_in_one_process() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("threads");
        let path = dir.file("q");
        let shared = Arc::new(open(&path));
        let mut handles = Vec::new();
        for t in 0..4u32 {
            let q = shared.clone();
            handles.push(std::thread::spawn(move || {
                for i in 0..500 {
                    q.push(&msg(t * 10_000 + i, 30)).unwrap();
                }
            }));
        }
        for t in 4..6u32 {
            let path = path.clone();
            handles.push(std::thread::spawn(move || {
                let q = open(&path); // its own handle
                for i in 0..500 {
                    q.push(&msg(t * 10_000 + i, 30)).unwrap();
                }
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
        let all = shared.pop_batch(100_000).unwrap();
        assert_eq!(all.len(), 3000);
        for t in 0..6u32 {
            let seq: Vec<u32> = all
                .iter()
                .map(|m| u32::from_le_bytes(m[..4].try_into().unwrap()))
                .filter(|v| v / 10_000 == t)
                .collect();
            assert_eq!(
                seq,
                (0..500).map(|i| t * 10_000 + i).collect::<Vec<_>>(),
                "thread {t}"
            );
        }
    })
}

/// Trap: a holder that dies mid-update releases the lock but leaves its half-written record.
/// The next holder must re-validate, not trust what it knew.
#[test]
fn a_holder_killed_mid_update_leaves_nothing_half_delivered() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("killed");
        let path = dir.file("q");
        let q = open(&path);
        q.push(b"before").unwrap();
        assert_eq!(q.len().unwrap(), 1); // this handle now caches the tail
        let mut group = ChildGroup::new();
        group
            .spawn("dies holding the lock", |_| {
                // A committed push the parent's handle has not seen: it must not be overwritten.
                let q = FileQueue::open(&path, QueueConfig::new()).map_err(|e| e.to_string())?;
                q.push(b"from the child").map_err(|e| e.to_string())?;
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| e.to_string())?;
                f.lock().map_err(|e| e.to_string())?;
                let len = f.metadata().map_err(|e| e.to_string())?.len();
                // The first half of a record for sequence 2, then death with the lock held.
                let mut half = vec![0u8; 24];
                half[..4].copy_from_slice(&100u32.to_le_bytes());
                half[8..16].copy_from_slice(&2u64.to_le_bytes());
                f.write_all_at(&half, len).map_err(|e| e.to_string())?;
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                Ok(())
            })
            .unwrap();
        assert_eq!(
            group.wait(Duration::from_secs(30))[0].end,
            ChildEnd::Signaled("SIGKILL".into())
        );
        assert_eq!(
            q.len().unwrap(),
            2,
            "the child's push is seen, its torn record is not"
        );
        q.push(b"after").unwrap();
        assert_eq!(
            q.pop_batch(10).unwrap(),
            vec![
                b"before".to_vec(),
                b"from the child".to_vec(),
                b"after".to_vec()
            ]
        );
    })
}

/// A process stopped (or slow) inside a push holds the queue's lock: a pop with a timeout,
/// and a channel receive with one, give up at their deadline instead of waiting for it
/// (found by the battery's `stopped_sender_mid_message`: the receiver waited until the
/// stopped sender went on).
#[test]
fn a_pop_with_a_timeout_does_not_wait_past_it_for_a_held_lock() {
    common::within(Duration::from_secs(20), move || {
        let dir = TempDir::new("held-lock");
        let q = open(&dir.file("q"));
        q.push(b"behind the lock").unwrap();
        let holder = std::fs::File::open(dir.file("q")).unwrap();
        holder.lock().unwrap();
        let start = Instant::now();
        assert_eq!(q.pop_timeout(Duration::from_millis(30)).unwrap(), None);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(30), "gave up after {took:?}");
        let (_tx, mut rx) = ipcprop::queue::channel(dir.file("c"), QueueConfig::new()).unwrap();
        let c = std::fs::File::open(dir.file("c")).unwrap();
        c.lock().unwrap();
        use ipcprop::Receiver;
        assert!(matches!(rx.try_recv(), Err(Error::Empty)));
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(30)),
            Err(Error::Timeout(_))
        ));
        drop(c);
        holder.unlock().unwrap();
        assert_eq!(
            q.pop_timeout(Duration::from_millis(30)).unwrap().as_deref(),
            Some(&b"behind the lock"[..])
        );
    });
}
