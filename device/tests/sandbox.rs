//! The sandbox refuses what it should and allows what the daemon needs, in a process of its own:
//! the test runs itself again (this test only) as a child that closes the sandbox exactly as
//! the daemon does (`sandbox::close` with the renderers' file policy), tries things, prints one
//! line per attempt, and finally calls `execve`, which must kill it with SIGSYS.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use vhost_user_gpu::sandbox::{self, FilePolicy, FilesConfined};

/// Set (to a scratch directory) in the child.
const CHILD_ENV: &str = "VUGPU_SANDBOX_PROBE_DIR";
/// This test's name, for running it again.
const TEST_NAME: &str = "a_sandboxed_process_refuses_exec_writes_and_unlisted_syscalls";

/// The errno of a failed `std::io` call, as a short name for the report.
fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::ENOSYS) => "ENOSYS".into(),
        Some(libc::EPERM) => "EPERM".into(),
        Some(n) => format!("errno {n}"),
        None => e.to_string(),
    }
}

fn report(what: &str, result: Result<String, std::io::Error>) {
    let line = match result {
        Ok(detail) => format!("{what}: ok {detail}"),
        Err(e) => format!("{what}: {}", errno_name(&e)),
    };
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// A raw libc call's result as `std::io::Result`.
fn check(rc: libc::c_long) -> Result<String, std::io::Error> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc.to_string())
    }
}

/// The child: closes the sandbox, then tries.
fn probe(dir: &Path) -> ! {
    let confined = sandbox::close(&FilePolicy::for_renderers()).expect("close the sandbox");
    // After a newline: libtest printed "test NAME ... " without one.
    println!("\nlandlock: {}", confined != FilesConfined::No);
    report(
        "create a file",
        std::fs::File::create(dir.join("new")).map(|_| String::new()),
    );
    report(
        "open an existing file for writing",
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("existing"))
            .map(|_| String::new()),
    );
    report(
        "read a file outside the read set",
        std::fs::read_to_string(dir.join("existing")),
    );
    report(
        "read /proc/self/status",
        std::fs::read_to_string("/proc/self/status").map(|s| {
            s.lines()
                .filter(|l| l.starts_with("Seccomp:") || l.starts_with("NoNewPrivs:"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join(", ")
        }),
    );
    report(
        "start a thread",
        std::thread::spawn(|| 6 * 7)
            .join()
            .map(|v| v.to_string())
            .map_err(|_| std::io::Error::other("the thread panicked")),
    );
    // SAFETY: fork takes no arguments; a child, were one made, exits at once with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: _exit ends the (forked) child at once.
        unsafe { libc::_exit(0) };
    }
    report("fork", check(pid.into()));
    report(
        "spawn a program",
        Command::new("/bin/true").status().map(|s| s.to_string()),
    );
    // SAFETY: socket takes plain integers.
    let tcp = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    report("TCP socket", check(tcp.into()));
    // SAFETY: memfd_create reads the NUL-terminated name; the flags are valid.
    let memfd = unsafe { libc::memfd_create(c"probe".as_ptr(), libc::MFD_CLOEXEC) };
    report("memfd_create", check(memfd.into()));
    println!("execve next");
    let _ = std::io::stdout().flush();
    let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: the path and argv are NUL-terminated C strings, argv and envp NULL-terminated.
    unsafe { libc::execve(c"/bin/true".as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    println!("execve returned: {}", std::io::Error::last_os_error());
    std::process::exit(3);
}

/// Set (to a scratch directory) in the child of the device-reopen test.
const REOPEN_CHILD_ENV: &str = "VUGPU_SANDBOX_REOPEN_DIR";
/// The device-reopen test's name, for running it again.
const REOPEN_TEST_NAME: &str = "a_driver_that_reopens_devices_may_open_only_them_read_write";

/// The child of the device-reopen test: the renderers' policy as it is where NVIDIA's driver is
/// loaded (`reopens_devices_rw`), with `dir/device` standing for a device node.
fn probe_reopen(dir: &Path) -> ! {
    let mut policy = FilePolicy::for_renderers();
    policy.devices.push(dir.join("device"));
    policy.reopens_devices_rw = true;
    match sandbox::close(&policy) {
        Ok(confined) => println!("\nlandlock: {}", confined != FilesConfined::No),
        Err(e) => {
            println!("\nclose: {e}");
            std::process::exit(0);
        }
    }
    let rw = |name: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(name))
            .map(|_| String::new())
    };
    report("open the device read-write", rw("device"));
    report("open another existing file read-write", rw("existing"));
    report(
        "open the device write-only",
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("device"))
            .map(|_| String::new()),
    );
    report(
        "truncate the device",
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .truncate(true)
            .open(dir.join("device"))
            .map(|_| String::new()),
    );
    report(
        "create a file",
        std::fs::File::create(dir.join("new")).map(|_| String::new()),
    );
    report(
        "list /",
        std::fs::read_dir("/").map(|d| (d.count() > 0).to_string()),
    );
    report(
        "read a file outside the read set",
        std::fs::read_to_string(dir.join("existing")),
    );
    std::process::exit(0);
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vugpu-sandbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("existing"), "secret").unwrap();
    dir
}

#[test]
fn a_sandboxed_process_refuses_exec_writes_and_unlisted_syscalls() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        probe(Path::new(&dir));
    }
    let dir = scratch_dir();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    let context = format!(
        "child {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let has = |line: &str| {
        assert!(
            stdout.lines().any(|l| l == line),
            "expected {line:?}\n{context}"
        )
    };
    has("create a file: EACCES");
    has("open an existing file for writing: EACCES");
    has("read /proc/self/status: ok NoNewPrivs: 1, Seccomp: 2");
    has("start a thread: ok 42");
    has("fork: ENOSYS");
    has("spawn a program: ENOSYS");
    has("TCP socket: ENOSYS");
    assert!(
        stdout.lines().any(|l| l.starts_with("memfd_create: ok")),
        "memfd_create refused\n{context}"
    );
    // Landlock, where the kernel has it: reads outside the renderers' directories fail.
    if stdout.lines().any(|l| l == "landlock: true") {
        has("read a file outside the read set: EACCES");
    } else {
        eprintln!("this kernel has no Landlock: reads are not confined");
        has("read a file outside the read set: ok secret");
    }
    has("execve next");
    assert!(!stdout.contains("execve returned"), "{context}");
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{context}");
}

#[test]
fn a_driver_that_reopens_devices_may_open_only_them_read_write() {
    if let Some(dir) = std::env::var_os(REOPEN_CHILD_ENV) {
        probe_reopen(Path::new(&dir));
    }
    let dir = scratch_dir();
    std::fs::write(dir.join("device"), "node").unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            REOPEN_TEST_NAME,
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(REOPEN_CHILD_ENV, &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    let context = format!("child {:?}\nstdout:\n{stdout}", out.status);
    let has = |line: &str| {
        assert!(
            stdout.lines().any(|l| l == line),
            "expected {line:?}\n{context}"
        )
    };
    if !stdout.lines().any(|l| l == "landlock: true") {
        // Without Landlock the sandbox cannot tell the device from other files and refuses.
        assert!(stdout.contains("close: the GL driver"), "{context}");
        eprintln!("this kernel has no Landlock: the sandbox refuses to close for such a driver");
        return;
    }
    has("open the device read-write: ok ");
    has("open another existing file read-write: EACCES");
    has("open the device write-only: EACCES");
    has("truncate the device: EACCES");
    has("create a file: EACCES");
    has("list /: EACCES");
    has("read a file outside the read set: EACCES");
    assert!(out.status.success(), "{context}");
}
