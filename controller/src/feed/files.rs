//! The file feed: Kubernetes objects from a directory of YAML files
//! (`--config-dir DIR`), so the whole mesh runs on a laptop without a
//! cluster.
//!
//! Every `*.yaml`/`*.yml` file directly in the directory (any name; names
//! starting with `.` are skipped, so editors' and atomic writers' temporary
//! files are ignored) may hold several `---`-separated documents. Each
//! document is dispatched by `apiVersion`/`kind` to its k8s-openapi type;
//! kinds the store does not hold (ServiceProfile, TrafficSplit, …) are
//! skipped with a debug log so those files can live in the same directory.
//!
//! The directory is polled (file size, mtime, ctime and inode); a changed
//! file is re-parsed and the store's contents are replaced in one step. A
//! file that fails to parse is reported with its path and line and the
//! objects it last parsed to are kept, so a half-saved edit never empties
//! a service.

use crate::store::{Object, Store};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service, ServiceAccount};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why the feed could not start or a file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The directory cannot be listed.
    #[error("config dir {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A document is not valid YAML or not a valid object of its kind.
    #[error("{}{}: {message}", path.display(), location(*line, *column))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem, when the parser knows it.
        line: Option<usize>,
        /// 1-based column of the problem, when the parser knows it.
        column: Option<usize>,
        /// What is wrong (includes the document's kind when known).
        message: String,
    },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c} (line {l})"),
        (Some(l), None) => format!(":{l} (line {l})"),
        _ => String::new(),
    }
}

impl FeedError {
    fn parse(path: &Path, what: &str, e: &serde_yaml::Error) -> Self {
        let loc = e.location();
        FeedError::Parse {
            path: path.to_owned(),
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            message: format!("{what}: {e}"),
        }
    }
}

/// The type header every Kubernetes document starts with.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// Parses one file's text into the objects the store holds. `path` is
/// only used in errors and logs.
pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<Object>, FeedError> {
    // Pass 1: each document's apiVersion/kind (and YAML syntax errors).
    let mut headers = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let header = Option::<TypeMeta>::deserialize(doc)
            .map_err(|e| FeedError::parse(path, "invalid YAML or not a Kubernetes object", &e))?;
        headers.push(header);
    }
    // Pass 2: the typed objects, deserialized from the same text so errors
    // carry their line in the file.
    let mut objects = Vec::new();
    for (doc, header) in serde_yaml::Deserializer::from_str(text).zip(headers) {
        let Some(TypeMeta { api_version, kind }) = header else {
            continue; // an empty document, e.g. a trailing `---`
        };
        let api_version = api_version.unwrap_or_default();
        let kind = kind.unwrap_or_default();
        let what = format!("{kind} ({api_version})");
        let object = match (api_version.as_str(), kind.as_str()) {
            ("v1", "Service") => Service::deserialize(doc).map(|o| Object::Service(Arc::new(o))),
            ("v1", "Endpoints") => {
                Endpoints::deserialize(doc).map(|o| Object::Endpoints(Arc::new(o)))
            }
            ("v1", "Pod") => Pod::deserialize(doc).map(|o| Object::Pod(Arc::new(o))),
            ("v1", "ServiceAccount") => {
                ServiceAccount::deserialize(doc).map(|o| Object::ServiceAccount(Arc::new(o)))
            }
            _ => {
                tracing::debug!(
                    path = %path.display(),
                    api_version,
                    kind,
                    "skipping a document of a kind the store does not hold"
                );
                continue;
            }
        }
        .map_err(|e| FeedError::parse(path, &what, &e))?;
        if object.key().is_none() {
            tracing::warn!(path = %path.display(), kind, "skipping an object without metadata.name");
            continue;
        }
        objects.push(object);
    }
    Ok(objects)
}

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
        }
    }
}

/// One file's last seen version and the objects it last parsed to.
#[derive(Debug)]
struct FileState {
    stamp: Stamp,
    objects: Vec<Object>,
}

/// The file feed's state: which files it has seen and their objects.
#[derive(Debug)]
pub struct FileFeed {
    dir: PathBuf,
    store: Store,
    files: BTreeMap<PathBuf, FileState>,
}

/// What one poll found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Files (re)loaded successfully.
    pub loaded: usize,
    /// Files that failed to parse or read (their last good objects kept).
    pub failed: usize,
    /// Files that disappeared (their objects dropped).
    pub removed: usize,
}

fn is_config_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    yaml && !hidden
}

impl FileFeed {
    /// A feed for `dir` writing to `store`. Checks the directory can be
    /// listed, so a typo in `--config-dir` fails at start-up.
    pub fn new(dir: PathBuf, store: Store) -> Result<Self, FeedError> {
        std::fs::read_dir(&dir).map_err(|source| FeedError::Dir {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            store,
            files: BTreeMap::new(),
        })
    }

    /// Looks for changed, new and removed files; re-parses what changed
    /// and, if any objects changed, replaces the store's contents. Blocking
    /// file I/O: call from a blocking context.
    pub fn poll(&mut self) -> PollReport {
        let mut report = PollReport::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(source) => {
                let error = FeedError::Dir {
                    path: self.dir.clone(),
                    source,
                };
                tracing::warn!(%error, "cannot list the config dir; keeping the current objects");
                return report;
            }
        };
        let mut seen = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if !is_config_file(&path) {
                continue;
            }
            // Follows symlinks (ConfigMap volumes are symlinks).
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {
                    seen.insert(path, Stamp::of(&m));
                }
                _ => {}
            }
        }
        let mut changed = false;
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !seen.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(old) = self.files.remove(&path) {
                tracing::info!(path = %path.display(), objects = old.objects.len(), "config file removed");
                changed |= !old.objects.is_empty();
                report.removed += 1;
            }
        }
        for (path, stamp) in seen {
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| FeedError::Read {
                path: path.clone(),
                source,
            });
            // A file changing while it was read is being written: leave it
            // for the next poll rather than load half of it.
            let now = std::fs::metadata(&path).map(|m| Stamp::of(&m)).ok();
            if now != Some(stamp) {
                tracing::debug!(path = %path.display(), "config file changed while read; retrying next poll");
                continue;
            }
            let parsed = text.and_then(|text| parse_documents(&path, &text));
            match parsed {
                Ok(objects) => {
                    tracing::info!(path = %path.display(), objects = objects.len(), "config file loaded");
                    self.files.insert(path, FileState { stamp, objects });
                    report.loaded += 1;
                    changed = true;
                }
                Err(error) => {
                    report.failed += 1;
                    let kept = match self.files.get_mut(&path) {
                        Some(f) => {
                            f.stamp = stamp;
                            f.objects.len()
                        }
                        None => {
                            self.files.insert(
                                path,
                                FileState {
                                    stamp,
                                    objects: Vec::new(),
                                },
                            );
                            0
                        }
                    };
                    tracing::warn!(%error, kept_objects = kept, "config file rejected; keeping its last good objects");
                }
            }
        }
        if changed {
            let objects: Vec<Object> = self
                .files
                .values()
                .flat_map(|f| f.objects.iter().cloned())
                .collect();
            self.store.replace_all(objects);
            let snap = self.store.snapshot();
            let (services, endpoints, pods, service_accounts) = snap.counts();
            tracing::info!(
                version = snap.version,
                services,
                endpoints,
                pods,
                service_accounts,
                "store updated from the config dir"
            );
        }
        report
    }

    /// Polls every `interval` forever (on the blocking pool).
    pub async fn run(mut self, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            self = match tokio::task::spawn_blocking(move || {
                self.poll();
                self
            })
            .await
            {
                Ok(feed) => feed,
                Err(error) => {
                    tracing::error!(%error, "config dir poll panicked; hot reload stopped");
                    return;
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  ports:
  - port: 80
    name: http
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata:
  name: web-split
---
apiVersion: v1
kind: Endpoints
metadata:
  name: web
  namespace: shop
subsets:
- addresses:
  - ip: 127.0.0.1
  ports:
  - port: 24143
    name: http
---
";

    #[test]
    fn parses_known_kinds_and_skips_others() {
        let objs = parse_documents(Path::new("x.yaml"), GOOD).unwrap();
        let kinds: Vec<_> = objs.iter().map(|o| o.kind().to_string()).collect();
        assert_eq!(kinds, ["Service", "Endpoints"]);
    }

    #[test]
    fn type_errors_carry_the_line() {
        let bad = GOOD.replace("port: 24143", "port: lots");
        let err = parse_documents(Path::new("dir/x.yaml"), &bad).unwrap_err();
        let FeedError::Parse { line, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*line, Some(25), "{err}");
        assert!(err.to_string().starts_with("dir/x.yaml:25:"), "{err}");
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let bad = format!("{GOOD}apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n");
        let err = parse_documents(Path::new("x.yaml"), &bad).unwrap_err();
        let FeedError::Parse { line, .. } = &err else {
            panic!("{err}")
        };
        assert!(matches!(line, Some(l) if *l >= 31), "{err}");
    }

    #[test]
    fn bad_file_keeps_last_good_objects() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new();
        let mut feed = FileFeed::new(tmp.path().to_owned(), store.clone()).unwrap();
        std::fs::write(tmp.path().join("web.yml"), GOOD).unwrap();
        std::fs::write(tmp.path().join(".web.yml.swp"), "garbage: [").unwrap();
        assert_eq!(feed.poll().loaded, 1);
        assert_eq!(store.snapshot().counts(), (1, 1, 0, 0));
        std::fs::write(tmp.path().join("web.yml"), "kind: [").unwrap();
        assert_eq!(feed.poll().failed, 1);
        assert_eq!(store.snapshot().counts(), (1, 1, 0, 0));
        std::fs::remove_file(tmp.path().join("web.yml")).unwrap();
        assert_eq!(feed.poll().removed, 1);
        assert_eq!(store.snapshot().counts(), (0, 0, 0, 0));
    }
}
