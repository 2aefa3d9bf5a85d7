//! The ring's memory layout, shared by every process that maps it (byte by byte in
//! `docs/FORMAT.md`).
//!
//! ```text
//! offset 0     header (384 bytes, #[repr(C)], three 128-byte lines)
//!   line 0     magic u64 "ipcpring", version u32, (pad u32), capacity u64
//!   line 1     written by the sender:   tail u64, tx_waiting u32, rx_seq u32
//!   line 2     written by the receiver: head u64, rx_waiting u32, tx_seq u32
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

/// Words the sender writes.
#[repr(C)]
pub(crate) struct SenderWords {
    /// Position after the last published record.
    pub(crate) tail: AtomicU64,
    /// Non-zero while the sender sleeps waiting for space.
    pub(crate) tx_waiting: AtomicU32,
    /// Bumped by the sender to wake the receiver; the receiver's futex word.
    pub(crate) rx_seq: AtomicU32,
}

/// Words the receiver writes.
#[repr(C)]
pub(crate) struct ReceiverWords {
    /// Position of the next record to read; everything before it is free.
    pub(crate) head: AtomicU64,
    /// Non-zero while the receiver sleeps waiting for a message.
    pub(crate) rx_waiting: AtomicU32,
    /// Bumped by the receiver to wake the sender; the sender's futex word.
    pub(crate) tx_seq: AtomicU32,
}

/// The shared header.
#[repr(C)]
pub(crate) struct Header {
    pub(crate) fixed: Line<Fixed>,
    pub(crate) sender: Line<SenderWords>,
    pub(crate) receiver: Line<ReceiverWords>,
}

#[cfg(not(ipcprop_loom))]
const _: () = {
    assert!(std::mem::size_of::<Header>() == 384);
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
        Header {
            fixed: Line(Fixed {
                magic: AtomicU64::new(MAGIC),
                version: AtomicU32::new(VERSION),
                _reserved: AtomicU32::new(0),
                capacity: AtomicU64::new(capacity as u64),
            }),
            sender: Line(SenderWords {
                tail: AtomicU64::new(0),
                tx_waiting: AtomicU32::new(0),
                rx_seq: AtomicU32::new(0),
            }),
            receiver: Line(ReceiverWords {
                head: AtomicU64::new(0),
                rx_waiting: AtomicU32::new(0),
                tx_seq: AtomicU32::new(0),
            }),
        }
    }
}
