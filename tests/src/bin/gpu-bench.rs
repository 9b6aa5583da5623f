//! `gpu-bench`: run the same workloads on several vhost-user-gpu backends, interleaved, and
//! print a table of medians, ratios against the first backend and fractions of the physical
//! floor; optionally write JSON and a PNG chart. `gpu-bench --help` explains the options.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use vhost_user_gpu_tests::bench::workloads::Workload;
use vhost_user_gpu_tests::bench::{direct, report, run, Backend, Settings};
use vhost_user_gpu_tests::process::QEMU_BACKEND;
use vhost_user_gpu_tests::BackendCommand;

const HELP: &str = "\
gpu-bench: the same workloads on several vhost-user-gpu backends, side by side

USAGE: gpu-bench [OPTIONS]

  --backend NAME='CMD ARGS'  a backend (repeatable; the first is the baseline). '{sock}' (or
                             '{socket}') in the command stands for the socket path; without it
                             '--socket-path PATH' is appended. Default: ours with --renderer
                             software and virglrenderer (target/<profile>/vhost-user-gpu next to
                             this program, or $VHOST_USER_GPU_BIN) and QEMU's C backend if
                             installed.
  --no-direct                leave out the virgl-direct column: the 3D rows' command streams
                             submitted straight into libvirglrenderer in this program (one
                             process per sample, no vhost-user), the floor of the 3D rows
  --workloads a,b,c          workloads (default: all; see --list)
  --warmup N                 rounds discarded (default 1)
  --reps N                   rounds kept (default 5)
  --duration S               seconds timed per sample (default 1.0)
  --json PATH                write the JSON report
  --png PATH                 write a PNG chart (scripts/bench/chart.sh: a Python venv with
                             matplotlib, installed by the script with pip on first use)
  --list                     list the workloads and exit
  -h, --help                 this text
";

fn chart_script() -> PathBuf {
    std::env::var_os("GPU_BENCH_CHART").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../scripts/bench/chart.sh"
            ))
        },
        PathBuf::from,
    )
}

fn default_backends() -> Vec<Backend> {
    let mut v = Vec::new();
    if let Ok(ours) = BackendCommand::ours() {
        let p = ours.program.display().to_string();
        for (name, r) in [
            ("ours-software", "software"),
            ("ours-virgl", "virglrenderer"),
        ] {
            if let Ok(b) =
                Backend::parse(&format!("{name}={p} --renderer {r} --socket-path {{sock}}"))
            {
                v.push(b);
            }
        }
    }
    if std::path::Path::new(QEMU_BACKEND).is_file() {
        if let Ok(b) = Backend::parse(&format!("qemu-c={QEMU_BACKEND} --socket-path {{sock}}")) {
            v.push(b);
        }
    }
    v
}

struct Cli {
    settings: Settings,
    json: Option<PathBuf>,
    png: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Result<Option<Cli>, String> {
    let mut backends = Vec::new();
    let mut workloads = Workload::ALL.to_vec();
    let (mut warmup, mut reps, mut duration) = (1u32, 5u32, 1.0f64);
    let (mut json, mut png) = (None, None);
    let mut with_direct = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        let mut val = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{key} needs a value"))
        };
        match key {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            "--list" => {
                for w in Workload::ALL {
                    println!("{:<14} {}\n", w.name(), w.description());
                }
                return Ok(None);
            }
            "--backend" => backends.push(Backend::parse(&val()?)?),
            "--no-direct" => with_direct = false,
            "--workloads" => {
                workloads = val()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        Workload::from_name(s.trim())
                            .ok_or_else(|| format!("unknown workload '{s}' (see --list)"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--warmup" => warmup = val()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--reps" => reps = val()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--duration" => {
                duration = val()?.parse().map_err(|e| format!("--duration: {e}"))?;
                if !duration.is_finite() || duration <= 0.0 {
                    return Err("--duration must be a positive number of seconds".into());
                }
            }
            "--json" => json = Some(PathBuf::from(val()?)),
            "--png" => png = Some(PathBuf::from(val()?)),
            other => return Err(format!("unknown argument '{other}' (see --help)")),
        }
    }
    if backends.is_empty() {
        backends = default_backends();
    }
    if with_direct && workloads.iter().any(|w| w.needs_3d()) {
        backends.push(Backend::direct());
    }
    let settings = Settings {
        backends,
        workloads,
        warmup,
        reps,
        duration: Duration::from_secs_f64(duration.min(1e6)),
    };
    settings.validate()?;
    Ok(Some(Cli {
        settings,
        json,
        png,
    }))
}

fn shell_quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
    {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(direct::CHILD_FLAG) {
        // One sample of the library-direct floor, in a process of its own (see bench::direct).
        return match direct::child_main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gpu-bench {}: {e}", direct::CHILD_FLAG);
                ExitCode::FAILURE
            }
        };
    }
    let cli = match parse_args(&args) {
        Ok(Some(c)) => c,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let command = std::iter::once("gpu-bench".to_owned())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ");
    for b in &cli.settings.backends {
        eprintln!("backend {}: {}", b.name, b.command_line);
    }
    let result = match run(&cli.settings, |l| eprintln!("{l}")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gpu-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", report::table(&result));
    let json = report::to_json(&result, &command).to_pretty();
    let json_path = match (&cli.json, &cli.png) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(_)) => {
            Some(std::env::temp_dir().join(format!("gpu-bench-{}.json", std::process::id())))
        }
        _ => None,
    };
    if let Some(p) = &json_path {
        if let Err(e) = std::fs::write(p, &json) {
            eprintln!("gpu-bench: write {}: {e}", p.display());
            return ExitCode::FAILURE;
        }
        if cli.json.is_some() {
            eprintln!("wrote {}", p.display());
        }
    }
    if let (Some(png), Some(jp)) = (&cli.png, &json_path) {
        let script = chart_script();
        match std::process::Command::new(&script)
            .arg(jp)
            .arg(png)
            .status()
        {
            Ok(st) if st.success() => eprintln!("wrote {}", png.display()),
            Ok(st) => {
                eprintln!("gpu-bench: {} exited with {st}", script.display());
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("gpu-bench: run {}: {e}", script.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
