//! Child processes that die with the harness.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};

use crate::error::{io_err, Error, Result};

/// `setpriv --pdeathsig KILL` makes the kernel kill a child whose parent dies
/// without cleaning up (a test binary killed by a timeout), so no etcd or API
/// server outlives its test. util-linux is essential on Debian, so it is
/// normally there; without it the harness still kills children on drop.
const SETPRIV: &str = "/usr/bin/setpriv";
/// util-linux's nsenter, to start node processes in the node's network.
const NSENTER: &str = "/usr/bin/nsenter";

/// One process of the control plane, its output going to a log file.
///
/// Dropping it kills (SIGKILL) and reaps exactly this process.
pub(crate) struct Managed {
    pub(crate) component: &'static str,
    child: Mutex<Option<Child>>,
    pid: u32,
    pub(crate) log: PathBuf,
}

impl Managed {
    pub(crate) fn spawn(
        component: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self> {
        Self::spawn_wrapped(component, &[], program, args, log)
    }

    /// Like [`spawn`](Self::spawn), inside the test node's network
    /// namespace. `nsenter --net` switches only that namespace: the process
    /// shares the host's mounts, so what the kubelet mounts, containerd sees.
    pub(crate) fn spawn_in_netns(
        component: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self> {
        let netns = format!("--net=/var/run/netns/{}", crate::node::NETNS);
        Self::spawn_wrapped(component, &[NSENTER, &netns, "--"], program, args, log)
    }

    fn spawn_wrapped(
        component: &'static str,
        wrapper: &[&str],
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self> {
        let out = File::create(&log).map_err(io_err(&log))?;
        let err = out.try_clone().map_err(io_err(&log))?;
        let mut cmd = if Path::new(SETPRIV).exists() {
            let mut c = Command::new(SETPRIV);
            c.arg("--pdeathsig").arg("KILL").arg("--");
            c.args(wrapper).arg(program);
            c
        } else if let Some((first, rest)) = wrapper.split_first() {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            component,
            program: program.to_owned(),
            source,
        })?;
        let pid = child.id();
        tracing::debug!(component, pid, log = %log.display(), "spawned");
        Ok(Self {
            component,
            child: Mutex::new(Some(child)),
            pid,
            log,
        })
    }

    /// The OS process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// `Some(status)` once the process has exited by itself (not after
    /// [`stop`](Self::stop)).
    pub(crate) fn exited(&self) -> Option<ExitStatus> {
        let mut guard = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `lines` lines of the log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// An error saying this process failed, with its log tail.
    pub(crate) fn not_ready(&self, reason: impl Into<String>) -> Error {
        Error::NotReady {
            component: self.component,
            reason: reason.into(),
            log: self.log.clone(),
            log_tail: self.log_tail(40),
        }
    }

    /// Kills and reaps the process; a no-op the second time.
    pub(crate) fn stop(&self) {
        let taken = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut child) = taken {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
            tracing::debug!(component = self.component, pid = self.pid, "stopped");
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a file (at most its last 64 KiB are read).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before the child binds it, so another process can
/// in principle grab it in between; callers retry start-up on
/// "address already in use".
pub(crate) fn free_port() -> Result<u16> {
    free_port_on(std::net::Ipv4Addr::LOCALHOST)
}

/// Like [`free_port`], on another local address.
pub(crate) fn free_port_on(address: std::net::Ipv4Addr) -> Result<u16> {
    let at = format!("{address}:0");
    let l = TcpListener::bind((address, 0)).map_err(io_err(&at))?;
    let port = l.local_addr().map_err(io_err(&at))?.port();
    Ok(port)
}

/// True when a log shows a port clash, which is worth a retry on new ports.
pub(crate) fn is_port_clash(log: &str) -> bool {
    log.contains("address already in use") || log.contains("bind: address in use")
}
