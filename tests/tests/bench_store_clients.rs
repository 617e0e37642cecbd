//! The benches that start their own store (`herd bench net`, `herd bench
//! units`) at their smallest, as a user runs them: the store they start
//! must take their clients (it once refused to start, asking for a join
//! token, once agents defaulted to TLS), and their figures must add up.
//! No timing is asserted: BENCHMARKS.md carries the figures.

use std::process::Command;

use herd_testkit::{bin, require};
use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(bin::herd())
        .arg("bench")
        .args(args)
        .args(["-o", "json"])
        .env("HERD_LOG", "warn")
        .output()
        .expect("running herd bench");
    assert!(
        out.status.success(),
        "herd bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "herd bench {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn bench_net_converges_and_measures_both_paths() {
    require::root();
    require::tool("iperf3", "iperf3");
    let v = bench(&["net", "--machines", "50", "--rounds", "1", "--seconds", "1"]);
    let c = &v["convergence"];
    assert_eq!(c["machines"], 50, "{v}");
    assert!(c["converge_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert!(c["store_bytes_in"].as_u64().unwrap() > 0, "{v}");
    let paths: Vec<(&str, &str)> = v["datapath"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(p["gbit_s"].as_f64().unwrap() > 0.0, "{p}");
            (p["backend"].as_str().unwrap(), p["path"].as_str().unwrap())
        })
        .collect();
    for backend in ["host-gw", "vxlan"] {
        for path in ["host-to-host", "pod-to-pod"] {
            assert!(
                paths.contains(&(backend, path)),
                "{backend} {path} missing: {v}"
            );
        }
    }
}

#[test]
fn bench_units_places_every_unit_and_moves_a_lost_machines() {
    let v = bench(&[
        "units",
        "--machines",
        "20",
        "--units",
        "100",
        "--members",
        "1",
    ]);
    assert_eq!(v["units"], 100, "{v}");
    assert_eq!(v["engine_writes_per_unit"], 1.0, "{v}");
    assert!(v["lost_machine_units"].as_u64().unwrap() > 0, "{v}");
}
