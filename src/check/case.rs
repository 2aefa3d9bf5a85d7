//! Running one plan across real processes, recording what happened, and judging it.
//!
//! [`run_case`] makes a connected pair with the transport, forks one receiver process and
//! one process per sender, lets each follow its part of the [`Plan`], and collects the
//! events each one streams back (sent, received, failed, closed, about to be killed) as
//! they happen. A watchdog turns a hang into [`Violation::Hung`]. The history is then
//! checked by [`history::check`] and by the rules on how each process may end.

use std::fmt::{self, Write as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};

use super::fork::{ChildEnd, ChildGroup, ChildReport, Reporter};
use super::history::{self, CheckInput, Delivery, MsgId, SenderRecord, Violation, ID_LEN};
use super::nemesis::{AppliedFault, Nemesis, STORM_SIGNAL};
use super::plan::{Plan, ReceiverPlan, RecvMode, SenderPlan, Victim};
use super::Transport;
use crate::error::{Error, Result};
use crate::transport::{Receiver, Sender, Wait};

/// One case at a time per process: every descriptor of a case would otherwise be inherited
/// by the children of a case forked concurrently on another thread, and a pipe's end of
/// stream would wait on an unrelated process.
static CASE_LOCK: Mutex<()> = Mutex::new(());

/// Holds the process-wide case lock: anything that makes a pair and forks around it (or
/// keeps a pair open while others fork) takes this, so no child inherits another case's
/// descriptors. Not reentrant: do not call [`run_case`] while holding it.
pub(crate) fn lock_cases() -> std::sync::MutexGuard<'static, ()> {
    CASE_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// How to run cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// The watchdog: processes still running this long after the case started are killed
    /// and reported as hung.
    pub timeout: Duration,
    /// A shorter progress bound than the transport's
    /// ([`Capabilities::progress_bound`](super::Capabilities::progress_bound)): a case with
    /// no progress for this long is judged hung. Campaigns set it while shrinking a hang,
    /// so each hanging candidate costs less; `None` keeps the transport's.
    pub stall: Option<Duration>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            timeout: Duration::from_secs(30),
            stall: None,
        }
    }
}

/// One thing a process did, as it reported it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// `count` messages from `first` on were acknowledged (one send or one batch).
    Sent {
        /// The first message of the send.
        first: MsgId,
        /// How many messages the send carried.
        count: u32,
    },
    /// A send of `count` messages from `first` on failed.
    SendFailed {
        /// The first message of the failed send.
        first: MsgId,
        /// How many messages the send carried.
        count: u32,
        /// The error was [`Error::Disconnected`].
        disconnected: bool,
        /// The error, as text.
        error: String,
    },
    /// The process is about to SIGKILL itself, as planned, after this many messages
    /// (acknowledged, for a sender; received, for the receiver).
    Killing {
        /// Messages acknowledged or received before the kill.
        acked: u32,
    },
    /// The receiver got a message.
    Received(Delivery),
    /// The receiver got [`Error::Disconnected`].
    Disconnected,
    /// For a transport with no end of stream
    /// ([`Capabilities::end_of_stream`](super::Capabilities::end_of_stream) false): every
    /// sender process was gone and nothing arrived for the quiet period, so the harness
    /// ended the receive loop.
    QuietEnd,
    /// The stream ended inside a message ([`Error::is_cut_off`]): a sender died while
    /// writing it. Acceptable as the end only when a sender was killed inside a send.
    CutOff(String),
    /// A receive failed with an error other than Disconnected (or an unplanned Timeout).
    RecvFailed(String),
    /// The receiver closed its end early, as planned, after this many messages.
    Closed {
        /// Messages received before closing.
        after: u32,
    },
    /// The process is set up (end re-attached, signal handler installed) and starts its
    /// script.
    Ready,
    /// A send of `count` messages from `first` on is about to be called (one `send`, or one
    /// `send_batch`). Until [`Event::Sent`] or [`Event::SendFailed`], the process is inside it.
    Sending {
        /// The first message of the send.
        first: MsgId,
        /// How many messages the send carries.
        count: u32,
    },
    /// The receiver starts waiting for its message number `got` (0-based), once per message.
    Receiving {
        /// Messages received so far.
        got: u32,
    },
    /// The process waits for the harness before its next operation, at which a fault is
    /// planned ([`Reporter::rendezvous`]): the nemesis then times the fault from a known
    /// instant. The operation is the one on messages `from..to` (a send or batch of them,
    /// or the receive of message `from`).
    Rendezvous {
        /// The first message of the operation.
        from: u32,
        /// One past its last message.
        to: u32,
    },
}

const EV_SENT: u8 = 1;
const EV_SEND_FAILED: u8 = 2;
const EV_KILLING: u8 = 3;
const EV_RECEIVED: u8 = 4;
const EV_DISCONNECTED: u8 = 5;
const EV_RECV_FAILED: u8 = 6;
const EV_CLOSED: u8 = 7;
const EV_READY: u8 = 8;
const EV_SENDING: u8 = 9;
const EV_RECEIVING: u8 = 10;
const EV_CUT_OFF: u8 = 11;
const EV_RENDEZVOUS: u8 = 12;
const EV_QUIET_END: u8 = 13;

impl Event {
    /// Encodes the event as a report record.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        match self {
            Event::Sent { first, count } => {
                v.push(EV_SENT);
                push_id(&mut v, *first);
                v.extend_from_slice(&count.to_le_bytes());
            }
            Event::SendFailed {
                first,
                count,
                disconnected,
                error,
            } => {
                v.push(EV_SEND_FAILED);
                push_id(&mut v, *first);
                v.extend_from_slice(&count.to_le_bytes());
                v.push(u8::from(*disconnected));
                v.extend_from_slice(error.as_bytes());
            }
            Event::Killing { acked } => {
                v.push(EV_KILLING);
                v.extend_from_slice(&acked.to_le_bytes());
            }
            Event::Received(d) => {
                v.push(EV_RECEIVED);
                v.extend_from_slice(&d.len.to_le_bytes());
                v.extend_from_slice(&d.crc.to_le_bytes());
                v.extend_from_slice(&d.prefix);
            }
            Event::Disconnected => v.push(EV_DISCONNECTED),
            Event::QuietEnd => v.push(EV_QUIET_END),
            Event::CutOff(e) => {
                v.push(EV_CUT_OFF);
                v.extend_from_slice(e.as_bytes());
            }
            Event::RecvFailed(e) => {
                v.push(EV_RECV_FAILED);
                v.extend_from_slice(e.as_bytes());
            }
            Event::Closed { after } => {
                v.push(EV_CLOSED);
                v.extend_from_slice(&after.to_le_bytes());
            }
            Event::Ready => v.push(EV_READY),
            Event::Rendezvous { from, to } => {
                v.push(EV_RENDEZVOUS);
                v.extend_from_slice(&from.to_le_bytes());
                v.extend_from_slice(&to.to_le_bytes());
            }
            Event::Sending { first, count } => {
                v.push(EV_SENDING);
                push_id(&mut v, *first);
                v.extend_from_slice(&count.to_le_bytes());
            }
            Event::Receiving { got } => {
                v.push(EV_RECEIVING);
                v.extend_from_slice(&got.to_le_bytes());
            }
        }
        v
    }

    /// Decodes a report record; `None` if it is not a well-formed event.
    pub fn decode(b: &[u8]) -> Option<Event> {
        let (&tag, rest) = b.split_first()?;
        let u32_at = |i: usize| -> Option<u32> {
            Some(u32::from_le_bytes(rest.get(i..i + 4)?.try_into().ok()?))
        };
        let id_at = |i: usize| -> Option<MsgId> {
            Some(MsgId {
                sender: u32_at(i)?,
                seq: u32_at(i + 4)?,
            })
        };
        Some(match tag {
            EV_SENT if rest.len() == 12 => Event::Sent {
                first: id_at(0)?,
                count: u32_at(8)?,
            },
            EV_SEND_FAILED if rest.len() >= 13 => Event::SendFailed {
                first: id_at(0)?,
                count: u32_at(8)?,
                disconnected: rest[12] != 0,
                error: String::from_utf8_lossy(&rest[13..]).into(),
            },
            EV_KILLING if rest.len() == 4 => Event::Killing { acked: u32_at(0)? },
            EV_RECEIVED if rest.len() == 8 + ID_LEN => Event::Received(Delivery {
                len: u32_at(0)?,
                crc: u32_at(4)?,
                prefix: rest[8..].try_into().ok()?,
            }),
            EV_DISCONNECTED if rest.is_empty() => Event::Disconnected,
            EV_QUIET_END if rest.is_empty() => Event::QuietEnd,
            EV_CUT_OFF => Event::CutOff(String::from_utf8_lossy(rest).into()),
            EV_RECV_FAILED => Event::RecvFailed(String::from_utf8_lossy(rest).into()),
            EV_CLOSED if rest.len() == 4 => Event::Closed { after: u32_at(0)? },
            EV_READY if rest.is_empty() => Event::Ready,
            EV_RENDEZVOUS if rest.len() == 8 => Event::Rendezvous {
                from: u32_at(0)?,
                to: u32_at(4)?,
            },
            EV_SENDING if rest.len() == 12 => Event::Sending {
                first: id_at(0)?,
                count: u32_at(8)?,
            },
            EV_RECEIVING if rest.len() == 4 => Event::Receiving { got: u32_at(0)? },
            _ => return None,
        })
    }
}

fn push_id(v: &mut Vec<u8>, id: MsgId) {
    v.extend_from_slice(&id.sender.to_le_bytes());
    v.extend_from_slice(&id.seq.to_le_bytes());
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Sent { first, count: 1 } => write!(f, "sent s{}#{}", first.sender, first.seq),
            Event::Sent { first, count } => write!(
                f,
                "sent batch s{}#{}..#{}",
                first.sender,
                first.seq,
                first.seq + count - 1
            ),
            Event::SendFailed {
                first,
                count,
                error,
                ..
            } => {
                write!(
                    f,
                    "send of s{}#{} (+{}) failed: {error}",
                    first.sender,
                    first.seq,
                    count - 1
                )
            }
            Event::Killing { acked } => write!(f, "SIGKILL self after {acked} messages"),
            Event::Received(d) => {
                write!(f, "received {} bytes", d.len)?;
                if d.len as usize >= ID_LEN {
                    let s = u32::from_le_bytes(d.prefix[..4].try_into().unwrap_or_default());
                    let q = u32::from_le_bytes(d.prefix[4..].try_into().unwrap_or_default());
                    write!(f, " (labelled s{s}#{q})")?;
                }
                Ok(())
            }
            Event::Disconnected => write!(f, "got Disconnected"),
            Event::QuietEnd => write!(f, "senders gone, all quiet: ended by the harness"),
            Event::CutOff(e) => write!(f, "stream cut off: {e}"),
            Event::RecvFailed(e) => write!(f, "receive failed: {e}"),
            Event::Closed { after } => write!(f, "closed its end after {after} messages"),
            Event::Ready => write!(f, "ready"),
            Event::Rendezvous { .. } => write!(f, "waiting for the harness"),
            Event::Sending { first, count: 1 } => {
                write!(f, "sending s{}#{}", first.sender, first.seq)
            }
            Event::Sending { first, count } => write!(
                f,
                "sending batch s{}#{}..#{}",
                first.sender,
                first.seq,
                first.seq + count - 1
            ),
            Event::Receiving { got } => write!(f, "receiving message {got}"),
        }
    }
}

/// What one process did in a case.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessHistory {
    /// "receiver" or "sender N".
    pub name: String,
    /// Its process id.
    pub pid: i32,
    /// Its events, in order.
    pub events: Vec<Event>,
    /// When each event happened (`CLOCK_MONOTONIC` ns, one clock for all processes).
    pub times: Vec<u64>,
    /// How it ended.
    pub end: ChildEnd,
}

/// Violations of one kind listed in a report before the rest are counted.
pub const SHOWN_PER_KIND: usize = 5;

/// The result of one case.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaseOutcome {
    /// The transport's name.
    pub transport: String,
    /// The plan that was run.
    pub plan: Plan,
    /// What each process did: the receiver first, then the senders in order.
    pub processes: Vec<ProcessHistory>,
    /// Everything that went wrong; empty for a pass.
    pub violations: Vec<Violation>,
    /// The faults the nemesis applied, and where each landed.
    pub faults: Vec<AppliedFault>,
    /// Messages delivered.
    pub messages: usize,
    /// Bytes delivered.
    pub bytes: u64,
    /// Wall time of the case (in JSON: `elapsed_secs`, seconds as a float).
    #[serde(rename = "elapsed_secs", with = "super::secs")]
    pub elapsed: Duration,
}

impl CaseOutcome {
    /// True if no violation was found.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The longest message the receiver got, in bytes.
    pub fn largest(&self) -> u64 {
        self.processes
            .iter()
            .flat_map(|p| &p.events)
            .filter_map(|e| match e {
                Event::Received(d) => Some(u64::from(d.len)),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// A readable account: the violations, the plan, and what each process did.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "transport {}: {} violation(s)",
            self.transport,
            self.violations.len()
        );
        s.push_str(&self.violation_lines());
        let _ = writeln!(s, "{}", self.plan);
        s.push_str(&self.timeline());
        s
    }

    /// The violations, one line each, at most [`SHOWN_PER_KIND`] of each kind: the rest of
    /// a kind (a hundred messages lost after one fault) are counted on one line.
    pub fn violation_lines(&self) -> String {
        let mut s = String::new();
        let mut shown: Vec<(super::ViolationKind, usize)> = Vec::new();
        for v in &self.violations {
            let k = v.kind();
            let n = match shown.iter_mut().find(|(kind, _)| *kind == k) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    shown.push((k, 1));
                    1
                }
            };
            if n <= SHOWN_PER_KIND {
                let _ = writeln!(s, "  [{k}] {v}");
            }
        }
        for (k, n) in shown {
            if n > SHOWN_PER_KIND {
                let _ = writeln!(s, "  [{k}] ... and {} more like these", n - SHOWN_PER_KIND);
            }
        }
        s
    }

    /// What each process did, side by side: one column per process, one row per event, in
    /// the order they happened (milliseconds since the first event), with how each ended.
    /// A fault injected by the harness is a row of its own, marked `**`, saying where it
    /// landed ("sender 1 killed by the harness, inside send of message 4"). A long timeline
    /// shows its first and last 30 rows and every fault.
    pub fn timeline(&self) -> String {
        const WIDTH: usize = 34;
        const SHOW: usize = 60;
        let cell = |text: &str| {
            let t: String = text.chars().take(WIDTH).collect();
            format!("{t:<WIDTH$}")
        };
        let mut s = String::from("timeline (ms since the first event; a column per process):\n");
        let _ = write!(s, "  {:>9} ", "");
        for p in &self.processes {
            let _ = write!(s, "| {} ", cell(&format!("{} (pid {})", p.name, p.pid)));
        }
        s.push('\n');
        // Faults injected by the harness get a row of their own, across the columns.
        let nemesis_col = self.processes.len();
        let mut rows: Vec<(u64, usize, String)> = Vec::new();
        for (col, p) in self.processes.iter().enumerate() {
            for (i, e) in p.events.iter().enumerate() {
                // The start of an operation is shown only when it never ended.
                let start = matches!(
                    e,
                    Event::Ready
                        | Event::Rendezvous { .. }
                        | Event::Sending { .. }
                        | Event::Receiving { .. }
                );
                if start && i + 1 < p.events.len() {
                    continue;
                }
                rows.push((p.times.get(i).copied().unwrap_or(0), col, e.to_string()));
            }
        }
        for f in &self.faults {
            rows.push((f.at_ns, nemesis_col, f.to_string()));
        }
        rows.sort_by_key(|r| (r.0, r.1));
        let start = rows.first().map_or(0, |r| r.0);
        let n = rows.len();
        // Long timelines keep their first and last rows and every fault of the harness.
        let mut hidden = 0usize;
        for (k, (t, col, text)) in rows.iter().enumerate() {
            let middle = n > SHOW && k >= SHOW / 2 && k < n - SHOW / 2;
            if middle && *col != nemesis_col {
                hidden += 1;
                continue;
            }
            if hidden > 0 {
                let _ = writeln!(s, "  {:>9} ... {hidden} more rows ...", "");
                hidden = 0;
            }
            let ms = t.saturating_sub(start) as f64 / 1e6;
            let _ = write!(s, "  {ms:>9.3} ");
            if *col == nemesis_col {
                let _ = writeln!(s, "** {text}");
                continue;
            }
            for c in 0..nemesis_col {
                let _ = write!(s, "| {} ", cell(if c == *col { text } else { "" }));
            }
            s.push('\n');
        }
        let _ = write!(s, "  {:>9} ", "end");
        for p in &self.processes {
            let _ = write!(s, "| {} ", cell(&p.end.to_string()));
        }
        s.push('\n');
        s.lines().map(|l| format!("{}\n", l.trim_end())).collect()
    }
}

/// Runs `plan` over `transport`, in real processes, and judges the history: through
/// [`Transport::run_plan`], which forks around a fresh pair ([`run_forked`]) unless the
/// transport runs its cases itself (a program under test, [`super::exec`]). `Err` only
/// when the case could not be set up (the transport failed to make a pair, fork failed, a
/// program broke the driver protocol): that is not a verdict on the transport's behaviour.
pub fn run_case<T: Transport>(
    transport: &T,
    plan: &Plan,
    config: &RunConfig,
) -> Result<CaseOutcome> {
    transport.run_plan(plan, config)
}

/// Runs `plan` over a fresh pair from `transport`, made in this process and inherited by
/// a forked receiver process and one forked process per sender, and judges the history.
/// `Err` only when the case could not be set up (the transport failed to make a pair,
/// fork failed).
pub fn run_forked<T: Transport>(
    transport: &T,
    plan: &Plan,
    config: &RunConfig,
) -> Result<CaseOutcome> {
    let _serial = lock_cases();
    let start = Instant::now();
    let caps = transport.capabilities();
    // With no end of stream of its own, the transport's receiver learns from the harness
    // when every sender process is gone: each sender holds a copy of this pipe's write end
    // until it exits (or dies), and the receiver sees the read end hang up.
    let (mut senders_r, mut senders_w) = if caps.end_of_stream {
        (None, None)
    } else {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| crate::Error::sys("pipe2", e))?;
        (Some(r), Some(w))
    };
    let (s, r) = transport.pair(plan.senders.len().max(1))?;
    let mut s = Some(s);
    let mut r = Some(r);
    let mut group = ChildGroup::new();
    group.spawn("receiver", |rep| {
        // This process only receives: its copy of the sending end must not keep the channel
        // open.
        drop(s.take());
        drop(senders_w.take());
        let harness_end = senders_r.take().map(|fd| HarnessEnd {
            senders: fd,
            quiet: caps.quiet_period,
        });
        let mut rx = r.take().ok_or("no receiver")?;
        transport
            .in_child_receiver(&mut rx)
            .map_err(|e| format!("re-attaching the receiver: {e}"))?;
        catch_storms()?;
        rep.record(&Event::Ready.encode());
        let aimed = fault_ops(plan, Victim::Receiver);
        receive(&mut rx, &plan.receiver, &aimed, harness_end.as_ref(), rep);
        Ok(())
    })?;
    for (i, sp) in plan.senders.iter().enumerate() {
        group.spawn(format!("sender {i}"), |rep| {
            drop(r.take());
            drop(senders_r.take());
            // Held until this process ends: its exit (or death) is what the receiver of a
            // transport with no end of stream learns through it.
            let _alive = senders_w.take();
            let mut tx = s.take().ok_or("no sender")?;
            transport
                .in_child_sender(&mut tx)
                .map_err(|e| format!("re-attaching the sender: {e}"))?;
            catch_storms()?;
            rep.record(&Event::Ready.encode());
            let aimed = fault_ops(plan, Victim::Sender(i));
            send(&mut tx, i as u32, sp, plan.seed, &aimed, rep);
            Ok(())
        })?;
    }
    // The parent takes no part: its copies must not keep either end alive.
    drop(s);
    drop(r);
    drop(senders_r);
    drop(senders_w);
    let progress = config
        .stall
        .map_or(caps.progress_bound, |s| s.min(caps.progress_bound));
    let mut nemesis = Nemesis::new(plan, Some(progress));
    let reports = group.wait_observed(config.timeout, &mut nemesis);
    Ok(judge(
        transport.name(),
        &caps,
        plan,
        reports,
        None,
        &nemesis,
        start.elapsed(),
    ))
}

/// Installs, in a case's child, a handler for the nemesis's storm signal without
/// `SA_RESTART`: a blocking system call it interrupts fails with `EINTR`, which a transport
/// must retry, never report.
pub(crate) fn catch_storms() -> std::result::Result<(), String> {
    extern "C" fn ignore(_: nix::libc::c_int) {}
    let action = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe and touches no state
    // the interrupted code could hold; replacing the disposition of SIGURG affects only
    // this child process, which exits by `_exit` when its script ends.
    unsafe { sigaction(STORM_SIGNAL, &action) }
        .map(drop)
        .map_err(|e| format!("sigaction: {e}"))
}

/// The operations of `victim` at which the plan's nemesis aims a fault.
fn fault_ops(plan: &Plan, victim: Victim) -> Vec<usize> {
    plan.faults
        .iter()
        .filter(|f| f.victim == victim)
        .map(|f| f.op)
        .collect()
}

/// How long a process waits at a rendezvous for the harness before going on anyway.
const RENDEZVOUS_LIMIT: Duration = Duration::from_secs(1);

fn send<S: Sender>(
    tx: &mut S,
    sender: u32,
    plan: &SenderPlan,
    seed: u64,
    aimed: &[usize],
    rep: &mut Reporter,
) {
    let batch = plan.batch.max(1);
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); batch];
    let mut acked = 0usize;
    let mut round = 0usize;
    while acked < plan.sizes.len() {
        if plan.kill_after == Some(acked) {
            die(acked, rep);
        }
        // Batches alternate with single sends.
        let single = batch == 1 || round % 2 == 1;
        round += 1;
        let end = (acked + if single { 1 } else { batch }).min(plan.sizes.len());
        // A kill planned inside this batch cuts the batch short, so it lands exactly there.
        let end = match plan.kill_after {
            Some(k) if k > acked && k < end => k,
            _ => end,
        };
        for (k, buf) in (acked..end).zip(bufs.iter_mut()) {
            let id = MsgId {
                sender,
                seq: k as u32,
            };
            history::fill_message(seed, id, plan.sizes[k], buf);
        }
        let first = MsgId {
            sender,
            seq: acked as u32,
        };
        let count = end - acked;
        if aimed.iter().any(|&op| (acked..end).contains(&op)) {
            let ev = Event::Rendezvous {
                from: acked as u32,
                to: end as u32,
            };
            rep.rendezvous(&ev.encode(), RENDEZVOUS_LIMIT);
        }
        rep.record(
            &Event::Sending {
                first,
                count: count as u32,
            }
            .encode(),
        );
        let result = if single {
            tx.send(&bufs[0])
        } else {
            let msgs: Vec<&[u8]> = bufs[..count].iter().map(Vec::as_slice).collect();
            tx.send_batch(&msgs)
        };
        match result {
            Ok(()) => {
                rep.record(
                    &Event::Sent {
                        first,
                        count: count as u32,
                    }
                    .encode(),
                );
                acked = end;
                plan.pace.after(acked);
            }
            Err(e) => {
                let ev = Event::SendFailed {
                    first,
                    count: count as u32,
                    disconnected: e.is_disconnected(),
                    error: e.to_string(),
                };
                rep.record(&ev.encode());
                return;
            }
        }
    }
    if plan.kill_after == Some(acked) {
        die(acked, rep);
    }
}

fn die(acked: usize, rep: &mut Reporter) -> ! {
    rep.record(
        &Event::Killing {
            acked: acked as u32,
        }
        .encode(),
    );
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be blocked or caught; not reached.
    super::fork::exit_now(99)
}

/// How the receiver of a transport with no end of stream learns that the case is over.
struct HarnessEnd {
    /// The read end of a pipe whose write end every sender process holds.
    senders: std::os::fd::OwnedFd,
    /// How long nothing must arrive, once the senders are gone.
    quiet: Duration,
}

impl HarnessEnd {
    /// True once every sender process has exited or died.
    fn senders_gone(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.senders.as_fd(), PollFlags::empty())];
        loop {
            match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return false,
            }
        }
    }
}

fn receive<R: Receiver>(
    rx: &mut R,
    plan: &ReceiverPlan,
    aimed: &[usize],
    harness_end: Option<&HarnessEnd>,
    rep: &mut Reporter,
) {
    let mut got = 0usize;
    let mut announced = None;
    // With no end of stream: once every sender is gone, receive until the quiet period
    // passes with nothing, then end.
    let mut draining = false;
    loop {
        if plan.kill_after == Some(got) {
            die(got, rep);
        }
        if plan.close_after == Some(got) {
            // Dropping is the close; the sender must see it as Disconnected, not die.
            rep.record(&Event::Closed { after: got as u32 }.encode());
            return;
        }
        if announced != Some(got) {
            if aimed.contains(&got) {
                let ev = Event::Rendezvous {
                    from: got as u32,
                    to: got as u32 + 1,
                };
                rep.rendezvous(&ev.encode(), RENDEZVOUS_LIMIT);
            }
            rep.record(&Event::Receiving { got: got as u32 }.encode());
            announced = Some(got);
        }
        let wait = match (plan.mode, harness_end) {
            (_, Some(end)) if draining => Wait::For(end.quiet),
            // A blocking receive would never return once the senders are gone.
            (RecvMode::Blocking, Some(_)) => Wait::For(Duration::from_millis(5)),
            (RecvMode::Blocking, None) => Wait::Forever,
            (RecvMode::Polling, _) => Wait::Never,
            (RecvMode::Timeout(ms), _) => Wait::For(Duration::from_millis(ms.into())),
        };
        match rx.recv_with(wait, Delivery::of) {
            Ok(d) => {
                rep.record(&Event::Received(d).encode());
                got += 1;
                plan.pace.after(got);
            }
            Err(Error::Disconnected) => {
                rep.record(&Event::Disconnected.encode());
                // The end stays the end: every later receive, in every wait mode, says so
                // again at once (a blocking one that waits instead is a hang).
                for (wait, how) in [
                    (Wait::Never, "try_recv"),
                    (Wait::For(Duration::from_millis(1)), "recv_timeout"),
                    (Wait::Forever, "recv"),
                ] {
                    match rx.recv_with(wait, |m| m.len()) {
                        Err(Error::Disconnected) => {}
                        other => {
                            let e = format!("after Disconnected, {how} returned {other:?}");
                            rep.record(&Event::RecvFailed(e).encode());
                            return;
                        }
                    }
                }
                return;
            }
            Err(e) if e.is_cut_off() => {
                rep.record(&Event::CutOff(e.to_string()).encode());
                return;
            }
            Err(e) if e.is_not_ready() && harness_end.is_some() => {
                if draining {
                    rep.record(&Event::QuietEnd.encode());
                    return;
                }
                draining = harness_end.is_some_and(HarnessEnd::senders_gone);
                if !draining && plan.mode == RecvMode::Polling {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            Err(Error::Empty) if plan.mode == RecvMode::Polling => {
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(Error::Timeout(_)) if matches!(plan.mode, RecvMode::Timeout(_)) => {}
            Err(e) => {
                rep.record(&Event::RecvFailed(e.to_string()).encode());
                return;
            }
        }
    }
}

/// A child's report as a history: its records decoded (what does not decode is dropped).
fn history_of(r: ChildReport) -> ProcessHistory {
    let (times, events) = r
        .record_times
        .iter()
        .zip(&r.records)
        .filter_map(|(&t, b)| Event::decode(b).map(|e| (t, e)))
        .unzip();
    ProcessHistory {
        name: r.name,
        pid: r.pid,
        events,
        times,
        end: r.end,
    }
}

/// The deliveries in a receiver's history, in order.
fn deliveries_of(p: &ProcessHistory) -> impl Iterator<Item = Delivery> + '_ {
    p.events.iter().filter_map(|e| match e {
        Event::Received(d) => Some(*d),
        _ => None,
    })
}

/// Turns the children's reports into histories and violations: `reports` holds the
/// receiver, then each sender. `recovered` is the receiver of a recovery run after the
/// first receiver was killed (a persistent program under test,
/// [`super::exec`]): its deliveries continue the first receiver's, and it decides whether
/// the stream was received to its end.
pub(crate) fn judge(
    transport: String,
    caps: &super::Capabilities,
    plan: &Plan,
    reports: Vec<ChildReport>,
    recovered: Option<ChildReport>,
    nemesis: &Nemesis,
    elapsed: Duration,
) -> CaseOutcome {
    let mut processes: Vec<ProcessHistory> = reports.into_iter().map(history_of).collect();
    let recovered = recovered.map(history_of);
    let mut violations = Vec::new();
    let receiver = &processes[0];
    let receiver_closed = receiver
        .events
        .iter()
        .any(|e| matches!(e, Event::Closed { .. }));
    // A receiver that failed (a corrupt stream, say) has left as surely as one that closed:
    // a sender told Disconnected afterwards is a consequence, not a second violation.
    let receiver_failed = receiver
        .events
        .iter()
        .any(|e| matches!(e, Event::RecvFailed(_)));
    let receiver_gone = receiver_closed || receiver_failed || receiver.end != ChildEnd::Returned;

    // How each process ended.
    for (i, p) in processes.iter().enumerate() {
        let sender_plan = i.checked_sub(1).and_then(|k| plan.senders.get(k));
        let killed_as_planned = p.end == ChildEnd::Signaled("SIGKILL".into())
            && (matches!(p.events.last(), Some(Event::Killing { .. })) || nemesis.killed(i));
        match &p.end {
            ChildEnd::Returned => {}
            ChildEnd::Hung => {
                let mut what = doing(p, sender_plan);
                let senders_ended = processes[1..].iter().all(|s| s.end != ChildEnd::Hung);
                if i == 0 && senders_ended && !receiver_closed {
                    what.push_str(
                        "; every sender had ended, and the end of stream never came (a \
                         transport without one declares `Capabilities::end_of_stream` false)",
                    );
                }
                violations.push(Violation::Hung {
                    process: p.name.clone(),
                    doing: what,
                })
            }
            _ if killed_as_planned => {}
            other => violations.push(Violation::Crashed {
                process: p.name.clone(),
                detail: other.to_string(),
            }),
        }
        for e in &p.events {
            match e {
                Event::SendFailed {
                    first,
                    disconnected,
                    error,
                    ..
                } if !(*disconnected && receiver_gone) => violations.push(Violation::Crashed {
                    process: p.name.clone(),
                    detail: format!("send of message {} failed: {error}", first.seq),
                }),
                Event::RecvFailed(error) => violations.push(Violation::Crashed {
                    process: p.name.clone(),
                    detail: format!("receive failed: {error}"),
                }),
                _ => {}
            }
        }
    }

    // What was delivered against what was sent.
    let senders: Vec<SenderRecord> = plan
        .senders
        .iter()
        .enumerate()
        .map(|(i, sp)| {
            let events = processes
                .get(i + 1)
                .map(|p| p.events.as_slice())
                .unwrap_or(&[]);
            let mut acked = 0usize;
            let mut attempted = 0usize;
            for e in events {
                match e {
                    Event::Sent { count, .. } => acked += *count as usize,
                    // A send started and never returned (the sender was killed or hung in
                    // it) may or may not have delivered its messages.
                    Event::Sending { first, count } => {
                        attempted = attempted.max(first.seq as usize + *count as usize)
                    }
                    _ => {}
                }
            }
            let attempted = attempted.max(acked).min(sp.sizes.len());
            SenderRecord {
                sizes: sp.sizes.clone(),
                acked,
                attempted,
            }
        })
        .collect();
    let mut deliveries: Vec<Delivery> = deliveries_of(receiver).collect();
    let first_run = deliveries.len();
    // A stream may end cut off inside a message only if a sender died inside a send.
    let cut_short = senders.iter().any(|s| s.attempted > s.acked)
        && processes[1..].iter().any(|p| p.end != ChildEnd::Returned);
    let end_of_stream = receiver
        .events
        .iter()
        .find(|e| matches!(e, Event::Disconnected | Event::CutOff(_) | Event::QuietEnd));
    let receiver_complete = receiver.end == ChildEnd::Returned
        && match end_of_stream {
            Some(Event::Disconnected | Event::QuietEnd) => true,
            Some(Event::CutOff(_)) if cut_short => true,
            Some(Event::CutOff(e)) => {
                violations.push(Violation::Crashed {
                    process: receiver.name.clone(),
                    detail: format!(
                        "reported a stream cut inside a message, but no sender died inside a send: {e}"
                    ),
                });
                false
            }
            _ => false,
        };
    // Disconnected means every sending end is closed; a sender closes its end only after
    // its last report, so a sender that reports anything later was still alive.
    let disconnected_at = receiver
        .events
        .iter()
        .zip(&receiver.times)
        .find(|(e, _)| matches!(e, Event::Disconnected | Event::CutOff(_)))
        .map(|(_, &t)| t);
    if let Some(t) = disconnected_at {
        for p in &processes[1..] {
            if let Some((e, &at)) = p.events.iter().zip(&p.times).find(|(_, &at)| at > t) {
                violations.push(Violation::EarlyDisconnect {
                    process: p.name.clone(),
                    detail: format!("it reported \"{e}\" {:.3} ms later", (at - t) as f64 / 1e6),
                });
            }
        }
    }
    let receiver_complete = match &recovered {
        None => receiver_complete,
        Some(rx) => {
            deliveries.extend(deliveries_of(rx));
            recovery_ended(rx, &mut violations)
        }
    };
    let mut found = history::check(&CheckInput {
        seed: plan.seed,
        senders: &senders,
        deliveries: &deliveries,
        receiver_complete,
    });
    if recovered.is_some() {
        let first = &deliveries[..first_run];
        excuse_taken_in_doubt(receiver, first, plan.seed, &senders, &mut found);
    }
    violations.extend(found);
    let faults = nemesis.applied(&processes);
    if let Some(late) = late_disconnect(caps, &processes, &faults, nemesis) {
        violations.push(late);
    }
    processes.extend(recovered);
    CaseOutcome {
        transport,
        plan: plan.clone(),
        faults,
        messages: deliveries.len(),
        bytes: deliveries.iter().map(|d| u64::from(d.len)).sum(),
        processes,
        violations,
        elapsed,
    }
}

/// How a recovery run's receiver ended: true if it received to the end (it reported the
/// end of the stream, or the harness ended it once quiet); a crash, a failed receive or a
/// hang is a violation of its own.
fn recovery_ended(rx: &ProcessHistory, violations: &mut Vec<Violation>) -> bool {
    for e in &rx.events {
        if let Event::RecvFailed(error) = e {
            violations.push(Violation::Crashed {
                process: rx.name.clone(),
                detail: format!("receive failed: {error}"),
            });
        }
    }
    match &rx.end {
        ChildEnd::Returned => {}
        ChildEnd::Hung => violations.push(Violation::Hung {
            process: rx.name.clone(),
            doing: doing(rx, None),
        }),
        other => violations.push(Violation::Crashed {
            process: rx.name.clone(),
            detail: other.to_string(),
        }),
    }
    rx.end == ChildEnd::Returned
        && rx
            .events
            .iter()
            .any(|e| matches!(e, Event::Disconnected | Event::QuietEnd))
}

/// The one message in doubt across a recovery run: a receiver killed inside a receive
/// (it said it was receiving, and never what it got) may have taken a message from the
/// storage that nobody will ever report. That message is the next of its sender: one loss
/// is excused, of a sender's earliest lost message, and only if the first receiver
/// (`first_run`) got the one before it and none after it (as far as digests tell: each
/// message of 8 bytes or more carries its identity, so its digest names it alone).
fn excuse_taken_in_doubt(
    receiver: &ProcessHistory,
    first_run: &[Delivery],
    seed: u64,
    senders: &[SenderRecord],
    found: &mut Vec<Violation>,
) {
    let last = receiver
        .events
        .iter()
        .rev()
        .find(|e| !matches!(e, Event::Rendezvous { .. }));
    let inside = matches!(last, Some(Event::Receiving { .. }))
        && matches!(receiver.end, ChildEnd::Signaled(_));
    if !inside {
        return;
    }
    let got: std::collections::HashSet<Delivery> = first_run.iter().copied().collect();
    let mut buf = Vec::new();
    // Whether the first receiver got message `seq` of `sender`: `None` if its bytes do
    // not name it alone (shorter than an identity).
    let mut first_got = |sender: u32, seq: usize| {
        let r = senders.get(sender as usize)?;
        let len = *r.sizes.get(seq)?;
        (len >= ID_LEN).then(|| {
            let id = MsgId {
                sender,
                seq: seq as u32,
            };
            history::fill_message(seed, id, len, &mut buf);
            got.contains(&Delivery::of(&buf))
        })
    };
    // The next of its sender: the one before it was the first receiver's last of that
    // sender (or it is the sender's first message).
    let mut next = |id: MsgId| {
        let q = id.seq as usize;
        let attempted = senders
            .get(id.sender as usize)
            .map_or(0, |r| r.attempted.max(r.acked).min(r.sizes.len()));
        let after = q == 0 || first_got(id.sender, q - 1) != Some(false);
        after && (q + 1..attempted).all(|later| first_got(id.sender, later) != Some(true))
    };
    let mut earliest = std::collections::HashSet::new();
    let excused = found.iter().position(|v| match v {
        // Lost messages come by sender, then sequence: the first of a sender is its earliest.
        Violation::Lost { id } => earliest.insert(id.sender) && next(*id),
        _ => false,
    });
    if let Some(k) = excused {
        found.remove(k);
    }
}

/// When the last sender to end was SIGKILLed (by its plan or by the nemesis), the receiver
/// waiting for more must get Disconnected within the transport's
/// [`disconnect_bound`](super::Capabilities::disconnect_bound), counted from the later of
/// the kill and the receiver's last step before it (its own pacing is not the
/// transport's). A case whose receiver the nemesis hit is not judged on this.
fn late_disconnect(
    caps: &super::Capabilities,
    processes: &[ProcessHistory],
    faults: &[AppliedFault],
    nemesis: &Nemesis,
) -> Option<Violation> {
    if !caps.end_of_stream || faults.iter().any(|f| f.victim == processes[0].name) {
        return None;
    }
    let receiver = &processes[0];
    let at = receiver
        .events
        .iter()
        .position(|e| matches!(e, Event::Disconnected))?;
    let disconnected = *receiver.times.get(at)?;
    let before = at
        .checked_sub(1)
        .and_then(|k| receiver.times.get(k))
        .copied()?;
    // Each sender's end: its planned kill, the nemesis's kill, or its last report.
    let mut last: Option<(u64, bool)> = None;
    for (i, p) in processes.iter().enumerate().skip(1) {
        let killed_at = match p.events.last() {
            Some(Event::Killing { .. }) => p.times.last().copied(),
            _ if nemesis.killed(i) => faults
                .iter()
                .filter(|f| {
                    f.victim == p.name && matches!(f.fault.kind, super::plan::FaultKind::Kill)
                })
                .map(|f| f.at_ns)
                .next(),
            _ => None,
        };
        let end = match killed_at {
            Some(t) => (t, true),
            None => (p.times.last().copied().unwrap_or(0), false),
        };
        if last.is_none_or(|(t, _)| end.0 >= t) {
            last = Some(end);
        }
    }
    let (killed_at, true) = last? else {
        return None;
    };
    let from = killed_at.max(before);
    let took = Duration::from_nanos(disconnected.saturating_sub(from));
    (took > caps.disconnect_bound).then(|| Violation::Hung {
        process: receiver.name.clone(),
        doing: format!(
            "got Disconnected {:.1} ms after the last sender was SIGKILLed and it was waiting \
             (the stated bound is {:?})",
            took.as_secs_f64() * 1e3,
            caps.disconnect_bound
        ),
    })
}

/// What a process was doing when the watchdog stopped it, from its last event and its plan.
fn doing(p: &ProcessHistory, sender: Option<&SenderPlan>) -> String {
    if let Some(Event::Sending { first, count }) = p.events.last() {
        let sizes = sender.map(|sp| &sp.sizes[..]).unwrap_or(&[]);
        let len = |k: u32| sizes.get(k as usize).copied().unwrap_or(0);
        return if *count == 1 {
            format!(
                "inside the send of message {} ({} bytes), after {} acknowledged",
                first.seq,
                len(first.seq),
                first.seq
            )
        } else {
            let bytes: usize = (first.seq..first.seq + count).map(len).sum();
            format!(
                "inside a send_batch of messages {}..={} ({bytes} bytes), after {} acknowledged",
                first.seq,
                first.seq + count - 1,
                first.seq
            )
        };
    }
    match sender {
        Some(sp) => {
            let acked: usize = p
                .events
                .iter()
                .map(|e| match e {
                    Event::Sent { count, .. } => *count as usize,
                    _ => 0,
                })
                .sum();
            match sp.sizes.get(acked) {
                Some(len) => format!(
                    "sending message {acked} ({len} bytes) of {}, after {acked} acknowledged",
                    sp.sizes.len()
                ),
                None => format!("exiting after all {acked} messages were acknowledged"),
            }
        }
        None => {
            let got = p
                .events
                .iter()
                .filter(|e| matches!(e, Event::Received(_)))
                .count();
            let last = p
                .events
                .last()
                .map_or("nothing yet".to_string(), |e| e.to_string());
            format!("waiting to receive after {got} messages (last event: {last})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u64 = 42;

    fn delivery(seq: u32, len: usize) -> Delivery {
        let mut buf = Vec::new();
        history::fill_message(SEED, MsgId { sender: 0, seq }, len, &mut buf);
        Delivery::of(&buf)
    }

    fn report(name: &str, events: &[Event], end: ChildEnd) -> ChildReport {
        ChildReport {
            name: name.into(),
            pid: 1,
            records: events.iter().map(Event::encode).collect(),
            record_times: (1..=events.len() as u64).collect(),
            end,
        }
    }

    /// A sender that had all `n` messages acknowledged.
    fn sender(n: u32) -> ChildReport {
        let mut ev = vec![Event::Ready];
        for seq in 0..n {
            let first = MsgId { sender: 0, seq };
            ev.push(Event::Sending { first, count: 1 });
            ev.push(Event::Sent { first, count: 1 });
        }
        report("sender 0", &ev, ChildEnd::Returned)
    }

    /// A receiver that got `seqs` (of `len` bytes each), then said it was receiving again
    /// if `inside`, and was SIGKILLed.
    fn killed_receiver(seqs: &[u32], len: usize, inside: bool) -> ChildReport {
        let mut ev = vec![Event::Ready];
        for (got, &q) in seqs.iter().enumerate() {
            ev.push(Event::Receiving { got: got as u32 });
            ev.push(Event::Received(delivery(q, len)));
        }
        if inside {
            ev.push(Event::Receiving {
                got: seqs.len() as u32,
            });
        }
        report("receiver", &ev, ChildEnd::Signaled("SIGKILL".into()))
    }

    fn recovery(seqs: &[u32], len: usize, end: Event) -> ChildReport {
        let mut ev = vec![Event::Ready];
        for (got, &q) in seqs.iter().enumerate() {
            ev.push(Event::Receiving { got: got as u32 });
            ev.push(Event::Received(delivery(q, len)));
        }
        ev.push(Event::Receiving {
            got: seqs.len() as u32,
        });
        ev.push(end);
        report("recovery receiver", &ev, ChildEnd::Returned)
    }

    fn kinds(
        n: u32,
        len: usize,
        first: ChildReport,
        recovered: Option<ChildReport>,
    ) -> Vec<String> {
        let plan = Plan::simple(SEED, vec![len; n as usize]);
        let caps = super::super::Capabilities::new(1 << 20);
        let mut nemesis = Nemesis::new(&plan, None);
        nemesis.assume_killed(0);
        let out = judge(
            "t".into(),
            &caps,
            &plan,
            vec![first, sender(n)],
            recovered,
            &nemesis,
            Duration::ZERO,
        );
        assert_eq!(
            out.processes.last().map(|p| p.name.as_str()),
            Some(if out.processes.len() == 3 {
                "recovery receiver"
            } else {
                "sender 0"
            })
        );
        out.violations
            .iter()
            .map(|v| v.kind().to_string())
            .collect()
    }

    #[test]
    fn a_recovery_run_continues_the_killed_receivers_stream() {
        let ok = |first, inside, rec: &[u32]| {
            kinds(
                5,
                16,
                killed_receiver(first, 16, inside),
                Some(recovery(rec, 16, Event::QuietEnd)),
            )
        };
        // Every message once, across the two runs, in order; the end reported or quiet.
        assert!(ok(&[0, 1], false, &[2, 3, 4]).is_empty());
        assert!(kinds(
            5,
            16,
            killed_receiver(&[0, 1], 16, false),
            Some(recovery(&[2, 3, 4], 16, Event::Disconnected))
        )
        .is_empty());
        // Without a recovery run, what the killed receiver missed is not judged.
        assert!(kinds(5, 16, killed_receiver(&[0, 1], 16, false), None).is_empty());
        // A message the first receiver reported comes back: duplicated.
        assert_eq!(ok(&[0, 1], false, &[1, 2, 3, 4]), ["duplicated"]);
        // Killed between receives, nothing is in doubt: a missing message is lost.
        assert_eq!(ok(&[0, 1], false, &[3, 4]), ["lost"]);
        // Killed inside a receive, the next message may have been taken: excused once.
        assert!(ok(&[0, 1], true, &[3, 4]).is_empty());
        assert!(ok(&[], true, &[1, 2, 3, 4]).is_empty());
        // ... but no second one, and not one before what the first receiver got.
        assert_eq!(ok(&[0, 1], true, &[4]), ["lost"]);
        assert_eq!(ok(&[0, 2], true, &[3, 4]), ["lost"]);
        assert_eq!(ok(&[0, 1], true, &[2, 4]), ["lost"]);
        // Out of order across the runs.
        assert_eq!(ok(&[0, 2], false, &[1, 3, 4]), ["reordered"]);
    }

    #[test]
    fn what_the_recovery_run_delivered_counts_in_the_outcome() {
        let plan = Plan::simple(SEED, vec![16, 40]);
        let caps = super::super::Capabilities::new(1 << 20);
        let mut nemesis = Nemesis::new(&plan, None);
        nemesis.assume_killed(0);
        let out = judge(
            "t".into(),
            &caps,
            &plan,
            vec![killed_receiver(&[0], 16, false), sender(2)],
            Some(recovery(&[1], 40, Event::QuietEnd)),
            &nemesis,
            Duration::ZERO,
        );
        assert!(out.passed(), "{}", out.report());
        assert_eq!((out.messages, out.bytes, out.largest()), (2, 56, 40));
    }

    #[test]
    fn a_recovery_run_that_does_not_reach_its_end_is_judged_so() {
        let first = || killed_receiver(&[0], 16, false);
        // Hung, crashed or failed: a violation of its own, and no loss claimed meanwhile.
        let hung = report("recovery receiver", &[Event::Ready], ChildEnd::Hung);
        assert_eq!(kinds(3, 16, first(), Some(hung)), ["hung"]);
        let crashed = report(
            "recovery receiver",
            &[Event::Ready],
            ChildEnd::Signaled("SIGSEGV".into()),
        );
        assert_eq!(kinds(3, 16, first(), Some(crashed)), ["crashed"]);
        let failed = recovery(&[1], 16, Event::RecvFailed("corrupt record".into()));
        assert_eq!(kinds(3, 16, first(), Some(failed)), ["crashed"]);
        // Ended by the harness only once quiet, or by the end of stream: else incomplete.
        let cut = recovery(&[1], 16, Event::Closed { after: 1 });
        assert!(kinds(3, 16, first(), Some(cut)).is_empty());
    }
}
