//! `weft demo` end to end: the real controller, real proxies with mTLS,
//! the in-process demo services and real ports on loopback.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// Ports the demo takes from `--port-base` (its documented layout).
const BLOCK: u16 = 60;

/// `weft`, which finds `weft-controller` and `weft-proxy` beside itself
/// (unless `WEFT_CONTROLLER_BIN` / `WEFT_PROXY_BIN` say otherwise).
fn weft() -> Command {
    sibling("weft-controller");
    sibling("weft-proxy");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.stdin(Stdio::null());
    cmd
}

/// `weft-controller` and `weft-proxy` are built beside `weft` when the
/// workspace is built.
fn sibling(name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_weft")).with_file_name(name);
    assert!(
        bin.is_file(),
        "{} missing: build the whole workspace (cargo build --workspace)",
        bin.display()
    );
    bin
}

fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// A `--port-base` whose whole block is free now: below the ephemeral
/// range (so outgoing connections never sit on it), starting from a spot
/// that differs per test process so parallel tests do not collide.
fn free_base() -> u16 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let seed = (std::process::id() ^ nanos) as u16;
    let slots = (32_000 - 20_000) / 100;
    for i in 0..slots {
        let base = 20_000 + ((seed.wrapping_add(i)) % slots) * 100;
        let free = (base..base + BLOCK).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free block of {BLOCK} ports between 20000 and 32000");
}

/// Waits for `child` to exit, at most `timeout` (then kills it and fails).
fn wait(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weft demo still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `weft demo ARGS` to completion, at most `timeout`.
fn run(args: &[&str], timeout: Duration) -> (Output, String, String) {
    let mut child = weft()
        .arg("demo")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes while it runs, so a full pipe never blocks it.
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let status = wait(&mut child, timeout);
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let output = Output {
        status,
        stdout: stdout.clone().into_bytes(),
        stderr: stderr.clone().into_bytes(),
    };
    (output, stdout, stderr)
}

fn reader(pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            text.push_str(&line);
            text.push('\n');
        }
        text
    })
}

/// The demo's temporary directory, from its first line.
fn demo_dir(stdout: &str) -> PathBuf {
    let start = stdout.find("(files in ").unwrap() + "(files in ".len();
    let end = start + stdout[start..].find(')').unwrap();
    PathBuf::from(&stdout[start..end])
}

/// Pids of the processes (other than this one) whose command line or
/// environment names `needle`: the demo's children name its directory
/// (the controller's `--identity-dir`, the proxies' token files).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let mentions = ["cmdline", "environ"].iter().any(|f| {
            std::fs::read(entry.path().join(f))
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        });
        if mentions {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn demo_duration_checks_mtls_on_every_edge() {
    let base = free_base().to_string();
    let admin = free_addr();
    let (out, stdout, stderr) = run(
        &[
            "--duration",
            "20s",
            "--port-base",
            &base,
            "--controller-admin-addr",
            &admin,
        ],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for edge in [
        "traffic → web",
        "web → books-v1",
        "web → books-v2",
        "web → authors",
    ] {
        let line = stdout
            .lines()
            .map(str::trim_start)
            .find(|l| (l.starts_with('√') || l.starts_with('×')) && l.contains(edge))
            .unwrap_or_else(|| panic!("no verdict for {edge}:\n{stdout}"));
        assert!(line.starts_with('√'), "{line}\n{stdout}");
        assert!(line.contains("responses over mTLS"), "{line}");
    }
    assert!(
        stdout.contains("weft demo: every edge carried mTLS traffic"),
        "{stdout}"
    );
    // The table says what runs where, from the chosen base.
    let web_inbound = format!("127.0.0.1:{}", base.parse::<u16>().unwrap() + 23);
    assert!(stdout.contains(&web_inbound), "{stdout}");
    assert!(
        stdout.contains(&format!("admin (metrics API) {admin}")),
        "{stdout}"
    );
    let dir = demo_dir(&stdout);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(processes_mentioning(&dir.display().to_string()).is_empty());
}

#[test]
fn a_taken_port_is_named_with_its_flag_and_nothing_starts() {
    let base = free_base();
    let web_inbound = ("127.0.0.1", base + 23);
    let taken = TcpListener::bind(web_inbound).unwrap();
    let admin = free_addr();
    let args = [
        "--duration",
        "5s",
        "--port-base",
        &base.to_string(),
        "--controller-admin-addr",
        &admin,
    ];
    let (out, stdout, stderr) = run(&args, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{} (the web proxy inbound", base + 23))
            && stderr.contains(&format!("from --port-base {base}) is already in use"))
            && stderr.contains("choose another --port-base"),
        "{stderr}"
    );
    assert!(!stdout.contains("files in"), "started anyway:\n{stdout}");
    // No proxy and no controller of that block was left running.
    for port in base..base + BLOCK {
        let addr = format!("=127.0.0.1:{port}\0");
        assert!(
            processes_mentioning(&addr).is_empty(),
            "a process uses {addr}"
        );
    }
    drop(taken);

    // The controller's admin address, named by its own flag.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap().to_string();
    let args = [
        "--duration",
        "5s",
        "--port-base",
        &base.to_string(),
        "--controller-admin-addr",
        &admin,
    ];
    let (out, _, stderr) = run(&args, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{admin} (the controller admin"))
            && stderr.contains("choose another --controller-admin-addr"),
        "{stderr}"
    );
    assert!(processes_mentioning(&format!("--admin-addr\0{admin}\0")).is_empty());
}

#[test]
fn sigterm_stops_every_child_and_removes_the_directory() {
    let base = free_base().to_string();
    let admin = free_addr();
    let mut child = weft()
        .args([
            "demo",
            "--port-base",
            &base,
            "--controller-admin-addr",
            &admin,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = reader(child.stderr.take().unwrap());
    // Lines as they come, to know when the mesh is up.
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while !seen.contains("Press Ctrl-C to stop.") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the demo never came up:\n{seen}\n{}", err.join().unwrap());
            }
        }
    }
    let dir = demo_dir(&seen);
    assert!(dir.join("config/books-split.yaml").is_file(), "{seen}");
    // The controller and five proxies run, each naming the directory.
    let running = processes_mentioning(&dir.display().to_string());
    assert_eq!(running.len(), 6, "{running:?}\n{seen}");

    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = wait(&mut child, Duration::from_secs(20));
    lines.join().unwrap();
    seen.extend(rx.try_iter().map(|l| l + "\n"));
    let stderr = err.join().unwrap();
    assert_eq!(status.code(), Some(0), "{seen}\n{stderr}");
    assert!(seen.contains("stopped (SIGTERM)"), "{seen}");
    assert!(!dir.exists(), "{} left behind", dir.display());
    let left: Vec<u32> = running
        .into_iter()
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(left.is_empty(), "children left running: {left:?}");
    assert!(processes_mentioning(&dir.display().to_string()).is_empty());
}

#[test]
fn demo_reports_a_missing_proxy_binary() {
    let (out, _, stderr) = run(
        &["--proxy-bin", "/nonexistent/weft-proxy"],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot run /nonexistent/weft-proxy") && stderr.contains("--proxy-bin"),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = weft().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = weft()
        .args(["demo", "--port-base", "65500"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
