//! The pipe channel in one process and across forks: edge cases, bad input from the wire,
//! SIGPIPE, batching, deadlines.

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipcprop::check::fork::{ChildEnd, ChildGroup};
use ipcprop::frame::{self, FrameError, HEADER_LEN};
use ipcprop::pipe::{self, PipeConfig, PipeIo, PipeReceiver, PipeSender, MAX_SHARED_PAYLOAD};
use ipcprop::{Error, Receiver, Sender, Wait};
use rstest::rstest;

/// A receiver over a raw pipe whose write end the test writes arbitrary bytes to.
fn raw_receiver(max: usize) -> (PipeReceiver, OwnedFd) {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (
        PipeReceiver::from_fd(r, PipeConfig::new().with_max_message_len(max)).unwrap(),
        w,
    )
}

fn write_raw(fd: &OwnedFd, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = nix::unistd::write(fd, rest).unwrap();
        rest = &rest[n..];
    }
}

#[rstest]
#[case::empty(0)]
#[case::one_byte(1)]
#[case::fills_pipe_buf(MAX_SHARED_PAYLOAD)]
#[case::just_over_pipe_buf(MAX_SHARED_PAYLOAD + 1)]
#[case::at_maximum(1000)]
fn message_sizes_round_trip(#[case] len: usize) {
    let (mut tx, mut rx) =
        pipe::channel_with(PipeConfig::new().with_max_message_len(1000.max(len))).unwrap();
    let msg: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    tx.send(&msg).unwrap();
    drop(tx);
    assert_eq!(rx.recv().unwrap(), msg);
    assert!(rx.recv().unwrap_err().is_disconnected());
}

#[test]
fn over_the_maximum_is_refused_and_nothing_is_sent() {
    let (mut tx, mut rx) =
        pipe::channel_with(PipeConfig::new().with_max_message_len(1000)).unwrap();
    let err = tx.send(&[0u8; 1001]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MessageTooLarge {
                len: 1001,
                max: 1000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("1001") && err.to_string().contains("1000"));
    let err = tx.send_batch(&[b"fine", &[0u8; 1001]]).unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { .. }));
    drop(tx);
    assert!(
        rx.recv().unwrap_err().is_disconnected(),
        "a refused message must send nothing"
    );
}

#[test]
fn shared_mode_refuses_frames_over_pipe_buf() {
    let (mut tx, mut rx) = pipe::channel_with(PipeConfig::new().with_shared_senders(true)).unwrap();
    tx.send(&vec![1u8; MAX_SHARED_PAYLOAD]).unwrap();
    let err = tx.send(&vec![1u8; MAX_SHARED_PAYLOAD + 1]).unwrap_err();
    assert!(err.to_string().contains("PIPE_BUF"), "{err}");
    assert_eq!(rx.recv().unwrap().len(), MAX_SHARED_PAYLOAD);
}

#[test]
fn an_oversized_length_prefix_is_refused_before_allocating() {
    let (mut rx, w) = raw_receiver(1 << 20);
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    write_raw(&w, &header);
    let err = rx.recv().unwrap_err();
    assert!(
        matches!(err, Error::Frame(FrameError::TooLarge { len, max: 1048576 }) if len == u64::from(u32::MAX)),
        "{err}"
    );
    // The stream has lost sync: it stays failed.
    assert!(matches!(rx.try_recv().unwrap_err(), Error::Frame(_)));
}

#[test]
fn a_corrupted_checksum_is_reported() {
    let (mut rx, w) = raw_receiver(1 << 20);
    let mut f = frame::encode(b"hello world").unwrap();
    let last = f.len() - 1;
    f[last] ^= 0x10;
    write_raw(&w, &f);
    let err = rx.recv().unwrap_err();
    assert!(
        matches!(err, Error::Frame(FrameError::ChecksumMismatch { .. })),
        "{err}"
    );
}

#[test]
fn a_stream_cut_inside_a_frame_is_truncated_not_disconnected() {
    let (mut rx, w) = raw_receiver(1 << 20);
    let good = frame::encode(b"whole").unwrap();
    let cut = frame::encode(b"cut short").unwrap();
    write_raw(&w, &good);
    write_raw(&w, &cut[..cut.len() - 3]);
    drop(w);
    assert_eq!(rx.recv().unwrap(), b"whole");
    let err = rx.recv().unwrap_err();
    assert!(
        matches!(err, Error::Frame(FrameError::Truncated { .. })),
        "{err}"
    );
}

#[test]
fn try_recv_and_timeouts_honour_their_deadline() {
    let (tx, mut rx) = pipe::channel().unwrap();
    assert!(matches!(rx.try_recv().unwrap_err(), Error::Empty));
    let start = Instant::now();
    let err = rx.recv_timeout(Duration::from_millis(50)).unwrap_err();
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_millis(50)),
        "{err}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "returned before the deadline"
    );
    drop(tx);
    assert!(rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_err()
        .is_disconnected());
}

#[test]
fn half_a_frame_is_not_a_message() {
    let (mut rx, w) = raw_receiver(1 << 20);
    let f = frame::encode(b"two halves").unwrap();
    write_raw(&w, &f[..5]);
    assert!(matches!(rx.try_recv().unwrap_err(), Error::Empty));
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(5)).unwrap_err(),
        Error::Timeout(_)
    ));
    write_raw(&w, &f[5..]);
    assert_eq!(rx.try_recv().unwrap(), b"two halves");
}

#[test]
fn borrowed_receive_lends_the_message() {
    let (mut tx, mut rx) = pipe::channel().unwrap();
    tx.send(b"lend me").unwrap();
    let n = rx.recv_with(Wait::Forever, |m| {
        assert_eq!(m, b"lend me");
        m.len()
    });
    assert_eq!(n.unwrap(), 7);
}

/// Counts the writes that reach the kernel.
#[derive(Debug)]
struct CountingIo {
    fd: OwnedFd,
    writes: Arc<AtomicUsize>,
}

impl AsFd for CountingIo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl PipeIo for CountingIo {
    fn read(&mut self, buf: &mut [u8]) -> nix::Result<usize> {
        self.fd.read(buf)
    }
    fn writev(&mut self, bufs: &[IoSlice<'_>]) -> nix::Result<usize> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.fd.writev(bufs)
    }
}

#[rstest]
#[case::single(false, 1)]
#[case::shared(true, 2)]
fn batches_coalesce_small_frames_into_few_writes(#[case] shared: bool, #[case] max_writes: usize) {
    let config = PipeConfig::new().with_shared_senders(shared);
    let (tx, mut rx) = pipe::channel_with(config).unwrap();
    let writes = Arc::new(AtomicUsize::new(0));
    let mut tx = PipeSender::with_io(
        CountingIo {
            fd: tx.into_inner(),
            writes: writes.clone(),
        },
        config,
    );
    let msgs: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 30]).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    tx.send_batch(&refs).unwrap();
    // 100 frames of 38 bytes: one 3800-byte write; in shared mode at most PIPE_BUF each.
    assert!(
        writes.load(Ordering::Relaxed) <= max_writes,
        "{} writes",
        writes.load(Ordering::Relaxed)
    );
    drop(tx);
    for m in &msgs {
        assert_eq!(&rx.recv().unwrap(), m);
    }
    assert!(rx.recv().unwrap_err().is_disconnected());
}

#[test]
fn a_batch_with_a_large_message_keeps_order() {
    let (mut tx, mut rx) = pipe::channel().unwrap();
    let big = vec![9u8; 200_000];
    let msgs: Vec<&[u8]> = vec![b"a", &big, b"", b"b"];
    let child_msgs: Vec<Vec<u8>> = msgs.iter().map(|m| m.to_vec()).collect();
    // The batch is larger than the pipe: receive in a child while the parent writes.
    let mut rx_slot = Some(&mut rx);
    let mut group = ChildGroup::new();
    group
        .spawn("receiver", |_| {
            let rx = rx_slot.take().ok_or("no receiver")?;
            for m in &child_msgs {
                let got = rx.recv().map_err(|e| e.to_string())?;
                if &got != m {
                    return Err(format!("expected {} bytes, got {}", m.len(), got.len()));
                }
            }
            Ok(())
        })
        .unwrap();
    tx.send_batch(&msgs).unwrap();
    let reports = group.wait(Duration::from_secs(30));
    assert_eq!(reports[0].end, ChildEnd::Returned);
}

/// Runs `body` in a child with SIGPIPE at its default disposition (terminate), as in a C
/// host program; the test binary itself ignores SIGPIPE, as every Rust program does.
fn with_default_sigpipe(body: impl FnOnce() -> Result<(), String>) -> ChildEnd {
    let mut group = ChildGroup::new();
    group
        .spawn("sigpipe", |_| {
            // SAFETY: SIG_DFL installs no handler code; this child is single-threaded.
            unsafe {
                nix::sys::signal::signal(
                    nix::sys::signal::Signal::SIGPIPE,
                    nix::sys::signal::SigHandler::SigDfl,
                )
            }
            .map_err(|e| e.to_string())?;
            body()
        })
        .unwrap();
    group.wait(Duration::from_secs(30)).remove(0).end
}

#[test]
fn send_after_the_receiver_is_gone_is_an_error_not_a_signal_death() {
    let end = with_default_sigpipe(|| {
        let (mut tx, rx) = pipe::channel().map_err(|e| e.to_string())?;
        drop(rx);
        for batch in [false, true] {
            let err = if batch {
                tx.send_batch(&[b"x", b"y"])
            } else {
                tx.send(b"x")
            };
            match err {
                Err(Error::Disconnected) => {}
                other => return Err(format!("expected Disconnected, got {other:?}")),
            }
        }
        Ok(())
    });
    assert_eq!(
        end,
        ChildEnd::Returned,
        "the sender died instead of getting an error"
    );
}

#[test]
fn a_sigpipe_the_caller_left_pending_is_not_swallowed() {
    use nix::sys::signal::{SigSet, Signal};
    let end = with_default_sigpipe(|| {
        let mask = SigSet::from(Signal::SIGPIPE);
        mask.thread_block().map_err(|e| e.to_string())?;
        nix::sys::signal::raise(Signal::SIGPIPE).map_err(|e| e.to_string())?;
        let (mut tx, rx) = pipe::channel().map_err(|e| e.to_string())?;
        drop(rx);
        if !matches!(tx.send(b"x"), Err(Error::Disconnected)) {
            return Err("expected Disconnected".into());
        }
        // Still blocked and still pending: the caller's signal is theirs to handle.
        if !SigSet::thread_get_mask()
            .map_err(|e| e.to_string())?
            .contains(Signal::SIGPIPE)
        {
            return Err("the mask was changed".into());
        }
        let sig = mask.wait().map_err(|e| e.to_string())?;
        if sig != Signal::SIGPIPE {
            return Err(format!("unexpected {sig:?}"));
        }
        Ok(())
    });
    assert_eq!(end, ChildEnd::Returned);
}

#[test]
fn the_mask_is_restored_after_a_send() {
    use nix::sys::signal::{SigSet, Signal};
    let (mut tx, rx) = pipe::channel().unwrap();
    tx.send(b"x").unwrap();
    drop(rx);
    assert!(tx.send(b"y").unwrap_err().is_disconnected());
    let mask = SigSet::thread_get_mask().unwrap();
    assert!(!mask.contains(Signal::SIGPIPE), "SIGPIPE left blocked");
}

#[test]
fn dropping_an_end_in_another_process_does_not_close_the_channel() {
    let (tx, rx) = pipe::channel().unwrap();
    let (mut tx, mut rx) = (Some(tx), Some(rx));
    let mut group = ChildGroup::new();
    // The usual post-fork cleanup: a child that uses neither end drops (closes) both.
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
}

#[test]
fn from_fd_refuses_what_is_not_a_pipe() {
    let file = std::fs::File::open("/dev/null").unwrap();
    let err = PipeReceiver::from_fd(OwnedFd::from(file), PipeConfig::new()).unwrap_err();
    assert!(err.to_string().contains("not a pipe"), "{err}");
}

#[test]
fn the_sigpipe_promise_is_refused_when_sigpipe_is_not_ignored() {
    let end = with_default_sigpipe(|| {
        match pipe::channel_with(PipeConfig::new().with_sigpipe_ignored(true)) {
            Err(Error::InvalidConfig { what, why }) => {
                if what.contains("sigpipe_ignored") && why.contains("SIGPIPE is not ignored") {
                    Ok(())
                } else {
                    Err(format!("unclear error: {what}: {why}"))
                }
            }
            other => Err(format!("expected the promise to be refused, got {other:?}")),
        }
    });
    assert_eq!(end, ChildEnd::Returned);
}

#[test]
fn with_sigpipe_ignored_a_send_without_receiver_is_disconnected_and_nothing_is_pending() {
    // This test binary ignores SIGPIPE, as every Rust program does, so the promise holds.
    let (mut tx, rx) = pipe::channel_with(PipeConfig::new().with_sigpipe_ignored(true)).unwrap();
    tx.send(b"before").unwrap();
    drop(rx);
    assert!(tx.send(b"small").unwrap_err().is_disconnected());
    assert!(tx.send(&[7u8; 70_000]).unwrap_err().is_disconnected());
    assert!(tx.send_batch(&[b"a", b"b"]).unwrap_err().is_disconnected());
    // SAFETY: an all-zero sigset_t is a valid (empty) set; sigpending fills it and
    // sigismember only reads it.
    unsafe {
        let mut pending: nix::libc::sigset_t = std::mem::zeroed();
        assert_eq!(nix::libc::sigpending(&mut pending), 0);
        assert_eq!(nix::libc::sigismember(&pending, nix::libc::SIGPIPE), 0);
    }
}

#[rstest]
#[case(1 << 20)]
#[case(256 * 1024)]
fn a_larger_pipe_buffer_takes_a_large_message_in_one_write(#[case] bytes: usize) {
    let (mut tx, mut rx) = pipe::channel_with(PipeConfig::new().with_capacity(bytes)).unwrap();
    // Without a reader: only a pipe of at least this size can take it without blocking.
    let msg = vec![0x33u8; bytes / 2];
    tx.send(&msg).unwrap();
    assert_eq!(rx.recv().unwrap(), msg);
}

#[test]
fn an_impossible_pipe_buffer_is_an_error_not_a_silent_default() {
    match pipe::channel_with(PipeConfig::new().with_capacity(1 << 40)) {
        Err(Error::Io { op, .. }) => assert!(op.contains("F_SETPIPE_SZ"), "{op}"),
        other => panic!("expected an F_SETPIPE_SZ error, got {other:?}"),
    }
}

#[test]
fn a_message_larger_than_the_pipe_buffer_grows_it_and_goes_in_one_write() {
    // 200 KB does not fit the default 64 KiB buffer: without growing, the send would wait
    // for a reader that only reads after it returns.
    let (mut tx, mut rx) = pipe::channel().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let sender = std::thread::spawn(move || {
        let r = tx.send(&vec![0x44u8; 200_000]);
        done_tx.send(r.is_ok()).unwrap();
        tx
    });
    let finished_alone = done_rx.recv_timeout(Duration::from_secs(20));
    // Unblock the sender whatever happened, then judge.
    assert_eq!(rx.recv().unwrap().len(), 200_000);
    let tx = sender.join().unwrap();
    assert_eq!(finished_alone, Ok(true), "the send waited for the reader");
    let size = nix::fcntl::fcntl(tx.as_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap();
    assert_eq!(size, 256 * 1024);
}

#[test]
fn an_explicit_capacity_is_kept() {
    let (mut tx, mut rx) = pipe::channel_with(PipeConfig::new().with_capacity(128 * 1024)).unwrap();
    let reader = std::thread::spawn(move || rx.recv().unwrap().len());
    tx.send(&vec![1u8; 300_000]).unwrap();
    assert_eq!(reader.join().unwrap(), 300_000);
    let size = nix::fcntl::fcntl(tx.as_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap();
    assert_eq!(size, 128 * 1024);
}
