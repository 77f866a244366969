//! The issuer in force, and its hot reload from the identity directory.
//!
//! Rotating the issuer must not need a restart, and a half-written or wrong
//! file must not take the CA down: the directory is polled, a changed set
//! of files is loaded and checked as a whole (key matches certificate,
//! chain to `ca.crt`, validity), and only a good set replaces the issuer in
//! force. A bad set is logged once and the previous issuer stays.

use crate::metrics::{unix_seconds, Metrics, ReloadLabels};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_identity::{IdentityDir, Issuer, IssuerFiles};

/// Shared read access to the issuer in force; cheap to clone.
#[derive(Clone)]
pub struct IssuerStore {
    rx: watch::Receiver<Arc<Issuer>>,
}

impl IssuerStore {
    /// The issuer in force now.
    pub fn current(&self) -> Arc<Issuer> {
        self.rx.borrow().clone()
    }

    /// A receiver that wakes when a new issuer is installed.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Issuer>> {
        self.rx.clone()
    }
}

/// Loads the issuer now (failing start-up if it is not usable) and returns
/// the store plus the task that keeps it up to date.
pub fn start(
    dir: IdentityDir,
    interval: Duration,
    metrics: Metrics,
) -> Result<(IssuerStore, impl std::future::Future<Output = ()>), weft_identity::Error> {
    let files = dir.read_issuer_files()?;
    let issuer = Arc::new(dir.load_issuer_from(&files)?);
    tracing::info!(
        subject = issuer.subject(),
        not_after = %humanize(issuer.not_after()),
        dir = %dir.path().display(),
        "issuer loaded"
    );
    metrics.issuer_expiry.set(unix_seconds(issuer.not_after()));
    let (tx, rx) = watch::channel(issuer);
    let task = reload_loop(dir, files, tx, interval, metrics);
    Ok((IssuerStore { rx }, task))
}

async fn reload_loop(
    dir: IdentityDir,
    mut last_seen: IssuerFiles,
    tx: watch::Sender<Arc<Issuer>>,
    interval: Duration,
    metrics: Metrics,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut read_error: Option<String> = None;
    loop {
        ticker.tick().await;
        let files = match dir.read_issuer_files() {
            Ok(f) => {
                read_error = None;
                f
            }
            Err(error) => {
                // Logged once per distinct problem, not on every poll.
                let text = error.to_string();
                if read_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(%error, "cannot read issuer files; keeping the issuer in force");
                    read_error = Some(text);
                }
                continue;
            }
        };
        if files == last_seen {
            continue;
        }
        last_seen = files.clone();
        match dir.load_issuer_from(&files) {
            Ok(issuer) => {
                tracing::info!(
                    subject = issuer.subject(),
                    not_after = %humanize(issuer.not_after()),
                    "issuer files changed: new issuer in force"
                );
                metrics.issuer_expiry.set(unix_seconds(issuer.not_after()));
                metrics
                    .issuer_reload
                    .get_or_create(&ReloadLabels { result: "ok" })
                    .inc();
                tx.send_replace(Arc::new(issuer));
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    "issuer files changed but are not usable; keeping the previous issuer"
                );
                metrics
                    .issuer_reload
                    .get_or_create(&ReloadLabels { result: "error" })
                    .inc();
            }
        }
    }
}

/// RFC 3339 rendering of a time for logs.
pub fn humanize(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
