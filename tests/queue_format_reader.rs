//! The queue file format document against the crate: `tests/format_reader/queue_reader.py`
//! is a reader written from `docs/FORMAT.md` section 3 alone (see `GAPS.md` next to it).
//! Here the crate writes queue files through its public API, copies of them are damaged in
//! the ways the document discusses (cuts, bit flips in records and header slots, lost and
//! foreign-version slots, appended garbage and torn records, power-loss holes), and for
//! every file the Python reader and `FileQueue` must agree: refused (and how) or the same
//! messages in the same order, with the same repairs reported (`FileQueue::recoveries`). A
//! file the crate repaired on opening is read again by the reader, which must find it
//! undamaged, holding what the crate then delivered. A second test covers the places where
//! the document is silent (`GAPS.md`) with files made for them.
//!
//! A case where the two disagree is either a bug in the crate or a hole in the document:
//! the document decides which. Needs `python3` (standard library only); without it the
//! tests fail, saying so.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipcprop::queue::{Durability, FileQueue, QueueConfig, Recovery, SlotName};
use ipcprop::Error;

use common::TempDir;

const READER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/format_reader/queue_reader.py"
);

// ---- Layout constants and helpers, from docs/FORMAT.md section 3 -------------------------

const SLOT_B: usize = 4096;
const DATA: usize = 8192;
const HEADER: usize = 24;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn record_size(len: usize) -> usize {
    (HEADER + len + 7) & !7
}

/// A slot's length: the fixed 64 bytes and its lease entries.
fn slot_len(b: &[u8], slot: usize) -> usize {
    64 + 16 * (u32_at(b, slot + 16) as usize).min(252)
}

/// Recomputes a slot's crc (bytes 8..12, over 12 .. 64 + 16 * lease_count) after an edit.
fn reseal(b: &mut [u8], slot: usize) {
    let end = slot + slot_len(b, slot);
    let crc = crc32c::crc32c(&b[slot + 12..end]);
    put_u32(b, slot + 8, crc);
}

/// A record as a writer lays it out, padded to a multiple of 8.
fn record(seq: u64, batch_index: u32, head_gap: u32, payload: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 4];
    r.extend((payload.len() as u32).to_le_bytes());
    r.extend(seq.to_le_bytes());
    r.extend(batch_index.to_le_bytes());
    r.extend(head_gap.to_le_bytes());
    r.extend(payload);
    let crc = crc32c::crc32c(&r[4..]);
    r[..4].copy_from_slice(&crc.to_le_bytes());
    r.resize(record_size(payload.len()), 0);
    r
}

/// Writes a header as a writer does: into the slot that is not current, generation + 1,
/// epoch + 1 (records moved), with the current slot's lease entries or none.
fn write_header(b: &mut [u8], head_offset: u64, head_seq: u64, keep_leases: bool) {
    let cur = current_slot(b);
    let other = SLOT_B - cur;
    let n = if keep_leases { u32_at(b, cur + 16) } else { 0 };
    let fixed = b[cur..cur + 64 + 16 * n as usize].to_vec();
    b[other..other + fixed.len()].copy_from_slice(&fixed);
    put_u32(b, other + 16, n);
    put_u64(b, other + 24, u64_at(b, cur + 24) + 1);
    put_u64(b, other + 32, u64_at(b, cur + 32) + 1);
    put_u64(b, other + 40, head_offset);
    put_u64(b, other + 48, head_seq);
    reseal(b, other);
}

/// The current slot of an undamaged file (the larger generation, A on a tie).
fn current_slot(b: &[u8]) -> usize {
    if u64_at(b, SLOT_B + 24) > u64_at(b, 24) {
        SLOT_B
    } else {
        0
    }
}

/// A record in an undamaged file the crate wrote.
#[derive(Debug, Clone, Copy)]
struct Rec {
    offset: usize,
    len: usize,
    seq: u64,
}

/// Whether `b[from..]` is free space (FORMAT.md: the word `ipcpfree` at every multiple of 8
/// to the end of the file).
fn is_free(b: &[u8], from: usize) -> bool {
    from.is_multiple_of(8)
        && (b.len() - from).is_multiple_of(8)
        && b[from..].chunks(8).all(|w| w == FREE)
}

const FREE: &[u8; 8] = b"ipcpfree";

/// Every record from the start of the data area, back to back (the crate never leaves
/// anything else between 8192 and the end of a file it wrote, except free space after the
/// last record).
fn records(b: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut o = DATA;
    while o + HEADER <= b.len() && !is_free(b, o) {
        let len = u32_at(b, o + 4) as usize;
        assert!(
            o + HEADER + len <= b.len(),
            "record at {o} runs past the end"
        );
        out.push(Rec {
            offset: o,
            len,
            seq: u64_at(b, o + 8),
        });
        o += record_size(len);
    }
    assert!(
        o == b.len() || b.len() <= DATA || is_free(b, o),
        "records end at {o}, file at {}",
        b.len()
    );
    out
}

// ---- Queue files made through the public API ------------------------------------------

/// A queue file the crate wrote, and how many records its last write (push) had.
struct Base {
    name: String,
    bytes: Vec<u8>,
    last_write: usize,
}

fn payload(i: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (i as usize * 31 + k * 7) as u8 ^ 0x5a)
        .collect()
}

struct Builder<'a> {
    scenario: &'static str,
    path: PathBuf,
    q: FileQueue,
    next: u32,
    last_write: usize,
    bases: &'a mut Vec<Base>,
    leased: Vec<ipcprop::queue::Leased>,
}

impl<'a> Builder<'a> {
    fn new(
        dir: &TempDir,
        scenario: &'static str,
        config: QueueConfig,
        bases: &'a mut Vec<Base>,
    ) -> Self {
        let path = dir.file(scenario);
        let q = FileQueue::open(&path, config).unwrap();
        Builder {
            scenario,
            path,
            q,
            next: 0,
            last_write: 0,
            bases,
            leased: Vec::new(),
        }
    }

    fn push(&mut self, len: usize) {
        self.q.push(&payload(self.next, len)).unwrap();
        self.next += 1;
        self.last_write = 1;
    }

    fn batch(&mut self, lens: &[usize]) {
        let msgs: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(k, &len)| payload(self.next + k as u32, len))
            .collect();
        let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
        self.q.push_batch(&refs).unwrap();
        self.next += lens.len() as u32;
        self.last_write = lens.len();
    }

    fn pop(&mut self, n: usize) {
        let got = self.q.pop_batch(n).unwrap();
        assert!(!got.is_empty(), "{}: nothing to pop", self.scenario);
    }

    fn take(&mut self) {
        let l = self.q.take().unwrap().expect("a message to take");
        self.leased.push(l);
    }

    fn ack_first(&mut self) {
        let l = self.leased.remove(0);
        self.q.ack(&l).unwrap();
    }

    fn snap(&mut self, tag: &str) {
        self.bases.push(Base {
            name: format!("{}/{tag}", self.scenario),
            bytes: std::fs::read(&self.path).unwrap(),
            last_write: self.last_write,
        });
    }
}

fn make_bases(dir: &TempDir) -> Vec<Base> {
    let mut bases = Vec::new();
    let b = &mut bases;

    let mut s = Builder::new(dir, "fresh", QueueConfig::new(), b);
    s.snap("initial");
    drop(s);

    // One push per message, lengths around the 8-byte boundaries of a record.
    let mut s = Builder::new(dir, "singles", QueueConfig::new(), b);
    for len in [0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 40] {
        s.push(len);
    }
    s.snap("pushed");
    s.pop(1);
    s.pop(2);
    s.snap("popped");
    s.push(5);
    s.push(0);
    s.snap("pushed-after-pops");
    drop(s);

    let mut s = Builder::new(dir, "batches", QueueConfig::new(), b);
    s.batch(&[5, 0, 8]);
    s.batch(&[16, 1]);
    s.batch(&[24, 3, 0, 9, 17]);
    s.snap("pushed");
    s.pop(4);
    s.snap("popped");
    s.batch(&[2, 2, 2, 2, 2, 2]);
    s.snap("pushed-after-pop");
    drop(s);

    // Leases: entries in state 1 (taken) and 2 (consumed behind an older message).
    let mut s = Builder::new(dir, "leases", QueueConfig::new(), b);
    s.batch(&[10; 8]);
    s.take();
    s.take();
    s.pop(1);
    s.snap("taken-and-popped");
    s.ack_first();
    s.batch(&[6, 7]);
    s.snap("acked-and-pushed");
    s.take();
    s.pop(2);
    s.snap("more-entries");
    drop(s);

    // A drained queue resets (head back at 8192, file truncated).
    let mut s = Builder::new(dir, "reset", QueueConfig::new().with_reclaim_over(64), b);
    for _ in 0..20 {
        s.push(30);
    }
    s.pop(20);
    s.snap("drained-reset");
    s.batch(&[3, 12, 0]);
    s.snap("pushed-after-reset");
    s.pop(1);
    s.snap("popped-after-reset");
    drop(s);

    // A lagging queue compacts (records moved to 8192, head_seq kept).
    let mut s = Builder::new(
        dir,
        "compaction",
        QueueConfig::new().with_reclaim_over(256),
        b,
    );
    for _ in 0..40 {
        s.push(20);
    }
    for _ in 0..30 {
        s.pop(1);
    }
    s.snap("compacted");
    s.batch(&[1, 2, 3, 4]);
    s.snap("pushed-after-compaction");
    s.pop(2);
    s.snap("popped-after-compaction");
    drop(s);

    // Large messages (70-200 KiB) among small ones.
    let mut s = Builder::new(dir, "big", QueueConfig::new(), b);
    s.push(70 * 1024);
    s.batch(&[130 * 1024 + 3, 3, 200 * 1024 - 5]);
    s.push(12);
    s.snap("pushed");
    s.pop(1);
    s.snap("popped");
    s.push(5);
    s.snap("pushed-after-pop");
    drop(s);

    // Drained without a reset: head at the end of the file.
    let mut s = Builder::new(dir, "drained", QueueConfig::new(), b);
    s.batch(&[4, 4, 4, 4, 4]);
    s.pop(5);
    s.snap("empty-at-eof");
    s.push(9);
    s.snap("one-more");
    drop(s);

    // Consumed records erased as the head passes them.
    let mut s = Builder::new(
        dir,
        "erase",
        QueueConfig::new().with_erase_consumed(true),
        b,
    );
    s.batch(&[10; 6]);
    s.pop(2);
    s.push(3);
    s.pop(1);
    s.snap("erased");
    drop(s);

    // An exclusive handle and a durable one write the same format.
    let config = QueueConfig::new().with_exclusive(true);
    let mut s = Builder::new(dir, "exclusive", config, b);
    s.batch(&[1, 2, 3]);
    s.push(4);
    s.pop(2);
    s.snap("popped");
    drop(s);
    let config = QueueConfig::new().with_durability(Durability::Sync);
    let mut s = Builder::new(dir, "sync", config, b);
    s.batch(&[5, 6]);
    s.pop(1);
    s.push(7);
    s.snap("popped");
    drop(s);

    // A full lease table: 252 entries, slot A's page to its last byte.
    let mut s = Builder::new(dir, "full-leases", QueueConfig::new(), b);
    s.batch(&[1; 260]);
    for _ in 0..252 {
        s.take();
    }
    assert!(matches!(s.q.take(), Err(Error::TooManyLeases { .. })));
    s.snap("252-taken");
    for _ in 0..3 {
        s.ack_first();
    }
    s.snap("3-acked");
    drop(s);

    // Many messages, popped along the way, with resets and compactions at 4 KiB.
    let mut s = Builder::new(dir, "many", QueueConfig::new().with_reclaim_over(4096), b);
    for round in 0..12usize {
        let lens: Vec<usize> = (0..1 + round % 5)
            .map(|k| (round * 13 + k * 5) % 70)
            .collect();
        s.batch(&lens);
        s.push(round * 3);
        if round % 3 == 2 {
            s.pop(3);
        }
    }
    s.snap("churned");
    s.pop(8);
    s.snap("churned-popped");
    drop(s);

    bases
}

// ---- Damage ---------------------------------------------------------------------------

struct Case {
    name: String,
    bytes: Vec<u8>,
}

fn flip(b: &[u8], at: usize, bit: u32) -> Vec<u8> {
    let mut v = b.to_vec();
    v[at] ^= 1 << bit;
    v
}

fn cat(b: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v.extend_from_slice(tail);
    v
}

fn zero(b: &[u8], range: std::ops::Range<usize>) -> Vec<u8> {
    let mut v = b.to_vec();
    v[range].iter_mut().for_each(|x| *x = 0);
    v
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn damages(base: &Base) -> Vec<Case> {
    let b = &base.bytes;
    let len = b.len();
    let big = len > 64 * 1024;
    let mut out: Vec<Case> = Vec::new();
    let mut add = |what: String, bytes: Vec<u8>| {
        out.push(Case {
            name: format!("{}: {what}", base.name),
            bytes,
        })
    };
    add("intact".into(), b.clone());

    let cur = current_slot(b);
    let head = u64_at(b, cur + 40) as usize;
    let head_seq = u64_at(b, cur + 48);
    let recs = records(b);
    let live: Vec<Rec> = recs.iter().copied().filter(|r| r.offset >= head).collect();
    let next_seq = recs.last().map_or(head_seq, |r| r.seq + 1).max(head_seq);

    // Cuts.
    let mut cuts: Vec<usize> = vec![0, 1, 100, 4095, 4096, 4159, 4160, 4161, 4200, 8191, DATA];
    let region = if big { 128 } else { 256 };
    cuts.extend((len.saturating_sub(region).max(DATA)..len).step_by(8));
    cuts.extend((head..(head + 64).min(len)).step_by(8));
    if head > DATA {
        cuts.extend([head - 1, head - 8, head - HEADER, DATA + 8]);
    }
    let pick: Vec<&Rec> = if recs.len() > 9 {
        recs[..3].iter().chain(&recs[recs.len() - 6..]).collect()
    } else {
        recs.iter().collect()
    };
    for r in &pick {
        let o = r.offset;
        let end = o + HEADER + r.len;
        cuts.extend([o - 1, o + 1, o + 8, o + 23, o + HEADER]);
        cuts.extend([end - 1, end, end + 1, o + record_size(r.len) - 1]);
    }
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts.into_iter().filter(|&c| c < len) {
        add(format!("cut at {cut}"), b[..cut].to_vec());
    }

    // Bit flips in records: consumed, at the head, in the middle, last.
    let mut chosen: Vec<Rec> = Vec::new();
    if let Some(r) = recs.first() {
        chosen.push(*r);
    }
    if !live.is_empty() {
        chosen.push(live[0]);
        chosen.push(live[live.len() / 2]);
        if live.len() >= 2 {
            chosen.push(live[live.len() - 2]);
        }
        chosen.push(live[live.len() - 1]);
    }
    chosen.sort_by_key(|r| r.offset);
    chosen.dedup_by_key(|r| r.offset);
    for r in &chosen {
        let o = r.offset;
        let mut spots: Vec<(&str, usize, u32)> = vec![
            ("crc", 0, 0),
            ("len low", 4, 0),
            ("len high", 7, 7),
            ("seq low", 8, 0),
            ("seq high", 15, 7),
            ("batch_index", 16, 0),
            ("batch_index high", 19, 7),
            ("head_gap", 20, 1),
        ];
        if r.len > 0 {
            spots.push(("payload first", HEADER, 2));
            spots.push(("payload last", HEADER + r.len - 1, 5));
        }
        if record_size(r.len) > HEADER + r.len && o + record_size(r.len) <= len {
            spots.push(("padding", record_size(r.len) - 1, 0));
        }
        for (what, at, bit) in spots {
            add(
                format!("record seq {} at {o}: flip {what}", r.seq),
                flip(b, o + at, bit),
            );
        }
    }

    // Header slots.
    let gens = [u64_at(b, 24), u64_at(b, SLOT_B + 24)];
    for (name, s, other_gen) in [("A", 0, gens[1]), ("B", SLOT_B, gens[0])] {
        let n = u32_at(b, s + 16) as usize;
        let end = s + 64 + 16 * n;
        for (what, at, bit) in [
            ("magic", 0, 0),
            ("crc", 8, 3),
            ("version", 12, 0),
            ("version high", 15, 7),
            ("lease_count", 16, 0),
            ("reserved", 20, 0),
            ("generation", 24, 0),
            ("epoch", 32, 0),
            ("head_offset", 40, 3),
            ("head_seq", 48, 0),
            ("reserved 56", 56, 6),
        ] {
            add(format!("slot {name}: flip {what}"), flip(b, s + at, bit));
        }
        if n > 0 {
            add(format!("slot {name}: flip lease seq"), flip(b, s + 64, 0));
            add(format!("slot {name}: flip lease state"), flip(b, s + 76, 1));
            add(
                format!("slot {name}: flip last lease holder"),
                flip(b, end - 8, 0),
            );
        }
        add(
            format!("slot {name}: flip a byte after the slot"),
            flip(b, end + 3, 4),
        );
        add(format!("slot {name}: zeroed"), zero(b, s..end));
        add(format!("slot {name}: page zeroed"), zero(b, s..s + 4096));
        add(format!("slot {name}: magic zeroed"), zero(b, s..s + 8));
        add(format!("slot {name}: torn after 20 bytes"), {
            let mut v = b.clone();
            v[s + 20..end].iter_mut().for_each(|x| *x = 0xaa);
            v
        });
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = b.clone();
            f(&mut v);
            reseal(&mut v, s);
            v
        };
        for version in [0u32, 1, 3, 0xffff_ffff] {
            add(
                format!("slot {name}: version {version}, crc recomputed"),
                edit(&|v| put_u32(v, s + 12, version)),
            );
        }
        add(
            format!("slot {name}: reserved fields set, crc recomputed"),
            {
                edit(&|v| {
                    put_u32(v, s + 20, 7);
                    put_u64(v, s + 56, 9);
                })
            },
        );
        add(format!("slot {name}: made current, crc recomputed"), {
            edit(&|v| put_u64(v, s + 24, other_gen + 1))
        });
        add(
            format!("slot {name}: generation equal to the other, crc recomputed"),
            edit(&|v| put_u64(v, s + 24, other_gen)),
        );
        add(format!("slot {name}: head past the end, crc recomputed"), {
            edit(&|v| put_u64(v, s + 40, (len.max(DATA) + 8) as u64))
        });
        add(
            format!("slot {name}: head not a multiple of 8, crc recomputed"),
            {
                let h = u64_at(b, s + 40);
                edit(&move |v| put_u64(v, s + 40, h + 4))
            },
        );
        add(format!("slot {name}: head below 8192, crc recomputed"), {
            edit(&|v| put_u64(v, s + 40, 4096))
        });
        add(format!("slot {name}: head_seq + 1, crc recomputed"), {
            let h = u64_at(b, s + 48);
            edit(&move |v| put_u64(v, s + 48, h + 1))
        });
        add(format!("slot {name}: lease_count 253, crc recomputed"), {
            edit(&|v| put_u32(v, s + 16, 253))
        });
        add(
            format!("slot {name}: one lease entry more, crc recomputed"),
            {
                let seq = u64_at(b, s + 48).max(if n > 0 { u64_at(b, end - 16) + 1 } else { 0 });
                edit(&move |v| {
                    put_u32(v, s + 16, n as u32 + 1);
                    put_u64(v, end, seq);
                    put_u32(v, end + 8, 0);
                    put_u32(v, end + 12, 2);
                })
            },
        );
        if n > 0 {
            add(format!("slot {name}: lease state 3, crc recomputed"), {
                edit(&|v| put_u32(v, s + 76, 3))
            });
        }
    }
    add("both slots zeroed".into(), {
        let v = zero(b, 0..64);
        zero(&v, SLOT_B..SLOT_B + 64)
    });

    // Appended bytes.
    let gap = (next_seq - head_seq) as u32;
    add("append 100 x 0xff".into(), cat(b, &[0xff; 100]));
    add("append 64 zeros".into(), cat(b, &[0; 64]));
    add("append a zero page".into(), cat(b, &[0; 4096]));
    add(
        "append 333 random bytes".into(),
        cat(b, &noise(333, len as u64)),
    );
    add("append 5 bytes".into(), cat(b, &[1, 2, 3, 4, 5]));
    // Free space (what a synced push writes ahead), whole and damaged.
    let free = |words: usize| FREE.repeat(words);
    add("append 2 words of free space".into(), cat(b, &free(2)));
    add("append a page of free space".into(), cat(b, &free(512)));
    add("append free space cut mid-word".into(), {
        cat(b, &free(3)[..20])
    });
    add("append free space with one byte changed".into(), {
        let mut t = free(64);
        t[333] ^= 0x20;
        cat(b, &t)
    });
    add("append free space with a zero word".into(), {
        let mut t = free(16);
        t[64..72].fill(0);
        cat(b, &t)
    });
    add("append free space then a torn record".into(), {
        let mut t = free(8);
        t.extend(&record(next_seq, 0, gap, &payload(98, 100))[..HEADER + 10]);
        cat(b, &t)
    });
    add(
        "append a valid record then free space (a push writing ahead)".into(),
        {
            let mut t = record(next_seq, 0, gap, b"ahead");
            t.extend(free(40));
            cat(b, &t)
        },
    );
    add(
        "append a torn record then free space (a power loss mid-push)".into(),
        {
            let mut t = record(next_seq, 0, gap, &payload(97, 64));
            t[HEADER + 3] ^= 1;
            t.extend(free(40));
            cat(b, &t)
        },
    );
    add(
        "append free space then a valid record of a later write".into(),
        {
            let mut t = free(24);
            t.extend(record(next_seq + 1, 0, gap + 1, b"later"));
            cat(b, &t)
        },
    );
    if let Some(r) = recs.first() {
        let first = b[r.offset..r.offset + record_size(r.len)].to_vec();
        add(
            "append a copy of the first record (stale)".into(),
            cat(b, &first),
        );
    }
    add(
        "append a torn record (header and 40 of 200 bytes)".into(),
        {
            let mut t = record(next_seq, 0, gap, &payload(99, 200));
            t.truncate(HEADER + 40);
            cat(b, &t)
        },
    );
    add("append a torn record (header only)".into(), {
        let t = record(next_seq, 0, gap, &payload(99, 200));
        cat(b, &t[..HEADER])
    });
    add("append a valid record (a push)".into(), {
        cat(b, &record(next_seq, 0, gap, b"pushed"))
    });
    add("append a valid record without its padding".into(), {
        cat(b, &record(next_seq, 0, gap, b"pad")[..HEADER + 3])
    });
    add("append a valid record with head_gap unknown".into(), {
        cat(b, &record(next_seq, 0, u32::MAX, b"unknown gap"))
    });
    add(
        "append 48 zeros then a valid record with batch_index above its seq".into(),
        {
            let mut t = vec![0u8; 48];
            t.extend(record(next_seq + 2, u32::MAX, gap, b"wraps"));
            cat(b, &t)
        },
    );
    add(
        format!(
            "slot {}: zeroed, then a valid record with head_gap above its seq",
            if cur == 0 { "A" } else { "B" }
        ),
        {
            let v = zero(b, cur..cur + 64);
            cat(&v, &record(next_seq, 0, u32::MAX - 1, b"gap"))
        },
    );
    for (hole, seq_ahead, batch_index) in [
        (24usize, 1u64, 0u32),
        (24, 1, 1),
        (8, 1, 0),
        (48, 2, 0),
        (40, 2, 0),
        (48, 2, 1),
        (48, 2, 2),
        (96, 1, 0),
    ] {
        let mut t = vec![0u8; hole];
        t.extend(record(next_seq + seq_ahead, batch_index, gap, b"later"));
        add(
            format!("append {hole} zeros then a valid record seq {next_seq}+{seq_ahead} batch_index {batch_index}"),
            cat(b, &t),
        );
    }

    // Power-loss holes: the last write's earlier records zeroed while later ones stay.
    let k = base.last_write.min(live.len());
    if k >= 2 {
        let w = &live[live.len() - k..];
        let first = w[0].offset;
        let last = w[k - 1].offset;
        add("hole: first record of the last write zeroed".into(), {
            zero(b, first..w[1].offset)
        });
        add(
            "hole: seq field of the last write's first record zeroed".into(),
            zero(b, first + 8..first + 16),
        );
        add(
            "hole: all but the last record of the last write zeroed".into(),
            zero(b, first..last),
        );
        add(
            "hole: from the last write's first payload to its second record's seq".into(),
            zero(b, first + HEADER..(w[1].offset + 16).min(len)),
        );
        if k >= 3 {
            add("hole: middle record of the last write zeroed".into(), {
                zero(b, w[1].offset..w[2].offset)
            });
        }
    }
    // A hole in an earlier write, followed by the last write: damage.
    if live.len() > k && k >= 1 {
        let victim = live[live.len() - k - 1];
        add(
            format!(
                "hole: record seq {} before the last write zeroed",
                victim.seq
            ),
            zero(b, victim.offset..victim.offset + record_size(victim.len)),
        );
    }
    // Two at once: a lost slot and a torn or holed tail.
    for (name, s) in [("A", 0), ("B", SLOT_B)] {
        let lost = zero(b, s..s + 64);
        if let Some(r) = live.last() {
            add(
                format!("slot {name} zeroed and the last record cut in half"),
                lost[..r.offset + (HEADER + r.len) / 2].to_vec(),
            );
        }
        add(format!("slot {name} zeroed and a torn record appended"), {
            let t = record(next_seq, 0, gap, &payload(98, 100));
            cat(&lost, &t[..HEADER + 50])
        });
        if k >= 2 {
            let w = &live[live.len() - k..];
            add(
                format!("slot {name} zeroed and the last write's first record zeroed"),
                zero(&lost, w[0].offset..w[1].offset),
            );
        }
    }
    // What a crash in the middle of a reset or a compaction leaves.
    let tail = len;
    if head > DATA && live.is_empty() {
        add("reset: header written, truncation lost".into(), {
            let mut v = b.clone();
            write_header(&mut v, DATA as u64, next_seq, false);
            v
        });
    }
    if head > DATA && !live.is_empty() && tail - head <= head - DATA {
        let mut copied = b.clone();
        copied.copy_within(head..tail, DATA);
        add(
            "compaction: records copied, header not written".into(),
            copied.clone(),
        );
        add("compaction: header written, truncation lost".into(), {
            write_header(&mut copied, DATA as u64, head_seq, true);
            copied.clone()
        });
        add("compaction: header written, truncated".into(), {
            copied[..DATA + (tail - head)].to_vec()
        });
    }
    if big {
        // Every file of a large base costs the reader (and the JSON) its megabyte of
        // payloads: a quarter of the damages, the holes and lost slots all kept.
        let mut i = 0;
        out.retain(|c| {
            i += 1;
            i % 4 == 1 || c.name.contains("hole") || c.name.contains("zeroed")
        });
    }
    out
}

// ---- The two sides ----------------------------------------------------------------------

/// What a side says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok {
        messages: Vec<Vec<u8>>,
        repairs: Vec<Repair>,
    },
    Refused {
        kind: String,
        reason: String,
    },
}

/// A repair as far as both sides can state it: the crate's [`Recovery`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Repair {
    TornTail {
        offset: u64,
        bytes: u64,
        next_seq: u64,
    },
    HeaderFallback {
        damaged: char,
        used_generation: u64,
        proven_newer: bool,
        advanced: u64,
        may_repeat_at_most: u64,
    },
    LeasesPastTail {
        next_seq: u64,
        leased: u64,
        consumed: u64,
    },
    Other(String),
}

fn same_outcome(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Outcome::Refused { kind: x, .. }, Outcome::Refused { kind: y, .. }) => x == y,
        _ => a == b,
    }
}

/// The crate's answer for the file at `path` (which it may repair and drains), and the file
/// as `FileQueue::open` left it when that open repaired or initialized something.
fn crate_side(path: &Path) -> (Outcome, Option<Vec<u8>>) {
    let refused = |e: Error| {
        let reason = e.to_string();
        let kind = if reason.contains("shorter than") {
            "not_a_queue"
        } else {
            match e {
                Error::Corrupt(_) => "corrupt",
                Error::UnsupportedVersion { .. } => "unsupported_version",
                _ => "other error",
            }
        };
        Outcome::Refused {
            kind: kind.into(),
            reason,
        }
    };
    let was_empty = std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(false);
    let q = match FileQueue::open(path, QueueConfig::new()) {
        Ok(q) => q,
        Err(e) => return (refused(e), None),
    };
    let repaired = (was_empty || !q.recoveries().is_empty()).then(|| std::fs::read(path).unwrap());
    let mut messages = Vec::new();
    loop {
        match q.pop_batch(usize::MAX) {
            Ok(got) if got.is_empty() => break,
            Ok(got) => messages.extend(got),
            Err(e) => return (refused(e), repaired),
        }
    }
    let mut repairs: Vec<Repair> = q
        .recoveries()
        .into_iter()
        .map(|r| match r {
            Recovery::TornTail {
                offset,
                bytes,
                next_seq,
            } => Repair::TornTail {
                offset,
                bytes,
                next_seq,
            },
            Recovery::HeaderFallback {
                damaged,
                used_generation,
                proven_newer,
                advanced,
                may_repeat_at_most,
                ..
            } => Repair::HeaderFallback {
                damaged: if damaged == SlotName::A { 'A' } else { 'B' },
                used_generation,
                proven_newer,
                advanced,
                may_repeat_at_most,
            },
            Recovery::LeasesPastTail {
                next_seq,
                leased,
                consumed,
            } => Repair::LeasesPastTail {
                next_seq,
                leased,
                consumed,
            },
            other => Repair::Other(format!("{other:?}")),
        })
        .collect();
    repairs.sort();
    (Outcome::Ok { messages, repairs }, repaired)
}

/// A small JSON value, enough for the reader's output.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(i128),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    fn parse(text: &str) -> Json {
        let mut p = JsonParser {
            t: text,
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value();
        p.ws();
        assert_eq!(p.i, p.s.len(), "trailing text in {text}");
        v
    }

    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m.get(key).unwrap_or(&Json::Null),
            _ => &Json::Null,
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn num(&self) -> i128 {
        match self {
            Json::Num(n) => *n,
            other => panic!("not a number: {other:?}"),
        }
    }

    fn u64(&self) -> u64 {
        u64::try_from(self.num()).expect("a u64")
    }
}

struct JsonParser<'a> {
    t: &'a str,
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(
            self.s.get(self.i),
            Some(&c),
            "JSON: expected {:?} at {}",
            c as char,
            self.i
        );
        self.i += 1;
    }

    fn value(&mut self) -> Json {
        self.ws();
        match self.s[self.i] {
            b'{' => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.s[self.i] == b'}' {
                    self.i += 1;
                    return Json::Obj(m);
                }
                loop {
                    self.ws();
                    let k = self.string();
                    self.eat(b':');
                    let v = self.value();
                    m.insert(k, v);
                    self.ws();
                    self.i += 1;
                    if self.s[self.i - 1] == b'}' {
                        return Json::Obj(m);
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.s[self.i] == b']' {
                    self.i += 1;
                    return Json::Arr(a);
                }
                loop {
                    a.push(self.value());
                    self.ws();
                    self.i += 1;
                    if self.s[self.i - 1] == b']' {
                        return Json::Arr(a);
                    }
                }
            }
            b'"' => Json::Str(self.string()),
            b't' => {
                self.i += 4;
                Json::Bool(true)
            }
            b'f' => {
                self.i += 5;
                Json::Bool(false)
            }
            b'n' => {
                self.i += 4;
                Json::Null
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i] == b'-' || self.s[self.i].is_ascii_digit())
                {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                Json::Num(t.parse().unwrap_or_else(|_| panic!("JSON number {t:?}")))
            }
        }
    }

    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out = String::new();
        loop {
            // Copy the run up to the next quote or escape whole.
            let mut j = self.i;
            while self.s[j] != b'"' && self.s[j] != b'\\' {
                j += 1;
            }
            out.push_str(&self.t[self.i..j]);
            self.i = j + 1;
            if self.s[self.i - 1] == b'"' {
                return out;
            }
            let e = self.s[self.i];
            self.i += 1;
            match e {
                b'n' => out.push('\n'),
                b't' => out.push('\t'),
                b'r' => out.push('\r'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'u' => {
                    let h = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
                    self.i += 4;
                    let code = u32::from_str_radix(h, 16).unwrap();
                    out.push(char::from_u32(code).unwrap_or('?'));
                }
                other => out.push(other as char),
            }
        }
    }
}

fn hex_decode(h: &str) -> Vec<u8> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not lower-case hex: {c}"),
    };
    let h = h.as_bytes();
    let mut out = Vec::with_capacity(h.len() / 2);
    let mut i = 0;
    while i + 1 < h.len() {
        out.push((nibble(h[i]) << 4) | nibble(h[i + 1]));
        i += 2;
    }
    out
}

fn reader_outcome(j: &Json) -> Outcome {
    match j.get("status").str() {
        "refused" => Outcome::Refused {
            kind: j.get("kind").str().into(),
            reason: j.get("reason").str().into(),
        },
        "ok" => {
            let messages = match j.get("messages") {
                Json::Arr(a) => a.iter().map(|m| hex_decode(m.str())).collect(),
                other => panic!("messages: {other:?}"),
            };
            let rec = j.get("recovery");
            let mut repairs = Vec::new();
            if let t @ Json::Obj(_) = rec.get("torn_tail") {
                repairs.push(Repair::TornTail {
                    offset: t.get("offset").u64(),
                    bytes: t.get("bytes").u64(),
                    next_seq: t.get("seq").u64(),
                });
            }
            if let f @ Json::Obj(_) = rec.get("header_fallback") {
                let before = f.get("head_seq_before").u64();
                let after = f.get("head_seq").u64();
                repairs.push(Repair::HeaderFallback {
                    damaged: f.get("lost_slot").str().chars().next().unwrap(),
                    used_generation: f.get("generation").u64(),
                    proven_newer: after > before,
                    advanced: after - before,
                    // "the messages queued after the recovered head" (`Recovery` docs).
                    may_repeat_at_most: j.get("next_seq").u64() - after,
                });
            }
            if let l @ Json::Obj(_) = rec.get("leases_past_tail") {
                repairs.push(Repair::LeasesPastTail {
                    next_seq: l.get("next_seq").u64(),
                    leased: l.get("leased").u64(),
                    consumed: l.get("consumed").u64(),
                });
            }
            repairs.sort();
            Outcome::Ok { messages, repairs }
        }
        other => panic!("reader status {other:?}: {j:?}"),
    }
}

fn require_python() {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 is required to run the independent format reader ({READER}); \
         install Python 3 (standard library only) to run this test"
    );
}

fn digest(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// Enough to tell that a file was written to since: its length, mtime and ctime.
fn fingerprint(path: &Path) -> (u64, i64, i64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

struct Compared {
    files: usize,
    repaired_files: usize,
    disagreements: Vec<String>,
    refused: BTreeMap<String, usize>,
    repaired: BTreeMap<String, usize>,
}

/// A file given to the reader, and what its answer is compared with.
struct Job {
    name: String,
    path: PathBuf,
    print: (u64, i64, i64, i64, i64),
    expected: Outcome,
}

/// Damages every base, writes each case to a file for the reader (one Python process
/// reading the paths from its stdin as they come) and a second copy for the crate, and
/// compares the answers. A file the crate repaired when it opened it is given to the
/// reader as well: a file the crate wrote, it must read as undamaged, with the messages the
/// crate then delivered.
fn compare(cases: impl Iterator<Item = Case>, dir: &TempDir) -> Compared {
    let mut child = Command::new("python3")
        .arg(READER)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python3");
    let mut to_reader = child.stdin.take().unwrap();
    let from_reader = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(from_reader)
            .lines()
            .map(|l| Json::parse(&l.expect("the reader's output")))
            .collect::<Vec<Json>>()
    });
    let mut jobs: Vec<Job> = Vec::new();
    let mut send = |name: String, bytes: &[u8], expected: Outcome| {
        let path = dir.file(&format!("r{}", jobs.len()));
        std::fs::write(&path, bytes).unwrap();
        writeln!(to_reader, "{}", path.display())
            .expect("the reader stopped reading (see its error above)");
        jobs.push(Job {
            name,
            print: fingerprint(&path),
            path,
            expected,
        });
    };

    let mut out = Compared {
        files: 0,
        repaired_files: 0,
        disagreements: Vec::new(),
        refused: BTreeMap::new(),
        repaired: BTreeMap::new(),
    };
    let mut seen = std::collections::HashSet::new();
    for case in cases {
        // A fresh file per case, none deleted before the end (deleting and creating
        // thousands of files is what costs most here, on ext4).
        let copy = dir.file(&format!("c{}", out.files));
        std::fs::write(&copy, &case.bytes).unwrap();
        let (outcome, repaired) = crate_side(&copy);
        match &outcome {
            Outcome::Refused { kind, .. } => *out.refused.entry(kind.clone()).or_default() += 1,
            Outcome::Ok { repairs, .. } => {
                for rep in repairs {
                    let k = format!("{rep:?}");
                    let k = k.split([' ', '{']).next().unwrap().to_string();
                    *out.repaired.entry(k).or_default() += 1;
                }
            }
        }
        if let (Some(file), Outcome::Ok { messages, .. }) = (repaired, &outcome) {
            // Many damaged copies repair to the same file (every cut inside one record).
            if seen.insert(digest(&file)) {
                let clean = Outcome::Ok {
                    messages: messages.clone(),
                    repairs: Vec::new(),
                };
                send(
                    format!("{} (as the crate repaired it)", case.name),
                    &file,
                    clean,
                );
                out.repaired_files += 1;
            }
        }
        send(case.name, &case.bytes, outcome);
        out.files += 1;
    }
    drop(to_reader);
    let reader_side = reader.join().expect("the reader's output");
    let status = child.wait().unwrap();
    assert!(status.success(), "the reader failed: {status}");
    assert_eq!(reader_side.len(), jobs.len(), "one JSON object per file");

    for (job, json) in jobs.iter().zip(&reader_side) {
        assert_eq!(
            fingerprint(&job.path),
            job.print,
            "{}: the reader changed the file",
            job.name
        );
        let r = reader_outcome(json);
        if !same_outcome(&r, &job.expected) {
            out.disagreements.push(format!(
                "{}\n    reader: {}\n    crate:  {}",
                job.name,
                short(&r),
                short(&job.expected)
            ));
        }
    }
    out
}

fn short(o: &Outcome) -> String {
    match o {
        Outcome::Refused { kind, reason } => format!("refused {kind}: {reason}"),
        Outcome::Ok { messages, repairs } => {
            let lens: Vec<usize> = messages.iter().map(|m| m.len()).collect();
            format!(
                "ok, {} messages (lengths {lens:?}), repairs {repairs:?}",
                messages.len()
            )
        }
    }
}

#[test]
fn the_independent_reader_and_the_crate_agree_on_every_file() {
    require_python();
    let t0 = std::time::Instant::now();
    let src = TempDir::new("fmt-src");
    let bases = make_bases(&src);
    let work = TempDir::new("fmt-cases");
    let result = compare(bases.iter().flat_map(damages), &work);
    eprintln!(
        "{} files compared, and {} as the crate repaired them, in {:.1?}; \
         crate refused {:?}; repairs reported {:?}",
        result.files,
        result.repaired_files,
        t0.elapsed(),
        result.refused,
        result.repaired
    );
    assert!(
        result.disagreements.is_empty(),
        "{} of {} files: the reader and the crate disagree:\n{}",
        result.disagreements.len(),
        result.files,
        result.disagreements.join("\n")
    );
}

// ---- Files made for the gaps of the document -------------------------------------------

/// A header slot as the document lays it out: `leases` are (seq, holder, state).
fn slot(generation: u64, head_offset: u64, head_seq: u64, leases: &[(u64, u32, u32)]) -> Vec<u8> {
    let mut v = vec![0u8; 64 + 16 * leases.len()];
    v[..8].copy_from_slice(b"ipcpqueu");
    put_u32(&mut v, 12, 2);
    put_u32(&mut v, 16, leases.len() as u32);
    put_u64(&mut v, 24, generation);
    put_u64(&mut v, 40, head_offset);
    put_u64(&mut v, 48, head_seq);
    for (i, &(seq, holder, state)) in leases.iter().enumerate() {
        put_u64(&mut v, 64 + 16 * i, seq);
        put_u32(&mut v, 72 + 16 * i, holder);
        put_u32(&mut v, 76 + 16 * i, state);
    }
    reseal(&mut v, 0);
    v
}

/// A queue file: slot A, slot B (either may be empty: all zero), records.
fn image(a: &[u8], b: &[u8], records: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![0u8; DATA];
    v[..a.len()].copy_from_slice(a);
    v[SLOT_B..SLOT_B + b.len()].copy_from_slice(b);
    for r in records {
        v.extend_from_slice(r);
    }
    v
}

/// Files a healthy writer may not produce, made for the places where `docs/FORMAT.md`
/// section 3 is silent or ambiguous (`tests/format_reader/GAPS.md`, labels G3..G9): the
/// reader's assumption and the crate's behaviour must be the same.
fn gap_probes() -> Vec<Case> {
    let init_b = slot(0, DATA as u64, 0, &[]);
    let r = |seq: u64, gap: u32, m: &str| record(seq, 0, gap, m.as_bytes());
    let three = || vec![r(0, 0, "m0"), r(1, 1, "m1"), r(2, 2, "m2")];
    let mut cases = vec![
        (
            "G3: a state-1 entry with holder 5000, a state-2 entry with holder 7",
            image(
                &slot(1, 8192, 0, &[(0, 5000, 1), (1, 7, 2)]),
                &init_b,
                &three(),
            ),
        ),
        (
            "G4: a state-2 entry at head_seq",
            image(&slot(1, 8192, 0, &[(0, 0, 2)]), &init_b, &three()),
        ),
        (
            "G4: a state-2 entry past the end of the records",
            image(&slot(1, 8192, 0, &[(7, 0, 2)]), &init_b, &three()),
        ),
        ("G5: non-zero padding", {
            let mut v = image(&slot(1, 8192, 0, &[]), &init_b, &three());
            v[DATA + 31] = 0xee;
            v
        }),
        ("G6: the last record's padding missing", {
            let v = image(&slot(1, 8192, 0, &[]), &init_b, &three());
            v[..v.len() - 6].to_vec()
        }),
        (
            "G7: head_gap above seq in a valid record, slot B lost",
            image(
                &slot(1, 8192, 0, &[]),
                &[],
                &[r(0, 0, "m0"), r(1, u32::MAX - 1, "m1")],
            ),
        ),
        (
            "G7: batch_index above seq in a valid record after the tail",
            {
                let mut v = image(&slot(1, 8192, 0, &[]), &init_b, &[r(0, 0, "m0")]);
                v.extend(vec![0u8; 48]);
                v.extend(record(3, u32::MAX, 3, b"m3"));
                v
            },
        ),
        (
            "G8/G10: slot B lost, records prove the head moved to 1",
            image(
                &slot(1, 8192, 0, &[]),
                &[],
                &[r(0, 0, "m0"), r(1, 0, "m1"), r(2, 1, "m2")],
            ),
        ),
        (
            "G8/G10: slot A lost, records prove nothing",
            image(&[], &slot(2, 8192, 0, &[]), &three()),
        ),
        (
            "G8: slot B lost, the record proving the head sits after a hole",
            {
                let recs = [
                    r(0, 0, "m0"),
                    record(1, 0, 1, b"m1"),
                    record(2, 1, 0, b"m2"),
                ];
                let mut v = image(&slot(1, 8192, 0, &[]), &[], &recs);
                let hole = DATA + recs[0].len();
                v[hole..hole + 8].fill(0);
                v
            },
        ),
        (
            "G9: slot B lost, the head moves to h where a state-2 entry sits",
            image(
                &slot(1, 8192, 0, &[(1, 0, 2)]),
                &[],
                &[r(0, 0, "m0"), r(1, 0, "m1"), r(2, 1, "m2")],
            ),
        ),
        (
            "G11: a remainder shorter than a record header",
            cat(&image(&slot(1, 8192, 0, &[]), &init_b, &three()), &[0; 8]),
        ),
    ];
    // G2: a slot with the magic and another version refuses the file even when the
    // other slot is current and fine.
    let mut old = slot(1, 8192, 0, &[]);
    put_u32(&mut old, 8, 3);
    cases.push((
        "G2: the older slot has version 3",
        image(&old, &slot(2, 8192, 0, &[]), &three()),
    ));
    cases
        .into_iter()
        .map(|(name, bytes)| Case {
            name: name.to_string(),
            bytes,
        })
        .collect()
}

#[test]
fn the_gaps_of_the_document_resolve_the_same_way_in_the_reader_and_the_crate() {
    require_python();
    let work = TempDir::new("fmt-gaps");
    let result = compare(gap_probes().into_iter(), &work);
    assert!(
        result.disagreements.is_empty(),
        "{} of {} files: the reader and the crate disagree:\n{}",
        result.disagreements.len(),
        result.files,
        result.disagreements.join("\n")
    );
}
