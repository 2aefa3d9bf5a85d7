//! iceoryx2 between two processes: zero-copy publish-subscribe over shared memory, the
//! peer of our ring.
//!
//! Each process creates its own node, services and ports after the fork, as two programs
//! would, in an iceoryx2 domain private to the run: its own root directory and shared
//! memory prefix, both removed at the end of the run (what a run killed as a whole left,
//! at the start of the next one). The payload is a `[u8]` slice of the message's length,
//! loaned from the publisher's shared memory, filled, sent; the subscriber reads every
//! byte of the sample in place. The clock starts once the subscriber has attached to the
//! publisher (the child says so on a pipe): samples sent before are not kept for it.
//!
//! The service never loses a message: it does not overflow (`enable_safe_overflow(false)`)
//! and the publisher retries while the subscriber's queue is full
//! ([`BackpressureStrategy::RetryUntilDelivered`]), giving up, and failing the run, only
//! after [`PATIENCE`]. The subscriber's queue holds [`depth`] messages, as many as our ring
//! of [`RING_BYTES`] holds of that size.
//!
//! [`Wake::Poll`]: the subscriber polls `receive` in a loop. [`Wake::Block`]: each direction
//! also has an event service; the publisher notifies after every send, and a subscriber
//! that finds nothing waits on its listener.
//!
//! A message of 0 bytes is a slice of length 0: iceoryx2 loans and delivers it (a sample
//! is a header and a payload of `len * 1` bytes, and 0 is a valid length); only the
//! publisher's maximum slice length must be at least 1.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::port::{BackpressureAction, BackpressureInfo};
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::{event, publish_subscribe};
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::Wake;
use crate::bench::pipe::WARMUP;
use crate::bench::ring::RING_BYTES;
use crate::bench::{consume, expect_count, failed, payload, wait_ok};
use crate::check::fork::ChildGroup;
use crate::{Error, Result};

/// How long a party waits for its peer to appear, to make room or to answer before it
/// fails the run (a peer that died without leaving, say).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How long a blocked subscriber sleeps at most before it looks again whether its
/// publisher is still there (a notifier's dropped event normally wakes it at once).
const NAP: Duration = Duration::from_millis(100);

/// The event a notifier emits when it is dropped: it wakes a sleeping subscriber, which
/// then finds the publisher gone.
const DROPPED: EventId = EventId::new(1);

/// Bytes our ring spends per message besides the payload (its record header), for
/// [`depth`].
const RING_RECORD: usize = 8;

/// Messages a subscriber's queue holds for messages of `size` bytes: as many as our ring
/// of [`RING_BYTES`] holds (a record of an 8-byte header and the payload rounded up to 8
/// bytes each), at least 2. 32768 at 0 bytes, 3640 at 64, 3 at 64 KiB.
pub fn depth(size: usize) -> usize {
    (RING_BYTES / (RING_RECORD + size.next_multiple_of(8))).max(2)
}

/// Serializes the runs of this module within one process: a fork while another thread of
/// this process is inside iceoryx2 could leave a lock of its global state held in the
/// child.
static RUNS: Mutex<()> = Mutex::new(());

type Ipc = ipc::Service;

/// The iceoryx2 domain of one run, private to it: iceoryx2's default configuration with
/// its own root directory (a temporary directory, for the node and service files) and its
/// own prefix for the shared memory objects in `/dev/shm`. Dropping it removes both, so a
/// run leaves nothing behind, not even what iceoryx2 keeps on purpose (its domain's
/// node counter, a persistent 16-byte shared memory object) or what a killed child of
/// the run left. What a run whose own process was killed left is removed by the next run
/// ([`sweep_dead`]). Other iceoryx2 users of the machine are neither seen nor disturbed.
struct Domain {
    config: Config,
    /// The prefix of every shared memory object of the domain.
    prefix: String,
    /// Removed when the domain is dropped.
    _root: tempfile::TempDir,
}

/// Where the shared memory objects are (POSIX shared memory on Linux).
const SHM_DIR: &str = "/dev/shm";
/// The start of a domain's shared memory prefix, then `<pid>_<counter>_`.
const SHM_PREFIX: &str = "ipcprop_iox2_";
/// The start of a domain's root directory name in the temporary directory, then `<pid>-`.
const ROOT_PREFIX: &str = "ipcprop-iceoryx2-";

/// Removes the domains (shared memory objects and root directories) of runs whose process
/// no longer exists (killed before it could drop them). A process id in use again by
/// another program keeps its files; they go once that process is gone too.
fn sweep_dead() {
    let dead = |rest: &[u8], sep: u8| -> bool {
        let digits: Vec<u8> = rest.iter().copied().take_while(|&b| b != sep).collect();
        let Some(pid) = std::str::from_utf8(&digits)
            .ok()
            .and_then(|d| d.parse::<i32>().ok())
        else {
            return false;
        };
        pid > 0
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                == Err(nix::errno::Errno::ESRCH)
    };
    for (dir, prefix, sep) in [
        (std::path::PathBuf::from(SHM_DIR), SHM_PREFIX, b'_'),
        (std::env::temp_dir(), ROOT_PREFIX, b'-'),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(rest) = name.as_encoded_bytes().strip_prefix(prefix.as_bytes()) else {
                continue;
            };
            if dead(rest, sep) {
                let path = e.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(path)
                } else {
                    std::fs::remove_file(path)
                };
            }
        }
    }
}

impl Domain {
    fn new() -> Result<Domain> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // iceoryx2 logs warnings to stderr, in the middle of the run's table. The one runs
        // meet (in some runs, not all) is "The static storage was already removed. This
        // could be caused by a corrupted system.": a service's file found gone when its
        // creator's handle drops at the end of a run, after the two processes sharing the
        // service have both left it; the run's domain is removed whole just after. Every
        // result is checked here anyway; errors still print, and IOX2_LOG_LEVEL (say
        // `warn`) brings the rest back.
        set_log_level_from_env_or(LogLevel::Error);
        sweep_dead();
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("{SHM_PREFIX}{pid}_{k}_");
        let root = tempfile::Builder::new()
            .prefix(&format!("{ROOT_PREFIX}{pid}-"))
            .tempdir()
            .map_err(|e| Error::io("tempdir", e))?;
        let mut config = Config::default();
        config.global.prefix = FileName::new(prefix.as_bytes())
            .map_err(|e| failed(format!("iceoryx2 prefix {prefix}: {e:?}")))?;
        let path = root.path().as_os_str().as_encoded_bytes();
        config.global.set_root_path(
            &Path::new(path).map_err(|e| failed(format!("iceoryx2 root {root:?}: {e:?}")))?,
        );
        Ok(Domain {
            config,
            prefix,
            _root: root,
        })
    }

    /// A node of this process in this domain, which leaves the process's signal handlers
    /// alone.
    fn node(&self) -> std::result::Result<Node<Ipc>, String> {
        NodeBuilder::new()
            .config(&self.config)
            .signal_handling_mode(SignalHandlingMode::Disabled)
            .create::<Ipc>()
            .map_err(|e| format!("iceoryx2 node: {e:?}"))
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // Nothing but this run uses the prefix. The temporary directory goes with `root`.
        if let Ok(entries) = std::fs::read_dir(SHM_DIR) {
            for e in entries.flatten() {
                if e.file_name()
                    .as_encoded_bytes()
                    .starts_with(self.prefix.as_bytes())
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Calls `open` until it succeeds, for at most `patience`: both processes open or create
/// the same service at about the same time, and one may find it half created.
fn retry<T, E: std::fmt::Debug>(
    what: &str,
    patience: Duration,
    mut open: impl FnMut() -> std::result::Result<T, E>,
) -> std::result::Result<T, String> {
    let start = Instant::now();
    loop {
        match open() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() > patience => {
                return Err(format!("iceoryx2 {what}: {e:?}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// The services of one direction, as each of the two processes opens them.
struct Services {
    data: publish_subscribe::PortFactory<Ipc, [u8], ()>,
    event: Option<event::PortFactory<Ipc>>,
    /// How long the ports wait for the peer ([`PATIENCE`] in a run).
    patience: Duration,
}

impl Services {
    /// Opens (or creates) the publish-subscribe service `name` for messages of up to `size`
    /// bytes, queues of `depth`, and with [`Wake::Block`] its event service. Its ports wait
    /// for the peer for at most [`PATIENCE`].
    fn open(
        node: &Node<Ipc>,
        name: &str,
        depth: usize,
        wake: Wake,
    ) -> std::result::Result<Services, String> {
        Self::open_with(node, name, depth, wake, PATIENCE)
    }

    /// [`Services::open`], the ports waiting for the peer for at most `patience`.
    fn open_with(
        node: &Node<Ipc>,
        name: &str,
        depth: usize,
        wake: Wake,
        patience: Duration,
    ) -> std::result::Result<Services, String> {
        let data_name =
            ServiceName::new(&format!("{name}/data")).map_err(|e| format!("{name}: {e:?}"))?;
        let data = retry("publish-subscribe service", patience, || {
            node.service_builder(&data_name)
                .publish_subscribe::<[u8]>()
                .enable_safe_overflow(false)
                .subscriber_max_buffer_size(depth)
                .history_size(0)
                .max_publishers(1)
                .max_subscribers(1)
                .open_or_create()
        })?;
        let event = match wake {
            Wake::Poll => None,
            Wake::Block => {
                let event_name = ServiceName::new(&format!("{name}/event"))
                    .map_err(|e| format!("{name}: {e:?}"))?;
                Some(retry("event service", patience, || {
                    node.service_builder(&event_name)
                        .event()
                        .notifier_dropped_event(DROPPED)
                        .open_or_create()
                })?)
            }
        };
        Ok(Services {
            data,
            event,
            patience,
        })
    }

    /// The sending end: a publisher of slices up to `size` bytes (at least 1: iceoryx2's
    /// maximum, not the message's length), and a notifier with [`Wake::Block`].
    fn sender(self, size: usize) -> std::result::Result<Out, String> {
        // Retry while the subscriber's queue is full, for at most `patience`.
        let patience = self.patience;
        let patience = move |info: &BackpressureInfo| {
            if info.elapsed_time < patience {
                BackpressureAction::Retry
            } else {
                BackpressureAction::DiscardDataAndFail
            }
        };
        let publisher = self
            .data
            .publisher_builder()
            .initial_max_slice_len(size.max(1))
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .set_backpressure_handler(patience)
            .create()
            .map_err(|e| format!("iceoryx2 publisher: {e:?}"))?;
        let notifier = match &self.event {
            None => None,
            Some(ev) => Some(
                ev.notifier_builder()
                    .create()
                    .map_err(|e| format!("iceoryx2 notifier: {e:?}"))?,
            ),
        };
        Ok(Out {
            publisher,
            notifier,
            services: self,
        })
    }

    /// The receiving end: a subscriber with a queue of `depth`, and a listener with
    /// [`Wake::Block`].
    fn receiver(self, depth: usize) -> std::result::Result<In, String> {
        let subscriber = self
            .data
            .subscriber_builder()
            .buffer_size(depth)
            .create()
            .map_err(|e| format!("iceoryx2 subscriber: {e:?}"))?;
        let listener = match &self.event {
            None => None,
            Some(ev) => Some(
                ev.listener_builder()
                    .create()
                    .map_err(|e| format!("iceoryx2 listener: {e:?}"))?,
            ),
        };
        Ok(In {
            subscriber,
            listener,
            services: self,
            seen: false,
        })
    }
}

/// The sending end of one direction. Fields drop in order: the publisher before the
/// notifier (whose dropped event then wakes a sleeping subscriber to find the publisher
/// gone), the ports before their services.
struct Out {
    publisher: Publisher<Ipc, [u8], ()>,
    notifier: Option<Notifier<Ipc>>,
    services: Services,
}

impl Out {
    /// Waits until the subscriber of this direction exists: a publisher delivers only to
    /// the subscribers there are when it sends.
    fn wait_for_subscriber(&self) -> std::result::Result<(), String> {
        let start = Instant::now();
        while self.services.data.dynamic_config().number_of_subscribers() == 0 {
            if start.elapsed() > self.services.patience {
                return Err("the iceoryx2 subscriber never appeared".into());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }

    /// Sends `msg`: loans a slice of its length in shared memory, copies it in, sends it,
    /// and with [`Wake::Block`] notifies the listener.
    ///
    /// A send can reach no subscriber: until the subscriber has attached to the connection
    /// the publisher made for it (at its next `receive`), a full queue does not make the
    /// publisher wait but drops the sample. Then it sends the message again, for at most
    /// the services' patience.
    fn send(&self, msg: &[u8]) -> std::result::Result<(), String> {
        let mut since: Option<Instant> = None;
        loop {
            let sample = self
                .publisher
                .loan_slice_uninit(msg.len())
                .map_err(|e| format!("iceoryx2 loan: {e:?}"))?;
            let delivered = sample
                .write_from_slice(msg)
                .send()
                .map_err(|e| format!("iceoryx2 send: {e:?}"))?;
            if delivered > 0 {
                break;
            }
            if since.get_or_insert_with(Instant::now).elapsed() > self.services.patience {
                return Err("iceoryx2 delivered a message to no subscriber".into());
            }
            std::thread::yield_now();
        }
        if let Some(n) = &self.notifier {
            n.notify().map_err(|e| format!("iceoryx2 notify: {e:?}"))?;
        }
        Ok(())
    }
}

/// The receiving end of one direction. Fields drop in order: the ports before their
/// services.
struct In {
    subscriber: Subscriber<Ipc, [u8], ()>,
    listener: Option<Listener<Ipc>>,
    services: Services,
    /// Whether the publisher has been seen (before it exists, its absence is no end).
    seen: bool,
}

impl In {
    /// Lends the next message to `f`, waiting for it by polling (no listener) or on the
    /// listener; `Ok(None)` once the publisher is gone and everything it sent has been
    /// taken. Fails if nothing arrives and the publisher does not leave for the services' patience.
    fn next<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> std::result::Result<Option<T>, String> {
        let mut idle = 0u32;
        let mut since: Option<Instant> = None;
        loop {
            if let Some(s) = self.receive()? {
                return Ok(Some(f(s.payload())));
            }
            if self.services.data.dynamic_config().number_of_publishers() > 0 {
                self.seen = true;
            } else if self.seen {
                // Gone: what it sent before it went is still ours; then the end.
                return Ok(self.receive()?.map(|s| f(s.payload())));
            }
            match &self.listener {
                Some(l) => {
                    l.timed_wait(|_| {}, NAP)
                        .map_err(|e| format!("iceoryx2 wait: {e:?}"))?;
                }
                None => std::hint::spin_loop(),
            }
            // The clock only now and then, and not at all while messages keep coming.
            idle = idle.wrapping_add(1);
            if self.listener.is_some() || idle.is_multiple_of(4096) {
                let t = since.get_or_insert_with(Instant::now);
                if t.elapsed() > self.services.patience {
                    return Err("no iceoryx2 message and no end for too long".into());
                }
            }
        }
    }

    /// Waits until the publisher exists, then attaches this subscriber to it. Samples a
    /// publisher sends before its subscriber has attached are lost to that subscriber if
    /// the publisher leaves before the subscriber looks (an attached one keeps whatever was
    /// sent before the publisher left).
    fn attach(&mut self) -> std::result::Result<(), String> {
        let start = Instant::now();
        while self.services.data.dynamic_config().number_of_publishers() == 0 {
            if start.elapsed() > self.services.patience {
                return Err("the iceoryx2 publisher never appeared".into());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        self.seen = true;
        self.subscriber
            .update_connections()
            .map_err(|e| format!("iceoryx2 subscriber connecting: {e:?}"))
    }

    fn receive(
        &self,
    ) -> std::result::Result<Option<iceoryx2::sample::Sample<Ipc, [u8], ()>>, String> {
        self.subscriber
            .receive()
            .map_err(|e| format!("iceoryx2 receive: {e:?}"))
    }

    /// Receives until the publisher is gone, reading every byte; returns the messages and
    /// bytes received.
    fn drain(&mut self) -> std::result::Result<(u64, u64), String> {
        let mut got = (0u64, 0u64);
        while let Some(len) = self.next(|m| {
            consume(m);
            m.len()
        })? {
            got = (got.0 + 1, got.1 + len as u64);
        }
        Ok(got)
    }
}

/// Waits for the child's byte on `ready` (its subscriber has attached), at most
/// [`PATIENCE`].
fn wait_ready(ready: &OwnedFd) -> std::result::Result<(), String> {
    let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(PATIENCE).unwrap_or(PollTimeout::MAX);
    match nix::poll::poll(&mut fds, timeout) {
        Ok(0) => return Err("the iceoryx2 subscriber did not attach in time".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("waiting for the subscriber: {e}")),
    }
    let mut byte = [0u8; 1];
    match nix::unistd::read(ready, &mut byte) {
        Ok(1) => Ok(()),
        Ok(_) => Err("the iceoryx2 subscriber ended before it attached".into()),
        Err(e) => Err(format!("waiting for the subscriber: {e}")),
    }
}

/// iceoryx2: `n` messages of `size` bytes from this process to a child process, the
/// subscriber waiting as `wake` says. The time from the first send (once the child's
/// subscriber exists) until the child has received the last and exited.
pub fn throughput(n: u64, size: usize, wake: Wake) -> Result<Duration> {
    throughput_checked(n, n, size, wake)
}

/// [`throughput`], sending `sent` messages to a receiver that expects `n`.
fn throughput_checked(sent: u64, n: u64, size: usize, wake: Wake) -> Result<Duration> {
    let _serial = RUNS.lock().unwrap_or_else(PoisonError::into_inner);
    let domain = Domain::new()?;
    let name = "ipcprop/bench/throughput";
    let depth = depth(size);
    // A property case running in another thread must not have its descriptors inherited
    // by this fork (its receiver would wait for an end of stream this child holds up).
    let _cases = crate::check::case::lock_cases();
    let mut group = ChildGroup::new();
    let (ready_r, ready_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    let mut ready_w = Some(ready_w);
    group.spawn("iceoryx2 subscriber", |_| {
        let node = domain.node()?;
        let mut rx = Services::open(&node, name, depth, wake)?.receiver(depth)?;
        rx.attach()?;
        let ready = ready_w.take().ok_or("no handshake pipe")?;
        nix::unistd::write(&ready, &[1]).map_err(|e| format!("handshake: {e}"))?;
        let got = rx.drain()?;
        drop(rx);
        drop(node);
        expect_count(got, n, size)
    })?;
    // Only the child's copy of the writing end is left: if the child goes, the read ends.
    drop(ready_w.take());
    let start = (|| -> std::result::Result<Instant, String> {
        let node = domain.node()?;
        let tx = Services::open(&node, name, depth, wake)?.sender(size)?;
        tx.wait_for_subscriber()?;
        wait_ready(&ready_r)?;
        let msg = payload(size);
        let start = Instant::now();
        for _ in 0..sent {
            tx.send(&msg)?;
        }
        Ok(start)
    })();
    // The publisher is gone, whether or not all went well: the child ends at once (or
    // when it gives up waiting for one that never came), and leaves nothing behind.
    let waited = wait_ok(group);
    let start = start.map_err(failed)?;
    waited?;
    Ok(start.elapsed())
}

/// iceoryx2 ping-pong: a message of `size` bytes to a child process over one service, back
/// over another, both sides waiting as `wake` says. The time of each of `n` round trips,
/// after 200 untimed ones (as every ping-pong of [`crate::bench`]).
pub fn pingpong(n: u64, size: usize, wake: Wake) -> Result<Vec<Duration>> {
    let _serial = RUNS.lock().unwrap_or_else(PoisonError::into_inner);
    let domain = Domain::new()?;
    let (there, back) = ("ipcprop/bench/there", "ipcprop/bench/back");
    // One message in flight each way.
    let depth = 2;
    let _cases = crate::check::case::lock_cases();
    let mut group = ChildGroup::new();
    group.spawn("iceoryx2 echo", |_| {
        let node = domain.node()?;
        let mut rx = Services::open(&node, there, depth, wake)?.receiver(depth)?;
        let tx = Services::open(&node, back, depth, wake)?.sender(size)?;
        tx.wait_for_subscriber()?;
        let mut buf = Vec::with_capacity(size);
        while rx
            .next(|m| {
                buf.clear();
                buf.extend_from_slice(m)
            })?
            .is_some()
        {
            tx.send(&buf)?;
        }
        drop(tx);
        drop(rx);
        drop(node);
        Ok(())
    })?;
    let rtts = (|| -> std::result::Result<Vec<Duration>, String> {
        let node = domain.node()?;
        let mut rx = Services::open(&node, back, depth, wake)?.receiver(depth)?;
        let tx = Services::open(&node, there, depth, wake)?.sender(size)?;
        tx.wait_for_subscriber()?;
        let msg = payload(size);
        let mut rtts = Vec::with_capacity(n as usize);
        for i in 0..WARMUP + n {
            let t = Instant::now();
            tx.send(&msg)?;
            let len = rx
                .next(|m| {
                    consume(m);
                    m.len()
                })?
                .ok_or("the iceoryx2 echo child is gone")?;
            if len != size {
                return Err(format!("echo of {size} bytes came back as {len}"));
            }
            if i >= WARMUP {
                rtts.push(t.elapsed());
            }
        }
        Ok(rtts)
    })();
    // Our publisher is gone, whether or not all went well: the child ends.
    let waited = wait_ok(group);
    let rtts = rtts.map_err(failed)?;
    waited?;
    Ok(rtts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not the warm-up's 200 rounds: a ping-pong that timed the warm-up instead shows.
    const N: u64 = 150;

    #[test]
    fn throughput_delivers_every_message_at_every_size_and_wake() {
        for wake in [Wake::Poll, Wake::Block] {
            for size in [0, 64, 65536] {
                let took = throughput(N, size, wake);
                assert!(
                    took.as_ref().is_ok_and(|d| !d.is_zero()),
                    "{wake:?} {size}: {took:?}"
                );
            }
        }
    }

    #[test]
    fn pingpong_times_every_round_trip_at_every_size_and_wake() {
        for wake in [Wake::Poll, Wake::Block] {
            for size in [0, 64, 65536] {
                let rtts = pingpong(N, size, wake);
                assert_eq!(
                    rtts.map(|r| r.len()).ok(),
                    Some(N as usize),
                    "{wake:?} {size}"
                );
            }
        }
    }

    #[test]
    fn a_receiver_that_gets_one_message_too_few_or_too_many_fails_the_run() {
        for wake in [Wake::Poll, Wake::Block] {
            let exact = throughput_checked(N, N, 64, wake);
            assert!(exact.is_ok(), "{wake:?}: {exact:?}");
            assert!(throughput_checked(N - 1, N, 64, wake).is_err(), "{wake:?}");
            assert!(throughput_checked(N + 1, N, 64, wake).is_err(), "{wake:?}");
        }
    }

    /// The names in `dir` that start with `prefix`.
    fn named(dir: &std::path::Path, prefix: &str) -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(prefix))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_domain_leaves_nothing_behind_even_what_a_killed_process_left() {
        let (_runs, domain, node) = domain_and_node();
        let (prefix, root) = (domain.prefix.clone(), domain._root.path().to_path_buf());
        let rx = Services::open(&node, "t", 4, Wake::Block)
            .and_then(|s| s.receiver(4))
            .expect("receiver");
        let tx = Services::open(&node, "t", 4, Wake::Block)
            .and_then(|s| s.sender(64))
            .expect("sender");
        tx.send(&payload(64)).expect("send");
        assert!(!named(std::path::Path::new(SHM_DIR), &prefix).is_empty());
        assert!(root.read_dir().expect("root").next().is_some());
        // As if this process had been killed: nothing of iceoryx2's is dropped.
        std::mem::forget((rx, tx, node));
        drop(domain);
        assert_eq!(
            named(std::path::Path::new(SHM_DIR), &prefix),
            Vec::<String>::new()
        );
        assert!(!root.exists());
    }

    #[test]
    fn the_domains_of_dead_processes_are_swept_and_only_those() {
        // A process id that is surely not in use: above the kernel's maximum.
        let dead = format!("{SHM_PREFIX}{}_0_x", i32::MAX);
        let alive = format!("{SHM_PREFIX}{}_999_x", std::process::id());
        let dead_root = std::env::temp_dir().join(format!("{ROOT_PREFIX}{}-x", i32::MAX));
        for name in [&dead, &alive] {
            std::fs::write(std::path::Path::new(SHM_DIR).join(name), b"").expect("shm file");
        }
        std::fs::create_dir_all(dead_root.join("nodes")).expect("root dir");
        sweep_dead();
        let left = named(std::path::Path::new(SHM_DIR), SHM_PREFIX);
        let _ = std::fs::remove_file(std::path::Path::new(SHM_DIR).join(&alive));
        assert!(!left.contains(&dead), "{left:?}");
        assert!(left.contains(&alive), "{left:?}");
        assert!(!dead_root.exists());
    }

    /// A patience short enough for a test to wait out.
    const SHORT: Duration = Duration::from_millis(30);

    #[test]
    fn retry_tries_again_until_the_open_succeeds_and_gives_up_after_its_patience() {
        let mut failures = 3;
        let opened = retry("thing", Duration::from_secs(5), || {
            if failures == 0 {
                Ok(7)
            } else {
                failures -= 1;
                Err("half created")
            }
        });
        assert_eq!(opened, Ok(7));
        let start = Instant::now();
        let never = retry("thing", SHORT, || Err::<(), _>("half created"));
        assert_eq!(never, Err("iceoryx2 thing: \"half created\"".to_string()));
        assert!(start.elapsed() >= SHORT);
    }

    /// A private domain and a node in it, for ports whose peer comes only where a test
    /// makes it (in this process). Holds [`RUNS`] while they live: another test's fork
    /// while this thread is inside iceoryx2 could leave the child a lock held for good.
    fn domain_and_node() -> (std::sync::MutexGuard<'static, ()>, Domain, Node<Ipc>) {
        let runs = RUNS.lock().unwrap_or_else(PoisonError::into_inner);
        let domain = Domain::new().expect("domain");
        let node = domain.node().expect("node");
        (runs, domain, node)
    }

    /// The sending end of the service `name` of 64-byte messages, waiting [`SHORT`].
    fn short_sender(node: &Node<Ipc>, name: &str, wake: Wake) -> Out {
        Services::open_with(node, name, 4, wake, SHORT)
            .and_then(|s| s.sender(64))
            .expect("sender")
    }

    /// The receiving end of the service `name`, waiting [`SHORT`].
    fn short_receiver(node: &Node<Ipc>, name: &str, wake: Wake) -> In {
        Services::open_with(node, name, 4, wake, SHORT)
            .and_then(|s| s.receiver(4))
            .expect("receiver")
    }

    #[test]
    fn a_publisher_without_subscriber_waits_its_patience_then_fails() {
        for wake in [Wake::Poll, Wake::Block] {
            let (_runs, _domain, node) = domain_and_node();
            let tx = short_sender(&node, "alone", wake);
            let start = Instant::now();
            assert_eq!(
                tx.wait_for_subscriber(),
                Err("the iceoryx2 subscriber never appeared".to_string()),
                "{wake:?}"
            );
            assert_eq!(
                tx.send(&payload(64)),
                Err("iceoryx2 delivered a message to no subscriber".to_string()),
                "{wake:?}"
            );
            assert!(start.elapsed() >= 2 * SHORT, "{wake:?}");
            // Once a subscriber exists, neither waits.
            let _rx = short_receiver(&node, "alone", wake);
            assert_eq!(tx.wait_for_subscriber(), Ok(()), "{wake:?}");
        }
    }

    #[test]
    fn a_subscriber_without_publisher_waits_its_patience_then_fails() {
        for wake in [Wake::Poll, Wake::Block] {
            let (_runs, _domain, node) = domain_and_node();
            let mut rx = short_receiver(&node, "alone", wake);
            let start = Instant::now();
            assert_eq!(
                rx.attach(),
                Err("the iceoryx2 publisher never appeared".to_string()),
                "{wake:?}"
            );
            // Never seen, so its absence is no end: an error, not `Ok(None)`.
            assert_eq!(
                rx.next(|m| m.len()),
                Err("no iceoryx2 message and no end for too long".to_string()),
                "{wake:?}"
            );
            assert!(start.elapsed() >= 2 * SHORT, "{wake:?}");
        }
    }

    #[test]
    fn a_silent_publisher_fails_the_receive_after_its_patience_and_a_gone_one_ends_it() {
        for wake in [Wake::Poll, Wake::Block] {
            let (_runs, _domain, node) = domain_and_node();
            let mut rx = short_receiver(&node, "quiet", wake);
            let tx = short_sender(&node, "quiet", wake);
            assert_eq!(rx.attach(), Ok(()), "{wake:?}");
            assert_eq!(
                rx.next(|m| m.len()),
                Err("no iceoryx2 message and no end for too long".to_string()),
                "{wake:?}"
            );
            tx.send(&payload(64)).expect("send");
            drop(tx);
            // What it sent before it went is still taken; then the end.
            assert_eq!(rx.next(|m| m.len()), Ok(Some(64)), "{wake:?}");
            assert_eq!(rx.next(|m| m.len()), Ok(None), "{wake:?}");
        }
    }

    #[test]
    fn the_queue_holds_what_our_ring_holds() {
        assert_eq!(depth(0), RING_BYTES / 8);
        assert_eq!(depth(64), RING_BYTES / 72);
        assert_eq!(depth(65536), 3);
        assert_eq!(depth(1 << 20), 2);
    }
}
