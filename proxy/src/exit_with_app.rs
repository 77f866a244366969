//! `WEFT_PROXY_EXIT_WITH_APP`: exit when the application has exited.
//!
//! A Job's pod completes only when every container has exited. The proxy is
//! a long-running server, so on clusters without native sidecars (an init
//! container with `restartPolicy: Always`, which Kubernetes stops by itself)
//! a meshed Job would run forever. Linkerd asks users to change their
//! command to call `linkerd-await --shutdown`; Weft instead lets the proxy
//! notice on its own, without touching the application's command.
//!
//! The injector sets `shareProcessNamespace: true` on such pods, so every
//! container's processes are visible in the proxy's `/proc`. Processes are
//! told apart by cgroup: each container has its own, so a process whose
//! `/proc/<pid>/cgroup` differs from the proxy's `/proc/self/cgroup` belongs
//! to another container. PID 1 is the pod's pause process (it lives in the
//! pod-level cgroup and never exits) and is ignored, as is anything in the
//! proxy's own container. Once at least one application process has been
//! seen and then none is left for [`EMPTY_SCANS_TO_EXIT`] scans in a row,
//! the proxy drains and exits 0.
//!
//! The scan reads only `cgroup` and `stat` of each process (world-readable
//! in procfs), once per [`SCAN_INTERVAL`]: a few reads of an in-memory
//! filesystem ten times a second, for the handful of processes a pod has.
//! The interval is short because an application that runs and exits
//! between two scans is never seen, and the proxy would then wait forever
//! (seen on a real kubelet: a Job whose work took under a second, with a
//! one-second interval). An application that lives less than one interval
//! can still be missed.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often `/proc` is scanned.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(100);

/// Consecutive scans without an application process before the proxy
/// exits (half a second). More than one, so a process caught between fork
/// and exec or a scan racing a container restart is not mistaken for the
/// end.
pub const EMPTY_SCANS_TO_EXIT: u32 = 5;

/// Scans after start-up without ever seeing an application process before a
/// warning says why the proxy will not exit with the app (a minute).
const SCANS_BEFORE_WARNING: u32 = 600;

/// Why the watcher cannot start.
#[derive(Debug, thiserror::Error)]
#[error("WEFT_PROXY_EXIT_WITH_APP: cannot read the proxy's own cgroup {path}: {source}")]
pub struct WatchError {
    path: PathBuf,
    source: std::io::Error,
}

/// What one scan concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No application process has been seen yet (the app has not started,
    /// or the pod does not share its process namespace).
    NotStarted,
    /// Application processes are running (or vanished only just now).
    Running,
    /// The application has exited: shut down.
    Exited,
}

/// Watches a proc tree for processes outside the proxy's container.
#[derive(Debug)]
pub struct AppWatch {
    proc_root: PathBuf,
    self_pid: u32,
    own_cgroup: String,
    seen: bool,
    empty_scans: u32,
    scans: u32,
}

// === impl AppWatch ===

impl AppWatch {
    /// Watches the real `/proc` on behalf of this process.
    pub fn new() -> Result<Self, WatchError> {
        Self::with_proc_root(Path::new("/proc"), std::process::id())
    }

    /// Watches `proc_root` (a procfs mount, or a fake tree in tests) on
    /// behalf of process `self_pid`, whose cgroup defines "our container".
    pub fn with_proc_root(proc_root: &Path, self_pid: u32) -> Result<Self, WatchError> {
        let path = proc_root.join(self_pid.to_string()).join("cgroup");
        let own_cgroup =
            std::fs::read_to_string(&path).map_err(|source| WatchError { path, source })?;
        Ok(Self {
            proc_root: proc_root.to_path_buf(),
            self_pid,
            own_cgroup,
            seen: false,
            empty_scans: 0,
            scans: 0,
        })
    }

    /// The live processes outside the proxy's container, pid 1 excepted.
    /// A process that vanishes while being read is simply not counted.
    pub fn app_processes(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != 1 && *pid != self.self_pid)
            .filter(|pid| self.is_app_process(*pid))
            .collect();
        pids.sort_unstable();
        pids
    }

    fn is_app_process(&self, pid: u32) -> bool {
        let dir = self.proc_root.join(pid.to_string());
        let Ok(cgroup) = std::fs::read_to_string(dir.join("cgroup")) else {
            return false;
        };
        if cgroup == self.own_cgroup {
            return false;
        }
        // An exited process stays in /proc as a zombie until its parent
        // reaps it; it no longer runs, so it does not count.
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            return false;
        };
        // `pid (comm) STATE ...`: comm may contain spaces and parentheses,
        // so the state is the first field after the last `)`.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, Some("Z" | "X") | None)
    }

    /// Records one scan that found `app_processes` processes.
    pub fn observe(&mut self, app_processes: usize) -> Verdict {
        self.scans = self.scans.saturating_add(1);
        if app_processes > 0 {
            self.seen = true;
            self.empty_scans = 0;
            return Verdict::Running;
        }
        if !self.seen {
            return Verdict::NotStarted;
        }
        self.empty_scans += 1;
        if self.empty_scans >= EMPTY_SCANS_TO_EXIT {
            Verdict::Exited
        } else {
            Verdict::Running
        }
    }

    /// Scans every `interval` until the application has exited.
    pub async fn run(mut self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut running = 0;
        loop {
            ticks.tick().await;
            let pids = self.app_processes();
            if pids.len() != running {
                tracing::debug!(?pids, "application processes");
            }
            if running == 0 && !pids.is_empty() && !self.seen {
                tracing::info!(
                    ?pids,
                    "application processes seen; exiting when they are gone"
                );
            }
            running = pids.len();
            match self.observe(running) {
                Verdict::Exited => {
                    tracing::info!("every application process has exited");
                    return;
                }
                Verdict::NotStarted if self.scans == SCANS_BEFORE_WARNING => {
                    tracing::warn!(
                        "no process outside the proxy's container is visible; the proxy \
                         exits with the application only when the pod sets shareProcessNamespace: true"
                    );
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    const PROXY_CG: &str = "12:pids:/kubepods/pod1/proxy\n0::/kubepods/pod1/proxy\n";
    const APP_CG: &str = "12:pids:/kubepods/pod1/app\n0::/kubepods/pod1/app\n";
    const PAUSE_CG: &str = "12:pids:/kubepods/pod1\n0::/kubepods/pod1\n";

    /// A fake proc tree: `pid -> (cgroup, state)`.
    fn process(root: &Path, pid: u32, cgroup: &str, state: &str) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup"), cgroup).unwrap();
        std::fs::write(
            dir.join("stat"),
            format!("{pid} (odd) name) {state} 1 1 1 0 -1"),
        )
        .unwrap();
    }

    #[test]
    fn only_other_containers_count() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        process(root, 1, PAUSE_CG, "S");
        process(root, 7, PROXY_CG, "S");
        process(root, 8, PROXY_CG, "S"); // another process of our container
        std::fs::create_dir(root.join("self")).unwrap(); // not a pid
        std::fs::write(root.join("uptime"), "1 1").unwrap();
        let watch = AppWatch::with_proc_root(root, 7).unwrap();
        assert_eq!(watch.app_processes(), Vec::<u32>::new());

        process(root, 20, APP_CG, "R");
        process(root, 21, APP_CG, "Z"); // exited, not yet reaped
        std::fs::create_dir(root.join("22")).unwrap(); // vanished mid-scan
        assert_eq!(watch.app_processes(), vec![20]);
    }

    #[test]
    fn exits_only_after_the_app_was_seen_and_is_gone() {
        let root = tempfile::tempdir().unwrap();
        process(root.path(), 7, PROXY_CG, "S");
        let mut watch = AppWatch::with_proc_root(root.path(), 7).unwrap();
        // Before the app starts, an empty pod is not a finished one.
        for _ in 0..10 {
            assert_eq!(watch.observe(0), Verdict::NotStarted);
        }
        assert_eq!(watch.observe(2), Verdict::Running);
        // Fewer empty scans than EMPTY_SCANS_TO_EXIT are not enough...
        for _ in 1..EMPTY_SCANS_TO_EXIT {
            assert_eq!(watch.observe(0), Verdict::Running);
        }
        // ...and a process coming back resets the count.
        assert_eq!(watch.observe(1), Verdict::Running);
        for _ in 1..EMPTY_SCANS_TO_EXIT {
            assert_eq!(watch.observe(0), Verdict::Running);
        }
        assert_eq!(watch.observe(0), Verdict::Exited);
    }

    // Paused time: the watcher's scans and the test's steps interleave the
    // same way on every run, however loaded the machine is.
    #[tokio::test(start_paused = true)]
    async fn run_returns_when_the_fake_app_exits() {
        let root = tempfile::tempdir().unwrap();
        process(root.path(), 7, PROXY_CG, "S");
        process(root.path(), 30, APP_CG, "S");
        let watch = AppWatch::with_proc_root(root.path(), 7).unwrap();
        let task = tokio::spawn(watch.run(Duration::from_millis(10)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!task.is_finished(), "the app is still running");
        std::fs::remove_dir_all(root.path().join("30")).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the watcher notices the app is gone")
            .unwrap();
    }

    #[test]
    fn a_missing_own_cgroup_is_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let e = AppWatch::with_proc_root(root.path(), 7).unwrap_err();
        assert!(e.to_string().contains("WEFT_PROXY_EXIT_WITH_APP"), "{e}");
    }
}
