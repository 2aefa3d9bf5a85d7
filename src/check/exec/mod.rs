//! Programs under test in any language: the harness side of the driver protocol
//! (`docs/PROTOCOL.md`).
//!
//! An [`ExecTransport`] is a command. For each case the harness starts it, its role
//! processes connect to a control socket and say who they are, and the harness drives
//! them with JSON lines: what each sender sends and when, how many messages the receiver
//! takes, when it closes. Since it knows every role's process id, the nemesis, the plans,
//! the shrinking, the checker and the timelines are the same as for a transport the
//! harness forks itself: [`ExecTransport`] is a [`Transport`] whose
//! [`run_plan`](Transport::run_plan) starts the program instead of forking around a pair,
//! so [`run_case`](super::run_case), [`campaign`](super::campaign()) and the plan-based
//! checks of the [battery](super::battery) take it as they are.
//!
//! A program that breaks the protocol (never connects, writes a malformed line, lies about
//! its pid) ends the case with [`Error::Driver`], naming the program,
//! the role and the line: it is never counted as a violation of the program's channel.
//!
//! ```no_run
//! use ipcprop::check::{self, exec::ExecTransport, CampaignConfig, Capabilities};
//!
//! let program = ExecTransport::new("python3 examples/python/pipe_fixed.py")
//!     .with_capabilities(Capabilities::new(65_536));
//! let report = check::run(&program, &CampaignConfig { cases: 16, ..CampaignConfig::default() })?;
//! assert!(report.failure.is_none());
//! # Ok::<(), ipcprop::Error>(())
//! ```
//!
//! [`client`] is the role side in Rust: `ipcprop serve-role` runs the crate's own
//! transports as a program under test with it.

pub mod client;
mod run;
pub mod wire;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::case::{CaseOutcome, RunConfig};
use super::plan::{Capabilities, Plan};
use super::Transport;
use crate::error::{Error, Result};
use crate::transport::{Receiver, Sender, Wait};

pub use wire::PROTOCOL_VERSION;

/// How the program under test is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// One command that starts every role itself (`--exec`).
    One(String),
    /// A command run once as the receiver, then once per sender (`--exec-receiver`,
    /// `--exec-sender`); each run is one role.
    Split {
        /// The sender's command.
        sender: String,
        /// The receiver's command.
        receiver: String,
    },
}

impl std::fmt::Display for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Program::One(c) => write!(f, "{c}"),
            Program::Split { sender, receiver } => {
                write!(f, "sender `{sender}`, receiver `{receiver}`")
            }
        }
    }
}

/// A program under test, speaking the driver protocol: a [`Transport`] for the harness.
#[derive(Debug, Clone)]
pub struct ExecTransport {
    program: Program,
    name: String,
    caps: Capabilities,
    start_timeout: Duration,
    exit_grace: Duration,
}

/// How long roles may take to connect and say hello, by default.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);

impl ExecTransport {
    /// The program `command` (run with `sh -c`), which starts every role itself. Its
    /// capabilities start as [`Capabilities::new`] with a 64 KiB maximum: declare the real
    /// ones with [`ExecTransport::with_capabilities`] or a [`CapsFile`].
    pub fn new(command: impl Into<String>) -> ExecTransport {
        let command = command.into();
        ExecTransport {
            name: command.clone(),
            program: Program::One(command),
            caps: Capabilities::new(64 * 1024),
            start_timeout: DEFAULT_START_TIMEOUT,
            exit_grace: Duration::from_secs(5),
        }
    }

    /// Two programs: `receiver` is started first, once, as the receiver; then `sender`
    /// once per sender.
    pub fn split(sender: impl Into<String>, receiver: impl Into<String>) -> ExecTransport {
        let program = Program::Split {
            sender: sender.into(),
            receiver: receiver.into(),
        };
        ExecTransport {
            name: program.to_string(),
            program,
            ..ExecTransport::new("")
        }
    }

    /// The name in reports (the command, by default).
    pub fn with_name(mut self, name: impl Into<String>) -> ExecTransport {
        self.name = name.into();
        self
    }

    /// What the program supports; plans stay within it.
    pub fn with_capabilities(mut self, caps: Capabilities) -> ExecTransport {
        self.caps = caps;
        self
    }

    /// How long the roles may take to connect and say hello (10 s by default).
    pub fn with_start_timeout(mut self, timeout: Duration) -> ExecTransport {
        self.start_timeout = timeout;
        self
    }

    /// The program, as it is started.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The start timeout.
    pub fn start_timeout(&self) -> Duration {
        self.start_timeout
    }
}

/// The ends of an [`ExecTransport`], which has none in this process: no value of this
/// type exists.
#[derive(Debug)]
pub enum NoEnd {}

impl Sender for NoEnd {
    fn send(&mut self, _msg: &[u8]) -> Result<()> {
        match *self {}
    }

    fn max_message_len(&self) -> usize {
        match *self {}
    }
}

impl Receiver for NoEnd {
    fn recv_with<R>(&mut self, _wait: Wait, _f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        match *self {}
    }

    fn max_message_len(&self) -> usize {
        match *self {}
    }
}

impl Transport for ExecTransport {
    type Sender = NoEnd;
    type Receiver = NoEnd;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    /// Always [`Error::Unsupported`]: the program makes its own channel, in its own
    /// processes. The checks that need a pair in this process (timeouts, deadlines,
    /// forged headers, descriptors) do not apply to it.
    fn pair(&self, _senders: usize) -> Result<(NoEnd, NoEnd)> {
        Err(Error::Unsupported(
            "a program under test makes its own channel; its cases run through run_plan",
        ))
    }

    fn run_plan(&self, plan: &Plan, config: &RunConfig) -> Result<CaseOutcome> {
        run::run(self, plan, config)
    }
}

/// A program's capabilities, from a TOML file next to it (`<program>.ipcprop.toml`) or
/// given with `--caps`: the format of section 8 of `docs/PROTOCOL.md`. Every field but
/// `max_message_len` is optional.
///
/// ```
/// use ipcprop::check::exec::CapsFile;
///
/// let caps = CapsFile::parse("max_message_len = 4096\nsenders = 2\nend_of_stream = false\n")?;
/// let t = caps.apply(ipcprop::check::exec::ExecTransport::new("./prog"));
/// use ipcprop::check::Transport;
/// assert_eq!(t.capabilities().multi_sender, Some(4096));
/// assert!(!t.capabilities().end_of_stream);
/// # Ok::<(), ipcprop::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsFile {
    /// The name in reports.
    pub name: Option<String>,
    /// The longest message.
    pub max_message_len: Option<usize>,
    /// Sender processes that may share the channel (1: one sender).
    pub senders: Option<usize>,
    /// The longest message with several senders (default: `max_message_len`).
    pub shared_max_len: Option<usize>,
    /// The receiver learns that the senders are gone (default true).
    pub end_of_stream: Option<bool>,
    /// Messages outlive the program's processes: a receiver killed before its end is
    /// followed by a recovery run (`docs/PROTOCOL.md`, section 9). Default false.
    pub persistent: Option<bool>,
    /// Sizes where the channel changes behaviour.
    pub boundary_sizes: Option<Vec<usize>>,
    /// Longest time without any event before a case is judged hung, in ms.
    pub progress_bound_ms: Option<u64>,
    /// With no end of stream: the silence before the harness ends the receiver, in ms.
    pub quiet_period_ms: Option<u64>,
    /// How long the roles may take to connect, in ms.
    pub start_timeout_ms: Option<u64>,
}

impl CapsFile {
    /// Parses the TOML text of a capability file.
    pub fn parse(text: &str) -> Result<CapsFile> {
        let caps: CapsFile = toml::from_str(text)
            .map_err(|e| Error::config("capability file", e.to_string().trim_end().to_string()))?;
        caps.validate()?;
        Ok(caps)
    }

    /// Reads and parses a capability file.
    pub fn load(path: &Path) -> Result<CapsFile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(
                "capability file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        CapsFile::parse(&text).map_err(|e| match e {
            Error::InvalidConfig { what, why } => Error::InvalidConfig {
                what,
                why: format!("{}: {why}", path.display()),
            },
            other => other,
        })
    }

    /// The capability file next to the program of `command`, if there is one: for the
    /// first word of the command that names an existing file `dir/prog.ext`,
    /// `dir/prog.ipcprop.toml`.
    pub fn beside(command: &str) -> Option<PathBuf> {
        command.split_whitespace().find_map(|word| {
            let p = Path::new(word);
            if !p.is_file() {
                return None;
            }
            let stem = p.file_stem()?.to_str()?;
            let caps = p.with_file_name(format!("{stem}.ipcprop.toml"));
            caps.is_file().then_some(caps)
        })
    }

    /// Checks the values: at least one sender, a shared maximum within the maximum, no
    /// bound of 0 ms. [`CapsFile::parse`] calls it; call it again after an
    /// [`overlay`](CapsFile::overlay) of flags.
    pub fn validate(&self) -> Result<()> {
        if self.senders == Some(0) {
            return Err(Error::config("capabilities", "senders must be at least 1"));
        }
        if let (Some(shared), Some(max)) = (self.shared_max_len, self.max_message_len) {
            if shared > max {
                return Err(Error::config(
                    "capabilities",
                    format!("shared_max_len {shared} is larger than max_message_len {max}"),
                ));
            }
        }
        for (what, v) in [
            ("progress_bound_ms", self.progress_bound_ms),
            ("quiet_period_ms", self.quiet_period_ms),
            ("start_timeout_ms", self.start_timeout_ms),
        ] {
            if v == Some(0) {
                return Err(Error::config(
                    "capabilities",
                    format!("{what} must be above 0"),
                ));
            }
        }
        Ok(())
    }

    /// Fields set in `over` replace those of `self` (command-line flags over a file).
    pub fn overlay(mut self, over: CapsFile) -> CapsFile {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            name,
            max_message_len,
            senders,
            shared_max_len,
            end_of_stream,
            persistent,
            boundary_sizes,
            progress_bound_ms,
            quiet_period_ms,
            start_timeout_ms
        );
        self
    }

    /// `t` with these capabilities (those not given keep `t`'s).
    pub fn apply(&self, mut t: ExecTransport) -> ExecTransport {
        let mut caps = t.caps.clone();
        if let Some(max) = self.max_message_len {
            caps.max_message_len = max;
        }
        match self.senders {
            Some(1) => caps.multi_sender = None,
            Some(_) => {
                caps.multi_sender = Some(self.shared_max_len.unwrap_or(caps.max_message_len))
            }
            None => {}
        }
        if let Some(eos) = self.end_of_stream {
            caps.end_of_stream = eos;
        }
        if let Some(p) = self.persistent {
            caps.persistent = p;
        }
        if let Some(b) = &self.boundary_sizes {
            caps.boundary_sizes = b.clone();
        }
        if let Some(ms) = self.progress_bound_ms {
            caps.progress_bound = Duration::from_millis(ms);
        }
        if let Some(ms) = self.quiet_period_ms {
            caps.quiet_period = Duration::from_millis(ms);
        }
        if let Some(ms) = self.start_timeout_ms {
            t.start_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = &self.name {
            t.name = n.clone();
        }
        t.caps = caps;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capability_file_sets_what_it_names_and_refuses_what_it_does_not_know() {
        let f = CapsFile::parse(
            "name = \"py\"\nmax_message_len = 1000\nsenders = 3\nshared_max_len = 100\n\
             boundary_sizes = [99, 100]\nprogress_bound_ms = 700\nquiet_period_ms = 50\n\
             start_timeout_ms = 1500\nend_of_stream = false\npersistent = true\n",
        )
        .unwrap();
        let t = f.apply(ExecTransport::new("x"));
        let c = t.capabilities();
        assert_eq!(t.name(), "py");
        assert_eq!(c.max_message_len, 1000);
        assert_eq!(c.multi_sender, Some(100));
        assert_eq!(c.boundary_sizes, vec![99, 100]);
        assert_eq!(c.progress_bound, Duration::from_millis(700));
        assert_eq!(c.quiet_period, Duration::from_millis(50));
        assert!(!c.end_of_stream);
        assert!(c.persistent);
        assert!(!ExecTransport::new("x").capabilities().persistent);
        assert_eq!(t.start_timeout(), Duration::from_millis(1500));
        // Several senders without a shared maximum share the maximum.
        let c = CapsFile::parse("max_message_len = 10\nsenders = 2\n")
            .unwrap()
            .apply(ExecTransport::new("x"))
            .capabilities();
        assert_eq!(c.multi_sender, Some(10));
        // A shared maximum equal to the maximum is the maximum.
        let c = CapsFile::parse("max_message_len = 10\nsenders = 2\nshared_max_len = 10\n")
            .unwrap()
            .apply(ExecTransport::new("x"))
            .capabilities();
        assert_eq!(c.multi_sender, Some(10));
        // A flag over the file.
        let over = CapsFile {
            senders: Some(1),
            persistent: Some(false),
            ..CapsFile::default()
        };
        let merged = f.clone().overlay(over);
        assert_eq!(merged.senders, Some(1));
        assert_eq!(merged.persistent, Some(false));
        assert_eq!(merged.max_message_len, Some(1000));
        assert_eq!(
            merged
                .apply(ExecTransport::new("x"))
                .capabilities()
                .multi_sender,
            None
        );
        for (text, says) in [
            ("max_len = 3\n", "unknown field"),
            ("senders = 0\n", "at least 1"),
            ("max_message_len = 10\nshared_max_len = 11\n", "larger than"),
            ("quiet_period_ms = 0\n", "above 0"),
            ("max_message_len = \"big\"\n", "invalid type"),
            ("max_message_len = -1\n", "max_message_len"),
        ] {
            let e = CapsFile::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn the_capability_file_beside_a_program_is_found_by_its_stem() {
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("prog.py");
        std::fs::write(&prog, "").unwrap();
        let cmd = format!("python3 {}", prog.display());
        assert_eq!(CapsFile::beside(&cmd), None);
        std::fs::write(
            dir.path().join("prog.ipcprop.toml"),
            "max_message_len = 5\n",
        )
        .unwrap();
        assert_eq!(
            CapsFile::beside(&cmd),
            Some(dir.path().join("prog.ipcprop.toml"))
        );
        let e = CapsFile::load(&dir.path().join("nothing.toml")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn an_exec_transport_has_no_pair_in_this_process() {
        let t = ExecTransport::new("true");
        assert!(matches!(t.pair(1), Err(Error::Unsupported(_))));
        assert_eq!(t.name(), "true");
        let s = ExecTransport::split("a", "b");
        // Reports name both commands.
        assert_eq!(s.name(), "sender `a`, receiver `b`");
        assert_eq!(
            s.program(),
            &Program::Split {
                sender: "a".into(),
                receiver: "b".into()
            }
        );
    }
}
