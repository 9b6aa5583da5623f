//! The file-system half of the sandbox: a Landlock ruleset for the calling thread.
//!
//! Landlock (Linux 5.13 and newer) confines the thread that enforces a ruleset and every thread
//! or process it starts afterwards; threads that already exist keep their rights (kernels with
//! Landlock ABI 8 can apply it to all threads, which is not relied on here: ABI 7 is what was
//! tested). It is applied best-effort: on a kernel without Landlock the daemon logs so and
//! relies on the syscall filter alone, which refuses every write-open in any case.

use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use super::SandboxError;

/// The Landlock ABI whose access rights are handled (Linux 6.12). Rights of newer ABIs are left
/// out on purpose: they have not been tried with the renderers.
const LANDLOCK_ABI: ABI = ABI::V6;

/// Directories (or files) the renderers read at run time: libraries and their data (drivers
/// loaded when a context is made, LLVM), Mesa's drirc files in `/etc`, `/proc` and `/sys` for
/// CPU and DRM device probing, and harmless character devices.
pub const READ_PATHS: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/etc",
    "/proc",
    "/sys",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
];

/// DRM device nodes: read, write and ioctl on the render nodes (opened again by a driver that
/// probes them); nothing can be created there.
pub const DEVICE_PATHS: &[&str] = &["/dev/dri"];

/// What a confined thread may do with files: only what is listed; nothing else, and no file,
/// directory, link, socket or device can be made anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilePolicy {
    /// Read files and list directories beneath these paths.
    pub read: Vec<PathBuf>,
    /// Read, write (an existing file) and use device ioctls beneath these paths.
    pub devices: Vec<PathBuf>,
    /// Remove files (not directories) directly or indirectly beneath these directories.
    pub remove_files: Vec<PathBuf>,
}

impl FilePolicy {
    /// What the renderers need once they are initialised: [`READ_PATHS`], [`DEVICE_PATHS`],
    /// Mesa's shader cache (read only: see the module doc of [`super`]) and this program's own
    /// binary (read for a backtrace's symbols).
    pub fn for_renderers() -> Self {
        let mut read: Vec<PathBuf> = READ_PATHS.iter().map(PathBuf::from).collect();
        read.extend(mesa_shader_cache_dirs());
        if let Ok(exe) = std::env::current_exe() {
            read.push(exe);
        }
        FilePolicy {
            read,
            devices: DEVICE_PATHS.iter().map(PathBuf::from).collect(),
            remove_files: Vec::new(),
        }
    }

    /// No access to any file except removing files beneath `dirs` (the signal thread's policy:
    /// it removes the listening socket's path).
    pub fn remove_only(dirs: Vec<PathBuf>) -> Self {
        FilePolicy {
            remove_files: dirs,
            ..FilePolicy::default()
        }
    }
}

/// Whether Landlock confined the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilesConfined {
    /// Every right the policy handles is enforced.
    Fully,
    /// The kernel enforces only part of the rights (an older Landlock ABI).
    Partially,
    /// The kernel has no Landlock (or it is disabled): only the syscall filter applies.
    No,
}

/// Confines the calling thread's (and its future threads') access to files to `policy`, and
/// forbids TCP binds and connects and connections to abstract UNIX sockets. Paths of the
/// policy that do not exist are skipped.
pub fn confine_thread_files(policy: &FilePolicy) -> Result<FilesConfined, SandboxError> {
    let abi = LANDLOCK_ABI;
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let device = AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::WriteFile | AccessFs::IoctlDev;
    let remove: BitFlags<AccessFs> = AccessFs::RemoveFile.into();
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::from_all(abi))?
        .scope(Scope::AbstractUnixSocket)?
        .create()?;
    for (paths, access) in [
        (&policy.read, read),
        (&policy.devices, device),
        (&policy.remove_files, remove),
    ] {
        for path in paths {
            if let Some(rule) = rule(path, access, abi) {
                ruleset = ruleset.add_rule(rule)?;
            }
        }
    }
    let status = ruleset.restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => FilesConfined::Fully,
        RulesetStatus::PartiallyEnforced => FilesConfined::Partially,
        RulesetStatus::NotEnforced => FilesConfined::No,
    })
}

/// A rule granting `access` beneath `path`, limited to the rights that apply to a file when
/// `path` is not a directory; `None` when `path` cannot be opened (it does not exist).
fn rule(path: &Path, access: BitFlags<AccessFs>, abi: ABI) -> Option<PathBeneath<PathFd>> {
    let is_dir = std::fs::metadata(path).ok()?.is_dir();
    let access = if is_dir {
        access
    } else {
        access & AccessFs::from_file(abi)
    };
    if access.is_empty() {
        return None;
    }
    let fd = PathFd::new(path).ok()?;
    Some(PathBeneath::new(fd, access))
}

/// Mesa's on-disk shader cache directories, where they exist: `$MESA_SHADER_CACHE_DIR`, else
/// `mesa_shader_cache` and `mesa_shader_cache_db` in `$XDG_CACHE_HOME`, else in `~/.cache`.
fn mesa_shader_cache_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("MESA_SHADER_CACHE_DIR").filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(dir)];
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        });
    match base {
        Some(base) => ["mesa_shader_cache", "mesa_shader_cache_db"]
            .iter()
            .map(|name| base.join(name))
            .filter(|dir| dir.is_dir())
            .collect(),
        None => Vec::new(),
    }
}
