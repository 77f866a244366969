//! Termination requests: SIGTERM (what the kubelet sends) and SIGINT
//! (Ctrl-C), or, in tests, a channel.
//!
//! The handlers are installed as soon as [`Terminate::from_signals`] is
//! called, so a signal that arrives while a mode is still starting is not
//! lost (and does not kill the process with the default action).

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// A source of termination requests; each SIGTERM/SIGINT is one request.
///
/// Modes that drain treat a second request as "stop now".
#[derive(Debug)]
pub struct Terminate(mpsc::Receiver<()>);

impl Terminate {
    /// Installs SIGTERM and SIGINT handlers and forwards each signal.
    pub fn from_signals() -> anyhow::Result<Self> {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    Some(()) = term.recv() => "SIGTERM",
                    Some(()) = int.recv() => "SIGINT",
                    else => return,
                };
                tracing::info!(signal = name, "termination requested");
                // A full channel already holds enough requests.
                let _ = tx.try_send(());
            }
        });
        Ok(Self(rx))
    }

    /// A source fed by the returned sender, for driving modes in tests.
    pub fn channel() -> (mpsc::Sender<()>, Self) {
        let (tx, rx) = mpsc::channel(4);
        (tx, Self(rx))
    }

    /// Resolves at the next request; never resolves once every sender is
    /// gone (nobody can ask any more).
    pub async fn recv(&mut self) {
        if self.0.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}
