//! The quick run behind `ipcprop bench`: every comparison at every size, each measurement
//! sized to a time budget, ratios to the baselines and the design targets.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::queue::BenchDir;
use super::report::{Bound, CpuUse, Family, Kind, Machine, Report, Row, TargetStatus};
use super::{fork, pipe, queue, ring, BATCH, SIZES};
use crate::pipe::PipeConfig;
use crate::queue::QueueConfig;
use crate::Result;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The families to measure.
    pub families: Vec<Family>,
    /// Message sizes (bytes).
    pub sizes: Vec<usize>,
    /// Roughly how long each measurement runs once calibrated.
    pub budget: Duration,
    /// Where the queue files go (a fresh subdirectory is made and removed).
    pub queue_dir: PathBuf,
    /// Also measure the crates users pick instead (iceoryx2, ipc-channel, interprocess,
    /// SQLite, yaque) and evaluate the targets against them. Needs the `peers` feature:
    /// without it, [`run`] refuses.
    pub peers: bool,
}

impl Options {
    /// Everything, 0.25 s per measurement: about 40 s on two cores.
    pub fn quick() -> Options {
        Options {
            families: Family::ALL.to_vec(),
            sizes: SIZES.to_vec(),
            budget: Duration::from_millis(250),
            queue_dir: default_queue_dir(),
            peers: false,
        }
    }
}

/// `$CARGO_TARGET_DIR`, else `./target` if it exists (both usually on a real disk), else
/// the system temporary directory (often a tmpfs, where fsync is free: the report names the
/// filesystem).
pub fn default_queue_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let target = PathBuf::from("target");
    if target.is_dir() {
        return target;
    }
    std::env::temp_dir()
}

/// One measurement to make.
struct Spec<'a> {
    family: Family,
    kind: Kind,
    size: usize,
    name: &'static str,
    /// The row (same family, kind, size) this one's ratio is relative to.
    vs: Option<&'static str>,
    /// Messages (or round trips) for the first, calibrating run.
    first: u64,
    work: Work<'a>,
    /// Run beside a busy neighbour process ([`beside_busy_neighbour`]): its CPU time is
    /// not the row's own.
    neighbour: bool,
}

enum Work<'a> {
    Throughput(Box<dyn Fn(u64) -> Result<Duration> + 'a>),
    Latency(Box<dyn Fn(u64) -> Result<Vec<Duration>> + 'a>),
}

/// Row names, shared by the specs, the ratios and the targets.
mod names {
    pub const RAW_WRITE: &str = "raw write";
    pub const PIPE_SEND: &str = "ipcprop send";
    pub const PIPE_TUNED: &str = "ipcprop send, tuned";
    pub const PIPE_TUNED_LAT: &str = "ipcprop pipe, tuned";
    pub const PIPE_BATCH: &str = "ipcprop send_batch 64";
    pub const UNIX_STREAM: &str = "UnixStream";
    pub const RAW_PIPE: &str = "raw pipe";
    pub const PIPE: &str = "ipcprop pipe";
    pub const RTRB: &str = "rtrb (threads)";
    pub const CROSSBEAM: &str = "crossbeam (threads)";
    pub const RING_SEND: &str = "ipcprop ring send";
    pub const RING_BATCH: &str = "ipcprop ring batch 64";
    pub const RING_SEND_TRUSTED: &str = "ipcprop ring send, trusted (zero-copy)";
    pub const RING_TRUSTED: &str = "ipcprop ring, trusted (zero-copy)";
    pub const SPIN: &str = "bare shm spin";
    pub const RING: &str = "ipcprop ring";
    pub const QF: &str = "queue-file";
    pub const QF_BATCH: &str = "queue-file batch 64";
    pub const Q_PUSH_POP: &str = "ipcprop push+pop";
    pub const Q_BATCH: &str = "ipcprop push+pop batch 64";
    pub const Q_EXCLUSIVE: &str = "ipcprop push+pop, exclusive";
    pub const Q_ERASE: &str = "ipcprop push+pop, erase consumed";
    pub const QF_SYNC: &str = "queue-file sync";
    pub const QF_SYNC_BATCH: &str = "queue-file sync batch 64";
    pub const Q_DURABLE: &str = "ipcprop durable push";
    pub const Q_DURABLE_BATCH: &str = "ipcprop durable batch 64";
    pub const Q_CHANNEL: &str = "ipcprop queue, 2 processes";
    pub const BARE_FORK: &str = "bare fork+_exit+waitpid";
    pub const TINY_CASE: &str = "tiny property case";
    /// Raw byte streams: they cannot carry an empty message.
    pub const RAW: [&str; 3] = [RAW_WRITE, RAW_PIPE, UNIX_STREAM];
    // The peers (`--peers`), and ours in their guarantee classes.
    #[cfg(feature = "peers")]
    pub const RING_POLL: &str = "ipcprop ring, polling receiver";
    #[cfg(feature = "peers")]
    pub const RING_POLL_LAT: &str = "ipcprop ring, both polling";
    #[cfg(feature = "peers")]
    pub const RING_NEIGHBOUR: &str = "ipcprop ring, busy neighbour";
    pub const IOX_POLL: &str = "iceoryx2, busy-poll";
    pub const IOX_EVENT: &str = "iceoryx2 + event";
    pub const IOX_EVENT_NEIGHBOUR: &str = "iceoryx2 + event, busy neighbour";
    #[cfg(feature = "peers")]
    pub const PIPE_PROMISED: &str = "ipcprop send, SIGPIPE promised ignored";
    #[cfg(feature = "peers")]
    pub const RAW_PREFIX_READER: &str = "raw write, reader takes prefix then payload";
    pub const INTERPROCESS: &str = "interprocess + length prefix";
    pub const IPC_TYPED: &str = "ipc-channel Vec<u8>";
    pub const IPC_BYTES: &str = "ipc-channel bytes";
    #[cfg(feature = "peers")]
    pub const Q_PUSH: &str = "ipcprop push, no fsync";
    #[cfg(feature = "peers")]
    pub const Q_PUSH_EXCLUSIVE: &str = "ipcprop push, exclusive";
    #[cfg(feature = "peers")]
    pub const Q_SYNC_PAIR: &str = "ipcprop queue, fsync, 2 processes";
    #[cfg(feature = "peers")]
    pub const RAW_SYNC_APPEND: &str = "pwrite + fdatasync, appending";
    #[cfg(feature = "peers")]
    pub const RAW_SYNC_OVERWRITE: &str = "pwrite + fdatasync, over synced blocks";
    pub const SQL_FULL: &str = "SQLite WAL FULL";
    pub const SQL_FULL_TX: &str = "SQLite WAL FULL, 64 per transaction";
    pub const SQL_FULL_PAIR: &str = "SQLite WAL FULL, 2 processes";
    pub const SQL_NORMAL: &str = "SQLite WAL NORMAL";
    #[cfg(feature = "peers")]
    pub const SQL_OFF: &str = "SQLite WAL OFF";
    pub const SQL_NORMAL_PAIR: &str = "SQLite WAL NORMAL, 2 processes";
    pub const YAQUE: &str = "yaque";
    pub const YAQUE_PAIR: &str = "yaque, 2 processes";
}
use names::*;

type Thr<'a> = Box<dyn Fn(u64) -> Result<Duration> + 'a>;
type Lat<'a> = Box<dyn Fn(u64) -> Result<Vec<Duration>> + 'a>;

/// Adds one comparison group: `rows` are (name, compared with, workload).
fn group<'a, W>(
    out: &mut Vec<Spec<'a>>,
    (family, kind, size, first): (Family, Kind, usize, u64),
    rows: Vec<(&'static str, Option<&'static str>, W)>,
    wrap: impl Fn(W) -> Work<'a>,
) {
    for (name, vs, work) in rows {
        out.push(Spec {
            family,
            kind,
            size,
            name,
            vs,
            first,
            work: wrap(work),
            neighbour: false,
        });
    }
}

/// Drops the rows of raw byte streams at size 0: they cannot carry an empty message.
fn nonempty<W>(
    size: usize,
    rows: Vec<(&'static str, Option<&'static str>, W)>,
) -> Vec<(&'static str, Option<&'static str>, W)> {
    rows.into_iter()
        .filter(|(name, ..)| size > 0 || !RAW.contains(name))
        .collect()
}

fn specs<'a>(opts: &Options, dir: &'a BenchDir) -> Vec<Spec<'a>> {
    use Family::*;
    use Kind::*;
    let mut out = Vec::new();
    let (thr, lat) = (Work::Throughput, Work::Latency);
    for &family in &opts.families {
        for &s in &opts.sizes {
            let b = Some;
            match family {
                Pipe => {
                    let rows: Vec<(_, _, Thr<'a>)> = vec![
                        (RAW_WRITE, None, Box::new(move |n| pipe::raw_write(n, s))),
                        (
                            PIPE_SEND,
                            b(RAW_WRITE),
                            Box::new(move |n| pipe::channel(n, s, 1, PipeConfig::new())),
                        ),
                        (
                            PIPE_TUNED,
                            b(RAW_WRITE),
                            Box::new(move |n| pipe::channel(n, s, 1, pipe::tuned())),
                        ),
                        (
                            PIPE_BATCH,
                            b(RAW_WRITE),
                            Box::new(move |n| pipe::channel(n, s, BATCH, PipeConfig::new())),
                        ),
                        (
                            UNIX_STREAM,
                            b(RAW_WRITE),
                            Box::new(move |n| pipe::unix_stream(n, s)),
                        ),
                    ];
                    group(
                        &mut out,
                        (Pipe, Throughput, s, 2000),
                        nonempty(s, rows),
                        thr,
                    );
                }
                Ring => {
                    let rows: Vec<(_, _, Thr<'a>)> = vec![
                        (RTRB, None, Box::new(move |n| ring::rtrb_threads(n, s))),
                        (
                            RING_SEND,
                            b(RTRB),
                            Box::new(move |n| ring::channel(n, s, 1, false)),
                        ),
                        (
                            RING_SEND_TRUSTED,
                            b(RING_SEND),
                            Box::new(move |n| ring::channel(n, s, 1, true)),
                        ),
                        (
                            RING_BATCH,
                            b(RTRB),
                            Box::new(move |n| ring::channel(n, s, BATCH, false)),
                        ),
                        (
                            CROSSBEAM,
                            b(RTRB),
                            Box::new(move |n| ring::crossbeam_threads(n, s)),
                        ),
                    ];
                    group(&mut out, (Ring, Throughput, s, 5000), rows, thr);
                }
                Queue => {
                    let rows: Vec<(_, _, Thr<'a>)> = vec![
                        (
                            QF,
                            None,
                            Box::new(move |n| queue::queue_file_push_pop(dir, n, s, 1)),
                        ),
                        (
                            Q_PUSH_POP,
                            b(QF),
                            Box::new(move |n| queue::push_pop(dir, n, s, 1)),
                        ),
                        (
                            Q_BATCH,
                            b(QF),
                            Box::new(move |n| queue::push_pop(dir, n, s, BATCH)),
                        ),
                        (
                            Q_EXCLUSIVE,
                            b(QF),
                            Box::new(move |n| {
                                let config = QueueConfig::new().with_exclusive(true);
                                queue::push_pop_with(dir, n, s, 1, config)
                            }),
                        ),
                        (
                            Q_ERASE,
                            b(QF),
                            Box::new(move |n| {
                                let config = QueueConfig::new().with_erase_consumed(true);
                                queue::push_pop_with(dir, n, s, 1, config)
                            }),
                        ),
                        (
                            QF_BATCH,
                            b(QF),
                            Box::new(move |n| queue::queue_file_push_pop(dir, n, s, BATCH)),
                        ),
                    ];
                    group(&mut out, (Queue, Throughput, s, 200), rows, thr);
                    let rows: Vec<(_, _, Thr<'a>)> = vec![
                        (
                            QF_SYNC,
                            None,
                            Box::new(move |n| queue::queue_file_durable_push(dir, n, s, 1)),
                        ),
                        (
                            Q_DURABLE,
                            b(QF_SYNC),
                            Box::new(move |n| queue::durable_push(dir, n, s, 1)),
                        ),
                        (
                            Q_DURABLE_BATCH,
                            b(QF_SYNC),
                            Box::new(move |n| queue::durable_push(dir, n, s, BATCH)),
                        ),
                        (
                            QF_SYNC_BATCH,
                            b(QF_SYNC),
                            Box::new(move |n| queue::queue_file_durable_push(dir, n, s, BATCH)),
                        ),
                    ];
                    group(&mut out, (Queue, Throughput, s, 8), rows, thr);
                    let rows: Vec<(_, _, Thr<'a>)> = vec![(
                        Q_CHANNEL,
                        None,
                        Box::new(move |n| queue::channel(dir, n, s)),
                    )];
                    group(&mut out, (Queue, Throughput, s, 200), rows, thr);
                }
                Fork => {}
            }
        }
        for &s in &opts.sizes {
            let b = Some;
            match family {
                Pipe => {
                    let rows: Vec<(_, _, Lat<'a>)> = vec![
                        (RAW_PIPE, None, Box::new(move |n| pipe::raw_pingpong(n, s))),
                        (
                            PIPE,
                            b(RAW_PIPE),
                            Box::new(move |n| pipe::channel_pingpong(n, s, PipeConfig::new())),
                        ),
                        (
                            PIPE_TUNED_LAT,
                            b(RAW_PIPE),
                            Box::new(move |n| pipe::channel_pingpong(n, s, pipe::tuned())),
                        ),
                        (
                            UNIX_STREAM,
                            b(RAW_PIPE),
                            Box::new(move |n| pipe::unix_stream_pingpong(n, s)),
                        ),
                    ];
                    group(&mut out, (Pipe, Latency, s, 200), nonempty(s, rows), lat);
                }
                Ring => {
                    let rows: Vec<(_, _, Lat<'a>)> = vec![
                        (SPIN, None, Box::new(move |n| ring::spin_pingpong(n, s))),
                        (
                            RING,
                            b(SPIN),
                            Box::new(move |n| ring::channel_pingpong(n, s, false)),
                        ),
                        (
                            RING_TRUSTED,
                            b(RING),
                            Box::new(move |n| ring::channel_pingpong(n, s, true)),
                        ),
                        (RTRB, b(SPIN), Box::new(move |n| ring::rtrb_pingpong(n, s))),
                        (
                            CROSSBEAM,
                            b(SPIN),
                            Box::new(move |n| ring::crossbeam_pingpong(n, s)),
                        ),
                    ];
                    group(&mut out, (Ring, Latency, s, 500), rows, lat);
                }
                Queue => {
                    let rows: Vec<(_, _, Lat<'a>)> = vec![(
                        Q_CHANNEL,
                        None,
                        Box::new(move |n| queue::channel_pingpong(dir, n, s)),
                    )];
                    group(&mut out, (Queue, Latency, s, 50), rows, lat);
                }
                Fork => {}
            }
        }
        if family == Fork {
            let rows: Vec<(_, _, Thr<'a>)> = vec![
                (BARE_FORK, None, Box::new(fork::bare_fork)),
                (TINY_CASE, Some(BARE_FORK), Box::new(fork::tiny_cases)),
            ];
            group(&mut out, (Fork, Throughput, 0, 10), rows, thr);
        }
    }
    out
}

/// User plus system time of this process and of the children it has waited for.
fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let of = |who| {
        getrusage(who).map_or(Duration::ZERO, |u| {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::new(
                    u64::try_from(tv.tv_sec()).unwrap_or(0),
                    u32::try_from(tv.tv_usec()).unwrap_or(0) * 1000,
                )
            };
            t(u.user_time()) + t(u.system_time())
        })
    };
    of(UsageWho::RUSAGE_SELF) + of(UsageWho::RUSAGE_CHILDREN)
}

/// One measured run: its count, its time (throughput: wall; latency: the sum of the
/// round trips), the round trips, and its CPU use.
type Measured = (u64, Duration, Vec<Duration>, CpuUse);

/// Runs `work` with `first` messages, then (if that took well under the budget) again with
/// as many as fill the budget; returns the last run.
fn measure(spec: &Spec<'_>, budget: Duration) -> Result<Measured> {
    let once = |n: u64| -> Result<Measured> {
        let (cpu, wall) = (cpu_time(), Instant::now());
        let (t, rtts) = match &spec.work {
            Work::Throughput(f) => (f(n)?, Vec::new()),
            Work::Latency(f) => {
                let rtts = f(n)?;
                (rtts.iter().sum(), rtts)
            }
        };
        let used = CpuUse {
            cpu: cpu_time().saturating_sub(cpu),
            wall: wall.elapsed(),
        };
        Ok((n, t, rtts, used))
    };
    let mut n = spec.first.max(1);
    loop {
        let run = once(n)?;
        let t = run.1;
        if t * 4 >= budget || n >= 1 << 30 {
            return Ok(run);
        }
        if t * 50 >= budget {
            // Close enough to scale in one step.
            let scaled = (n as f64 * budget.as_secs_f64() / t.as_secs_f64().max(1e-9)) as u64;
            return once(scaled.clamp(n, 1 << 30));
        }
        n *= 10;
    }
}

/// A child process that spins on a core until dropped (a busy neighbour, as on a loaded
/// machine); dropping it kills and reaps it.
#[derive(Debug)]
pub struct BusyNeighbour {
    pid: nix::unistd::Pid,
}

impl BusyNeighbour {
    /// Forks the spinning child.
    pub fn start() -> Result<BusyNeighbour> {
        use nix::sys::signal::Signal;
        use nix::unistd::{fork, ForkResult};
        let parent = nix::unistd::getpid();
        // SAFETY: the child makes two system calls (prctl, getppid: async-signal-safe) and
        // then only spins on a local counter until it is killed: no allocation, no lock,
        // nothing another thread of the parent could have held at the fork.
        match unsafe { fork() }.map_err(|e| crate::Error::sys("fork", e))? {
            ForkResult::Child => {
                // It dies with this process, even one killed before it drops the neighbour.
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
                if nix::unistd::getppid() != parent {
                    // SAFETY: `_exit` ends the child at once, running nothing of the parent's.
                    unsafe { nix::libc::_exit(0) };
                }
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            ForkResult::Parent { child } => Ok(BusyNeighbour { pid: child }),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }
}

impl Drop for BusyNeighbour {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// Runs `f` beside a [`BusyNeighbour`].
pub fn beside_busy_neighbour<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let _neighbour = BusyNeighbour::start()?;
    f()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs every comparison `opts` selects. `progress(done, total, label)` is called before
/// each measurement (and once at the end with `done == total`).
pub fn run(opts: &Options, progress: &mut dyn FnMut(usize, usize, &str)) -> Result<Report> {
    if opts.peers && !cfg!(feature = "peers") {
        return Err(crate::Error::config(
            "peers",
            "this build has no peer crates: build with the `peers` feature (cargo run \
             --release --features peers -- bench --peers)",
        ));
    }
    let start = Instant::now();
    let dir = BenchDir::new(&opts.queue_dir)?;
    let machine = machine(dir.path());
    #[allow(unused_mut)]
    let mut specs = specs(opts, &dir);
    #[cfg(feature = "peers")]
    if opts.peers {
        specs.extend(peer_specs(opts, &dir));
    }
    let mut rows = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        progress(
            i,
            specs.len(),
            &format!(
                "{} {} {} B: {}",
                spec.family.name(),
                spec.kind.name(),
                spec.size,
                spec.name
            ),
        );
        let (count, elapsed, mut rtts, cpu) = measure(spec, opts.budget)?;
        rtts.sort_unstable();
        let latency = (spec.kind == Kind::Latency)
            .then(|| (percentile(&rtts, 0.5) / 2, percentile(&rtts, 0.99) / 2));
        rows.push(Row {
            family: spec.family,
            kind: spec.kind,
            size: spec.size,
            name: spec.name,
            is_baseline: false,
            vs: spec.vs,
            count,
            elapsed,
            latency,
            ratio: None,
            cpu: (!spec.neighbour).then_some(cpu),
        });
    }
    progress(specs.len(), specs.len(), "done");
    drop(specs);
    drop(dir);
    fill_ratios(&mut rows);
    let mut targets = targets(&rows, &opts.families);
    if opts.peers {
        targets.extend(peer_targets(&rows, &opts.families));
    }
    Ok(Report {
        machine,
        rows,
        targets,
        elapsed: start.elapsed(),
    })
}

/// Sets each row's ratio to its `vs` row and marks the rows others are compared with.
fn fill_ratios(rows: &mut [Row]) {
    for i in 0..rows.len() {
        let Some(base_name) = rows[i].vs else {
            continue;
        };
        let r = &rows[i];
        let Some(b) = rows.iter().position(|b| {
            b.family == r.family && b.kind == r.kind && b.size == r.size && b.name == base_name
        }) else {
            continue;
        };
        let ratio = match rows[i].kind {
            Kind::Throughput => rows[i].per_second() / rows[b].per_second(),
            Kind::Latency => rows[i].value() / rows[b].value(),
        };
        rows[i].ratio = ratio.is_finite().then_some(ratio);
        rows[b].is_baseline = true;
    }
}

/// The design targets of the families that were run.
fn targets(rows: &[Row], families: &[Family]) -> Vec<TargetStatus> {
    let ratio = |family, kind, size, name: &str| {
        rows.iter()
            .find(|r| r.family == family && r.kind == kind && r.size == size && r.name == name)
            .and_then(|r| r.ratio)
    };
    use Bound::*;
    use Family::*;
    use Kind::*;
    let t = |what, bound, target, measured| TargetStatus {
        what,
        bound,
        target,
        measured,
    };
    let all = [
        (
            Pipe,
            t(
                "pipe, 64 B, msgs/s: send / raw write",
                AtLeast,
                1.0,
                ratio(Pipe, Throughput, 64, PIPE_SEND),
            ),
        ),
        (
            Pipe,
            t(
                "pipe, 64 B, msgs/s: send, tuned / raw write",
                AtLeast,
                1.0,
                ratio(Pipe, Throughput, 64, PIPE_TUNED),
            ),
        ),
        (
            Pipe,
            t(
                "pipe, 64 B, msgs/s: send_batch 64 / raw write",
                AtLeast,
                5.0,
                ratio(Pipe, Throughput, 64, PIPE_BATCH),
            ),
        ),
        (
            Pipe,
            t(
                "pipe, 64 KiB, bytes/s: send / raw write",
                AtLeast,
                0.9,
                ratio(Pipe, Throughput, 65536, PIPE_SEND),
            ),
        ),
        (
            Ring,
            t(
                "ring, 64 B, msgs/s, 2 processes: send / rtrb (threads)",
                AtLeast,
                1.0,
                ratio(Ring, Throughput, 64, RING_SEND),
            ),
        ),
        (
            Ring,
            t(
                "ring, 64 B, msgs/s, 2 processes: batch 64 / rtrb (threads)",
                AtLeast,
                1.0,
                ratio(Ring, Throughput, 64, RING_BATCH),
            ),
        ),
        (
            Ring,
            t(
                "ring, 64 B, one-way p50: ring / bare shm spin",
                AtMost,
                1.5,
                ratio(Ring, Latency, 64, RING),
            ),
        ),
        (
            Queue,
            t(
                "queue, 64 B, push+pop, no fsync: ipcprop / queue-file",
                AtLeast,
                2.0,
                ratio(Queue, Throughput, 64, Q_PUSH_POP),
            ),
        ),
        (
            Queue,
            t(
                "queue, 64 B, push+pop, exclusive handle / queue-file",
                AtLeast,
                2.0,
                ratio(Queue, Throughput, 64, Q_EXCLUSIVE),
            ),
        ),
        (
            Queue,
            t(
                "queue, 64 B, push+pop, batches of 64 / queue-file",
                AtLeast,
                10.0,
                ratio(Queue, Throughput, 64, Q_BATCH),
            ),
        ),
        (
            Queue,
            t(
                "queue, 64 B, durable push / queue-file sync",
                AtLeast,
                1.3,
                ratio(Queue, Throughput, 64, Q_DURABLE),
            ),
        ),
        (
            Queue,
            t(
                "queue, 64 B, durable batches of 64 / queue-file sync",
                AtLeast,
                50.0,
                ratio(Queue, Throughput, 64, Q_DURABLE_BATCH),
            ),
        ),
        (
            Fork,
            t(
                "fork, tiny property cases/s / bare fork+_exit+waitpid",
                AtLeast,
                0.5,
                ratio(Fork, Throughput, 0, TINY_CASE),
            ),
        ),
    ];
    all.into_iter()
        .filter(|(f, _)| families.contains(f))
        .map(|(_, t)| t)
        .collect()
}

/// The peers' rows (`--peers`), each compared with ours in its guarantee class: a
/// peer's ratio is its figure over ours.
#[cfg(feature = "peers")]
fn peer_specs<'a>(opts: &Options, dir: &'a BenchDir) -> Vec<Spec<'a>> {
    use super::peers::ipc_chan::Payload;
    use super::peers::sqlite::Synchronous;
    use super::peers::{iceoryx, interproc, ipc_chan, sqlite, yaq, Wake};
    use Family::*;
    use Kind::*;
    let mut out = Vec::new();
    let (thr, lat) = (Work::Throughput, Work::Latency);
    let b = Some;
    for &family in &opts.families {
        for &s in &opts.sizes {
            match family {
                Pipe => {
                    let rows: Vec<(_, _, Thr<'a>)> = vec![
                        // The default send without its SIGPIPE guard (two rt_sigprocmask
                        // per write): what the guard costs, beside the peers, which have
                        // none (a Rust program ignores SIGPIPE from the start).
                        (
                            PIPE_PROMISED,
                            b(PIPE_SEND),
                            Box::new(move |n| {
                                let config =
                                    crate::pipe::PipeConfig::new().with_sigpipe_ignored(true);
                                super::pipe::channel(n, s, 1, config)
                            }),
                        ),
                        // The floor with interprocess's reader: one raw write per
                        // message, read as a prefix then the payload.
                        (
                            RAW_PREFIX_READER,
                            b(PIPE_SEND),
                            Box::new(move |n| super::pipe::raw_write_prefix_reader(n, s)),
                        ),
                        (
                            INTERPROCESS,
                            b(PIPE_SEND),
                            Box::new(move |n| interproc::throughput(n, s)),
                        ),
                        (
                            IPC_TYPED,
                            b(PIPE_SEND),
                            Box::new(move |n| ipc_chan::throughput(n, s, Payload::Typed)),
                        ),
                        (
                            IPC_BYTES,
                            b(PIPE_SEND),
                            Box::new(move |n| ipc_chan::throughput(n, s, Payload::Bytes)),
                        ),
                    ];
                    group(&mut out, (Pipe, Throughput, s, 2000), rows, thr);
                    let rows: Vec<(_, _, Lat<'a>)> = vec![
                        (
                            INTERPROCESS,
                            b(PIPE),
                            Box::new(move |n| interproc::pingpong(n, s)),
                        ),
                        (
                            IPC_TYPED,
                            b(PIPE),
                            Box::new(move |n| ipc_chan::pingpong(n, s, Payload::Typed)),
                        ),
                        (
                            IPC_BYTES,
                            b(PIPE),
                            Box::new(move |n| ipc_chan::pingpong(n, s, Payload::Bytes)),
                        ),
                    ];
                    group(&mut out, (Pipe, Latency, s, 200), rows, lat);
                }
                Ring => {
                    let rows: Vec<(_, _, Thr<'a>)> = vec![
                        (
                            RING_POLL,
                            None,
                            Box::new(move |n| ring::channel_polling(n, s, false)),
                        ),
                        (
                            IOX_POLL,
                            b(RING_POLL),
                            Box::new(move |n| iceoryx::throughput(n, s, Wake::Poll)),
                        ),
                        (
                            IOX_EVENT,
                            b(RING_SEND),
                            Box::new(move |n| iceoryx::throughput(n, s, Wake::Block)),
                        ),
                    ];
                    group(&mut out, (Ring, Throughput, s, 5000), rows, thr);
                    let rows: Vec<(_, _, Lat<'a>)> = vec![
                        (
                            RING_POLL_LAT,
                            None,
                            Box::new(move |n| ring::pingpong_polling(n, s, false)),
                        ),
                        (
                            IOX_POLL,
                            b(RING_POLL_LAT),
                            Box::new(move |n| iceoryx::pingpong(n, s, Wake::Poll)),
                        ),
                        (
                            IOX_EVENT,
                            b(RING),
                            Box::new(move |n| iceoryx::pingpong(n, s, Wake::Block)),
                        ),
                    ];
                    group(&mut out, (Ring, Latency, s, 500), rows, lat);
                    if s == 64 {
                        let rows: Vec<(_, _, Lat<'a>)> = vec![
                            (
                                RING_NEIGHBOUR,
                                None,
                                Box::new(move |n| {
                                    beside_busy_neighbour(|| ring::channel_pingpong(n, s, false))
                                }),
                            ),
                            (
                                IOX_EVENT_NEIGHBOUR,
                                b(RING_NEIGHBOUR),
                                Box::new(move |n| {
                                    beside_busy_neighbour(|| iceoryx::pingpong(n, s, Wake::Block))
                                }),
                            ),
                        ];
                        let from = out.len();
                        group(&mut out, (Ring, Latency, s, 200), rows, lat);
                        for spec in &mut out[from..] {
                            spec.neighbour = true;
                        }
                    }
                }
                Queue => {
                    let sync = QueueConfig::new().with_durability(crate::queue::Durability::Sync);
                    let rows: Vec<(_, _, Thr<'a>)> = vec![
                        // What stands under a durable push: one flushed write, appending
                        // (what our queue does) or over synced blocks (what SQLite's WAL
                        // does once it starts over).
                        (
                            RAW_SYNC_APPEND,
                            b(Q_DURABLE),
                            Box::new(move |n| queue::raw_sync_writes(dir, n, s, false)),
                        ),
                        (
                            RAW_SYNC_OVERWRITE,
                            b(Q_DURABLE),
                            Box::new(move |n| queue::raw_sync_writes(dir, n, s, true)),
                        ),
                        (
                            SQL_FULL,
                            b(Q_DURABLE),
                            Box::new(move |n| sqlite::push(dir, n, s, Synchronous::Full, 1)),
                        ),
                        (
                            SQL_FULL_TX,
                            b(Q_DURABLE_BATCH),
                            Box::new(move |n| sqlite::push(dir, n, s, Synchronous::Full, BATCH)),
                        ),
                        (
                            Q_SYNC_PAIR,
                            None,
                            Box::new(move |n| queue::pair_with(dir, n, s, sync)),
                        ),
                        (
                            SQL_FULL_PAIR,
                            b(Q_SYNC_PAIR),
                            Box::new(move |n| sqlite::pair(dir, n, s, Synchronous::Full)),
                        ),
                    ];
                    group(&mut out, (Queue, Throughput, s, 8), rows, thr);
                    let rows: Vec<(_, _, Thr<'a>)> = vec![
                        (
                            Q_PUSH,
                            None,
                            Box::new(move |n| queue::push_with(dir, n, s, 1, QueueConfig::new())),
                        ),
                        (
                            Q_PUSH_EXCLUSIVE,
                            None,
                            Box::new(move |n| {
                                let config = QueueConfig::new().with_exclusive(true);
                                queue::push_with(dir, n, s, 1, config)
                            }),
                        ),
                        (
                            SQL_NORMAL,
                            b(Q_PUSH),
                            Box::new(move |n| sqlite::push(dir, n, s, Synchronous::Normal, 1)),
                        ),
                        (
                            SQL_OFF,
                            b(Q_PUSH),
                            Box::new(move |n| sqlite::push(dir, n, s, Synchronous::Off, 1)),
                        ),
                        (
                            YAQUE,
                            b(Q_PUSH_EXCLUSIVE),
                            Box::new(move |n| yaq::push(dir, n, s)),
                        ),
                        (
                            SQL_NORMAL_PAIR,
                            b(Q_CHANNEL),
                            Box::new(move |n| sqlite::pair(dir, n, s, Synchronous::Normal)),
                        ),
                        (
                            YAQUE_PAIR,
                            b(Q_CHANNEL),
                            Box::new(move |n| yaq::pair(dir, n, s)),
                        ),
                    ];
                    group(&mut out, (Queue, Throughput, s, 200), rows, thr);
                }
                Fork => {}
            }
        }
    }
    out
}

/// The targets against the peers (`--peers`), for the families that were run: how far
/// ahead of the crate a user would pick instead ours must be, within a guarantee class.
fn peer_targets(rows: &[Row], families: &[Family]) -> Vec<TargetStatus> {
    use Bound::*;
    use Family::*;
    use Kind::*;
    // A peer row's ratio is its figure over ours: ours over the peer's, for throughput;
    // the peer's p50 over ours, for latency (both: higher is better for us).
    let ahead = |family, kind, size, peer: &str| {
        rows.iter()
            .find(|r| r.family == family && r.kind == kind && r.size == size && r.name == peer)
            .and_then(|r| r.ratio)
            .map(|x| if kind == Throughput { 1.0 / x } else { x })
            .filter(|x| x.is_finite())
    };
    let t = |what, target, measured| TargetStatus {
        what,
        bound: AtLeast,
        target,
        measured,
    };
    let all = [
        (
            Ring,
            t(
                "ring, 64 KiB, msgs/s, polling receivers: ring / iceoryx2",
                1.5,
                ahead(Ring, Throughput, 65536, IOX_POLL),
            ),
        ),
        (
            Ring,
            t(
                "ring, 64 B, msgs/s, polling receivers: ring / iceoryx2",
                1.5,
                ahead(Ring, Throughput, 64, IOX_POLL),
            ),
        ),
        (
            Ring,
            t(
                "ring, 64 B, one-way p50, both polling: iceoryx2 / ring",
                1.5,
                ahead(Ring, Latency, 64, IOX_POLL),
            ),
        ),
        (
            Ring,
            t(
                "ring, 64 B, one-way p50, blocking: iceoryx2 + event / ring",
                1.5,
                ahead(Ring, Latency, 64, IOX_EVENT),
            ),
        ),
        (
            Ring,
            t(
                "ring, 64 B, one-way p50, blocking, busy neighbour: iceoryx2 + event / ring",
                1.0,
                ahead(Ring, Latency, 64, IOX_EVENT_NEIGHBOUR),
            ),
        ),
        (
            Pipe,
            t(
                "pipe, 64 B, msgs/s: send / interprocess + length prefix",
                1.0,
                ahead(Pipe, Throughput, 64, INTERPROCESS),
            ),
        ),
        (
            Pipe,
            t(
                "pipe, 4 KiB, msgs/s: send / interprocess + length prefix",
                1.0,
                ahead(Pipe, Throughput, 4096, INTERPROCESS),
            ),
        ),
        (
            Pipe,
            t(
                "pipe, 64 B, msgs/s: send / ipc-channel Vec<u8>",
                2.0,
                ahead(Pipe, Throughput, 64, IPC_TYPED),
            ),
        ),
        (
            Pipe,
            t(
                "pipe, 64 B, msgs/s: send / ipc-channel bytes",
                2.0,
                ahead(Pipe, Throughput, 64, IPC_BYTES),
            ),
        ),
        (
            Pipe,
            t(
                "pipe, 64 KiB, msgs/s: send / ipc-channel bytes",
                1.2,
                ahead(Pipe, Throughput, 65536, IPC_BYTES),
            ),
        ),
        (
            Pipe,
            t(
                "pipe, 64 B, one-way p50: interprocess / pipe",
                1.0,
                ahead(Pipe, Latency, 64, INTERPROCESS),
            ),
        ),
        (
            Pipe,
            t(
                "pipe, 64 B, one-way p50: ipc-channel bytes / pipe",
                1.0,
                ahead(Pipe, Latency, 64, IPC_BYTES),
            ),
        ),
        (
            Pipe,
            t(
                "pipe, 64 KiB, one-way p50: interprocess / pipe",
                1.0,
                ahead(Pipe, Latency, 65536, INTERPROCESS),
            ),
        ),
        (
            Pipe,
            t(
                "pipe, 64 KiB, one-way p50: ipc-channel bytes / pipe",
                1.0,
                ahead(Pipe, Latency, 65536, IPC_BYTES),
            ),
        ),
        (
            Queue,
            t(
                "queue, 64 B, fsync: durable push / SQLite WAL FULL",
                2.0,
                ahead(Queue, Throughput, 64, SQL_FULL),
            ),
        ),
        (
            Queue,
            t(
                "queue, 4 KiB, fsync: durable push / SQLite WAL FULL",
                2.0,
                ahead(Queue, Throughput, 4096, SQL_FULL),
            ),
        ),
        (
            Queue,
            t(
                "queue, 64 B, fsync: batch of 64 / SQLite, 64 per transaction",
                2.0,
                ahead(Queue, Throughput, 64, SQL_FULL_TX),
            ),
        ),
        (
            Queue,
            t(
                "queue, 64 B, fsync, 2 processes / SQLite FULL, 2 processes",
                2.0,
                ahead(Queue, Throughput, 64, SQL_FULL_PAIR),
            ),
        ),
        (
            Queue,
            t(
                "queue, 64 B, no fsync: push / SQLite WAL NORMAL",
                3.0,
                ahead(Queue, Throughput, 64, SQL_NORMAL),
            ),
        ),
        (
            Queue,
            t(
                "queue, 4 KiB, no fsync: push / SQLite WAL NORMAL",
                3.0,
                ahead(Queue, Throughput, 4096, SQL_NORMAL),
            ),
        ),
        (
            Queue,
            t(
                "queue, 64 B, no fsync, 2 processes / SQLite NORMAL, 2 processes",
                3.0,
                ahead(Queue, Throughput, 64, SQL_NORMAL_PAIR),
            ),
        ),
        (
            Queue,
            t(
                "queue, 64 B, no fsync: exclusive push / yaque",
                1.0,
                ahead(Queue, Throughput, 64, YAQUE),
            ),
        ),
        (
            Queue,
            t(
                "queue, 64 B, no fsync, 2 processes / yaque, 2 processes",
                1.0,
                ahead(Queue, Throughput, 64, YAQUE_PAIR),
            ),
        ),
    ];
    all.into_iter()
        .filter(|(f, _)| families.contains(f))
        .map(|(_, t)| t)
        .collect()
}

/// Describes this machine; `queue_dir` is where the queue files are written.
pub fn machine(queue_dir: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_mib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_mib,
        kernel,
        queue_fs: filesystem(queue_dir),
    }
}

fn filesystem(path: &Path) -> String {
    use nix::sys::statfs::*;
    let Ok(fs) = statfs(path) else {
        return "an unknown filesystem".into();
    };
    let t = fs.filesystem_type();
    let known = [
        (EXT4_SUPER_MAGIC, "ext4"),
        (TMPFS_MAGIC, "tmpfs (fsync is free here)"),
        (XFS_SUPER_MAGIC, "xfs"),
        (BTRFS_SUPER_MAGIC, "btrfs"),
        (OVERLAYFS_SUPER_MAGIC, "overlayfs"),
        (NFS_SUPER_MAGIC, "nfs"),
    ];
    known
        .iter()
        .find(|(m, _)| *m == t)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("filesystem type {:#x}", t.0))
}
