//! The end-to-end benchmark suite must not rot: its `--quick` mode runs here (debug builds, so
//! the numbers mean nothing and nothing is asserted about them).

use std::process::Command;

use tests::{cargo, leash_bin, workspace_root};

#[test]
fn the_benchmark_suite_runs_in_quick_mode() {
    let status = cargo()
        .args(["build", "--quiet", "--package", "xtask", "--bin", "loadgen"])
        .status()
        .expect("cargo runs");
    assert!(status.success());
    let loadgen = leash_bin().with_file_name("loadgen");
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("results.json");
    let out = Command::new(loadgen)
        .current_dir(workspace_root())
        .args([
            "--quick",
            "--leash",
            leash_bin().to_str().unwrap(),
            "--out",
            out_file.to_str().unwrap(),
        ])
        .output()
        .expect("loadgen runs");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = [
        "startup",
        "idle_rss",
        "http_abs",
        "deny_http",
        "http_fresh",
        "connect_rate",
        "connect_rate_512",
        "socks_rate",
        "deny_connect",
        "connect_bulk",
        "socks_bulk",
        "ws_bulk",
        "mitm_rate",
        "mitm_resume_rate",
        "upstream_connect_rate",
        "bare_connect_rate",
        "bare_forward_rate",
        "exec_isolate",
        "host_loop",
        "host_wake",
        // Sized rows carry their `--quick` sizes in their names.
        "rss_idle_n",
        "rss_tunnel_500",
        "startup_10k_rules",
        "idle_rss_10k_rules",
    ];
    for name in names {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} missing:\n{table}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_file).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert!(rows.len() >= names.len());
    assert!(
        rows.iter()
            .all(|r| r["value"].as_f64().is_some_and(|v| v > 0.0)),
        "every workload measured something: {json}"
    );
    let rates = rows
        .iter()
        .filter(|r| r["unit"] == "op/s" || r["unit"] == "r/s");
    for row in rates {
        assert!(
            row["latency_us"]["p99"].as_u64().is_some(),
            "every rate has its percentiles: {row}"
        );
    }
}
