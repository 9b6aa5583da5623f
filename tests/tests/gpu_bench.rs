//! Smoke test of `gpu-bench`: tiny settings against our daemon (software renderer), then the
//! JSON report must list every workload with, for the backend, either a value for every metric
//! or an explicit n/a / failed reason; the 2D workloads must have values (our daemon runs them)
//! and the 3D ones must say why not (the software renderer offers no VIRGL). A second test runs
//! the 3D workloads (clear + draw, read-back checked by the guest) on `--renderer virglrenderer`.

use std::process::Command;

use vhost_user_gpu_tests::bench::json::Json;
use vhost_user_gpu_tests::bench::workloads::Workload;
use vhost_user_gpu_tests::BackendCommand;

#[test]
fn gpu_bench_reports_every_workload() {
    let ours = BackendCommand::ours().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("gpu-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_gpu-bench"))
        .arg("--backend")
        .arg(format!(
            "sw={} --renderer software --socket-path {{sock}}",
            ours.program.display()
        ))
        .args([
            "--warmup",
            "0",
            "--reps",
            "1",
            "--duration",
            "0.05",
            "--json",
        ])
        .arg(&json_path)
        .output()
        .expect("run gpu-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "gpu-bench failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("| workload"), "no table in:\n{stdout}");
    let text = std::fs::read_to_string(&json_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let rep = Json::parse(&text).unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{text}"));
    assert_eq!(rep.get("baseline").and_then(Json::as_str), Some("sw"));
    let floors = rep.get("floors").unwrap();
    for k in ["memcpy_gbps_8mb", "memcpy_gbps_33mb", "eventfd_rtt_us"] {
        let v = floors.get(k).and_then(Json::as_f64).unwrap_or(f64::NAN);
        assert!(v > 0.0, "floor {k} = {v}");
    }
    let wls = rep.get("workloads").and_then(Json::as_arr).unwrap();
    let names: Vec<&str> = wls.iter().filter_map(|w| w.get("name")?.as_str()).collect();
    let all: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
    assert_eq!(names, all, "workloads in the report");
    for (w, kind) in wls.iter().zip(Workload::ALL) {
        let r = w
            .get("results")
            .and_then(|r| r.get("sw"))
            .unwrap_or_else(|| panic!("{}: no result for sw", kind.name()));
        let status = r.get("status").and_then(Json::as_str).unwrap_or("");
        match status {
            "ok" => {
                let metrics = r.get("metrics").unwrap();
                for m in kind.metrics() {
                    let v = metrics
                        .get(m.key)
                        .and_then(|x| x.get("median"))
                        .and_then(Json::as_f64);
                    assert!(
                        v.is_some_and(|v| v.is_finite() && v >= 0.0),
                        "{}: metric {} has no value: {r:?}",
                        kind.name(),
                        m.key
                    );
                }
                let ff = r
                    .get("floor_fraction")
                    .and_then(Json::as_f64)
                    .unwrap_or(f64::NAN);
                assert!(ff > 0.0, "{}: floor fraction {ff}", kind.name());
            }
            "n/a" | "failed" => {
                let reason = r.get("reason").and_then(Json::as_str).unwrap_or("");
                assert!(
                    !reason.is_empty(),
                    "{}: {status} without a reason",
                    kind.name()
                );
            }
            other => panic!("{}: status '{other}'", kind.name()),
        }
        if kind.needs_3d() {
            assert_eq!(
                status,
                "n/a",
                "{}: the software renderer has no 3D: {r:?}",
                kind.name()
            );
            assert!(r
                .get("reason")
                .and_then(Json::as_str)
                .unwrap_or("")
                .contains("VIRGL"));
        } else {
            assert_eq!(
                status,
                "ok",
                "{}: our daemon must run it: {r:?}\n{stderr}",
                kind.name()
            );
        }
    }
}

#[test]
fn gpu_bench_3d_workloads_on_virglrenderer() {
    let ours = BackendCommand::ours().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("gpu-bench-smoke3d-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_gpu-bench"))
        .arg(format!(
            "--backend=virgl={} --renderer virglrenderer --socket-path {{sock}}",
            ours.program.display()
        ))
        .args([
            "--workloads",
            "3d-submit,3d-readback,3d-scanout",
            "--warmup",
            "0",
            "--reps",
            "1",
        ])
        .args(["--duration", "0.05", "--json"])
        .arg(&json_path)
        .output()
        .expect("run gpu-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "gpu-bench failed: {}\n{stderr}",
        out.status
    );
    let text = std::fs::read_to_string(&json_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let rep = Json::parse(&text).unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{text}"));
    let wls = rep.get("workloads").and_then(Json::as_arr).unwrap();
    assert_eq!(wls.len(), 3);
    for w in wls {
        let name = w.get("name").and_then(Json::as_str).unwrap_or("?");
        if name == "3d-scanout" {
            check_3d_scanout(w, &stderr);
            continue;
        }
        // Our daemon, and the library-direct column that the 3D rows get by default (the same
        // streams straight into libvirglrenderer, its pixels checked the same way).
        let mut medians = Vec::new();
        for backend in ["virgl", "virgl-direct"] {
            let r = w.get("results").and_then(|r| r.get(backend)).unwrap();
            assert_eq!(
                r.get("status").and_then(Json::as_str),
                Some("ok"),
                "{name} on {backend}: {r:?}\n{stderr}"
            );
            let ops = r
                .get("metrics")
                .and_then(|m| m.get("ops_per_s"))
                .and_then(|m| m.get("median"))
                .and_then(Json::as_f64)
                .unwrap_or(0.0);
            assert!(ops > 0.0, "{name} on {backend}: {ops} ops/s");
            medians.push(ops);
        }
        // The 3D rows' floor is the direct column's median, and says so.
        let floor = w.get("floor").unwrap();
        assert_eq!(floor.get("value").and_then(Json::as_f64), Some(medians[1]));
        let assumption = floor.get("assumption").and_then(Json::as_str).unwrap_or("");
        assert!(
            assumption.contains("straight into libvirglrenderer"),
            "{name}: floor assumption {assumption:?}"
        );
    }
}

/// The 3d-scanout row: our daemon ran it (frames/s > 0, a dmabuf share between 0 and 1: 0 on
/// llvmpipe, where the frames go as read-back pixels that the workload checks); the
/// library-direct column does not apply; the floor is the read-back path's.
fn check_3d_scanout(w: &Json, stderr: &str) {
    let r = w.get("results").and_then(|r| r.get("virgl")).unwrap();
    assert_eq!(
        r.get("status").and_then(Json::as_str),
        Some("ok"),
        "3d-scanout on virgl: {r:?}\n{stderr}"
    );
    let median = |key: &str| {
        r.get("metrics")
            .and_then(|m| m.get(key))
            .and_then(|m| m.get("median"))
            .and_then(Json::as_f64)
            .unwrap_or(f64::NAN)
    };
    assert!(median("frames_per_s") > 0.0, "3d-scanout: {r:?}");
    let share = median("dmabuf_share");
    assert!((0.0..=1.0).contains(&share), "dmabuf share {share}");
    let direct = w
        .get("results")
        .and_then(|r| r.get("virgl-direct"))
        .unwrap();
    assert_eq!(direct.get("status").and_then(Json::as_str), Some("n/a"));
    let assumption = w
        .get("floor")
        .and_then(|f| f.get("assumption"))
        .and_then(Json::as_str)
        .unwrap_or("");
    assert!(
        assumption.contains("read-back path"),
        "3d-scanout floor assumption {assumption:?}"
    );
}
