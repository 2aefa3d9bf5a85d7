//! Copying what can be saved out of a damaged queue file ([`super::FileQueue::salvage`]).
//!
//! A damaged queue is refused with [`Error::Corrupt`] rather than
//! read around: which messages were lost, and whether the rest may be used, is for a
//! person to decide. Salvage is that decision made explicit: it reads the file, never
//! writes it, and hands every valid unconsumed record, in order, to the caller, with a
//! report of every stretch it could not read.

use super::core::{find_record_after, free_to_end, payload_matches};
use super::format::{
    LeaseState, RecordHeader, Slot, SlotError, DATA_START, PAGE, RECORD_HEADER, VERSION,
};
use super::storage::Storage;
use super::SlotName;
use crate::error::{Error, Result};

/// Bytes read at a time while looking for records.
const CHUNK: usize = 64 * 1024;

/// What a salvage copied and what it could not.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SalvageReport {
    /// The header slot the head was taken from; `None` if neither was usable, in which
    /// case every valid record from the start of the data area was copied, consumed ones
    /// included (the head is unknown).
    pub header: Option<SlotName>,
    /// Sequence number of the first message copied.
    pub first_seq: Option<u64>,
    /// Messages copied, in order.
    pub copied: u64,
    /// Payload bytes copied.
    pub copied_bytes: u64,
    /// Messages not copied because the header records them as consumed (popped or
    /// acknowledged while an older message was leased).
    pub consumed_skipped: u64,
    /// Every stretch of the file where a record was expected and none was valid, in
    /// order. Messages `first_seq .. resumed_at_seq` are lost in each; the last stretch
    /// (the end of the file) has no `resumed_at_seq`.
    pub skipped: Vec<Skipped>,
}

/// A stretch of the file where a salvage found no valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// Where the stretch begins.
    pub offset: u64,
    /// Its length.
    pub bytes: u64,
    /// The sequence number expected at its start (unknown only before the first record
    /// of a file without a usable header).
    pub first_seq: Option<u64>,
    /// The sequence number of the valid record after it, if one was found.
    pub resumed_at_seq: Option<u64>,
}

/// Reads `src` and calls `emit` with each valid unconsumed message, oldest first.
pub(crate) fn salvage<S: Storage>(
    src: &mut S,
    mut emit: impl FnMut(&[u8]) -> Result<()>,
) -> Result<SalvageReport> {
    let io = |e| Error::Io {
        op: "read queue file",
        source: e,
    };
    let len = src.len().map_err(io)?;
    let mut pages = vec![0u8; 2 * PAGE as usize];
    let n = src.read_at(&mut pages, 0).map_err(io)?;
    let a = Slot::decode(&pages[..n.min(PAGE as usize)]);
    let b = Slot::decode(pages.get(PAGE as usize..n).unwrap_or(&[]));
    for (name, s) in [
        ("queue file header slot A", &a),
        ("queue file header slot B", &b),
    ] {
        if let Err(SlotError::Version(found)) = s {
            return Err(Error::UnsupportedVersion {
                what: name,
                found: *found,
                supported: VERSION,
            });
        }
    }
    let (header, slot) = match (a, b) {
        (Ok(x), Ok(y)) if y.generation > x.generation => (Some(SlotName::B), Some(y)),
        (Ok(x), _) => (Some(SlotName::A), Some(x)),
        (Err(_), Ok(y)) => (Some(SlotName::B), Some(y)),
        (Err(_), Err(_)) => (None, None),
    };
    let mut report = SalvageReport {
        header,
        first_seq: None,
        copied: 0,
        copied_bytes: 0,
        consumed_skipped: 0,
        skipped: Vec::new(),
    };
    let consumed = |seq: u64| {
        slot.as_ref().is_some_and(|s| {
            s.leases
                .binary_search_by_key(&seq, |l| l.seq)
                .is_ok_and(|i| s.leases[i].state == LeaseState::Done)
        })
    };
    let mut off = slot.as_ref().map_or(DATA_START, |s| s.head_offset);
    let mut expected = slot.as_ref().map(|s| s.head_seq);
    let mut scratch = Vec::new();
    let mut payload = Vec::new();
    while off < len {
        let h = match record_at(src, off, len, expected, &mut scratch)? {
            Some(h) => h,
            None => {
                let next = next_record(src, off, len, expected)?;
                if next.is_none() && free_to_end(src, off, len, &mut vec![0u8; CHUNK])? {
                    break; // free space a synced push wrote ahead: nothing was lost
                }
                report.skipped.push(Skipped {
                    offset: off,
                    bytes: next.map_or(len, |(p, _)| p) - off,
                    first_seq: expected,
                    resumed_at_seq: next.map(|(_, h)| h.seq),
                });
                match next {
                    Some((p, h)) => {
                        off = p;
                        h
                    }
                    None => break,
                }
            }
        };
        if consumed(h.seq) {
            report.consumed_skipped += 1;
        } else {
            payload.resize(h.len as usize, 0);
            let got = src
                .read_at(&mut payload, off + RECORD_HEADER as u64)
                .map_err(io)?;
            // Checked a moment ago; a file that changes under the lock is not salvageable.
            if got != payload.len() || !h.matches(&payload) {
                return Err(Error::Corrupt(format!(
                    "record {} at offset {off} changed while it was being salvaged",
                    h.seq
                )));
            }
            report.first_seq.get_or_insert(h.seq);
            emit(&payload)?;
            report.copied += 1;
            report.copied_bytes += u64::from(h.len);
        }
        expected = Some(h.seq + 1);
        off += h.size();
    }
    Ok(report)
}

/// The record at `off`, if it is valid: it fits in the file, its checksum matches, and
/// its sequence number is `expected` (any, if unknown).
fn record_at<S: Storage>(
    src: &mut S,
    off: u64,
    len: u64,
    expected: Option<u64>,
    scratch: &mut Vec<u8>,
) -> Result<Option<RecordHeader>> {
    let mut hb = [0u8; RECORD_HEADER];
    let n = src.read_at(&mut hb, off).map_err(|e| Error::Io {
        op: "read queue file",
        source: e,
    })?;
    if n < RECORD_HEADER {
        return Ok(None);
    }
    let h = RecordHeader::decode(&hb);
    if expected.is_some_and(|e| h.seq != e)
        || off + RECORD_HEADER as u64 + u64::from(h.len) > len
        || !payload_matches(src, &h, off, scratch)?
    {
        return Ok(None);
    }
    Ok(Some(h))
}

/// The first valid record after `bad` (at a multiple of 8) that can follow message
/// `expected` there: a higher sequence number, with room between for the messages in
/// between. Any valid record, if `expected` is unknown.
fn next_record<S: Storage>(
    src: &mut S,
    bad: u64,
    len: u64,
    expected: Option<u64>,
) -> Result<Option<(u64, RecordHeader)>> {
    let mut chunk = vec![0u8; CHUNK];
    find_record_after(src, bad, len, &mut chunk, |here, h| match expected {
        Some(e) => h.seq > e && h.seq - e <= (here - bad) / RECORD_HEADER as u64,
        None => true,
    })
}
