//! The queue's logic over a [`Storage`], assuming the caller holds the exclusive lock:
//! re-validation of the on-disk state, push, pop, take/ack under leases, compaction.
//! Generic over the storage so the same code runs on a real file and on the simulated disk
//! of the crash tests.

use super::format::{
    encode_record, record_crc, record_size, Lease, LeaseState, RecordHeader, Slot, DATA_START,
    MAX_LEASES, PAGE, RECORD_HEADER,
};
use super::storage::Storage;
use super::{Durability, QueueConfig};
use crate::error::{Error, Result};

/// Records are read in chunks of this size.
const CHUNK: usize = 64 * 1024;

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

/// The queue over one storage.
#[derive(Debug)]
pub(crate) struct Core<S: Storage> {
    pub(crate) storage: S,
    max_len: usize,
    durability: Durability,
    /// Reset when drained and the records took more than this; compact when the consumed
    /// prefix exceeds this and twice the live records.
    reclaim_over: u64,
    state: Option<State>,
    /// Set by a failed write or sync: the handle's view of the file can no longer be
    /// trusted (the kernel may have dropped dirty pages); reopen to re-derive it.
    poisoned: Option<String>,
    /// Reused for encoding pushes.
    buf: Vec<u8>,
    /// Reused for reading records (kept at least CHUNK long, so it is zeroed only once).
    read_buf: Vec<u8>,
}

fn io(op: &'static str, e: std::io::Error) -> Error {
    Error::Io { op, source: e }
}

/// The bytes of a freshly initialized queue file: slot A valid, slot B zero.
pub(crate) fn initial_image() -> Vec<u8> {
    let mut image = vec![0u8; DATA_START as usize];
    let slot = Slot {
        generation: 1,
        epoch: 0,
        head_offset: DATA_START,
        head_seq: 0,
        leases: Vec::new(),
    };
    let enc = slot.encode();
    image[..enc.len()].copy_from_slice(&enc);
    image
}

impl<S: Storage> Core<S> {
    pub(crate) fn new(storage: S, config: &QueueConfig) -> Core<S> {
        Core {
            storage,
            max_len: config.max_message_len,
            durability: config.durability,
            reclaim_over: config.reclaim_over,
            state: None,
            poisoned: None,
            buf: Vec::new(),
            read_buf: Vec::new(),
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

    /// Reads the header slots and finds where the valid records end. Called at every lock
    /// acquisition: a holder may have died mid-update, others may have pushed or popped.
    pub(crate) fn refresh(&mut self) -> Result<()> {
        self.check_poison()?;
        // Both slot pages in one read.
        let mut both = std::mem::take(&mut self.read_buf);
        if both.len() < CHUNK {
            both.resize(CHUNK, 0);
        }
        let n = match self.storage.read_at(&mut both[..2 * PAGE as usize], 0) {
            Ok(n) => n,
            Err(e) => {
                self.read_buf = both;
                return Err(io("read queue header", e));
            }
        };
        let decoded = if n < PAGE as usize + super::format::SLOT_FIXED {
            Err(n)
        } else {
            Ok((
                Slot::decode(&both[..PAGE as usize]),
                Slot::decode(&both[PAGE as usize..n]),
            ))
        };
        self.read_buf = both;
        let (a, b) = decoded.map_err(|n| {
            Error::Corrupt(format!(
                "queue file is {n} bytes, shorter than its two header slots ({} bytes)",
                PAGE as usize + super::format::SLOT_FIXED
            ))
        })?;
        let (slot, slot_index) = match (a, b) {
            (Ok(x), Ok(y)) if y.generation > x.generation => (y, 1),
            (Ok(x), _) => (x, 0),
            (Err(_), Ok(y)) => (y, 1),
            (Err(ea), Err(eb)) => {
                return Err(Error::Corrupt(format!(
                    "both header slots are invalid (slot A at offset 0: {ea}; slot B at offset {PAGE}: {eb})"
                )))
            }
        };
        // Records have not moved since we last looked (same epoch) and the head is within
        // what we scanned: only new records past our tail need reading.
        let resume = match &self.state {
            Some(st)
                if st.slot.epoch == slot.epoch
                    && slot.head_offset >= st.slot.head_offset
                    && slot.head_offset <= st.tail_offset
                    && slot.head_seq >= st.slot.head_seq
                    && slot.head_seq <= st.tail_seq =>
            {
                Some((st.tail_offset, st.tail_seq))
            }
            _ => None,
        };
        let (from, seq) = resume.unwrap_or((slot.head_offset, slot.head_seq));
        let (tail_offset, tail_seq) = self.scan(from, seq)?;
        self.state = Some(State {
            slot,
            slot_index,
            tail_offset,
            tail_seq,
        });
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

    /// Walks valid records from `off` (expected to hold `seq`), stopping at the first that
    /// is torn, garbage, stale (wrong sequence) or cut off by the end of the file. Returns
    /// the tail. Reads in chunks; at the end of the file a read simply comes back short.
    fn scan(&mut self, mut off: u64, mut seq: u64) -> Result<(u64, u64)> {
        let mut chunk = std::mem::take(&mut self.read_buf);
        if chunk.len() < CHUNK {
            chunk.resize(CHUNK, 0); // once: later reads reuse it without zeroing
        }
        let result = (|| loop {
            let valid = self
                .storage
                .read_at(&mut chunk[..CHUNK], off)
                .map_err(|e| io("read queue file", e))?;
            let mut at = 0usize;
            let mut stop = false;
            while at + RECORD_HEADER <= valid {
                let h = RecordHeader::decode(
                    chunk[at..at + RECORD_HEADER]
                        .try_into()
                        .unwrap_or(&[0; RECORD_HEADER]),
                );
                if h.seq != seq || h.len as usize > self.max_len {
                    stop = true;
                    break;
                }
                let end = at + RECORD_HEADER + h.len as usize;
                let payload_ok = if end <= valid {
                    record_crc(h.seq, h.len, &chunk[at + RECORD_HEADER..end]) == h.crc
                } else if at == 0 {
                    // One record larger than the chunk: read it whole.
                    let mut whole = vec![0u8; RECORD_HEADER + h.len as usize];
                    let n = self
                        .storage
                        .read_at(&mut whole, off)
                        .map_err(|e| io("read queue file", e))?;
                    n == whole.len() && record_crc(h.seq, h.len, &whole[RECORD_HEADER..]) == h.crc
                } else {
                    break; // continue with a chunk starting at this record
                };
                if !payload_ok {
                    stop = true; // torn (cut short by the end of the file) or garbage
                    break;
                }
                at += record_size(h.len as usize) as usize;
                seq += 1;
            }
            if at == 0 {
                return Ok((off, seq));
            }
            off += at as u64;
            if stop {
                return Ok((off, seq));
            }
        })();
        self.read_buf = chunk;
        result
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
        Ok(st.tail_seq - st.slot.head_seq - done)
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
            encode_record(st.tail_seq + i as u64, m, &mut out);
        }
        let r = self.storage.write_at(&out, st.tail_offset);
        let written = out.len() as u64;
        self.buf = out;
        self.guarded("write queue records", r)?;
        self.sync()?;
        if let Some(s) = self.state.as_mut() {
            s.tail_offset += written;
            s.tail_seq += msgs.len() as u64;
        }
        Ok(())
    }

    /// Walks records from the head, calling `visit` with each record's sequence number and
    /// payload until it returns false or the tail is reached. Returns what was walked.
    fn walk(
        &mut self,
        st: &State,
        mut visit: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<Vec<Walked>> {
        let mut walked = Vec::new();
        let mut off = st.slot.head_offset;
        let mut seq = st.slot.head_seq;
        let mut chunk = std::mem::take(&mut self.read_buf);
        let result = (|| {
            while seq < st.tail_seq {
                let want = ((st.tail_offset - off).min(CHUNK as u64) as usize).max(RECORD_HEADER);
                if chunk.len() < want {
                    chunk.resize(want, 0);
                }
                self.read_exact(&mut chunk[..want], off)?;
                let view = &chunk[..want];
                let mut at = 0usize;
                while seq < st.tail_seq && at + RECORD_HEADER <= view.len() {
                    let h = RecordHeader::decode(
                        view[at..at + RECORD_HEADER]
                            .try_into()
                            .unwrap_or(&[0; RECORD_HEADER]),
                    );
                    let here = off + at as u64;
                    if h.seq != seq || h.len as usize > self.max_len {
                        return Err(Error::Corrupt(format!(
                            "record at offset {here} changed under the lock: sequence {} (expected {seq})",
                            h.seq
                        )));
                    }
                    let end = at + RECORD_HEADER + h.len as usize;
                    let big;
                    let payload: &[u8] = if end <= view.len() {
                        &view[at + RECORD_HEADER..end]
                    } else if at == 0 {
                        // Larger than a chunk: read it on its own.
                        let mut p = vec![0u8; h.len as usize];
                        self.read_exact(&mut p, here + RECORD_HEADER as u64)?;
                        big = p;
                        &big
                    } else {
                        break; // the next chunk starts with it
                    };
                    if record_crc(h.seq, h.len, payload) != h.crc {
                        return Err(Error::Corrupt(format!(
                            "record {seq} at offset {here} fails its checksum"
                        )));
                    }
                    let size = record_size(h.len as usize);
                    walked.push(Walked { seq, size });
                    if !visit(seq, payload) {
                        return Ok(());
                    }
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
            Ok(())
        })();
        self.read_buf = chunk;
        result?;
        Ok(walked)
    }

    /// Reads up to `max` available messages from the head (not leased by a live holder, not
    /// already consumed) and, unless peeking, consumes them as `how` says: the new header
    /// (head advanced past every consumed message at the front, lease entries for the rest)
    /// is written, and synced in sync mode, before they are returned, so a message returned
    /// by a pop is never returned again. Returns `(seq, payload)` pairs.
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
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        let walked = self.walk(&st, |seq, payload| {
            if out.len() >= max {
                return false;
            }
            let available = match entry(seq) {
                None => true,
                Some(LeaseState::Done) => false,
                Some(LeaseState::Leased { holder }) => !alive(holder),
            };
            if available {
                out.push((seq, payload.to_vec()));
            }
            out.len() < max
        })?;
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
        match leases.iter_mut().find(|l| l.seq == seq) {
            Some(l) if l.state == (LeaseState::Leased { holder }) => l.state = LeaseState::Done,
            _ => {
                return Err(Error::LeaseLost { seq });
            }
        }
        // Walk the front of the queue to learn the sizes of what the head may now pass.
        let done_front = |s: u64| {
            leases
                .iter()
                .any(|l| l.seq == s && l.state == LeaseState::Done)
        };
        let walked = self.walk(&st, |s, _| done_front(s))?;
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
            return Err(Error::Corrupt(format!(
                "more than {MAX_LEASES} messages are leased or consumed out of order; acknowledge some first"
            )));
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
        self.maybe_compact()
    }

    /// Writes `slot` into the slot not holding the current header, then syncs.
    fn write_slot(&mut self, st: &State, slot: Slot) -> Result<()> {
        let index = 1 - st.slot_index;
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
    /// space back to the file system.
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
        }
        Ok(())
    }
}
