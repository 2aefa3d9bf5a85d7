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
use std::time::Instant;

use ipcprop::check::battery::{self, BatteryConfig};
use ipcprop::check::{Capabilities, Transport};
use ipcprop::frame::FrameError;
use ipcprop::{Error, Receiver, Result, Sender, Wait};

/// The longest message we accept.
const MAX: usize = 1 << 20;

struct LinesSender(UnixStream);
struct LinesReceiver {
    stream: UnixStream,
    /// The part of the next message read so far.
    buf: Vec<u8>,
}
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

impl Receiver for LinesReceiver {
    fn recv_with<R>(&mut self, wait: Wait, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let deadline = wait.deadline_from(Instant::now());
        loop {
            // A whole message buffered: lend it.
            let need = match self.buf.get(..4) {
                None => 4,
                Some(h) => {
                    let n = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                    if n > MAX {
                        // A malformed stream: reported as a framing error.
                        return Err(Error::Frame(FrameError::TooLarge {
                            len: n as u64,
                            max: MAX,
                        }));
                    }
                    if self.buf.len() == 4 + n {
                        let v = f(&self.buf[4..]);
                        self.buf.clear();
                        return Ok(v);
                    }
                    4 + n
                }
            };
            // Read what is missing, waiting no later than the deadline. What arrived of a
            // message stays buffered for the next call: a sender stopped in the middle of a
            // message must not hold a receive past its timeout (the harness checks this).
            // Past the deadline (or a try_recv), one read that does not wait at all.
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let now_or_never = left.is_some_and(|l| l.is_zero());
            self.stream
                .set_nonblocking(now_or_never)
                .map_err(|e| io("set_nonblocking", e))?;
            if !now_or_never {
                self.stream
                    .set_read_timeout(left)
                    .map_err(|e| io("set_read_timeout", e))?;
            }
            let have = self.buf.len();
            self.buf.resize(need, 0);
            let got = self.stream.read(&mut self.buf[have..]);
            self.buf.truncate(have + *got.as_ref().unwrap_or(&0));
            match got {
                // The end of the stream; inside a message, its sender died while writing
                // it: that send never returned, so the part is dropped (the harness kills
                // senders inside their sends to check this).
                Ok(0) => {
                    self.buf.clear();
                    return Err(Error::Disconnected);
                }
                Ok(_) => {}
                // A signal interrupted the wait: wait again (the harness checks this with
                // signal storms).
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
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
            multi_sender: None, // stream writes from several processes could interleave
            boundary_sizes: vec![0, 1, 4096, 212_992, MAX],
            ..Capabilities::new(MAX)
        }
    }

    fn pair(&self, _senders: usize) -> Result<(LinesSender, LinesReceiver)> {
        let (a, b) = UnixStream::pair().map_err(|e| io("socketpair", e))?;
        Ok((
            LinesSender(a),
            LinesReceiver {
                stream: b,
                buf: Vec::new(),
            },
        ))
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
