//! The demo's child processes (`weft-controller`, one `weft-proxy` per
//! workload): found, started with their output in log files, waited for
//! until ready, watched while the demo runs, and stopped — SIGTERM, then
//! SIGKILL after a grace period — however the demo ends.

use super::client::fetch;
use anyhow::{bail, Context};
use rustix::process::{kill_process, Pid, Signal};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Lines of a child's log shown when it fails.
const LOG_TAIL: usize = 20;

/// One started process.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Its admin server, whose `/ready` says it can serve.
    admin: SocketAddr,
    /// Reaped: it exited and we collected its status.
    done: bool,
}

/// Every process the demo started, stopped when this is dropped.
#[derive(Default)]
pub struct Procs {
    list: Vec<Proc>,
}

/// Finds a binary: the flag (or its environment variable), else beside
/// the running `weft`, else on `$PATH`. Fails naming where it looked and
/// how to point at it.
pub fn find(given: Option<PathBuf>, name: &str, flag: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        if !path.is_file() {
            bail!(
                "cannot run {}: no such file (from {flag} / {env})",
                path.display()
            );
        }
        return Ok(path);
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)));
    if let Some(path) = sibling.filter(|p| p.is_file()) {
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let Some(path) = on_path.into_iter().find(|p| p.is_file()) {
        return Ok(path);
    }
    bail!(
        "cannot find {name} beside weft or on $PATH: build it (cargo build --workspace) or set {flag} / {env}"
    )
}

// === impl Procs ===

impl Procs {
    /// Starts `cmd` as `name`, its stdout and stderr going to `log`, in
    /// its own process group (so a Ctrl-C in the terminal reaches `weft`
    /// alone, which then stops its children in order). `admin` is where
    /// its `/ready` answers. Returns its pid.
    pub fn spawn(
        &mut self,
        name: &str,
        mut cmd: Command,
        log: PathBuf,
        admin: SocketAddr,
    ) -> anyhow::Result<u32> {
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", cmd.get_program().to_string_lossy()))?;
        let pid = child.id();
        self.list.push(Proc {
            name: name.to_owned(),
            child,
            log,
            admin,
            done: false,
        });
        Ok(pid)
    }

    /// Waits until every process answers `/ready` with 200, at most
    /// `timeout`; fails at once, with its log, if one exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.list.len() {
            loop {
                self.check_running()?;
                let p = &self.list[i];
                let answer = fetch(p.admin, "/ready", Duration::from_secs(1)).await;
                if matches!(answer, Ok((200, _))) {
                    break;
                }
                if Instant::now() > deadline {
                    let last = match answer {
                        Ok((status, body)) => {
                            format!(
                                "/ready answered {status}: {}",
                                String::from_utf8_lossy(&body).trim()
                            )
                        }
                        Err(e) => format!("{e:#}"),
                    };
                    bail!(
                        "{} not ready after {}s ({last}); its log:\n{}",
                        p.name,
                        timeout.as_secs(),
                        tail(&p.log)
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Fails, naming the process and showing its log, if one has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for p in &mut self.list {
            if p.done {
                continue;
            }
            if let Some(status) = p.child.try_wait()? {
                p.done = true;
                bail!("{} exited ({status}); its log:\n{}", p.name, tail(&p.log));
            }
        }
        Ok(())
    }

    /// Sends SIGTERM to every process still running, waits up to `grace`
    /// for all of them to exit, then kills the rest. Returns the names of
    /// the ones that had to be killed.
    pub async fn stop(&mut self, grace: Duration) -> Vec<String> {
        self.terminate();
        let deadline = Instant::now() + grace;
        while !self.reap() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill()
    }

    fn terminate(&mut self) {
        for p in self.list.iter().filter(|p| !p.done) {
            let pid = i32::try_from(p.child.id()).ok().and_then(Pid::from_raw);
            if let Some(pid) = pid {
                let _ = kill_process(pid, Signal::TERM);
            }
        }
    }

    /// Collects the exit of every process that has ended; true when none
    /// is left running.
    fn reap(&mut self) -> bool {
        for p in self.list.iter_mut().filter(|p| !p.done) {
            p.done = !matches!(p.child.try_wait(), Ok(None));
        }
        self.list.iter().all(|p| p.done)
    }

    fn kill(&mut self) -> Vec<String> {
        let mut killed = Vec::new();
        for p in self.list.iter_mut().filter(|p| !p.done) {
            let _ = p.child.kill();
            let _ = p.child.wait();
            p.done = true;
            killed.push(p.name.clone());
        }
        killed
    }
}

impl Drop for Procs {
    /// The demo stops its children explicitly; this covers every early
    /// return, so no error path leaves a process behind.
    fn drop(&mut self) {
        self.terminate();
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.reap() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

/// The last [`LOG_TAIL`] lines of a log file, indented.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(LOG_TAIL);
    if lines.is_empty() {
        return "  (empty)".into();
    }
    lines[from..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
