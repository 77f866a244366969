//! `pause`: the pod sandbox process.
//!
//! It holds the pod's namespaces open and does nothing else, except, as
//! PID 1 of a pod that shares its PID namespace, reaping the zombies that
//! orphaned processes leave behind (nobody else would).

use crate::signal::Terminate;
use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

/// Blocks until terminated, reaping children on every SIGCHLD.
pub async fn run(mut terminate: Terminate) -> anyhow::Result<()> {
    let mut children = signal(SignalKind::child()).context("installing the SIGCHLD handler")?;
    tracing::info!(pid = std::process::id(), "pausing");
    // Children may have exited before the handler was installed.
    reap();
    loop {
        tokio::select! {
            () = terminate.recv() => return Ok(()),
            Some(()) = children.recv() => reap(),
        }
    }
}

/// Collects every exited child without blocking.
#[allow(unsafe_code)]
fn reap() {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid only writes the exit status through the pointer,
        // which points at a live local; WNOHANG makes it return at once.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            // 0: children left but none exited; -1: no children (ECHILD).
            return;
        }
        tracing::debug!(pid, status, "reaped a child");
    }
}
