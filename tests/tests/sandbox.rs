//! The daemon's sandbox (`--sandbox`, on by default): once it serves a frontend, every one of
//! its threads runs under the seccomp filter with `no_new_privs`, and it keeps serving across
//! reconnects; `--sandbox off` leaves it unconfined. (What the filter refuses is tested in
//! `device/tests/sandbox.rs`.)

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use vhost_user_gpu_tests::protocol::{resp, Command};
use vhost_user_gpu_tests::{BackendCommand, BackendProcess, FrontendOptions, GpuFrontend};

/// How long the daemon may take to exit once told to.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// SIGTERM under the sandbox: the signal thread, confined to removing files in the socket's
/// directory, removes the socket path, and the daemon exits with status 0.
#[test]
fn sigterm_removes_the_socket_path_under_the_sandbox() {
    let mut p = spawn(&ours("software"));
    display_info(&p);
    let status = format!("/proc/{}/status", p.pid());
    assert_eq!(status_field(&status, "Seccomp:"), "2");
    let pid = libc::pid_t::try_from(p.pid()).unwrap();
    // SAFETY: kill takes plain integers; the pid is our child's, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let exit = p.wait_exit(EXIT_TIMEOUT).unwrap();
    assert!(
        exit.is_some_and(|s| s.success()),
        "exit {exit:?}\n{}",
        p.stderr_tail()
    );
    assert!(
        !p.socket_path().exists(),
        "the socket path is left behind\n{}",
        p.stderr_tail()
    );
}

/// `--fd` with a connected socket (how libvirt starts a backend): the relay is set up before the
/// sandbox closes, the frontend is served under it, and when it disconnects the daemon exits
/// with status 0.
#[test]
fn a_connected_fd_is_served_under_the_sandbox() {
    let program = BackendCommand::ours()
        .unwrap_or_else(|e| panic!("{e}"))
        .program;
    let (ours_end, daemon_end) = UnixStream::pair().unwrap();
    let fd = daemon_end.as_raw_fd();
    // SAFETY: F_SETFD on a descriptor we own: the daemon inherits it across exec.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    let log = std::env::temp_dir().join(format!("vugpu-sandbox-fd-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(program)
        .args(["--renderer", "software", "--fd", &fd.to_string()])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    drop(daemon_end);
    let output = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut fe = GpuFrontend::from_stream(ours_end, FrontendOptions::default())
        .unwrap_or_else(|e| panic!("bring-up over --fd: {e}\n{}", output()));
    let r = fe
        .request(&Command::get_display_info())
        .unwrap_or_else(|e| panic!("GET_DISPLAY_INFO: {e}\n{}", output()));
    assert_eq!(r.ty(), resp::OK_DISPLAY_INFO, "{}", output());
    let status = format!("/proc/{}/status", child.id());
    assert_eq!(status_field(&status, "Seccomp:"), "2", "{}", output());
    drop(fe);
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let exit = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after the frontend left\n{}", output());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = output();
    let _ = std::fs::remove_file(&log);
    assert!(
        exit.success(),
        "exit {exit:?} (signal {:?})\n{out}",
        exit.signal()
    );
    assert!(out.contains("sandbox closed"), "{out}");
}
