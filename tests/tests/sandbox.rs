//! The daemon's sandbox (`--sandbox`, on by default): once it serves a frontend, every one of
//! its threads runs under the seccomp filter with `no_new_privs`, and it keeps serving across
//! reconnects; `--sandbox off` leaves it unconfined. (What the filter refuses is tested in
//! `device/tests/sandbox.rs`.)

mod common;

use common::*;
use vhost_user_gpu_tests::protocol::{resp, Command};
use vhost_user_gpu_tests::{BackendProcess, FrontendOptions};

/// The value of `field` (e.g. `Seccomp:`) in a `/proc/.../status` file.
fn status_field(status_path: &str, field: &str) -> String {
    let status =
        std::fs::read_to_string(status_path).unwrap_or_else(|e| panic!("read {status_path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("{status_path} has no {field} line:\n{status}"))
}

/// Each thread of `p`: (its name, its `Seccomp:` value).
fn threads_seccomp(p: &BackendProcess) -> Vec<(String, String)> {
    let dir = format!("/proc/{}/task", p.pid());
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {dir}: {e}")) {
        let path = entry.unwrap().path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        let status = path.join("status");
        if status.exists() {
            let seccomp = status_field(&status.to_string_lossy(), "Seccomp:");
            threads.push((name.trim().to_owned(), seccomp));
        }
    }
    threads
}

/// A GET_DISPLAY_INFO round trip on a new connection: the daemon serves.
fn display_info(p: &BackendProcess) {
    let mut fe = connect(p, FrontendOptions::default());
    let r = fe
        .request(&Command::get_display_info())
        .check(p, "GET_DISPLAY_INFO");
    assert_resp(&r, resp::OK_DISPLAY_INFO, "GET_DISPLAY_INFO", p);
}

/// The default daemon: after start-up (it accepted a frontend, which happens only once the
/// sandbox is closed) the process and all its threads, the renderer library's included, are in
/// seccomp filter mode with `no_new_privs`, and it serves reconnecting frontends.
fn sandboxed_by_default(rd: Renderer) {
    let p = spawn(&ours(rd.arg()));
    display_info(&p);
    let status = format!("/proc/{}/status", p.pid());
    assert_eq!(
        status_field(&status, "Seccomp:"),
        "2",
        "not in seccomp filter mode\n{}",
        p.stderr_tail()
    );
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1");
    let threads = threads_seccomp(&p);
    assert!(threads.len() > 1, "one thread only: {threads:?}");
    for (name, seccomp) in &threads {
        assert_eq!(seccomp, "2", "thread {name} is not filtered: {threads:?}");
    }
    assert!(
        p.stderr().contains("sandbox closed"),
        "no sandbox line in the log:\n{}",
        p.stderr_tail()
    );
    // Disconnect and reconnect twice under the filter (accept4 on the listening socket).
    display_info(&p);
    display_info(&p);
    assert_eq!(status_field(&status, "Seccomp:"), "2");
}

/// `--sandbox off`: no filter, and the log says so.
fn sandbox_off_leaves_it_unconfined(rd: Renderer) {
    let p = spawn(&ours(rd.arg()).arg("--sandbox").arg("off"));
    display_info(&p);
    let status = format!("/proc/{}/status", p.pid());
    assert_eq!(status_field(&status, "Seccomp:"), "0");
    for (name, seccomp) in threads_seccomp(&p) {
        assert_eq!(seccomp, "0", "thread {name} is filtered with --sandbox off");
    }
    assert!(p.stderr().contains("--sandbox off"), "{}", p.stderr_tail());
}

per_renderer!(sandboxed_by_default, sandbox_off_leaves_it_unconfined);
