//! `weft demo` end to end: real proxies, real app, real ports.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

fn free() -> String {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// `weft-proxy` is built beside `weft` when the workspace is built.
fn proxy_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_weft")).with_file_name("weft-proxy");
    assert!(
        bin.is_file(),
        "{} missing: build the whole workspace (cargo build --workspace)",
        bin.display()
    );
    bin
}

#[test]
fn demo_sends_traffic_through_two_proxies() {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["demo", "--once", "--requests", "7"])
        .arg("--proxy-bin")
        .arg(proxy_bin())
        .args(["--outbound-addr", &free(), "--admin-addr", &free()])
        .args([
            "--server-inbound-addr",
            &free(),
            "--server-admin-addr",
            &free(),
            "--app-addr",
            &free(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("7 OK"), "{stdout}");
    // The server proxy accepted exactly one (HTTP/2) connection for all 7.
    let server = stdout.split("server proxy metrics").nth(1).unwrap();
    assert!(
        server.contains(r#"tcp_open_total{direction="inbound",peer="src",tls="disabled"} 1"#),
        "{stdout}"
    );
    assert!(
        server.contains(r#"status_code="200",classification="success"} 7"#),
        "{stdout}"
    );
}

#[test]
fn demo_reports_a_missing_proxy_binary() {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "demo",
            "--once",
            "--proxy-bin",
            "/nonexistent/weft-proxy",
            "--app-addr",
            &free(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run /nonexistent/weft-proxy"));
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
