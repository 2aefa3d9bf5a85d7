//! The role side of the driver protocol, in Rust: a sender or receiver process of a program
//! under test connects with [`RoleConn::connect`] and serves the harness's commands over
//! any [`Sender`] or [`Receiver`] ([`serve_sender`], [`serve_receiver`]). [`serve`] runs a
//! whole [`Transport`] of this process as a program under test (what `ipcprop serve-role`
//! does), so the protocol path can be checked against transports known to be good (and
//! deliberately broken ones).
//!
//! ```no_run
//! // A program under test, started by `ipcprop check --exec ./my-program`: the receiver
//! // here, in a process of its own, over an end it made or inherited.
//! use ipcprop::check::exec::client::{serve_receiver, ProtocolEnv, RoleConn};
//!
//! let env = ProtocolEnv::from_env()?;
//! let (_tx, rx) = ipcprop::pipe::channel()?;
//! serve_receiver(RoleConn::connect(&env, None)?, rx)?;
//! # Ok::<(), ipcprop::Error>(())
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::wire::{to_hex, RoleId, MAX_DATA, PROTOCOL_VERSION};
use crate::check::fork::{monotonic_ns, ChildGroup};
use crate::check::history::{fill_message, Delivery, MsgId, ID_LEN};
use crate::check::Transport;
use crate::error::{Error, Result};
use crate::transport::{Receiver, Sender, Wait};

/// The protocol's environment, as the harness set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolEnv {
    /// The control socket.
    pub control: PathBuf,
    /// How many senders the case has.
    pub senders: usize,
    /// The case's own directory.
    pub dir: PathBuf,
    /// The case's unique name.
    pub case: String,
    /// In split mode, the role this process plays.
    pub role: Option<RoleId>,
    /// A recovery run of a persistent program (`IPCPROP_RECOVER=1`): only the receiver
    /// connects, and it must find what the killed run left.
    pub recover: bool,
}

impl ProtocolEnv {
    /// Reads the `IPCPROP_*` variables.
    pub fn from_env() -> Result<ProtocolEnv> {
        ProtocolEnv::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the `IPCPROP_*` variables through `get` (a variable's value, if set).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<ProtocolEnv> {
        let var = |name: &'static str| {
            get(name).ok_or_else(|| {
                Error::config(
                    name,
                    "not set: this program runs under `ipcprop check --exec` (docs/PROTOCOL.md)",
                )
            })
        };
        let protocol = var("IPCPROP_PROTOCOL")?;
        if protocol != PROTOCOL_VERSION.to_string() {
            return Err(Error::config(
                "IPCPROP_PROTOCOL",
                format!(
                    "the harness speaks protocol {protocol}; this client speaks {PROTOCOL_VERSION}"
                ),
            ));
        }
        let senders = var("IPCPROP_SENDERS")?;
        let senders = senders
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                Error::config(
                    "IPCPROP_SENDERS",
                    format!("{senders:?} is not a count of 1 or more"),
                )
            })?;
        let role = match get("IPCPROP_ROLE").as_deref() {
            None => None,
            Some("receiver") => Some(RoleId::Receiver),
            Some("sender") => {
                let i = var("IPCPROP_INDEX")?;
                let i = i
                    .parse::<u32>()
                    .ok()
                    .filter(|&i| (i as usize) < senders)
                    .ok_or_else(|| {
                        Error::config(
                            "IPCPROP_INDEX",
                            format!("{i:?} is not a sender index below {senders}"),
                        )
                    })?;
                Some(RoleId::Sender(i))
            }
            Some(other) => {
                return Err(Error::config(
                    "IPCPROP_ROLE",
                    format!("{other:?} is neither \"sender\" nor \"receiver\""),
                ))
            }
        };
        let recover = match get("IPCPROP_RECOVER").as_deref() {
            None | Some("0" | "") => false,
            Some("1") => true,
            Some(other) => {
                return Err(Error::config(
                    "IPCPROP_RECOVER",
                    format!("{other:?} is neither 1 (a recovery run) nor 0"),
                ))
            }
        };
        Ok(ProtocolEnv {
            recover,
            control: var("IPCPROP_CONTROL")?.into(),
            senders,
            dir: var("IPCPROP_DIR")?.into(),
            case: var("IPCPROP_CASE")?,
            role,
        })
    }
}

/// A role's connection to the harness.
#[derive(Debug)]
pub struct RoleConn {
    out: UnixStream,
    input: BufReader<UnixStream>,
    line: String,
}

/// What the harness told a role to do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    Send {
        seq: u32,
        len: usize,
        sender: u32,
        seed: u64,
    },
    Recv(u32),
    Close,
    Exit,
}

fn protocol_error(what: String) -> Error {
    Error::Io {
        op: "driver protocol",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what),
    }
}

impl RoleConn {
    /// Connects to the control socket and says hello as `role` (a sender's index, or the
    /// receiver with `None`... given as [`RoleId`]); `None` takes the role from the
    /// environment (split mode).
    pub fn connect(env: &ProtocolEnv, role: Option<RoleId>) -> Result<RoleConn> {
        let role = role.or(env.role).ok_or_else(|| {
            Error::config("IPCPROP_ROLE", "no role given, and none in the environment")
        })?;
        let out = UnixStream::connect(&env.control)
            .map_err(|e| Error::io("connecting to the control socket", e))?;
        let input = BufReader::new(
            out.try_clone()
                .map_err(|e| Error::io("control socket", e))?,
        );
        let mut conn = RoleConn {
            out,
            input,
            line: String::new(),
        };
        let hello = match role {
            RoleId::Receiver => "\"hello\":\"receiver\"".to_string(),
            RoleId::Sender(i) => format!("\"hello\":\"sender\",\"index\":{i}"),
        };
        conn.write(&format!(
            "{hello},\"pid\":{},\"protocol\":{PROTOCOL_VERSION}",
            std::process::id()
        ))?;
        Ok(conn)
    }

    /// Writes one line: `body` (the object's fields, without braces) and `t`, in one write.
    fn write(&mut self, body: &str) -> Result<()> {
        let line = format!("{{{body},\"t\":{}}}\n", monotonic_ns());
        self.out
            .write_all(line.as_bytes())
            .map_err(|e| Error::io("writing to the control socket", e))
    }

    /// The next command; `Ok(None)` if the harness closed the connection.
    fn next(&mut self) -> Result<Option<Command>> {
        self.line.clear();
        let n = self
            .input
            .read_line(&mut self.line)
            .map_err(|e| Error::io("reading the control socket", e))?;
        if n == 0 {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(self.line.trim_end())
            .map_err(|e| protocol_error(format!("the harness wrote {:?}: {e}", self.line)))?;
        let num = |k: &str| v.get(k).and_then(Value::as_u64);
        let bad = || protocol_error(format!("the harness wrote {:?}", self.line));
        Ok(Some(match v.get("op").and_then(Value::as_str) {
            Some("send") => Command::Send {
                seq: num("seq")
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(bad)?,
                len: num("len")
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(bad)?,
                sender: num("sender")
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(bad)?,
                seed: v
                    .get("seed")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(bad)?,
            },
            Some("recv") => Command::Recv(
                num("count")
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(bad)?,
            ),
            Some("close") => Command::Close,
            Some("exit") => Command::Exit,
            _ => return Err(bad()),
        }))
    }
}

/// A role whose harness is gone leaves at once (the protocol says so).
fn harness_gone() -> ! {
    crate::check::fork::exit_now(3)
}

/// Serves a sender role over `tx` until the harness says exit; `tx` is dropped (its end
/// closed) before `bye`.
pub fn serve_sender<S: Sender>(mut conn: RoleConn, tx: S) -> Result<()> {
    let mut tx = Some(tx);
    let mut msg = Vec::new();
    loop {
        match conn.next()? {
            None => harness_gone(),
            Some(Command::Send {
                seq,
                len,
                sender,
                seed,
            }) => {
                fill_message(seed, MsgId { sender, seq }, len, &mut msg);
                conn.write(&format!("\"ev\":\"sending\",\"seq\":{seq}"))?;
                let result = match tx.as_mut() {
                    Some(tx) => tx.send(&msg),
                    None => Err(Error::Disconnected),
                };
                match result {
                    Ok(()) => conn.write(&format!("\"ev\":\"sent\",\"seq\":{seq}"))?,
                    Err(e) => conn.write(&format!(
                        "\"ev\":\"send_failed\",\"seq\":{seq},\"error\":{},\"disconnected\":{}",
                        Value::String(e.to_string()),
                        e.is_disconnected()
                    ))?,
                }
            }
            Some(Command::Exit) => {
                drop(tx.take());
                return conn.write("\"ev\":\"bye\"");
            }
            Some(other) => {
                return Err(protocol_error(format!("a sender was told {other:?}")));
            }
        }
    }
}

fn received_line(d: &Delivery, msg: &[u8]) -> String {
    if msg.len() <= MAX_DATA {
        format!("\"ev\":\"received\",\"data\":\"{}\"", to_hex(msg))
    } else {
        let n = (d.len as usize).min(ID_LEN);
        format!(
            "\"ev\":\"received\",\"len\":{},\"crc\":{},\"id\":\"{}\"",
            d.len,
            d.crc,
            to_hex(&d.prefix[..n])
        )
    }
}

/// Serves the receiver role over `rx` until the harness says exit. `close` drops `rx`.
pub fn serve_receiver<R: Receiver>(mut conn: RoleConn, rx: R) -> Result<()> {
    let mut rx = Some(rx);
    let mut got = 0u64;
    let mut ended = false;
    loop {
        match conn.next()? {
            None => harness_gone(),
            Some(Command::Recv(count)) => {
                for _ in 0..count {
                    if ended {
                        break;
                    }
                    conn.write(&format!("\"ev\":\"receiving\",\"got\":{got}"))?;
                    let Some(r) = rx.as_mut() else {
                        conn.write("\"ev\":\"recv_failed\",\"error\":\"the end was closed\"")?;
                        ended = true;
                        break;
                    };
                    match r.recv_with(Wait::Forever, |m| received_line(&Delivery::of(m), m)) {
                        Ok(line) => {
                            got += 1;
                            conn.write(&line)?;
                        }
                        Err(Error::Disconnected) => {
                            ended = true;
                            conn.write("\"ev\":\"eos\"")?;
                        }
                        Err(e) => {
                            ended = true;
                            let kind = if e.is_cut_off() {
                                "cut_off"
                            } else {
                                "recv_failed"
                            };
                            conn.write(&format!(
                                "\"ev\":\"{kind}\",\"error\":{}",
                                Value::String(e.to_string())
                            ))?;
                        }
                    }
                }
            }
            Some(Command::Close) => {
                drop(rx.take());
                ended = true;
                conn.write("\"ev\":\"closed\"")?;
            }
            Some(Command::Exit) => {
                drop(rx.take());
                return conn.write("\"ev\":\"bye\"");
            }
            Some(other) => {
                return Err(protocol_error(format!("the receiver was told {other:?}")));
            }
        }
    }
}

/// Runs `t` as a program under test: makes a pair for the case's senders, forks the
/// receiver and each sender (re-attaching their ends in the child as the harness does),
/// and serves each role over the protocol; returns once every role has ended.
///
/// A persistent transport ([`Transport::pair_in`]) keeps its storage in `IPCPROP_DIR`; in
/// a recovery run (`IPCPROP_RECOVER=1`) only the receiver is served, on the storage the
/// killed run left, with no sender: it drains what is there and reports the end.
pub fn serve<T: Transport>(t: &T) -> Result<()> {
    let env = ProtocolEnv::from_env()?;
    if env.recover {
        let (tx, rx) = t.pair_in(&env.dir, 1)?.ok_or_else(|| {
            Error::config(
                "IPCPROP_RECOVER",
                format!(
                    "a recovery run of {}, whose messages do not outlive its processes (it \
                     has no storage to reopen): do not declare it persistent",
                    t.name()
                ),
            )
        })?;
        drop(tx);
        let conn = RoleConn::connect(&env, Some(RoleId::Receiver))?;
        return serve_receiver(conn, rx);
    }
    let stored = if t.capabilities().persistent {
        t.pair_in(&env.dir, env.senders)?
    } else {
        None
    };
    let (tx, rx) = match stored {
        Some(pair) => pair,
        None => t.pair(env.senders)?,
    };
    let mut tx = Some(tx);
    let mut rx = Some(rx);
    let mut group = ChildGroup::new();
    group.spawn("receiver", |_| {
        drop(tx.take());
        let mut rx = rx.take().ok_or("no receiver")?;
        t.in_child_receiver(&mut rx).map_err(|e| e.to_string())?;
        crate::check::case::catch_storms()?;
        let conn = RoleConn::connect(&env, Some(RoleId::Receiver)).map_err(|e| e.to_string())?;
        serve_receiver(conn, rx).map_err(|e| e.to_string())
    })?;
    for i in 0..env.senders {
        group.spawn(format!("sender {i}"), |_| {
            drop(rx.take());
            let mut tx = tx.take().ok_or("no sender")?;
            t.in_child_sender(&mut tx).map_err(|e| e.to_string())?;
            crate::check::case::catch_storms()?;
            let conn = RoleConn::connect(&env, Some(RoleId::Sender(i as u32)))
                .map_err(|e| e.to_string())?;
            serve_sender(conn, tx).map_err(|e| e.to_string())
        })?;
    }
    drop(tx);
    drop(rx);
    // The harness kills what hangs; this only bounds a harness that vanished.
    group.wait(Duration::from_secs(3600));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Result<ProtocolEnv> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProtocolEnv::from_vars(|name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    const BASE: [(&str, &str); 5] = [
        ("IPCPROP_PROTOCOL", "1"),
        ("IPCPROP_CONTROL", "/c.sock"),
        ("IPCPROP_SENDERS", "2"),
        ("IPCPROP_DIR", "/d"),
        ("IPCPROP_CASE", "ipcprop-1-0"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Result<ProtocolEnv> {
        let mut all: Vec<(&str, &str)> = BASE.to_vec();
        for (k, v) in extra {
            all.retain(|(key, _)| key != k);
            all.push((k, v));
        }
        vars(&all)
    }

    #[test]
    fn the_environment_is_read_and_each_bad_variable_named() {
        let e = with(&[]).unwrap();
        assert_eq!(
            (e.senders, e.role, e.case.as_str()),
            (2, None, "ipcprop-1-0")
        );
        assert_eq!(e.control, PathBuf::from("/c.sock"));
        assert_eq!(e.dir, PathBuf::from("/d"));
        let r = with(&[("IPCPROP_ROLE", "receiver")]).unwrap();
        assert_eq!(r.role, Some(RoleId::Receiver));
        assert!(!e.recover);
        for (v, want) in [("0", false), ("", false), ("1", true)] {
            assert_eq!(
                with(&[("IPCPROP_RECOVER", v)]).unwrap().recover,
                want,
                "{v}"
            );
        }
        // Indexes 0 and 1 of two senders; 2 is out of range.
        for (i, want) in [
            ("0", Some(RoleId::Sender(0))),
            ("1", Some(RoleId::Sender(1))),
        ] {
            let e = with(&[("IPCPROP_ROLE", "sender"), ("IPCPROP_INDEX", i)]).unwrap();
            assert_eq!(e.role, want);
        }
        for (extra, names) in [
            (
                vec![("IPCPROP_ROLE", "sender"), ("IPCPROP_INDEX", "2")],
                "IPCPROP_INDEX",
            ),
            (vec![("IPCPROP_ROLE", "sender")], "IPCPROP_INDEX"),
            (vec![("IPCPROP_ROLE", "boss")], "IPCPROP_ROLE"),
            (vec![("IPCPROP_SENDERS", "0")], "IPCPROP_SENDERS"),
            (vec![("IPCPROP_PROTOCOL", "2")], "IPCPROP_PROTOCOL"),
            (vec![("IPCPROP_RECOVER", "yes")], "IPCPROP_RECOVER"),
        ] {
            let e = with(&extra).unwrap_err().to_string();
            assert!(e.contains(names), "{extra:?}: {e}");
        }
        let e = vars(&BASE[1..]).unwrap_err().to_string();
        assert!(
            e.contains("IPCPROP_PROTOCOL") && e.contains("not set"),
            "{e}"
        );
    }
}
