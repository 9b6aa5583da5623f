//! The command line of `vhost-user-gpu`.
//!
//! Besides `--socket-path` and `--renderer`, it follows QEMU's conventions for vhost-user
//! backends (docs/interop/vhost-user.rst, "Backend program conventions") so that libvirt can
//! start it: `--fd`, `--print-capabilities`, and for GPUs `--render-node` and `--virgl`.

use std::os::fd::RawFd;
use std::path::PathBuf;

use clap::Parser;

pub use crate::limits::{DEFAULT_MAX_HOSTMEM, MAX_SCANOUTS};

/// `--venus`: whether the virglrenderer renderer offers Venus (Vulkan, capset 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum VenusMode {
    /// On where the library is 1.0 or newer and its Venus capset passes the start-up check;
    /// off on older libraries (upstream marks Venus experimental there).
    #[default]
    Auto,
    /// Required: start-up fails, saying why, when Venus cannot be offered.
    On,
    /// Never offered.
    Off,
}

/// `--sandbox`: whether the daemon confines itself once start-up is over (see
/// `crate::sandbox`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SandboxMode {
    /// After start-up, a seccomp filter (an allow-list of syscalls, no exec, no write-opens) on
    /// every thread and, where the kernel has Landlock, read-only access beneath the renderers'
    /// directories.
    #[default]
    On,
    /// No confinement (to debug a renderer that needs more than the sandbox allows).
    Off,
}

/// The renderers this program knows, compiled in or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RendererKind {
    /// The pure-Rust 2D renderer (no native library, no 3D).
    Software,
    /// libvirglrenderer: 2D and 3D (virgl, virgl2 capsets).
    Virglrenderer,
    /// gfxstream.
    Gfxstream,
}

impl RendererKind {
    /// Every renderer, compiled in or not, in the order `--help` lists them.
    pub const ALL: [RendererKind; 3] = [
        RendererKind::Software,
        RendererKind::Virglrenderer,
        RendererKind::Gfxstream,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RendererKind::Software => "software",
            RendererKind::Virglrenderer => "virglrenderer",
            RendererKind::Gfxstream => "gfxstream",
        }
    }

    /// Whether this build contains the renderer.
    pub fn compiled_in(self) -> bool {
        match self {
            RendererKind::Software => true,
            RendererKind::Virglrenderer => cfg!(feature = "virglrenderer"),
            RendererKind::Gfxstream => cfg!(feature = "gfxstream"),
        }
    }

    /// The renderers this build contains.
    pub fn compiled() -> Vec<RendererKind> {
        Self::ALL.into_iter().filter(|k| k.compiled_in()).collect()
    }

    /// The renderer used without `--renderer`: virglrenderer when compiled in (it also runs
    /// without a GPU, on Mesa's llvmpipe in surfaceless mode), software otherwise.
    pub fn default_for_build() -> RendererKind {
        if RendererKind::Virglrenderer.compiled_in() {
            RendererKind::Virglrenderer
        } else {
            RendererKind::Software
        }
    }
}

impl std::fmt::Display for RendererKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn compiled_list() -> String {
    RendererKind::compiled()
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `--renderer`: only renderers compiled into this build are accepted.
pub fn parse_renderer(s: &str) -> Result<RendererKind, String> {
    let kind = RendererKind::ALL
        .into_iter()
        .find(|k| k.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            format!(
                "unknown renderer '{s}'; this build has: {}",
                compiled_list()
            )
        })?;
    if !kind.compiled_in() {
        return Err(format!(
            "renderer '{}' was not compiled into this build; this build has: {}",
            kind.name(),
            compiled_list()
        ));
    }
    Ok(kind)
}

/// Parses a byte size: a decimal number with an optional binary suffix `K`, `M` or `G`
/// (also `KiB`, `MiB`, `GiB`, any case). Zero and overflowing values are refused.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "'{s}' is not a size (digits with an optional K, M or G)"
        ));
    }
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is too large"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => {
            return Err(format!(
                "'{s}': unknown size suffix '{suffix}' (use K, M or G)"
            ))
        }
    };
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))?;
    if bytes == 0 {
        return Err("the size must be greater than zero".into());
    }
    Ok(bytes)
}

/// Granularity of `--hostmem`: the frontend maps blobs into the region with page granularity.
pub const HOSTMEM_ALIGNMENT: u64 = 4096;

/// Parses `--hostmem`: like [`parse_size`], but `0` (no region) is allowed, and the size must
/// be a multiple of [`HOSTMEM_ALIGNMENT`].
pub fn parse_hostmem(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    let bytes = parse_size(s)?;
    if bytes % HOSTMEM_ALIGNMENT != 0 {
        return Err(format!(
            "'{s}' is not a multiple of {HOSTMEM_ALIGNMENT} bytes"
        ));
    }
    Ok(bytes)
}

fn parse_fd(s: &str) -> Result<RawFd, String> {
    let fd: RawFd = s
        .parse()
        .map_err(|_| format!("'{s}' is not a file descriptor number"))?;
    if fd < 0 {
        return Err(format!("'{s}' is not a file descriptor number"));
    }
    Ok(fd)
}

/// `vhost-user-gpu`: a virtio-gpu device for a vhost-user frontend such as QEMU's
/// `-device vhost-user-gpu-pci`.
#[derive(Debug, Parser)]
#[command(
    name = "vhost-user-gpu",
    version,
    about = "A vhost-user virtio-gpu backend with pluggable renderers.",
    long_about = "A vhost-user virtio-gpu backend with pluggable renderers.\n\n\
        It serves one vhost-user frontend at a time (for QEMU: `-chardev socket,id=gpu,path=PATH \
        -device vhost-user-gpu-pci,chardev=gpu` with shared guest memory, e.g. \
        `-object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem`). \
        When the frontend disconnects, the device is reset and the next connection on \
        --socket-path is served without a restart.\n\n\
        Logging goes to stderr; set RUST_LOG (error, warn, info, debug, trace) to choose how much.",
    after_help = "Exactly one of --socket-path, --fd or --print-capabilities is needed."
)]
pub struct Cli {
    /// Listen on this UNIX socket path for the vhost-user frontend (an existing file there is
    /// replaced). Connections are served one after the other.
    #[arg(short = 's', long, value_name = "PATH", conflicts_with = "fd")]
    pub socket_path: Option<PathBuf>,

    /// Serve the vhost-user frontend on this inherited file descriptor (how libvirt starts
    /// backends). A listening socket is served like --socket-path, connection after connection;
    /// a connected socket is served until that frontend disconnects, then the program exits.
    #[arg(short = 'f', long, value_name = "FDNUM", value_parser = parse_fd)]
    pub fd: Option<RawFd>,

    /// Print what this backend supports as JSON (for libvirt) and exit.
    #[arg(short = 'c', long)]
    pub print_capabilities: bool,

    /// Which renderer draws the guest's commands: "software" (pure Rust, 2D only),
    /// "virglrenderer" (2D and 3D through libvirglrenderer) or "gfxstream". Only renderers
    /// compiled into this build are accepted. Default: virglrenderer when compiled in,
    /// otherwise software.
    #[arg(long, value_name = "RENDERER", value_parser = parse_renderer, conflicts_with = "virgl")]
    pub renderer: Option<RendererKind>,

    /// Same as --renderer virglrenderer (QEMU's backend convention).
    #[arg(short = 'v', long)]
    pub virgl: bool,

    /// DRM render node the 3D renderer should use (e.g. /dev/dri/renderD128). Without it,
    /// virglrenderer picks one itself, or renders on the CPU (Mesa llvmpipe) when there is none.
    #[arg(short = 'r', long, value_name = "PATH")]
    pub render_node: Option<PathBuf>,

    /// Run without a display: the frontend's display socket (VHOST_USER_GPU_SET_SOCKET) is
    /// ignored and the guest's picture goes nowhere. Without this option the device is also
    /// headless until the frontend hands over its display socket.
    #[arg(long)]
    pub headless: bool,

    /// The host memory budget: most host memory the guest can make this process allocate, in
    /// bytes; suffixes K, M and G (powers of 1024) are accepted. Counted at their real size, before
    /// they are allocated: resources' pixels (every mip level, layer and sample at the format's
    /// size), host blobs (whole pages), the records of resources, contexts, backings (per entry)
    /// and held fences, a renderer library's copy of a backing (gfxstream's staging copy) and the
    /// scanout read-back buffer. What would pass the budget is refused with
    /// VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY. Not counted: what the GL or Vulkan driver allocates
    /// inside the renderer library (its contexts, shaders, objects a context creates in its own
    /// command stream, Venus's render server): bound that with a cgroup or the sandbox.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256M")]
    pub max_hostmem: u64,

    /// Size of the host-visible shared memory region (virtio-gpu shmid 1) that guests map host
    /// blobs into (RESOURCE_MAP_BLOB), like QEMU's `hostmem=`; suffixes K, M and G. 0 (the
    /// default): no region. With a size, the protocol features BACKEND_REQ, BACKEND_SEND_FD and
    /// SHMEM are offered and GET_SHMEM_CONFIG reports the region; the frontend must support
    /// vhost-user SHMEM (QEMU 11.1 does, through vhost-user-test-device-pci; 10.0 does not).
    #[arg(long, value_name = "SIZE", value_parser = parse_hostmem, default_value = "0")]
    pub hostmem: u64,

    /// Number of scanouts (displays) the device has, 1 to 16. It should match the frontend's
    /// setting (QEMU: `max_outputs`, default 1): QEMU never answers display queries about a
    /// scanout it does not have.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SCANOUTS)))]
    pub num_scanouts: u32,

    /// Venus (Vulkan for the guest, virglrenderer renderer only): "auto" offers it where
    /// libvirglrenderer is 1.0 or newer and its Venus capset is usable (checked at start-up),
    /// "on" fails at start-up when it cannot be offered, "off" never offers it. Guests need a
    /// host-visible region (--hostmem) as well.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = VenusMode::Auto)]
    pub venus: VenusMode,

    /// libvirglrenderer's Venus render server (1.0 and newer run Venus in it). Default:
    /// $RENDER_SERVER_EXEC_PATH, else /usr/libexec/virgl_render_server (Debian package
    /// virgl-server).
    #[arg(long, value_name = "PATH")]
    pub render_server: Option<PathBuf>,

    /// Confinement once start-up is over: "on" (the default) lets the process make only the
    /// syscalls an allow-list names (no exec, no new processes, no opening a file for writing,
    /// on every thread) and, where the kernel has Landlock, read files only beneath the
    /// directories the renderers need; "off" does not confine it.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = SandboxMode::On)]
    pub sandbox: SandboxMode,

    /// The most time, in microseconds, the GPU thread keeps polling for the guest's next
    /// command after answering one before it sleeps. The window adapts (it grows while commands
    /// arrive within it and drops to zero when the guest goes quiet, like QEMU's IOThread
    /// `poll-max-ns`), so an idle guest costs nothing; the polling thread yields its CPU between
    /// two looks. It saves a wake-up of the daemon's thread per command of a burst at the cost of
    /// the CPU time polled. The default, 200, is about three times a sleep-and-wake round trip
    /// between two vCPUs of a VM (60-70 us measured): the window only grows for gaps shorter than
    /// the maximum. 0 turns polling off.
    #[arg(long, value_name = "US", default_value_t = DEFAULT_POLL_MAX_US,
          value_parser = clap::value_parser!(u64).range(0..=MAX_POLL_MAX_US))]
    pub poll_max_us: u64,
}

/// Default of `--poll-max-us`.
pub const DEFAULT_POLL_MAX_US: u64 = 200;
/// Upper bound of `--poll-max-us` (10 ms: longer polling only burns CPU).
pub const MAX_POLL_MAX_US: u64 = 10_000;

/// Where the vhost-user connection comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A socket path to listen on.
    SocketPath(PathBuf),
    /// An inherited file descriptor (listening or connected).
    Fd(RawFd),
}

/// What the program should do, after the command line was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Print the capabilities JSON and exit.
    PrintCapabilities,
    /// Serve the device.
    Serve(ServeOptions),
}

/// Everything needed to serve the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// Where the frontend connects.
    pub endpoint: Endpoint,
    /// The renderer to use.
    pub renderer: RendererKind,
    /// `--render-node`.
    pub render_node: Option<PathBuf>,
    /// `--headless`.
    pub headless: bool,
    /// `--max-hostmem` in bytes.
    pub max_hostmem: u64,
    /// `--hostmem` in bytes (0: no host-visible region).
    pub hostmem: u64,
    /// `--num-scanouts`.
    pub num_scanouts: u32,
    /// `--venus`.
    pub venus: VenusMode,
    /// `--render-server`.
    pub render_server: Option<PathBuf>,
    /// `--sandbox`.
    pub sandbox: SandboxMode,
    /// `--poll-max-us`.
    pub poll_max_us: u64,
}

impl Cli {
    /// Checks the combination of options and turns them into an [`Action`].
    pub fn action(&self) -> Result<Action, String> {
        if self.print_capabilities {
            return Ok(Action::PrintCapabilities);
        }
        let endpoint = match (&self.socket_path, self.fd) {
            (Some(p), None) => Endpoint::SocketPath(p.clone()),
            (None, Some(fd)) => Endpoint::Fd(fd),
            (None, None) => {
                return Err("one of --socket-path PATH or --fd FDNUM is needed (see --help)".into())
            }
            (Some(_), Some(_)) => return Err("--socket-path and --fd exclude each other".into()),
        };
        let renderer = if self.virgl {
            parse_renderer(RendererKind::Virglrenderer.name())?
        } else {
            self.renderer
                .unwrap_or_else(RendererKind::default_for_build)
        };
        Ok(Action::Serve(ServeOptions {
            endpoint,
            renderer,
            render_node: self.render_node.clone(),
            headless: self.headless,
            max_hostmem: self.max_hostmem,
            hostmem: self.hostmem,
            num_scanouts: self.num_scanouts,
            venus: self.venus,
            render_server: self.render_server.clone(),
            sandbox: self.sandbox,
            poll_max_us: self.poll_max_us,
        }))
    }
}

/// The JSON `--print-capabilities` prints: the type and the features this build supports, in
/// the form QEMU's vhost-user-gpu prints (`{"type": "gpu", "features": [...]}`).
pub fn capabilities_json() -> String {
    let mut features = Vec::new();
    if RendererKind::Virglrenderer.compiled_in() {
        features.push("render-node");
        features.push("virgl");
    }
    let list = features
        .iter()
        .map(|f| format!("    \"{f}\""))
        .collect::<Vec<_>>()
        .join(",\n");
    if list.is_empty() {
        "{\n  \"type\": \"gpu\",\n  \"features\": []\n}\n".to_string()
    } else {
        format!("{{\n  \"type\": \"gpu\",\n  \"features\": [\n{list}\n  ]\n}}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vhost-user-gpu").chain(args.iter().copied()))
    }

    fn serve(args: &[&str]) -> ServeOptions {
        match parse(args).unwrap().action().unwrap() {
            Action::Serve(o) => o,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn socket_path_and_software_renderer() {
        let o = serve(&["--socket-path", "/tmp/x.sock", "--renderer", "software"]);
        assert_eq!(o.endpoint, Endpoint::SocketPath("/tmp/x.sock".into()));
        assert_eq!(o.renderer, RendererKind::Software);
        assert_eq!(o.max_hostmem, DEFAULT_MAX_HOSTMEM);
        assert_eq!(o.num_scanouts, 1);
        assert!(!o.headless);
        assert_eq!(o.render_node, None);
        assert_eq!(o.venus, VenusMode::Auto);
        assert_eq!(o.render_server, None);
        assert_eq!(o.sandbox, SandboxMode::On);
        assert_eq!(o.poll_max_us, DEFAULT_POLL_MAX_US);
    }

    #[test]
    fn poll_max_is_bounded() {
        assert_eq!(serve(&["-s", "/x", "--poll-max-us", "0"]).poll_max_us, 0);
        assert_eq!(
            serve(&["-s", "/x", "--poll-max-us", "10000"]).poll_max_us,
            MAX_POLL_MAX_US
        );
        assert!(parse(&["-s", "/x", "--poll-max-us", "10001"]).is_err());
        assert!(parse(&["-s", "/x", "--poll-max-us", "-1"]).is_err());
    }

    #[test]
    fn sandbox_modes() {
        assert_eq!(
            serve(&["-s", "/x", "--sandbox", "off"]).sandbox,
            SandboxMode::Off
        );
        assert_eq!(
            serve(&["-s", "/x", "--sandbox", "on"]).sandbox,
            SandboxMode::On
        );
        assert!(parse(&["-s", "/x", "--sandbox", "maybe"]).is_err());
    }

    #[test]
    fn venus_modes_and_render_server() {
        let o = serve(&["-s", "/x", "--venus", "on", "--render-server", "/opt/rs"]);
        assert_eq!(o.venus, VenusMode::On);
        assert_eq!(o.render_server, Some(PathBuf::from("/opt/rs")));
        assert_eq!(serve(&["-s", "/x", "--venus", "off"]).venus, VenusMode::Off);
        assert!(parse(&["-s", "/x", "--venus", "maybe"]).is_err());
    }

    #[test]
    fn default_renderer_depends_on_the_build() {
        let o = serve(&["-s", "/tmp/x"]);
        if cfg!(feature = "virglrenderer") {
            assert_eq!(o.renderer, RendererKind::Virglrenderer);
        } else {
            assert_eq!(o.renderer, RendererKind::Software);
        }
    }

    #[test]
    fn qemu_conventions() {
        let o = serve(&[
            "--fd",
            "3",
            "--render-node",
            "/dev/dri/renderD128",
            "--headless",
        ]);
        assert_eq!(o.endpoint, Endpoint::Fd(3));
        assert_eq!(o.render_node, Some(PathBuf::from("/dev/dri/renderD128")));
        assert!(o.headless);
        assert_eq!(
            parse(&["--print-capabilities"]).unwrap().action().unwrap(),
            Action::PrintCapabilities
        );
        assert_eq!(
            parse(&["-c"]).unwrap().action().unwrap(),
            Action::PrintCapabilities
        );
        assert!(parse(&["--fd", "-1"]).is_err());
        assert!(parse(&["--fd", "x"]).is_err());
    }

    #[test]
    fn socket_path_and_fd_exclude_each_other() {
        assert!(parse(&["--socket-path", "/tmp/a", "--fd", "3"]).is_err());
        let e = parse(&[]).unwrap().action().unwrap_err();
        assert!(e.contains("--socket-path"), "{e}");
    }

    #[test]
    fn virgl_flag() {
        let r = parse(&["-s", "/tmp/a", "--virgl"]).unwrap().action();
        if cfg!(feature = "virglrenderer") {
            let Action::Serve(o) = r.unwrap() else {
                panic!("expected serve")
            };
            assert_eq!(o.renderer, RendererKind::Virglrenderer);
        } else {
            assert!(r.unwrap_err().contains("not compiled"));
        }
        assert!(parse(&["-s", "/tmp/a", "--virgl", "--renderer", "software"]).is_err());
    }

    #[test]
    fn renderer_names_are_checked_against_the_build() {
        if cfg!(feature = "gfxstream") {
            assert_eq!(parse_renderer("gfxstream"), Ok(RendererKind::Gfxstream));
        } else {
            let e = parse_renderer("gfxstream").unwrap_err();
            assert!(e.contains("not compiled"), "{e}");
            assert!(e.contains("software"), "{e}");
        }
        let e = parse_renderer("opengl").unwrap_err();
        assert!(e.contains("unknown renderer 'opengl'"), "{e}");
        assert!(e.contains("software"), "{e}");
        assert_eq!(parse_renderer("SOFTWARE"), Ok(RendererKind::Software));
        if cfg!(feature = "virglrenderer") {
            assert_eq!(
                parse_renderer("virglrenderer"),
                Ok(RendererKind::Virglrenderer)
            );
        } else {
            assert!(parse_renderer("virglrenderer").is_err());
        }
        // clap reports the same message.
        if !cfg!(feature = "gfxstream") {
            let e = parse(&["-s", "/tmp/a", "--renderer", "gfxstream"]).unwrap_err();
            assert!(
                e.to_string().contains("was not compiled into this build"),
                "{e}"
            );
        }
    }

    #[test]
    fn hostmem() {
        assert_eq!(parse_hostmem("0"), Ok(0));
        assert_eq!(parse_hostmem("64M"), Ok(64 << 20));
        assert!(parse_hostmem("4097").is_err());
        assert!(parse_hostmem("x").is_err());
        let o = serve(&["--socket-path", "/tmp/s"]);
        assert_eq!(o.hostmem, 0);
        let o = serve(&["--socket-path", "/tmp/s", "--hostmem", "1G"]);
        assert_eq!(o.hostmem, 1 << 30);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12T").is_err());
        assert!(parse_size("-5").is_err());
        assert!(parse_size("18446744073709551615G").is_err());
        assert!(parse_size("99999999999999999999999").is_err());
        let o = serve(&["-s", "/tmp/a", "--max-hostmem", "1G"]);
        assert_eq!(o.max_hostmem, 1 << 30);
        assert!(parse(&["-s", "/tmp/a", "--max-hostmem", "0"]).is_err());
    }

    #[test]
    fn num_scanouts_range() {
        assert_eq!(
            serve(&["-s", "/tmp/a", "--num-scanouts", "16"]).num_scanouts,
            16
        );
        assert!(parse(&["-s", "/tmp/a", "--num-scanouts", "0"]).is_err());
        assert!(parse(&["-s", "/tmp/a", "--num-scanouts", "17"]).is_err());
    }

    #[test]
    fn capabilities_are_json() {
        let j = capabilities_json();
        assert!(j.contains("\"type\": \"gpu\""));
        if cfg!(feature = "virglrenderer") {
            assert!(j.contains("\"virgl\""));
            assert!(j.contains("\"render-node\""));
        } else {
            assert!(j.contains("\"features\": []"));
        }
    }

    #[test]
    fn help_explains_every_option() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for opt in [
            "--socket-path",
            "--fd",
            "--print-capabilities",
            "--renderer",
            "--virgl",
            "--render-node",
            "--headless",
            "--max-hostmem",
            "ERR_OUT_OF_MEMORY",
            "cgroup",
            "--num-scanouts",
            "--sandbox",
            "RUST_LOG",
        ] {
            assert!(help.contains(opt), "--help lacks {opt}");
        }
    }
}
