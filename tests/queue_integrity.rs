//! No committed message is lost, resurrected or reordered without an error: the cases a new
//! user found by reading `docs/FORMAT.md` and damaging files (issue 11), each pinned. Files
//! are read and made by hand here from the document (`slot`, `record` below), not with the
//! crate's own encoder.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use ipcprop::queue::storage::{SimDisk, Storage};
use ipcprop::queue::{FileQueue, QueueConfig, Recovery, SlotName, StorageQueue};
use ipcprop::Error;

use common::TempDir;

/// Every test here fails, rather than hangs, past this.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

const PAGE: u64 = 4096;
const DATA: u64 = 8192;

/// A header slot, per docs/FORMAT.md section 3.
fn slot(
    version: u32,
    generation: u64,
    head_offset: u64,
    head_seq: u64,
    leases: &[(u64, u32, u32)],
) -> Vec<u8> {
    let mut b = vec![0u8; 64 + 16 * leases.len()];
    b[0..8].copy_from_slice(b"ipcpqueu");
    b[12..16].copy_from_slice(&version.to_le_bytes());
    b[16..20].copy_from_slice(&(leases.len() as u32).to_le_bytes());
    b[24..32].copy_from_slice(&generation.to_le_bytes());
    b[40..48].copy_from_slice(&head_offset.to_le_bytes());
    b[48..56].copy_from_slice(&head_seq.to_le_bytes());
    for (i, (seq, holder, state)) in leases.iter().enumerate() {
        let e = 64 + 16 * i;
        b[e..e + 8].copy_from_slice(&seq.to_le_bytes());
        b[e + 8..e + 12].copy_from_slice(&holder.to_le_bytes());
        b[e + 12..e + 16].copy_from_slice(&state.to_le_bytes());
    }
    reseal(&mut b);
    b
}

/// Recomputes a slot's checksum (bytes 8..12, over 12 .. 64 + 16 * lease_count).
fn reseal(b: &mut [u8]) {
    let n = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
    let crc = crc32c::crc32c(&b[12..64 + 16 * n]);
    b[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Record sizes, per the document: `(24 + len + 7) & !7`.
fn size(len: usize) -> u64 {
    ((24 + len + 7) & !7) as u64
}

fn open(path: &Path) -> FileQueue {
    FileQueue::open(path, QueueConfig::new()).unwrap()
}

fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, off)
        .unwrap();
    b
}

fn write_at(path: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn flip(path: &Path, off: u64) {
    let b = read_at(path, off, 1);
    write_at(path, off, &[b[0] ^ 0x10]);
}

fn corrupt(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::Corrupt(why)) => why,
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// 1. A handle's maximum is its own, never the file's.
// ---------------------------------------------------------------------------------------

#[test]
fn a_handle_with_a_smaller_maximum_leaves_longer_messages_alone() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("maxlen");
        let path = dir.file("q");
        let big = vec![0x5a; 64 * 1024];
        let a = open(&path);
        a.push(&big).unwrap();
        a.push(b"after").unwrap();
        let b = FileQueue::open(&path, QueueConfig::new().with_max_message_len(4096)).unwrap();
        assert_eq!(
            b.len().unwrap(),
            2,
            "the long record is a message, not the end"
        );
        b.push(b"small").unwrap();
        // B will not read what it does not accept, and consumes nothing.
        for _ in 0..2 {
            match b.pop() {
                Err(Error::MessageTooLarge { len, max, .. }) => {
                    assert_eq!((len, max), (65536, 4096))
                }
                other => panic!("expected MessageTooLarge, got {other:?}"),
            }
        }
        assert!(matches!(b.peek(), Err(Error::MessageTooLarge { .. })));
        assert!(matches!(b.take(), Err(Error::MessageTooLarge { .. })));
        assert_eq!(b.len().unwrap(), 3);
        // A reads everything, in order, the long message intact.
        assert_eq!(a.pop().unwrap(), Some(big.clone()));
        // Now the head is something B accepts: a batch stops before a long one.
        a.push(&big).unwrap();
        assert_eq!(
            b.pop_batch(10).unwrap(),
            vec![b"after".to_vec(), b"small".to_vec()]
        );
        assert!(matches!(b.pop(), Err(Error::MessageTooLarge { .. })));
        drop((a, b));
        // And a reopened handle with the default maximum finds it.
        assert_eq!(open(&path).pop_batch(10).unwrap(), vec![big]);
    })
}

#[test]
fn a_message_of_exactly_the_maximum_and_one_over_a_read_chunk_survive_a_reopen() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("exact-max");
        let path = dir.file("q");
        let cfg = QueueConfig::new().with_max_message_len(1000);
        let q = FileQueue::open(&path, cfg).unwrap();
        let exact: Vec<u8> = (0..1000).map(|i| i as u8).collect();
        q.push(&exact).unwrap();
        assert!(matches!(
            q.push(&[0; 1001]),
            Err(Error::MessageTooLarge {
                len: 1001,
                max: 1000,
                ..
            })
        ));
        drop(q);
        let q = FileQueue::open(&path, cfg).unwrap();
        assert_eq!(q.pop().unwrap(), Some(exact));
        // Records longer than the 64 KiB read chunk, alone and between small ones, with odd
        // lengths (padding) and through a reopen.
        let sizes = [65_536 - 24, 65_536 - 23, 65_536, 200_001, 3, 70_000];
        let msgs: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 7 + j * 13) as u8).collect())
            .collect();
        let q = open(&path);
        for m in &msgs {
            q.push(m).unwrap();
        }
        drop(q);
        let q = open(&path);
        assert_eq!(q.len().unwrap(), msgs.len() as u64);
        assert_eq!(q.pop_batch(100).unwrap(), msgs);
    })
}

// ---------------------------------------------------------------------------------------
// 2. Damage in the middle is Corrupt; a torn tail is cut off and reported.
// ---------------------------------------------------------------------------------------

/// Three single pushes of 8-byte messages: records at 8192, 8224, 8256.
fn three_records(path: &Path) {
    let q = open(path);
    for m in [b"message0", b"message1", b"message2"] {
        q.push(m).unwrap();
    }
}

#[test]
fn a_flipped_bit_in_the_middle_is_corrupt_and_nothing_is_overwritten() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("mid-damage");
        let path = dir.file("q");
        three_records(&path);
        let rec = size(8);
        // Any bit of the second record: its CRC, length, sequence, batch index, head gap or
        // payload.
        for (field, at) in [
            ("crc", 0),
            ("len", 4),
            ("seq", 8),
            ("batch", 16),
            ("gap", 20),
            ("payload", 27),
        ] {
            let copy = dir.file(&format!("copy-{field}"));
            std::fs::copy(&path, &copy).unwrap();
            flip(&copy, DATA + rec + at);
            let before = std::fs::read(&copy).unwrap();
            let why = corrupt(FileQueue::open(&copy, QueueConfig::new()));
            assert!(
                why.contains(&format!("offset {}", DATA + rec))
                    && why.contains("message 1")
                    && why.contains("message 2"),
                "{field}: {why}"
            );
            assert_eq!(
                std::fs::read(&copy).unwrap(),
                before,
                "{field}: the file was written"
            );
        }
        // A handle that was open before the damage never writes over it: a push lands after
        // the records it knows (it does not re-read those), and a pop that reaches the damaged
        // record refuses, consuming nothing; a new handle refuses at once.
        let q = open(&path);
        flip(&path, DATA + rec + 27);
        let before = std::fs::read(&path).unwrap();
        q.push(b"messageX").unwrap();
        let after = std::fs::read(&path).unwrap();
        assert_eq!(&after[..before.len()], &before[..], "written over");
        assert_eq!(q.pop().unwrap().as_deref(), Some(&b"message0"[..]));
        let why = corrupt(q.pop());
        assert!(why.contains("checksum"), "{why}");
        corrupt(q.pop_batch(10));
        corrupt(FileQueue::open(&path, QueueConfig::new()));
    })
}

#[test]
fn damage_in_an_earlier_batch_is_corrupt_but_a_hole_in_the_last_write_is_a_torn_tail() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("batches");
        let path = dir.file("q");
        let q = open(&path);
        q.push_batch(&[b"a0", b"a1", b"a2"]).unwrap();
        q.push_batch(&[b"b0", b"b1", b"b2"]).unwrap();
        drop(q);
        let rec = size(2); // 32
                           // Damage to the first batch, a later batch behind it: committed messages lost.
        let copy = dir.file("first");
        std::fs::copy(&path, &copy).unwrap();
        flip(&copy, DATA + rec + 25);
        corrupt(FileQueue::open(&copy, QueueConfig::new()));
        // A hole in the last write (power failed: a later page of the write landed, an earlier
        // one did not): only records of that same write follow. That write was never
        // acknowledged: cut off, reported.
        let copy = dir.file("last");
        std::fs::copy(&path, &copy).unwrap();
        write_at(&copy, DATA + 3 * rec, &[0; 32]);
        let q = open(&copy);
        assert_eq!(
            q.recoveries(),
            vec![Recovery::TornTail {
                offset: DATA + 3 * rec,
                bytes: 3 * rec,
                next_seq: 3
            }]
        );
        assert_eq!(
            std::fs::metadata(&copy).unwrap().len(),
            DATA + 3 * rec,
            "cut at the tail"
        );
        q.push(b"c0").unwrap();
        assert_eq!(
            q.pop_batch(10).unwrap(),
            vec![
                b"a0".to_vec(),
                b"a1".to_vec(),
                b"a2".to_vec(),
                b"c0".to_vec()
            ]
        );
    })
}

#[test]
fn a_flipped_payload_byte_of_an_intact_record_is_never_delivered() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("payload");
        let path = dir.file("q");
        let q = open(&path);
        q.push(b"only one").unwrap();
        drop(q);
        flip(&path, DATA + 24 + 3);
        // The last record of the last write, damaged, looks like a torn write: cut off and
        // reported, never delivered.
        let q = open(&path);
        assert_eq!(q.pop().unwrap(), None);
        assert!(matches!(
            q.recoveries()[..],
            [Recovery::TornTail { offset: DATA, .. }]
        ));
    })
}

#[test]
fn a_torn_tail_is_cut_off_reported_and_written_over() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("torn");
        let path = dir.file("q");
        let q = open(&path);
        q.push(b"kept").unwrap();
        let end = DATA + size(4);
        // A writer killed mid-write: a record header and part of its payload.
        let mut torn = vec![0u8; 24 + 10];
        torn[4..8].copy_from_slice(&100u32.to_le_bytes());
        torn[8..16].copy_from_slice(&1u64.to_le_bytes());
        write_at(&path, end, &torn);
        assert_eq!(q.len().unwrap(), 1);
        assert_eq!(
            q.recoveries(),
            vec![Recovery::TornTail {
                offset: end,
                bytes: 34,
                next_seq: 1
            }]
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
        q.push(b"next").unwrap();
        assert_eq!(
            q.pop_batch(5).unwrap(),
            vec![b"kept".to_vec(), b"next".to_vec()]
        );
        assert_eq!(
            q.recoveries().len(),
            1,
            "a clean file is not reported again"
        );
    })
}

// ---------------------------------------------------------------------------------------
// 3. A lost header slot: reported, and no acknowledged pop repeated where records prove it.
// ---------------------------------------------------------------------------------------

#[test]
fn a_damaged_current_slot_is_reported_with_what_may_repeat() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("slot");
        let path = dir.file("q");
        let q = open(&path);
        q.push_batch(&[b"a", b"b"]).unwrap();
        assert_eq!(q.pop().unwrap().as_deref(), Some(&b"a"[..])); // generation 2, slot B
        drop(q);
        flip(&path, PAGE + 30); // slot B's generation field
        let q = open(&path);
        // Nothing pushed after the pop proves it happened: "a" may come again, and says so.
        assert_eq!(
            q.recoveries(),
            vec![Recovery::HeaderFallback {
                damaged: SlotName::B,
                reason: q
                    .recoveries()
                    .iter()
                    .find_map(|r| match r {
                        Recovery::HeaderFallback { reason, .. } => Some(reason.clone()),
                        _ => None,
                    })
                    .unwrap(),
                used_generation: 1,
                proven_newer: false,
                advanced: 0,
                may_repeat_at_most: 2,
            }]
        );
        assert_eq!(q.pop_batch(5).unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        // The slot was rewritten: a later opener finds a clean file.
        drop(q);
        let q = open(&path);
        assert!(q.recoveries().is_empty());
    })
}

#[test]
fn a_push_after_the_lost_pop_proves_it_and_nothing_repeats() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("slot-proof");
        let path = dir.file("q");
        let q = open(&path);
        q.push_batch(&[b"a", b"b"]).unwrap();
        assert_eq!(q.pop().unwrap().as_deref(), Some(&b"a"[..])); // slot B, generation 2
        q.push(b"c").unwrap(); // written when the head was 1
        drop(q);
        write_at(&path, PAGE, &[0; 64]); // slot B lost
        let q = open(&path);
        match &q.recoveries()[..] {
            [Recovery::HeaderFallback {
                damaged: SlotName::B,
                proven_newer: true,
                advanced: 1,
                may_repeat_at_most: 2,
                used_generation: 1,
                ..
            }] => {}
            other => panic!("unexpected recoveries: {other:?}"),
        }
        assert_eq!(q.pop_batch(5).unwrap(), vec![b"b".to_vec(), b"c".to_vec()]);
    })
}

#[test]
fn a_damaged_older_slot_costs_nothing_but_is_reported() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("slot-old");
        let path = dir.file("q");
        let q = open(&path);
        q.push_batch(&[b"a", b"b"]).unwrap();
        q.pop().unwrap(); // generation 2 in B; A (generation 1) is the older
        drop(q);
        flip(&path, 20);
        let q = open(&path);
        assert!(matches!(
            q.recoveries()[..],
            [Recovery::HeaderFallback {
                damaged: SlotName::A,
                used_generation: 2,
                advanced: 0,
                ..
            }]
        ));
        assert_eq!(q.pop_batch(5).unwrap(), vec![b"b".to_vec()]);
    })
}

#[test]
fn slots_with_out_of_order_or_unknown_lease_entries_are_unusable() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("bad-leases");
        let path = dir.file("q");
        let q = open(&path);
        q.push_batch(&[b"a", b"b", b"c"]).unwrap();
        drop(q);
        // A newer slot B, CRC-valid, whose lease entries are not increasing: unusable, so A
        // (generation 1, nothing consumed) is used.
        for (name, leases) in [
            ("order", vec![(2u64, 0u32, 2u32), (1, 0, 2)]),
            ("state", vec![(1, 0, 3)]),
            ("below head", vec![(0, 0, 2)]),
        ] {
            let copy = dir.file(name);
            std::fs::copy(&path, &copy).unwrap();
            let head = if name == "below head" {
                DATA + size(1)
            } else {
                DATA
            };
            let seq = if name == "below head" { 1 } else { 0 };
            write_at(&copy, PAGE, &slot(2, 5, head, seq, &leases));
            let q = open(&copy);
            assert!(
                matches!(
                    q.recoveries()[..],
                    [Recovery::HeaderFallback {
                        damaged: SlotName::B,
                        ..
                    }]
                ),
                "{name}"
            );
            assert_eq!(q.len().unwrap(), 3, "{name}");
        }
        // The same slot with its entries in order is used: message 1 consumed out of order.
        write_at(&path, PAGE, &slot(2, 5, DATA, 0, &[(1, 0, 2)]));
        let q = open(&path);
        assert!(q.recoveries().is_empty());
        assert_eq!(q.pop_batch(5).unwrap(), vec![b"a".to_vec(), b"c".to_vec()]);
    })
}

// ---------------------------------------------------------------------------------------
// 4. Validation gaps.
// ---------------------------------------------------------------------------------------

#[test]
fn a_head_beyond_the_end_of_the_file_is_corrupt() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("head-far");
        let path = dir.file("q");
        drop(open(&path));
        // A CRC-valid, newer slot whose head is far past the end of the file.
        write_at(&path, PAGE, &slot(2, 2, 1 << 62, 0, &[]));
        let why = corrupt(FileQueue::open(&path, QueueConfig::new()));
        assert!(why.contains("past the end of the file"), "{why}");
    })
}

#[test]
fn a_file_cut_below_its_head_is_corrupt_not_empty() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("cut-head");
        let path = dir.file("q");
        let q = open(&path);
        for i in 0..10u8 {
            q.push(&[i; 16]).unwrap();
        }
        for _ in 0..5 {
            q.pop().unwrap();
        }
        drop(q);
        let head = DATA + 5 * size(16);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(head - 8)
            .unwrap();
        let why = corrupt(FileQueue::open(&path, QueueConfig::new()));
        assert!(why.contains(&format!("offset {head}")), "{why}");
        // Cut exactly at the head: an empty queue (nothing after the head was lost that the
        // file can tell of; the torn-tail rules apply past the head).
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(head)
            .unwrap();
        assert_eq!(open(&path).len().unwrap(), 0);
    })
}

#[test]
fn an_empty_file_is_a_new_queue_for_every_opener() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("empty");
        let path = dir.file("q");
        std::fs::write(&path, b"").unwrap();
        let q = open(&path);
        q.push(b"x").unwrap();
        assert_eq!(q.pop().unwrap().as_deref(), Some(&b"x"[..]));
        let mut sq = StorageQueue::open(SimDisk::new(), QueueConfig::new()).unwrap();
        sq.push(b"y").unwrap();
        assert_eq!(sq.pop().unwrap().as_deref(), Some(&b"y"[..]));
        // Both write the same image: the file and the simulated disk agree byte for byte.
        let dir2 = TempDir::new("empty2");
        let p2 = dir2.file("q");
        drop(open(&p2));
        let disk = SimDisk::new();
        drop(StorageQueue::open(disk.clone(), QueueConfig::new()).unwrap());
        assert_eq!(std::fs::read(&p2).unwrap(), disk.snapshot());
        // Short of the two slots but not empty: not a queue.
        std::fs::write(&path, b"x").unwrap();
        let why = corrupt(FileQueue::open(&path, QueueConfig::new()));
        assert!(why.contains("shorter than its two header slots"), "{why}");
    })
}

#[test]
fn a_slot_of_another_version_refuses_the_file_without_falling_back() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("version");
        let path = dir.file("q");
        let q = open(&path);
        q.push_batch(&[b"a", b"b"]).unwrap();
        q.pop().unwrap(); // generation 2 in slot B
        drop(q);
        for (at, name) in [(PAGE, "slot B"), (0, "slot A")] {
            let copy = dir.file(name);
            std::fs::copy(&path, &copy).unwrap();
            let mut s = read_at(&copy, at, 64);
            s[12..16].copy_from_slice(&3u32.to_le_bytes());
            reseal(&mut s);
            write_at(&copy, at, &s);
            let before = std::fs::read(&copy).unwrap();
            match FileQueue::open(&copy, QueueConfig::new()) {
                Err(Error::UnsupportedVersion {
                    found: 3,
                    supported: 2,
                    what,
                }) => assert!(what.contains(name)),
                other => panic!("{name}: expected UnsupportedVersion, got {other:?}"),
            }
            assert_eq!(std::fs::read(&copy).unwrap(), before);
        }
    })
}

#[test]
fn a_flipped_version_bit_is_damage_to_one_slot_not_another_format() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("version-bit");
        let path = dir.file("q");
        let q = open(&path);
        q.push_batch(&[b"a", b"b"]).unwrap();
        q.pop().unwrap(); // generation 2 in slot B
        drop(q);
        flip(&path, PAGE + 12); // B's version, 2 -> 18, checksum not recomputed
        let q = open(&path);
        assert!(matches!(
            q.recoveries()[..],
            [Recovery::HeaderFallback {
                damaged: SlotName::B,
                used_generation: 1,
                ..
            }]
        ));
        assert_eq!(q.len().unwrap(), 2);
    })
}

#[test]
fn lease_entries_past_the_end_of_the_records_are_dropped_and_reported() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("leases-past");
        let path = dir.file("q");
        let q = open(&path);
        q.push_batch(&[b"m0", b"m1", b"m2", b"m3"]).unwrap();
        drop(q);
        // A newer header that leased message 1 and consumed 2 and 3 (a consumer saw them),
        // over a file whose records 2 and 3 are gone (cut after m1).
        write_at(
            &path,
            PAGE,
            &slot(2, 5, DATA, 0, &[(1, 7, 1), (2, 0, 2), (3, 0, 2)]),
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(DATA + 2 * size(2))
            .unwrap();
        let q = open(&path);
        assert_eq!(
            q.recoveries(),
            vec![Recovery::LeasesPastTail {
                next_seq: 2,
                leased: 0,
                consumed: 2
            }]
        );
        // New messages take sequence numbers 2 and 3 and are not taken for consumed ones.
        q.push_batch(&[b"n2", b"n3"]).unwrap();
        assert_eq!(q.len().unwrap(), 4);
        assert_eq!(
            q.pop_batch(10).unwrap(),
            vec![
                b"m0".to_vec(),
                b"m1".to_vec(),
                b"n2".to_vec(),
                b"n3".to_vec()
            ]
        );
        // A leased one past the end is a lost message, and said so.
        let path = dir.file("q2");
        let q = open(&path);
        q.push(b"x").unwrap();
        drop(q);
        write_at(&path, PAGE, &slot(2, 5, DATA, 0, &[(1, 3, 1)]));
        assert!(matches!(
            open(&path).recoveries()[..],
            [Recovery::LeasesPastTail {
                next_seq: 1,
                leased: 1,
                consumed: 0
            }]
        ));
    })
}

#[test]
fn the_lease_table_holds_exactly_its_limit_and_refuses_one_more_consuming_nothing() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("leases");
        let path = dir.file("q");
        let q = open(&path);
        let n = 252;
        let msgs: Vec<Vec<u8>> = (0..n + 2).map(|i: u32| i.to_le_bytes().to_vec()).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        q.push_batch(&refs).unwrap();
        let leased: Vec<_> = (0..n).map(|_| q.take().unwrap().unwrap()).collect();
        assert_eq!(q.len().unwrap(), n as u64 + 2);
        match q.take() {
            Err(Error::TooManyLeases { limit }) => assert_eq!(limit, n as usize),
            other => panic!("expected TooManyLeases, got {other:?}"),
        }
        // Nothing was consumed: a pop behind the leases would need one more entry too.
        assert!(matches!(q.pop(), Err(Error::TooManyLeases { .. })));
        assert_eq!(q.len().unwrap(), n as u64 + 2);
        // Acknowledging the oldest frees its entry and moves the head: room again.
        q.ack(&leased[0]).unwrap();
        let next = q.take().unwrap().unwrap();
        assert_eq!(next.message(), &msgs[n as usize][..]);
        for l in &leased[1..] {
            q.ack(l).unwrap();
        }
        q.ack(&next).unwrap();
        assert_eq!(q.pop_batch(10).unwrap(), vec![msgs[n as usize + 1].clone()]);
    })
}

// ---------------------------------------------------------------------------------------
// 6. Consumed messages can be erased.
// ---------------------------------------------------------------------------------------

#[test]
fn consumed_messages_stay_in_the_file_unless_erased() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("erase");
        for erase in [false, true] {
            let path = dir.file(&format!("q-{erase}"));
            let q = FileQueue::open(&path, QueueConfig::new().with_erase_consumed(erase)).unwrap();
            q.push_batch(&[b"secret-one", b"secret-two", b"public"])
                .unwrap();
            let leased = q.take().unwrap().unwrap(); // secret-one, leased
            assert_eq!(q.pop().unwrap().as_deref(), Some(&b"secret-two"[..]));
            let has = |needle: &[u8]| {
                std::fs::read(&path)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle)
            };
            // secret-two is consumed out of order: erased only when the head passes it.
            assert!(has(b"secret-two"));
            q.ack(&leased).unwrap();
            assert_eq!(has(b"secret-one"), !erase, "erase {erase}");
            assert_eq!(has(b"secret-two"), !erase, "erase {erase}");
            assert!(has(b"public"));
            drop(q);
            // The queue is intact after erasing.
            assert_eq!(open(&path).pop_batch(5).unwrap(), vec![b"public".to_vec()]);
        }
    })
}

// ---------------------------------------------------------------------------------------
// 8. Paths.
// ---------------------------------------------------------------------------------------

#[test]
fn a_symlink_fifo_or_directory_is_refused_and_left_alone() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("paths");
        let real = dir.file("real.q");
        drop(open(&real));
        let before = std::fs::read(&real).unwrap();
        let link = dir.file("link.q");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = FileQueue::open(&link, QueueConfig::new()).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // A dangling link is not followed to create a file where it points.
        let dangling = dir.file("dangling.q");
        let target = dir.file("elsewhere.q");
        std::os::unix::fs::symlink(&target, &dangling).unwrap();
        assert!(FileQueue::open(&dangling, QueueConfig::new()).is_err());
        assert!(!target.exists(), "the link was followed");
        let fifo = dir.file("fifo.q");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = FileQueue::open(&fifo, QueueConfig::new()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(FileQueue::open(&dir.0, QueueConfig::new()).is_err());
        assert_eq!(std::fs::read(&real).unwrap(), before);
    })
}

// ---------------------------------------------------------------------------------------
// 12. A reset moves records: a handle that looked before must not append at its old tail.
// ---------------------------------------------------------------------------------------

#[test]
fn a_handle_that_looked_before_a_reset_appends_where_the_records_now_end() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("epoch");
        let path = dir.file("q");
        let cfg = QueueConfig::new().with_reclaim_over(0);
        let a = FileQueue::open(&path, cfg).unwrap();
        let b = FileQueue::open(&path, cfg).unwrap();
        a.push_batch(&[b"one", b"two"]).unwrap();
        assert_eq!(b.len().unwrap(), 2); // b has seen the records end at the old tail
        assert_eq!(a.pop_batch(2).unwrap().len(), 2); // drained: reset, file cut to the header
        assert_eq!(std::fs::metadata(&path).unwrap().len(), DATA);
        b.push(b"three").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            DATA + size(5),
            "appended at the start"
        );
        assert_eq!(a.pop().unwrap().as_deref(), Some(&b"three"[..]));
    })
}

#[test]
fn no_recovery_is_reported_for_a_file_used_cleanly() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("clean");
        let path = dir.file("q");
        let q = FileQueue::open(&path, QueueConfig::new().with_reclaim_over(64)).unwrap();
        for i in 0..200u32 {
            q.push(&i.to_le_bytes()).unwrap();
            if i % 3 == 0 {
                q.pop().unwrap();
            }
        }
        let l = q.take().unwrap().unwrap();
        q.ack(&l).unwrap();
        while q.pop_timeout(Duration::ZERO).unwrap().is_some() {}
        assert!(q.recoveries().is_empty());
        drop(q);
        assert!(open(&path).recoveries().is_empty());
    })
}

// ---------------------------------------------------------------------------------------
// 2b. Salvage: the way out of Corrupt.
// ---------------------------------------------------------------------------------------

#[test]
fn salvage_copies_every_valid_unconsumed_message_and_lists_what_it_skipped() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("salvage");
        let path = dir.file("q");
        let q = open(&path);
        let big = vec![7u8; 100_000];
        q.push_batch(&[b"m0", b"m1"]).unwrap();
        q.push_batch(&[b"m2", b"m3", &big, b"m5"]).unwrap();
        q.push(b"m6").unwrap();
        assert_eq!(q.pop().unwrap().as_deref(), Some(&b"m0"[..])); // consumed: not salvaged
        let leased = q.take().unwrap().unwrap(); // m1 leased, never acknowledged: salvaged
        assert_eq!(leased.message(), b"m1");
        assert_eq!(q.pop().unwrap().as_deref(), Some(&b"m2"[..])); // out of order: consumed
        drop(q);
        // Damage m3 (offset: m0, m1, m2 are 32 bytes each) and the big one's payload.
        let m3 = DATA + 3 * size(2);
        flip(&path, m3 + 24);
        flip(&path, m3 + size(2) + 24 + 50_000);
        corrupt(FileQueue::open(&path, QueueConfig::new()));
        let before = std::fs::read(&path).unwrap();
        let saved = dir.file("saved");
        let report = FileQueue::salvage(&path, &saved).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "salvage wrote to its source"
        );
        assert_eq!(report.header, Some(SlotName::B)); // generation 4: pop, take, pop
        assert_eq!(report.first_seq, Some(1));
        assert_eq!((report.copied, report.copied_bytes), (3, 6));
        assert_eq!(report.consumed_skipped, 1);
        assert_eq!(report.skipped.len(), 1, "{report:?}");
        let s = &report.skipped[0];
        assert_eq!(
            (s.offset, s.first_seq, s.resumed_at_seq),
            (m3, Some(3), Some(5))
        );
        assert_eq!(s.bytes, size(2) + size(100_000));
        let out = open(&saved);
        assert_eq!(
            out.pop_batch(10).unwrap(),
            vec![b"m1".to_vec(), b"m5".to_vec(), b"m6".to_vec()]
        );
        // The destination must be new.
        let err = FileQueue::salvage(&path, &saved).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
    })
}

#[test]
fn salvage_without_a_usable_header_copies_from_the_start_and_reports_the_tail() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("salvage-nohead");
        let path = dir.file("q");
        let q = open(&path);
        q.push_batch(&[b"a", b"b", b"c"]).unwrap();
        drop(q);
        write_at(&path, 0, &[0xff; 64]);
        write_at(&path, PAGE, &[0xff; 64]);
        let len = std::fs::metadata(&path).unwrap().len();
        write_at(&path, len, &[1, 2, 3]); // a torn fragment at the end
        let saved = dir.file("saved");
        let report = FileQueue::salvage(&path, &saved).unwrap();
        assert_eq!(report.header, None);
        assert_eq!(report.copied, 3);
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(
            (
                report.skipped[0].offset,
                report.skipped[0].bytes,
                report.skipped[0].resumed_at_seq
            ),
            (len, 3, None)
        );
        assert_eq!(open(&saved).len().unwrap(), 3);
    })
}

#[test]
fn cli_queue_salvage_prints_the_report_and_exits_one_when_something_was_lost() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("salvage-cli");
        let path = dir.file("q");
        three_records(&path);
        flip(&path, DATA + size(8) + 27);
        let saved = dir.file("saved");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ipcprop"))
            .args(["queue", "salvage"])
            .arg(&path)
            .arg(&saved)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("copied 2 message(s)"), "{text}");
        assert!(
            text.contains(&format!("at offset {}: messages 1..1 lost", DATA + size(8))),
            "{text}"
        );
        // Clean source: exit 0. Missing source: exit 2 with the reason.
        let clean = dir.file("clean");
        three_records(&clean);
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_ipcprop"))
            .args(["queue", "salvage"])
            .arg(&clean)
            .arg(dir.file("clean-saved"))
            .output()
            .unwrap();
        assert_eq!(st.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&st.stdout).contains("nothing skipped"));
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_ipcprop"))
            .args(["queue", "salvage"])
            .arg(dir.file("missing"))
            .arg(dir.file("x"))
            .output()
            .unwrap();
        assert_eq!(st.status.code(), Some(2));
        assert!(!dir.file("x").exists());
    })
}

#[test]
fn damage_to_the_smallest_record_with_a_later_write_behind_it_is_corrupt() {
    let dir = TempDir::new("tiny-damage");
    let path = dir.file("q");
    let q = open(&path);
    for _ in 0..3 {
        q.push(b"").unwrap(); // 24-byte records: exactly one header of room between
    }
    drop(q);
    flip(&path, DATA + 24 + 2); // the second record's length
    let why = corrupt(FileQueue::open(&path, QueueConfig::new()));
    assert!(
        why.contains("offset 8216") && why.contains("offset 8240"),
        "{why}"
    );
}

#[test]
fn a_handle_keeps_its_latest_sixteen_recoveries_oldest_first() {
    let dir = TempDir::new("recoveries");
    let path = dir.file("q");
    let q = open(&path);
    for i in 0..20u64 {
        write_at(&path, DATA, &vec![0xee; 8 + i as usize]);
        assert_eq!(q.len().unwrap(), 0);
    }
    let r = q.recoveries();
    assert_eq!(r.len(), 16);
    for (k, rec) in r.iter().enumerate() {
        let want = 8 + 4 + k as u64;
        assert!(
            matches!(rec, Recovery::TornTail { offset: DATA, bytes, next_seq: 0 } if *bytes == want),
            "{k}: {rec:?}"
        );
    }
}

#[test]
fn space_is_reclaimed_exactly_past_the_threshold() {
    let dir = TempDir::new("thresholds");
    let len = |p: &Path| std::fs::metadata(p).unwrap().len();
    // Reset: a drained queue whose records took more than the threshold.
    for (threshold, reset) in [(32u64, false), (31, true)] {
        let path = dir.file(&format!("reset-{threshold}"));
        let q = FileQueue::open(&path, QueueConfig::new().with_reclaim_over(threshold)).unwrap();
        q.push(b"12345678").unwrap(); // one 32-byte record
        q.pop().unwrap();
        assert_eq!(
            len(&path),
            if reset { DATA } else { DATA + 32 },
            "threshold {threshold}"
        );
        q.push(b"x").unwrap();
        assert_eq!(q.pop().unwrap().as_deref(), Some(&b"x"[..]));
    }
    // Compaction: a consumed prefix over the threshold and at least twice the live records.
    // Four 32-byte records, two consumed (64 bytes), two live (64 bytes): not twice.
    // Three consumed (96) against one live (32): compacts if 96 > threshold.
    for (threshold, compacts) in [(96u64, false), (95, true)] {
        let path = dir.file(&format!("compact-{threshold}"));
        let q = FileQueue::open(&path, QueueConfig::new().with_reclaim_over(threshold)).unwrap();
        q.push_batch(&[b"aaaaaaaa", b"bbbbbbbb", b"cccccccc", b"dddddddd"])
            .unwrap();
        q.pop_batch(2).unwrap();
        assert_eq!(
            len(&path),
            DATA + 128,
            "64 consumed, 64 live: no compaction"
        );
        q.pop().unwrap();
        let want = if compacts { DATA + 32 } else { DATA + 128 };
        assert_eq!(len(&path), want, "threshold {threshold}");
        assert_eq!(q.pop().unwrap().as_deref(), Some(&b"dddddddd"[..]));
    }
    // Twice exactly: 64 consumed against 32 live compacts (>= 2x).
    let path = dir.file("twice");
    let q = FileQueue::open(&path, QueueConfig::new().with_reclaim_over(0)).unwrap();
    q.push_batch(&[b"aaaaaaaa", b"bbbbbbbb", b"cccccccc"])
        .unwrap();
    q.pop().unwrap(); // 32 consumed, 64 live
    assert_eq!(len(&path), DATA + 96);
    q.pop().unwrap(); // 64 consumed, 32 live
    assert_eq!(len(&path), DATA + 32);
    assert_eq!(q.pop().unwrap().as_deref(), Some(&b"cccccccc"[..]));
    // Short of twice: 96 consumed against 64 live stays (1.5x), though over the threshold.
    let path = dir.file("one-and-a-half");
    let q = FileQueue::open(&path, QueueConfig::new().with_reclaim_over(0)).unwrap();
    q.push_batch(&[
        b"aaaaaaaa",
        b"bbbbbbbb",
        b"cccccccc",
        b"dddddddd",
        b"eeeeeeee",
    ])
    .unwrap();
    q.pop_batch(3).unwrap(); // 96 consumed, 64 live
    assert_eq!(len(&path), DATA + 160, "1.5x: no compaction");
    assert_eq!(q.pop().unwrap().as_deref(), Some(&b"dddddddd"[..]));
}

#[test]
fn thousands_of_storage_queue_handles_keep_their_leases() {
    common::within(LIMIT, move || {
        // Holder ids in the file are 0..4096; a process that opens more handles than that
        // must still write ids the format accepts.
        let disk = SimDisk::new();
        for i in 0..4200u32 {
            let mut q = StorageQueue::open(disk.clone(), QueueConfig::new()).unwrap();
            q.push(&i.to_le_bytes()).unwrap();
            let l = q.take().unwrap().unwrap();
            q.ack(&l).unwrap();
        }
        assert!(StorageQueue::open(disk, QueueConfig::new())
            .unwrap()
            .recoveries()
            .is_empty());
    })
}

#[test]
fn a_handle_prints_its_state_without_its_buffers() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("debug");
        let q = open(&dir.file("q"));
        q.push(&[7u8; 100_000]).unwrap();
        q.pop().unwrap();
        let shown = format!("{q:?}");
        assert!(
            shown.contains("tail_seq: 1") && shown.contains("recoveries"),
            "{shown}"
        );
        assert!(shown.len() < 2000, "{} bytes of Debug output", shown.len());
    })
}

/// A record per docs/FORMAT.md section 3: `crc | len | seq | batch_index | head_gap |
/// payload | pad`, the CRC-32C over everything after the CRC up to the end of the payload.
fn record(seq: u64, batch_index: u32, head_gap: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; size(payload.len()) as usize];
    b[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..20].copy_from_slice(&batch_index.to_le_bytes());
    b[20..24].copy_from_slice(&head_gap.to_le_bytes());
    b[24..24 + payload.len()].copy_from_slice(payload);
    let crc = crc32c::crc32c(&b[4..24 + payload.len()]);
    b[0..4].copy_from_slice(&crc.to_le_bytes());
    b
}

/// A valid-looking record after a torn one proves a later write only if the messages it
/// skips could fit between them (each at least a header long): one numbered 100 just one
/// record past the damage is stray bytes, so the damage is a torn tail, cut off.
#[test]
fn a_record_too_far_ahead_to_fit_proves_no_later_write() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("too-far");
        let path = dir.file("q");
        let q = open(&path);
        q.push(b"message0").unwrap();
        q.push(b"message1").unwrap();
        drop(q);
        let rec = size(8);
        flip(&path, DATA + rec + 27);
        write_at(&path, DATA + 2 * rec, &record(100, 0, 0, b"strayrec"));
        let q = open(&path);
        assert_eq!(
            q.recoveries(),
            vec![Recovery::TornTail {
                offset: DATA + rec,
                bytes: 2 * rec,
                next_seq: 1
            }]
        );
        assert_eq!(q.pop_batch(10).unwrap(), vec![b"message0".to_vec()]);
        // The same record where the 99 messages between could lie is a later write.
        let copy = dir.file("room");
        let q = open(&copy);
        q.push(b"message0").unwrap();
        q.push(b"message1").unwrap();
        drop(q);
        flip(&copy, DATA + rec + 27);
        write_at(&copy, DATA + rec + 99 * 24, &record(100, 0, 0, b"laterrec"));
        corrupt(FileQueue::open(&copy, QueueConfig::new()));
    })
}

/// A record replaced behind a handle's back (another writer ignoring the lock) by a valid
/// record of another message is refused when the handle reaches it, never delivered.
#[test]
fn a_record_replaced_under_a_handle_is_refused_not_delivered() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("replaced");
        let path = dir.file("q");
        let q = open(&path);
        q.push(b"message0").unwrap();
        q.push(b"message1").unwrap();
        let rec = size(8);
        write_at(&path, DATA + rec, &record(7, 0, 0, b"imposter"));
        // The pop that walks past it may refuse already (it reads ahead); either way the
        // imposter never comes out, and the refusal names it.
        let why = match q.pop() {
            Ok(m) => {
                assert_eq!(m.as_deref(), Some(&b"message0"[..]));
                corrupt(q.pop())
            }
            Err(e) => corrupt(Err::<(), _>(e)),
        };
        assert!(why.contains("changed under the lock"), "{why}");
        assert!(why.contains("message 7"), "{why}");
    })
}

// ---- Free space (FORMAT.md section 3, "Reading the queue", case 1) -------------------------

const FREE: &[u8; 8] = b"ipcpfree";

fn synced(path: &Path) -> FileQueue {
    FileQueue::open(
        path,
        QueueConfig::new().with_durability(ipcprop::queue::Durability::Sync),
    )
    .unwrap()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn all_free(b: &[u8]) -> bool {
    b.len().is_multiple_of(8) && b.chunks(8).all(|w| w == FREE)
}

#[test]
fn a_synced_push_that_grows_the_file_writes_free_space_ahead_and_later_pushes_overwrite_it() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("ahead");
        let path = dir.file("q");
        let q = synced(&path);
        q.push(b"first").unwrap();
        let tail = DATA + size(5);
        let len = file_len(&path);
        // Free space to the first page boundary at least 32 KiB past the record.
        assert_eq!(len, (tail + 32 * 1024).next_multiple_of(PAGE));
        assert!(all_free(&read_at(&path, tail, (len - tail) as usize)));
        // The pushes that fit in it leave the file's length alone.
        let mut end = tail;
        let mut pushed = 1u32;
        while end + size(40) <= len {
            q.push(&[pushed as u8; 40]).unwrap();
            end += size(40);
            pushed += 1;
            assert_eq!(file_len(&path), len, "push {pushed} grew the file");
        }
        assert!(all_free(&read_at(&path, end, (len - end) as usize)));
        // One that fills it to the last byte still does not grow the file.
        let rest = (len - end) as usize;
        assert!(rest >= 24, "room for a record: {rest}");
        q.push(&vec![0xdd; rest - 24]).unwrap();
        pushed += 1;
        end = len;
        assert_eq!(file_len(&path), len, "a push that fills the free space");
        // The next one grows it, by its record and free space ahead again.
        q.push(&[0xee; 40]).unwrap();
        pushed += 1;
        assert_eq!(
            file_len(&path),
            (end + size(40) + 32 * 1024).next_multiple_of(PAGE)
        );
        drop(q);
        // Another handle (not syncing) finds every message and nothing to repair.
        let q = open(&path);
        assert_eq!(q.recoveries(), vec![]);
        assert_eq!(q.len().unwrap(), u64::from(pushed));
        assert_eq!(q.pop().unwrap().as_deref(), Some(&b"first"[..]));
        assert_eq!(q.pop().unwrap(), Some(vec![1u8; 40]));
        assert_eq!(q.recoveries(), vec![]);
    })
}

#[test]
fn a_push_without_sync_writes_no_free_space() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("noahead");
        let path = dir.file("q");
        let q = open(&path);
        q.push_batch(&[b"a", b"bc"]).unwrap();
        assert_eq!(file_len(&path), DATA + size(1) + size(2));
    })
}

#[test]
fn damaged_free_space_is_torn_remains_cut_and_reported_also_by_a_handle_that_looked_before() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("freedamage");
        let path = dir.file("q");
        // A handle that opens the file afresh.
        let q = synced(&path);
        q.push(b"kept").unwrap();
        let tail = DATA + size(4);
        let len = file_len(&path);
        drop(q);
        write_at(&path, len - 8, b"ipcpfreX");
        let q = open(&path);
        assert_eq!(
            q.recoveries(),
            vec![Recovery::TornTail {
                offset: tail,
                bytes: len - tail,
                next_seq: 1
            }]
        );
        assert_eq!(file_len(&path), tail, "cut at the tail");
        drop(q);

        // A handle that read the file before, resuming at its tail: a writer killed
        // mid-push left a record's first bytes over the free space.
        let q = synced(&path);
        q.push(b"again").unwrap();
        let tail = tail + size(5);
        let len = file_len(&path);
        assert_eq!(q.len().unwrap(), 2);
        write_at(&path, tail, &[7u8; 20]);
        assert_eq!(q.len().unwrap(), 2);
        assert_eq!(
            q.recoveries(),
            vec![Recovery::TornTail {
                offset: tail,
                bytes: len - tail,
                next_seq: 2
            }]
        );
        assert_eq!(file_len(&path), tail);
        q.push(b"over").unwrap();
        assert_eq!(
            q.pop_batch(5).unwrap(),
            vec![b"kept".to_vec(), b"again".to_vec(), b"over".to_vec()]
        );
    })
}

#[test]
fn free_space_not_in_whole_words_to_the_end_is_torn_remains() {
    common::within(LIMIT, move || {
        for (what, extra) in [
            ("cut mid-word", &b"ipcpf"[..]),
            ("a zero word", &[0u8; 8][..]),
        ] {
            let dir = TempDir::new("freeshape");
            let path = dir.file("q");
            let q = synced(&path);
            q.push(b"x").unwrap();
            drop(q);
            let tail = DATA + size(1);
            let len = file_len(&path);
            write_at(&path, len, extra);
            let q = open(&path);
            assert_eq!(
                q.recoveries(),
                vec![Recovery::TornTail {
                    offset: tail,
                    bytes: len + extra.len() as u64 - tail,
                    next_seq: 1
                }],
                "{what}"
            );
            assert_eq!(q.pop().unwrap().as_deref(), Some(&b"x"[..]), "{what}");
        }
    })
}

#[test]
fn a_later_write_behind_free_space_is_still_damage() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("freelater");
        let path = dir.file("q");
        let q = synced(&path);
        q.push(b"m0").unwrap();
        q.push(b"m1").unwrap();
        drop(q);
        // Message 1's record is damaged into free space, and message 2 of a later write
        // follows: message 1 was committed and is lost.
        let at = DATA + size(2);
        write_at(&path, at, &FREE.repeat(size(2) as usize / 8));
        write_at(&path, at + 64, &record(2, 0, 2, b"m2"));
        let why = corrupt(FileQueue::open(&path, QueueConfig::new()));
        assert!(why.contains("message 2 of a later write"), "{why}");
    })
}

#[test]
fn salvage_does_not_list_free_space_as_skipped() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("freesalvage");
        let path = dir.file("q");
        let q = synced(&path);
        q.push_batch(&[b"s0", b"s1"]).unwrap();
        drop(q);
        let saved = dir.file("saved");
        let report = FileQueue::salvage(&path, &saved).unwrap();
        assert_eq!(report.copied, 2);
        assert_eq!(report.skipped, vec![]);
        // Free space with damage in it is still listed.
        write_at(&path, file_len(&path) - 8, &[0; 8]);
        let again = dir.file("saved-again");
        let report = FileQueue::salvage(&path, &again).unwrap();
        assert_eq!(report.copied, 2);
        assert_eq!(report.skipped.len(), 1, "{report:?}");
    })
}

// ---- One read per pop: the refresh before a pop reads from the head ----------------------

/// The I/O calls `op` makes on `disk`.
fn calls(disk: &SimDisk, op: impl FnOnce()) -> u64 {
    let before = disk.ops();
    op();
    disk.ops() - before
}

#[test]
fn a_pop_after_another_handles_push_reads_the_file_twice_and_writes_once() {
    let disk = SimDisk::new();
    let mut producer = StorageQueue::open(disk.clone(), QueueConfig::new()).unwrap();
    let mut consumer = StorageQueue::open(disk.clone(), QueueConfig::new()).unwrap();
    for round in 0..5u8 {
        producer.push(&[round; 100]).unwrap();
        producer.push(&[round; 7]).unwrap();
        // The header slots, then one read from the head that finds the new records and
        // holds the one popped; then the header write.
        let mut got = None;
        assert_eq!(calls(&disk, || got = consumer.pop().unwrap()), 3);
        assert_eq!(got, Some(vec![round; 100]));
        // The records from the head to the tail were read before: one read again.
        assert_eq!(calls(&disk, || got = consumer.pop().unwrap()), 3);
        assert_eq!(got, Some(vec![round; 7]));
        // Nothing there: the slots and the read at the head.
        assert_eq!(calls(&disk, || got = consumer.pop().unwrap()), 2);
        assert_eq!(got, None);
        // A push still reads at the tail only (2 reads) and writes once.
        assert_eq!(calls(&disk, || producer.push(b"p").unwrap()), 3);
        assert_eq!(consumer.pop().unwrap().as_deref(), Some(&b"p"[..]));
    }
}

#[test]
fn what_a_refresh_read_ahead_is_never_delivered_after_a_write_changed_it() {
    // One handle pushes and pops in turns: each pop must see the records the pushes
    // before it wrote, never the bytes the refresh read before them.
    let disk = SimDisk::new();
    let mut q = StorageQueue::open(disk.clone(), QueueConfig::new()).unwrap();
    let mut other = StorageQueue::open(disk, QueueConfig::new()).unwrap();
    for i in 0..40u8 {
        q.push(&[i; 3]).unwrap();
        assert_eq!(q.peek().unwrap(), Some(vec![i; 3]));
        other.push(&[i, i]).unwrap();
        assert_eq!(q.pop().unwrap(), Some(vec![i; 3]));
        assert_eq!(q.pop().unwrap(), Some(vec![i, i]));
        assert_eq!(q.pop().unwrap(), None);
    }
    // An exclusive handle refreshes once, at open, and that read saw free space past the
    // tail: its pops after its own pushes must read what the pushes wrote over it.
    let dir = TempDir::new("prefetch");
    let path = dir.file("q");
    let q = synced(&path);
    q.push(b"gone").unwrap();
    assert_eq!(q.pop().unwrap().as_deref(), Some(&b"gone"[..]));
    drop(q);
    let q = FileQueue::open(
        &path,
        QueueConfig::new()
            .with_exclusive(true)
            .with_durability(ipcprop::queue::Durability::Sync),
    )
    .unwrap();
    for i in 0..40u8 {
        q.push(&[i; 9]).unwrap();
        assert_eq!(q.pop().unwrap(), Some(vec![i; 9]));
    }
}

#[test]
fn free_space_past_the_first_read_is_checked_to_the_end_of_the_file() {
    common::within(LIMIT, move || {
        for damaged in [false, true] {
            let dir = TempDir::new("freefar");
            let path = dir.file("q");
            let q = synced(&path);
            // 60 KiB of records: the 64 KiB read at the head ends inside the free space.
            q.push(&vec![3u8; 60 * 1024]).unwrap();
            drop(q);
            let tail = DATA + size(60 * 1024);
            let len = file_len(&path);
            assert!(
                len > DATA + 64 * 1024 + 8,
                "free space beyond the first read"
            );
            if damaged {
                write_at(&path, len - 16, &[0; 8]);
            }
            let q = open(&path);
            let want = if damaged {
                vec![Recovery::TornTail {
                    offset: tail,
                    bytes: len - tail,
                    next_seq: 1,
                }]
            } else {
                vec![]
            };
            assert_eq!(q.recoveries(), want, "damaged: {damaged}");
            assert_eq!(q.pop().unwrap(), Some(vec![3u8; 60 * 1024]));
        }
    })
}

#[test]
fn a_pop_reads_from_the_head_only_while_the_records_there_and_the_free_space_fit_one_read() {
    // A synced queue has up to 36 KiB of free space past the tail; one 64 KiB read from the
    // head holds it and 28 KiB of records. Past that, the pop reads at the tail and then
    // the record: one call more, but never a read that misses the end of the file.
    for (record, calls_per_pop) in [(28 * 1024, 4), (28 * 1024 + 8, 5)] {
        let disk = SimDisk::new();
        let config = QueueConfig::new().with_durability(ipcprop::queue::Durability::Sync);
        let mut producer = StorageQueue::open(disk.clone(), config).unwrap();
        let mut consumer = StorageQueue::open(disk.clone(), config).unwrap();
        // A head off the page grid, so the free space does not end exactly 64 KiB past it.
        producer.push(b"x").unwrap();
        assert_eq!(consumer.pop().unwrap().as_deref(), Some(&b"x"[..]));
        let msg = vec![5u8; record - 24];
        producer.push(&msg).unwrap();
        assert_eq!(consumer.peek().unwrap().as_ref(), Some(&msg));
        // The header slots, the records (one read or two), the header write, its sync.
        let mut got = None;
        assert_eq!(
            calls(&disk, || got = consumer.pop().unwrap()),
            calls_per_pop,
            "a record of {record} bytes"
        );
        assert_eq!(got, Some(msg));
    }
}

/// A [`SimDisk`] that counts the bytes its reads return.
struct Metered {
    disk: SimDisk,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Storage for Metered {
    fn read_at(&mut self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        let n = self.disk.read_at(buf, off)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }

    fn write_at(&mut self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.disk.write_at(buf, off)
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        self.disk.sync_data()
    }

    fn len(&mut self) -> std::io::Result<u64> {
        self.disk.len()
    }

    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.disk.set_len(len)
    }
}

/// A consumer on `disk` whose reads are counted, and the counter.
fn metered(disk: &SimDisk) -> (StorageQueue<Metered>, std::rc::Rc<std::cell::Cell<u64>>) {
    let read = std::rc::Rc::new(std::cell::Cell::new(0));
    let storage = Metered {
        disk: disk.clone(),
        read: read.clone(),
    };
    (
        StorageQueue::open(storage, QueueConfig::new()).unwrap(),
        read,
    )
}

#[test]
fn a_pop_from_a_long_queue_reads_a_page_of_records_not_a_chunk() {
    let disk = SimDisk::new();
    let mut producer = StorageQueue::open(disk.clone(), QueueConfig::new()).unwrap();
    for i in 0..3000u32 {
        producer.push(&[(i % 251) as u8; 64]).unwrap();
    }
    let (mut consumer, read) = metered(&disk);
    for i in 0..20u32 {
        let before = read.get();
        assert_eq!(consumer.pop().unwrap(), Some(vec![(i % 251) as u8; 64]));
        if i > 0 {
            // The two header slots (a page each), nothing new at the tail, and the first
            // read at the head: a page, where the queue holds 260 KiB.
            assert_eq!(read.get() - before, 2 * PAGE + PAGE, "pop {i}");
        }
    }
    // A batch reads on past the first page, in whole chunks, and delivers every record:
    // the header slots, the look at the tail, a page and three chunks of records (a record
    // cut off by the end of one read starts the next), the header write.
    let mut got = Vec::new();
    assert_eq!(calls(&disk, || got = consumer.pop_batch(2000).unwrap()), 7);
    assert_eq!(got.len(), 2000);
    for (k, m) in got.iter().enumerate() {
        assert_eq!(m, &vec![((20 + k) % 251) as u8; 64], "message {}", 20 + k);
    }
}

#[test]
fn a_pop_uses_every_byte_its_refresh_read_from_the_head() {
    // 20 KiB of records, pushed by another handle: the refresh reads them from the head
    // in one call, and a batch pop of all of them reads nothing more.
    let disk = SimDisk::new();
    let mut producer = StorageQueue::open(disk.clone(), QueueConfig::new()).unwrap();
    let mut consumer = StorageQueue::open(disk.clone(), QueueConfig::new()).unwrap();
    assert_eq!(consumer.pop().unwrap(), None);
    let n = 20 * 1024 / size(64) as usize;
    for i in 0..n {
        producer.push(&[i as u8; 64]).unwrap();
    }
    let mut got = Vec::new();
    // The header slots, one read at the head, the header write.
    assert_eq!(calls(&disk, || got = consumer.pop_batch(n).unwrap()), 3);
    assert_eq!(got.len(), n);
    assert!(got.iter().enumerate().all(|(i, m)| m == &[i as u8; 64]));
}

#[test]
fn a_first_record_longer_than_the_first_read_is_read_on_its_own_and_sizes_the_next() {
    let disk = SimDisk::new();
    let mut producer = StorageQueue::open(disk.clone(), QueueConfig::new()).unwrap();
    let mut consumer = StorageQueue::open(disk.clone(), QueueConfig::new()).unwrap();
    for _ in 0..3 {
        producer.push(&[1u8; 10_000]).unwrap();
    }
    for _ in 0..40 {
        producer.push(&[2u8; 1000]).unwrap();
    }
    // 70 KiB of records: the consumer's refreshes look at the tail, not from the head.
    assert_eq!(consumer.len().unwrap(), 43);
    let mut got = None;
    // The header slots, the look at the tail, a page, the rest of the record, the header.
    assert_eq!(calls(&disk, || got = consumer.pop().unwrap()), 5);
    assert_eq!(got, Some(vec![1u8; 10_000]));
    // The next first read holds a record as long: the rest needs no read of its own.
    for (len, byte) in [(10_000, 1u8), (10_000, 1), (1000, 2), (1000, 2)] {
        assert_eq!(calls(&disk, || got = consumer.pop().unwrap()), 4);
        assert_eq!(got, Some(vec![byte; len]));
    }
}

#[test]
fn records_longer_than_the_first_read_are_delivered_whole_one_by_one_and_in_batches() {
    common::within(LIMIT, move || {
        // Around the first read (a page), the chunk (64 KiB), and past it.
        let lens = [
            0usize,
            1,
            4000,
            4096 - 24,
            4096 - 23,
            5000,
            64 * 1024 - 24,
            64 * 1024,
            100_000,
        ];
        let disk = SimDisk::new();
        let mut producer = StorageQueue::open(disk.clone(), QueueConfig::new()).unwrap();
        let mut consumer = StorageQueue::open(disk.clone(), QueueConfig::new()).unwrap();
        let msg = |round: usize, i: usize, len: usize| vec![(round * 16 + i) as u8; len];
        for round in 0..3 {
            for (i, &len) in lens.iter().enumerate() {
                producer.push(&msg(round, i, len)).unwrap();
                producer.push(b"s").unwrap();
            }
        }
        // One by one: each long record first in the queue, behind a short one, and so on.
        for (i, &len) in lens.iter().enumerate() {
            assert_eq!(consumer.peek().unwrap(), Some(msg(0, i, len)), "peek {len}");
            assert_eq!(consumer.pop().unwrap(), Some(msg(0, i, len)), "pop {len}");
            assert_eq!(consumer.pop().unwrap().as_deref(), Some(&b"s"[..]));
        }
        // In batches of three, then all at once.
        let mut want: Vec<Vec<u8>> = Vec::new();
        for round in 1..3 {
            for (i, &len) in lens.iter().enumerate() {
                want.push(msg(round, i, len));
                want.push(b"s".to_vec());
            }
        }
        let mut got = Vec::new();
        for _ in 0..lens.len() {
            got.extend(consumer.pop_batch(3).unwrap());
        }
        got.extend(consumer.pop_batch(usize::MAX).unwrap());
        assert_eq!(got.len(), want.len());
        assert!(got == want, "batches delivered other messages");
        assert_eq!(consumer.pop().unwrap(), None);
    })
}

#[test]
fn a_handle_that_looked_before_checks_free_space_past_its_first_read_to_the_end() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("freefarlive");
        let path = dir.file("q");
        let watcher = open(&path);
        assert_eq!(watcher.len().unwrap(), 0);
        let q = synced(&path);
        q.push(&vec![4u8; 60 * 1024]).unwrap();
        let tail = DATA + size(60 * 1024);
        let len = file_len(&path);
        assert!(
            len > DATA + 64 * 1024 + 8,
            "free space beyond the first read"
        );
        // Damage past the first 64 KiB the watcher reads when it resumes at its old tail.
        write_at(&path, len - 16, &[0; 8]);
        assert_eq!(watcher.len().unwrap(), 1);
        assert_eq!(
            watcher.recoveries(),
            vec![Recovery::TornTail {
                offset: tail,
                bytes: len - tail,
                next_seq: 1
            }]
        );
    })
}

#[test]
fn free_space_longer_than_a_read_is_checked_in_every_piece() {
    common::within(LIMIT, move || {
        for damaged in [false, true] {
            let dir = TempDir::new("freelong");
            let path = dir.file("q");
            let q = open(&path);
            q.push(b"m").unwrap();
            drop(q);
            let tail = DATA + size(1);
            // 200 KiB of free space (more than the crate writes, as another writer may),
            // its last word damaged or not.
            let mut free = FREE.repeat(200 * 1024 / 8);
            if damaged {
                let n = free.len();
                free[n - 3] = b'!';
            }
            write_at(&path, tail, &free);
            let q = open(&path);
            let want = if damaged {
                vec![Recovery::TornTail {
                    offset: tail,
                    bytes: free.len() as u64,
                    next_seq: 1,
                }]
            } else {
                vec![]
            };
            assert_eq!(q.recoveries(), want, "damaged: {damaged}");
            assert_eq!(q.pop().unwrap().as_deref(), Some(&b"m"[..]));
        }
    })
}

#[test]
fn a_synced_push_onto_records_pushed_without_sync_writes_free_space() {
    let disk = SimDisk::new();
    let config = QueueConfig::new().with_durability(ipcprop::queue::Durability::Sync);
    let mut synced = StorageQueue::open(disk.clone(), config).unwrap();
    // Pushed without sync: no free space, the file ends at the tail.
    let mut plain = StorageQueue::open(disk.clone(), QueueConfig::new()).unwrap();
    plain.push_batch(&[b"a", b"b"]).unwrap();
    let tail = DATA + 2 * size(1);
    assert_eq!(disk.snapshot().len() as u64, tail);
    // The synced handle's push finds those records past where it last looked.
    synced.push(b"c").unwrap();
    let end = tail + size(1);
    assert_eq!(
        disk.snapshot().len() as u64,
        (end + 32 * 1024).next_multiple_of(PAGE),
        "the push grew the file: it writes free space ahead"
    );
}

/// Storage that records where each read starts.
#[derive(Clone)]
struct Reads(SimDisk, std::sync::Arc<std::sync::Mutex<Vec<u64>>>);

impl ipcprop::queue::storage::Storage for Reads {
    fn read_at(&mut self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        self.1.lock().unwrap().push(off);
        self.0.read_at(buf, off)
    }
    fn write_at(&mut self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.0.write_at(buf, off)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn len(&mut self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
}

#[test]
fn a_push_reads_the_header_and_from_its_tail_on_never_the_records_before() {
    let reads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let disk = SimDisk::new();
    let mut q = StorageQueue::open(Reads(disk.clone(), reads.clone()), QueueConfig::new()).unwrap();
    let mut other = StorageQueue::open(disk, QueueConfig::new()).unwrap();
    q.push_batch(&[b"one", b"two", b"three"]).unwrap();
    other.push(b"four").unwrap();
    // Where q's last look ended: "four" is past it.
    let seen_tail = DATA + 3 * size(3);
    reads.lock().unwrap().clear();
    q.push(b"five").unwrap();
    assert_eq!(*reads.lock().unwrap(), vec![0, seen_tail]);
    // A pop reads from the head.
    reads.lock().unwrap().clear();
    assert_eq!(q.pop().unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(*reads.lock().unwrap(), vec![0, DATA]);
}

#[test]
fn a_pop_whose_look_read_free_space_past_its_first_read_delivers_the_record() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("freefarpop");
        let path = dir.file("q");
        let consumer = open(&path);
        assert_eq!(consumer.pop().unwrap(), None);
        let q = synced(&path);
        // 60 KiB: the consumer's 64 KiB read from the head ends inside the free space
        // past it, which is then read on its own.
        let msg: Vec<u8> = (0..60 * 1024).map(|i| (i % 251) as u8).collect();
        q.push(&msg).unwrap();
        assert_eq!(consumer.pop().unwrap(), Some(msg));
        assert_eq!(consumer.recoveries(), vec![]);
    })
}

#[test]
fn an_exclusive_synced_handle_writes_free_space_ahead_as_it_grows_and_after_a_compaction() {
    common::within(LIMIT, move || {
        let dir = TempDir::new("freeexcl");
        let path = dir.file("q");
        let config = QueueConfig::new()
            .with_exclusive(true)
            .with_durability(ipcprop::queue::Durability::Sync)
            .with_reclaim_over(4096);
        // An exclusive handle never re-reads the file: what it knows of the file's end
        // comes from its own writes.
        let q = FileQueue::open(&path, config).unwrap();
        q.push(&[1; 1000]).unwrap();
        let mut len = file_len(&path);
        let mut end = DATA + size(1000);
        assert_eq!(len, (end + 32 * 1024).next_multiple_of(PAGE));
        let mut grew = 0;
        for i in 0..100u8 {
            q.push(&[i; 1000]).unwrap();
            end += size(1000);
            if end > len {
                grew += 1;
                len = (end + 32 * 1024).next_multiple_of(PAGE);
            }
            assert_eq!(file_len(&path), len, "push {i}");
        }
        assert!(grew >= 2, "the pushes grew the file {grew} times");
        // Pop all but three: the consumed records dwarf the live ones and move to the
        // front; the file is cut just past them.
        for _ in 0..98 {
            q.pop().unwrap().unwrap();
        }
        let live = 3 * size(1000);
        assert_eq!(file_len(&path), DATA + live, "compacted");
        q.push(b"after").unwrap();
        assert_eq!(
            file_len(&path),
            (DATA + live + size(5) + 32 * 1024).next_multiple_of(PAGE),
            "the first push after the compaction grows the file: it writes free space ahead"
        );
        for i in 98..101u8 {
            assert_eq!(q.pop().unwrap(), Some(vec![i.wrapping_sub(1); 1000]));
        }
        assert_eq!(q.pop().unwrap().as_deref(), Some(&b"after"[..]));
    })
}
