//! loom model checks of the shared-memory ring's protocol: the production `Producer` and
//! `Consumer` (src/shm/ring.rs) over loom atomics, loom-tracked data cells and an emulated
//! futex. A wrong ordering shows as a data race on the cells; a lost wake-up as a deadlock.
//!
//! Run (about a minute with the bound CI uses):
//! `LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg ipcprop_loom" cargo test --release --no-default-features --test loom`
//! (`ci/loom.sh` does exactly this, in its own target directory).
#![cfg(ipcprop_loom)]

use ipcprop::shm::model;
use ipcprop::Error;
use loom::thread;

fn msg(i: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| i.wrapping_mul(37).wrapping_add(k as u8))
        .collect()
}

/// 64-byte ring: messages up to 24 bytes; a 20- or 24-byte message takes a 32-byte record,
/// so two fill the ring and the third wraps.
const CAP: usize = 64;

#[test]
fn send_and_receive_across_the_wrap() {
    loom::model(|| {
        let (mut tx, mut rx) = model::channel(CAP);
        let sender = thread::spawn(move || {
            for i in 0..3 {
                tx.send(&msg(i, 20)).unwrap();
            }
        });
        for i in 0..3 {
            assert_eq!(rx.recv().unwrap(), msg(i, 20));
        }
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
        sender.join().unwrap();
    });
}

#[test]
fn padding_then_a_record_at_the_start() {
    loom::model(|| {
        let (mut tx, mut rx) = model::channel(CAP);
        let sender = thread::spawn(move || {
            // 8 + 8 = 16, then 24 + 8 = 32: the third (32) does not fit in the last 16
            // bytes of the lap and is padded to the start.
            tx.send(&msg(0, 8)).unwrap();
            tx.send(&msg(1, 24)).unwrap();
            tx.send(&msg(2, 24)).unwrap();
        });
        assert_eq!(rx.recv().unwrap(), msg(0, 8));
        assert_eq!(rx.recv().unwrap(), msg(1, 24));
        assert_eq!(rx.recv().unwrap(), msg(2, 24));
        sender.join().unwrap();
    });
}

#[test]
fn a_full_ring_blocks_the_sender_until_the_receiver_frees_space() {
    loom::model(|| {
        let (mut tx, mut rx) = model::channel(CAP);
        let sender = thread::spawn(move || {
            for i in 0..4 {
                tx.send(&msg(i, 24)).unwrap();
            }
        });
        for i in 0..4 {
            assert_eq!(rx.recv().unwrap(), msg(i, 24));
        }
        sender.join().unwrap();
    });
}

#[test]
fn an_empty_ring_blocks_the_receiver_until_a_message_arrives() {
    loom::model(|| {
        let (mut tx, mut rx) = model::channel(CAP);
        let receiver = thread::spawn(move || rx.recv().unwrap());
        tx.send(b"wake").unwrap();
        assert_eq!(receiver.join().unwrap(), b"wake");
    });
}

#[test]
fn a_batch_is_published_at_once_and_arrives_in_order() {
    loom::model(|| {
        let (mut tx, mut rx) = model::channel(CAP);
        let sender = thread::spawn(move || {
            tx.send_batch(&[b"one", b"", b"three"]).unwrap();
        });
        assert_eq!(rx.recv().unwrap(), b"one");
        assert_eq!(rx.recv().unwrap(), b"");
        assert_eq!(rx.recv().unwrap(), b"three");
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
        sender.join().unwrap();
    });
}

#[test]
fn recv_many_frees_a_batch_at_once_and_wakes_a_full_sender() {
    loom::model(|| {
        let (mut tx, mut rx) = model::channel(CAP);
        let sender = thread::spawn(move || {
            // Three 32-byte records: the third waits for the receiver to free space.
            for i in 0..3 {
                tx.send(&msg(i, 24)).unwrap();
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(rx.recv_many(2).unwrap());
        }
        assert_eq!(got, (0..3).map(|i| msg(i, 24)).collect::<Vec<_>>());
        sender.join().unwrap();
    });
}

#[test]
fn closing_the_sender_wakes_a_waiting_receiver() {
    loom::model(|| {
        let (tx, mut rx) = model::channel(CAP);
        let receiver = thread::spawn(move || rx.recv());
        drop(tx);
        assert!(matches!(receiver.join().unwrap(), Err(Error::Disconnected)));
    });
}

#[test]
fn closing_the_receiver_wakes_a_sender_waiting_on_a_full_ring() {
    loom::model(|| {
        let (mut tx, rx) = model::channel(CAP);
        tx.send(&msg(0, 24)).unwrap();
        tx.send(&msg(1, 24)).unwrap();
        let sender = thread::spawn(move || tx.send(&msg(2, 24)));
        drop(rx);
        assert!(matches!(sender.join().unwrap(), Err(Error::Disconnected)));
    });
}

/// Proof that the model can fail: publishing with `Relaxed` instead of `Release` lets the
/// receiver read a record's bytes before they are visible. loom must report it (a
/// causality violation on the data cells), so this test expects the panic.
#[test]
#[should_panic(expected = "Causality violation")]
fn a_weakened_publish_ordering_is_caught() {
    loom::model(|| {
        let (mut tx, mut rx) = model::channel(CAP);
        tx.weaken_publish();
        let sender = thread::spawn(move || {
            tx.send(&msg(7, 8)).unwrap();
        });
        let _ = rx.recv();
        sender.join().unwrap();
    });
}
