//! The shared-memory ring: sizes and wrap-around, deadlines, closure and peer death across
//! real forks, descriptor passing, an idle receiver's CPU, and a hostile peer.

mod common;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ipcprop::check::fork::{ChildEnd, ChildGroup};
use ipcprop::shm::{self, RingConfig};
use ipcprop::{Error, Receiver, Sender, Wait};
use rstest::rstest;

/// Every test here fails, rather than hangs, past this.
const LIMIT: Duration = Duration::from_secs(60);

/// Tests that fork take this shared. A test whose outcome depends on an end being closed
/// in every process at a given moment takes it alone: a child forked meanwhile by another
/// test (in another thread of this binary) would hold a copy of that end's descriptors.
static FORKS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn forking() -> std::sync::RwLockReadGuard<'static, ()> {
    FORKS.read().unwrap_or_else(|e| e.into_inner())
}

fn no_forks() -> std::sync::RwLockWriteGuard<'static, ()> {
    FORKS.write().unwrap_or_else(|e| e.into_inner())
}

fn small() -> RingConfig {
    RingConfig::new().with_capacity(4096)
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

#[rstest]
#[case::empty(0)]
#[case::one(1)]
#[case::seven(7)]
#[case::eight(8)]
#[case::quarter_lap(1024 - 8)]
#[case::max(2048 - 8)]
fn sizes_round_trip_across_many_laps(#[case] len: usize) {
    common::within(LIMIT, move || {
        let (mut tx, mut rx) = shm::channel_with(small()).unwrap();
        assert_eq!(tx.max_message_len(), 2040);
        // Enough messages to go round the 4 KiB ring many times, interleaved so it never fills.
        for i in 0..200u32 {
            let m = pattern(len, i as u8);
            tx.send(&m).unwrap();
            assert_eq!(rx.recv().unwrap(), m, "message {i}");
        }
    })
}

#[test]
fn mixed_sizes_wrap_with_padding() {
    common::within(LIMIT, move || {
        let (mut tx, mut rx) = shm::channel_with(small()).unwrap();
        let sizes = [100usize, 2040, 0, 1500, 3, 2000, 17, 999, 2040, 2040];
        for round in 0..20u8 {
            for (i, &s) in sizes.iter().enumerate() {
                tx.send(&pattern(s, round ^ i as u8)).unwrap();
                assert_eq!(rx.recv().unwrap(), pattern(s, round ^ i as u8));
            }
        }
    })
}

#[test]
fn over_the_maximum_is_refused() {
    common::within(LIMIT, move || {
        let (mut tx, mut rx) = shm::channel_with(small()).unwrap();
        let err = tx.send(&[0u8; 2041]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MessageTooLarge {
                    len: 2041,
                    max: 2040,
                    ..
                }
            ),
            "{err}"
        );
        let err = tx.send_batch(&[b"ok", &[0u8; 2041]]).unwrap_err();
        assert!(matches!(err, Error::MessageTooLarge { .. }));
        assert!(
            matches!(rx.try_recv().unwrap_err(), Error::Empty),
            "nothing was sent"
        );
    })
}

#[test]
fn bad_capacities_are_refused() {
    common::within(LIMIT, move || {
        for cap in [0, 63, 100, 3000, 1 << 31] {
            let err = shm::channel_with(RingConfig::new().with_capacity(cap)).unwrap_err();
            assert!(
                matches!(err, Error::InvalidConfig { .. }),
                "{cap}: not a configuration error: {err:?}"
            );
            assert!(err.to_string().contains("power of two"), "{cap}: {err}");
        }
    })
}

#[test]
fn try_send_fills_then_full_and_deadlines_hold() {
    common::within(LIMIT, move || {
        let (mut tx, mut rx) = shm::channel_with(small()).unwrap();
        let mut sent = 0;
        loop {
            match tx.try_send(&[7u8; 504]) {
                Ok(()) => sent += 1,
                Err(Error::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(sent, 8, "eight 512-byte records fill 4 KiB");
        let start = Instant::now();
        let err = tx
            .send_timeout(&[1u8; 10], Duration::from_millis(30))
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(30));
        for _ in 0..sent {
            assert_eq!(rx.try_recv().unwrap(), vec![7u8; 504]);
        }
        assert!(matches!(rx.try_recv().unwrap_err(), Error::Empty));
        let start = Instant::now();
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(30)).unwrap_err(),
            Error::Timeout(_)
        ));
        assert!(start.elapsed() >= Duration::from_millis(30));
    })
}

#[test]
fn send_with_fills_the_record_and_batches_publish_together() {
    common::within(LIMIT, move || {
        let (mut tx, mut rx) = shm::channel_with(small()).unwrap();
        tx.send_with(6, |slot| slot.copy_from_slice(b"inline"))
            .unwrap();
        tx.send_batch(&[b"a", b"", b"bcd"]).unwrap();
        let got: Vec<Vec<u8>> = (0..4).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got, [&b"inline"[..], b"a", b"", b"bcd"]);
        assert_eq!(
            rx.recv_with(Wait::Never, |m| m.len())
                .unwrap_err()
                .to_string(),
            Error::Empty.to_string()
        );
    })
}

#[test]
fn drop_disconnects_after_draining() {
    common::within(LIMIT, move || {
        let (mut tx, mut rx) = shm::channel_with(small()).unwrap();
        tx.send(b"last words").unwrap();
        drop(tx);
        assert_eq!(rx.recv().unwrap(), b"last words");
        assert!(rx.recv().unwrap_err().is_disconnected());
        assert!(rx.try_recv().unwrap_err().is_disconnected());
    })
}

#[test]
fn a_sender_learns_the_receiver_is_gone() {
    common::within(LIMIT, move || {
        let (mut tx, rx) = shm::channel_with(small()).unwrap();
        drop(rx);
        // Room for a few, then the ring is full and the sender must be told, not hang.
        let mut result = Ok(());
        for _ in 0..20 {
            result = tx.send(&[0u8; 1000]);
            if result.is_err() {
                break;
            }
        }
        assert!(result.unwrap_err().is_disconnected());
        assert!(tx.send_batch(&[b"x"]).unwrap_err().is_disconnected());
    })
}

#[test]
fn a_child_sends_three_and_the_parent_reads_them() {
    let _forks = forking();
    common::within(LIMIT, move || {
        let (tx, rx) = shm::channel().unwrap();
        let (mut tx, mut rx) = (Some(tx), Some(rx));
        let mut group = ChildGroup::new();
        group
            .spawn("writer", |_| {
                drop(rx.take());
                let tx = tx.as_mut().ok_or("no sender")?;
                for i in 1..=3 {
                    tx.send(format!("Message {i}").as_bytes())
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .unwrap();
        drop(tx.take());
        let rx = rx.as_mut().unwrap();
        for i in 1..=3 {
            assert_eq!(rx.recv().unwrap(), format!("Message {i}").into_bytes());
        }
        assert!(rx.recv().unwrap_err().is_disconnected());
        assert_eq!(
            group.wait(Duration::from_secs(30))[0].end,
            ChildEnd::Returned
        );
    })
}

#[test]
fn dropping_a_copy_in_a_bystander_process_does_not_close() {
    let _forks = forking();
    common::within(LIMIT, move || {
        let (tx, rx) = shm::channel_with(small()).unwrap();
        let (mut tx, mut rx) = (Some(tx), Some(rx));
        let mut group = ChildGroup::new();
        group
            .spawn("bystander", |_| {
                drop(tx.take());
                drop(rx.take());
                Ok(())
            })
            .unwrap();
        assert_eq!(
            group.wait(Duration::from_secs(30))[0].end,
            ChildEnd::Returned
        );
        let (tx, rx) = (tx.as_mut().unwrap(), rx.as_mut().unwrap());
        tx.send(b"still open").unwrap();
        assert_eq!(rx.recv().unwrap(), b"still open");
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(50)).unwrap_err(),
            Error::Timeout(_)
        ));
    })
}

/// A child that sends `n` messages, then blocks forever (until killed).
fn spawn_sender_then_block(
    group: &mut ChildGroup,
    tx: &mut Option<shm::RingSender>,
    rx: &mut Option<shm::RingReceiver>,
    n: usize,
) {
    group
        .spawn("sender", |rep| {
            drop(rx.take());
            let tx = tx.as_mut().ok_or("no sender")?;
            for i in 0..n {
                tx.send(&pattern(100, i as u8)).map_err(|e| e.to_string())?;
            }
            rep.record(b"sent");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .unwrap();
}

#[test]
fn sigkill_of_the_sender_is_seen_after_draining_never_a_hang() {
    let _forks = forking();
    common::within(LIMIT, move || {
        let (tx, rx) = shm::channel_with(small()).unwrap();
        let (mut tx, mut rx) = (Some(tx), Some(rx));
        let mut group = ChildGroup::new();
        spawn_sender_then_block(&mut group, &mut tx, &mut rx, 5);
        drop(tx.take());
        let rx = rx.as_mut().unwrap();
        for i in 0..5 {
            assert_eq!(rx.recv().unwrap(), pattern(100, i as u8));
        }
        let pid = nix::unistd::Pid::from_raw(group.pids()[0]);
        // The receiver is (about to be) asleep on the futex: nobody will wake it.
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
            Instant::now()
        });
        let err = rx.recv().unwrap_err();
        let seen = Instant::now();
        let killed = killer.join().unwrap();
        assert!(err.is_disconnected(), "{err}");
        // Liveness is checked every 20 ms; allow for a loaded machine, but never a hang.
        assert!(seen.duration_since(killed) < Duration::from_secs(5));
        group.wait(Duration::from_secs(10));
    })
}

#[test]
fn a_full_ring_whose_receiver_was_killed_errors() {
    let _forks = forking();
    common::within(LIMIT, move || {
        let (tx, rx) = shm::channel_with(small()).unwrap();
        let (mut tx, mut rx) = (Some(tx), Some(rx));
        let mut group = ChildGroup::new();
        group
            .spawn("receiver", |_| {
                drop(tx.take());
                let _keep = rx.take();
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
            .unwrap();
        drop(rx.take());
        let tx = tx.as_mut().unwrap();
        while tx.try_send(&[0u8; 1000]).is_ok() {}
        let pid = nix::unistd::Pid::from_raw(group.pids()[0]);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        });
        let err = tx.send(&[0u8; 1000]).unwrap_err();
        killer.join().unwrap();
        assert!(err.is_disconnected(), "{err}");
        group.wait(Duration::from_secs(10));
    })
}

#[test]
fn an_idle_blocked_receiver_uses_no_cpu() {
    let _forks = forking();
    common::within(LIMIT, move || {
        let (tx, rx) = shm::channel_with(small()).unwrap();
        let (mut tx, mut rx) = (Some(tx), Some(rx));
        let mut group = ChildGroup::new();
        group
            .spawn("idle receiver", |rep| {
                drop(tx.take());
                let rx = rx.as_mut().ok_or("no receiver")?;
                let m = rx.recv().map_err(|e| e.to_string())?;
                rep.record(&m);
                Ok(())
            })
            .unwrap();
        let pid = group.pids()[0];
        std::thread::sleep(Duration::from_millis(600));
        // utime + stime of the child, in clock ticks (fields 14 and 15 of /proc/pid/stat).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_comm.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // A spinning receiver would show about 60 ticks (100 Hz) here; a sleeping one 0 or 1.
        assert!(
            ticks <= 5,
            "idle receiver used {ticks} ticks of CPU in 600 ms"
        );
        tx.as_mut().unwrap().send(b"wake up").unwrap();
        let reports = group.wait(Duration::from_secs(30));
        assert_eq!(reports[0].records, vec![b"wake up".to_vec()]);
    })
}

#[test]
fn ends_travel_over_a_unix_socket() {
    common::within(LIMIT, move || {
        let (tx, rx) = shm::channel_with(small()).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        tx.send_over(&a).unwrap();
        rx.send_over(&a).unwrap();
        let mut tx2 = shm::RingSender::receive_from(&b).unwrap();
        let mut rx2 = shm::RingReceiver::receive_from(&b).unwrap();
        // The original copies go away; the received ones carry on.
        drop(tx);
        drop(rx);
        tx2.send(b"via SCM_RIGHTS").unwrap();
        assert_eq!(rx2.recv().unwrap(), b"via SCM_RIGHTS");
        drop(tx2);
        assert!(rx2.recv().unwrap_err().is_disconnected());
        // Asking for the wrong end is refused, with both ends named.
        let (tx, _rx) = shm::channel_with(small()).unwrap();
        tx.send_over(&a).unwrap();
        let err = shm::RingReceiver::receive_from(&b).unwrap_err();
        assert!(err.to_string().contains("tag"), "{err}");
    })
}

#[test]
fn recv_many_takes_what_is_published_in_order_up_to_max() {
    common::within(LIMIT, move || {
        let (mut tx, mut rx) = shm::channel_with(small()).unwrap();
        for round in 0..50u8 {
            let msgs: Vec<Vec<u8>> = (0..7)
                .map(|i| pattern(100 + i * 50, round ^ i as u8))
                .collect();
            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            tx.send_batch(&refs).unwrap();
            let mut got = Vec::new();
            while got.len() < msgs.len() {
                let n = rx
                    .recv_many(3, Wait::Forever, |m| got.push(m.to_vec()))
                    .unwrap();
                assert!((1..=3).contains(&n));
            }
            assert_eq!(got, msgs, "round {round}");
        }
        assert!(matches!(
            rx.recv_many(3, Wait::Never, |_| ()).unwrap_err(),
            Error::Empty
        ));
        drop(tx);
        assert!(rx
            .recv_many(3, Wait::Forever, |_| ())
            .unwrap_err()
            .is_disconnected());
    })
}

/// The ring's memory is mode 0600 (memfds start at 0777) and, on kernels that know
/// `MFD_NOEXEC_SEAL` (Linux 6.3 and later), sealed against ever being made executable
/// (`F_SEAL_EXEC`), for both ends' descriptors.
#[test]
fn the_ring_memory_is_private_to_its_user_and_not_executable() {
    common::within(LIMIT, move || {
        use nix::fcntl::{fcntl, FcntlArg};
        const F_SEAL_EXEC: i32 = 0x0020;
        const MFD_NOEXEC_SEAL: u32 = 0x0008;
        let (tx, rx) = shm::channel_with(small()).unwrap();
        for fd in [tx.memory_fd(), rx.memory_fd()] {
            let st = nix::sys::stat::fstat(fd).unwrap();
            assert_eq!(st.st_mode & 0o7777, 0o600, "mode {:o}", st.st_mode);
        }
        // Does this kernel know the flag? Older ones refuse it with EINVAL.
        let probe = nix::sys::memfd::memfd_create(
            c"ipcprop-probe",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC
                | nix::sys::memfd::MFdFlags::from_bits_retain(MFD_NOEXEC_SEAL),
        );
        if matches!(probe, Err(nix::errno::Errno::EINVAL)) {
            eprintln!("this kernel has no MFD_NOEXEC_SEAL: the exec seal is not checked");
            return;
        }
        drop(probe.unwrap());
        for fd in [tx.memory_fd(), rx.memory_fd()] {
            let seals = fcntl(fd, FcntlArg::F_GET_SEALS).unwrap();
            assert_ne!(seals & F_SEAL_EXEC, 0, "seals {seals:#x}");
            // And chmod cannot give it an exec bit back.
            let err = nix::sys::stat::fchmod(fd, nix::sys::stat::Mode::from_bits_truncate(0o700));
            assert_eq!(err, Err(nix::errno::Errno::EPERM));
        }
    })
}

/// Space freed by the receiver is usable to the last byte: a full ring with one record
/// taken out takes exactly one more record of that size (the sender re-reads the
/// receiver's index and finds precisely the room it needs), then is full again.
#[test]
fn freed_space_is_usable_to_the_last_byte() {
    common::within(LIMIT, move || {
        let (mut tx, mut rx) = shm::channel_with(small()).unwrap();
        for round in 0..3u8 {
            // 512-byte records: eight fill the 4 KiB ring exactly.
            let mut sent = 0;
            while tx.try_send(&[round; 504]).is_ok() {
                sent += 1;
            }
            assert_eq!(sent, if round == 0 { 8 } else { 1 }, "round {round}");
            assert_eq!(rx.try_recv().unwrap().len(), 504);
            tx.try_send(&[round; 504])
                .expect("the space of the record just received");
            assert!(matches!(tx.try_send(&[round; 504]), Err(Error::Full)));
            assert!(matches!(tx.try_send(&[]), Err(Error::Full)));
            assert_eq!(rx.try_recv().unwrap().len(), 504);
        }
    })
}

/// How many times each wake-up is timed.
const WAKES: usize = 25;

/// The median of `WAKES` timings of `one`, which returns how long a sleeper took to wake.
fn median(one: impl Fn() -> Duration) -> Duration {
    let mut d: Vec<Duration> = (0..WAKES).map(|_| one()).collect();
    d.sort();
    d[WAKES / 2]
}

/// How late a sleeper may wake, at the median: a sleeper nobody wakes finds out by its
/// own 20 ms timer, about 15 ms after the event in these tests.
const PROMPT: Duration = Duration::from_millis(5);

/// A full ring (eight 504-byte messages in 4 KiB).
fn full() -> (shm::RingSender, shm::RingReceiver) {
    let (mut tx, rx) = shm::channel_with(small()).unwrap();
    for _ in 0..8 {
        tx.try_send(&[1; 504]).unwrap();
    }
    (tx, rx)
}

/// Each side wakes the other when it has gone to sleep: a receiver waiting on an empty
/// ring when a message is sent or the sender is dropped, a sender waiting on a full ring
/// when a message is received or the receiver is dropped. Each is timed from the event
/// (5 ms after the sleeper started waiting) to the sleeper's return; a missing wake-up
/// shows as the sleeper's 20 ms timer.
#[test]
fn sleepers_are_woken_at_once_not_by_their_timer() {
    common::within(LIMIT, move || {
        let woken = |sleeper: std::thread::JoinHandle<Instant>, event: Instant| {
            sleeper.join().unwrap().saturating_duration_since(event)
        };
        let on_send = median(|| {
            let (mut tx, mut rx) = shm::channel_with(small()).unwrap();
            let s = std::thread::spawn(move || {
                rx.recv().unwrap();
                Instant::now()
            });
            std::thread::sleep(Duration::from_millis(5));
            let t = Instant::now();
            tx.send(b"wake").unwrap();
            woken(s, t)
        });
        let on_sender_drop = median(|| {
            let (tx, mut rx) = shm::channel_with(small()).unwrap();
            let s = std::thread::spawn(move || {
                assert!(rx.recv().unwrap_err().is_disconnected());
                Instant::now()
            });
            std::thread::sleep(Duration::from_millis(5));
            let t = Instant::now();
            drop(tx);
            woken(s, t)
        });
        let on_recv = median(|| {
            let (mut tx, mut rx) = full();
            let s = std::thread::spawn(move || {
                tx.send(&[2; 504]).unwrap();
                Instant::now()
            });
            std::thread::sleep(Duration::from_millis(5));
            let t = Instant::now();
            rx.recv().unwrap();
            let l = woken(s, t);
            drop(rx);
            l
        });
        let on_receiver_drop = median(|| {
            let (mut tx, rx) = full();
            let s = std::thread::spawn(move || {
                assert!(tx.send(&[2; 504]).unwrap_err().is_disconnected());
                Instant::now()
            });
            std::thread::sleep(Duration::from_millis(5));
            let t = Instant::now();
            drop(rx);
            woken(s, t)
        });
        let all = [on_send, on_sender_drop, on_recv, on_receiver_drop];
        assert!(
            all.iter().all(|&d| d < PROMPT),
            "median wake-ups (send, sender drop, receive, receiver drop): {all:?}"
        );
    })
}

/// A sender whose receiver is gone learns it within 1024 sends even while the ring never
/// fills (a 256 KiB ring, 16-byte records), and the check is amortised: not one `poll`
/// per send, so the first send after the receiver went still goes through.
#[test]
fn a_sender_learns_the_receiver_is_gone_within_1024_sends() {
    // The receiver's end must be closed in every process while the sends run.
    let _forks = no_forks();
    common::within(LIMIT, move || {
        let (mut tx, rx) = shm::channel().unwrap();
        drop(rx);
        tx.send(b"12345678")
            .expect("no liveness check on the first send");
        let err = (2..=1024).find_map(|_| tx.send(b"12345678").err());
        assert!(err.expect("1024 sends and no error").is_disconnected());
    })
}
