//! The daemon's sandbox (`--sandbox on`, the default): what a guest that takes over the process
//! through a bug in a renderer library can still do.
//!
//! It closes once start-up is over: the renderer is initialised (render node opened, Mesa's
//! EGL/GBM and shader cache set up, libvirglrenderer's Venus render server started) and the
//! vhost-user socket is listening (or the `--fd` connection's relay is set up). From then on:
//!
//! - **Syscalls** ([`seccomp`]): every thread of the process, those of Mesa, llvmpipe and
//!   libvirglrenderer included (the filter goes to all of them at once with
//!   `SECCOMP_FILTER_FLAG_TSYNC`, and threads started later inherit it), may only make the
//!   syscalls of an allow-list found by running the test suites and guest checks. `execve` and
//!   `execveat` kill the process; any other syscall off the list fails with `ENOSYS`; opening a
//!   file for writing, creating or truncating fails with `EACCES`; new processes cannot be
//!   made (`clone` only for threads). `no_new_privs` is set.
//! - **Files** ([`landlock`], where the kernel has Landlock): the main thread (and every thread
//!   it starts later: the per-connection vhost-user threads), the GPU thread (where guest
//!   commands reach the renderer, and the threads it starts later, such as llvmpipe's per-context
//!   threads) can only read beneath the directories the renderers need
//!   ([`FilePolicy::for_renderers`]; the DRM nodes also for writing and ioctls), and create,
//!   remove or rename nothing anywhere; the signal thread can touch no file except removing
//!   files in the listening socket's directory (its path, at SIGTERM). Landlock applies to the
//!   calling thread and its later children only, so helper threads that a library started
//!   during initialisation are confined by the syscall filter alone (which refuses them any
//!   write-open too).
//!
//! - **NVIDIA's GL driver** ([`FilePolicy::for_renderers`] finds its device nodes among the
//!   descriptors the process holds after initialisation): it opens its nodes again, read-write,
//!   while it serves the guest's contexts, so its nodes are added to the devices and the syscall
//!   filter lets plain read-write opens of existing files through, leaving the path to Landlock
//!   (without Landlock the daemon refuses to start with the sandbox on; see [`close`]).
//!
//! Not confined: libvirglrenderer's Venus render server, a separate process started during
//! initialisation (before the sandbox closes); memory use of the GL/Vulkan driver, which only a
//! cgroup bounds.

pub mod landlock;
pub mod seccomp;

use std::path::{Path, PathBuf};

pub use self::landlock::{confine_thread_files, FilePolicy, FilesConfined};
pub use self::seccomp::{install_syscall_filter, WriteOpens, ALLOWED_SYSCALLS};

/// Why the sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The seccomp filter could not be built or installed.
    #[error("seccomp filter: {0}")]
    Seccomp(#[from] seccompiler::Error),
    /// A syscall of the allow-list is unknown on this architecture.
    #[error("seccomp filter: {0}")]
    SeccompBackend(#[from] seccompiler::BackendError),
    /// The Landlock ruleset could not be built or enforced (a kernel without Landlock is not an
    /// error: see [`FilesConfined::No`]).
    #[error("landlock: {0}")]
    Landlock(#[from] ::landlock::RulesetError),
    /// The GL driver opens device nodes read-write after start-up (NVIDIA's), which only
    /// Landlock can tell from other files, and this kernel has no Landlock.
    #[error(
        "the GL driver (NVIDIA's) opens its device nodes read-write after start-up, and without \
         Landlock (this kernel has none) the sandbox could only refuse that, which leaves the \
         driver rendering nothing: run with --sandbox off, or on a kernel with Landlock"
    )]
    DeviceReopensNeedLandlock,
}

/// Closes the sandbox for the calling thread (Landlock, `policy`) and then for the whole
/// process (seccomp, every thread). Call it once, on the main thread, when start-up is over.
/// Returns whether Landlock could confine the thread.
///
/// Where the GL driver opens device nodes again read-write ([`FilePolicy::reopens_devices_rw`],
/// NVIDIA's driver), the syscall filter lets plain read-write opens of existing files through
/// ([`WriteOpens::ReadWriteAllowed`]) and Landlock limits them to the policy's devices for the
/// main thread, the GPU thread (where GL contexts are made) and the threads they start. Threads
/// a library started during initialisation are not under Landlock: they could open an existing
/// file read-write (never create or truncate one) where the user's permissions allow. Without
/// Landlock this is refused ([`SandboxError::DeviceReopensNeedLandlock`]).
pub fn close(policy: &FilePolicy) -> Result<FilesConfined, SandboxError> {
    let files = confine_thread_files(policy)?;
    let write_opens = if policy.reopens_devices_rw {
        if files == FilesConfined::No {
            return Err(SandboxError::DeviceReopensNeedLandlock);
        }
        WriteOpens::ReadWriteAllowed
    } else {
        WriteOpens::Refused
    };
    install_syscall_filter(write_opens)?;
    Ok(files)
}

/// The directory that holds `path` (for a socket path: where it can be removed), made
/// absolute against the current directory.
pub fn parent_dir(path: &Path) -> Option<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    absolute.parent().map(Path::to_path_buf)
}
