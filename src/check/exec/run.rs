//! One case of a program under test: start it, let its roles connect, drive them through
//! the plan while the nemesis watches, and judge their reports as the forked harness does.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::wire::{self, command, Line, RoleId, Stamped, MAX_LINE};
use super::{ExecTransport, Program};
use crate::check::case::{judge, lock_cases, CaseOutcome, Event, RunConfig};
use crate::check::fork::{monotonic_ns, ChildEnd, ChildReport, Children, Control, Observer};
use crate::check::history::{fill_message, MsgId, Violation};
use crate::check::nemesis::Nemesis;
use crate::check::plan::{Pace, Plan, Victim};
use crate::check::Transport;
use crate::error::{DriverError, Error, Result};

/// Cases started by this process, for unique case names.
static CASES: AtomicU64 = AtomicU64::new(0);

/// The longest a wait goes without looking at the programs and a stop request.
const TICK: Duration = Duration::from_millis(20);

/// A receive command's count when nothing planned comes before the end.
const UNBOUNDED_COUNT: u32 = 1 << 30;

/// `pidfd_open(2)`: a descriptor for process `pid` that keeps naming that process (never
/// a later one with a recycled pid).
fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags (0) by value and returns a new descriptor
    // or -1; it reads and writes no memory of ours.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created by the kernel for us and is owned by no one
    // else; `fd` fits an int (descriptors do).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(2)`: sends `sig` to the process `fd` names, if it still runs.
fn pidfd_signal(fd: &OwnedFd, sig: Signal) -> bool {
    // SAFETY: the descriptor is open (borrowed for the call); a null siginfo and flags 0
    // ask for a plain kill(2)-like signal, so the kernel reads no memory of ours.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as nix::libc::c_int,
            std::ptr::null::<nix::libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

/// Where a role is in its script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the harness's next command.
    Idle,
    /// Told to send message `seq`; `started` once it said `sending`.
    Sending { seq: u32, started: bool },
    /// Told to receive `left` more messages; `inside` once it said `receiving`.
    Receiving { left: u32, inside: bool },
    /// Told to close its end.
    Closing,
    /// Told to exit.
    Exiting,
    /// Nothing more to do: it said bye, or the harness killed it.
    Done,
}

/// One role of the case.
#[derive(Debug)]
struct Role {
    id: RoleId,
    name: String,
    /// The control connection; `None` before hello and after its end.
    conn: Option<UnixStream>,
    pid: i32,
    pidfd: Option<OwnedFd>,
    data_mode: bool,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    records: Vec<Vec<u8>>,
    times: Vec<u64>,
    last_t: u64,
    state: State,
    /// A command held at a rendezvous until the nemesis lets the role go.
    held: Option<Vec<u8>>,
    /// Pacing: no command before this instant.
    next_at: Option<Instant>,
    /// Messages acknowledged (sender) or received (receiver).
    done: usize,
    /// A send failed, or the stream ended: only `exit` is left.
    finished: bool,
    said_bye: bool,
    ended: bool,
    sigkilled: bool,
    /// The harness ended it (no end of stream, quiet): that is not a crash.
    ended_by_harness: bool,
    hung: bool,
    /// When its last line came (for the quiet period).
    last_seen: Instant,
}

impl Role {
    fn new(id: RoleId) -> Role {
        Role {
            id,
            name: id.to_string(),
            conn: None,
            pid: 0,
            pidfd: None,
            data_mode: false,
            inbuf: Vec::new(),
            out: Vec::new(),
            records: Vec::new(),
            times: Vec::new(),
            last_t: 0,
            state: State::Idle,
            held: None,
            next_at: None,
            done: 0,
            finished: false,
            said_bye: false,
            ended: false,
            sigkilled: false,
            ended_by_harness: false,
            hung: false,
            last_seen: Instant::now(),
        }
    }

    fn record(&mut self, e: &Event, t: u64) {
        // A role's records stay in time order, the harness's own among them.
        let t = t.max(self.times.last().copied().unwrap_or(0));
        self.records.push(e.encode());
        self.times.push(t);
    }

    fn end(&self) -> ChildEnd {
        if self.hung {
            ChildEnd::Hung
        } else if self.said_bye || self.ended_by_harness {
            ChildEnd::Returned
        } else if self.sigkilled {
            ChildEnd::Signaled("SIGKILL".into())
        } else {
            ChildEnd::Failed(
                "its control connection ended without \"bye\": the process crashed or exited \
                 early"
                    .into(),
            )
        }
    }
}

fn cut(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(&line[..line.len().min(300)]).into_owned();
    if line.len() > 300 {
        format!("{s}... ({} bytes)", line.len())
    } else {
        s
    }
}

/// The roles of a case: what the nemesis acts on.
#[derive(Debug)]
struct Roles {
    list: Vec<Role>,
    seed: u64,
    plan: std::rc::Rc<Plan>,
    /// Per role, the operations counted by [`Roles::pace`] so far.
    counted: Vec<usize>,
    start_ns: u64,
    error: Option<(Option<String>, String, Option<String>)>,
}

impl Roles {
    fn fail(&mut self, role: Option<usize>, what: String, line: Option<&[u8]>) {
        if self.error.is_none() {
            let role = role.map(|i| self.list[i].name.clone());
            self.error = Some((role, what, line.map(cut)));
        }
    }

    /// Queues `bytes` to role `i` and writes what the socket takes now.
    fn queue(&mut self, i: usize, bytes: &[u8]) {
        self.list[i].out.extend_from_slice(bytes);
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let r = &mut self.list[i];
        let Some(conn) = r.conn.as_mut() else {
            r.out.clear();
            return;
        };
        while !r.out.is_empty() {
            match conn.write(&r.out) {
                Ok(0) => break,
                Ok(n) => {
                    r.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // Full (the role is stopped, or slow): the rest goes when it is writable.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // The role is gone: its end of the connection shows it.
                Err(_) => {
                    r.out.clear();
                    break;
                }
            }
        }
    }

    /// Reads what role `i` wrote; handles each complete line. Returns false at the end of
    /// its connection.
    fn pump(&mut self, i: usize) -> bool {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(conn) = self.list[i].conn.as_mut() else {
                return false;
            };
            let n = match conn.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => 0,
            };
            if n == 0 {
                self.hang_up(i);
                return false;
            }
            self.list[i].inbuf.extend_from_slice(&buf[..n]);
            self.lines(i);
            if self.error.is_some() {
                return true;
            }
        }
    }

    /// Handles the complete lines in role `i`'s buffer.
    fn lines(&mut self, i: usize) {
        while let Some(nl) = self.list[i].inbuf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.list[i].inbuf.drain(..=nl).collect();
            let line = &line[..line.len() - 1];
            if line.len() > MAX_LINE {
                self.fail(
                    Some(i),
                    format!("a line of {} bytes; the limit is {MAX_LINE}", line.len()),
                    Some(line),
                );
                return;
            }
            if let Err(what) = self.handle(i, line) {
                self.fail(Some(i), what, Some(line));
                return;
            }
        }
        if self.list[i].inbuf.len() > MAX_LINE {
            let n = self.list[i].inbuf.len();
            let head = self.list[i].inbuf[..300.min(n)].to_vec();
            self.fail(
                Some(i),
                format!("more than {MAX_LINE} bytes without a line end (a flood?)"),
                Some(&head),
            );
        }
    }

    fn hang_up(&mut self, i: usize) {
        let r = &mut self.list[i];
        r.conn = None;
        r.ended = true;
        r.state = State::Done;
    }

    /// One line of role `i`.
    fn handle(&mut self, i: usize, line: &[u8]) -> std::result::Result<(), String> {
        let Stamped { line, t } = wire::parse(line)?;
        let now = monotonic_ns();
        let r = &mut self.list[i];
        if t > now {
            return Err(format!(
                "\"t\" is {t}, later than the moment the line was read ({now}): it must be \
                 CLOCK_MONOTONIC in nanoseconds"
            ));
        }
        if t < self.start_ns {
            return Err(format!(
                "\"t\" is {t}, before the case started ({}): it must be CLOCK_MONOTONIC in \
                 nanoseconds",
                self.start_ns
            ));
        }
        if t < r.last_t {
            return Err(format!(
                "\"t\" goes backwards ({t} after {}): it must be taken just before each line is \
                 written",
                r.last_t
            ));
        }
        r.last_t = t;
        r.last_seen = Instant::now();
        let unexpected = |r: &Role, what: &str| {
            let doing = match r.state {
                State::Idle => "no command was pending".to_string(),
                State::Sending { seq, started } => format!(
                    "it was told to send message {seq}{}",
                    if started { " and said sending" } else { "" }
                ),
                State::Receiving { left, inside } => format!(
                    "it was told to receive {left} more message(s){}",
                    if inside { " and said receiving" } else { "" }
                ),
                State::Closing => "it was told to close".to_string(),
                State::Exiting => "it was told to exit".to_string(),
                State::Done => "it had already said bye".to_string(),
            };
            Err(format!("{what} answers no command: {doing}"))
        };
        let sender = match r.id {
            RoleId::Sender(s) => Some(s),
            RoleId::Receiver => None,
        };
        match (line, r.state, sender) {
            (Line::Hello { .. }, _, _) => {
                return Err("a second hello on a connection that already said hello".into())
            }
            (Line::Bye, State::Exiting, _) => {
                r.said_bye = true;
                r.state = State::Done;
            }
            (
                Line::Sending(seq),
                State::Sending {
                    seq: s,
                    started: false,
                },
                Some(sn),
            ) if seq == s => {
                r.state = State::Sending { seq, started: true };
                let first = MsgId { sender: sn, seq };
                r.record(&Event::Sending { first, count: 1 }, t);
            }
            (
                Line::Sent(seq),
                State::Sending {
                    seq: s,
                    started: true,
                },
                Some(sn),
            ) if seq == s => {
                r.record(
                    &Event::Sent {
                        first: MsgId { sender: sn, seq },
                        count: 1,
                    },
                    t,
                );
                r.done += 1;
                r.state = State::Idle;
                r.next_at = None;
            }
            (
                Line::SendFailed {
                    seq,
                    error,
                    disconnected,
                },
                State::Sending { seq: s, .. },
                Some(sn),
            ) if seq == s => {
                let first = MsgId { sender: sn, seq };
                let ev = Event::SendFailed {
                    first,
                    count: 1,
                    disconnected,
                    error,
                };
                r.record(&ev, t);
                r.finished = true;
                r.state = State::Idle;
            }
            (
                Line::Receiving(got),
                State::Receiving {
                    left,
                    inside: false,
                },
                None,
            ) if got as usize == r.done => {
                r.state = State::Receiving { left, inside: true };
                r.record(&Event::Receiving { got }, t);
            }
            (Line::Received(d), State::Receiving { left, inside: true }, None) => {
                r.record(&Event::Received(d), t);
                r.done += 1;
                r.state = match left.saturating_sub(1) {
                    0 => State::Idle,
                    left => State::Receiving {
                        left,
                        inside: false,
                    },
                };
            }
            (Line::Eos, State::Receiving { inside: true, .. }, None) => {
                r.record(&Event::Disconnected, t);
                r.finished = true;
                r.state = State::Idle;
            }
            (Line::CutOff(e), State::Receiving { inside: true, .. }, None) => {
                r.record(&Event::CutOff(e), t);
                r.finished = true;
                r.state = State::Idle;
            }
            (Line::RecvFailed(e), State::Receiving { inside: true, .. }, None) => {
                r.record(&Event::RecvFailed(e), t);
                r.finished = true;
                r.state = State::Idle;
            }
            (Line::Closed, State::Closing, None) => {
                let after = r.done as u32;
                r.record(&Event::Closed { after }, t);
                r.finished = true;
                r.state = State::Idle;
            }
            (line, _, _) => {
                let what = match &line {
                    Line::Receiving(g) if r.id == RoleId::Receiver => {
                        format!("\"receiving\" with got {g} (it has received {})", r.done)
                    }
                    Line::Sending(s) | Line::Sent(s) | Line::SendFailed { seq: s, .. }
                        if sender.is_some() =>
                    {
                        format!("{} for message {s}", kind(&line))
                    }
                    _ if sender.is_some() && is_receiver_line(&line) => {
                        format!("{} from a sender", kind(&line))
                    }
                    _ if sender.is_none() && is_sender_line(&line) => {
                        format!("{} from the receiver", kind(&line))
                    }
                    _ => kind(&line).to_string(),
                };
                return unexpected(r, &what);
            }
        }
        Ok(())
    }

    /// Sends the next command to every idle role whose turn it is.
    fn drive(&mut self, now: Instant) {
        for i in 0..self.list.len() {
            self.step(i, now);
        }
    }

    /// Sends role `i` its next command, if it is idle and its turn has come (the plan's
    /// pace may hold it back). A fault aimed at the operation holds the command at a
    /// rendezvous, for the nemesis. Also called while the nemesis steps a role towards its
    /// next operation: the role must get it, as a forked process goes on by itself.
    fn step(&mut self, i: usize, now: Instant) {
        self.pace(i, now);
        let r = &self.list[i];
        if r.state != State::Idle || r.held.is_some() || r.conn.is_none() || r.ended {
            return;
        }
        if r.next_at.is_some_and(|at| at > now) {
            return;
        }
        let plan = std::rc::Rc::clone(&self.plan);
        match r.id {
            RoleId::Sender(s) => self.drive_sender(i, s, &plan),
            RoleId::Receiver => self.drive_receiver(i, &plan),
        }
    }

    fn kill_as_planned(&mut self, i: usize) {
        let r = &mut self.list[i];
        r.record(
            &Event::Killing {
                acked: r.done as u32,
            },
            monotonic_ns(),
        );
        r.sigkilled = r
            .pidfd
            .as_ref()
            .is_some_and(|fd| pidfd_signal(fd, Signal::SIGKILL));
        r.state = State::Done;
    }

    fn exit(&mut self, i: usize) {
        self.list[i].state = State::Exiting;
        self.queue(i, &command::exit());
    }

    fn drive_sender(&mut self, i: usize, s: u32, plan: &Plan) {
        let Some(sp) = plan.senders.get(s as usize) else {
            return self.exit(i);
        };
        let done = self.list[i].done;
        if self.list[i].finished {
            return self.exit(i);
        }
        if sp.kill_after == Some(done) {
            return self.kill_as_planned(i);
        }
        let Some(&len) = sp.sizes.get(done) else {
            return self.exit(i);
        };
        let seq = done as u32;
        let data = self.list[i].data_mode.then(|| {
            let mut m = Vec::new();
            fill_message(self.seed, MsgId { sender: s, seq }, len, &mut m);
            m
        });
        let cmd = command::send(seq, len, s, self.seed, data.as_deref());
        self.list[i].state = State::Sending {
            seq,
            started: false,
        };
        let aimed = plan
            .faults
            .iter()
            .any(|f| f.victim == Victim::Sender(s as usize) && f.op == done);
        if aimed {
            let ev = Event::Rendezvous {
                from: seq,
                to: seq + 1,
            };
            self.list[i].record(&ev, monotonic_ns());
            self.list[i].held = Some(cmd);
        } else {
            self.queue(i, &cmd);
        }
    }

    fn drive_receiver(&mut self, i: usize, plan: &Plan) {
        let rp = &plan.receiver;
        let got = self.list[i].done;
        if self.list[i].finished {
            return self.exit(i);
        }
        if rp.kill_after == Some(got) {
            return self.kill_as_planned(i);
        }
        if rp.close_after == Some(got) {
            self.list[i].state = State::Closing;
            return self.queue(i, &command::close());
        }
        // Receive up to the next planned stop: a kill, a close, an aimed fault, a pause.
        let mut stop = usize::MAX;
        for s in [rp.kill_after, rp.close_after].into_iter().flatten() {
            if s > got {
                stop = stop.min(s);
            }
        }
        let mut aimed_now = false;
        for f in plan.faults.iter().filter(|f| f.victim == Victim::Receiver) {
            if f.op == got {
                aimed_now = true;
            } else if f.op > got {
                stop = stop.min(f.op);
            }
        }
        if let Pace::Sleep { every, .. } = rp.pace {
            let every = every.max(1) as usize;
            stop = stop.min((got / every + 1) * every);
        }
        let count = u32::try_from(stop - got)
            .unwrap_or(UNBOUNDED_COUNT)
            .min(UNBOUNDED_COUNT);
        let cmd = command::recv(count);
        self.list[i].state = State::Receiving {
            left: count,
            inside: false,
        };
        if aimed_now {
            let ev = Event::Rendezvous {
                from: got as u32,
                to: got as u32 + 1,
            };
            self.list[i].record(&ev, monotonic_ns());
            self.list[i].held = Some(cmd);
        } else {
            self.queue(i, &cmd);
        }
    }

    /// After an operation of role `i`: the plan's pace may hold its next command back.
    fn pace(&mut self, i: usize, now: Instant) {
        let r = &mut self.list[i];
        if r.done == self.counted[i] {
            return;
        }
        self.counted[i] = r.done;
        let pace = match r.id {
            RoleId::Receiver => self.plan.receiver.pace,
            RoleId::Sender(s) => self
                .plan
                .senders
                .get(s as usize)
                .map_or(Pace::Fast, |sp| sp.pace),
        };
        if let Pace::Sleep { every, micros } = pace {
            if every > 0 && r.done.is_multiple_of(every as usize) {
                r.next_at = Some(now + Duration::from_micros(micros.into()));
            }
        }
    }
}

fn kind(line: &Line) -> &'static str {
    match line {
        Line::Hello { .. } => "\"hello\"",
        Line::Sending(_) => "\"sending\"",
        Line::Sent(_) => "\"sent\"",
        Line::SendFailed { .. } => "\"send_failed\"",
        Line::Receiving(_) => "\"receiving\"",
        Line::Received(_) => "\"received\"",
        Line::Eos => "\"eos\"",
        Line::CutOff(_) => "\"cut_off\"",
        Line::RecvFailed(_) => "\"recv_failed\"",
        Line::Closed => "\"closed\"",
        Line::Bye => "\"bye\"",
    }
}

fn is_sender_line(l: &Line) -> bool {
    matches!(
        l,
        Line::Sending(_) | Line::Sent(_) | Line::SendFailed { .. }
    )
}

fn is_receiver_line(l: &Line) -> bool {
    matches!(
        l,
        Line::Receiving(_)
            | Line::Received(_)
            | Line::Eos
            | Line::CutOff(_)
            | Line::RecvFailed(_)
            | Line::Closed
    )
}

impl Children for Roles {
    fn pid(&self, child: usize) -> Option<Pid> {
        // Also once its connection has ended: a role stopped just before it exited must
        // still get its SIGCONT. Signals go through the pidfd, so never to a recycled pid.
        let r = self.list.get(child)?;
        r.pidfd.is_some().then(|| Pid::from_raw(r.pid))
    }

    fn send_signal(&mut self, child: usize, sig: Signal) -> bool {
        let Some(r) = self.list.get_mut(child) else {
            return false;
        };
        let sent = r.pidfd.as_ref().is_some_and(|fd| pidfd_signal(fd, sig));
        if sent && sig == Signal::SIGKILL {
            r.sigkilled = true;
        }
        sent
    }

    fn release(&mut self, child: usize) {
        if let Some(cmd) = self.list.get_mut(child).and_then(|r| r.held.take()) {
            self.queue(child, &cmd);
        }
    }

    fn drain(&mut self, child: usize) -> Vec<u8> {
        if child < self.list.len() {
            self.pump(child);
            // Stopped between two operations, it is let run a step further: it must have
            // its next command by then.
            self.step(child, Instant::now());
        }
        self.list
            .get(child)
            .and_then(|r| r.records.last().cloned())
            .unwrap_or_default()
    }
}

/// A process the harness started (one program, or one run of a split program's command).
#[derive(Debug)]
struct Started {
    child: Child,
    status: Option<std::process::ExitStatus>,
}

/// Everything a case owns outside this process; dropping it kills and reaps what is left
/// and removes the directory.
struct Session<'a> {
    t: &'a ExecTransport,
    root: tempfile::TempDir,
    work: std::path::PathBuf,
    case: String,
    listener: UnixListener,
    output: File,
    started: Vec<Started>,
    senders: usize,
    /// A recovery run (`IPCPROP_RECOVER=1`): only the receiver connects.
    recover: bool,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.kill_all();
    }
}

impl<'a> Session<'a> {
    fn new(t: &'a ExecTransport, senders: usize) -> Result<Session<'a>> {
        let root = tempfile::Builder::new()
            .prefix("ipcprop-exec-")
            .tempdir()
            .map_err(|e| Error::io("creating the case directory", e))?;
        let work = root.path().join("case");
        std::fs::create_dir(&work).map_err(|e| Error::io("creating the case directory", e))?;
        let sock = root.path().join("control.sock");
        if sock.as_os_str().len() > 100 {
            return Err(Error::config(
                "TMPDIR",
                format!(
                    "the control socket's path {} is too long for a Unix socket (108 bytes)",
                    sock.display()
                ),
            ));
        }
        // std's UnixListener is close-on-exec: the program connects by path, never inherits it.
        let listener =
            UnixListener::bind(&sock).map_err(|e| Error::io("binding the control socket", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("control socket", e))?;
        let output = File::options()
            .create(true)
            .read(true)
            .append(true)
            .open(root.path().join("output.log"))
            .map_err(|e| Error::io("creating the output log", e))?;
        let n = CASES.fetch_add(1, Ordering::Relaxed);
        Ok(Session {
            t,
            root,
            work,
            case: format!("ipcprop-{}-{n}", std::process::id()),
            listener,
            output,
            started: Vec::new(),
            senders,
            recover: false,
        })
    }

    fn control(&self) -> std::path::PathBuf {
        self.root.path().join("control.sock")
    }

    /// Starts `command` with the protocol's environment (and `role` in split mode).
    fn start(&mut self, command: &str, role: Option<RoleId>) -> Result<()> {
        let out = self
            .output
            .try_clone()
            .map_err(|e| Error::io("output log", e))?;
        let err = self
            .output
            .try_clone()
            .map_err(|e| Error::io("output log", e))?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .env("IPCPROP_PROTOCOL", wire::PROTOCOL_VERSION.to_string())
            .env("IPCPROP_CONTROL", self.control())
            .env("IPCPROP_SENDERS", self.senders.to_string())
            .env("IPCPROP_DIR", &self.work)
            .env("IPCPROP_CASE", &self.case)
            .env_remove("IPCPROP_ROLE")
            .env_remove("IPCPROP_INDEX")
            .env_remove("IPCPROP_RECOVER")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        if self.recover {
            cmd.env("IPCPROP_RECOVER", "1");
        }
        match role {
            Some(RoleId::Receiver) => {
                cmd.env("IPCPROP_ROLE", "receiver");
            }
            Some(RoleId::Sender(i)) => {
                cmd.env("IPCPROP_ROLE", "sender")
                    .env("IPCPROP_INDEX", i.to_string());
            }
            None => {}
        }
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // prctl system call, which is async-signal-safe and touches no memory shared with
        // the parent: the program dies with the thread that started it, so an interrupted
        // harness leaves no program behind.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(|e| {
            Error::Driver(Box::new(DriverError {
                program: command.to_string(),
                role: None,
                what: format!("could not start it: {e}"),
                line: None,
                output: String::new(),
            }))
        })?;
        self.started.push(Started {
            child,
            status: None,
        });
        Ok(())
    }

    /// The last lines the program wrote (at most 20, or 2000 bytes).
    fn output_tail(&self) -> String {
        let mut f = &self.output;
        let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
        let from = len.saturating_sub(2000);
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
        let text = String::from_utf8_lossy(&buf);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn driver_error(&self, role: Option<String>, what: String, line: Option<String>) -> Error {
        let what = if self.recover {
            format!("in the recovery run (IPCPROP_RECOVER=1): {what}")
        } else {
            what
        };
        Error::Driver(Box::new(DriverError {
            program: self.t.program.to_string(),
            role,
            what,
            line,
            output: self.output_tail(),
        }))
    }

    /// Reaps the started processes that have exited.
    fn poll_exits(&mut self) {
        for s in &mut self.started {
            if s.status.is_none() {
                if let Ok(Some(st)) = s.child.try_wait() {
                    s.status = Some(st);
                }
            }
        }
    }

    fn all_exited(&mut self) -> bool {
        self.poll_exits();
        self.started.iter().all(|s| s.status.is_some())
    }

    /// The processes of the programs' process groups, described (pid, name, state, and
    /// what the kernel says it waits in).
    fn still_running(&self) -> String {
        let groups: Vec<i32> = self.started.iter().map(|s| s.child.id() as i32).collect();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) S ppid pgrp ...": comm may hold spaces; fields follow the last ')'.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let pgrp = fields.get(2).and_then(|f| f.parse::<i32>().ok());
            if !pgrp.is_some_and(|g| groups.contains(&g)) {
                continue;
            }
            let (pid, comm) = head.split_once(" (").unwrap_or((head, "?"));
            let wchan = std::fs::read_to_string(entry.path().join("wchan")).unwrap_or_default();
            out.push(format!(
                "pid {pid} ({comm}) state {} in {}",
                fields.first().unwrap_or(&"?"),
                if wchan.is_empty() || wchan == "0" {
                    "?"
                } else {
                    &wchan
                }
            ));
        }
        if out.is_empty() {
            "no process of it is left (it exited meanwhile)".into()
        } else {
            out.join("; ")
        }
    }

    /// Kills every process of every program's process group, and reaps the programs.
    /// They are forgotten then: a later group may reuse a reaped leader's id.
    fn kill_all(&mut self) {
        for mut s in self.started.drain(..) {
            let pgid = Pid::from_raw(s.child.id() as i32);
            // The group outlives its leader while any member runs; ESRCH once all are gone.
            let _ = nix::sys::signal::killpg(pgid, Signal::SIGKILL);
            if s.status.is_none() {
                let _ = s.child.kill();
                let _ = s.child.wait();
            }
        }
    }

    /// Accepts connections until every role has said hello, starting the split program's
    /// senders once its receiver has.
    fn connect(&mut self, roles: &mut Roles) -> Result<()> {
        let deadline = Instant::now() + self.t.start_timeout;
        // Connections that have not said hello yet: the stream, its peer's pid, its bytes.
        let mut pending: Vec<(UnixStream, i32, Vec<u8>)> = Vec::new();
        let split_sender = match &self.t.program {
            Program::Split { sender, .. } => Some(sender.clone()),
            Program::One(_) => None,
        };
        let mut senders_started = split_sender.is_none() || self.recover;
        loop {
            if roles.list.iter().all(|r| r.conn.is_some()) {
                return Ok(());
            }
            let missing = || {
                roles
                    .list
                    .iter()
                    .filter(|r| r.conn.is_none())
                    .map(|r| r.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if crate::check::interrupt::requested().is_some() {
                return Err(Error::Driver(Box::new(DriverError {
                    program: self.t.program.to_string(),
                    role: None,
                    what: "interrupted while the roles connected".into(),
                    line: None,
                    output: String::new(),
                })));
            }
            if !senders_started && roles.list[0].conn.is_some() {
                if let Some(cmd) = &split_sender {
                    for s in 0..self.senders {
                        self.start(cmd, Some(RoleId::Sender(s as u32)))?;
                    }
                }
                senders_started = true;
            }
            self.poll_exits();
            // A program that has exited cannot connect any more (in split mode, each run
            // is one role: it must have said hello first).
            let gone = self.started.iter().find_map(|s| s.status);
            if let Some(status) = gone {
                let connected = roles.list.iter().filter(|r| r.conn.is_some()).count();
                if split_sender.is_none() || connected < self.started.len() {
                    let what = format!(
                        "it exited ({status}) before every role connected; still missing: {}",
                        missing()
                    );
                    return Err(self.driver_error(None, what, None));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let what = format!(
                    "{} never connected and said hello within the start timeout ({:?})",
                    missing(),
                    self.t.start_timeout
                );
                return Err(self.driver_error(None, what, None));
            }
            let wait = (deadline - now).min(TICK);
            let ready = {
                let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
                fds.extend(
                    pending
                        .iter()
                        .map(|(s, ..)| PollFd::new(s.as_fd(), PollFlags::POLLIN)),
                );
                let timeout = nix::sys::time::TimeSpec::from_duration(wait);
                match nix::poll::ppoll(&mut fds, Some(timeout), None) {
                    Ok(_) | Err(Errno::EINTR) => fds
                        .iter()
                        .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                        .collect::<Vec<_>>(),
                    Err(e) => return Err(Error::sys("poll", e)),
                }
            };
            if ready[0] {
                loop {
                    match self.listener.accept() {
                        Ok((s, _)) => {
                            let pid = peer_pid(&s);
                            s.set_nonblocking(true)
                                .map_err(|e| Error::io("control socket", e))?;
                            pending.push((s, pid, Vec::new()));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(Error::io("accepting a role", e)),
                    }
                }
            }
            let mut k = 0;
            while k < pending.len() {
                // Read what this connection has; a complete first line decides it.
                let mut buf = [0u8; 4096];
                let (s, peer, bytes) = &mut pending[k];
                let n = match s.read(&mut buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        k += 1;
                        continue;
                    }
                    Err(_) => 0,
                };
                if n == 0 {
                    let what = format!(
                        "a process (pid {peer}) connected and closed the connection without a \
                         hello"
                    );
                    return Err(self.driver_error(None, what, Some(cut(bytes))));
                }
                bytes.extend_from_slice(&buf[..n]);
                let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
                    if bytes.len() > MAX_LINE {
                        let what = format!(
                            "a process (pid {peer}) wrote more than {MAX_LINE} bytes without a \
                             line end"
                        );
                        return Err(self.driver_error(None, what, Some(cut(bytes))));
                    }
                    k += 1;
                    continue;
                };
                let (stream, peer, bytes) = pending.swap_remove(k);
                let line = &bytes[..nl];
                let rest = bytes[nl + 1..].to_vec();
                if let Err((role, what)) = self.hello(roles, stream, peer, line, rest) {
                    return Err(self.driver_error(role, what, Some(cut(line))));
                }
            }
        }
    }

    /// Takes a connection's first line: it must be a valid hello for a role not yet taken.
    fn hello(
        &self,
        roles: &mut Roles,
        stream: UnixStream,
        peer: i32,
        line: &[u8],
        rest: Vec<u8>,
    ) -> std::result::Result<(), (Option<String>, String)> {
        let from = |what: String| (None, format!("a process (pid {peer}): {what}"));
        let Stamped { line: parsed, t } = wire::parse(line).map_err(from)?;
        let Line::Hello { role, pid, data } = parsed else {
            return Err(from(format!(
                "its first line is {} where a hello must come first",
                kind(&parsed)
            )));
        };
        let name = Some(role.to_string());
        let i = match role {
            RoleId::Receiver => 0,
            RoleId::Sender(s) if (s as usize) < self.senders => s as usize + 1,
            RoleId::Sender(s) => {
                return Err((
                    name,
                    format!(
                        "sender index {s} is out of range: this case has {} sender(s) (IPCPROP_SENDERS), indexes 0 to {}",
                        self.senders,
                        self.senders - 1
                    ),
                ))
            }
        };
        if i >= roles.list.len() {
            return Err((
                name,
                "a sender's hello in a recovery run, where only the receiver connects".into(),
            ));
        }
        if roles.list[i].conn.is_some() {
            return Err((
                name,
                format!(
                    "a second hello for {role} (pid {peer}); pid {} said it first",
                    roles.list[i].pid
                ),
            ));
        }
        if pid != peer {
            return Err((
                name,
                format!(
                    "the hello says pid {pid}, but the process that connected is pid {peer}: \
                     each role must connect from its own process and give os.getpid()"
                ),
            ));
        }
        let now = monotonic_ns();
        if t > now || t < roles.start_ns {
            return Err((
                name,
                format!("\"t\" is {t}, not a CLOCK_MONOTONIC time of this case in nanoseconds"),
            ));
        }
        let pidfd = pidfd_open(pid)
            .map_err(|e| (name.clone(), format!("pidfd_open({pid}) failed: {e}")))?;
        let r = &mut roles.list[i];
        r.conn = Some(stream);
        r.pid = pid;
        r.pidfd = Some(pidfd);
        r.data_mode = data;
        r.last_t = t;
        r.last_seen = Instant::now();
        r.inbuf = rest;
        r.record(&Event::Ready, t);
        Ok(())
    }
}

/// The pid of the process at the other end of `s` (`SO_PEERCRED`), or 0.
fn peer_pid(s: &UnixStream) -> i32 {
    nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)
        .map(|c| c.pid())
        .unwrap_or(0)
}

/// Runs `plan` over the program of `t`.
pub(super) fn run(t: &ExecTransport, plan: &Plan, config: &RunConfig) -> Result<CaseOutcome> {
    // One case at a time per process: a case forked on another thread meanwhile would
    // inherit this case's control connections and keep them open.
    let _serial = lock_cases();
    let start = Instant::now();
    let caps = t.capabilities();
    let senders = plan.senders.len().max(1);
    let mut session = Session::new(t, senders)?;
    let mut roles = Roles {
        list: std::iter::once(RoleId::Receiver)
            .chain((0..senders as u32).map(RoleId::Sender))
            .map(Role::new)
            .collect(),
        seed: plan.seed,
        plan: std::rc::Rc::new(plan.clone()),
        counted: vec![0; senders + 1],
        start_ns: monotonic_ns(),
        error: None,
    };
    match &t.program {
        Program::One(cmd) => session.start(cmd, None)?,
        Program::Split { receiver, .. } => {
            let receiver = receiver.clone();
            session.start(&receiver, Some(RoleId::Receiver))?
        }
    }
    session.connect(&mut roles)?;
    // Lines that came with a hello.
    for i in 0..roles.list.len() {
        roles.lines(i);
    }
    let progress = config
        .stall
        .map_or(caps.progress_bound, |s| s.min(caps.progress_bound));
    let mut nemesis = Nemesis::new(plan, Some(progress));
    let deadline = start + config.timeout;
    let timed_out = drive(&mut session, &mut roles, &caps, &mut nemesis, deadline);
    if let Some((role, what, line)) = roles.error.take() {
        return Err(session.driver_error(role, what, line));
    }
    let mut late_exit = finish(&mut session, &mut roles, timed_out);
    let report = |r: &Role| ChildReport {
        name: r.name.clone(),
        pid: r.pid,
        records: r.records.clone(),
        record_times: r.times.clone(),
        end: r.end(),
    };
    let reports: Vec<ChildReport> = roles.list.iter().map(report).collect();
    // A persistent program whose receiver was killed: what it had not received must still
    // be there for a receiver started afresh.
    let killed = matches!(roles.list[0].end(), ChildEnd::Signaled(_));
    let recovered = if caps.persistent && killed && !timed_out {
        let (rx, late) = recover(&mut session, plan, &caps, config, roles.start_ns)?;
        late_exit = late_exit.or(late);
        Some(report(&rx))
    } else {
        None
    };
    let mut outcome = judge(
        t.name(),
        &caps,
        plan,
        reports,
        recovered,
        &nemesis,
        start.elapsed(),
    );
    outcome.violations.extend(late_exit);
    Ok(outcome)
}

/// Ends a run once its main loop has: lets go of every role the nemesis stopped, kills
/// what still runs (hung, if the loop `timed_out`), gives the program a moment to exit by
/// itself, and kills what is left of it. A program still running then is hung.
fn finish(session: &mut Session<'_>, roles: &mut Roles, timed_out: bool) -> Option<Violation> {
    // A role the nemesis stopped just as it ended (a pause not yet over when the last
    // role's connection closed) must not stay stopped: its program could never exit.
    for r in &roles.list {
        if let Some(fd) = &r.pidfd {
            pidfd_signal(fd, Signal::SIGCONT);
        }
    }
    // What still runs now is hung (or the case was interrupted): kill it.
    for r in &mut roles.list {
        if !r.ended {
            r.hung = timed_out;
            if let Some(fd) = &r.pidfd {
                pidfd_signal(fd, Signal::SIGKILL);
            }
        }
    }
    let mut late_exit = None;
    if !timed_out {
        // Every role ended: the program has a moment to exit by itself.
        let grace = session.t.exit_grace;
        let until = Instant::now() + grace;
        while !session.all_exited() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        if !session.all_exited() {
            late_exit = Some(Violation::Hung {
                process: if session.recover {
                    "program (recovery run)".into()
                } else {
                    "program".into()
                },
                doing: format!(
                    "still running {grace:?} after every role had ended: {}",
                    session.still_running()
                ),
            });
        }
    }
    session.kill_all();
    late_exit
}

/// The recovery run of a persistent program (docs/PROTOCOL.md, section 9): the program is
/// started again on the same `IPCPROP_DIR` with `IPCPROP_RECOVER=1`, only its receiver
/// connects, and it receives, with no fault, until it reports the end or stays quiet for
/// the quiet period. Returns that receiver (its times on the case's clock, `start_ns`) and
/// a violation if the program did not exit afterwards.
fn recover(
    session: &mut Session<'_>,
    plan: &Plan,
    caps: &crate::check::Capabilities,
    config: &RunConfig,
    start_ns: u64,
) -> Result<(Role, Option<Violation>)> {
    session.recover = true;
    let mut quiet_plan = plan.clone();
    quiet_plan.faults.clear();
    quiet_plan.receiver = crate::check::plan::ReceiverPlan {
        pace: Pace::Fast,
        close_after: None,
        kill_after: None,
        ..plan.receiver.clone()
    };
    let mut receiver = Role::new(RoleId::Receiver);
    receiver.name = "recovery receiver".into();
    let mut roles = Roles {
        list: vec![receiver],
        seed: plan.seed,
        plan: std::rc::Rc::new(quiet_plan),
        counted: vec![0],
        start_ns,
        error: None,
    };
    match &session.t.program {
        Program::One(cmd) => {
            let cmd = cmd.clone();
            session.start(&cmd, None)?
        }
        Program::Split { receiver, .. } => {
            let receiver = receiver.clone();
            session.start(&receiver, Some(RoleId::Receiver))?
        }
    }
    session.connect(&mut roles)?;
    roles.lines(0);
    // No sender: the receiver is ended by the harness once quiet, whatever the program
    // says of its end of stream.
    let quiet = crate::check::Capabilities {
        end_of_stream: false,
        ..caps.clone()
    };
    let progress = config
        .stall
        .map_or(caps.progress_bound, |s| s.min(caps.progress_bound));
    let mut nemesis = Nemesis::new(&roles.plan, Some(progress));
    let deadline = Instant::now() + config.timeout;
    let timed_out = drive(session, &mut roles, &quiet, &mut nemesis, deadline);
    if let Some((role, what, line)) = roles.error.take() {
        return Err(session.driver_error(role, what, line));
    }
    let late = finish(session, &mut roles, timed_out);
    let rx = roles
        .list
        .pop()
        .ok_or_else(|| Error::config("recovery", "no receiver"))?;
    Ok((rx, late))
}

/// The case's main loop: commands out, lines in, the nemesis in between, until every role
/// has ended. Returns true if it stopped at the deadline, on a stall, or on a stop request
/// (what still runs is then hung).
fn drive(
    session: &mut Session<'_>,
    roles: &mut Roles,
    caps: &crate::check::Capabilities,
    nemesis: &mut Nemesis,
    deadline: Instant,
) -> bool {
    let mut seen = vec![0usize; roles.list.len()];
    let mut last_activity = Instant::now();
    let mut senders_gone: Option<Instant> = None;
    let notify = |roles: &Roles, seen: &mut [usize], nemesis: &mut Nemesis| {
        let now = Instant::now();
        let mut any = false;
        for (i, r) in roles.list.iter().enumerate() {
            for rec in &r.records[seen[i]..] {
                nemesis.record(i, rec, now);
                any = true;
            }
            seen[i] = r.records.len();
        }
        any
    };
    loop {
        if roles.error.is_some() {
            return false;
        }
        if crate::check::interrupt::requested().is_some() {
            return true;
        }
        if notify(roles, &mut seen, nemesis) {
            last_activity = Instant::now();
        }
        {
            let mut ctl = Control::new(roles);
            nemesis.act(Instant::now(), &mut ctl);
            if ctl.signalled() {
                last_activity = Instant::now();
            }
        }
        if notify(roles, &mut seen, nemesis) {
            last_activity = Instant::now();
        }
        let now = Instant::now();
        roles.drive(now);
        if notify(roles, &mut seen, nemesis) {
            last_activity = Instant::now();
        }
        // No end of stream: once every sender is gone and the receiver has been quiet for
        // the quiet period, the harness ends it.
        if !caps.end_of_stream {
            if senders_gone.is_none() && roles.list[1..].iter().all(|r| r.ended) {
                senders_gone = Some(now);
            }
            let rx = &mut roles.list[0];
            if let Some(gone) = senders_gone {
                let quiet_from = gone.max(rx.last_seen);
                let receiving = matches!(rx.state, State::Receiving { .. });
                if !rx.ended && receiving && now >= quiet_from + caps.quiet_period {
                    rx.record(&Event::QuietEnd, monotonic_ns());
                    rx.ended_by_harness = true;
                    if let Some(fd) = &rx.pidfd {
                        pidfd_signal(fd, Signal::SIGKILL);
                    }
                    rx.state = State::Done;
                }
            }
        }
        if roles.list.iter().all(|r| r.ended) {
            return false;
        }
        if now >= deadline {
            return true;
        }
        let mut until = deadline.min(now + TICK);
        if let Some(stall) = nemesis.stall_limit() {
            if now >= last_activity + stall {
                return true;
            }
            until = until.min(last_activity + stall);
        }
        if let Some(wake) = nemesis.next_wake() {
            until = until.min(wake.max(now));
        }
        for r in &roles.list {
            if let (Some(at), State::Idle) = (r.next_at, r.state) {
                until = until.min(at.max(now));
            }
        }
        if let Some(gone) = senders_gone {
            let quiet_from = gone.max(roles.list[0].last_seen);
            until = until.min((quiet_from + caps.quiet_period).max(now));
        }
        let open: Vec<usize> = (0..roles.list.len())
            .filter(|&i| roles.list[i].conn.is_some())
            .collect();
        let ready: Vec<(bool, bool)> = {
            let mut fds: Vec<PollFd<'_>> = open
                .iter()
                .filter_map(|&i| {
                    let r = &roles.list[i];
                    let mut flags = PollFlags::POLLIN;
                    if !r.out.is_empty() {
                        flags |= PollFlags::POLLOUT;
                    }
                    r.conn.as_ref().map(|c| PollFd::new(c.as_fd(), flags))
                })
                .collect();
            fds.push(PollFd::new(session.listener.as_fd(), PollFlags::POLLIN));
            let timeout =
                nix::sys::time::TimeSpec::from_duration(until.saturating_duration_since(now));
            match nix::poll::ppoll(&mut fds, Some(timeout), None) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => fds
                    .iter()
                    .map(|f| {
                        let r = f.revents().unwrap_or(PollFlags::empty());
                        (
                            r.intersects(
                                PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR,
                            ),
                            r.contains(PollFlags::POLLOUT),
                        )
                    })
                    .collect(),
                Err(_) => return true,
            }
        };
        for (k, &i) in open.iter().enumerate() {
            if ready[k].1 {
                roles.flush(i);
            }
            if ready[k].0 {
                roles.pump(i);
            }
        }
        if ready.last().is_some_and(|r| r.0) {
            if let Ok((s, _)) = session.listener.accept() {
                let peer = peer_pid(&s);
                roles.fail(
                    None,
                    format!(
                        "a process (pid {peer}) connected to the control socket after every \
                         role had said hello: a role connected twice, or an extra process \
                         connected"
                    ),
                    None,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Roles {
        Roles {
            list: vec![Role::new(RoleId::Receiver), Role::new(RoleId::Sender(0))],
            seed: 0,
            plan: std::rc::Rc::new(Plan::simple(0, vec![1])),
            counted: vec![0, 0],
            start_ns: 0,
            error: None,
        }
    }

    /// A line up to the limit is read; one byte more is a driver error, as is a flood
    /// with no line end, which is refused once the limit is passed, not buffered forever.
    #[test]
    fn lines_are_taken_up_to_64_kib_and_refused_beyond() {
        let line = |error_len: usize| {
            let mut l = b"{\"ev\":\"send_failed\",\"seq\":0,\"t\":1,\"error\":\"".to_vec();
            let fill = error_len - l.len() - 2;
            l.extend(std::iter::repeat_n(b'e', fill));
            l.extend_from_slice(b"\"}");
            assert_eq!(l.len(), error_len);
            l.push(b'\n');
            l
        };
        let mut r = roles();
        r.list[1].state = State::Sending {
            seq: 0,
            started: true,
        };
        r.list[1].inbuf = line(MAX_LINE);
        r.lines(1);
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.list[1].records.len(), 1, "the line was not taken");
        let mut r = roles();
        r.list[1].state = State::Sending {
            seq: 0,
            started: true,
        };
        r.list[1].inbuf = line(MAX_LINE + 1);
        r.lines(1);
        let (role, what, _) = r.error.expect("a line over the limit was taken");
        assert_eq!(role.as_deref(), Some("sender 0"));
        assert!(what.contains("65537 bytes"), "{what}");
        let mut r = roles();
        r.list[0].inbuf = vec![b'x'; MAX_LINE + 1];
        r.lines(0);
        let (role, what, line) = r.error.expect("a flood was buffered");
        assert_eq!(role.as_deref(), Some("receiver"));
        assert!(what.contains("without a line end"), "{what}");
        assert!(line.unwrap().starts_with("xxxx"));
        let mut r = roles();
        r.list[0].inbuf = vec![b'x'; MAX_LINE];
        r.lines(0);
        assert!(
            r.error.is_none(),
            "a partial line at the limit is not a flood yet"
        );
    }

    /// `t` may equal the case's start and the role's previous line (clocks tick coarsely),
    /// never go before either; an answer must name the message the command named.
    #[test]
    fn times_stay_within_the_case_and_never_go_back() {
        let mut r = roles();
        let start = monotonic_ns() - 1_000_000;
        r.start_ns = start;
        let sending = |r: &mut Roles| {
            r.list[1].state = State::Sending {
                seq: 0,
                started: false,
            };
        };
        sending(&mut r);
        let line = |ev: &str, t: u64| format!("{{\"ev\":\"{ev}\",\"seq\":0,\"t\":{t}}}");
        let e = r
            .handle(1, line("sending", start - 1).as_bytes())
            .unwrap_err();
        assert!(e.contains("before the case started"), "{e}");
        r.handle(1, line("sending", start).as_bytes()).unwrap();
        r.handle(1, line("sent", start).as_bytes()).unwrap();
        assert_eq!(r.list[1].done, 1);
        sending(&mut r);
        r.list[1].last_t = start + 10;
        let e = r
            .handle(1, line("sending", start + 9).as_bytes())
            .unwrap_err();
        assert!(e.contains("goes backwards"), "{e}");
        let e = r
            .handle(
                1,
                format!(
                    "{{\"ev\":\"sending\",\"seq\":0,\"t\":{}}}",
                    monotonic_ns() + 1_000_000_000
                )
                .as_bytes(),
            )
            .unwrap_err();
        assert!(e.contains("later than the moment"), "{e}");
        // A failure of another message than the one being sent answers nothing.
        sending(&mut r);
        let failed = format!(
            "{{\"ev\":\"send_failed\",\"seq\":1,\"error\":\"x\",\"t\":{}}}",
            start + 20
        );
        let e = r.handle(1, failed.as_bytes()).unwrap_err();
        assert!(
            e.contains("message 1") && e.contains("answers no command"),
            "{e}"
        );
        let failed = failed.replace("\"seq\":1", "\"seq\":0");
        r.handle(1, failed.as_bytes()).unwrap();
        assert!(r.list[1].finished);
    }

    /// An unexpected line is named precisely: which message, which role it does not
    /// belong to, and what the role was asked.
    #[test]
    fn an_unexpected_line_says_what_was_wrong_with_it() {
        let now = || monotonic_ns();
        let mut r = roles();
        r.list[0].state = State::Receiving {
            left: 2,
            inside: false,
        };
        let e = r
            .handle(
                0,
                format!("{{\"ev\":\"receiving\",\"got\":5,\"t\":{}}}", now()).as_bytes(),
            )
            .unwrap_err();
        assert!(
            e.contains("\"receiving\" with got 5 (it has received 0)")
                && e.contains("told to receive 2 more message(s)"),
            "{e}"
        );
        let e = r
            .handle(
                0,
                format!("{{\"ev\":\"sent\",\"seq\":0,\"t\":{}}}", now()).as_bytes(),
            )
            .unwrap_err();
        assert!(
            e.starts_with("\"sent\" from the receiver answers no command"),
            "{e}"
        );
        let e = r
            .handle(
                1,
                format!("{{\"ev\":\"receiving\",\"got\":0,\"t\":{}}}", now()).as_bytes(),
            )
            .unwrap_err();
        assert!(
            e.starts_with("\"receiving\" from a sender answers no command"),
            "{e}"
        );
        let e = r
            .handle(1, format!("{{\"ev\":\"eos\",\"t\":{}}}", now()).as_bytes())
            .unwrap_err();
        assert!(e.starts_with("\"eos\" from a sender"), "{e}");
        let e = r
            .handle(
                1,
                format!("{{\"ev\":\"sent\",\"seq\":7,\"t\":{}}}", now()).as_bytes(),
            )
            .unwrap_err();
        assert!(
            e.starts_with("\"sent\" for message 7 answers no command: no command was pending"),
            "{e}"
        );
        let e = r
            .handle(0, format!("{{\"ev\":\"bye\",\"t\":{}}}", now()).as_bytes())
            .unwrap_err();
        assert!(e.starts_with("\"bye\" answers no command"), "{e}");
        let e = r
            .handle(0, format!("{{\"ev\":\"eos\",\"t\":{}}}", now()).as_bytes())
            .unwrap_err();
        assert!(e.starts_with("\"eos\" answers no command"), "{e}");
    }

    /// Role `i` of `r` connected to the returned end, which reads its commands.
    fn connect(r: &mut Roles, i: usize) -> UnixStream {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        r.list[i].conn = Some(a);
        b
    }

    /// The commands written so far.
    fn commands(b: &mut UnixStream) -> Vec<serde_json::Value> {
        let mut buf = vec![0u8; 1 << 16];
        let n = b.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn with_plan(plan: Plan) -> Roles {
        let n = plan.senders.len();
        let mut r = roles();
        r.list = std::iter::once(RoleId::Receiver)
            .chain((0..n as u32).map(RoleId::Sender))
            .map(Role::new)
            .collect();
        r.counted = vec![0; n + 1];
        r.plan = std::rc::Rc::new(plan);
        r
    }

    fn pause(victim: Victim, op: usize) -> crate::check::plan::Fault {
        crate::check::plan::Fault {
            victim,
            kind: crate::check::plan::FaultKind::Pause { micros: 10 },
            op,
            delay_micros: 0,
        }
    }

    /// The receiver is given messages up to the plan's next stop (a fault aimed at a
    /// receive, a close, a kill) and no further; an aimed receive waits for the nemesis.
    #[test]
    fn the_receiver_is_given_messages_up_to_the_next_planned_stop() {
        let mut plan = Plan::simple(1, vec![1; 9]);
        plan.receiver.close_after = Some(5);
        plan.faults = vec![pause(Victim::Receiver, 3), pause(Victim::Sender(0), 1)];
        let mut r = with_plan(plan);
        let mut b = connect(&mut r, 0);
        let now = Instant::now();
        r.step(0, now);
        assert_eq!(
            commands(&mut b),
            vec![serde_json::json!({"op": "recv", "count": 3})]
        );
        r.list[0].done = 3;
        r.list[0].state = State::Idle;
        r.step(0, now);
        assert!(commands(&mut b).is_empty(), "an aimed receive was not held");
        assert!(matches!(
            Event::decode(r.list[0].records.last().unwrap()),
            Some(Event::Rendezvous { from: 3, to: 4 })
        ));
        Control::new(&mut r).release(0);
        assert_eq!(
            commands(&mut b),
            vec![serde_json::json!({"op": "recv", "count": 2})]
        );
        r.list[0].done = 5;
        r.list[0].state = State::Idle;
        r.step(0, now);
        assert_eq!(commands(&mut b), vec![serde_json::json!({"op": "close"})]);
        // A kill planned after 2 messages: 2 are asked for, then the kill.
        let mut plan = Plan::simple(1, vec![1; 9]);
        plan.receiver.kill_after = Some(2);
        let mut r = with_plan(plan);
        let mut b = connect(&mut r, 0);
        r.step(0, now);
        assert_eq!(
            commands(&mut b),
            vec![serde_json::json!({"op": "recv", "count": 2})]
        );
        r.list[0].done = 2;
        r.list[0].state = State::Idle;
        r.step(0, now);
        assert_eq!(r.list[0].state, State::Done);
        assert!(matches!(
            Event::decode(r.list[0].records.last().unwrap()),
            Some(Event::Killing { acked: 2 })
        ));
        // Paced every 3 messages: given up to the next multiple of 3.
        let mut plan = Plan::simple(1, vec![1; 9]);
        plan.receiver.pace = Pace::Sleep {
            every: 3,
            micros: 1,
        };
        let mut r = with_plan(plan);
        let mut b = connect(&mut r, 0);
        r.list[0].done = 4;
        r.counted[0] = 4;
        r.step(0, now);
        assert_eq!(
            commands(&mut b),
            vec![serde_json::json!({"op": "recv", "count": 2})]
        );
        // Nothing planned: as many as come.
        let mut r = with_plan(Plan::simple(1, vec![1; 9]));
        let mut b = connect(&mut r, 0);
        r.step(0, now);
        assert_eq!(
            commands(&mut b),
            vec![serde_json::json!({"op": "recv", "count": UNBOUNDED_COUNT})]
        );
    }

    /// A sender's send is held for the nemesis only where a fault aims at it, and the
    /// plan's pace holds its next command back.
    #[test]
    fn a_send_is_held_only_where_a_fault_aims_and_paced_as_planned() {
        let mut plan = Plan::simple(1, vec![1, 2, 3]);
        plan.senders.push(plan.senders[0].clone());
        plan.faults = vec![pause(Victim::Sender(0), 2), pause(Victim::Sender(1), 0)];
        let mut r = with_plan(plan);
        let mut b = connect(&mut r, 1);
        let now = Instant::now();
        r.step(1, now);
        let c = commands(&mut b);
        assert_eq!(c.len(), 1, "sender 0's first send was held: {c:?}");
        assert_eq!(
            (c[0]["op"].as_str(), c[0]["seq"].as_u64()),
            (Some("send"), Some(0))
        );
        r.list[1].done = 2;
        r.list[1].state = State::Idle;
        r.step(1, now);
        assert!(commands(&mut b).is_empty(), "the aimed send was not held");
        Control::new(&mut r).release(1);
        assert_eq!(commands(&mut b)[0]["seq"].as_u64(), Some(2));
        // Paced every 2 messages: after the first, the next command comes at once; after
        // the second, it waits.
        let mut plan = Plan::simple(1, vec![1, 2, 3]);
        plan.senders[0].pace = Pace::Sleep {
            every: 2,
            micros: 1_000_000,
        };
        let mut r = with_plan(plan);
        let mut b = connect(&mut r, 1);
        r.step(1, now);
        r.list[1].done = 1;
        r.list[1].state = State::Idle;
        r.step(1, now);
        assert_eq!(
            commands(&mut b).len(),
            2,
            "paced after a message it should not be"
        );
        r.list[1].done = 2;
        r.list[1].state = State::Idle;
        r.step(1, now);
        assert!(
            commands(&mut b).is_empty(),
            "not paced after its second message"
        );
        // Paced: after each message, a second's sleep before the next command.
        let mut plan = Plan::simple(1, vec![1, 2, 3]);
        plan.senders[0].pace = Pace::Sleep {
            every: 1,
            micros: 1_000_000,
        };
        let mut r = with_plan(plan);
        let mut b = connect(&mut r, 1);
        r.step(1, now);
        assert_eq!(commands(&mut b).len(), 1);
        r.list[1].done = 1;
        r.list[1].state = State::Idle;
        r.step(1, now);
        assert!(commands(&mut b).is_empty(), "the pace was not kept");
        r.step(1, now + Duration::from_millis(999));
        assert!(commands(&mut b).is_empty(), "the pace was cut short");
        r.step(1, now + Duration::from_secs(1));
        assert_eq!(commands(&mut b)[0]["seq"].as_u64(), Some(1));
    }

    /// A hello is taken only for a sender index below the case's count, from the process
    /// that connected, stamped within the case.
    #[test]
    fn a_hello_is_checked_against_the_case() {
        let t = ExecTransport::new("true");
        let session = Session::new(&t, 2).unwrap();
        let me = std::process::id() as i32;
        let hello = |roles: &mut Roles, index: u32, pid: i32, t: u64| {
            let (a, _b) = UnixStream::pair().unwrap();
            let line = format!(
                "{{\"hello\":\"sender\",\"index\":{index},\"pid\":{pid},\"protocol\":1,\"t\":{t}}}"
            );
            session.hello(roles, a, me, line.as_bytes(), Vec::new())
        };
        let fresh = || {
            let mut r = roles();
            r.list.push(Role::new(RoleId::Sender(1)));
            r.counted.push(0);
            r.start_ns = monotonic_ns() - 1_000_000;
            r
        };
        let mut r = fresh();
        let start = r.start_ns;
        let (role, e) = hello(&mut r, 2, me, start).unwrap_err();
        assert_eq!(role.as_deref(), Some("sender 2"));
        assert!(
            e.contains("out of range") && e.contains("indexes 0 to 1"),
            "{e}"
        );
        let (_, e) = hello(&mut r, 1, me + 1, start).unwrap_err();
        assert!(e.contains("the hello says pid"), "{e}");
        let (_, e) = hello(&mut r, 1, me, start - 1).unwrap_err();
        assert!(e.contains("not a CLOCK_MONOTONIC time of this case"), "{e}");
        let (_, e) = hello(&mut r, 1, me, monotonic_ns() + 1_000_000_000).unwrap_err();
        assert!(e.contains("not a CLOCK_MONOTONIC time of this case"), "{e}");
        // At the very start of the case, and now: both in the case.
        hello(&mut r, 1, me, start).unwrap();
        assert_eq!(r.list[2].pid, me);
        let (_, e) = hello(&mut r, 1, me, monotonic_ns()).unwrap_err();
        assert!(e.contains("a second hello for sender 1"), "{e}");
        hello(&mut r, 0, me, monotonic_ns()).unwrap();
    }

    /// A role stopped by the nemesis just as it said bye and closed its connection must
    /// still get its SIGCONT (a role left stopped keeps the program from exiting).
    #[test]
    fn an_ended_role_can_still_be_signalled_through_its_pidfd() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let mut role = Role::new(RoleId::Sender(0));
        role.pid = child.id() as i32;
        role.pidfd = Some(pidfd_open(role.pid).unwrap());
        role.ended = true;
        let mut roles = Roles {
            list: vec![role],
            seed: 0,
            plan: std::rc::Rc::new(Plan::simple(0, Vec::new())),
            counted: vec![0],
            start_ns: 0,
            error: None,
        };
        let mut ctl = Control::new(&mut roles);
        assert!(
            ctl.freeze(0, Duration::from_secs(5)).is_some(),
            "not stopped"
        );
        assert!(
            ctl.signal(0, Signal::SIGCONT),
            "SIGCONT not sent to an ended role"
        );
        assert!(ctl.signal(0, Signal::SIGKILL));
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(roles.list[0].sigkilled);
        // Gone and reaped: the pidfd refuses, nothing reaches a recycled pid.
        assert!(!Control::new(&mut roles).signal(0, Signal::SIGKILL));
    }
}
