//! The benchmark itself works: a short run through every topology produces
//! a complete report with no failed requests. (No timing is asserted: the
//! figures are for people, in `docs/benchmarks.md`.)
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::Command;

#[test]
fn short_run_reports_every_topology() {
    let bench = std::path::PathBuf::from(env!("CARGO_BIN_EXE_weft-bench"));
    let proxy = bench.with_file_name("weft-proxy");
    assert!(
        proxy.is_file(),
        "{} missing: build the workspace first",
        proxy.display()
    );
    let json = std::env::temp_dir().join(format!("weft-bench-smoke-{}.json", std::process::id()));
    let out = Command::new(&bench)
        .args(["--rates", "200", "--seconds", "1", "--connections", "8"])
        .args(["--saturation-seconds", "1", "--saturation-connections", "4"])
        .arg("--proxy-bin")
        .arg(&proxy)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "| Direct | 200 |",
        "| OneProxy | 200 |",
        "| TwoProxies | 200 |",
        "### Maximum throughput",
    ] {
        assert!(stdout.contains(row), "missing {row:?} in\n{stdout}");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let rates = results["rates"].as_array().unwrap();
    assert_eq!(rates.len(), 4);
    for r in rates {
        assert_eq!(r["errors"], 0, "{r}");
        assert!(r["requests"].as_u64().unwrap() >= 150, "{r}");
    }
    // Two proxies report two CPU and RSS figures.
    assert_eq!(rates[2]["peak_rss_mib"].as_array().unwrap().len(), 2);
    assert_eq!(rates[3]["topology"], "two-proxies-mtls");
}

#[test]
fn load_balancing_comparison_runs() {
    let bench = std::path::PathBuf::from(env!("CARGO_BIN_EXE_weft-bench"));
    let out = Command::new(&bench)
        .args([
            "lb",
            "--rate",
            "100",
            "--seconds",
            "2",
            "--endpoints",
            "3",
            "--slow-ms",
            "300",
            "--timeout-ms",
            "1000",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in ["| round-robin |", "| least-loaded |", "| peak-ewma |"] {
        assert!(stdout.contains(row), "missing {row:?} in\n{stdout}");
    }
}
