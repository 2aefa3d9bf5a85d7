//! The bodies of the fuzz targets in `fuzz/`, as library functions: `cargo fuzz` runs them
//! under libFuzzer, and `cargo test` replays the committed corpus through the very same
//! code on stable (`tests/fuzz_corpus.rs`). Each takes the raw fuzzer input; structured
//! inputs are decoded from it with `arbitrary`. Each panics only if a property fails (that
//! is the fuzzer's signal); bad input must give errors, never panics.
//!
//! | target | what it feeds | property |
//! | --- | --- | --- |
//! | `frame_decode` | arbitrary bytes in arbitrary chunks to the frame decoder | no panic; every frame within the maximum; errors are sticky |
//! | `frame_roundtrip` | messages encoded, split at arbitrary points, decoded | the same messages come back |
//! | `ring_hostile` | arbitrary bytes over a ring's header and data, then sends and receives | only typed errors or well-formed messages; no panic, no endless loop |
//! | `queue_recover` | arbitrary file contents opened as a queue and drained | a valid prefix or a Corrupt error; no panic |
//! | `queue_ops` | operation sequences with reopens and crashes | the queue behaves like a `VecDeque` |

use std::collections::VecDeque;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use crate::error::Error;
use crate::frame::{self, FrameDecoder};
use crate::queue::storage::SimDisk;
use crate::queue::{QueueConfig, StorageQueue};
use crate::transport::{Receiver, Sender};

/// Feeds `data` to a decoder with a small maximum, in chunks whose sizes come from the
/// input's first bytes.
pub fn frame_decode(data: &[u8]) {
    let (sizes, stream) = data.split_at(data.len().min(8));
    let mut dec = FrameDecoder::with_max_message_len(4096);
    let mut at = 0;
    let mut k = 0;
    let mut failed = None;
    while at < stream.len() {
        let n = (usize::from(sizes.get(k % sizes.len().max(1)).copied().unwrap_or(16)) + 1)
            .min(stream.len() - at);
        k += 1;
        dec.feed(&stream[at..at + n]);
        at += n;
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => assert!(f.len() <= 4096, "a frame over the maximum was returned"),
                Ok(None) => break,
                Err(e) => {
                    if let Some(prev) = &failed {
                        assert_eq!(prev, &e, "a poisoned decoder changed its error");
                    }
                    failed = Some(e);
                    break;
                }
            }
        }
    }
    let _ = dec.finish();
}

/// Input of [`frame_roundtrip`].
#[derive(Debug, Arbitrary)]
pub struct Roundtrip {
    /// The messages.
    pub msgs: Vec<Vec<u8>>,
    /// Chunk sizes to split the encoded stream at (cycled; 0 counts as 1).
    pub splits: Vec<u16>,
}

/// Encodes messages, splits the stream, decodes: the same messages, and a clean end.
pub fn frame_roundtrip(data: &[u8]) {
    let Ok(input) = Roundtrip::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let mut stream = Vec::new();
    for m in &input.msgs {
        frame::encode_into(m, &mut stream).expect("messages from a fuzz input fit in a frame");
    }
    let mut dec = FrameDecoder::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < stream.len() {
        let n = usize::from(
            input
                .splits
                .get(k % input.splits.len().max(1))
                .copied()
                .unwrap_or(64),
        )
        .max(1);
        let n = n.min(stream.len() - at);
        k += 1;
        dec.feed(&stream[at..at + n]);
        at += n;
        while let Some(f) = dec.next_frame().expect("a well-formed stream decodes") {
            out.push(f.to_vec());
        }
    }
    assert_eq!(out, input.msgs, "messages changed on the way");
    dec.finish().expect("the stream ended at a frame boundary");
}

/// Input of [`ring_hostile`].
#[derive(Debug, Arbitrary)]
pub struct Hostile {
    /// Writes a hostile peer makes: (offset into the mapping, bytes).
    pub scribbles: Vec<(u16, Vec<u8>)>,
    /// Operations: `Some(len)` sends a message of that length (mod 2048), `None` receives.
    pub ops: Vec<Option<u16>>,
}

/// A 4 KiB ring, scribbled on by a "peer", then used: every operation returns a message
/// or a typed error, and never panics or hangs (all operations are non-blocking).
pub fn ring_hostile(data: &[u8]) {
    let Ok(input) = Hostile::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let Ok((mut tx, mut rx)) =
        crate::shm::channel_with(crate::shm::RingConfig::new().with_capacity(4096))
    else {
        return;
    };
    let Ok(map) = memmap2::MmapOptions::new()
        .len(8192)
        .map_raw(&tx.memory_fd())
    else {
        return;
    };
    for (off, bytes) in input.scribbles.iter().take(64) {
        let bytes = &bytes[..bytes.len().min(64)];
        let off = usize::from(*off).min(8192 - bytes.len());
        // SAFETY: in bounds of a live 8192-byte shared mapping; a hostile peer writing
        // anything anywhere is exactly what is being tested, and the ring only ever reads
        // these bytes through atomics and validated copies.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), map.as_mut_ptr().add(off), bytes.len())
        };
    }
    for op in input.ops.iter().take(256) {
        match op {
            Some(len) => match tx.try_send(&vec![0xa5; usize::from(*len) % 2048]) {
                Ok(())
                | Err(
                    Error::Full
                    | Error::Corrupt(_)
                    | Error::Disconnected
                    | Error::MessageTooLarge { .. },
                ) => {}
                Err(e) => panic!("send: unexpected {e}"),
            },
            None => match rx.recv_timeout(Duration::ZERO) {
                Ok(m) => assert!(m.len() <= 2040, "a message over the maximum"),
                Err(Error::Timeout(_) | Error::Empty | Error::Corrupt(_) | Error::Disconnected) => {
                }
                Err(e) => panic!("receive: unexpected {e}"),
            },
        }
    }
}

/// Opens arbitrary bytes as a queue file (on the simulated disk) and drains it: a valid
/// prefix or a Corrupt error, never a panic, and a drained queue stays empty.
pub fn queue_recover(data: &[u8]) {
    let config = QueueConfig::new().with_max_message_len(1 << 16);
    let Ok(mut q) = StorageQueue::open(SimDisk::from_bytes(data.to_vec()), config) else {
        return;
    };
    let mut n = 0;
    loop {
        match q.pop_batch(64) {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => {
                n += batch.len();
                assert!(
                    batch.iter().all(|m| m.len() <= 1 << 16),
                    "a message over the maximum"
                );
                assert!(
                    n <= data.len() / 24 + 1,
                    "more messages than the file could hold"
                );
            }
            Err(_) => return,
        }
    }
    assert_eq!(q.len().ok(), Some(0), "a drained queue is not empty");
}

/// One operation of [`queue_ops`].
#[derive(Debug, Arbitrary)]
pub enum QueueOp {
    /// Push one message of this length (mod 5000).
    Push(u16),
    /// Push a batch.
    PushBatch(Vec<u8>),
    /// Pop one.
    Pop,
    /// Pop up to this many (mod 8).
    PopBatch(u8),
    /// Reopen the queue on the same disk.
    Reopen,
    /// The process dies; the page cache survives.
    Crash,
}

/// Operation sequences against a `VecDeque` model.
pub fn queue_ops(data: &[u8]) {
    let Ok(ops) = Vec::<QueueOp>::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let config = QueueConfig::new()
        .with_max_message_len(1 << 16)
        .with_reclaim_over(256);
    let mut disk = SimDisk::new();
    let mut q = StorageQueue::open(disk.clone(), config).expect("a new queue opens");
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    let mut next = 0u32;
    let mut make = |len: usize| {
        next += 1;
        let mut m = next.to_le_bytes().to_vec();
        m.resize(len.max(4), next as u8);
        m
    };
    for op in ops.into_iter().take(200) {
        match op {
            QueueOp::Push(len) => {
                let m = make(usize::from(len) % 5000);
                q.push(&m).expect("push");
                model.push_back(m);
            }
            QueueOp::PushBatch(lens) => {
                let msgs: Vec<Vec<u8>> = lens
                    .iter()
                    .take(16)
                    .map(|&l| make(usize::from(l)))
                    .collect();
                let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
                q.push_batch(&refs).expect("push_batch");
                model.extend(msgs);
            }
            QueueOp::Pop => assert_eq!(q.pop().expect("pop"), model.pop_front()),
            QueueOp::PopBatch(n) => {
                let n = usize::from(n % 8);
                let want: Vec<Vec<u8>> = (0..n).map_while(|_| model.pop_front()).collect();
                assert_eq!(q.pop_batch(n).expect("pop_batch"), want);
            }
            QueueOp::Reopen => q = StorageQueue::open(disk.clone(), config).expect("reopen"),
            QueueOp::Crash => {
                disk = disk.after_process_crash();
                q = StorageQueue::open(disk.clone(), config).expect("open after a crash");
            }
        }
        assert_eq!(q.len().expect("len"), model.len() as u64);
    }
}
