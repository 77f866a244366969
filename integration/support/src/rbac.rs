//! The controller's RBAC exactly as `docs/destination.md` documents it,
//! for the tests that run `weft-controller` as a ServiceAccount of the
//! test API server (`proxy/tests/discovery_kube.rs` in-cluster,
//! `proxy/tests/authz_kube.rs` with a token kubeconfig), so a permission
//! the controller needs but the page lacks fails a test.

/// The namespace of the controller's ServiceAccount.
pub const CONTROLLER_NAMESPACE: &str = "weft";
/// The controller's ServiceAccount.
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "weft-controller";

/// The ClusterRole `weft-controller` that docs/destination.md documents,
/// taken from the page itself so the two cannot disagree.
pub fn documented_cluster_role() -> String {
    let page = include_str!("../../../docs/destination.md");
    page.split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("kind: ClusterRole\n"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("docs/destination.md documents no ClusterRole"))
}

/// [`documented_cluster_role`], ServiceAccount
/// `weft/weft-controller` and the ClusterRoleBinding between them, as one
/// multi-document YAML (the namespace must exist).
pub fn controller_rbac_yaml() -> String {
    format!(
        "{role}---\napiVersion: v1\nkind: ServiceAccount\n\
         metadata: {{name: {CONTROLLER_SERVICE_ACCOUNT}, namespace: {CONTROLLER_NAMESPACE}}}\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
         metadata: {{name: weft-controller}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: weft-controller}}\n\
         subjects: [{{kind: ServiceAccount, name: {CONTROLLER_SERVICE_ACCOUNT}, namespace: {CONTROLLER_NAMESPACE}}}]\n",
        role = documented_cluster_role()
    )
}
