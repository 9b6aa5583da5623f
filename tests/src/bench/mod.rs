//! `gpu-bench`: the same workloads on several vhost-user-gpu backends, side by side.
//!
//! For every workload, rounds of one sample per backend run interleaved (A B C, A B C, ...)
//! so that machine noise hits all backends alike; the first `warmup` rounds are discarded and
//! the medians of the remaining `reps` are reported, with ratios against the first backend and
//! the fraction of the physical floor ([`floors`]) measured in the same run.
//!
//! Each sample starts a fresh daemon process (see [`workloads::run_sample`]): QEMU's C backend
//! exits when its frontend disconnects, so a daemon cannot serve several samples anyway; a
//! process's peak RSS (VmHWM) is a lifetime figure, so a per-workload peak needs a fresh
//! process; and fresh processes keep samples independent. Start-up and connection are not
//! timed.
//!
//! The 3D rows also get a library-direct column ([`direct`], `virgl-direct`): the same
//! command streams submitted straight into libvirglrenderer in one process. It is their
//! floor: every backend's share of it is what vhost-user and the daemon cost.
//!
//! A workload a backend cannot run is reported with its reason ("n/a: no VIRGL feature",
//! "failed: ..."), never dropped.

pub mod direct;
pub mod draw;
pub mod floors;
pub mod json;
pub mod peer;
pub mod report;
pub mod sys;
pub mod workloads;

use std::time::{Duration, Instant};

use crate::process::{BackendCommand, SOCKET_PLACEHOLDER};
use floors::Floors;
use workloads::{Outcome, SampleSettings, Workload};

/// Column name of the library-direct floor ([`Backend::direct`]).
pub const DIRECT_NAME: &str = "virgl-direct";

/// Most backends in one run.
pub const MAX_BACKENDS: usize = 16;
/// Most rounds (warm-up + repetitions).
pub const MAX_ROUNDS: u32 = 1000;
/// Longest timed loop of one sample.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// A backend under test.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Short name for the table.
    pub name: String,
    /// The command line as given.
    pub command_line: String,
    /// The command.
    pub command: BackendCommand,
    /// Not a daemon: the library-direct floor of the 3D rows ([`direct`]), run in a process of
    /// its own per sample.
    pub direct: bool,
}

impl Backend {
    /// Parse `NAME=COMMAND LINE` (split on white space; `{sock}` or `{socket}` stands for the
    /// socket path; without either, `--socket-path PATH` is appended).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (name, line) = spec
            .split_once('=')
            .ok_or_else(|| format!("backend '{spec}' is not NAME=COMMAND"))?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("backend name '{name}' must be one non-empty word"));
        }
        let mut parts = line.split_whitespace();
        let program = parts
            .next()
            .ok_or_else(|| format!("backend '{name}' has an empty command"))?;
        let mut command = BackendCommand::new(program);
        for a in parts {
            command = command.arg(if a == "{sock}" { SOCKET_PLACEHOLDER } else { a });
        }
        Ok(Backend {
            name: name.to_owned(),
            command_line: line.trim().to_owned(),
            command,
            direct: false,
        })
    }

    /// The library-direct floor as a column of its own: the 3D rows' command streams submitted
    /// straight into libvirglrenderer ([`direct`]); not applicable to the other rows.
    pub fn direct() -> Self {
        Backend {
            name: DIRECT_NAME.to_owned(),
            command_line: format!("(this program) {} ...", direct::CHILD_FLAG),
            command: BackendCommand::new("/proc/self/exe"),
            direct: true,
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Backends; the first is the baseline.
    pub backends: Vec<Backend>,
    /// Workloads, in order.
    pub workloads: Vec<Workload>,
    /// Rounds discarded.
    pub warmup: u32,
    /// Rounds kept.
    pub reps: u32,
    /// Timed loop of each sample.
    pub duration: Duration,
}

impl Settings {
    /// Check the bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.backends.is_empty() || self.backends.len() > MAX_BACKENDS {
            return Err(format!("1 to {MAX_BACKENDS} backends needed"));
        }
        for (i, b) in self.backends.iter().enumerate() {
            if self.backends[..i].iter().any(|o| o.name == b.name) {
                return Err(format!("backend name '{}' given twice", b.name));
            }
        }
        if self.workloads.is_empty() {
            return Err("no workload".into());
        }
        if self.reps == 0 || self.warmup + self.reps > MAX_ROUNDS {
            return Err(format!(
                "reps must be >= 1 and warmup + reps <= {MAX_ROUNDS}"
            ));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(format!(
                "duration must be in (0, {}] s",
                MAX_DURATION.as_secs()
            ));
        }
        Ok(())
    }
}

/// The samples of one (workload, backend).
#[derive(Clone, Debug, Default)]
pub struct Cell {
    /// Kept samples' metrics.
    pub samples: Vec<Vec<(&'static str, f64)>>,
    /// Why it cannot run (set once, never retried).
    pub not_applicable: Option<String>,
    /// Failures of kept rounds (and of warm-up rounds, labelled).
    pub failures: Vec<String>,
}

impl Cell {
    /// Median of a metric over the kept samples.
    pub fn median(&self, key: &str) -> Option<f64> {
        let v: Vec<f64> = self
            .samples
            .iter()
            .filter_map(|s| s.iter().find(|(k, _)| *k == key).map(|(_, v)| *v))
            .filter(|v| v.is_finite())
            .collect();
        floors::median(&v)
    }

    /// All values of a metric, in round order.
    pub fn values(&self, key: &str) -> Vec<f64> {
        self.samples
            .iter()
            .filter_map(|s| s.iter().find(|(k, _)| *k == key).map(|(_, v)| *v))
            .collect()
    }

    /// "n/a: ..." / "failed: ..." when there is no value to show.
    pub fn status(&self) -> Result<(), String> {
        if let Some(r) = &self.not_applicable {
            return Err(format!("n/a: {r}"));
        }
        if self.samples.is_empty() {
            return Err(format!(
                "failed: {}",
                self.failures.first().map_or("no sample", String::as_str)
            ));
        }
        Ok(())
    }
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// The settings.
    pub settings: Settings,
    /// Floors at the start of the run.
    pub floors_before: Floors,
    /// Floors at the end of the run.
    pub floors_after: Floors,
    /// `cells[workload index][backend index]`.
    pub cells: Vec<Vec<Cell>>,
    /// Wall time of the whole run.
    pub wall: Duration,
}

impl RunResult {
    /// The floor of `w`'s primary metric and what it assumes: for the 3D rows, the median of
    /// the library-direct column when the run has one (what libvirglrenderer itself reaches in
    /// one process); otherwise the physical floor of [`Workload::floor`].
    pub fn floor(&self, w: Workload) -> (f64, String) {
        if w.needs_3d() {
            let wi = self.settings.workloads.iter().position(|&x| x == w);
            let di = self.settings.backends.iter().position(|b| b.direct);
            if let (Some(wi), Some(di)) = (wi, di) {
                let key = w.metrics()[0].key;
                if let Some(v) = self.cells[wi][di].median(key) {
                    return (
                        v,
                        "the same command streams submitted straight into libvirglrenderer in \
                         one process (no vhost-user), median of this run's virgl-direct column"
                            .into(),
                    );
                }
            }
        }
        w.floor(&self.floors())
    }

    /// The floors the table uses: the better (faster) of before and after for each figure, so
    /// that a floor is never made easier by noise.
    pub fn floors(&self) -> Floors {
        Floors {
            memcpy_bps_1080p: self
                .floors_before
                .memcpy_bps_1080p
                .max(self.floors_after.memcpy_bps_1080p),
            memcpy_bps_2160p: self
                .floors_before
                .memcpy_bps_2160p
                .max(self.floors_after.memcpy_bps_2160p),
            eventfd_rtt_s: self
                .floors_before
                .eventfd_rtt_s
                .min(self.floors_after.eventfd_rtt_s),
            eventfd_rtt_cross_cpu_s: match (
                self.floors_before.eventfd_rtt_cross_cpu_s,
                self.floors_after.eventfd_rtt_cross_cpu_s,
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            polled_rtt_cross_cpu_s: match (
                self.floors_before.polled_rtt_cross_cpu_s,
                self.floors_after.polled_rtt_cross_cpu_s,
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// Run everything; `progress` gets one line per sample.
pub fn run(settings: &Settings, mut progress: impl FnMut(&str)) -> crate::Result<RunResult> {
    let t0 = Instant::now();
    let floors_before = Floors::measure()?;
    let nb = settings.backends.len();
    let mut cells = vec![vec![Cell::default(); nb]; settings.workloads.len()];
    let ss = SampleSettings {
        duration: settings.duration,
    };
    let rounds = settings.warmup + settings.reps;
    for (wi, &w) in settings.workloads.iter().enumerate() {
        for round in 0..rounds {
            let warm = round < settings.warmup;
            for (bi, b) in settings.backends.iter().enumerate() {
                let cell = &mut cells[wi][bi];
                if cell.not_applicable.is_some() {
                    continue;
                }
                let o = if b.direct {
                    direct::run_sample(w, ss)
                } else {
                    workloads::run_sample(&b.command, w, ss)
                };
                let tag = if warm { "warm-up" } else { "rep" };
                let line = match &o {
                    Outcome::Ok(m) => format!(
                        "{:<14} {:<14} {tag} {:>2}: {}",
                        w.name(),
                        b.name,
                        round,
                        m.iter()
                            .map(|(k, v)| format!("{k}={v:.3}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    Outcome::NotApplicable(r) => {
                        format!("{:<14} {:<14} n/a: {r}", w.name(), b.name)
                    }
                    Outcome::Failed(r) => format!(
                        "{:<14} {:<14} {tag} {:>2}: FAILED {r}",
                        w.name(),
                        b.name,
                        round
                    ),
                };
                progress(&line);
                match o {
                    Outcome::Ok(m) if !warm => cell.samples.push(m),
                    Outcome::Ok(_) => {}
                    Outcome::NotApplicable(r) => cell.not_applicable = Some(r),
                    Outcome::Failed(r) if !warm => cell.failures.push(r),
                    Outcome::Failed(r) => cell.failures.push(format!("(warm-up) {r}")),
                }
            }
        }
    }
    let floors_after = Floors::measure()?;
    Ok(RunResult {
        settings: settings.clone(),
        floors_before,
        floors_after,
        cells,
        wall: t0.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_spec() {
        let b = Backend::parse("qemu=/usr/lib/qemu/vhost-user-gpu --socket-path {sock}").unwrap();
        assert_eq!(b.name, "qemu");
        assert_eq!(b.command.args.len(), 2);
        assert_eq!(b.command.args[1], SOCKET_PLACEHOLDER);
        assert!(Backend::parse("noequals").is_err());
        assert!(Backend::parse("x=").is_err());
        assert!(Backend::parse("=cmd").is_err());
    }
}
