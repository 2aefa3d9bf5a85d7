//! [`Transport`] adapters for the transports of this crate.

use crate::check::broken::{Broken, Defect};
use crate::check::plan::{Capabilities, Plan};
use crate::check::Transport;
use crate::check::{CampaignConfig, CampaignReport, CaseOutcome, RunConfig};
use crate::error::Result;
use crate::frame::HEADER_LEN;
use crate::pipe::fault::{Fault, FaultSchedule, FaultyIo};
use crate::pipe::{
    self, PipeConfig, PipeIo, PipeReceiver, PipeSender, MAX_SHARED_PAYLOAD, PIPE_BUF,
};
use crate::queue::{self, QueueConfig, QueueReceiver, QueueSender};
use crate::shm::{self, RingConfig, RingReceiver, RingSender};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// Sizes where a pipe channel changes behaviour: a frame filling `PIPE_BUF` exactly (the
/// atomicity limit), and a frame filling the default 64 KiB pipe buffer; with neighbours.
fn pipe_boundaries(max: usize) -> Vec<usize> {
    let pipe_capacity = 64 * 1024;
    let mut v = Vec::new();
    for edge in [
        MAX_SHARED_PAYLOAD,
        PIPE_BUF,
        pipe_capacity - HEADER_LEN,
        pipe_capacity,
        max,
    ] {
        v.extend([edge.saturating_sub(1), edge, edge.saturating_add(1)]);
    }
    v.retain(|&s| s <= max);
    v
}

/// [`Transport::forge_header`] for a stream of this crate's frames (a pipe, or a socket
/// carrying the pipe channel's code): writes a header claiming `claimed_len` bytes (its
/// checksum that of the four length bytes alone), then at most 16 bytes of payload.
/// `Ok(false)` if the length field, a `u32`, cannot hold the claim.
pub(crate) fn forge_frame_header<I: PipeIo>(
    tx: &mut PipeSender<I>,
    claimed_len: u64,
) -> Result<bool> {
    let Ok(len) = u32::try_from(claimed_len) else {
        return Ok(false);
    };
    let len_bytes = len.to_le_bytes();
    let mut forged = Vec::with_capacity(HEADER_LEN + 16);
    forged.extend_from_slice(&len_bytes);
    forged.extend_from_slice(&crc32c::crc32c(&len_bytes).to_le_bytes());
    let payload = b"forged payload..";
    forged.extend_from_slice(&payload[..payload.len().min(len as usize)]);
    tx.write_raw(&forged)?;
    Ok(true)
}

/// The pipe channel ([`crate::pipe`]) as a harness transport. With several senders it makes
/// the channel in shared mode.
#[derive(Debug, Clone, Default)]
pub struct PipeTransport {
    /// The configuration of every pair made.
    pub config: PipeConfig,
}

impl Transport for PipeTransport {
    type Sender = PipeSender;
    type Receiver = PipeReceiver;

    fn name(&self) -> String {
        "pipe".into()
    }

    fn capabilities(&self) -> Capabilities {
        let max = self.config.max_message_len();
        Capabilities {
            multi_sender: Some(MAX_SHARED_PAYLOAD.min(max)),
            boundary_sizes: pipe_boundaries(max),
            ..Capabilities::new(max)
        }
    }

    fn pair(&self, senders: usize) -> Result<(PipeSender, PipeReceiver)> {
        pipe::channel_with(self.config.with_shared_senders(senders > 1))
    }

    fn forge_header(&self, tx: &mut PipeSender, claimed_len: u64) -> Result<bool> {
        forge_frame_header(tx, claimed_len)
    }
}

/// The pipe channel with faults injected between both ends and the kernel: short reads and
/// writes, `EINTR`, `EAGAIN` on `schedule` (writes kept whole when several senders share
/// the pipe, as the kernel keeps them).
#[derive(Debug, Clone)]
pub struct FaultyPipeTransport {
    /// The configuration of every pair made.
    pub config: PipeConfig,
    /// The faults applied to each end's calls.
    pub schedule: FaultSchedule,
}

impl FaultyPipeTransport {
    /// A faulty pipe with the default configuration.
    pub fn new(schedule: FaultSchedule) -> Self {
        FaultyPipeTransport {
            config: PipeConfig::default(),
            schedule,
        }
    }
}

impl Transport for FaultyPipeTransport {
    type Sender = PipeSender<FaultyIo<OwnedFd>>;
    type Receiver = PipeReceiver<FaultyIo<OwnedFd>>;

    fn name(&self) -> String {
        "pipe-faults".into()
    }

    fn capabilities(&self) -> Capabilities {
        PipeTransport {
            config: self.config,
        }
        .capabilities()
    }

    fn pair(&self, senders: usize) -> Result<(Self::Sender, Self::Receiver)> {
        let config = self.config.with_shared_senders(senders > 1);
        let (tx, rx) = pipe::channel_with(config)?;
        let (w, r) = (tx.into_inner(), rx.into_inner());
        let write_schedule = if senders > 1 {
            self.schedule.clone().with_atomic_writes()
        } else {
            self.schedule.clone()
        };
        Ok((
            PipeSender::with_io(FaultyIo::new(w, write_schedule), config),
            PipeReceiver::with_io(FaultyIo::new(r, self.schedule.clone()), config),
        ))
    }

    fn forge_header(&self, tx: &mut Self::Sender, claimed_len: u64) -> Result<bool> {
        forge_frame_header(tx, claimed_len)
    }
}

/// Sizes where a ring of `capacity` bytes changes behaviour: records that tile a lap exactly
/// (so the next lands exactly on the wrap point), records one byte either side of that,
/// and the maximum (half the capacity, less the 8-byte record header) with its neighbours.
fn ring_boundaries(capacity: usize) -> Vec<usize> {
    let max = RingConfig::new().with_capacity(capacity).max_message_len();
    let mut v = vec![0, 1, 7, 8, 9];
    for tile in [capacity / 8, capacity / 4, capacity / 2] {
        let payload = tile - 8; // a record of exactly `tile` bytes
        v.extend([payload - 1, payload, payload + 1]);
    }
    v.extend([max - 1, max]);
    v.retain(|&s| s <= max);
    v.sort_unstable();
    v.dedup();
    v
}

/// The shared-memory ring ([`crate::shm`]) as a harness transport: one sender only.
#[derive(Debug, Clone, Default)]
pub struct RingTransport {
    /// The configuration of every pair made.
    pub config: RingConfig,
}

impl Transport for RingTransport {
    type Sender = RingSender;
    type Receiver = RingReceiver;

    fn name(&self) -> String {
        "ring".into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            multi_sender: None,
            boundary_sizes: ring_boundaries(self.config.capacity()),
            ..Capabilities::new(self.config.max_message_len())
        }
    }

    fn pair(&self, _senders: usize) -> Result<(RingSender, RingReceiver)> {
        shm::channel_with(self.config)
    }
}

/// The file queue ([`crate::queue`]) as a harness transport: each pair gets a fresh queue
/// file in a private temporary directory; the file is unlinked as soon as both ends hold it
/// (they reach it through their descriptors), and the directory is removed when the
/// transport is dropped, so nothing is left behind, even by killed processes.
#[derive(Debug)]
pub struct QueueTransport {
    /// The configuration of every queue made.
    pub config: QueueConfig,
    /// Removed when the transport is dropped, in the process that made it: a forked child
    /// drops its copy only if it returns, and children leave with `_exit`.
    dir: tempfile::TempDir,
    made: AtomicU64,
}

impl QueueTransport {
    /// A queue transport with messages up to 1 MiB (plans stay small) and no fsync.
    pub fn new() -> Result<Self> {
        Self::with_config(QueueConfig::new().with_max_message_len(1024 * 1024))
    }

    /// A queue transport with `config`.
    pub fn with_config(config: QueueConfig) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ipcprop-queue-")
            .tempdir()
            .map_err(|e| crate::Error::Io {
                op: "create queue directory",
                source: e,
            })?;
        Ok(QueueTransport {
            config,
            dir,
            made: AtomicU64::new(0),
        })
    }
}

/// Sizes where the file queue changes behaviour: records that fill 8-byte alignment exactly,
/// the 64 KiB read chunk of the recovery scan, and the maximum.
fn queue_boundaries(max: usize) -> Vec<usize> {
    let mut v = vec![0, 1, 7, 8, 9, 4080, 4096];
    for edge in [64 * 1024 - 16, 64 * 1024, max] {
        v.extend([edge.saturating_sub(1), edge, edge + 1]);
    }
    v.retain(|&s| s <= max);
    v
}

impl Transport for QueueTransport {
    type Sender = QueueSender;
    type Receiver = QueueReceiver;

    fn name(&self) -> String {
        "queue".into()
    }

    fn capabilities(&self) -> Capabilities {
        let max = self.config.max_message_len();
        Capabilities {
            multi_sender: Some(max),
            boundary_sizes: queue_boundaries(max),
            persistent: true,
            ..Capabilities::new(max)
        }
    }

    fn reattach(&self, rx: &QueueReceiver) -> Result<Option<QueueReceiver>> {
        rx.reattach().map(Some)
    }

    /// The queue file `dir/queue.q`, opened (and made if it is not there): kept, so that a
    /// recovery run opens it again.
    fn pair_in(
        &self,
        dir: &std::path::Path,
        _senders: usize,
    ) -> Result<Option<(QueueSender, QueueReceiver)>> {
        queue::channel(dir.join("queue.q"), self.config).map(Some)
    }

    fn pair(&self, _senders: usize) -> Result<(QueueSender, QueueReceiver)> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        // The process id too: the workers of a campaign ([`CampaignConfig::jobs`]) are
        // forked copies of one transport, each with its own count.
        let path = self
            .dir
            .path()
            .join(format!("{}-{n}.q", std::process::id()));
        let pair = queue::channel(&path, self.config)?;
        std::fs::remove_file(&path).map_err(|e| crate::Error::Io {
            op: "unlink queue file",
            source: e,
        })?;
        Ok(pair)
    }
}

/// A transport of this crate, by name: the names `ipcprop check --transport` accepts, and
/// every name a report of one of them prints (so a saved failure names a transport that
/// can run it again).
///
/// ```
/// use ipcprop::check::builtin::Builtin;
/// use ipcprop::check::broken::Defect;
///
/// assert_eq!("ring".parse(), Ok(Builtin::Ring));
/// // What a report of the broken pipe prints is accepted back.
/// let drop = Builtin::Broken(Defect::Drop(2));
/// assert_eq!(drop.name(), "pipe+drop(2)");
/// assert_eq!("pipe+drop(2)".parse(), Ok(drop));
/// assert_eq!("broken-drop".parse(), Ok(drop));
/// assert!("pipe+nonsense".parse::<Builtin>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `pipe`: the framed pipe channel ([`PipeTransport`]).
    Pipe,
    /// `pipe-faults`: the pipe channel with short reads and writes, `EINTR` and `EAGAIN`
    /// injected ([`FaultyPipeTransport`]).
    PipeFaults,
    /// `ring`: the shared-memory ring, 4 KiB so it fills and wraps constantly
    /// ([`RingTransport`]).
    Ring,
    /// `queue`: the file queue as a channel, a fresh unlinked file per case
    /// ([`QueueTransport`]).
    Queue,
    /// `pipe+<defect>` (as [`Broken`] names it, `pipe+drop(2)` say): the pipe with one of
    /// the defects of [`Defect::ALL`], to see what a failure looks like. `broken-drop` is
    /// `pipe+drop(2)`.
    Broken(Defect),
}

/// A transport name [`Builtin`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {name:?} (known: {})", Builtin::names().join(", "))]
pub struct UnknownTransport {
    /// The name given.
    pub name: String,
}

/// The schedule of `pipe-faults`: short reads and writes of 1, 7 and 4093 bytes, `EINTR`
/// and `EAGAIN`, in turn.
fn pipe_faults_schedule() -> FaultSchedule {
    FaultSchedule::new(vec![
        Fault::Short(1),
        Fault::Pass,
        Fault::Interrupted,
        Fault::Short(7),
        Fault::WouldBlock,
        Fault::Short(4093),
    ])
}

/// Runs `$body` with `$t` bound to a reference to the transport `$which` names.
macro_rules! with_builtin {
    ($which:expr, $t:ident => $body:expr) => {
        match $which {
            Builtin::Pipe => {
                let $t = &PipeTransport::default();
                $body
            }
            Builtin::PipeFaults => {
                let $t = &FaultyPipeTransport::new(pipe_faults_schedule());
                $body
            }
            Builtin::Ring => {
                let $t = &RingTransport {
                    config: RingConfig::new().with_capacity(4096),
                };
                $body
            }
            Builtin::Queue => {
                let $t = &QueueTransport::new()?;
                $body
            }
            Builtin::Broken(d) => {
                let $t = &Broken::new(PipeTransport::default(), d);
                $body
            }
        }
    };
}

impl Builtin {
    /// What `ipcprop check` runs when no transport is named: every correct one.
    pub const DEFAULT: [Builtin; 4] = [
        Builtin::Pipe,
        Builtin::PipeFaults,
        Builtin::Ring,
        Builtin::Queue,
    ];

    /// Every transport: the correct ones, then the pipe with each defect.
    pub fn all() -> Vec<Builtin> {
        let mut v = Builtin::DEFAULT.to_vec();
        v.extend(Defect::ALL.iter().map(|&d| Builtin::Broken(d)));
        v
    }

    /// Every name [`Builtin::parse`] accepts.
    pub fn names() -> Vec<String> {
        let mut v: Vec<String> = Builtin::all().iter().map(Builtin::name).collect();
        v.insert(Builtin::DEFAULT.len(), "broken-drop".into());
        v
    }

    /// The transport's name, as its reports print it ([`Transport::name`]).
    pub fn name(&self) -> String {
        match self {
            Builtin::Pipe => "pipe".into(),
            Builtin::PipeFaults => "pipe-faults".into(),
            Builtin::Ring => "ring".into(),
            Builtin::Queue => "queue".into(),
            Builtin::Broken(d) => format!("pipe+{d:?}").to_lowercase(),
        }
    }

    /// The transport named `name` (any of [`Builtin::names`]).
    pub fn parse(name: &str) -> std::result::Result<Builtin, UnknownTransport> {
        if name == "broken-drop" {
            return Ok(Builtin::Broken(Defect::Drop(2)));
        }
        Builtin::all()
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| UnknownTransport { name: name.into() })
    }

    /// Runs a campaign over this transport ([`crate::check::campaign()`]).
    pub fn campaign(
        &self,
        config: &CampaignConfig,
        on_case: &mut dyn FnMut(&CaseOutcome),
    ) -> Result<CampaignReport> {
        with_builtin!(*self, t => crate::check::campaign(t, config, on_case))
    }

    /// The transport's capabilities ([`Transport::capabilities`]). `Err` only if the
    /// transport cannot be made (the queue's temporary directory).
    pub fn capabilities(&self) -> Result<Capabilities> {
        with_builtin!(*self, t => Ok(t.capabilities()))
    }

    /// Serves this transport as a program under test over the driver protocol
    /// ([`crate::check::exec::client::serve`]): what `ipcprop serve-role` runs.
    pub fn serve_role(&self) -> Result<()> {
        with_builtin!(*self, t => crate::check::exec::client::serve(t))
    }

    /// Runs one plan over this transport ([`crate::check::run_case`]).
    pub fn run_case(&self, plan: &Plan, run: &RunConfig) -> Result<CaseOutcome> {
        with_builtin!(*self, t => crate::check::run_case(t, plan, run))
    }
}

impl std::str::FromStr for Builtin {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> std::result::Result<Builtin, UnknownTransport> {
        Builtin::parse(s)
    }
}

impl std::fmt::Display for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_a_report_prints_parses_back() {
        for b in Builtin::all() {
            let reported = with_builtin_name(b);
            assert_eq!(Builtin::parse(&reported), Ok(b), "{reported}");
            assert_eq!(b.name(), reported);
        }
        assert_eq!(Builtin::names().len(), Builtin::all().len() + 1);
    }

    /// The name the transport itself reports.
    fn with_builtin_name(b: Builtin) -> String {
        let f = || -> Result<String> { with_builtin!(b, t => Ok(t.name())) };
        f().unwrap()
    }
}
