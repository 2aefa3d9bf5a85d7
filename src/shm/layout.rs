//! The ring's memory layout, shared by every process that maps it (byte by byte in
//! `docs/FORMAT.md`).
//!
//! ```text
//! offset 0     header (640 bytes, #[repr(C)], five 128-byte lines)
//!   line 0     magic u64 "ipcpring", version u32, (pad u32), capacity u64
//!   line 1     tail u64 (the sender's index)
//!   line 2     head u64 (the receiver's index)
//!   line 3     the receiver's sleep words: waiting u32, seq u32
//!   line 4     the sender's sleep words: waiting u32, seq u32
//! offset 4096  data: `capacity` bytes (a power of two), records back to back
//! ```
//!
//! `head` and `tail` are byte counts since creation (never wrapped); the offset of a
//! position is `pos % capacity`. A record is an 8-byte header (`len` u32 LE, `!len` u32 LE)
//! then `len` payload bytes, padded to a multiple of 8. A record never wraps: when it does
//! not fit before the end, a padding record (`len = u32::MAX`) fills the rest of the lap.
//! Lines are 128 bytes apart so the two sides' hot words never share a cache line (nor an
//! adjacent-line prefetch pair).

use crate::sync::{AtomicU32, AtomicU64};

/// "ipcpring", little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"ipcpring");
/// Layout version; bumped on any change to this file.
pub(crate) const VERSION: u32 = 1;
/// Where the data area starts in the mapping.
#[cfg_attr(ipcprop_loom, allow(dead_code))]
pub(crate) const DATA_OFFSET: usize = 4096;
/// Bytes of a record header.
pub(crate) const RECORD_HEADER: usize = 8;
/// Records start at multiples of this (so every record header, and every payload word,
/// is an aligned 8-byte word of the data area).
pub(crate) const RECORD_ALIGN: u64 = 8;
/// The `len` of a padding record.
pub(crate) const PAD: u32 = u32::MAX;
/// Smallest data capacity of a ring, in bytes.
pub const MIN_CAPACITY: usize = 64;
/// Largest data capacity of a ring, in bytes (1 GiB).
pub const MAX_CAPACITY: usize = 1 << 30;

/// Pads to 128 bytes, so neighbouring fields live on different cache-line pairs.
#[repr(C, align(128))]
pub(crate) struct Line<T>(pub(crate) T);

/// Fixed facts, written once by the creator before the ring is shared.
#[repr(C)]
pub(crate) struct Fixed {
    pub(crate) magic: AtomicU64,
    pub(crate) version: AtomicU32,
    pub(crate) _reserved: AtomicU32,
    pub(crate) capacity: AtomicU64,
}

/// One side's sleep words: its waiting flag and the futex word it sleeps on. Written
/// only when that side goes to sleep or is woken, so they live apart from the hot indices:
/// checking "is the other side asleep?" after every message then reads a line nobody is
/// writing, instead of pulling the other side's index line across cores.
#[repr(C)]
pub(crate) struct Sleep {
    /// Non-zero while this side sleeps (written by the sleeper).
    pub(crate) waiting: AtomicU32,
    /// The futex word this side sleeps on; the waker adds 1 before waking it.
    pub(crate) seq: AtomicU32,
}

/// The shared header: five 128-byte lines.
#[repr(C)]
pub(crate) struct Header {
    pub(crate) fixed: Line<Fixed>,
    /// Position after the last published record (written by the sender).
    pub(crate) tail: Line<AtomicU64>,
    /// Position of the next record to read; everything before it is free (written by the
    /// receiver).
    pub(crate) head: Line<AtomicU64>,
    /// The receiver's sleep words.
    pub(crate) rx_sleep: Line<Sleep>,
    /// The sender's sleep words.
    pub(crate) tx_sleep: Line<Sleep>,
}

#[cfg(not(ipcprop_loom))]
const _: () = {
    assert!(std::mem::size_of::<Header>() == 640);
    assert!(std::mem::size_of::<Header>() <= DATA_OFFSET);
    assert!(std::mem::align_of::<Header>() == 128);
};

/// Rounds a record of `len` payload bytes up to its size in the ring.
pub(crate) fn record_size(len: usize) -> usize {
    (RECORD_HEADER + len + 7) & !7
}

/// The longest message a ring of `capacity` bytes carries: a record of up to half the
/// capacity always fits once the receiver has caught up, whatever the wrap position.
pub(crate) fn max_message(capacity: usize) -> usize {
    capacity / 2 - RECORD_HEADER
}

/// Encodes a record header.
pub(crate) fn encode_record_header(len: u32) -> [u8; RECORD_HEADER] {
    let mut h = [0u8; RECORD_HEADER];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..].copy_from_slice(&(!len).to_le_bytes());
    h
}

/// Decodes a record header: `Some(len)` if its check word matches.
pub(crate) fn decode_record_header(h: [u8; RECORD_HEADER]) -> Option<u32> {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let check = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (check == !len).then_some(len)
}

impl Header {
    /// A fresh header (for the loom model, which allocates it on the heap).
    #[cfg(ipcprop_loom)]
    pub(crate) fn new(capacity: usize) -> Header {
        let sleep = || {
            Line(Sleep {
                waiting: AtomicU32::new(0),
                seq: AtomicU32::new(0),
            })
        };
        Header {
            fixed: Line(Fixed {
                magic: AtomicU64::new(MAGIC),
                version: AtomicU32::new(VERSION),
                _reserved: AtomicU32::new(0),
                capacity: AtomicU64::new(capacity as u64),
            }),
            tail: Line(AtomicU64::new(0)),
            head: Line(AtomicU64::new(0)),
            rx_sleep: sleep(),
            tx_sleep: sleep(),
        }
    }
}
