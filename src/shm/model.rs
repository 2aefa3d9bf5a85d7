//! The ring under loom: the production [`Producer`] and [`Consumer`] over heap memory whose
//! header words are loom atomics, whose data bytes are loom cells (so a wrong ordering shows
//! as a data race), and whose futex is emulated with a loom mutex and condition variable
//! (so a lost wake-up shows as a deadlock). Liveness is a loom atomic flag that an end
//! clears when it is dropped. Only the memory and the peer check differ from production;
//! the algorithm is the same code.

use std::time::Duration;

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicBool;
use loom::sync::{Arc, Condvar, Mutex};

use super::layout::{Header, RECORD_HEADER};
use super::ring::{Consumer, Memory, Messages, Peer, Producer, Until};
use crate::error::Result;
use crate::sync::{AtomicU32, Ordering};

/// Heap-allocated ring memory.
pub struct Shared {
    header: Header,
    data: Box<[UnsafeCell<u8>]>,
    capacity: usize,
    futex: Mutex<()>,
    woken: Condvar,
}

impl Memory for Arc<Shared> {
    fn header(&self) -> &Header {
        &self.header
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn write(&self, off: usize, src: &[u8]) {
        for (i, &b) in src.iter().enumerate() {
            // SAFETY: loom checks that no other access to this cell races with this one;
            // that is what the model is for.
            self.data[off + i].with_mut(|p| unsafe { *p = b });
        }
    }

    fn fill<R>(&self, off: usize, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut tmp = vec![0u8; len];
        let r = f(&mut tmp);
        self.write(off, &tmp);
        r
    }

    fn read<R>(&self, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: as in `write`: loom reports a racing access.
        let tmp: Vec<u8> = (0..len)
            .map(|i| self.data[off + i].with(|p| unsafe { *p }))
            .collect();
        f(&tmp)
    }

    fn read_header(&self, off: usize) -> [u8; RECORD_HEADER] {
        let mut h = [0u8; RECORD_HEADER];
        self.read(off, RECORD_HEADER, |b| h.copy_from_slice(b));
        h
    }

    fn wait(&self, word: &AtomicU32, expected: u32, _timeout: Duration) {
        // No timeout in the model: a wait that nobody ends is a deadlock loom reports.
        let guard = self.futex.lock().unwrap();
        if word.load(Ordering::SeqCst) != expected {
            return;
        }
        drop(self.woken.wait(guard).unwrap());
    }

    fn wake(&self, _word: &AtomicU32) {
        let _guard = self.futex.lock().unwrap();
        self.woken.notify_all();
    }
}

struct Flag(Arc<AtomicBool>);

impl Peer for Flag {
    fn alive(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The sending end in the model.
pub struct ModelSender {
    mem: Arc<Shared>,
    prod: Producer,
    me: Arc<AtomicBool>,
    peer: Flag,
}

/// The receiving end in the model.
pub struct ModelReceiver {
    mem: Arc<Shared>,
    cons: Consumer,
    me: Arc<AtomicBool>,
    peer: Flag,
}

/// A ring of `capacity` bytes (a power of two, at least 64) in the model.
pub fn channel(capacity: usize) -> (ModelSender, ModelReceiver) {
    let mem = Arc::new(Shared {
        header: Header::new(capacity),
        data: (0..capacity).map(|_| UnsafeCell::new(0)).collect(),
        capacity,
        futex: Mutex::new(()),
        woken: Condvar::new(),
    });
    let s_alive = Arc::new(AtomicBool::new(true));
    let r_alive = Arc::new(AtomicBool::new(true));
    let prod = Producer::new(&mem).expect("a fresh header is valid");
    let cons = Consumer::new(&mem).expect("a fresh header is valid");
    (
        ModelSender {
            mem: mem.clone(),
            prod,
            me: s_alive.clone(),
            peer: Flag(r_alive.clone()),
        },
        ModelReceiver {
            mem,
            cons,
            me: r_alive,
            peer: Flag(s_alive),
        },
    )
}

impl ModelSender {
    /// Sends one message (blocking while full).
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.prod
            .send(
                &self.mem,
                &self.peer,
                Messages::Copy(&[msg]),
                Until::Forever,
                false,
            )
            .map(drop)
    }

    /// Sends several messages with one publication.
    pub fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<()> {
        self.prod
            .send(
                &self.mem,
                &self.peer,
                Messages::Copy(msgs),
                Until::Forever,
                true,
            )
            .map(drop)
    }

    /// Publishes with a `Relaxed` store instead of `Release`: the model must catch it.
    pub fn weaken_publish(&mut self) {
        self.prod.weaken_publish();
    }
}

impl Drop for ModelSender {
    fn drop(&mut self) {
        self.me.store(false, Ordering::SeqCst);
        self.prod.wake_peer(&self.mem);
    }
}

impl ModelReceiver {
    /// Receives one message (blocking), or Disconnected.
    pub fn recv(&mut self) -> Result<Vec<u8>> {
        let r = self
            .cons
            .recv(&self.mem, &self.peer, <[u8]>::to_vec, Until::Forever)?;
        Ok(r.expect("a receive without a deadline returns a message or an error"))
    }
}

impl ModelReceiver {
    /// Receives at least one message and then what is already published, up to `max`,
    /// freeing them with one index store.
    pub fn recv_many(&mut self, max: usize) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.cons.drain(
            &self.mem,
            &self.peer,
            max,
            &mut |m| out.push(m.to_vec()),
            Until::Forever,
        )?;
        Ok(out)
    }
}

impl Drop for ModelReceiver {
    fn drop(&mut self) {
        self.me.store(false, Ordering::SeqCst);
        self.cons.wake_peer(&self.mem);
    }
}
