//! [`Transport`] adapters for the transports of this crate.

use crate::check::plan::Capabilities;
use crate::check::Transport;
use crate::error::Result;
use crate::frame::HEADER_LEN;
use crate::pipe::fault::{FaultSchedule, FaultyIo};
use crate::pipe::{self, PipeConfig, PipeReceiver, PipeSender, MAX_SHARED_PAYLOAD, PIPE_BUF};
use crate::shm::{self, RingConfig, RingReceiver, RingSender};
use std::os::fd::OwnedFd;

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
        let max = self.config.frame_max();
        Capabilities {
            max_message_len: max,
            multi_sender: Some(MAX_SHARED_PAYLOAD.min(max)),
            boundary_sizes: pipe_boundaries(max),
        }
    }

    fn pair(&self, senders: usize) -> Result<(PipeSender, PipeReceiver)> {
        pipe::channel_with(self.config.shared_senders(senders > 1))
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
        let config = self.config.shared_senders(senders > 1);
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
}

/// Sizes where a ring of `capacity` bytes changes behaviour: records that tile a lap exactly
/// (so the next lands exactly on the wrap point), records one byte either side of that,
/// and the maximum (half the capacity, less the 8-byte record header) with its neighbours.
fn ring_boundaries(capacity: usize) -> Vec<usize> {
    let max = RingConfig::new().capacity(capacity).max_message_len();
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
            max_message_len: self.config.max_message_len(),
            multi_sender: None,
            boundary_sizes: ring_boundaries(self.config.get_capacity()),
        }
    }

    fn pair(&self, _senders: usize) -> Result<(RingSender, RingReceiver)> {
        shm::channel_with(self.config)
    }
}
