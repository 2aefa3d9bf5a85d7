//! A hostile peer: whatever it writes into the ring's memory, the other side gets valid
//! messages or `Error::Corrupt`, never a panic, an out-of-bounds access or an endless loop.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use ipcprop::shm::{self, RingConfig, RingReceiver, RingSender};
use ipcprop::{Error, Receiver, Sender};
use memmap2::{MmapOptions, MmapRaw};
use proptest::prelude::*;

const CAP: usize = 4096;
const DATA: usize = 4096; // data offset in the mapping (docs/FORMAT.md)
const TAIL: usize = 128; // sender line
const HEAD: usize = 256; // receiver line

/// Every test here (every proptest case) fails, rather than hangs, past this.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A second mapping of the ring, for the hostile peer to write through.
fn peer_view(tx: &RingSender) -> MmapRaw {
    MmapOptions::new()
        .len(DATA + CAP)
        .map_raw(&tx.memory_fd())
        .unwrap()
}

fn poke(map: &MmapRaw, off: usize, bytes: &[u8]) {
    assert!(off + bytes.len() <= map.len());
    // SAFETY: in bounds of a live shared mapping; playing the hostile peer is the point,
    // and the ring reads these bytes only through atomics and validated copies.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), map.as_mut_ptr().add(off), bytes.len()) }
}

fn corrupt(err: Error) -> String {
    match err {
        Error::Corrupt(what) => what,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn ring() -> (RingSender, RingReceiver, MmapRaw) {
    let (tx, rx) = shm::channel_with(RingConfig::new().with_capacity(CAP)).unwrap();
    let map = peer_view(&tx);
    (tx, rx, map)
}

#[test]
fn a_tail_beyond_the_capacity_is_corrupt() {
    common::within(LIMIT, move || {
        let (_tx, mut rx, map) = ring();
        poke(&map, TAIL, &(10 * CAP as u64).to_le_bytes());
        let what = corrupt(rx.try_recv().unwrap_err());
        assert!(what.contains("tail"), "{what}");
        // It stays refused.
        assert!(matches!(rx.try_recv().unwrap_err(), Error::Corrupt(_)));
    })
}

#[test]
fn a_record_header_failing_its_check_is_corrupt() {
    common::within(LIMIT, move || {
        let (mut tx, mut rx, map) = ring();
        tx.send(b"hello").unwrap();
        poke(&map, DATA, &5u32.to_le_bytes()); // len 5 with the check word intact: fine
        poke(&map, DATA + 4, &0u32.to_le_bytes()); // check word broken
        let what = corrupt(rx.try_recv().unwrap_err());
        assert!(what.contains("check word"), "{what}");
    })
}

#[test]
fn a_huge_length_is_corrupt_not_an_allocation_or_a_read_out_of_bounds() {
    common::within(LIMIT, move || {
        let (mut tx, mut rx, map) = ring();
        tx.send(b"hello").unwrap();
        let len = 0x7fff_fff0u32;
        poke(&map, DATA, &len.to_le_bytes());
        poke(&map, DATA + 4, &(!len).to_le_bytes());
        let what = corrupt(rx.try_recv().unwrap_err());
        assert!(what.contains("over the maximum"), "{what}");
    })
}

#[test]
fn a_record_running_past_the_tail_is_corrupt() {
    common::within(LIMIT, move || {
        let (mut tx, mut rx, map) = ring();
        tx.send(b"hello").unwrap();
        let len = 1000u32; // valid in itself, but only 16 bytes were published
        poke(&map, DATA, &len.to_le_bytes());
        poke(&map, DATA + 4, &(!len).to_le_bytes());
        let what = corrupt(rx.try_recv().unwrap_err());
        assert!(what.contains("past the published"), "{what}");
    })
}

#[test]
fn padding_at_the_start_is_corrupt() {
    common::within(LIMIT, move || {
        let (mut tx, mut rx, map) = ring();
        tx.send(b"hello").unwrap();
        poke(&map, DATA, &u32::MAX.to_le_bytes());
        poke(&map, DATA + 4, &0u32.to_le_bytes());
        let what = corrupt(rx.try_recv().unwrap_err());
        assert!(what.contains("padding"), "{what}");
    })
}

#[test]
fn a_head_moved_backwards_is_corrupt_for_the_sender() {
    common::within(LIMIT, move || {
        let (mut tx, mut rx, map) = ring();
        // Two laps, so the sender has re-read head at least once and knows it is past 0.
        for _ in 0..8 {
            tx.send(&[1u8; 1000]).unwrap();
            rx.recv().unwrap();
        }
        poke(&map, HEAD, &0u64.to_le_bytes());
        // The sender needs space, re-reads head, finds it behind what it knew.
        let mut result = Ok(());
        for _ in 0..5 {
            result = tx.try_send(&[1u8; 1000]);
            if result.is_err() {
                break;
            }
        }
        let what = corrupt(result.unwrap_err());
        assert!(what.contains("head"), "{what}");
    })
}

/// Sends an end's worth of descriptors with a memfd of our making.
fn forged_end(memfd: OwnedFd) -> Result<RingReceiver, Error> {
    let (a, b) = UnixStream::pair().unwrap();
    let (p1, p2) = nix::unistd::pipe().unwrap();
    let raw = [
        std::os::fd::AsRawFd::as_raw_fd(&memfd),
        std::os::fd::AsRawFd::as_raw_fd(&p1),
        std::os::fd::AsRawFd::as_raw_fd(&p2),
    ];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
    let iov = [std::io::IoSlice::new(b"R")];
    nix::sys::socket::sendmsg::<()>(
        std::os::fd::AsRawFd::as_raw_fd(&a),
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .unwrap();
    RingReceiver::receive_from(&b)
}

#[test]
fn unsealed_or_foreign_memory_is_refused_on_attach() {
    common::within(LIMIT, move || {
        let fd = nix::sys::memfd::memfd_create(c"forged", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .unwrap();
        nix::unistd::ftruncate(&fd, (DATA + CAP) as i64).unwrap();
        let err = forged_end(fd).unwrap_err();
        assert!(err.to_string().contains("not sealed"), "{err}");

        let fd = nix::sys::memfd::memfd_create(
            c"forged",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
        )
        .unwrap();
        nix::unistd::ftruncate(&fd, (DATA + CAP) as i64).unwrap();
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        fcntl(
            fd.as_fd(),
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
        )
        .unwrap();
        let err = forged_end(fd).unwrap_err();
        assert!(err.to_string().contains("not a ring"), "{err}");
    })
}

#[derive(Debug, Clone)]
enum Op {
    Send(usize),
    Recv,
    Scribble(usize, Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop_oneof![0usize..64, Just(2040), 0usize..2041].prop_map(Op::Send),
        3 => Just(Op::Recv),
        1 => (0..DATA + CAP, proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(o, b)| Op::Scribble(o, b)),
        1 => (prop_oneof![Just(TAIL), Just(HEAD), Just(TAIL + 8), Just(HEAD + 8), Just(DATA)], proptest::collection::vec(any::<u8>(), 8))
            .prop_map(|(o, b)| Op::Scribble(o, b)),
    ]
}

proptest! {
    /// Any interleaving of sends, receives and scribbles: each operation returns, with a
    /// message or a typed error; once the peer has scribbled, Corrupt is allowed; before,
    /// every message is intact and in order.
    #[test]
    fn whatever_the_peer_writes_no_panic_no_hang(ops in proptest::collection::vec(op(), 1..80)) {
        common::within(LIMIT, move || -> Result<(), TestCaseError> {
            let (mut tx, mut rx, map) = ring();
            let mut sent = std::collections::VecDeque::new();
            let mut scribbled = false;
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Send(len) => {
                        let msg: Vec<u8> = (0..len).map(|k| (k + i) as u8).collect();
                        match tx.try_send(&msg) {
                            Ok(()) => sent.push_back(msg),
                            Err(Error::Full | Error::Corrupt(_)) => {}
                            Err(e) => prop_assert!(false, "send: unexpected {e:?}"),
                        }
                    }
                    Op::Recv => match rx.try_recv() {
                        Ok(m) => {
                            let expected = sent.pop_front();
                            if !scribbled {
                                prop_assert_eq!(Some(m), expected);
                            }
                        }
                        Err(Error::Empty) => prop_assert!(scribbled || sent.is_empty()),
                        Err(Error::Corrupt(_)) => prop_assert!(scribbled, "corrupt without a scribble"),
                        Err(e) => prop_assert!(false, "recv: unexpected {e:?}"),
                    },
                    Op::Scribble(off, bytes) => {
                        let off = off.min(DATA + CAP - bytes.len());
                        poke(&map, off, &bytes);
                        scribbled = true;
                    }
                }
            }
            Ok(())
        })?;
    }
}

/// A peer process writes the payload bytes of the ring (never a record header nor an
/// index) without pause while this process sends messages there and receives them with
/// `recv_with`. The closure sees a private copy of each message, which nothing changes
/// while it runs (lent in place, the bytes would change under it: a data race, undefined
/// behaviour, observed here as a slice whose content moves), and every receive returns a
/// message of the length sent, intact or garbled; nothing panics.
#[test]
fn a_peer_writing_payloads_during_recv_with_cannot_change_the_lent_bytes() {
    use ipcprop::check::fork::ChildGroup;
    use ipcprop::Wait;
    use std::time::{Duration, Instant};

    common::within(LIMIT, move || {
        let (mut tx, mut rx, map) = ring();
        // Records of 1024 bytes: their headers stay at offsets 0, 1024, 2048 and 3072.
        const LEN: usize = 1016;
        let mut group = ChildGroup::new();
        group
            .spawn("scribbler", |_| {
                for v in (0..=u8::MAX).cycle() {
                    for rec in 0..CAP / 1024 {
                        for k in 8..1024 {
                            // SAFETY: in bounds of the live shared mapping; this process is
                            // the hostile peer, and nothing in it reads these bytes.
                            unsafe {
                                std::ptr::write_volatile(
                                    map.as_mut_ptr().add(DATA + rec * 1024 + k),
                                    v,
                                )
                            };
                        }
                    }
                }
                Ok(())
            })
            .unwrap();
        let (mut rounds, mut garbled, mut moved) = (0u32, 0u32, 0u32);
        let start = Instant::now();
        // At least 3,000 receives, and until the scribbler has been seen at work 100 times.
        while rounds < 3000 || (garbled < 100 && start.elapsed() < Duration::from_secs(20)) {
            tx.send(&[0xaa; LEN]).unwrap();
            let (len, was_garbled, changed) = rx
                .recv_with(Wait::Never, |m| {
                    let first = m.to_vec();
                    // Give the scribbler time to write under the closure.
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_micros(20) {
                        std::hint::spin_loop();
                    }
                    (m.len(), first.iter().any(|&b| b != 0xaa), first != m)
                })
                .unwrap();
            assert_eq!(len, LEN);
            rounds += 1;
            garbled += u32::from(was_garbled);
            moved += u32::from(changed);
        }
        drop(group); // kills and reaps the scribbler
        assert!(
            garbled > 0,
            "the scribbler never overlapped a receive in {rounds} rounds: the test saw nothing"
        );
        assert_eq!(
            moved, 0,
            "the lent bytes changed under the closure in {moved} of {rounds} receives \
             ({garbled} garbled)"
        );
    })
}

/// Indices off a record boundary (not multiples of 8) are refused when an end attaches:
/// the ring reads and writes its memory in aligned 8-byte words, so such an index is
/// damage, reported as `Corrupt`, never a misaligned access or a panic.
#[test]
fn indices_off_a_record_boundary_are_corrupt_on_attach() {
    common::within(LIMIT, move || {
        for (head, tail) in [(3u64, 3u64), (0, 12), (4, 8)] {
            let (tx, rx, map) = ring();
            poke(&map, HEAD, &head.to_le_bytes());
            poke(&map, TAIL, &tail.to_le_bytes());
            let (a, b) = UnixStream::pair().unwrap();
            tx.send_over(&a).unwrap();
            rx.send_over(&a).unwrap();
            let what = corrupt(RingSender::receive_from(&b).unwrap_err());
            assert!(what.contains("record boundary"), "{head}, {tail}: {what}");
            let what = corrupt(RingReceiver::receive_from(&b).unwrap_err());
            assert!(what.contains("record boundary"), "{head}, {tail}: {what}");
        }
    })
}

/// Reads the receiver's index through the peer's mapping, as the sender would.
fn head_of(map: &MmapRaw) -> u64 {
    // SAFETY: HEAD is an 8-aligned offset inside the live mapping (page-aligned), and the
    // ring only ever accesses that word atomically.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(map.as_mut_ptr().add(HEAD).cast()) }
        .load(std::sync::atomic::Ordering::Acquire)
}

/// Hands both ends over a socket and returns the received copies (the originals dropped).
fn reattach(tx: RingSender, rx: RingReceiver) -> Result<(RingSender, RingReceiver), Error> {
    let (a, b) = UnixStream::pair().unwrap();
    tx.send_over(&a).unwrap();
    rx.send_over(&a).unwrap();
    let tx2 = RingSender::receive_from(&b);
    let rx2 = RingReceiver::receive_from(&b);
    drop((tx, rx));
    Ok((tx2?, rx2?))
}

/// Ends attached to a ring whose indices have gone round it many times (so head and tail
/// are far above the capacity) pick up where the ring is: the published messages are
/// received intact and in order, and it carries on. Also when the ring is exactly full.
#[test]
fn ends_attach_to_a_ring_that_has_carried_many_times_its_capacity() {
    common::within(LIMIT, move || {
        for pending in [0usize, 3, 8] {
            let (mut tx, mut rx, map) = ring();
            // 50 laps of the 4 KiB ring, in 504-byte messages (512-byte records).
            for i in 0..400u32 {
                let m = [i as u8; 504];
                tx.send(&m).unwrap();
                assert_eq!(rx.recv().unwrap(), m);
            }
            for i in 0..pending {
                tx.send(&[i as u8 ^ 0x5a; 504]).unwrap();
            }
            if pending == 8 {
                assert!(matches!(tx.try_send(b"x").unwrap_err(), Error::Full));
            }
            assert_eq!(head_of(&map), 400 * 512);
            let (mut tx, mut rx) = reattach(tx, rx).unwrap();
            for i in 0..pending {
                assert_eq!(rx.try_recv().unwrap(), [i as u8 ^ 0x5a; 504], "pending {i}");
            }
            assert!(matches!(rx.try_recv().unwrap_err(), Error::Empty));
            for i in 0..20u32 {
                let m = vec![i as u8; 100 + i as usize * 50];
                tx.send(&m).unwrap();
                assert_eq!(rx.recv().unwrap(), m);
            }
            // The attached receiver frees what it reads: the sender's view of head moved.
            assert!(head_of(&map) > (400 + pending as u64) * 512);
        }
    })
}

/// Indices out of range when an end attaches are `Corrupt` for either end: tail behind
/// head, or more than a capacity ahead of it; a ring exactly full is fine (above).
#[test]
fn indices_out_of_range_are_corrupt_on_attach() {
    common::within(LIMIT, move || {
        let cap = CAP as u64;
        for (head, tail) in [
            (800, 8),
            (8, 0),
            (0, cap + 8),
            (40 * cap, 41 * cap + 8),
            (u64::MAX - 7, 0),
        ] {
            let (tx, rx, map) = ring();
            poke(&map, HEAD, &head.to_le_bytes());
            poke(&map, TAIL, &tail.to_le_bytes());
            let (a, b) = UnixStream::pair().unwrap();
            tx.send_over(&a).unwrap();
            rx.send_over(&a).unwrap();
            let what = corrupt(RingSender::receive_from(&b).unwrap_err());
            assert!(what.contains("out of range"), "{head}, {tail}: {what}");
            let what = corrupt(RingReceiver::receive_from(&b).unwrap_err());
            assert!(what.contains("out of range"), "{head}, {tail}: {what}");
        }
        // Right at the limits: empty at a high index, and full.
        for (head, tail) in [(40 * cap, 40 * cap), (40 * cap, 41 * cap)] {
            let (tx, rx, map) = ring();
            poke(&map, HEAD, &head.to_le_bytes());
            poke(&map, TAIL, &tail.to_le_bytes());
            assert!(reattach(tx, rx).is_ok(), "{head}, {tail}");
        }
    })
}

/// `recv_many` hands over at most `max` messages, each once, in order, and frees a large
/// batch a quarter ring at a time (the sender sees head move while the batch is still
/// being read); `max == 0` takes nothing and returns at once, even from an empty ring.
#[test]
fn recv_many_hands_over_at_most_max_and_frees_a_quarter_ring_at_a_time() {
    use ipcprop::Wait;
    common::within(LIMIT, move || {
        let (mut tx, mut rx, map) = ring();
        assert_eq!(
            rx.recv_many(0, Wait::Forever, |_| panic!("max 0")).unwrap(),
            0
        );
        for i in 0..8u8 {
            tx.send(&[i; 504]).unwrap(); // 512-byte records: the ring is full
        }
        assert_eq!(
            rx.recv_many(0, Wait::Forever, |_| panic!("max 0")).unwrap(),
            0
        );
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(3, Wait::Never, |m| got.push(m[0])).unwrap(), 3);
        assert_eq!(got, [0, 1, 2]);
        // The first message is freed on its own (it is taken as `recv` takes it), then a
        // quarter ring (two records) at a time, then the rest at the end.
        let mut seen = Vec::new();
        let n = rx
            .recv_many(100, Wait::Never, |m| seen.push((m[0], head_of(&map))))
            .unwrap();
        assert_eq!(n, 5);
        assert_eq!(
            seen,
            [(3, 1536), (4, 2048), (5, 2048), (6, 3072), (7, 3072)]
        );
        assert_eq!(head_of(&map), 4096);
        assert!(matches!(
            rx.recv_many(3, Wait::Never, |_| ()).unwrap_err(),
            Error::Empty
        ));
    })
}

/// A padding record must be followed by a real record at offset 0: a second padding
/// there is refused as a header that fails its check (padding never sits at offset 0),
/// not taken for a record of 4 GiB.
#[test]
fn padding_after_padding_is_corrupt() {
    common::within(LIMIT, move || {
        let (mut tx, mut rx, map) = ring();
        for _ in 0..7 {
            tx.send(&[1; 504]).unwrap();
            rx.recv().unwrap();
        }
        // 3584 bytes used: a 608-byte record does not fit the last 512, so the sender
        // pads them and writes the record at offset 0.
        tx.send(&[2; 600]).unwrap();
        poke(&map, DATA, &u32::MAX.to_le_bytes());
        poke(&map, DATA + 4, &0u32.to_le_bytes());
        let what = corrupt(rx.try_recv().unwrap_err());
        assert!(
            what.contains("offset 0") && what.contains("check word"),
            "{what}"
        );
    })
}

/// The receiver's sleep words (line 3 of the header): its waiting flag, and the futex word
/// the sender bumps each time it publishes while that flag is set.
const RX_WAITING: usize = 384;
const RX_SEQ: usize = 388;

fn rx_seq(map: &MmapRaw) -> u32 {
    // SAFETY: RX_SEQ is a 4-aligned offset inside the live, page-aligned mapping, and the
    // ring only ever accesses that word atomically.
    unsafe { std::sync::atomic::AtomicU32::from_ptr(map.as_mut_ptr().add(RX_SEQ).cast()) }
        .load(std::sync::atomic::Ordering::Acquire)
}

/// A batch is published a quarter ring at a time (so a receiver starts on it while the
/// rest is being written), and a single send is published at once. Counted by setting the
/// receiver's waiting flag by hand, which makes every publication bump its futex word.
#[test]
fn a_batch_is_published_a_quarter_ring_at_a_time() {
    common::within(LIMIT, move || {
        let (mut tx, _rx, map) = ring();
        poke(&map, RX_WAITING, &1u32.to_le_bytes());
        let before = rx_seq(&map);
        // Eight 512-byte records: 1024 bytes (a quarter of 4 KiB) every two.
        let msgs = [[7u8; 504]; 8];
        let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
        tx.send_batch(&refs).unwrap();
        assert_eq!(
            rx_seq(&map) - before,
            4,
            "publications of an 8-record batch"
        );
        let (mut tx, mut rx, map) = ring();
        poke(&map, RX_WAITING, &1u32.to_le_bytes());
        let before = rx_seq(&map);
        for i in 0..3 {
            tx.send(&[i; 100]).unwrap();
        }
        assert_eq!(rx_seq(&map) - before, 3, "publications of three sends");
        assert_eq!(rx.try_recv().unwrap(), [0; 100]);
    })
}

/// The sender reads the receiver's index only when its last view of it leaves too little
/// room (so it does not pull the receiver's cache line on every send): with room for
/// exactly the next record by that view, a garbage head goes unnoticed; the send after,
/// which needs a fresh view, finds it and reports it.
#[test]
fn the_sender_reads_head_only_when_short_of_room() {
    common::within(LIMIT, move || {
        let (mut tx, _rx, map) = ring();
        for _ in 0..7 {
            tx.try_send(&[1; 504]).unwrap();
        }
        poke(&map, HEAD, &999_999u64.to_le_bytes());
        tx.try_send(&[2; 504])
            .expect("room for exactly this record by the head read before");
        let what = corrupt(tx.try_send(&[3; 504]).unwrap_err());
        assert!(what.contains("head 999999"), "{what}");
    })
}
