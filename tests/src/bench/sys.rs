//! What the benchmark reads from the system: a process's CPU time (`/proc/PID/stat`), its peak
//! RSS, and a description of the machine.

use std::fs;

use crate::bench::json::Json;

/// CPU time a process has used (user + system, all its threads, live and exited), in seconds.
/// Resolution: one clock tick (`sysconf(_SC_CLK_TCK)`, usually 10 ms).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state);
    // utime is field 14 and stime field 15.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// Clock ticks per second.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Number of online CPUs.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn first_line_with(path: &str, prefix: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// CPU model, core count, memory, kernel and OS as a JSON object.
pub fn machine() -> Json {
    let mut m = Json::obj();
    m.set(
        "cpu_model",
        first_line_with("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into()),
    );
    m.set("cpus", cpus());
    m.set(
        "memory",
        first_line_with("/proc/meminfo", "MemTotal").unwrap_or_else(|| "unknown".into()),
    );
    m.set(
        "kernel",
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into()),
    );
    m.set(
        "os",
        first_line_with_eq("/etc/os-release", "PRETTY_NAME").unwrap_or_else(|| "unknown".into()),
    );
    m
}

fn first_line_with_eq(path: &str, key: &str) -> Option<String> {
    fs::read_to_string(path).ok()?.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix('=')
            .map(|v| v.trim_matches('"').to_owned())
    })
}
