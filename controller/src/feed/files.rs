//! The file feed: Kubernetes objects from a directory of YAML files
//! (`--config-dir DIR`), so the whole mesh runs on a laptop without a
//! cluster.
//!
//! Every `*.yaml`/`*.yml` file directly in the directory (any name; names
//! starting with `.` are skipped, so editors' and atomic writers' temporary
//! files are ignored) may hold several `---`-separated documents. Each
//! document is decoded by `weft-smi-crds`' loader (the one the CLI uses)
//! and dispatched by `apiVersion`/`kind`: core kinds (Service, Endpoints,
//! Pod, ServiceAccount, Namespace) to their k8s-openapi types,
//! ServiceProfile/TrafficSplit/HTTPRouteGroup/TCPRoute/TrafficTarget to the
//! typed and validated `weft-smi-crds` forms; other kinds (ConfigMap, …)
//! are skipped with a debug log so they can live in the same directory.
//!
//! The directory is polled (file size, mtime, ctime and inode); a changed
//! file is re-parsed and the store's contents are replaced in one step. A
//! file that fails to parse is reported with its path and line and the
//! objects it last parsed to are kept, so a half-saved edit never empties
//! a service. An object that parses but fails validation (a bad regex in a
//! ServiceProfile, a TrafficSplit with all-zero weights) is rejected alone:
//! it is logged with its field paths, file and line, its previous valid
//! version stays in force, and the rest of the file is loaded. Validation
//! is [`super::check`], shared with the Kubernetes feed.

use super::Checked;
use crate::store::{Kind, Object, ObjectKey, Store};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service, ServiceAccount};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use weft_smi_crds::{AnyObject, ValidationErrors};

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

/// An object that parsed but failed its kind's validation (a bad regex in
/// a ServiceProfile, all-zero TrafficSplit weights, …). The feed keeps the
/// object's previous valid version, if it has one, instead of storing it.
#[derive(Debug)]
pub struct Rejected {
    /// The object's kind.
    pub kind: Kind,
    /// The object's `(namespace, name)`.
    pub key: ObjectKey,
    /// 1-based line where the object's document starts.
    pub line: usize,
    /// Every problem, with its field path (`spec.routes[0].condition.pathRegex`).
    pub errors: ValidationErrors,
}

/// What one file parsed to.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Valid objects of the kinds the store holds.
    pub objects: Vec<Object>,
    /// Objects rejected by validation.
    pub rejected: Vec<Rejected>,
}

/// Parses one file's text into the objects the store holds. `path` is
/// only used in errors and logs.
///
/// Documents are split and decoded by `weft_smi_crds::parse_documents_with_positions`
/// (one YAML loader for the controller and the CLI): the mesh's own kinds
/// come back typed, core kinds as JSON that is decoded here into their
/// k8s-openapi types. A document that is not YAML or not a valid instance
/// of its type fails the whole file (`Err`); a typed object that fails
/// validation is returned in [`Parsed::rejected`] so the caller can keep
/// that object's previous version while still loading the rest.
pub fn parse_documents(path: &Path, text: &str) -> Result<Parsed, FeedError> {
    let docs = weft_smi_crds::parse_documents_with_positions(text).map_err(|e| {
        let what = e
            .kind
            .as_deref()
            .unwrap_or("invalid YAML or not a Kubernetes object");
        FeedError::Parse {
            path: path.to_owned(),
            line: Some(e.line),
            column: (e.column > 0).then_some(e.column),
            message: format!("document {}: {what}: {}", e.document, e.message),
        }
    })?;
    let mut out = Parsed::default();
    for doc in docs {
        let line = doc.line;
        let kind_name = doc.object.kind().to_owned();
        let object = match super::check(doc.object) {
            Checked::Valid(o) => o,
            Checked::Invalid { kind, key, errors } => {
                reject(&mut out, path, kind, key, line, errors);
                continue;
            }
            Checked::Unstored(AnyObject::Other {
                api_version,
                kind,
                object,
            }) => match core_object(&api_version, &kind, object) {
                Some(Ok(o)) => o,
                Some(Err(e)) => return Err(core_error(path, text, line, &api_version, &kind, &e)),
                None => {
                    tracing::debug!(
                        path = %path.display(),
                        line,
                        api_version,
                        kind,
                        "skipping a document of a kind the store does not hold"
                    );
                    continue;
                }
            },
            Checked::Unstored(other) => {
                tracing::debug!(
                    path = %path.display(),
                    line,
                    kind = other.kind(),
                    "skipping a document of a kind the store does not hold"
                );
                continue;
            }
        };
        if object.key().is_none() {
            tracing::warn!(path = %path.display(), line, kind = kind_name, "skipping an object without metadata.name");
            continue;
        }
        out.objects.push(object);
    }
    Ok(out)
}

fn reject(
    out: &mut Parsed,
    path: &Path,
    kind: Kind,
    key: Option<ObjectKey>,
    line: usize,
    errors: ValidationErrors,
) {
    match key {
        Some(key) => out.rejected.push(Rejected {
            kind,
            key,
            line,
            errors,
        }),
        None => tracing::warn!(
            path = %path.display(),
            line,
            %kind,
            %errors,
            "skipping an invalid object without metadata.name"
        ),
    }
}

/// Decodes a core kind the store holds; `None` for other kinds.
fn core_object(
    api_version: &str,
    kind: &str,
    object: serde_json::Value,
) -> Option<Result<Object, serde_json::Error>> {
    fn typed<T: serde::de::DeserializeOwned>(
        v: serde_json::Value,
    ) -> Result<Arc<T>, serde_json::Error> {
        serde_json::from_value(v).map(Arc::new)
    }
    Some(match (api_version, kind) {
        ("v1", "Service") => typed(object).map(Object::Service),
        ("v1", "Endpoints") => typed(object).map(Object::Endpoints),
        ("v1", "Pod") => typed(object).map(Object::Pod),
        ("v1", "ServiceAccount") => typed(object).map(Object::ServiceAccount),
        ("v1", "Namespace") => typed(object).map(Object::Namespace),
        _ => return None,
    })
}

/// The error for a core object that does not decode. JSON values carry no
/// positions, so the document (from its start line) is decoded once more
/// with serde_yaml purely to find the line, column and field path of the
/// problem; if that somehow succeeds, the JSON error is reported at the
/// document's start line.
fn core_error(
    path: &Path,
    text: &str,
    start: usize,
    api_version: &str,
    kind: &str,
    json: &serde_json::Error,
) -> FeedError {
    let what = format!("{kind} ({api_version})");
    let rest = text
        .split_inclusive('\n')
        .skip(start.saturating_sub(1))
        .collect::<String>();
    let located =
        serde_yaml::Deserializer::from_str(&rest)
            .next()
            .map(|doc| match (api_version, kind) {
                ("v1", "Service") => Service::deserialize(doc).err(),
                ("v1", "Endpoints") => Endpoints::deserialize(doc).err(),
                ("v1", "Pod") => Pod::deserialize(doc).err(),
                ("v1", "ServiceAccount") => ServiceAccount::deserialize(doc).err(),
                ("v1", "Namespace") => Namespace::deserialize(doc).err(),
                _ => None,
            });
    match located.flatten() {
        Some(e) => {
            let loc = e.location();
            FeedError::Parse {
                path: path.to_owned(),
                line: loc.as_ref().map(|l| l.line() + start - 1),
                column: loc.as_ref().map(|l| l.column()),
                message: format!("{what}: {}", strip_location(&e.to_string())),
            }
        }
        None => FeedError::Parse {
            path: path.to_owned(),
            line: Some(start),
            column: None,
            message: format!("{what}: {json}"),
        },
    }
}

/// serde_yaml appends "at line L column C" relative to the text it read;
/// the error carries absolute positions instead.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(pos) if msg[pos..].contains(" column ") => msg[..pos].to_owned(),
        _ => msg.to_owned(),
    }
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
    /// Objects that failed validation (their previous valid versions kept).
    pub rejected: usize,
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

    /// The object of `kind` and `key` currently loaded from any file: the
    /// "previous valid version" kept when a new version is invalid. Taken
    /// from the current state rather than a history, so an object that was
    /// deleted does not come back when an invalid version reappears.
    fn current(&self, kind: Kind, key: &ObjectKey) -> Option<Object> {
        self.files
            .values()
            .rev() // the file sorting last wins, as in the store
            .flat_map(|f| f.objects.iter().rev())
            .find(|o| o.kind() == kind && o.key().as_ref() == Some(key))
            .cloned()
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
                Ok(Parsed {
                    mut objects,
                    rejected,
                }) => {
                    for r in rejected {
                        report.rejected += 1;
                        let previous = self.current(r.kind, &r.key);
                        tracing::warn!(
                            at = %format!("{}:{}", path.display(), r.line),
                            kind = %r.kind,
                            object = %r.key,
                            errors = %r.errors,
                            kept_previous = previous.is_some(),
                            "invalid object rejected; its previous valid version (if any) stays in force"
                        );
                        objects.extend(previous);
                    }
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
            let (service_profiles, traffic_splits, http_route_groups) = snap.policy_counts();
            let (traffic_targets, tcp_routes, namespaces) = snap.access_counts();
            tracing::info!(
                version = snap.version,
                services,
                endpoints,
                pods,
                service_accounts,
                service_profiles,
                traffic_splits,
                http_route_groups,
                traffic_targets,
                tcp_routes,
                namespaces,
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
spec:
  service: web
  backends: [{service: web-v1, weight: 90}, {service: web-v2, weight: 10}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
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
        let kinds: Vec<_> = objs.objects.iter().map(|o| o.kind().to_string()).collect();
        assert_eq!(kinds, ["Service", "TrafficSplit", "Endpoints"]);
    }

    #[test]
    fn type_errors_carry_the_line() {
        let bad = GOOD.replace("port: 24143", "port: lots");
        let err = parse_documents(Path::new("dir/x.yaml"), &bad).unwrap_err();
        let FeedError::Parse { line, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*line, Some(32), "{err}");
        assert!(err.to_string().starts_with("dir/x.yaml:32:"), "{err}");
        assert!(
            err.to_string().contains("subsets[0].ports[0].port"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let bad = format!("{GOOD}apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n");
        let err = parse_documents(Path::new("x.yaml"), &bad).unwrap_err();
        let FeedError::Parse { line, .. } = &err else {
            panic!("{err}")
        };
        assert!(matches!(line, Some(l) if *l >= 38), "{err}");
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

    const PROFILE: &str = "\
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: web.shop.svc.cluster.local, namespace: shop}
spec:
  routes:
  - name: books
    condition: {method: GET, pathRegex: /books}
";

    #[test]
    fn invalid_object_keeps_its_previous_valid_version() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new();
        let mut feed = FileFeed::new(tmp.path().to_owned(), store.clone()).unwrap();
        std::fs::write(tmp.path().join("sp.yaml"), format!("{GOOD}---\n{PROFILE}")).unwrap();
        assert_eq!(feed.poll().loaded, 1);
        assert_eq!(store.snapshot().policy_counts(), (1, 1, 0));

        // A bad regex and all-zero weights: both rejected, both old
        // versions stay; the Service in the same file is still reloaded.
        let bad = format!("{GOOD}---\n{PROFILE}")
            .replace("/books}", "/books(}")
            .replace("weight: 90", "weight: 0")
            .replace("weight: 10", "weight: 0")
            .replace("port: 80\n", "port: 81\n");
        std::fs::write(tmp.path().join("sp.yaml"), bad).unwrap();
        let report = feed.poll();
        assert_eq!((report.loaded, report.rejected), (1, 2));
        let snap = store.snapshot();
        let key = ObjectKey::new("shop", "web.shop.svc.cluster.local");
        let sp = &snap.service_profiles[&key];
        assert_eq!(
            sp.spec.routes[0].condition.path_regex.as_deref(),
            Some("/books")
        );
        let split = &snap.traffic_splits[&ObjectKey::new("default", "web-split")];
        assert_eq!(split.backends[0].weight, 9);
        let svc = &snap.services[&ObjectKey::new("shop", "web")];
        let port = svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port;
        assert_eq!(port, 81);

        // Invalid from the start: nothing to keep.
        std::fs::write(
            tmp.path().join("new.yaml"),
            PROFILE
                .replace("web.shop", "api.shop")
                .replace("/books}", "(}"),
        )
        .unwrap();
        assert_eq!(feed.poll().rejected, 1);
        assert_eq!(store.snapshot().policy_counts(), (1, 1, 0));
    }

    const TARGET: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: access.smi-spec.io/v1alpha2
kind: TrafficTarget
metadata: {name: t, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: web, port: 8080}
  sources: [{kind: ServiceAccount, name: api}]
  rules: [{kind: TCPRoute, name: db}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: db, namespace: shop}
spec: {matches: {ports: [8080]}}
";

    #[test]
    fn access_objects_are_loaded_and_invalid_ones_keep_their_previous_version() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new();
        let mut feed = FileFeed::new(tmp.path().to_owned(), store.clone()).unwrap();
        std::fs::write(tmp.path().join("tt.yaml"), TARGET).unwrap();
        assert_eq!(feed.poll().loaded, 1);
        let snap = store.snapshot();
        assert_eq!(snap.access_counts(), (1, 1, 1));
        let key = ObjectKey::new("shop", "t");
        assert_eq!(snap.traffic_targets[&key].spec.destination.port, Some(8080));
        // An invalid new version (port 0, a bad kind) is rejected: the
        // previous one stays in force, as does the rejected TCPRoute's.
        let bad = TARGET
            .replace("port: 8080", "port: 0")
            .replace("ports: [8080]", "ports: [0]");
        std::fs::write(tmp.path().join("tt.yaml"), bad).unwrap();
        assert_eq!(feed.poll().rejected, 2);
        let snap = store.snapshot();
        assert_eq!(snap.traffic_targets[&key].spec.destination.port, Some(8080));
        let db = &snap.tcp_routes[&ObjectKey::new("shop", "db")];
        assert!(db.selects_port(8080) && !db.selects_port(1));
        assert_eq!(snap.targets_of("shop", "web").count(), 1);
    }
}
