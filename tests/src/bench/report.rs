//! The report of a run: a Markdown table of medians, ratios against the first backend and
//! fractions of the physical floor, and the same as JSON.

use std::fmt::Write as _;

use crate::bench::json::Json;
use crate::bench::workloads::{Metric, Workload};
use crate::bench::{sys, Cell, RunResult};

/// Share of the floor reached: 1.0 means at the floor.
pub fn floor_fraction(m: &Metric, value: f64, floor: f64) -> f64 {
    if m.higher_is_better {
        value / floor
    } else {
        floor / value
    }
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Half the range of the kept samples relative to their median (None with fewer than two).
pub fn spread(values: &[f64], median: f64) -> Option<f64> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 2 || median == 0.0 {
        return None;
    }
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
    Some((hi - lo) / 2.0 / median.abs())
}

/// The cell text of one metric.
fn cell_text(
    cell: &Cell,
    base: &Cell,
    m: &Metric,
    primary_floor: Option<f64>,
    is_base: bool,
    notes: &mut Vec<String>,
) -> String {
    if let Err(s) = cell.status() {
        if primary_floor.is_none() {
            return "-".into();
        }
        return short_reason(&s, notes);
    }
    let Some(v) = cell.median(m.key) else {
        return "failed: no value".into();
    };
    let mut t = fmt_num(v);
    if primary_floor.is_some() {
        if let Some(sp) = spread(&cell.values(m.key), v) {
            let _ = write!(t, " ±{:.0}%", sp * 100.0);
        }
    }
    if !is_base {
        if let Some(b) = base.median(m.key).filter(|b| *b != 0.0) {
            let _ = write!(t, " (x{:.2})", v / b);
        }
    }
    if let Some(f) = primary_floor {
        let _ = write!(t, " [{:.1}% of floor]", 100.0 * floor_fraction(m, v, f));
    }
    let kept = cell.samples.len();
    let failed = cell
        .failures
        .iter()
        .filter(|f| !f.starts_with("(warm-up)"))
        .count();
    if failed > 0 {
        let _ = write!(t, " ({failed}/{} failed)", kept + failed);
    }
    t
}

/// Longest reason shown in a table cell; the whole text goes to a numbered note below.
pub const MAX_CELL_REASON: usize = 40;

fn short_reason(reason: &str, notes: &mut Vec<String>) -> String {
    if reason.chars().count() <= MAX_CELL_REASON {
        return reason.to_owned();
    }
    let n = match notes.iter().position(|r| r == reason) {
        Some(i) => i + 1,
        None => {
            notes.push(reason.to_owned());
            notes.len()
        }
    };
    let cut: String = reason.chars().take(MAX_CELL_REASON).collect();
    format!("{}... [note {n}]", cut.trim_end())
}

/// What a round trip costs with the two threads on two different CPUs (not floors of the
/// table's rows: the scheduler picks the placement), or nothing on one CPU.
fn cross_cpu_note(f: &crate::bench::floors::Floors) -> String {
    let mut parts = Vec::new();
    if let Some(x) = f.eventfd_rtt_cross_cpu_s {
        parts.push(format!(
            "{:.2} us with the two threads on two different CPUs",
            x * 1e6
        ));
    }
    if let Some(x) = f.polled_rtt_cross_cpu_s {
        parts.push(format!(
            "{:.2} us there when one side polls and only the other sleeps, as a polling daemon's \
             frontend does",
            x * 1e6
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" (not a floor: {})", parts.join("; "))
    }
}

/// The Markdown table (with a short header saying how to read it).
pub fn table(r: &RunResult) -> String {
    let s = &r.settings;
    let f = r.floors();
    let mut out = String::new();
    let base = &s.backends[0].name;
    let _ = writeln!(
        out,
        "Medians of {} repetitions ({} warm-up round(s) discarded), {:.2} s timed per sample, \
         backends interleaved, one fresh daemon per sample. (xR) = value / {base}'s value; \
         [% of floor] = share of the physical floor measured in this run; ±N% = half the range \
         of the kept samples around the median (first metric of each workload). Arrows: which \
         way is better.\n",
        s.reps,
        s.warmup,
        s.duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "Floors: memcpy {:.2} GB/s (8.3 MB), {:.2} GB/s (33 MB); eventfd round trip {:.2} us{}.\n",
        f.memcpy_bps_1080p / 1e9,
        f.memcpy_bps_2160p / 1e9,
        f.eventfd_rtt_s * 1e6,
        cross_cpu_note(&f)
    );
    let mut header = vec![
        "workload".to_owned(),
        "metric".to_owned(),
        "floor".to_owned(),
    ];
    header.extend(s.backends.iter().map(|b| b.name.clone()));
    let mut rows = vec![header];
    let mut notes = Vec::new();
    for (wi, &w) in s.workloads.iter().enumerate() {
        let (floor, _) = r.floor(w);
        let cells = &r.cells[wi];
        for (mi, m) in w.metrics().iter().enumerate() {
            let mut row = vec![
                if mi == 0 {
                    w.name().to_owned()
                } else {
                    String::new()
                },
                format!("{} {}", m.label, if m.higher_is_better { "↑" } else { "↓" }),
                if mi == 0 {
                    fmt_num(floor)
                } else {
                    String::new()
                },
            ];
            for (bi, c) in cells.iter().enumerate() {
                row.push(cell_text(
                    c,
                    &cells[0],
                    m,
                    (mi == 0).then_some(floor),
                    bi == 0,
                    &mut notes,
                ));
            }
            rows.push(row);
        }
    }
    let ncol = rows[0].len();
    let widths: Vec<usize> = (0..ncol)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        out.push('|');
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(
                out,
                " {}{} |",
                cell,
                " ".repeat(widths[c] - cell.chars().count())
            );
        }
        out.push('\n');
        if i == 0 {
            out.push('|');
            for w in &widths {
                let _ = write!(out, "{}|", "-".repeat(w + 2));
            }
            out.push('\n');
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for (i, n) in notes.iter().enumerate() {
            let _ = writeln!(out, "[note {}] {n}", i + 1);
        }
    }
    out
}

/// The JSON report.
pub fn to_json(r: &RunResult, command: &str) -> Json {
    let s = &r.settings;
    let f = r.floors();
    let mut root = Json::obj();
    root.set("tool", "gpu-bench").set("format_version", 1u32);
    root.set("command", command);
    root.set("machine", sys::machine());
    let mut st = Json::obj();
    st.set("warmup", s.warmup)
        .set("reps", s.reps)
        .set("duration_s", s.duration.as_secs_f64())
        .set(
            "process_model",
            "one fresh daemon process per (workload, backend, round); rounds interleave the backends",
        );
    root.set("settings", st);
    root.set("wall_s", r.wall.as_secs_f64());
    let floors = |fl: &crate::bench::floors::Floors| {
        let mut o = Json::obj();
        o.set("memcpy_gbps_8mb", fl.memcpy_bps_1080p / 1e9)
            .set("memcpy_gbps_33mb", fl.memcpy_bps_2160p / 1e9)
            .set("eventfd_rtt_us", fl.eventfd_rtt_s * 1e6)
            .set(
                "eventfd_rtt_cross_cpu_us",
                fl.eventfd_rtt_cross_cpu_s.map(|x| x * 1e6),
            )
            .set(
                "polled_rtt_cross_cpu_us",
                fl.polled_rtt_cross_cpu_s.map(|x| x * 1e6),
            );
        o
    };
    let mut fo = floors(&f);
    fo.set("before", floors(&r.floors_before))
        .set("after", floors(&r.floors_after));
    root.set("floors", fo);
    root.set(
        "backends",
        Json::Arr(
            s.backends
                .iter()
                .map(|b| {
                    let mut o = Json::obj();
                    o.set("name", b.name.as_str())
                        .set("command", b.command_line.as_str());
                    o
                })
                .collect(),
        ),
    );
    root.set("baseline", s.backends[0].name.as_str());
    let mut ws = Vec::new();
    for (wi, &w) in s.workloads.iter().enumerate() {
        ws.push(workload_json(w, &r.cells[wi], r));
    }
    root.set("workloads", Json::Arr(ws));
    root
}

fn workload_json(w: Workload, cells: &[Cell], r: &RunResult) -> Json {
    let (floor, assumption) = r.floor(w);
    let primary = &w.metrics()[0];
    let mut o = Json::obj();
    o.set("name", w.name()).set("description", w.description());
    o.set(
        "metrics",
        Json::Arr(
            w.metrics()
                .iter()
                .map(|m| {
                    let mut j = Json::obj();
                    j.set("key", m.key)
                        .set("label", m.label)
                        .set("higher_is_better", m.higher_is_better);
                    j
                })
                .collect(),
        ),
    );
    o.set("primary", primary.key);
    let mut fl = Json::obj();
    fl.set("value", floor).set("assumption", assumption);
    o.set("floor", fl);
    let mut res = Json::obj();
    for (bi, c) in cells.iter().enumerate() {
        let b = &r.settings.backends[bi];
        let mut e = Json::obj();
        match c.status() {
            Ok(()) => {
                e.set("status", "ok");
                let mut ms = Json::obj();
                for m in w.metrics() {
                    let mut mj = Json::obj();
                    let med = c.median(m.key);
                    mj.set("median", med);
                    mj.set(
                        "samples",
                        Json::Arr(c.values(m.key).into_iter().map(Json::Num).collect()),
                    );
                    let ratio = med
                        .zip(cells[0].median(m.key))
                        .filter(|(_, b)| *b != 0.0)
                        .map(|(v, b)| v / b);
                    mj.set(
                        "ratio_vs_baseline",
                        if cells[0].status().is_ok() {
                            ratio
                        } else {
                            None
                        },
                    );
                    ms.set(m.key, mj);
                }
                e.set("metrics", ms);
                e.set(
                    "floor_fraction",
                    c.median(primary.key)
                        .map(|v| floor_fraction(primary, v, floor)),
                );
            }
            Err(reason) => {
                e.set(
                    "status",
                    if c.not_applicable.is_some() {
                        "n/a"
                    } else {
                        "failed"
                    },
                );
                e.set("reason", reason);
            }
        }
        if !c.failures.is_empty() {
            e.set(
                "failures",
                Json::Arr(c.failures.iter().map(|s| Json::Str(s.clone())).collect()),
            );
        }
        res.set(&b.name, e);
    }
    o.set("results", res);
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::floors::Floors;
    use crate::bench::{Backend, Cell, RunResult, Settings};
    use std::time::Duration;

    fn result() -> RunResult {
        let floors = Floors {
            memcpy_bps_1080p: 20e9,
            memcpy_bps_2160p: 10e9,
            eventfd_rtt_s: 10e-6,
            eventfd_rtt_cross_cpu_s: Some(20e-6),
            polled_rtt_cross_cpu_s: Some(15e-6),
        };
        let ok = |fps: &[f64]| Cell {
            samples: fps
                .iter()
                .map(|&f| {
                    vec![
                        ("frames_per_s", f),
                        ("cpu_ms_per_frame", 2.0),
                        ("peak_rss_mib", 30.0),
                    ]
                })
                .collect(),
            ..Cell::default()
        };
        let na = Cell {
            not_applicable: Some("no VIRGL feature".into()),
            ..Cell::default()
        };
        let failed = Cell {
            failures: vec![
                "daemon exited with exit status: 1 before creating its socket [last output: boom]"
                    .into(),
            ],
            ..Cell::default()
        };
        RunResult {
            settings: Settings {
                backends: vec![
                    Backend::parse("a=/bin/a {sock}").unwrap(),
                    Backend::parse("b=/bin/b").unwrap(),
                ],
                workloads: vec![Workload::Scanout1080p, Workload::Submit3d],
                warmup: 0,
                reps: 3,
                duration: Duration::from_secs(1),
            },
            floors_before: floors.clone(),
            floors_after: floors,
            cells: vec![
                vec![ok(&[100.0, 110.0, 90.0]), ok(&[200.0, 200.0, 200.0])],
                vec![na, failed],
            ],
            wall: Duration::from_secs(1),
        }
    }

    #[test]
    fn table_and_json() {
        let r = result();
        let t = table(&r);
        assert!(
            t.contains("| 100.0 ±10% [") && t.contains("200.0 ±0% (x2.00)"),
            "{t}"
        );
        assert!(t.contains("n/a: no VIRGL feature"), "{t}");
        assert!(
            t.contains("[note 1]") && t.contains("[last output: boom]"),
            "{t}"
        );
        let j = Json::parse(&to_json(&r, "gpu-bench x").to_pretty()).unwrap();
        let w = &j.get("workloads").unwrap().as_arr().unwrap()[0];
        let b = w.get("results").unwrap().get("b").unwrap();
        let fps = b.get("metrics").unwrap().get("frames_per_s").unwrap();
        assert_eq!(fps.get("median").and_then(Json::as_f64), Some(200.0));
        assert_eq!(
            fps.get("ratio_vs_baseline").and_then(Json::as_f64),
            Some(2.0)
        );
        let w3 = &j.get("workloads").unwrap().as_arr().unwrap()[1];
        let a3 = w3.get("results").unwrap().get("a").unwrap();
        assert_eq!(a3.get("status").and_then(Json::as_str), Some("n/a"));
        let b3 = w3.get("results").unwrap().get("b").unwrap();
        assert_eq!(b3.get("status").and_then(Json::as_str), Some("failed"));
        assert!(b3
            .get("reason")
            .and_then(Json::as_str)
            .unwrap()
            .contains("boom"));
    }

    #[test]
    fn spread_and_floor_fraction() {
        assert_eq!(spread(&[1.0], 1.0), None);
        assert_eq!(spread(&[90.0, 110.0], 100.0), Some(0.1));
        let hi = Metric {
            key: "x",
            label: "x",
            higher_is_better: true,
        };
        let lo = Metric {
            key: "y",
            label: "y",
            higher_is_better: false,
        };
        assert_eq!(floor_fraction(&hi, 50.0, 100.0), 0.5);
        assert_eq!(floor_fraction(&lo, 20.0, 10.0), 0.5);
    }
}
