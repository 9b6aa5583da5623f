//! The syscall half of the sandbox: seccomp filters for every thread of the process.
//!
//! Three filters, installed together with `SECCOMP_FILTER_FLAG_TSYNC` (so every existing thread
//! gets them, and threads started later inherit them) after `PR_SET_NO_NEW_PRIVS`:
//!
//! 1. the allow-list [`ALLOWED_SYSCALLS`]; any other syscall fails with `ENOSYS`. An error, not
//!    a kill: Mesa and LLVM make a rare syscall now and then, and `ENOSYS` is the answer their
//!    fallbacks expect (glibc's `pthread_create` tries `clone3` first and falls back to `clone`
//!    on exactly `ENOSYS`). `clone` is allowed for threads only (`CLONE_THREAD`), so no new
//!    process can be made;
//! 2. opening a file for writing, creating or truncating it (`open`, `openat` with `O_WRONLY`,
//!    `O_RDWR`, `O_CREAT` or `O_TRUNC`), and the terminal ioctls `TIOCSTI` and `TIOCLINUX`,
//!    fail with `EACCES` (what a read-only file system would answer). With NVIDIA's GL driver,
//!    which opens its device nodes again read-write for each new GL context,
//!    [`WriteOpens::ReadWriteAllowed`] lets plain `O_RDWR` opens through and Landlock decides
//!    the path (see [`super::close`]);
//! 3. `execve`, `execveat` and `ptrace` kill the process: nothing the daemon or its libraries
//!    do after start-up needs them, and a process that tries is running someone else's code.
//!
//! The allow-list was found by tracing the daemon (`strace -f`) through the whole test suite,
//! the guest checks and the Venus tests with libvirglrenderer 1.1, keeping what was called after
//! start-up.

use std::collections::BTreeMap;

use seccompiler::{
    apply_filter_all_threads, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp,
    SeccompCondition, SeccompFilter, SeccompRule,
};

use super::SandboxError;

/// The syscalls allowed after start-up (besides `clone`, for threads only: see the module doc),
/// each seen in a trace of the daemon after start-up, except the few whose comment says why
/// they are kept (all harmless: memory, time, signals, and ioctls on descriptors already held).
pub const ALLOWED_SYSCALLS: &[(&str, libc::c_long)] = &[
    // Memory (LLVM's JIT maps executable pages; guest memory and blobs are mapped fds).
    ("brk", libc::SYS_brk),
    ("mmap", libc::SYS_mmap),
    ("munmap", libc::SYS_munmap),
    ("mprotect", libc::SYS_mprotect),
    ("mremap", libc::SYS_mremap), // not seen: glibc realloc of a large block
    ("madvise", libc::SYS_madvise),
    ("memfd_create", libc::SYS_memfd_create),
    ("ftruncate", libc::SYS_ftruncate),
    // Threads, their start and end, and waiting.
    ("futex", libc::SYS_futex),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("rseq", libc::SYS_rseq),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    ("gettid", libc::SYS_gettid),
    ("getpid", libc::SYS_getpid),
    ("tgkill", libc::SYS_tgkill), // not seen: abort() must still end with SIGABRT
    ("prctl", libc::SYS_prctl),   // thread names
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("sched_setaffinity", libc::SYS_sched_setaffinity),
    ("sched_setscheduler", libc::SYS_sched_setscheduler),
    ("sched_yield", libc::SYS_sched_yield), // not seen: spin-waits in the drivers
    ("setpriority", libc::SYS_setpriority),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("nanosleep", libc::SYS_nanosleep), // not seen: older glibc sleep()
    ("clock_gettime", libc::SYS_clock_gettime), // not seen: the vDSO's fallback
    ("wait4", libc::SYS_wait4),         // not seen: libvirglrenderer reaps a dead render server
    // Signals (the signal thread waits for SIGTERM and friends; abort()).
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigtimedwait", libc::SYS_rt_sigtimedwait),
    ("rt_sigreturn", libc::SYS_rt_sigreturn), // not seen: the end of any signal handler
    ("restart_syscall", libc::SYS_restart_syscall), // not seen: after SIGSTOP/SIGCONT
    // Descriptors: vhost-user's socket, eventfds, epoll, the render server's socket.
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("pread64", libc::SYS_pread64),
    ("lseek", libc::SYS_lseek),
    ("close", libc::SYS_close),
    ("dup", libc::SYS_dup),
    ("fcntl", libc::SYS_fcntl),
    ("flock", libc::SYS_flock),
    ("ioctl", libc::SYS_ioctl), // DRM on a real GPU (llvmpipe makes none); TIOCSTI, TIOCLINUX refused
    ("eventfd2", libc::SYS_eventfd2),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("poll", libc::SYS_poll),
    ("accept4", libc::SYS_accept4), // the next frontend on the listening socket
    ("recvmsg", libc::SYS_recvmsg),
    ("sendmsg", libc::SYS_sendmsg),
    ("recvfrom", libc::SYS_recvfrom), // recv() on a connected --fd's relayed connection
    ("sendto", libc::SYS_sendto),     // not seen: send(), recv()'s twin on the same sockets
    ("shutdown", libc::SYS_shutdown),
    ("getsockopt", libc::SYS_getsockopt),
    // Files: reading (Landlock limits where), no writes (see the module doc).
    ("openat", libc::SYS_openat),
    ("newfstatat", libc::SYS_newfstatat),
    ("fstat", libc::SYS_fstat),
    ("statx", libc::SYS_statx),
    ("access", libc::SYS_access),
    ("readlink", libc::SYS_readlink),
    ("getdents64", libc::SYS_getdents64),
    ("unlink", libc::SYS_unlink), // the socket path at SIGTERM (Landlock limits where)
    // Information.
    ("getrandom", libc::SYS_getrandom),
    ("getrusage", libc::SYS_getrusage), // the GPU thread's own preemptions (early notification)
    ("sysinfo", libc::SYS_sysinfo),
    ("getuid", libc::SYS_getuid),
    ("geteuid", libc::SYS_geteuid),
    ("getgid", libc::SYS_getgid),
    ("getegid", libc::SYS_getegid),
];

/// Syscalls that kill the process.
const KILLING_SYSCALLS: &[libc::c_long] = &[libc::SYS_execve, libc::SYS_execveat, libc::SYS_ptrace];

/// Open flags that make an open a write-open.
const WRITE_OPEN_FLAGS: &[libc::c_int] =
    &[libc::O_WRONLY, libc::O_RDWR, libc::O_CREAT, libc::O_TRUNC];

/// Which write-opens the filter refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOpens {
    /// Every open with `O_WRONLY`, `O_RDWR`, `O_CREAT` or `O_TRUNC` (the default).
    Refused,
    /// As `Refused`, except plain read-write opens (`O_RDWR` without `O_CREAT` or `O_TRUNC`)
    /// of files that exist, for a GL driver that opens its device nodes again after start-up
    /// (NVIDIA's). Only with Landlock, which then decides which paths (its device nodes).
    ReadWriteAllowed,
}

/// Terminal ioctls that would let the process type into or drive a terminal it shares.
const REFUSED_IOCTLS: &[libc::c_ulong] = &[libc::TIOCSTI, libc::TIOCLINUX];

/// A condition on argument `arg` of a syscall.
fn condition(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SandboxError> {
    Ok(SeccompCondition::new(arg, len, op, value)?)
}

/// Argument `arg` has every bit of `bits` set.
fn has_bits(arg: u8, bits: u64) -> Result<SeccompRule, SandboxError> {
    let c = condition(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(bits),
        bits,
    )?;
    Ok(SeccompRule::new(vec![c])?)
}

/// The three filters of the module doc.
fn filters(write_opens: WriteOpens) -> Result<[SeccompFilter; 3], SandboxError> {
    let arch = std::env::consts::ARCH.try_into()?;
    let mut allowed: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED_SYSCALLS
        .iter()
        .map(|&(_, nr)| (nr, Vec::new()))
        .collect();
    allowed.insert(
        libc::SYS_clone,
        vec![has_bits(0, libc::CLONE_THREAD as u64)?],
    );
    let allow = SeccompFilter::new(
        allowed,
        SeccompAction::Errno(libc::ENOSYS as u32),
        SeccompAction::Allow,
        arch,
    )?;

    let write_opens = |flags_arg: u8| -> Result<Vec<SeccompRule>, SandboxError> {
        WRITE_OPEN_FLAGS
            .iter()
            .filter(|&&flag| !(flag == libc::O_RDWR && write_opens == WriteOpens::ReadWriteAllowed))
            .map(|&flag| has_bits(flags_arg, flag as u64))
            .collect()
    };
    let ioctls = REFUSED_IOCTLS
        .iter()
        .map(|&request| {
            let c = condition(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)?;
            Ok(SeccompRule::new(vec![c])?)
        })
        .collect::<Result<Vec<_>, SandboxError>>()?;
    let refused = SeccompFilter::new(
        [
            (libc::SYS_open, write_opens(1)?),
            (libc::SYS_openat, write_opens(2)?),
            (libc::SYS_ioctl, ioctls),
        ]
        .into_iter()
        .collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        arch,
    )?;

    let killing = SeccompFilter::new(
        KILLING_SYSCALLS
            .iter()
            .map(|&nr| (nr, Vec::new()))
            .collect(),
        SeccompAction::Allow,
        SeccompAction::KillProcess,
        arch,
    )?;
    Ok([allow, refused, killing])
}

/// Sets `no_new_privs` and installs the filters of the module doc on every thread of the
/// process, refusing `write_opens`. Irreversible.
pub fn install_syscall_filter(write_opens: WriteOpens) -> Result<(), SandboxError> {
    let programs = filters(write_opens)?
        .into_iter()
        .map(BpfProgram::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    // The kernel runs every filter and takes the strictest answer (kill, then an errno, then
    // allow), so a refusal of filter 2 or 3 wins over filter 1's allow whatever the order.
    // The allow-list goes on last: it does not allow `seccomp` itself.
    for program in programs.iter().rev() {
        apply_filter_all_threads(program)?;
    }
    Ok(())
}
