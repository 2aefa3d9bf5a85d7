//! Validating a transport you wrote yourself: a complete example.
//!
//! `LinesTransport` below is what a user might write in an afternoon: messages over a
//! `UnixStream` socketpair, each as a 4-byte length and the bytes. We implement ipcprop's
//! `Sender`, `Receiver` and `Transport` for it, then run the conformance battery over it
//! and print what each check found. In a test suite the same is one line:
//! `ipcprop::conformance_tests!(lines, LinesTransport);`
//!
//! Run: `cargo run --example custom_transport` (exit code 0 if every check passes).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ipcprop::check::battery::{self, BatteryConfig};
use ipcprop::check::{Capabilities, Transport};
use ipcprop::{Error, Receiver, Result, Sender, Wait};

/// The longest message we accept.
const MAX: usize = 1 << 20;

struct LinesSender(UnixStream);
struct LinesReceiver(UnixStream);
struct LinesTransport;

fn io(op: &'static str, e: std::io::Error) -> Error {
    Error::Io { op, source: e }
}

impl Sender for LinesSender {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() > MAX {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: MAX,
                why: "this transport's limit",
            });
        }
        let mut frame = (msg.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(msg);
        // A Rust program ignores SIGPIPE, so a gone reader is EPIPE (or ECONNRESET).
        match self.0.write_all(&frame) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                Err(Error::Disconnected)
            }
            Err(e) => Err(io("write", e)),
        }
    }

    fn max_message_len(&self) -> usize {
        MAX
    }
}

/// The stream ending inside a message means its sender died while writing it: that send
/// never returned, so the message is dropped and the stream is over (the harness kills
/// senders inside their sends to check this).
fn cut_or_io(op: &'static str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::Disconnected
    } else {
        io(op, e)
    }
}

impl Receiver for LinesReceiver {
    fn recv_with<R>(&mut self, wait: Wait, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        // Wait for the first byte within the deadline; then read the whole message.
        let deadline = wait.deadline_from(Instant::now());
        let timeout = deadline.map(|d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_micros(1))
        });
        self.0
            .set_read_timeout(timeout)
            .map_err(|e| io("set_read_timeout", e))?;
        let mut len = [0u8; 4];
        loop {
            match self.0.read(&mut len[..1]) {
                Ok(0) => return Err(Error::Disconnected),
                Ok(_) => break,
                // A signal interrupted the wait: wait again (the harness checks this with
                // signal storms).
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(wait.expired())
                }
                Err(e) => return Err(io("read", e)),
            }
        }
        self.0
            .set_read_timeout(None)
            .map_err(|e| io("set_read_timeout", e))?;
        self.0
            .read_exact(&mut len[1..])
            .map_err(|e| cut_or_io("read length", e))?;
        let n = u32::from_le_bytes(len) as usize;
        if n > MAX {
            return Err(Error::Corrupt(format!(
                "length prefix {n} over the maximum {MAX}"
            )));
        }
        let mut buf = vec![0u8; n];
        self.0
            .read_exact(&mut buf)
            .map_err(|e| cut_or_io("read payload", e))?;
        Ok(f(&buf))
    }

    fn max_message_len(&self) -> usize {
        MAX
    }
}

impl Transport for LinesTransport {
    type Sender = LinesSender;
    type Receiver = LinesReceiver;

    fn name(&self) -> String {
        "lines".into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_message_len: MAX,
            multi_sender: None, // stream writes from several processes could interleave
            boundary_sizes: vec![0, 1, 4096, 212_992, MAX],
            persistent: false,
            progress_bound: Capabilities::DEFAULT_PROGRESS_BOUND,
            timeout_slack: Capabilities::DEFAULT_TIMEOUT_SLACK,
        }
    }

    fn pair(&self, _senders: usize) -> Result<(LinesSender, LinesReceiver)> {
        let (a, b) = UnixStream::pair().map_err(|e| io("socketpair", e))?;
        Ok((LinesSender(a), LinesReceiver(b)))
    }

    /// A hostile peer's header: a length of `claimed_len` and no bytes after it. The
    /// battery checks that our receiver refuses it before allocating that much.
    fn forge_header(&self, tx: &mut LinesSender, claimed_len: u64) -> Result<bool> {
        let Ok(len) = u32::try_from(claimed_len) else {
            return Ok(false); // our length prefix is 4 bytes
        };
        tx.0.write_all(&len.to_le_bytes())
            .map_err(|e| io("write", e))?;
        Ok(true)
    }
}

fn main() {
    let config = BatteryConfig {
        cases: 16,
        ..BatteryConfig::default()
    };
    let findings = battery::run_battery(&LinesTransport, &config);
    for check in battery::CHECKS {
        let verdict = match findings.iter().find(|f| f.check == check) {
            None => "pass".to_string(),
            Some(f) => format!(
                "FAIL ({})",
                f.kinds
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        println!("{check:<32} {verdict}");
    }
    for f in &findings {
        println!("\n{f}");
    }
    std::process::exit(if findings.is_empty() { 0 } else { 1 });
}
