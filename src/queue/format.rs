//! The queue file's format (byte by byte in `docs/FORMAT.md`, section 3).
//!
//! ```text
//! offset 0      header slot A (64 bytes + 16 per lease entry, in a 4096-byte page)
//! offset 4096   header slot B
//! offset 8192   records, back to back, each 8-byte aligned
//! ```
//!
//! A header slot holds the consumer's position (`head_offset`, `head_seq`), a `generation`
//! (the valid slot with the higher one wins), an `epoch` (bumped whenever records move:
//! compaction or reset) and the lease table (messages taken under a lease, or consumed
//! while an older one is leased), with a CRC-32C over all of it. Slots are written alternately, so a torn write of
//! one leaves the other. A record is `len u32 | crc u32 | seq u64 | payload | pad`, its CRC
//! over `seq | len | payload`: a record reaching the disk whole *is* the commit, and the
//! sequence number rejects a stale record from before a compaction or reset.

/// Page size: the two header slots live on different pages.
pub(crate) const PAGE: u64 = 4096;
/// Where records start.
pub(crate) const DATA_START: u64 = 2 * PAGE;
/// "ipcpqueu", little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"ipcpqueu");
/// Format version.
pub(crate) const VERSION: u32 = 1;
/// Bytes of a header slot's fixed part; lease entries follow it.
pub(crate) const SLOT_FIXED: usize = 64;
/// Bytes of one lease entry.
pub(crate) const LEASE_LEN: usize = 16;
/// Most lease entries a slot holds (its page, less the fixed part).
pub(crate) const MAX_LEASES: usize = (PAGE as usize - SLOT_FIXED) / LEASE_LEN;
/// Bytes of a record header.
pub(crate) const RECORD_HEADER: usize = 16;

/// What a lease entry says about one message between head and tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseState {
    /// Taken under a lease by `holder`, not yet acknowledged.
    Leased {
        /// The holder's id (an OFD lock byte that is held while the holder lives).
        holder: u32,
    },
    /// Consumed (popped, or acknowledged) while an older message still blocks the head.
    Done,
}

/// One lease entry: message `seq` and its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) seq: u64,
    pub(crate) state: LeaseState,
}

/// One header slot, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) generation: u64,
    pub(crate) epoch: u64,
    pub(crate) head_offset: u64,
    pub(crate) head_seq: u64,
    /// Messages at or after the head that are leased or consumed out of order, by seq.
    pub(crate) leases: Vec<Lease>,
}

impl Slot {
    /// Encodes the slot: the fixed part and its lease entries.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SLOT_FIXED + LEASE_LEN * self.leases.len()];
        b[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(self.leases.len() as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.generation.to_le_bytes());
        b[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        b[32..40].copy_from_slice(&self.head_offset.to_le_bytes());
        b[40..48].copy_from_slice(&self.head_seq.to_le_bytes());
        for (i, l) in self.leases.iter().enumerate() {
            let e = &mut b[SLOT_FIXED + i * LEASE_LEN..SLOT_FIXED + (i + 1) * LEASE_LEN];
            e[0..8].copy_from_slice(&l.seq.to_le_bytes());
            let (holder, state) = match l.state {
                LeaseState::Leased { holder } => (holder, 1u32),
                LeaseState::Done => (0, 2),
            };
            e[8..12].copy_from_slice(&holder.to_le_bytes());
            e[12..16].copy_from_slice(&state.to_le_bytes());
        }
        let crc = slot_crc(&b);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a slot from its page; `Err` says why it is not valid.
    pub(crate) fn decode(b: &[u8]) -> Result<Slot, String> {
        if b.len() < SLOT_FIXED {
            return Err(format!("{} bytes, need {SLOT_FIXED}", b.len()));
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        if u64_at(0) != MAGIC {
            return Err(format!("magic {:#018x}", u64_at(0)));
        }
        let count = u32_at(12) as usize;
        if count > MAX_LEASES || SLOT_FIXED + count * LEASE_LEN > b.len() {
            return Err(format!("{count} lease entries, at most {MAX_LEASES}"));
        }
        let body = &b[..SLOT_FIXED + count * LEASE_LEN];
        let crc = slot_crc(body);
        if u32_at(48) != crc {
            return Err(format!(
                "checksum {:#010x}, contents hash to {crc:#010x}",
                u32_at(48)
            ));
        }
        if u32_at(8) != VERSION {
            return Err(format!(
                "format version {}, this build reads {VERSION}",
                u32_at(8)
            ));
        }
        let head_seq = u64_at(40);
        let mut leases = Vec::with_capacity(count);
        for i in 0..count {
            let e = SLOT_FIXED + i * LEASE_LEN;
            let seq = u64_at(e);
            let state = match u32_at(e + 12) {
                1 => LeaseState::Leased {
                    holder: u32_at(e + 8),
                },
                2 => LeaseState::Done,
                other => return Err(format!("lease entry {i} in unknown state {other}")),
            };
            if seq < head_seq || leases.last().is_some_and(|l: &Lease| l.seq >= seq) {
                return Err(format!("lease entry {i} (message {seq}) out of order"));
            }
            leases.push(Lease { seq, state });
        }
        let slot = Slot {
            generation: u64_at(16),
            epoch: u64_at(24),
            head_offset: u64_at(32),
            head_seq,
            leases,
        };
        if slot.head_offset < DATA_START || !slot.head_offset.is_multiple_of(8) {
            return Err(format!(
                "head offset {} is not a record boundary",
                slot.head_offset
            ));
        }
        Ok(slot)
    }
}

/// CRC-32C of a slot's bytes with its checksum field (48..52) and the fixed part's zero
/// padding left out: over bytes 0..48, then 64.. (the lease entries).
fn slot_crc(b: &[u8]) -> u32 {
    let c = crc32c::crc32c(&b[..48]);
    crc32c::crc32c_append(c, &b[SLOT_FIXED..])
}

/// Size of a record with a payload of `len` bytes.
pub(crate) fn record_size(len: usize) -> u64 {
    ((RECORD_HEADER + len + 7) & !7) as u64
}

/// Appends a record to `out`.
pub(crate) fn encode_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = record_crc(seq, len, payload);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    let padded = start + record_size(payload.len()) as usize;
    out.resize(padded, 0);
}

/// The checksum of a record: CRC-32C over `seq` (u64 LE), `len` (u32 LE), payload.
pub(crate) fn record_crc(seq: u64, len: u32, payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&seq.to_le_bytes());
    let c = crc32c::crc32c_append(c, &len.to_le_bytes());
    crc32c::crc32c_append(c, payload)
}

/// A record header, decoded (not yet checked against its payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) len: u32,
    pub(crate) crc: u32,
    pub(crate) seq: u64,
}

impl RecordHeader {
    pub(crate) fn decode(b: &[u8; RECORD_HEADER]) -> RecordHeader {
        RecordHeader {
            len: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            crc: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            seq: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        }
    }
}
