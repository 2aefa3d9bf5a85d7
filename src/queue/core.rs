//! The queue's logic over a [`Storage`], assuming the caller holds the exclusive lock:
//! re-validation of the on-disk state, push, pop, compaction. Generic over the storage so
//! the same code runs on a real file and on the simulated disk of the crash tests.

use super::format::{
    encode_record, record_crc, record_size, RecordHeader, Slot, DATA_START, PAGE, RECORD_HEADER,
    SLOT_LEN,
};
use super::storage::Storage;
use super::{Durability, QueueConfig};
use crate::error::{Error, Result};

/// Records are read in chunks of this size while scanning.
const CHUNK: usize = 64 * 1024;

/// What a handle knows of the file, valid while it holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    };
    image[..SLOT_LEN].copy_from_slice(&slot.encode());
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

    fn check_poison(&self) -> Result<()> {
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
        // Both slots in one read: slot A at 0, slot B at PAGE.
        let mut both = [0u8; PAGE as usize + SLOT_LEN];
        let n = self
            .storage
            .read_at(&mut both, 0)
            .map_err(|e| io("read queue header", e))?;
        if n < both.len() {
            return Err(Error::Corrupt(format!(
                "queue file is {n} bytes, shorter than its two header slots ({} bytes)",
                both.len()
            )));
        }
        let (a, b) = (&both[..SLOT_LEN], &both[PAGE as usize..]);
        let (slot, slot_index) = match (Slot::decode(a), Slot::decode(b)) {
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
        let resume = match self.state {
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
            .ok_or_else(|| Error::Corrupt("queue state not loaded".into()))
    }

    /// Number of messages in the queue.
    pub(crate) fn len(&self) -> Result<u64> {
        let st = self.state()?;
        Ok(st.tail_seq - st.slot.head_seq)
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

    /// Reads up to `max` messages from the head without consuming them; returns them and
    /// the offset after the last. Reads many records per call: a batch costs few reads.
    pub(crate) fn peek(&mut self, max: usize) -> Result<(Vec<Vec<u8>>, u64)> {
        let st = self.state()?;
        let mut out = Vec::new();
        let mut off = st.slot.head_offset;
        let mut seq = st.slot.head_seq;
        let mut chunk = std::mem::take(&mut self.read_buf);
        let result = (|| {
            while out.len() < max && seq < st.tail_seq {
                let want = ((st.tail_offset - off).min(CHUNK as u64) as usize).max(RECORD_HEADER);
                if chunk.len() < want {
                    chunk.resize(want, 0);
                }
                self.read_exact(&mut chunk[..want], off)?;
                let chunk = &chunk[..want];
                let mut at = 0usize;
                while out.len() < max && seq < st.tail_seq && at + RECORD_HEADER <= chunk.len() {
                    let h = RecordHeader::decode(
                        chunk[at..at + RECORD_HEADER]
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
                    let payload = if end <= chunk.len() {
                        chunk[at + RECORD_HEADER..end].to_vec()
                    } else if at == 0 {
                        // Larger than a chunk: read it on its own.
                        let mut p = vec![0u8; h.len as usize];
                        self.read_exact(&mut p, here + RECORD_HEADER as u64)?;
                        p
                    } else {
                        break; // the next chunk starts with it
                    };
                    if record_crc(h.seq, h.len, &payload) != h.crc {
                        return Err(Error::Corrupt(format!(
                            "record {seq} at offset {here} fails its checksum"
                        )));
                    }
                    out.push(payload);
                    at += record_size(h.len as usize) as usize;
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
        Ok((out, off))
    }

    /// Removes up to `max` messages from the head and returns them, after the new head is
    /// written (and synced in sync mode): a message returned is never delivered again.
    pub(crate) fn pop(&mut self, max: usize) -> Result<Vec<Vec<u8>>> {
        let (msgs, new_head) = self.peek(max)?;
        if msgs.is_empty() {
            return Ok(msgs);
        }
        let st = self.state()?;
        let head_seq = st.slot.head_seq + msgs.len() as u64;
        if new_head == st.tail_offset && st.tail_offset - DATA_START > self.reclaim_over {
            self.reset(st)?;
        } else {
            self.write_slot(
                st,
                Slot {
                    generation: st.slot.generation + 1,
                    epoch: st.slot.epoch,
                    head_offset: new_head,
                    head_seq,
                },
            )?;
            self.maybe_compact()?;
        }
        Ok(msgs)
    }

    /// Writes `slot` into the slot not holding the current header, then syncs.
    fn write_slot(&mut self, st: State, slot: Slot) -> Result<()> {
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
    fn reset(&mut self, st: State) -> Result<()> {
        let slot = Slot {
            generation: st.slot.generation + 1,
            epoch: st.slot.epoch + 1,
            head_offset: DATA_START,
            head_seq: st.tail_seq,
        };
        self.write_slot(st, slot)?;
        let r = self.storage.set_len(DATA_START);
        self.guarded("truncate queue file", r)?;
        if let Some(s) = self.state.as_mut() {
            s.tail_offset = DATA_START;
        }
        Ok(())
    }

    /// Moves the live records to the front when the consumed prefix dwarfs them.
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
        };
        self.write_slot(st, slot)?;
        let r = self.storage.set_len(DATA_START + live);
        self.guarded("truncate queue file", r)?;
        if let Some(s) = self.state.as_mut() {
            s.tail_offset = DATA_START + live;
        }
        Ok(())
    }
}
