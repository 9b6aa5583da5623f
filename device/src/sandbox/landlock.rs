//! The file-system half of the sandbox: a Landlock ruleset for the calling thread.
//!
//! Landlock (Linux 5.13 and newer) confines the thread that enforces a ruleset and every thread
//! or process it starts afterwards; threads that already exist keep their rights (kernels with
//! Landlock ABI 8 can apply it to all threads, which is not relied on here: ABI 7 is what was
//! tested). It is applied best-effort: on a kernel without Landlock the daemon logs so and
//! relies on the syscall filter alone, which refuses every write-open in any case (where the GL
//! driver needs read-write opens, NVIDIA's, the sandbox refuses to close instead).

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

/// Where NVIDIA's proprietary driver keeps its device nodes: `/dev/nvidiactl`, `/dev/nvidia<N>`,
/// `/dev/nvidia-uvm`, `/dev/nvidia-uvm-tools`, `/dev/nvidia-modeset` and the `/dev/nvidia-caps`
/// directory, all named `nvidia*` in `/dev`.
const NVIDIA_NODE_PREFIX: &str = "nvidia";

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
    /// The GL driver opens device nodes again for reading and writing after start-up (NVIDIA's
    /// driver does, for every new GL context), so the syscall filter must let read-write opens
    /// of existing files through and leave the choice of path to Landlock (see
    /// [`super::close`]).
    pub reopens_devices_rw: bool,
}

impl FilePolicy {
    /// What the renderers need once they are initialised: [`READ_PATHS`], [`DEVICE_PATHS`],
    /// Mesa's shader cache (read only: see the module doc of [`super`]) and this program's own
    /// binary (read for a backtrace's symbols). Where the process holds one of NVIDIA's device
    /// nodes open (its GL driver was loaded and opened them during initialisation), also what
    /// that driver does after start-up (traced on an H200, driver 580.159): it opens
    /// `/dev/nvidiactl` and `/dev/nvidia0` again, read-write, while it serves the guest's
    /// contexts (44 such opens in 0.3 s of gpu-bench's `3d-readback`), and renders nothing
    /// right when they are refused; so its nodes join the devices and
    /// [`FilePolicy::reopens_devices_rw`] is set.
    pub fn for_renderers() -> Self {
        let mut read: Vec<PathBuf> = READ_PATHS.iter().map(PathBuf::from).collect();
        read.extend(mesa_shader_cache_dirs());
        if let Ok(exe) = std::env::current_exe() {
            read.push(exe);
        }
        let mut policy = FilePolicy {
            read,
            devices: DEVICE_PATHS.iter().map(PathBuf::from).collect(),
            ..FilePolicy::default()
        };
        if holds_nvidia_node(Path::new("/proc/self/fd"), Path::new("/dev")) {
            policy.devices.extend(nvidia_nodes(Path::new("/dev")));
            policy.reopens_devices_rw = true;
        }
        policy
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

/// NVIDIA's device nodes in `dev` (the entries named `nvidia*`; see [`NVIDIA_NODE_PREFIX`]).
fn nvidia_nodes(dev: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dev) else {
        return Vec::new();
    };
    let mut nodes: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(NVIDIA_NODE_PREFIX)
        })
        .map(|e| e.path())
        .collect();
    nodes.sort();
    nodes
}

/// Whether one of the descriptors listed in `fd_dir` (`/proc/self/fd`) is one of NVIDIA's
/// device nodes in `dev`.
fn holds_nvidia_node(fd_dir: &Path, dev: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(fd_dir) else {
        return false;
    };
    let prefix = dev.join(NVIDIA_NODE_PREFIX);
    let prefix = prefix.to_string_lossy();
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|target| target.to_string_lossy().starts_with(&*prefix))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vugpu-landlock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn nvidia_nodes_are_the_nvidia_entries_of_dev() {
        let dev = scratch("dev");
        for f in [
            "nvidiactl",
            "nvidia0",
            "nvidia-uvm",
            "null",
            "dri-not",
            "xnvidia",
        ] {
            std::fs::write(dev.join(f), "").unwrap();
        }
        std::fs::create_dir(dev.join("nvidia-caps")).unwrap();
        let names: Vec<String> = nvidia_nodes(&dev)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["nvidia-caps", "nvidia-uvm", "nvidia0", "nvidiactl"]);
        assert!(nvidia_nodes(&dev.join("missing")).is_empty());
        std::fs::remove_dir_all(&dev).unwrap();
    }

    #[test]
    fn a_held_nvidia_node_is_found_among_the_open_descriptors() {
        let dev = scratch("held");
        std::fs::write(dev.join("nvidiactl"), "").unwrap();
        std::fs::write(dev.join("other"), "").unwrap();
        let fds = Path::new("/proc/self/fd");
        let other = std::fs::File::open(dev.join("other")).unwrap();
        assert!(!holds_nvidia_node(fds, &dev));
        let ctl = std::fs::File::open(dev.join("nvidiactl")).unwrap();
        assert!(holds_nvidia_node(fds, &dev));
        drop(ctl);
        assert!(!holds_nvidia_node(fds, &dev));
        drop(other);
        // The test process holds none of the host's NVIDIA nodes, whether it has any or not.
        assert!(!holds_nvidia_node(fds, Path::new("/dev")));
        assert!(!FilePolicy::for_renderers().reopens_devices_rw);
        std::fs::remove_dir_all(&dev).unwrap();
    }
}
