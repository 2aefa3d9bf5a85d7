//! The queue file's format, version 2 (byte by byte in `docs/FORMAT.md`, section 3).
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
//! while an older one is leased), with a CRC-32C over all of it. Slots are written
//! alternately, so a torn write of one leaves the other.
//!
//! A record is `crc u32 | len u32 | seq u64 | batch_index u32 | head_gap u32 | payload |
//! pad`, its CRC over everything after the CRC field up to the end of the payload: a
//! record reaching the disk whole *is* the commit, and the sequence number rejects a stale
//! record from before a compaction or reset. `batch_index` (how many records precede this
//! one in the same write) tells a torn last write from damage followed by later writes;
//! `head_gap` (how far the head was behind when the record was written) lets recovery
//! prove how far consumers had got when a header slot is lost.

/// Page size: the two header slots live on different pages.
pub(crate) const PAGE: u64 = 4096;
/// Where records start.
pub(crate) const DATA_START: u64 = 2 * PAGE;
/// "ipcpqueu", little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"ipcpqueu");
/// Format version.
pub(crate) const VERSION: u32 = 2;
/// Bytes of a header slot's fixed part; lease entries follow it.
pub(crate) const SLOT_FIXED: usize = 64;
/// Bytes of one lease entry.
pub(crate) const LEASE_LEN: usize = 16;
/// Most lease entries a slot holds (its page, less the fixed part).
pub(crate) const MAX_LEASES: usize = (PAGE as usize - SLOT_FIXED) / LEASE_LEN;
/// Bytes of a record header.
pub(crate) const RECORD_HEADER: usize = 24;
/// `head_gap` value meaning "the head was 2^32 - 1 or more messages behind".
pub(crate) const GAP_UNKNOWN: u32 = u32::MAX;
/// Lease holder ids are `0 .. HOLDERS`.
pub(crate) const HOLDERS: u32 = 4096;

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

/// Why a slot's bytes are not a usable header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SlotError {
    /// The slot carries the magic and another format version: the whole file is of a
    /// format this build does not read, and must be refused rather than half-read.
    Version(u32),
    /// Damaged, torn, or never written: the reason, for the error message.
    Invalid(String),
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    b.get(i..i + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    b.get(i..i + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

impl Slot {
    /// Encodes the slot: the fixed part and its lease entries.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SLOT_FIXED + LEASE_LEN * self.leases.len()];
        b[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        b[12..16].copy_from_slice(&VERSION.to_le_bytes());
        b[16..20].copy_from_slice(&(self.leases.len() as u32).to_le_bytes());
        b[24..32].copy_from_slice(&self.generation.to_le_bytes());
        b[32..40].copy_from_slice(&self.epoch.to_le_bytes());
        b[40..48].copy_from_slice(&self.head_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.head_seq.to_le_bytes());
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
        let crc = crc32c::crc32c(&b[12..]);
        b[8..12].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a slot from its page (`b` is the page, or what of it the file holds).
    pub(crate) fn decode(b: &[u8]) -> Result<Slot, SlotError> {
        let invalid = |why: String| Err(SlotError::Invalid(why));
        if b.len() < SLOT_FIXED {
            return invalid(format!("{} bytes, need {SLOT_FIXED}", b.len()));
        }
        if u64_at(b, 0) != MAGIC {
            if b[..SLOT_FIXED].iter().all(|&x| x == 0) {
                return invalid("all zero".into());
            }
            return invalid(format!("magic {:#018x}", u64_at(b, 0)));
        }
        let count = u32_at(b, 16) as usize;
        if count > MAX_LEASES || SLOT_FIXED + count * LEASE_LEN > b.len() {
            return invalid(format!("{count} lease entries, at most {MAX_LEASES}"));
        }
        let crc = crc32c::crc32c(&b[12..SLOT_FIXED + count * LEASE_LEN]);
        if u32_at(b, 8) != crc {
            return invalid(format!(
                "checksum {:#010x}, contents hash to {crc:#010x}",
                u32_at(b, 8)
            ));
        }
        // The version is under the checksum, and checked after it: a damaged slot is
        // damage (the other slot is used), an intact slot of another version is a file
        // of another format (refused whole, never half-read or fallen back from).
        let version = u32_at(b, 12);
        if version != VERSION {
            return Err(SlotError::Version(version));
        }
        let head_seq = u64_at(b, 48);
        let mut leases = Vec::with_capacity(count);
        for i in 0..count {
            let e = SLOT_FIXED + i * LEASE_LEN;
            let seq = u64_at(b, e);
            let (holder, state) = (u32_at(b, e + 8), u32_at(b, e + 12));
            let state = match state {
                1 if holder < HOLDERS => LeaseState::Leased { holder },
                2 if holder == 0 => LeaseState::Done,
                1 | 2 => return invalid(format!("lease entry {i} names holder {holder}")),
                other => return invalid(format!("lease entry {i} in unknown state {other}")),
            };
            if seq < head_seq || leases.last().is_some_and(|l: &Lease| l.seq >= seq) {
                return invalid(format!("lease entry {i} (message {seq}) out of order"));
            }
            leases.push(Lease { seq, state });
        }
        let slot = Slot {
            generation: u64_at(b, 24),
            epoch: u64_at(b, 32),
            head_offset: u64_at(b, 40),
            head_seq,
            leases,
        };
        if slot.head_offset < DATA_START || !slot.head_offset.is_multiple_of(8) {
            return invalid(format!(
                "head offset {} is not a record boundary",
                slot.head_offset
            ));
        }
        Ok(slot)
    }
}

/// Size of a record with a payload of `len` bytes, padding included.
pub(crate) fn record_size(len: usize) -> u64 {
    ((RECORD_HEADER + len + 7) & !7) as u64
}

/// The 8-byte word that fills **free space**: bytes from the tail to the end of the file
/// that a writer wrote ahead (so a later synced push overwrites blocks already on the disk
/// instead of growing the file). Free space is whole words of it, at multiples of 8, up to
/// the end of the file; a record header never starts with it unless its payload is 1.7 GB
/// long, and free space is only ever looked for past the last valid record.
pub(crate) const FREE_WORD: [u8; 8] = *b"ipcpfree";

/// Whether `bytes` (starting at a multiple of 8) are all free space: whole [`FREE_WORD`]s.
/// Empty is free.
pub(crate) fn is_free(bytes: &[u8]) -> bool {
    let word = u64::from_ne_bytes(FREE_WORD);
    bytes.len().is_multiple_of(8)
        && bytes
            .chunks_exact(8)
            .all(|w| u64::from_ne_bytes(w.try_into().unwrap_or([0; 8])) == word)
}

/// Appends free space to `out` until it is `len` bytes long (`len - out.len()` must be a
/// multiple of 8: it is when `out` holds whole records and `len` is a multiple of 8).
pub(crate) fn fill_free(out: &mut Vec<u8>, len: usize) {
    while out.len() + 8 <= len {
        out.extend_from_slice(&FREE_WORD);
    }
}

/// Where a record's fields come from when it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    pub(crate) seq: u64,
    /// Records before this one in the same write.
    pub(crate) batch_index: u32,
    /// `seq - head_seq` when written, saturated at [`GAP_UNKNOWN`].
    pub(crate) head_gap: u32,
}

/// Appends a record to `out`.
pub(crate) fn encode_record(meta: RecordMeta, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta.seq.to_le_bytes());
    out.extend_from_slice(&meta.batch_index.to_le_bytes());
    out.extend_from_slice(&meta.head_gap.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    let padded = start + record_size(payload.len()) as usize;
    out.resize(padded, 0);
}

/// A record header, decoded (not yet checked against its payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) crc: u32,
    pub(crate) len: u32,
    pub(crate) seq: u64,
    pub(crate) batch_index: u32,
    pub(crate) head_gap: u32,
}

impl RecordHeader {
    pub(crate) fn decode(b: &[u8]) -> RecordHeader {
        RecordHeader {
            crc: u32_at(b, 0),
            len: u32_at(b, 4),
            seq: u64_at(b, 8),
            batch_index: u32_at(b, 16),
            head_gap: u32_at(b, 20),
        }
    }

    /// The checksum so far: over the header fields after `crc`. Append the payload.
    pub(crate) fn crc_start(&self) -> u32 {
        let mut h = [0u8; RECORD_HEADER - 4];
        h[0..4].copy_from_slice(&self.len.to_le_bytes());
        h[4..12].copy_from_slice(&self.seq.to_le_bytes());
        h[12..16].copy_from_slice(&self.batch_index.to_le_bytes());
        h[16..20].copy_from_slice(&self.head_gap.to_le_bytes());
        crc32c::crc32c(&h)
    }

    /// Whether `payload` (all of it) is this record's.
    pub(crate) fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize
            && crc32c::crc32c_append(self.crc_start(), payload) == self.crc
    }

    /// Bytes of the record, padding included.
    pub(crate) fn size(&self) -> u64 {
        record_size(self.len as usize)
    }

    /// The first sequence number of the write this record belongs to, if the header is
    /// consistent.
    pub(crate) fn write_start(&self) -> Option<u64> {
        self.seq.checked_sub(u64::from(self.batch_index))
    }

    /// The head's sequence number when this record was written, if recorded.
    pub(crate) fn head_at_write(&self) -> Option<u64> {
        if self.head_gap == GAP_UNKNOWN {
            return None;
        }
        self.seq.checked_sub(u64::from(self.head_gap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot {
            generation: 7,
            epoch: 3,
            head_offset: DATA_START + 64,
            head_seq: 10,
            leases: vec![
                Lease {
                    seq: 10,
                    state: LeaseState::Leased { holder: 5 },
                },
                Lease {
                    seq: 12,
                    state: LeaseState::Done,
                },
            ],
        }
    }

    #[test]
    fn a_slot_round_trips_and_every_byte_of_it_is_checked() {
        let s = slot();
        let enc = s.encode();
        assert_eq!(enc.len(), SLOT_FIXED + 2 * LEASE_LEN);
        assert_eq!(Slot::decode(&enc), Ok(s));
        // Every bit of the slot but the magic's is under the checksum (and the magic is
        // checked first): flipping any bit makes the slot unusable, not of another version.
        for i in 0..enc.len() * 8 {
            let mut bad = enc.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                Slot::decode(&bad).is_err(),
                "bit {i} flipped, still accepted"
            );
        }
    }

    #[test]
    fn a_slot_of_another_version_is_a_version_error_not_damage() {
        let reseal = |mut b: Vec<u8>| {
            let crc = crc32c::crc32c(&b[12..]);
            b[8..12].copy_from_slice(&crc.to_le_bytes());
            b
        };
        let mut enc = slot().encode();
        enc[12..16].copy_from_slice(&1u32.to_le_bytes());
        assert!(
            matches!(Slot::decode(&enc), Err(SlotError::Invalid(_))),
            "damage"
        );
        let enc = reseal(enc);
        assert_eq!(Slot::decode(&enc), Err(SlotError::Version(1)));
        let mut enc = enc;
        enc[12..16].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(
            Slot::decode(&reseal(enc.clone())),
            Err(SlotError::Version(3))
        );
        // Without the magic, it is just not a slot.
        enc[0] ^= 1;
        assert!(matches!(
            Slot::decode(&reseal(enc)),
            Err(SlotError::Invalid(_))
        ));
    }

    #[test]
    fn slots_with_bad_fields_are_refused_even_with_a_good_checksum() {
        let reseal = |mut b: Vec<u8>| {
            let crc = crc32c::crc32c(&b[12..]);
            b[8..12].copy_from_slice(&crc.to_le_bytes());
            b
        };
        let good = slot().encode();
        let mut b = good.clone();
        b[40..48].copy_from_slice(&(DATA_START + 4).to_le_bytes()); // not 8-aligned
        assert!(Slot::decode(&reseal(b)).is_err());
        let mut b = good.clone();
        b[40..48].copy_from_slice(&(DATA_START - 8).to_le_bytes()); // inside the header
        assert!(Slot::decode(&reseal(b)).is_err());
        let mut b = good.clone();
        b[40..48].copy_from_slice(&DATA_START.to_le_bytes()); // the lowest legal offset
        assert!(Slot::decode(&reseal(b)).is_ok());
        let mut b = good.clone();
        b[64 + 16..64 + 24].copy_from_slice(&10u64.to_le_bytes()); // leases not increasing
        assert!(Slot::decode(&reseal(b)).is_err());
        let mut b = good.clone();
        b[64..72].copy_from_slice(&9u64.to_le_bytes()); // a lease before the head
        assert!(Slot::decode(&reseal(b)).is_err());
        let mut b = good.clone();
        b[64 + 12..64 + 16].copy_from_slice(&3u32.to_le_bytes()); // unknown state
        assert!(Slot::decode(&reseal(b)).is_err());
        let mut b = good.clone();
        b[64 + 8..64 + 12].copy_from_slice(&HOLDERS.to_le_bytes()); // no such holder
        assert!(Slot::decode(&reseal(b)).is_err());
        let mut b = good.clone();
        b[64 + 8..64 + 12].copy_from_slice(&(HOLDERS - 1).to_le_bytes()); // the last one
        assert!(Slot::decode(&reseal(b)).is_ok());
        let mut b = good.clone();
        b[64 + 16 + 8..64 + 16 + 12].copy_from_slice(&1u32.to_le_bytes()); // done, held
        assert!(Slot::decode(&reseal(b)).is_err());
        let mut b = good.clone();
        b[16..20].copy_from_slice(&3u32.to_le_bytes()); // more entries than bytes
        assert!(Slot::decode(&reseal(b)).is_err());
        let mut b = good;
        b[16..20].copy_from_slice(&(MAX_LEASES as u32 + 1).to_le_bytes());
        b.resize(PAGE as usize * 2, 0);
        assert!(Slot::decode(&reseal(b)).is_err());
        assert!(matches!(
            Slot::decode(&[0u8; 64]),
            Err(SlotError::Invalid(why)) if why == "all zero"
        ));
        assert!(Slot::decode(&[0u8; 63]).is_err());
    }

    #[test]
    fn a_full_lease_table_fits_its_page_and_round_trips() {
        let mut s = slot();
        s.leases = (0..MAX_LEASES as u64)
            .map(|i| Lease {
                seq: 10 + i,
                state: LeaseState::Done,
            })
            .collect();
        let enc = s.encode();
        assert!(enc.len() <= PAGE as usize);
        let mut page = enc.clone();
        page.resize(PAGE as usize, 0);
        assert_eq!(Slot::decode(&page), Ok(s));
    }

    #[test]
    fn a_record_round_trips_and_its_checksum_covers_every_field() {
        let meta = RecordMeta {
            seq: 0x0102_0304_0506_0708,
            batch_index: 3,
            head_gap: 9,
        };
        let mut out = vec![0xee; 5]; // appended after what is there
        encode_record(meta, b"hello", &mut out);
        assert_eq!(out.len(), 5 + record_size(5) as usize);
        assert_eq!(record_size(5), 32);
        assert_eq!(record_size(0), 24);
        assert_eq!(record_size(8), 32);
        assert_eq!(record_size(9), 40);
        let rec = &out[5..];
        let h = RecordHeader::decode(rec);
        assert_eq!(
            (h.len, h.seq, h.batch_index, h.head_gap),
            (5, meta.seq, 3, 9)
        );
        assert!(h.matches(&rec[24..29]));
        assert_eq!(&rec[29..], &[0, 0, 0], "padding is zero");
        assert_eq!(h.write_start(), Some(meta.seq - 3));
        assert_eq!(h.head_at_write(), Some(meta.seq - 9));
        // Any bit of the record up to the end of its payload breaks the match.
        for i in 0..29 * 8 {
            let mut bad = rec[..29].to_vec();
            bad[i / 8] ^= 1 << (i % 8);
            let h = RecordHeader::decode(&bad);
            let payload = bad.get(24..24 + h.len as usize).unwrap_or(&bad[24..]);
            assert!(!h.matches(payload), "bit {i} flipped, still matches");
        }
        assert!(!h.matches(b"hell"));
        assert!(!h.matches(b"hello!"));
    }

    #[test]
    fn unknown_gaps_and_inconsistent_indices_prove_nothing() {
        let h = RecordHeader {
            crc: 0,
            len: 0,
            seq: 5,
            batch_index: 6,
            head_gap: GAP_UNKNOWN,
        };
        assert_eq!(h.write_start(), None);
        assert_eq!(h.head_at_write(), None);
        let h = RecordHeader { head_gap: 6, ..h };
        assert_eq!(h.head_at_write(), None);
    }
}
