//! `herd bench pod-start` at its smallest, as a user runs it: it sets up
//! its node (a whole agent and a real dockerd in a namespace), measures
//! both sides, prints figures that add up, and leaves nothing behind. No
//! timing is asserted: BENCHMARKS.md carries the figures.

use std::process::Command;

use herd_testkit::{bin, require};
use serde_json::Value;

/// What the bench makes and must remove: its namespaces, host links and
/// scratch directories are all named `hbps…`.
fn leftovers() -> Vec<String> {
    let mut left = Vec::new();
    for (what, out) in [
        ("netns", Command::new("ip").args(["netns", "list"]).output()),
        ("link", Command::new("ip").args(["-o", "link"]).output()),
    ] {
        let out = out.expect("running ip");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.contains("hbps") {
                left.push(format!("{what}: {line}"));
            }
        }
    }
    for entry in std::fs::read_dir("/tmp").expect("reading /tmp").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("hbps-") {
            left.push(format!("dir: /tmp/{name}"));
        }
    }
    left
}

fn samples(side: &Value) -> Vec<f64> {
    side["samples_ms"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

#[test]
fn bench_pod_start_measures_both_sides_and_cleans_up() {
    require::root();
    require::tool("dockerd", "docker.io");
    require::tool("busybox", "busybox-static");
    let out = Command::new(bin::herd())
        .args(["bench", "pod-start", "--samples", "2", "--pods", "3"])
        .args(["--rounds", "1", "-o", "json"])
        .env("HERD_LOG", "warn")
        .output()
        .expect("running herd bench pod-start");
    assert!(
        out.status.success(),
        "herd bench pod-start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "its -o json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    for side in ["herd_single", "anchor_single"] {
        let s = samples(&r[side]);
        assert_eq!(s.len(), 2, "{side}: two samples asked for: {r}");
        assert!(s.iter().all(|v| *v > 0.0), "{side}: a sample of 0 ms: {r}");
    }
    assert_eq!(r["pods"], 3, "{r}");
    for side in ["herd_many", "anchor_many"] {
        let total = r[side]["total_ms"].as_f64().unwrap_or_default();
        assert!(total > 0.0, "{side}: no time for three pods: {r}");
        assert_eq!(r[side]["rounds_ms"].as_array().map(Vec::len), Some(1));
    }
    let agent = r["herd_many"]["before"]["agent_kib"].as_u64().unwrap_or(0);
    assert!(agent > 0, "the agent's memory was not read: {r}");
    let ratio = r["single_median_ratio"].as_f64().unwrap_or_default();
    let (h, a) = (
        r["herd_single"]["median_ms"].as_f64().unwrap_or_default(),
        r["anchor_single"]["median_ms"].as_f64().unwrap_or(1.0),
    );
    assert!(
        (ratio - h / a).abs() < 1e-9,
        "the ratio is herd / anchor: {r}"
    );
    let left = leftovers();
    assert!(left.is_empty(), "the bench left behind: {left:?}");
}
