//! Checks on the generated CRDs and the committed `install/crds.yaml`.
#![allow(clippy::unwrap_used)]

use crate::crd::{crds, crds_yaml};

const CRDS_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../install/crds.yaml");

#[test]
fn one_crd_per_kind_with_exactly_one_storage_version() {
    let crds = crds().unwrap();
    let mut summary: Vec<(String, Vec<String>, String)> = crds
        .iter()
        .map(|c| {
            let versions = c.spec.versions.iter().map(|v| v.name.clone()).collect();
            let storage: Vec<_> = c.spec.versions.iter().filter(|v| v.storage).collect();
            assert_eq!(storage.len(), 1, "{:?}", c.metadata.name);
            assert!(c.spec.versions.iter().all(|v| v.served));
            (
                c.metadata.name.clone().unwrap(),
                versions,
                storage[0].name.clone(),
            )
        })
        .collect();
    summary.sort();
    let names: Vec<_> = summary.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "httproutegroups.specs.smi-spec.io",
            "serviceprofiles.linkerd.io",
            "tcproutes.specs.smi-spec.io",
            "trafficsplits.split.smi-spec.io",
            "traffictargets.access.smi-spec.io",
        ]
    );
    let split = summary
        .iter()
        .find(|s| s.0.starts_with("trafficsplits"))
        .unwrap();
    let mut versions = split.1.clone();
    versions.sort();
    assert_eq!(versions, ["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"]);
    let sp = summary
        .iter()
        .find(|s| s.0.starts_with("serviceprofiles"))
        .unwrap();
    assert_eq!(sp.2, "v1alpha2");
    let tt = summary
        .iter()
        .find(|s| s.0.starts_with("traffictargets"))
        .unwrap();
    let mut versions = tt.1.clone();
    versions.sort();
    assert_eq!(versions, ["v1alpha2", "v1alpha3"]);
    assert_eq!(tt.2, "v1alpha3");
}

#[test]
fn schemas_are_structural() {
    // Kubernetes rejects `$ref`, `definitions` and untyped nodes without a
    // preserve/int-or-string marker; a quick textual check catches the first two.
    let yaml = crds_yaml().unwrap();
    assert!(!yaml.contains("$ref"), "schema uses $ref");
    assert!(!yaml.contains("definitions"), "schema has definitions");
    assert!(!yaml.contains("$schema"));
}

#[test]
fn crds_yaml_is_up_to_date() {
    let want = crds_yaml().unwrap();
    if std::env::var_os("WEFT_UPDATE_CRDS").is_some_and(|v| v == "1") {
        std::fs::write(CRDS_FILE, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(CRDS_FILE).unwrap_or_default();
    assert!(
        have == want,
        "install/crds.yaml is stale; regenerate with \
         WEFT_UPDATE_CRDS=1 cargo test -p weft-smi-crds crds_yaml_is_up_to_date"
    );
}

/// Ports the API server must refuse (0, and a destination port of 0) are
/// refused by the schema, and the destination `port` survives in the
/// storage version (no conversion webhook: pruning it would widen access).
#[test]
fn access_schemas_bound_ports_and_keep_the_destination_port() {
    let crds = crds().unwrap();
    let find = |name: &str| {
        let c = crds
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap();
        serde_json::to_value(c).unwrap()
    };
    let tcp = find("tcproutes.specs.smi-spec.io");
    let items = &tcp["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["matches"]["properties"]["ports"]["items"];
    assert_eq!(items["minimum"].as_f64(), Some(1.0), "{items}");
    assert_eq!(items["maximum"].as_f64(), Some(65535.0), "{items}");
    let tt = find("traffictargets.access.smi-spec.io");
    for v in tt["spec"]["versions"].as_array().unwrap() {
        let port = &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["destination"]["properties"]["port"];
        assert_eq!(port["minimum"].as_f64(), Some(1.0), "{}: {port}", v["name"]);
        assert_eq!(
            port["maximum"].as_f64(),
            Some(65535.0),
            "{}: {port}",
            v["name"]
        );
    }
}
