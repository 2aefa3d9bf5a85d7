//! The nemesis: the harness's own process injects the faults of a [`Plan`] into the
//! processes of a running case, at moments measured in the victims' progress, so that they
//! land inside a `send`, a `send_batch` or a `recv`, not only between two of them.
//!
//! Every process of a case reports, as it happens, when it starts an operation
//! ([`Event::Sending`], [`Event::Receiving`]) and when the operation returns. The nemesis
//! watches those reports from the parent ([`Observer`]); when the victim of a [`Fault`]
//! is about to start the operation the fault names (it waits for the parent at a
//! rendezvous there), the parent lets it go, waits the fault's delay, then freezes the
//! victim (SIGSTOP, waiting until it is stopped) and reads what it reported up to that
//! instant. If the victim is inside an operation, the fault lands there: SIGKILL while it is
//! stopped, a pause that keeps it stopped, or a burst of SIGURG delivered as it continues.
//! If it is between two operations, it runs one more step of 20 us and is looked at again,
//! up to 400 steps; then the fault lands wherever the victim is. A victim that ends first is not
//! hit. After the case, each fault applied is placed on the victim's own timeline
//! ([`Landing`]). The record of an operation's start is written just before the call and
//! the record of its end just after it returns, so "inside" may include the few
//! instructions around the call.

use std::fmt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::case::{Event, ProcessHistory};
use super::fork::{monotonic_ns, Control, Observer};
use super::plan::{Fault, FaultKind, Plan, Victim};

/// The signal of a storm: its default action is to ignore it, so a process that has not
/// installed the handler yet is not killed by it; the case's processes install a handler
/// without `SA_RESTART` before anything else, so a blocking call it interrupts fails with
/// `EINTR`.
pub const STORM_SIGNAL: Signal = Signal::SIGURG;

/// How long the nemesis waits for a victim to stop after SIGSTOP.
const FREEZE_LIMIT: Duration = Duration::from_millis(50);

/// How many steps a fault lets its victim take, looking for it inside an operation, before
/// it lands wherever the victim is.
const STEPS: u32 = 400;

/// How long a victim found between operations runs before it is stopped and looked at
/// again.
const STEP: Duration = Duration::from_micros(20);

/// Lets child `child` run for `first` (released from its rendezvous first if `release`),
/// then stops it (SIGSTOP) and reads its last record; while `keep_going(last)` says it is
/// not yet where it should be stopped, lets it run one more [`STEP`] and looks again, at
/// most [`STEPS`] times. It runs off the parent's CPU meanwhile, so that waking it does not
/// hand it the parent's CPU. Returns the last record, the child left stopped; `None` if it
/// ended first.
pub(crate) fn stop_where(
    ctl: &mut Control<'_>,
    child: usize,
    release: bool,
    first: Duration,
    keep_going: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let apart = ctl.keep_apart(child);
    if release {
        ctl.release(child);
    }
    // A long first wait sleeps; a short one spins (a sleep overshoots by a scheduler tick).
    if first > Duration::from_millis(2) {
        std::thread::sleep(first);
    } else {
        spin(first);
    }
    let mut stopped = ctl.freeze(child, FREEZE_LIMIT);
    for _ in 0..STEPS {
        match &stopped {
            Some(last) if keep_going(last) => {}
            _ => break,
        }
        ctl.signal(child, Signal::SIGCONT);
        spin(STEP);
        stopped = ctl.freeze(child, FREEZE_LIMIT);
    }
    if apart {
        ctl.unpin(child);
    }
    stopped
}

/// Waits `d` without sleeping (a sleep would let the victim run on for a scheduler tick).
fn spin(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Where a fault hit its victim.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Landing {
    /// Inside an operation: the victim had started it and not reported its end.
    Inside(String),
    /// Between operations (after the one named, or before the first).
    Between(String),
}

impl Landing {
    /// True for [`Landing::Inside`].
    pub fn is_inside(&self) -> bool {
        matches!(self, Landing::Inside(_))
    }
}

impl fmt::Display for Landing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Landing::Inside(op) => write!(f, "inside {op}"),
            Landing::Between(op) => write!(f, "between operations, {op}"),
        }
    }
}

/// One fault the nemesis applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppliedFault {
    /// The fault, as planned.
    pub fault: Fault,
    /// The victim's name ("receiver", "sender N").
    pub victim: String,
    /// When the (first) signal was sent: `CLOCK_MONOTONIC` ns, the clock of the reports.
    pub at_ns: u64,
    /// When the fault ended (the SIGCONT of a pause, the last signal of a storm).
    pub until_ns: u64,
    /// Where it hit the victim.
    pub landing: Landing,
}

impl fmt::Display for AppliedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.fault.kind {
            FaultKind::Kill => "killed".to_string(),
            FaultKind::Pause { micros } => format!("stopped for {micros}us"),
            FaultKind::Storm { signals, .. } => format!("sent {signals} x SIGURG"),
        };
        write!(f, "{} {what} by the harness, {}", self.victim, self.landing)
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// The victim has not started the operation yet.
    Waiting,
    /// Fire at this instant.
    Armed(Instant),
    /// Stopped; SIGCONT at this instant.
    Paused(Instant),
    /// Storm: this many signals left, the next at this instant.
    Storming(u32, Instant),
    Done,
}

/// The nemesis of one case: an [`Observer`] of its [`ChildGroup`](super::fork::ChildGroup)
/// whose children are the receiver (child 0) and the senders (child `n + 1`).
#[derive(Debug)]
pub struct Nemesis {
    faults: Vec<Fault>,
    /// Child index of each fault's victim (`None`: the plan has no such process).
    children: Vec<Option<usize>>,
    state: Vec<State>,
    /// Per fault: when its first signal went, and when its last.
    fired: Vec<Option<(u64, u64)>>,
    /// Children waiting at a rendezvous, to let go at the next `act`.
    release: Vec<usize>,
    /// Children killed by the nemesis.
    killed: Vec<bool>,
    /// Children with no operation to do (a sender with no message): their faults start
    /// counting when they are ready.
    idle: Vec<bool>,
    stall: Option<Duration>,
}

impl Nemesis {
    /// The nemesis for `plan`: its faults, over a case with `plan.senders.len()` senders.
    /// `stall`: a case in which nothing is reported for this long is given up as hung.
    pub fn new(plan: &Plan, stall: Option<Duration>) -> Nemesis {
        let children = plan
            .faults
            .iter()
            .map(|f| match f.victim {
                Victim::Receiver => Some(0),
                Victim::Sender(n) if n < plan.senders.len() => Some(n + 1),
                Victim::Sender(_) => None,
            })
            .collect();
        let idle = std::iter::once(false)
            .chain(plan.senders.iter().map(|s| s.sizes.is_empty()))
            .collect();
        Nemesis {
            idle,
            state: vec![State::Waiting; plan.faults.len()],
            fired: vec![None; plan.faults.len()],
            release: Vec::new(),
            killed: vec![false; plan.senders.len() + 1],
            faults: plan.faults.clone(),
            children,
            stall,
        }
    }

    /// True if the nemesis sent SIGKILL to child `child`.
    pub fn killed(&self, child: usize) -> bool {
        self.killed.get(child).copied().unwrap_or(false)
    }

    /// For tests of the judge: as if child `child` had been SIGKILLed by a fault.
    #[cfg(test)]
    pub(crate) fn assume_killed(&mut self, child: usize) {
        if self.killed.len() <= child {
            self.killed.resize(child + 1, false);
        }
        self.killed[child] = true;
    }

    /// The faults applied, each placed on its victim's timeline in `processes` (the
    /// receiver first, then the senders, as [`ChildGroup`](super::fork::ChildGroup) spawned
    /// them).
    pub fn applied(&self, processes: &[ProcessHistory]) -> Vec<AppliedFault> {
        let mut out = Vec::new();
        for (i, fault) in self.faults.iter().enumerate() {
            let (Some((at_ns, until_ns)), Some(child)) = (self.fired[i], self.children[i]) else {
                continue;
            };
            let Some(p) = processes.get(child) else {
                continue;
            };
            out.push(AppliedFault {
                fault: *fault,
                victim: p.name.clone(),
                at_ns,
                until_ns,
                landing: landing(p, at_ns),
            });
        }
        out
    }

    fn fire(&mut self, i: usize, now: Instant, ctl: &mut Control<'_>) {
        let Some(child) = self.children[i] else {
            self.state[i] = State::Done;
            return;
        };
        if self.killed[child] {
            self.state[i] = State::Done;
            return;
        }
        match self.state[i] {
            State::Armed(_) => {
                // Let the victim run for the fault's delay, stop it and look: inside an
                // operation, the fault lands there; between two, it runs one more short
                // step and is looked at again. It never runs far unwatched.
                let delay = Duration::from_micros(self.faults[i].delay_micros.into());
                let release = match self.release.iter().position(|&c| c == child) {
                    Some(k) => {
                        self.release.swap_remove(k);
                        true
                    }
                    None => false,
                };
                let between = |last: &[u8]| {
                    !matches!(
                        Event::decode(last),
                        Some(Event::Sending { .. } | Event::Receiving { .. })
                    )
                };
                if stop_where(ctl, child, release, delay, between).is_none() {
                    self.state[i] = State::Done; // it exited first
                    return;
                }
                let at = monotonic_ns();
                self.fired[i] = Some((at, at));
                match self.faults[i].kind {
                    FaultKind::Kill => {
                        // Killed where it was frozen.
                        self.killed[child] = ctl.signal(child, Signal::SIGKILL);
                        self.state[i] = State::Done;
                    }
                    FaultKind::Pause { micros } => {
                        // Already stopped: stays so for the pause.
                        let until = now + Duration::from_micros(micros.into());
                        self.state[i] = State::Paused(until);
                    }
                    FaultKind::Storm {
                        signals,
                        gap_micros,
                    } => {
                        // Pending while it is stopped: delivered the moment it continues,
                        // interrupting the call it was stopped in.
                        ctl.signal(child, STORM_SIGNAL);
                        ctl.signal(child, Signal::SIGCONT);
                        let next = now + Duration::from_micros(gap_micros.into());
                        self.state[i] = match signals.saturating_sub(1) {
                            0 => State::Done,
                            left => State::Storming(left, next),
                        };
                    }
                }
            }
            State::Paused(_) => {
                // Always continue a stopped victim, even one killed meanwhile.
                ctl.signal(child, Signal::SIGCONT);
                self.state[i] = State::Done;
                self.end_at(i, monotonic_ns());
            }
            State::Storming(left, _) => {
                let gap = match self.faults[i].kind {
                    FaultKind::Storm { gap_micros, .. } => gap_micros,
                    _ => 0,
                };
                let sent = ctl.signal(child, STORM_SIGNAL);
                self.state[i] = match left.saturating_sub(1) {
                    left if left > 0 && sent => {
                        State::Storming(left, now + Duration::from_micros(gap.into()))
                    }
                    _ => State::Done,
                };
                self.end_at(i, monotonic_ns());
            }
            State::Waiting | State::Done => {}
        }
    }

    fn end_at(&mut self, i: usize, at: u64) {
        if let Some((_, until)) = self.fired[i].as_mut() {
            *until = at;
        }
    }
}

impl Observer for Nemesis {
    fn record(&mut self, child: usize, record: &[u8], now: Instant) {
        let Some(event) = Event::decode(record) else {
            return;
        };
        if matches!(event, Event::Rendezvous { .. }) && !self.release.contains(&child) {
            // Always let it go (at the next `act`, after arming what it announced).
            self.release.push(child);
        }
        for i in 0..self.faults.len() {
            if self.children[i] != Some(child) {
                continue;
            }
            if !matches!(self.state[i], State::Waiting) {
                continue;
            }
            // The victim waits for us just before the operation the fault aims at (an idle
            // sender has none: it is aimed at when ready).
            let op = self.faults[i].op;
            let starts = match event {
                Event::Rendezvous { from, to } => (from as usize..to as usize).contains(&op),
                Event::Ready => self.idle.get(child).copied().unwrap_or(false),
                _ => false,
            };
            if starts {
                // At once: the delay is measured by `fire`, from the release.
                self.state[i] = State::Armed(now);
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        self.state
            .iter()
            .filter_map(|s| match *s {
                State::Armed(t) | State::Paused(t) | State::Storming(_, t) => Some(t),
                State::Waiting | State::Done => None,
            })
            .min()
    }

    fn act(&mut self, now: Instant, ctl: &mut Control<'_>) {
        // Faults due first: each releases its own victim, just before it watches it.
        for i in 0..self.faults.len() {
            let due = match self.state[i] {
                State::Armed(t) | State::Paused(t) | State::Storming(_, t) => t <= now,
                State::Waiting | State::Done => false,
            };
            if due {
                self.fire(i, now, ctl);
            }
        }
        for child in self.release.drain(..) {
            ctl.release(child);
        }
    }

    fn stall_limit(&self) -> Option<Duration> {
        // A pause is planned silence: never take it for a hang.
        let pausing = self.state.iter().any(|s| matches!(s, State::Paused(_)));
        if pausing {
            None
        } else {
            self.stall
        }
    }
}

/// Where a signal sent at `at_ns` hit process `p`: its last event before `at_ns` says
/// whether an operation was in progress.
fn landing(p: &ProcessHistory, at_ns: u64) -> Landing {
    let last = p
        .times
        .iter()
        .zip(&p.events)
        .take_while(|(&t, _)| t <= at_ns)
        .map(|(_, e)| e)
        .filter(|e| !matches!(e, Event::Ready | Event::Rendezvous { .. }))
        .last();
    match last {
        Some(Event::Sending { first, count: 1 }) => {
            Landing::Inside(format!("send of message {}", first.seq))
        }
        Some(Event::Sending { first, count }) => Landing::Inside(format!(
            "send_batch of messages {}..={}",
            first.seq,
            first.seq + count - 1
        )),
        Some(Event::Receiving { got }) => Landing::Inside(format!("receive of message {got}")),
        Some(e) => Landing::Between(format!("after \"{e}\"")),
        None => Landing::Between("before its first operation".into()),
    }
}
