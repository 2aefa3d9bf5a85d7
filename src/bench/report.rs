//! What a benchmark run measured: rows, the design targets and where each stands, the
//! machine, and the plain-text table `ipcprop bench` prints.

use std::fmt::Write as _;
use std::time::Duration;

/// The transport family a row belongs to; each family has its own baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// The pipe channel, raw `write`/`read` on a pipe, a `UnixStream` socketpair.
    Pipe,
    /// The shared-memory ring, `rtrb`, `crossbeam-channel`, a bare shared-memory spin.
    Ring,
    /// The file queue and the `queue-file` crate.
    Queue,
    /// Forked property cases against a bare `fork` + `_exit` + `waitpid`.
    Fork,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Family; 4] = [Family::Pipe, Family::Ring, Family::Queue, Family::Fork];

    /// Lower-case name, as accepted by `ipcprop bench --only`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Pipe => "pipe",
            Family::Ring => "ring",
            Family::Queue => "queue",
            Family::Fork => "fork",
        }
    }
}

/// What a row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Messages (or cases) per second, one sender to one receiver; higher is better.
    Throughput,
    /// One-way latency (half a ping-pong round trip), p50 and p99; lower is better.
    Latency,
}

impl Kind {
    /// The two figures a row of this kind shows.
    pub fn columns(self) -> [&'static str; 2] {
        match self {
            Kind::Throughput => ["msgs/s", "bytes/s"],
            Kind::Latency => ["p50 one-way", "p99 one-way"],
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Throughput => "throughput",
            Kind::Latency => "latency",
        }
    }
}

/// One measured implementation at one message size.
///
/// Rows with the same `family`, `kind` and `size` form a comparison group; `vs` names the
/// row of the group a row's `ratio` is relative to.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Which comparison this row belongs to.
    pub family: Family,
    /// Throughput or latency.
    pub kind: Kind,
    /// Payload bytes per message.
    pub size: usize,
    /// The implementation, e.g. `"ipcprop send"`, `"raw write"`, `"rtrb (threads)"`.
    pub name: &'static str,
    /// True if other rows are compared with this one (the raw syscall, the peer crate or
    /// the floor).
    pub is_baseline: bool,
    /// The row (same family, kind and size) this one's `ratio` is relative to.
    pub vs: Option<&'static str>,
    /// Messages (throughput) or round trips (latency) measured.
    pub count: u64,
    /// Wall time of the measured run.
    pub elapsed: Duration,
    /// One-way latency percentiles `(p50, p99)`, for latency rows.
    pub latency: Option<(Duration, Duration)>,
    /// Throughput: this row's messages/s over the baseline's (higher is better).
    /// Latency: this row's p50 over the baseline's (lower is better). `None` for the
    /// baseline itself and where the group has no baseline.
    pub ratio: Option<f64>,
    /// The CPU time every process of the measured run used (this one and the children it
    /// waited for), and that run's wall time; `None` where it is not this row's own (a
    /// run beside a busy neighbour process).
    pub cpu: Option<CpuUse>,
}

/// CPU time against wall time: how many cores a measured run kept busy, and the CPU it
/// cost per message. Polling and sleeping receivers cannot be compared on speed alone.
///
/// Measured with `getrusage` of the process and of the children it reaped, so it holds
/// when nothing else in the process forks meanwhile:
/// [`crate::bench::run`](fn@crate::bench::run) measures one workload at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuUse {
    /// User and system time of every process of the run.
    pub cpu: Duration,
    /// Wall time of the run.
    pub wall: Duration,
}

impl CpuUse {
    /// Cores busy on average: CPU time over wall time.
    pub fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-12)
    }

    /// CPU time per message (or round trip) of `count`.
    pub fn per_message(&self, count: u64) -> Duration {
        self.cpu / u32::try_from(count.max(1)).unwrap_or(u32::MAX)
    }
}

impl Row {
    /// Messages (or round trips) per second.
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-12)
    }

    /// Payload bytes per second (throughput rows; zero for empty messages).
    pub fn bytes_per_second(&self) -> f64 {
        self.per_second() * self.size as f64
    }

    /// The three figures the table shows: msgs/s and bytes/s (throughput) or p50 and p99
    /// (latency), and the ratio ("baseline" for a row others are compared with that is
    /// compared with nothing itself).
    pub fn cells(&self) -> [String; 3] {
        let ratio = match (self.is_baseline, self.ratio) {
            (_, Some(x)) => format!("{x:.2}x"),
            (true, None) => "baseline".to_string(),
            (false, None) => "-".to_string(),
        };
        match self.latency {
            Some((p50, p99)) => [short_duration(p50), short_duration(p99), ratio],
            None if self.size == 0 => [si(self.per_second()), "-".into(), ratio],
            None => [
                si(self.per_second()),
                format!("{}B", si(self.bytes_per_second())),
                ratio,
            ],
        }
    }

    /// Cores busy and CPU per message, as the table shows them (`"-"` when not measured).
    pub fn cpu_cells(&self) -> [String; 2] {
        match self.cpu {
            Some(c) => [
                format!("{:.2}", c.cores()),
                short_duration(c.per_message(self.count)),
            ],
            None => ["-".into(), "-".into()],
        }
    }

    /// The figure the chart plots: messages/s for throughput, p50 in nanoseconds for latency.
    pub fn value(&self) -> f64 {
        match (self.kind, self.latency) {
            (Kind::Latency, Some((p50, _))) => p50.as_nanos() as f64,
            _ => self.per_second(),
        }
    }
}

/// Whether a ratio must be at least or at most the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// `ratio >= value` (throughput: at least this many times the baseline).
    AtLeast,
    /// `ratio <= value` (latency: at most this many times the floor).
    AtMost,
}

/// One design target (docs/DESIGN.md section 5) and where this run put it.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetStatus {
    /// What is compared, e.g. `"pipe, 64 B, msgs/s: send / raw write"`.
    pub what: &'static str,
    /// The bound and its value.
    pub bound: Bound,
    /// The target ratio.
    pub target: f64,
    /// The measured ratio, if both sides were measured in this run.
    pub measured: Option<f64>,
}

impl Bound {
    /// `">="` or `"<="`.
    pub fn symbol(self) -> &'static str {
        match self {
            Bound::AtLeast => ">=",
            Bound::AtMost => "<=",
        }
    }
}

impl TargetStatus {
    /// The measured ratio as `"1.23x"`, or `"-"` if not measured (or not finite).
    pub fn measured_text(&self) -> String {
        match self.measured {
            Some(m) if m.is_finite() => format!("{m:.2}x"),
            _ => "-".to_string(),
        }
    }

    /// `Some(true)` if met, `Some(false)` if not, `None` if not measured.
    pub fn met(&self) -> Option<bool> {
        self.measured.map(|r| match self.bound {
            Bound::AtLeast => r >= self.target,
            Bound::AtMost => r <= self.target,
        })
    }
}

/// The machine a report was measured on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    /// CPU model name (from `/proc/cpuinfo`).
    pub cpu: String,
    /// Logical CPUs online.
    pub cpus: usize,
    /// Total memory, in MiB.
    pub memory_mib: u64,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Filesystem type of the directory the queue benchmarks wrote to.
    pub queue_fs: String,
}

impl Machine {
    /// A one-line description: `"2 x Intel(R) Xeon(R) ..., 24 GiB, Linux 6.1, queue on ext4"`.
    pub fn describe(&self) -> String {
        format!(
            "{} x {}, {:.0} GiB RAM, Linux {}, queue files on {}",
            self.cpus,
            self.cpu,
            self.memory_mib as f64 / 1024.0,
            self.kernel,
            self.queue_fs
        )
    }
}

/// A whole run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Every measurement, grouped by family, kind and size, baseline first in each group.
    pub rows: Vec<Row>,
    /// The design targets this run could evaluate.
    pub targets: Vec<TargetStatus>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

/// `1234567.0` -> `"1.23 M"`; `950.0` -> `"950"`.
pub fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A duration in the unit that reads best: `"73 ns"`, `"4.1 us"`, `"1.25 ms"`.
pub fn short_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// `0` -> `"0 B"`, `4096` -> `"4 KiB"`.
pub fn size_label(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

impl Report {
    /// The rows of one comparison group, baseline first.
    pub fn group(&self, family: Family, kind: Kind, size: usize) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.family == family && r.kind == kind && r.size == size)
            .collect();
        rows.sort_by_key(|r| !r.is_baseline);
        rows
    }

    /// The (family, kind) pairs the rows cover, in the order they first appear: one block
    /// of the table, one panel of the chart each.
    pub fn panels(&self) -> Vec<(Family, Kind)> {
        let mut panels = Vec::new();
        for r in &self.rows {
            if !panels.contains(&(r.family, r.kind)) {
                panels.push((r.family, r.kind));
            }
        }
        panels
    }

    fn rows_of(&self, family: Family, kind: Kind) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(move |r| r.family == family && r.kind == kind)
    }

    /// The table `ipcprop bench` prints: one block per family and kind, a line per row,
    /// then the targets.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "machine: {}", self.machine.describe());
        for (family, kind) in self.panels() {
            let title = format!("{} {}", family.name(), kind.name());
            let [a, b] = kind.columns();
            let _ = writeln!(
                out,
                "\n{title}  {:>8}  {:<36} {a:>11} {b:>11} {:>9} {:>6} {:>9}  compared with",
                "size", "implementation", "ratio", "cores", "CPU/msg"
            );
            for r in self.rows_of(family, kind) {
                let [a, b, ratio] = r.cells();
                let [cores, per] = r.cpu_cells();
                let _ = writeln!(
                    out,
                    "{:pad$}  {:>8}  {:<36} {a:>11} {b:>11} {ratio:>9} {cores:>6} {per:>9}  {}",
                    "",
                    size_label(r.size),
                    r.name,
                    r.vs.unwrap_or(""),
                    pad = title.len()
                );
            }
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\ntargets (design targets, docs/DESIGN.md section 5)");
            for t in &self.targets {
                let verdict = match t.met() {
                    Some(true) => "met",
                    Some(false) => "NOT met",
                    None => "not measured",
                };
                let _ = writeln!(
                    out,
                    "  {:<72} {} {:<6} {:>9}  {verdict}",
                    t.what,
                    t.bound.symbol(),
                    format!("{}x", t.target),
                    t.measured_text()
                );
            }
        }
        let _ = writeln!(out, "\nmeasured in {:.1} s", self.elapsed.as_secs_f64());
        out
    }

    /// The same as Markdown tables (one per family and kind, then the targets), for the
    /// README.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for (family, kind) in self.panels() {
            let [a, b] = kind.columns();
            let _ = writeln!(
                out,
                "**{} {}**\n\n| size | implementation | {a} | {b} | ratio | cores | CPU/msg | compared with |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
                family.name(),
                kind.name()
            );
            for r in self.rows_of(family, kind) {
                let [a, b, ratio] = r.cells();
                let [cores, per] = r.cpu_cells();
                let _ = writeln!(
                    out,
                    "| {} | {} | {a} | {b} | {ratio} | {cores} | {per} | {} |",
                    size_label(r.size),
                    r.name,
                    r.vs.unwrap_or("")
                );
            }
            let _ = writeln!(out);
        }
        if !self.targets.is_empty() {
            let _ = writeln!(
                out,
                "**targets (design targets, docs/DESIGN.md section 5)**\n\n| comparison | target | measured | status |\n| --- | ---: | ---: | --- |"
            );
            for t in &self.targets {
                let status = match t.met() {
                    Some(true) => "met",
                    Some(false) => "**not met**",
                    None => "not measured",
                };
                let _ = writeln!(
                    out,
                    "| {} | {} {}x | {} | {status} |",
                    t.what,
                    t.bound.symbol(),
                    t.target,
                    t.measured_text()
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cpu: Option<CpuUse>) -> Row {
        Row {
            family: Family::Ring,
            kind: Kind::Throughput,
            size: 64,
            name: "x",
            is_baseline: false,
            vs: None,
            count: 4000,
            elapsed: Duration::from_millis(2),
            latency: None,
            ratio: None,
            cpu,
        }
    }

    #[test]
    fn cpu_use_says_cores_busy_and_cpu_per_message() {
        let c = CpuUse {
            cpu: Duration::from_millis(3),
            wall: Duration::from_millis(2),
        };
        assert!((c.cores() - 1.5).abs() < 1e-9);
        assert_eq!(c.per_message(4000), Duration::from_nanos(750));
        // No message: the whole CPU time, never a division by zero.
        assert_eq!(c.per_message(0), Duration::from_millis(3));
        assert_eq!(row(Some(c)).cpu_cells(), ["1.50", "750 ns"]);
        assert_eq!(row(None).cpu_cells(), ["-", "-"]);
        let report = Report {
            rows: vec![row(Some(c))],
            ..Report::default()
        };
        let table = report.table();
        assert!(
            table.contains("cores") && table.contains("CPU/msg") && table.contains("750 ns"),
            "{table}"
        );
        assert!(report.markdown().contains("| 1.50 | 750 ns |"));
    }
}
