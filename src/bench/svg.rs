//! The SVG chart of a [`Report`]: one panel of log-scale bar clusters per
//! family and kind, then the design targets. Plain SVG text: no scripts, fonts or stylesheets.

use std::fmt::Write as _;

use super::report::{short_duration, si, size_label, Family, Kind, Report, Row, TargetStatus};

/// Width of the whole chart, in pixels.
const WIDTH: f64 = 1000.0;
/// Height of the title block.
const HEADER: f64 = 64.0;
/// Height of one panel.
const PANEL: f64 = 260.0;
/// Left edge of a panel's plot area (room for the y labels).
const PLOT_LEFT: f64 = 80.0;
/// Right edge of a panel's plot area (the legend sits to its right).
const PLOT_RIGHT: f64 = 740.0;
/// Left edge of a panel's legend.
const LEGEND_X: f64 = 760.0;
/// Top of the plot area, relative to the panel's top.
const PLOT_TOP: f64 = 48.0;
/// Bottom of the plot area (the x axis), relative to the panel's top.
const PLOT_BOTTOM: f64 = 220.0;
/// Height of one line of the targets block.
const TARGET_LINE: f64 = 18.0;
/// Colour of a met target.
const GREEN: &str = "#2e7d32";
/// Colour of a target that was not met.
const RED: &str = "#c62828";
/// Colour of secondary text: axis labels, notes, targets not measured.
const GREY: &str = "#666666";
/// Colour of axes and whiskers.
const INK: &str = "#333333";
/// Text attributes of panel and block titles.
const HEADING: &str = r#" font-size="14" font-weight="bold""#;
/// Text attributes of the chart's title.
const TITLE: &str = r#" font-size="20" font-weight="bold""#;
/// Text attributes of centred labels.
const MIDDLE: &str = r#" text-anchor="middle""#;
/// Text attributes of the small labels above bars.
const SMALL: &str = r#" text-anchor="middle" font-size="9""#;
/// Bar colours, by an implementation's first appearance in its panel (Tableau 10).
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// Draws `report` as a self-contained SVG document (no scripts, no external fonts/CSS).
///
/// One panel per (family, kind) in the order the rows first mention them, each a cluster of
/// bars per message size on a log10 axis, then the targets. Values that are not finite or
/// not positive get no bar and do not count towards the axis bounds.
pub fn render(report: &Report) -> String {
    let panels = report.panels();
    let body = PANEL * panels.len() as f64 + if panels.is_empty() { 40.0 } else { 0.0 };
    let targets = match report.targets.len() {
        0 => 0.0,
        n => 36.0 + TARGET_LINE * n as f64,
    };
    let height = HEADER + body + targets + 16.0;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    text(&mut out, 20.0, 28.0, TITLE, "ipcprop bench");
    let grey = format!(r#" fill="{GREY}""#);
    text(&mut out, 20.0, 50.0, &grey, &report.machine.describe());
    if panels.is_empty() {
        text(&mut out, 20.0, HEADER + 20.0, "", "no measurements");
    }
    for (i, &(family, kind)) in panels.iter().enumerate() {
        let rows: Vec<&Row> = report
            .rows
            .iter()
            .filter(|r| (r.family, r.kind) == (family, kind))
            .collect();
        panel(&mut out, family, kind, &rows, HEADER + PANEL * i as f64);
    }
    if !report.targets.is_empty() {
        targets_block(&mut out, &report.targets, HEADER + body);
    }
    out.push_str("</svg>\n");
    out
}

/// The figure a row's bar shows, if it has one: finite and positive, and for latency rows
/// only when the percentiles were measured.
fn plotted(row: &Row) -> Option<f64> {
    if row.kind == Kind::Latency && row.latency.is_none() {
        return None;
    }
    Some(row.value()).filter(|v| v.is_finite() && *v > 0.0)
}

/// The p99 whisker of a latency row that has a bar, in nanoseconds.
fn whisker(row: &Row) -> Option<f64> {
    plotted(row)?;
    let (_, p99) = row.latency?;
    Some(p99.as_nanos() as f64).filter(|v| v.is_finite() && *v > 0.0)
}

/// A panel's log10 axis: whole decades from `10^lo` to `10^hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Axis {
    /// Exponent at the x axis.
    lo: i32,
    /// Exponent at the top of the plot; always above `lo`.
    hi: i32,
}

impl Axis {
    /// The decades covering the finite, positive `values`; `None` if there are none.
    fn covering(values: impl IntoIterator<Item = f64>) -> Option<Axis> {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.into_iter().filter(|v| v.is_finite() && *v > 0.0) {
            min = min.min(v);
            max = max.max(v);
        }
        if min > max {
            return None;
        }
        let (lmin, lmax) = (min.log10(), max.log10());
        let mut lo = lmin.floor() as i32;
        if lmin - f64::from(lo) < 0.1 {
            // A bar sitting right on the axis would be invisible: give it a decade.
            lo = lo.saturating_sub(1);
        }
        let hi = (lmax.ceil() as i32).max(lo.saturating_add(1));
        Some(Axis { lo, hi })
    }

    /// The y coordinate of `v` in a plot from `top` (at `10^hi`) to `bottom` (at `10^lo`).
    fn y(self, v: f64, top: f64, bottom: f64) -> f64 {
        let t = (v.log10() - f64::from(self.lo)) / f64::from(self.hi - self.lo);
        bottom - t.clamp(0.0, 1.0) * (bottom - top)
    }
}

/// The label of the gridline at `10^exp`: `"1.00 M"` for throughput, `"10 us"` for latency.
fn decade_label(kind: Kind, exp: i32) -> String {
    match kind {
        Kind::Throughput if (0..=11).contains(&exp) => si(10f64.powi(exp)),
        Kind::Throughput => format!("1e{exp}"),
        Kind::Latency if (0..=11).contains(&exp) => {
            let unit = ["ns", "us", "ms", "s"][(exp / 3) as usize];
            format!("{} {unit}", 10u64.pow((exp % 3) as u32))
        }
        Kind::Latency => format!("1e{exp} ns"),
    }
}

/// Draws one (family, kind) panel with its top edge at `top`.
fn panel(out: &mut String, family: Family, kind: Kind, rows: &[&Row], top: f64) {
    let unit = match (kind, family) {
        (Kind::Throughput, Family::Fork) => "cases/s",
        (Kind::Throughput, _) => "messages/s",
        (Kind::Latency, _) => "one-way p50",
    };
    let grey = format!(r#" fill="{GREY}""#);
    let _ = writeln!(out, "<g>");
    let title = format!("{}: {} ({unit}, log scale)", family.name(), kind.name());
    text(out, 20.0, top + 24.0, HEADING, &title);
    let (ptop, pbottom) = (top + PLOT_TOP, top + PLOT_BOTTOM);

    let mut names: Vec<(&str, bool)> = Vec::new();
    for r in rows {
        match names.iter_mut().find(|(n, _)| *n == r.name) {
            Some(entry) => entry.1 |= r.is_baseline,
            None => names.push((r.name, r.is_baseline)),
        }
    }
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    legend(out, kind, &names, ptop);

    let values = rows.iter().flat_map(|r| [plotted(r), whisker(r)]).flatten();
    let Some(axis) = Axis::covering(values) else {
        let mid = (ptop + pbottom) / 2.0;
        text(out, PLOT_LEFT, mid, &grey, "no finite values to plot");
        let _ = writeln!(out, "</g>");
        return;
    };

    // Gridlines and labels, at most about ten of them.
    let step = ((axis.hi - axis.lo + 9) / 10).max(1) as usize;
    let end_grey = format!(r#" text-anchor="end"{grey}"#);
    for exp in (axis.lo..=axis.hi).step_by(step) {
        let y = axis.y(10f64.powi(exp), ptop, pbottom);
        let d = format!("M{PLOT_LEFT} {y:.1} H{PLOT_RIGHT}");
        path(out, &d, "#dddddd");
        let label = decade_label(kind, exp);
        text(out, PLOT_LEFT - 6.0, y + 4.0, &end_grey, &label);
    }
    let d = format!("M{PLOT_LEFT} {ptop:.1} V{pbottom:.1} H{PLOT_RIGHT}");
    path(out, &d, INK);

    let cluster = (PLOT_RIGHT - PLOT_LEFT) / sizes.len().max(1) as f64;
    let bar = (cluster * 0.8 / names.len().max(1) as f64).min(48.0);
    for (ci, &size) in sizes.iter().enumerate() {
        let x0 = PLOT_LEFT + cluster * ci as f64 + (cluster - bar * names.len() as f64) / 2.0;
        let centre = PLOT_LEFT + cluster * (ci as f64 + 0.5);
        text(out, centre, pbottom + 16.0, MIDDLE, &size_label(size));
        for r in rows.iter().filter(|r| r.size == size) {
            let slot = names.iter().position(|(n, _)| *n == r.name).unwrap_or(0);
            let (x, mid) = (x0 + bar * slot as f64, x0 + bar * (slot as f64 + 0.5));
            let Some(v) = plotted(r) else {
                text(out, mid, pbottom - 3.0, &format!("{SMALL}{grey}"), "n/a");
                continue;
            };
            let y = axis.y(v, ptop, pbottom);
            let what = match r.latency.filter(|_| kind == Kind::Latency) {
                Some((p50, p99)) => {
                    format!("p50 {}, p99 {}", short_duration(p50), short_duration(p99))
                }
                None => format!("{} {unit}", si(v)),
            };
            let tip = format!("{}, {}: {what}", r.name, size_label(size));
            let fill = PALETTE[slot % PALETTE.len()];
            rect(out, (x, y, (bar - 1.0).max(0.5), pbottom - y), fill, &tip);
            let mut label_y = y;
            if let Some(p99) = whisker(r) {
                let wy = axis.y(p99, ptop, pbottom);
                let (a, w) = (mid - bar / 4.0, bar / 2.0);
                let d = format!("M{mid:.1} {y:.1} V{wy:.1} M{a:.1} {wy:.1} h{w:.1}");
                path(out, &d, INK);
                label_y = label_y.min(wy);
            }
            let label = match (r.is_baseline, r.ratio) {
                (true, _) => "base".to_string(),
                (false, Some(q)) if q.is_finite() => format!("{q:.2}x"),
                _ => continue,
            };
            text(out, mid, label_y - 3.0, SMALL, &label);
        }
    }
    let _ = writeln!(out, "</g>");
}

/// Draws a panel's legend, implementation name to colour, from `top` down.
fn legend(out: &mut String, kind: Kind, names: &[(&str, bool)], top: f64) {
    let line = (160.0 / (names.len() + 1) as f64).min(16.0);
    let _ = writeln!(out, r#"<g class="legend">"#);
    for (i, (name, baseline)) in names.iter().enumerate() {
        let y = top + line * i as f64;
        let fill = PALETTE[i % PALETTE.len()];
        rect(out, (LEGEND_X, y, 10.0, 10.0), fill, "");
        let label = format!("{name}{}", if *baseline { " (baseline)" } else { "" });
        text(out, LEGEND_X + 16.0, y + 9.0, "", &label);
    }
    if kind == Kind::Latency {
        let (x, y) = (LEGEND_X, top + line * names.len() as f64);
        path(
            out,
            &format!("M{:.1} {:.1} h8 m-4 0 v9", x + 1.0, y + 1.0),
            INK,
        );
        text(out, x + 16.0, y + 9.0, &format!(r#" fill="{GREY}""#), "p99");
    }
    let _ = writeln!(out, "</g>");
}

/// Draws the targets block with its top edge at `top`.
fn targets_block(out: &mut String, targets: &[TargetStatus], top: f64) {
    let _ = writeln!(out, r#"<g class="targets">"#);
    text(out, 20.0, top + 22.0, HEADING, "targets");
    for (i, t) in targets.iter().enumerate() {
        let y = top + 36.0 + TARGET_LINE * (i as f64 + 0.7);
        let bound = t.bound.symbol();
        let target = match t.target {
            v if v.is_finite() => format!("{bound} {v}x"),
            _ => format!("{bound} -"),
        };
        let measured = t.measured_text();
        let (verdict, colour) = match t.met() {
            Some(true) => ("met", GREEN),
            Some(false) => ("NOT met", RED),
            None => ("not measured", GREY),
        };
        text(out, 20.0, y, "", t.what);
        text(out, 560.0, y, "", &target);
        text(out, 690.0, y, "", &measured);
        text(out, 790.0, y, &format!(r#" fill="{colour}""#), verdict);
    }
    let _ = writeln!(out, "</g>");
}

/// Appends a `<text>` at (`x`, `y`) with extra attributes `attrs` and the escaped `body`.
fn text(out: &mut String, x: f64, y: f64, attrs: &str, body: &str) {
    let body = escape(body);
    let _ = writeln!(out, r#"<text x="{x:.1}" y="{y:.1}"{attrs}>{body}</text>"#);
}

/// Appends an unfilled `<path>` drawing `d` in `stroke`.
fn path(out: &mut String, d: &str, stroke: &str) {
    let _ = writeln!(out, r#"<path d="{d}" fill="none" stroke="{stroke}"/>"#);
}

/// Appends a `<rect>` filled with `fill`, with the escaped tooltip `tip` unless it is empty.
fn rect(out: &mut String, (x, y, w, h): (f64, f64, f64, f64), fill: &str, tip: &str) {
    let _ = write!(
        out,
        r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}""#
    );
    let _ = match escape(tip).as_str() {
        "" => writeln!(out, r#" fill="{fill}"/>"#),
        tip => writeln!(out, r#" fill="{fill}"><title>{tip}</title></rect>"#),
    };
}

/// Escapes `s` for XML text and attribute values, dropping the control characters XML 1.0
/// does not allow (tabs and newlines become spaces).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Bound;
    use std::time::Duration;

    /// A throughput row of 1000 messages in 1 ms (1 M/s).
    fn tp(family: Family, size: usize, name: &'static str, base: bool) -> Row {
        Row {
            family,
            kind: Kind::Throughput,
            size,
            name,
            is_baseline: base,
            vs: None,
            count: 1000,
            elapsed: Duration::from_millis(1),
            latency: None,
            ratio: if base { None } else { Some(0.37) },
            cpu: None,
        }
    }

    /// A ring latency row with the given p50 and p99, in nanoseconds.
    fn lat(size: usize, name: &'static str, base: bool, p50: u64, p99: u64) -> Row {
        let mut r = tp(Family::Ring, size, name, base);
        r.kind = Kind::Latency;
        r.latency = Some((Duration::from_nanos(p50), Duration::from_nanos(p99)));
        r
    }

    fn sample() -> Report {
        let mut rows = Vec::new();
        for size in [64, 4096] {
            rows.push(tp(Family::Pipe, size, "raw write", true));
            rows.push(tp(Family::Pipe, size, "ipcprop send", false));
            rows.push(tp(Family::Pipe, size, "UnixStream (pair)", false));
            rows.last_mut().unwrap().count = 250_000;
        }
        rows.push(lat(64, "shm spin", true, 80, 300));
        rows.push(lat(64, "ipcprop ring", false, 150, 2_000));
        rows.push(lat(64, "rtrb (threads)", false, 120, 900));
        let mut report = Report {
            rows,
            ..Report::default()
        };
        report.machine.cpu = "CPU <x86> & co".into();
        let mut t = TargetStatus {
            what: "send / raw write",
            bound: Bound::AtLeast,
            target: 0.5,
            measured: Some(0.37),
        };
        report.targets.push(t.clone());
        (t.what, t.bound, t.target, t.measured) = ("ring / spin", Bound::AtMost, 2.0, Some(1.87));
        report.targets.push(t.clone());
        (t.what, t.measured) = ("queue / queue-file", None);
        report.targets.push(t);
        report
    }

    /// A minimal well-formedness check: one root element, balanced tags, quoted attributes,
    /// no stray `<` or `>`, and `&` only as one of the five predefined entities.
    fn assert_well_formed(svg: &str) {
        for (i, _) in svg.match_indices('&') {
            let entities = ["amp;", "lt;", "gt;", "quot;", "apos;"];
            assert!(
                entities.iter().any(|e| svg[i + 1..].starts_with(e)),
                "bare & at {i}"
            );
        }
        let (mut stack, mut roots, mut rest) = (Vec::new(), 0, svg);
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            assert!(!text.contains('>'), "stray > in {text:?}");
            assert!(
                !stack.is_empty() || text.trim().is_empty(),
                "text outside root"
            );
            let close = open + rest[open..].find('>').expect("unclosed tag");
            let tag = &rest[open + 1..close];
            assert!(
                !tag.contains('<') && tag.matches('"').count() % 2 == 0,
                "{tag}"
            );
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
            } else {
                let name = tag.split([' ', '/']).next().unwrap();
                assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()));
                roots += usize::from(stack.is_empty());
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[close + 1..];
        }
        assert!(
            rest.trim().is_empty() && stack.is_empty(),
            "unclosed {stack:?}"
        );
        assert_eq!(roots, 1, "expected exactly one root element");
    }

    #[test]
    fn sample_renders_well_formed_with_panels_in_order() {
        let svg = render(&sample());
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_well_formed(&svg);
        assert!(svg.contains(">ipcprop bench</text>"));
        assert!(svg.contains("CPU &lt;x86&gt; &amp; co"));
        let pipe = svg.find(">pipe: throughput (messages/s, log scale)<");
        let ring = svg.find(">ring: latency (one-way p50, log scale)<");
        assert!(pipe.is_some() && ring.is_some() && pipe < ring);
        assert!(!svg.contains("<script") && !svg.contains("href") && !svg.contains("@import"));
    }

    #[test]
    fn legend_lists_names_and_baselines_with_stable_colours() {
        let svg = render(&sample());
        let legend: String = svg
            .split(r#"<g class="legend">"#)
            .skip(1)
            .flat_map(|s| s.split("</g>").next())
            .collect();
        for name in ["ipcprop send", "UnixStream (pair)", "rtrb (threads)", "p99"] {
            assert!(legend.contains(&format!(">{name}</text>")), "{name}");
        }
        assert!(legend.contains(">raw write (baseline)<"));
        assert!(legend.contains(">shm spin (baseline)<"));
        // (name, fill) of every bar: the same name has the same colour in both clusters.
        fn bar(r: &str) -> Option<(&str, &str)> {
            let fill = r.split("fill=\"").nth(1)?.split('"').next()?;
            Some((r.split("<title>").nth(1)?.split(", ").next()?, fill))
        }
        let bars: Vec<(&str, &str)> = svg.split("<rect ").filter_map(bar).collect();
        let send: Vec<_> = bars.iter().filter(|(n, _)| *n == "ipcprop send").collect();
        assert_eq!(send.len(), 2, "one bar per cluster");
        assert_eq!(send[0].1, send[1].1);
        let raw = bars.iter().find(|(n, _)| *n == "raw write").unwrap();
        assert_ne!(raw.1, send[0].1);
    }

    #[test]
    fn ratios_whiskers_axis_labels_and_targets() {
        let svg = render(&sample());
        assert!(svg.contains(">0.37x</text>") && svg.contains(">base</text>"));
        assert!(svg.contains(">1.00 M</text>"), "throughput gridline label");
        assert!(svg.contains(">100 ns</text>") && svg.contains(">1 us</text>"));
        assert!(
            svg.contains("p50 150 ns, p99 2.0 us") && svg.contains(" h"),
            "p99 whisker"
        );
        assert!(svg.contains(&format!(r#"fill="{RED}">NOT met</text>"#)));
        assert!(svg.contains(&format!(r#"fill="{GREEN}">met</text>"#)));
        assert!(svg.contains(">not measured</text>") && svg.contains(">-</text>"));
        assert!(svg.contains(">&gt;= 0.5x</text>") && svg.contains(">&lt;= 2x</text>"));
    }

    #[test]
    fn text_is_escaped() {
        let mut report = sample();
        report.rows[1].name = "a<&>\"'b";
        let svg = render(&report);
        assert_well_formed(&svg);
        assert!(svg.contains("a&lt;&amp;&gt;&quot;&apos;b") && !svg.contains("a<&>"));
        assert_eq!(escape("x\u{1}\ty\u{ffff}"), "x y");
    }

    #[test]
    fn empty_and_degenerate_reports_do_not_panic_or_leak_nan() {
        let svg = render(&Report::default());
        assert_well_formed(&svg);
        assert!(svg.contains("no measurements") && !svg.contains("targets"));

        let mut rows = vec![tp(Family::Queue, 0, "zero", true); 4];
        rows[0].count = 0;
        (rows[1].name, rows[1].elapsed, rows[1].count) = ("instant", Duration::ZERO, u64::MAX);
        rows[1].ratio = Some(f64::NAN);
        (rows[2].size, rows[2].ratio) = (64, Some(f64::INFINITY)); // duplicated name
        (rows[3].kind, rows[3].ratio) = (Kind::Latency, Some(f64::NEG_INFINITY)); // no p50
        rows.push(lat(8, "dup", true, 100, 100));
        rows.push(lat(8, "dup", false, 100, 100));
        rows.push(lat(16, "dup", false, 100, 50)); // p99 below p50
        rows.push(lat(32, "zero", false, 0, 0));
        rows.push(tp(Family::Fork, 0, "equal", true));
        rows.push(tp(Family::Fork, 1, "equal", false));
        let mut t = sample().targets.remove(0);
        (t.target, t.measured) = (f64::INFINITY, Some(f64::NAN));
        for rows in [rows, vec![lat(8, "one", true, 0, 0)]] {
            let targets = vec![t.clone()];
            let svg = render(&Report {
                rows,
                targets,
                ..Report::default()
            });
            assert_well_formed(&svg);
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
            assert!(svg.contains("no finite values to plot")); // no p50 / all zero
        }
    }

    #[test]
    fn axis_rounds_out_to_decades() {
        assert_eq!(Axis::covering([f64::NAN, 0.0, -1.0, f64::INFINITY]), None);
        assert_eq!(Axis::covering([5.0, 5.0]), Some(Axis { lo: 0, hi: 1 }));
        assert_eq!(Axis::covering([1000.0]), Some(Axis { lo: 2, hi: 3 }));
        assert_eq!(Axis::covering([350.0, 2.5e6]), Some(Axis { lo: 2, hi: 7 }));
        let axis = Axis { lo: 2, hi: 4 };
        let ys = [1.0, 100.0, 1e3, 1e4, 1e9].map(|v| axis.y(v, 0.0, 200.0));
        assert_eq!(ys, [200.0, 200.0, 100.0, 0.0, 0.0]);
        assert_eq!(decade_label(Kind::Throughput, 6), "1.00 M");
        assert_eq!(decade_label(Kind::Latency, 2), "100 ns");
        assert_eq!(decade_label(Kind::Latency, 4), "10 us");
        assert_eq!(decade_label(Kind::Latency, -1), "1e-1 ns");
    }
}
