//! Running a backend daemon: spawn it with a socket path in a private temporary directory,
//! wait for the socket, capture stderr to a file, measure fds and memory, kill it on drop.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// An argument equal to this is replaced by the socket path; without one, `--socket-path PATH`
/// is appended.
pub const SOCKET_PLACEHOLDER: &str = "{socket}";
/// Environment variable naming our daemon's binary.
pub const BIN_ENV: &str = "VHOST_USER_GPU_BIN";
/// QEMU's C backend on Debian.
pub const QEMU_BACKEND: &str = "/usr/lib/qemu/vhost-user-gpu";
/// How long a backend may take to create its socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A backend command line.
#[derive(Clone, Debug)]
pub struct BackendCommand {
    /// The program.
    pub program: PathBuf,
    /// Its arguments ([`SOCKET_PLACEHOLDER`] is replaced by the socket path).
    pub args: Vec<OsString>,
    /// Extra environment.
    pub env: Vec<(OsString, OsString)>,
}

impl BackendCommand {
    /// A command running `program`.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        BackendCommand {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Add an argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Add an environment variable.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// Our daemon (`vhost-user-gpu`): `$VHOST_USER_GPU_BIN`, else the binary next to the running
    /// test executable (`target/<profile>/vhost-user-gpu`). Fails if it does not exist.
    pub fn ours() -> Result<Self> {
        let path = match std::env::var_os(BIN_ENV) {
            Some(p) => PathBuf::from(p),
            None => {
                let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
                // target/<profile>/deps/<test> -> target/<profile>/vhost-user-gpu
                let dir = exe
                    .parent()
                    .map(|d| {
                        if d.ends_with("deps") {
                            d.parent().unwrap_or(d)
                        } else {
                            d
                        }
                    })
                    .ok_or_else(|| Error::BackendStart("no executable directory".into()))?;
                dir.join("vhost-user-gpu")
            }
        };
        if !path.is_file() {
            return Err(Error::BinaryMissing(path));
        }
        Ok(Self::new(path))
    }

    /// Our daemon with `--renderer NAME`.
    pub fn ours_with_renderer(renderer: &str) -> Result<Self> {
        Ok(Self::ours()?.arg("--renderer").arg(renderer))
    }

    /// QEMU's C backend (2D); fails if not installed.
    pub fn qemu() -> Result<Self> {
        let p = PathBuf::from(QEMU_BACKEND);
        if !p.is_file() {
            return Err(Error::BinaryMissing(p));
        }
        Ok(Self::new(p))
    }

    /// The command line as text (for messages).
    pub fn describe(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// Memory figures of a process, in KiB (`/proc/PID/status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// VmRSS.
    pub rss_kib: u64,
    /// VmHWM (peak RSS).
    pub hwm_kib: u64,
}

/// A running backend process.
pub struct BackendProcess {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    stderr_path: PathBuf,
    command_line: String,
}

impl BackendProcess {
    /// Start `cmd` and wait until its socket exists (it is not connected to: a backend that
    /// serves one connection must keep it for the test).
    pub fn spawn(cmd: &BackendCommand) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vugpu-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| Error::io(format!("mkdir {}", dir.display()), e))?;
        let socket = dir.join("gpu.sock");
        let stderr_path = dir.join("stderr.log");
        let stderr = fs::File::create(&stderr_path)
            .map_err(|e| Error::io(format!("create {}", stderr_path.display()), e))?;
        let stdout = stderr
            .try_clone()
            .map_err(|e| Error::io("dup stderr file", e))?;

        let mut args: Vec<OsString> = Vec::new();
        let mut placed = false;
        for a in &cmd.args {
            if a == SOCKET_PLACEHOLDER {
                args.push(socket.clone().into_os_string());
                placed = true;
            } else {
                args.push(a.clone());
            }
        }
        if !placed {
            args.push("--socket-path".into());
            args.push(socket.clone().into_os_string());
        }
        let mut command_line = cmd.program.display().to_string();
        for a in &args {
            command_line.push(' ');
            command_line.push_str(&a.to_string_lossy());
        }
        let mut c = Command::new(&cmd.program);
        c.args(&args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in &cmd.env {
            c.env(k, v);
        }
        let child = c
            .spawn()
            .map_err(|e| Error::io(format!("spawn {command_line}"), e))?;
        let mut p = BackendProcess {
            child,
            dir,
            socket,
            stderr_path,
            command_line,
        };
        p.wait_for_socket(START_TIMEOUT)?;
        Ok(p)
    }

    fn wait_for_socket(&mut self, timeout: Duration) -> Result<()> {
        use std::os::unix::fs::FileTypeExt;
        let deadline = Instant::now() + timeout;
        loop {
            if fs::metadata(&self.socket)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false)
            {
                return Ok(());
            }
            if let Some(st) = self.try_wait()? {
                return Err(Error::BackendStart(format!(
                    "{} exited with {st} before creating its socket\n{}",
                    self.command_line,
                    self.stderr_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::BackendStart(format!(
                    "{} created no socket in {timeout:?}\n{}",
                    self.command_line,
                    self.stderr_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The private temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line that was run.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Open file descriptors (entries of /proc/PID/fd).
    pub fn fd_count(&self) -> Result<usize> {
        let p = format!("/proc/{}/fd", self.pid());
        Ok(fs::read_dir(&p)
            .map_err(|e| Error::io(format!("read {p}"), e))?
            .count())
    }

    /// VmRSS and VmHWM.
    pub fn memory(&self) -> Result<MemoryUsage> {
        let p = format!("/proc/{}/status", self.pid());
        let s = fs::read_to_string(&p).map_err(|e| Error::io(format!("read {p}"), e))?;
        let field = |name: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(MemoryUsage {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
        })
    }

    /// Has it exited? (Non-blocking.)
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().map_err(|e| Error::io("waitpid", e))
    }

    /// Is it still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Wait up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(Some(st));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the process wrote to stderr/stdout so far.
    pub fn stderr(&self) -> String {
        fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last 8 KiB of its output, labelled (for failure messages).
    pub fn stderr_tail(&self) -> String {
        let s = self.stderr();
        let start = s.len().saturating_sub(8192);
        let start = (start..s.len())
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(s.len());
        format!(
            "--- backend output ({}) ---\n{}",
            self.stderr_path.display(),
            &s[start..]
        )
    }

    /// Kill it (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        self.kill();
        if std::env::var_os("VUGPU_KEEP_TMP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
