//! The queue's logic over a [`Storage`], assuming the caller holds the exclusive lock:
//! re-validation of the on-disk state (and repair of what a crash left), push, pop,
//! take/ack under leases, compaction. Generic over the storage so the same code runs on a
//! real file and on the simulated disk of the crash tests.
//!
//! Recovery rules (argued in `docs/FORMAT.md`, section 3):
//! - the valid header slot with the higher generation is the current one; if one slot is
//!   unusable the other is used, and the records' `head_gap` fields may prove the lost
//!   slot had moved the head further (then the head is moved there); either way the
//!   handle records a [`Recovery`] and rewrites the lost slot at once;
//! - the records run from the head while each is valid and carries the next sequence
//!   number; the first invalid one ends them. If a record of a *later write* follows the
//!   invalid one, that is damage to committed records: [`Error::Corrupt`], nothing is
//!   written. Otherwise it is the torn remains of the last write: cut off (a [`Recovery`]).

use super::format::{
    encode_record, fill_free, is_free, Lease, LeaseState, RecordHeader, RecordMeta, Slot,
    SlotError, DATA_START, GAP_UNKNOWN, MAX_LEASES, PAGE, RECORD_HEADER, SLOT_FIXED, VERSION,
};
use super::storage::Storage;
use super::{Durability, QueueConfig, Recovery, SlotName};
use crate::error::{Error, Result};

/// Records are read in chunks of this size.
const CHUNK: usize = 64 * 1024;
/// The least a walk from the head reads first (then whole chunks): a page.
const FIRST_READ: usize = PAGE as usize;
/// A synced push that would grow the file writes this much free space after its records
/// (then up to the next page boundary), so the pushes after it overwrite blocks already on
/// the disk: on ext4 an `fdatasync` after an append must also commit the new size to the
/// journal, one after an overwrite need not (`ipcprop bench --peers` measures both).
const WRITE_AHEAD: u64 = 32 * 1024;
// Free space past the tail is at most WRITE_AHEAD plus a page: one chunk read at the tail
// sees all of it, so checking it costs a refresh no extra system call.
const _: () = assert!(WRITE_AHEAD + PAGE <= CHUNK as u64);
/// A refresh before a read starts its one read at the head instead of the tail when the
/// records between them are at most this long: that read then shows the records a pop
/// takes, the new ones and any free space (at most `WRITE_AHEAD + PAGE`) at once.
const READ_FROM_HEAD_MAX: u64 = CHUNK as u64 - WRITE_AHEAD - PAGE;
/// A handle keeps this many of its latest recoveries.
const RECOVERIES_KEPT: usize = 16;

/// What a handle knows of the file, valid while it holds the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    /// The newest valid header slot.
    slot: Slot,
    /// Which slot (0 = A, 1 = B) holds it; the next header write goes to the other.
    slot_index: u64,
    /// Offset just past the last valid record.
    tail_offset: u64,
    /// Sequence number the next record gets.
    tail_seq: u64,
    /// Where the file ends (at least `tail_offset`): past the tail is free space.
    file_end: u64,
}

/// How a consuming operation treats the messages it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consume {
    /// Look only.
    Peek,
    /// Remove for good.
    Pop,
    /// Take under a lease held by this holder; removed when acknowledged.
    Take(u32),
}

/// One record met while walking from the head.
struct Walked {
    seq: u64,
    size: u64,
}

/// What a walk does with the record it has reached.
enum Visit {
    /// Pass over it (its payload is not read).
    Skip,
    /// Read its payload, check it, and hand it over.
    Read,
    /// As `Read`, then stop after it (without reading on to the next record's header).
    ReadLast,
    /// Stop before it.
    Stop,
}

/// How a scan of the records ended.
struct ScanEnd {
    tail_offset: u64,
    tail_seq: u64,
    /// Bytes from the tail to the end of the file that are no record: the torn remains of
    /// the last write, as `(offset, length)`.
    torn: Option<(u64, u64)>,
    /// The furthest head any scanned record proves (`seq - head_gap`).
    head_proof: Option<u64>,
    /// The file's length (or the tail, if the last record's padding lies past it).
    file_end: u64,
}

/// A header slot found unusable: its index (0 = A, 1 = B) and why.
type LostSlot = (u64, String);

/// The queue over one storage.
pub(crate) struct Core<S: Storage> {
    pub(crate) storage: S,
    max_len: usize,
    durability: Durability,
    /// Reset when drained and the records took more than this; compact when the consumed
    /// prefix exceeds this and twice the live records.
    reclaim_over: u64,
    /// Zero consumed records as the head passes them.
    erase_consumed: bool,
    state: Option<State>,
    /// Set by a failed write or sync: the handle's view of the file can no longer be
    /// trusted (the kernel may have dropped dirty pages); reopen to re-derive it.
    poisoned: Option<String>,
    /// What this handle repaired, newest last (at most [`RECOVERIES_KEPT`]).
    recoveries: Vec<Recovery>,
    /// Reused for encoding pushes.
    buf: Vec<u8>,
    /// Reused for reading records (kept at least CHUNK long, so it is zeroed only once).
    read_buf: Vec<u8>,
    /// `read_buf[..n]` holds the file's bytes from offset `o`, read while this handle held
    /// the lock and not written since: `Some((o, n))`. Set by a scan, used once by the next
    /// walk, cleared by every write.
    prefetched: Option<(u64, usize)>,
    /// How much a walk from the head reads first: what held the first record of the last
    /// walk (whole pages, from [`FIRST_READ`] to a chunk), so a pop of one short message
    /// from a long queue copies a page, not a chunk, and one of a long message still needs
    /// one read.
    first_read: usize,
}

impl<S: Storage + std::fmt::Debug> std::fmt::Debug for Core<S> {
    // Not derived: the reusable buffers (64 KiB and more) would drown what matters.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("storage", &self.storage)
            .field("max_len", &self.max_len)
            .field("durability", &self.durability)
            .field("state", &self.state)
            .field("poisoned", &self.poisoned)
            .field("recoveries", &self.recoveries)
            .finish_non_exhaustive()
    }
}

fn io(op: &'static str, e: std::io::Error) -> Error {
    Error::Io { op, source: e }
}

fn slot_name(index: u64) -> SlotName {
    if index == 0 {
        SlotName::A
    } else {
        SlotName::B
    }
}

/// The bytes of a freshly initialized queue file: both slots valid, slot A (generation 1)
/// current, so that in a healthy file both slots are always valid and an unusable one is
/// news.
pub(crate) fn initial_image() -> Vec<u8> {
    let mut image = vec![0u8; DATA_START as usize];
    for (generation, at) in [(1u64, 0usize), (0, PAGE as usize)] {
        let slot = Slot {
            generation,
            epoch: 0,
            head_offset: DATA_START,
            head_seq: 0,
            leases: Vec::new(),
        };
        let enc = slot.encode();
        image[at..at + enc.len()].copy_from_slice(&enc);
    }
    image
}

/// Whether the `len`-byte payload of the record whose header `h` is at `off` is all in the
/// file and matches the record's checksum, reading it in pieces of at most 64 KiB into
/// `scratch` (never allocating by a length read from the file).
pub(crate) fn payload_matches<S: Storage + ?Sized>(
    storage: &mut S,
    h: &RecordHeader,
    off: u64,
    scratch: &mut Vec<u8>,
) -> Result<bool> {
    if scratch.len() < CHUNK {
        scratch.resize(CHUNK, 0);
    }
    let mut crc = h.crc_start();
    let mut at = off + RECORD_HEADER as u64;
    let mut left = h.len as usize;
    while left > 0 {
        let want = left.min(scratch.len());
        let n = storage
            .read_at(&mut scratch[..want], at)
            .map_err(|e| io("read queue file", e))?;
        crc = crc32c::crc32c_append(crc, &scratch[..n]);
        if n < want {
            return Ok(false); // cut short by the end of the file
        }
        left -= n;
        at += n as u64;
    }
    Ok(crc == h.crc)
}

/// Whether the bytes from `from` (where a record would start: a multiple of 8) to `len`
/// (the end of the file) are all free space
/// ([`FREE_WORD`](super::format::FREE_WORD)s at multiples of 8), reading them in pieces of
/// at most 64 KiB into `chunk` (at least 64 KiB long).
pub(crate) fn free_to_end<S: Storage + ?Sized>(
    storage: &mut S,
    from: u64,
    len: u64,
    chunk: &mut [u8],
) -> Result<bool> {
    let mut off = from;
    while off < len {
        let want = ((len - off) as usize).min(CHUNK);
        let got = storage
            .read_at(&mut chunk[..want], off)
            .map_err(|e| io("read queue file", e))?;
        if got == 0 || !is_free(&chunk[..got]) {
            return Ok(false);
        }
        off += got as u64;
    }
    Ok(true)
}

/// The first record after `bad` (at a multiple of 8 past it) that `accept(offset,
/// header)` takes, fits in the file's `len` bytes and matches its checksum. `chunk` (at
/// least 64 KiB) is used for reading.
pub(crate) fn find_record_after<S: Storage + ?Sized>(
    storage: &mut S,
    bad: u64,
    len: u64,
    chunk: &mut [u8],
    accept: impl Fn(u64, &RecordHeader) -> bool,
) -> Result<Option<(u64, RecordHeader)>> {
    let mut scratch = Vec::new();
    let mut base = bad + 8;
    while base + RECORD_HEADER as u64 <= len {
        let n = storage
            .read_at(&mut chunk[..CHUNK], base)
            .map_err(|e| io("read queue file", e))?;
        let mut at = 0usize;
        while at + RECORD_HEADER <= n {
            let h = RecordHeader::decode(&chunk[at..at + RECORD_HEADER]);
            let here = base + at as u64;
            if accept(here, &h) && here + RECORD_HEADER as u64 + u64::from(h.len) <= len {
                let end = at + RECORD_HEADER + h.len as usize;
                let ok = if end <= n {
                    h.matches(&chunk[at + RECORD_HEADER..end])
                } else {
                    payload_matches(storage, &h, here, &mut scratch)?
                };
                if ok {
                    return Ok(Some((here, h)));
                }
            }
            at += 8;
        }
        if n < CHUNK {
            break;
        }
        base += at as u64;
    }
    Ok(None)
}

impl<S: Storage> Core<S> {
    pub(crate) fn new(storage: S, config: &QueueConfig) -> Core<S> {
        Core {
            storage,
            max_len: config.max_message_len,
            durability: config.durability,
            reclaim_over: config.reclaim_over,
            erase_consumed: config.erase_consumed,
            state: None,
            poisoned: None,
            recoveries: Vec::new(),
            buf: Vec::new(),
            read_buf: Vec::new(),
            prefetched: None,
            first_read: FIRST_READ,
        }
    }

    pub(crate) fn check_poison(&self) -> Result<()> {
        match &self.poisoned {
            Some(why) => Err(Error::Io {
                op: "use queue handle",
                source: std::io::Error::other(format!(
                    "the handle is poisoned by an earlier failure ({why}); reopen the queue"
                )),
            }),
            None => Ok(()),
        }
    }

    /// What this handle has repaired so far, oldest first (the latest few).
    pub(crate) fn recoveries(&self) -> &[Recovery] {
        &self.recoveries
    }

    fn record_recovery(&mut self, r: Recovery) {
        if self.recoveries.len() == RECOVERIES_KEPT {
            self.recoveries.remove(0);
        }
        self.recoveries.push(r);
    }

    /// Runs a write-side operation; any error poisons the handle.
    fn guarded<T>(&mut self, what: &'static str, r: std::io::Result<T>) -> Result<T> {
        r.map_err(|e| {
            self.poisoned = Some(format!("{what}: {e}"));
            self.state = None;
            io(what, e)
        })
    }

    fn sync(&mut self) -> Result<()> {
        if self.durability == Durability::Sync {
            let r = self.storage.sync_data();
            self.guarded("fdatasync", r)?;
        }
        Ok(())
    }

    /// Writes the initial image if the storage is empty (0 bytes): a new file, or one the
    /// caller just created. Returns whether it did. The image is synced whatever the
    /// durability: a queue that exists must survive.
    pub(crate) fn init_if_empty(&mut self) -> Result<bool> {
        self.check_poison()?;
        let len = self.storage.len().map_err(|e| io("stat queue file", e))?;
        if len != 0 {
            return Ok(false);
        }
        let r = self.storage.write_at(&initial_image(), 0);
        self.guarded("write queue header", r)?;
        let r = self.storage.sync_data();
        self.guarded("fdatasync", r)?;
        Ok(true)
    }

    /// Reads the header slots and finds where the valid records end, repairing what a
    /// crash left (a lost header slot, the torn remains of a write). Called at every lock
    /// acquisition: a holder may have died mid-update, others may have pushed or popped.
    pub(crate) fn refresh(&mut self) -> Result<()> {
        self.refresh_with(false)
    }

    /// [`Core::refresh`] before reading messages: when the live records are short, the one
    /// read that finds new records starts at the head, so the pop or peek that follows reads
    /// nothing more (one system call less per pop).
    pub(crate) fn refresh_reading(&mut self) -> Result<()> {
        self.refresh_with(true)
    }

    fn refresh_with(&mut self, reading: bool) -> Result<()> {
        self.prefetched = None;
        self.check_poison()?;
        let (slot, slot_index, lost) = self.read_slots()?;
        // Records have not moved since we last looked (same epoch) and the head is within
        // what we scanned: only new records past our tail need reading.
        let resume = match &self.state {
            Some(st)
                if lost.is_none()
                    && st.slot.epoch == slot.epoch
                    && slot.head_offset >= st.slot.head_offset
                    && slot.head_offset <= st.tail_offset
                    && slot.head_seq >= st.slot.head_seq
                    && slot.head_seq <= st.tail_seq =>
            {
                Some((st.tail_offset, st.tail_seq))
            }
            _ => None,
        };
        self.state = None;
        let end = match resume {
            Some((from, seq)) => {
                // Known valid (same epoch, head within what we scanned): the records from
                // the head to our tail, read again only to have them at hand.
                let read_from = if reading && from - slot.head_offset <= READ_FROM_HEAD_MAX {
                    slot.head_offset
                } else {
                    from
                };
                self.scan_from(read_from, from, seq, None)?
            }
            None => {
                let len = self.storage.len().map_err(|e| io("stat queue file", e))?;
                // A head at the start of the data area is fine in a file that ends before
                // it: no records.
                if slot.head_offset > len.max(DATA_START) {
                    return Err(Error::Corrupt(format!(
                        "the head (offset {}, message {}) is past the end of the file \
                         ({len} bytes): the file was cut short, or its header is wrong",
                        slot.head_offset, slot.head_seq
                    )));
                }
                self.scan(slot.head_offset, slot.head_seq, Some(len))?
            }
        };
        self.state = Some(State {
            slot,
            slot_index,
            tail_offset: end.tail_offset,
            tail_seq: end.tail_seq,
            // Torn remains are cut off just below.
            file_end: end.torn.map_or(end.file_end, |(offset, _)| offset),
        });
        if let Some((offset, bytes)) = end.torn {
            // Nothing after the tail is a record: cut it off, so the next write lands at
            // the end of the file and no stale bytes linger behind it.
            let r = self.storage.set_len(offset);
            self.guarded("truncate torn queue tail", r)?;
            self.record_recovery(Recovery::TornTail {
                offset,
                bytes,
                next_seq: end.tail_seq,
            });
        }
        self.repair(lost, end.head_proof)
    }

    /// Reads and decodes both slots: the current one, its index, and, if the other is
    /// unusable, which one that is and why.
    fn read_slots(&mut self) -> Result<(Slot, u64, Option<LostSlot>)> {
        let mut both = std::mem::take(&mut self.read_buf);
        if both.len() < CHUNK {
            both.resize(CHUNK, 0);
        }
        let read = self.storage.read_at(&mut both[..2 * PAGE as usize], 0);
        let decoded = read.map(|n| {
            if n < PAGE as usize + SLOT_FIXED {
                Err(n)
            } else {
                Ok((
                    Slot::decode(&both[..PAGE as usize]),
                    Slot::decode(&both[PAGE as usize..n]),
                ))
            }
        });
        self.read_buf = both;
        let (a, b) = decoded
            .map_err(|e| io("read queue header", e))?
            .map_err(|n| {
                Error::Corrupt(format!(
                    "queue file is {n} bytes, shorter than its two header slots ({} bytes)",
                    PAGE as usize + SLOT_FIXED
                ))
            })?;
        for (index, s) in [(0u64, &a), (1, &b)] {
            if let Err(SlotError::Version(found)) = s {
                return Err(Error::UnsupportedVersion {
                    what: match slot_name(index) {
                        SlotName::A => "queue file header slot A",
                        SlotName::B => "queue file header slot B",
                    },
                    found: *found,
                    supported: VERSION,
                });
            }
        }
        let why = |e: SlotError| match e {
            SlotError::Invalid(why) => why,
            SlotError::Version(v) => format!("format version {v}"),
        };
        Ok(match (a, b) {
            // Equal generations never occur in a file this crate writes; A wins them.
            (Ok(x), Ok(y)) if y.generation > x.generation => (y, 1, None),
            (Ok(x), Ok(_)) => (x, 0, None),
            (Ok(x), Err(eb)) => (x, 0, Some((1, why(eb)))),
            (Err(ea), Ok(y)) => (y, 1, Some((0, why(ea)))),
            (Err(ea), Err(eb)) => {
                return Err(Error::Corrupt(format!(
                    "both header slots are invalid (slot A at offset 0: {}; slot B at offset {PAGE}: {})",
                    why(ea),
                    why(eb)
                )))
            }
        })
    }

    /// Rewrites the header if the file needs it, and records why:
    /// - one slot was unusable (`lost`) and the other is current: the lost one is
    ///   rewritten at once (the next header write goes there anyway), the head moved as far
    ///   as the records prove consumers had got (`proof`);
    /// - the header has lease entries for messages past the end of the records (a crash
    ///   or damage took records the header had seen): they go, or the next messages pushed
    ///   would take their sequence numbers and count as consumed or leased.
    fn repair(&mut self, lost: Option<LostSlot>, proof: Option<u64>) -> Result<()> {
        let st = self.state()?;
        let past = |l: &&Lease| l.seq >= st.tail_seq;
        let leased_past = st
            .slot
            .leases
            .iter()
            .filter(past)
            .filter(|l| l.state != LeaseState::Done)
            .count() as u64;
        let done_past = st.slot.leases.iter().filter(past).count() as u64 - leased_past;
        if lost.is_none() && leased_past + done_past == 0 {
            return Ok(());
        }
        let fell_back_to = st.slot.head_seq;
        let proven = proof.filter(|&p| lost.is_some() && p > fell_back_to && p <= st.tail_seq);
        let mut slot = Slot {
            generation: st.slot.generation + 1,
            ..st.slot.clone()
        };
        if let Some(p) = proven {
            // The records up to `p` were consumed: a writer saw a header saying so.
            let walked = self.walk(
                &st,
                |h: &RecordHeader| Ok(if h.seq < p { Visit::Skip } else { Visit::Stop }),
                |_, _| {},
            )?;
            slot.head_offset += walked.iter().map(|w| w.size).sum::<u64>();
            slot.head_seq = p;
            slot.leases.retain(|l| l.seq >= p);
        }
        slot.leases.retain(|l| l.seq < st.tail_seq);
        let head_seq = slot.head_seq;
        self.write_slot(&st, slot)?;
        if let Some((damaged, reason)) = lost {
            self.record_recovery(Recovery::HeaderFallback {
                damaged: slot_name(damaged),
                reason,
                used_generation: st.slot.generation,
                proven_newer: proven.is_some(),
                advanced: head_seq - fell_back_to,
                may_repeat_at_most: st.tail_seq - head_seq,
            });
        }
        if leased_past + done_past > 0 {
            self.record_recovery(Recovery::LeasesPastTail {
                next_seq: st.tail_seq,
                leased: leased_past,
                consumed: done_past,
            });
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8], off: u64) -> Result<()> {
        let n = self
            .storage
            .read_at(buf, off)
            .map_err(|e| io("read queue file", e))?;
        if n < buf.len() {
            buf[n..].fill(0);
        }
        Ok(())
    }

    /// Walks valid records from `off` (expected to hold `seq`) to the first that is torn,
    /// garbage, stale (wrong sequence) or cut off by the end of the file, and decides what
    /// that end is: the end of the file, the torn remains of the last write, or damage
    /// followed by later records ([`Error::Corrupt`]). `file_len` if known.
    fn scan(&mut self, off: u64, seq: u64, file_len: Option<u64>) -> Result<ScanEnd> {
        self.scan_from(off, off, seq, file_len)
    }

    /// [`Core::scan`] from `start`, its first read starting at `read_from` (at most
    /// `start`: the bytes between are taken as read, not checked).
    fn scan_from(
        &mut self,
        read_from: u64,
        start: u64,
        seq: u64,
        file_len: Option<u64>,
    ) -> Result<ScanEnd> {
        let mut chunk = std::mem::take(&mut self.read_buf);
        if chunk.len() < CHUNK {
            chunk.resize(CHUNK, 0); // once: later reads reuse it without zeroing
        }
        let result = self.scan_with(read_from, start, seq, file_len, &mut chunk);
        self.read_buf = chunk;
        result
    }

    fn scan_with(
        &mut self,
        read_from: u64,
        start: u64,
        mut seq: u64,
        file_len: Option<u64>,
        chunk: &mut [u8],
    ) -> Result<ScanEnd> {
        // Reads start at `off`; the first one's bytes before `start` are skipped.
        let mut off = read_from.min(start);
        let mut skip = (start - off) as usize;
        let mut head_proof: Option<u64> = None;
        let mut scratch = Vec::new();
        // The last chunk read: its offset and how many bytes it got (fewer than a chunk:
        // everything up to the end of the file).
        let mut seen: (u64, usize);
        // The first invalid record: where, and what was wrong.
        let (bad_at, bad_why): (u64, String) = 'records: loop {
            let valid = self
                .storage
                .read_at(&mut chunk[..CHUNK], off)
                .map_err(|e| io("read queue file", e))?;
            // Past the bytes read again from the head, if any (fewer than a chunk).
            let mut at = std::mem::take(&mut skip);
            seen = (off, valid);
            loop {
                if at + RECORD_HEADER > valid {
                    if valid < CHUNK {
                        if at < valid {
                            break 'records (off + at as u64, "a record header cut short".into());
                        }
                        // At or past the end of what the file holds (the last record's
                        // padding may be missing): the short read found the end of the
                        // file, at the tail.
                        self.prefetched = Some((off, valid));
                        return Ok(ScanEnd {
                            tail_offset: off + at as u64,
                            tail_seq: seq,
                            torn: None,
                            head_proof,
                            file_end: off + at as u64,
                        });
                    }
                    break; // the next chunk starts here
                }
                let h = RecordHeader::decode(&chunk[at..at + RECORD_HEADER]);
                let here = off + at as u64;
                if h.seq != seq {
                    break 'records (here, format!("sequence {} (expected {seq})", h.seq));
                }
                let end = at + RECORD_HEADER + h.len as usize;
                let whole = if end <= valid {
                    h.matches(&chunk[at + RECORD_HEADER..end])
                } else if valid < CHUNK {
                    false // cut short by the end of the file
                } else if at == 0 {
                    // Larger than a chunk: check it in pieces.
                    payload_matches(&mut self.storage, &h, here, &mut scratch)?
                } else {
                    break; // the next chunk starts with it
                };
                if !whole {
                    break 'records (here, format!("record {seq} torn or failing its checksum"));
                }
                if let Some(p) = h.head_at_write() {
                    head_proof = Some(head_proof.map_or(p, |q| q.max(p)));
                }
                at += h.size() as usize;
                seq += 1;
            }
            off += at as u64;
        };
        let len = match (file_len, seen) {
            (Some(len), _) => len,
            // A short read ended at the end of the file (we hold the lock: it stays there).
            (None, (at, n)) if n < CHUNK => at + n as u64,
            (None, _) => self.storage.len().map_err(|e| io("stat queue file", e))?,
        };
        if self.free_to_end(bad_at, len, chunk, seen)? {
            // Unless free_to_end had to read more, the chunk still holds the last read.
            if bad_at >= seen.0 && len <= seen.0 + seen.1 as u64 {
                self.prefetched = Some((seen.0, seen.1));
            }
            return Ok(ScanEnd {
                tail_offset: bad_at,
                tail_seq: seq,
                torn: None,
                head_proof,
                file_end: len,
            });
        }
        if let Some((later_at, later)) = self.later_write(bad_at, seq, len, chunk)? {
            return Err(Error::Corrupt(format!(
                "damaged records in the middle of the queue: the record expected at offset \
                 {bad_at} (message {seq}) is invalid ({bad_why}), yet message {} of a later \
                 write follows at offset {later_at}, so messages {seq}..{} were committed and \
                 are damaged. Nothing was written; FileQueue::salvage copies every valid \
                 record to a new file",
                later.seq,
                later.seq - 1
            )));
        }
        Ok(ScanEnd {
            tail_offset: bad_at,
            tail_seq: seq,
            torn: (len > bad_at).then(|| (bad_at, len - bad_at)),
            head_proof,
            file_end: len.max(bad_at),
        })
    }

    /// Whether the bytes from the tail `from` to the end of the file (`len`) are free space
    /// ([`FREE_WORD`](super::format::FREE_WORD)s), using the chunk read last (`seen`: its
    /// offset and length) when it holds them all, as it does for what a push writes ahead.
    fn free_to_end(
        &mut self,
        from: u64,
        len: u64,
        chunk: &mut [u8],
        seen: (u64, usize),
    ) -> Result<bool> {
        let (at, n) = seen;
        if from >= at && len <= at + n as u64 {
            let held = chunk.get((from - at) as usize..(len - at) as usize);
            return Ok(held.is_some_and(is_free));
        }
        free_to_end(&mut self.storage, from, len, chunk)
    }

    /// Looks past an invalid record at `bad_at`, where message `seq` was expected, for a
    /// valid record of a later write: one with a higher sequence number whose write began
    /// after `seq` (so the write that held `seq` had completed before it). Records of
    /// `seq`'s own write may follow it when the power failed mid-write and the disk kept
    /// later pages but not earlier ones; those prove nothing.
    fn later_write(
        &mut self,
        bad_at: u64,
        seq: u64,
        len: u64,
        chunk: &mut [u8],
    ) -> Result<Option<(u64, RecordHeader)>> {
        find_record_after(&mut self.storage, bad_at, len, chunk, |here, h| {
            // Messages seq..h.seq would lie between bad_at and here, each at least a
            // header long.
            let room = (here - bad_at) / RECORD_HEADER as u64;
            h.seq > seq && h.seq - seq <= room && h.write_start().is_some_and(|w| w > seq)
        })
    }

    fn state(&self) -> Result<State> {
        self.state
            .clone()
            .ok_or_else(|| Error::Corrupt("queue state not loaded".into()))
    }

    /// Messages not yet consumed (leased ones count until acknowledged).
    pub(crate) fn len(&self) -> Result<u64> {
        let st = self.state()?;
        let done = st
            .slot
            .leases
            .iter()
            .filter(|l| l.state == LeaseState::Done)
            .count() as u64;
        // Entries past the tail were removed when the state was read, so this cannot
        // underflow; saturate anyway rather than trust it.
        Ok((st.tail_seq - st.slot.head_seq).saturating_sub(done))
    }

    /// Appends `msgs` as records in one write (and one fdatasync in sync mode).
    pub(crate) fn push(&mut self, msgs: &[&[u8]]) -> Result<()> {
        if let Some(m) = msgs.iter().find(|m| m.len() > self.max_len) {
            return Err(Error::MessageTooLarge {
                len: m.len(),
                max: self.max_len,
                why: "the queue's maximum message length",
            });
        }
        let st = self.state()?;
        let mut out = std::mem::take(&mut self.buf);
        out.clear();
        for (i, m) in msgs.iter().enumerate() {
            let seq = st.tail_seq + i as u64;
            let meta = RecordMeta {
                seq,
                batch_index: u32::try_from(i).unwrap_or(u32::MAX),
                head_gap: u32::try_from(seq - st.slot.head_seq).unwrap_or(GAP_UNKNOWN),
            };
            encode_record(meta, m, &mut out);
        }
        let written = out.len() as u64;
        let records_end = st.tail_offset + written;
        if self.durability == Durability::Sync && records_end > st.file_end {
            // This write grows the file (and its fdatasync commits the new size): let it
            // write free space ahead, so the next pushes are overwrites.
            let ahead_end = (records_end + WRITE_AHEAD).next_multiple_of(PAGE);
            fill_free(&mut out, (ahead_end - st.tail_offset) as usize);
        }
        self.prefetched = None;
        let r = self.storage.write_at(&out, st.tail_offset);
        let write_end = st.tail_offset + out.len() as u64;
        self.buf = out;
        self.guarded("write queue records", r)?;
        self.sync()?;
        if let Some(s) = self.state.as_mut() {
            s.tail_offset = records_end;
            s.tail_seq += msgs.len() as u64;
            s.file_end = s.file_end.max(write_end);
        }
        Ok(())
    }

    /// Walks records from the head to the tail, asking `visit` what to do with each; the
    /// payload of each record it says to read is checked and given to `deliver`. Returns
    /// the records passed (read or skipped), in order.
    fn walk(
        &mut self,
        st: &State,
        mut visit: impl FnMut(&RecordHeader) -> Result<Visit>,
        mut deliver: impl FnMut(u64, &[u8]),
    ) -> Result<Vec<Walked>> {
        let mut chunk = std::mem::take(&mut self.read_buf);
        let result = self.walk_with(st, &mut chunk, &mut visit, &mut deliver);
        self.read_buf = chunk;
        result
    }

    fn walk_with(
        &mut self,
        st: &State,
        chunk: &mut Vec<u8>,
        visit: &mut dyn FnMut(&RecordHeader) -> Result<Visit>,
        deliver: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<Vec<Walked>> {
        let mut walked = Vec::new();
        let mut off = st.slot.head_offset;
        let mut seq = st.slot.head_seq;
        let mut prefetched = self.prefetched.take();
        while seq < st.tail_seq {
            // The first read (at the head) is sized to what the last walk's first record
            // needed (a first record longer than that is read on its own); later reads are
            // whole chunks.
            let limit = if off == st.slot.head_offset {
                self.first_read
            } else {
                CHUNK
            };
            let left = st.tail_offset - off;
            let mut want = (left.min(limit as u64) as usize).max(RECORD_HEADER);
            if chunk.len() < want {
                chunk.resize(want, 0);
            }
            // The refresh under this lock may have read these bytes already: all of them
            // are used.
            match prefetched.take() {
                Some((at, n)) if at == off && n >= want && chunk.len() >= n => {
                    want = (left.min(n as u64) as usize).max(want);
                }
                _ => self.read_exact(&mut chunk[..want], off)?,
            }
            let mut at = 0usize;
            while seq < st.tail_seq && at + RECORD_HEADER <= want {
                let h = RecordHeader::decode(&chunk[at..at + RECORD_HEADER]);
                let here = off + at as u64;
                let fits = here + RECORD_HEADER as u64 + u64::from(h.len) <= st.tail_offset;
                if h.seq != seq || !fits {
                    return Err(Error::Corrupt(format!(
                        "record at offset {here} changed under the lock: message {} of {} \
                         bytes (expected message {seq} before offset {})",
                        h.seq, h.len, st.tail_offset
                    )));
                }
                let end = at + RECORD_HEADER + h.len as usize;
                if here == st.slot.head_offset {
                    self.first_read = end.next_multiple_of(FIRST_READ).clamp(FIRST_READ, CHUNK);
                }
                if end > want && at > 0 {
                    break; // the next read starts with it
                }
                match visit(&h)? {
                    Visit::Stop => return Ok(walked),
                    Visit::Skip => {}
                    how @ (Visit::Read | Visit::ReadLast) => {
                        let big;
                        let payload: &[u8] = if end <= want {
                            &chunk[at + RECORD_HEADER..end]
                        } else {
                            // Larger than this read (the first, or a chunk), and within
                            // this handle's maximum, which `visit` checked: read on its own.
                            let mut p = vec![0u8; h.len as usize];
                            self.read_exact(&mut p, here + RECORD_HEADER as u64)?;
                            big = p;
                            &big
                        };
                        if !h.matches(payload) {
                            return Err(Error::Corrupt(format!(
                                "record {seq} at offset {here} fails its checksum"
                            )));
                        }
                        deliver(seq, payload);
                        if matches!(how, Visit::ReadLast) {
                            walked.push(Walked {
                                seq,
                                size: h.size(),
                            });
                            return Ok(walked);
                        }
                    }
                }
                let size = h.size();
                walked.push(Walked { seq, size });
                at += size as usize;
                seq += 1;
            }
            if at == 0 {
                return Err(Error::Corrupt(format!(
                    "no whole record at offset {off} before the tail"
                )));
            }
            off += at as u64;
        }
        Ok(walked)
    }

    /// Reads up to `max` available messages from the head (not leased by a live holder, not
    /// already consumed) and, unless peeking, consumes them as `how` says: the new header
    /// (head advanced past every consumed message at the front, lease entries for the rest)
    /// is written, and synced in sync mode, before they are returned, so a message returned
    /// by a pop is never returned again. Returns `(seq, payload)` pairs.
    ///
    /// A message longer than this handle's maximum is not read: if it is the first one
    /// available, [`Error::MessageTooLarge`] (nothing consumed); else the batch ends before
    /// it.
    pub(crate) fn consume(
        &mut self,
        max: usize,
        how: Consume,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let st = self.state()?;
        // Lease tables are sorted by seq (strictly increasing: checked when a slot is
        // decoded, kept by every insert below), so lookups are binary searches; a batch pop
        // was quadratic in its size with linear ones.
        let entry = |seq: u64| {
            let leases = &st.slot.leases;
            leases
                .binary_search_by_key(&seq, |l| l.seq)
                .ok()
                .map(|i| leases[i].state)
        };
        let max_len = self.max_len;
        let mut taken = 0usize;
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        let walked = self.walk(
            &st,
            |h: &RecordHeader| {
                if taken >= max {
                    return Ok(Visit::Stop);
                }
                let available = match entry(h.seq) {
                    None => true,
                    Some(LeaseState::Done) => false,
                    Some(LeaseState::Leased { holder }) => !alive(holder),
                };
                if !available {
                    return Ok(Visit::Skip);
                }
                if h.len as usize > max_len {
                    if taken > 0 {
                        return Ok(Visit::Stop);
                    }
                    return Err(Error::MessageTooLarge {
                        len: h.len as usize,
                        max: max_len,
                        why: "this handle's maximum message length; the message stays queued \
                              for a handle that accepts it",
                    });
                }
                taken += 1;
                Ok(if taken == max {
                    Visit::ReadLast
                } else {
                    Visit::Read
                })
            },
            |seq, payload| out.push((seq, payload.to_vec())),
        )?;
        if out.is_empty() || how == Consume::Peek {
            return Ok(out);
        }
        // The new lease table: the old one, with what we consumed marked.
        let mut leases = st.slot.leases.clone();
        for (seq, _) in &out {
            let state = match how {
                Consume::Take(holder) => LeaseState::Leased { holder },
                _ => LeaseState::Done,
            };
            match leases.binary_search_by_key(seq, |l| l.seq) {
                Ok(i) => leases[i].state = state,
                Err(at) => leases.insert(at, Lease { seq: *seq, state }),
            }
        }
        self.commit(&st, leases, &walked)?;
        Ok(out)
    }

    /// Gives back every lease recorded for holder id `holder`: called when a handle has just
    /// acquired that id, so any lease under it belongs to an earlier holder that is gone
    /// (ids are reused). Writes the header only if there was something to give back.
    pub(crate) fn expire_holder(&mut self, holder: u32) -> Result<()> {
        let st = self.state()?;
        let before = st.slot.leases.len();
        let mut leases = st.slot.leases.clone();
        leases.retain(|l| l.state != (LeaseState::Leased { holder }));
        if leases.len() == before {
            return Ok(());
        }
        self.commit(&st, leases, &[])
    }

    /// Acknowledges message `seq` taken under a lease by `holder`: it is removed for good.
    pub(crate) fn ack(&mut self, seq: u64, holder: u32) -> Result<()> {
        let st = self.state()?;
        let mut leases = st.slot.leases.clone();
        match leases.binary_search_by_key(&seq, |l| l.seq) {
            Ok(i) if leases[i].state == (LeaseState::Leased { holder }) => {
                leases[i].state = LeaseState::Done;
            }
            _ => return Err(Error::LeaseLost { seq }),
        }
        // Walk the front of the queue to learn the sizes of what the head may now pass.
        let done_front = |s: u64| {
            leases
                .binary_search_by_key(&s, |l| l.seq)
                .is_ok_and(|i| leases[i].state == LeaseState::Done)
        };
        let walked = self.walk(
            &st,
            |h: &RecordHeader| {
                Ok(if done_front(h.seq) {
                    Visit::Skip
                } else {
                    Visit::Stop
                })
            },
            |_, _| {},
        )?;
        self.commit(&st, leases, &walked)
    }

    /// Writes the header that follows from `leases`: the head advances past the leading
    /// consumed messages (whose sizes `walked` gives, in order from the head), and their
    /// entries go. Then reclaims space if that pays.
    fn commit(&mut self, st: &State, mut leases: Vec<Lease>, walked: &[Walked]) -> Result<()> {
        let mut head_offset = st.slot.head_offset;
        let mut head_seq = st.slot.head_seq;
        for w in walked {
            let done = leases
                .binary_search_by_key(&w.seq, |l| l.seq)
                .is_ok_and(|i| leases[i].state == LeaseState::Done);
            if w.seq != head_seq || !done {
                break;
            }
            head_offset += w.size;
            head_seq += 1;
        }
        leases.retain(|l| l.seq >= head_seq);
        if leases.len() > MAX_LEASES {
            return Err(Error::TooManyLeases { limit: MAX_LEASES });
        }
        if leases.is_empty()
            && head_offset == st.tail_offset
            && st.tail_offset - DATA_START > self.reclaim_over
        {
            return self.reset(st);
        }
        let slot = Slot {
            generation: st.slot.generation + 1,
            epoch: st.slot.epoch,
            head_offset,
            head_seq,
            leases,
        };
        self.write_slot(st, slot)?;
        if self.erase_consumed && head_offset > st.slot.head_offset {
            // The header that moved the head past them is written (and synced in sync
            // mode): their bytes are no longer anyone's.
            let r = self
                .storage
                .zero_range(st.slot.head_offset, head_offset - st.slot.head_offset);
            self.guarded("erase consumed records", r)?;
        }
        self.maybe_compact()
    }

    /// Writes `slot` into the slot not holding the current header, then syncs.
    fn write_slot(&mut self, st: &State, slot: Slot) -> Result<()> {
        let index = 1 - st.slot_index;
        self.prefetched = None;
        let r = self.storage.write_at(&slot.encode(), index * PAGE);
        self.guarded("write queue header", r)?;
        self.sync()?;
        if let Some(s) = self.state.as_mut() {
            s.slot = slot;
            s.slot_index = index;
        }
        Ok(())
    }

    /// The queue is drained: start over at the beginning of the data area, and give the
    /// space back to the file system. The epoch changes, so a handle that looked before
    /// re-reads from the head instead of resuming at the old tail.
    fn reset(&mut self, st: &State) -> Result<()> {
        let slot = Slot {
            generation: st.slot.generation + 1,
            epoch: st.slot.epoch + 1,
            head_offset: DATA_START,
            head_seq: st.tail_seq,
            leases: Vec::new(),
        };
        self.write_slot(st, slot)?;
        let r = self.storage.set_len(DATA_START);
        self.guarded("truncate queue file", r)?;
        if let Some(s) = self.state.as_mut() {
            s.tail_offset = DATA_START;
            s.file_end = DATA_START;
        }
        Ok(())
    }

    /// Moves the live records to the front when the consumed prefix dwarfs them. Lease
    /// entries name messages by sequence number, so they survive the move.
    fn maybe_compact(&mut self) -> Result<()> {
        let st = self.state()?;
        let consumed = st.slot.head_offset - DATA_START;
        let live = st.tail_offset - st.slot.head_offset;
        if consumed <= self.reclaim_over || consumed < 2 * live {
            return Ok(());
        }
        // The copy lands entirely in consumed space (live < consumed), so a crash before the
        // header points to it leaves the queue as it was.
        let mut data = vec![0u8; live as usize];
        self.read_exact(&mut data, st.slot.head_offset)?;
        let r = self.storage.write_at(&data, DATA_START);
        self.guarded("write compacted records", r)?;
        self.sync()?;
        let slot = Slot {
            generation: st.slot.generation + 1,
            epoch: st.slot.epoch + 1,
            head_offset: DATA_START,
            head_seq: st.slot.head_seq,
            leases: st.slot.leases.clone(),
        };
        self.write_slot(&st, slot)?;
        let r = self.storage.set_len(DATA_START + live);
        self.guarded("truncate queue file", r)?;
        if let Some(s) = self.state.as_mut() {
            s.tail_offset = DATA_START + live;
            s.file_end = DATA_START + live;
        }
        Ok(())
    }
}
