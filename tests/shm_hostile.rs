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
    let (tx, rx) = shm::channel_with(RingConfig::new().capacity(CAP)).unwrap();
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
