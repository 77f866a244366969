//! Fixtures shared by the controller's unit tests: a snapshot from YAML
//! (parsed by the file feed, as the controller would) and the `web`
//! Service port most translation tests ask about.
#![allow(clippy::unwrap_used)]

use super::authority::Target;
use crate::feed::files::parse_documents;
use crate::store::Snapshot;

/// The store snapshot of the objects in `yaml`; every document must be
/// accepted.
pub(crate) fn snapshot(yaml: &str) -> Snapshot {
    let parsed = parse_documents(std::path::Path::new("t.yaml"), yaml).unwrap();
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    Snapshot::from_objects(parsed.objects)
}

/// Service `web` in namespace `shop`, at `port`.
pub(crate) fn web(port: u16) -> Target {
    Target {
        namespace: "shop".into(),
        service: "web".into(),
        port,
    }
}
