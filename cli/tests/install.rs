//! `weft install` as an operator runs it: the real binary, its output read
//! back as YAML and JSON, the generated certificates checked with the same
//! library the controller loads them with, and the webhook's serving
//! certificate tried in a real TLS handshake against its CA bundle.
//! (`install_kube.rs` applies the output to a real API server.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use base64::Engine;
use serde_json::Value;
use weft_test_support::command::{self, describe};

fn weft(args: &[&str]) -> Output {
    command::run(env!("CARGO_BIN_EXE_weft"), args).unwrap()
}

/// The objects a successful run printed as multi-document YAML.
fn objects(out: &Output) -> Vec<Value> {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn install(args: &[&str]) -> Vec<Value> {
    objects(&weft(&[&["install"], args].concat()))
}

/// A run that must fail with `code`, printing nothing on stdout.
fn refused(args: &[&str], code: i32) -> String {
    let out = weft(args);
    assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
    assert!(
        out.stdout.is_empty(),
        "printed something: {}",
        describe(&out)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "no {kind} {name} in {}",
                kinds_and_names(objects).join(", ")
            )
        })
}

fn kinds_and_names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// A `data` entry of a Secret, decoded.
fn secret_data(secret: &Value, key: &str) -> String {
    let b64 = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key}: {secret}"));
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

fn container(objects: &[Value]) -> &Value {
    &find(objects, "Deployment", "weft-controller")["spec"]["template"]["spec"]["containers"][0]
}

fn webhook(objects: &[Value]) -> &Value {
    &find(
        objects,
        "MutatingWebhookConfiguration",
        "weft-proxy-injector",
    )["webhooks"][0]
}

const EXPECTED: &[&str] = &[
    "Namespace/weft",
    "ServiceAccount/weft-controller",
    "ClusterRole/weft-controller",
    "ClusterRoleBinding/weft-controller",
    "ConfigMap/weft-identity-trust-roots",
    "Secret/weft-identity-issuer",
    "Secret/weft-injector-tls",
    "ConfigMap/weft-config",
    "Deployment/weft-controller",
    "Service/weft-dst",
    "Service/weft-identity",
    "Service/weft-injector",
    "Service/weft-admin",
    "MutatingWebhookConfiguration/weft-proxy-injector",
];

#[test]
fn default_install_renders_every_object_labelled() {
    let objs = install(&[]);
    assert_eq!(kinds_and_names(&objs), EXPECTED);
    for o in &objs {
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/part-of"], "weft",
            "{o}"
        );
        assert!(
            o["metadata"]["labels"]["app.kubernetes.io/component"].is_string(),
            "{o}"
        );
        let namespaced = !matches!(
            o["kind"].as_str().unwrap(),
            "Namespace" | "ClusterRole" | "ClusterRoleBinding" | "MutatingWebhookConfiguration"
        );
        assert_eq!(o["metadata"]["namespace"] == "weft", namespaced, "{o}");
    }
    let ns = find(&objs, "Namespace", "weft");
    assert_eq!(
        ns["metadata"]["annotations"]["linkerd.io/inject"],
        "disabled"
    );
    assert_eq!(
        ns["metadata"]["labels"]["config.linkerd.io/admission-webhooks"],
        "disabled"
    );
}

#[test]
fn the_controller_runs_locked_down_with_the_agreed_command_line() {
    let objs = install(&[]);
    let deploy = find(&objs, "Deployment", "weft-controller");
    assert_eq!(deploy["spec"]["replicas"], 1);
    let pod = &deploy["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["linkerd.io/control-plane-component"],
        "controller"
    );
    assert_eq!(
        pod["metadata"]["labels"]["linkerd.io/control-plane-ns"],
        "weft"
    );
    assert!(
        pod["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .unwrap()
            .len()
            == 64
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "weft-controller");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], true);
    assert!(pod["spec"]["affinity"].is_null());
    let c = container(&objs);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        c["image"],
        format!("localhost/weft/weft-controller:{version}")
    );
    let command: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        command,
        [
            "weft-controller",
            "--in-cluster",
            "--identity-dir",
            "/var/run/weft/identity",
            "--webhook-tls-dir",
            "/var/run/weft/webhook",
            "--values",
            "/var/run/weft/config/values.yaml",
            "--trust-domain",
            "cluster.local",
            "--cluster-domain",
            "cluster.local",
            "--identity-leaf-lifetime",
            "24h",
            "--destination-addr",
            "0.0.0.0:8086",
            "--identity-addr",
            "0.0.0.0:8080",
            "--webhook-addr",
            "0.0.0.0:8443",
            "--admin-addr",
            "0.0.0.0:9990",
            "--default-inbound-policy",
            "all-unauthenticated",
            "--cluster-networks",
            "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8",
        ]
    );
    assert_eq!(c["env"][0]["name"], "WEFT_CONTROLLER_LOG");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/live");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
    let admin = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .unwrap();
    assert_eq!(admin["containerPort"], 9990);
    assert_eq!(c["resources"]["requests"]["cpu"], "100m");
    assert_eq!(c["resources"]["limits"]["memory"], "250Mi");
    assert!(
        c["resources"]["limits"]["cpu"].is_null(),
        "empty values stay unset"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 2103);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    let mounts: BTreeSet<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        mounts,
        BTreeSet::from([
            "/var/run/weft/identity",
            "/var/run/weft/webhook",
            "/var/run/weft/config"
        ])
    );
    // The identity directory: anchors from the ConfigMap, issuer from the Secret.
    let identity = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "identity")
        .unwrap();
    let sources = identity["projected"]["sources"].as_array().unwrap();
    assert_eq!(sources[0]["configMap"]["name"], "weft-identity-trust-roots");
    assert_eq!(sources[1]["secret"]["name"], "weft-identity-issuer");
}

#[test]
fn services_and_rbac_match_the_install_layout() {
    let objs = install(&[]);
    for (name, port, target) in [
        ("weft-dst", 8086, 8086),
        ("weft-identity", 8080, 8080),
        ("weft-injector", 443, 8443),
        ("weft-admin", 9990, 9990),
    ] {
        let svc = find(&objs, "Service", name);
        assert_eq!(svc["spec"]["ports"][0]["port"], port, "{name}");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], target, "{name}");
        assert_eq!(
            svc["spec"]["selector"]["linkerd.io/control-plane-component"],
            "controller"
        );
    }
    let role = find(&objs, "ClusterRole", "weft-controller");
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for res in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    grants.insert(format!(
                        "{}/{}:{}",
                        group.as_str().unwrap(),
                        res.as_str().unwrap(),
                        verb.as_str().unwrap()
                    ));
                }
            }
        }
    }
    for needed in [
        "/services:watch",
        "/endpoints:list",
        "/pods:get",
        "/serviceaccounts:watch",
        "/namespaces:get",
        "discovery.k8s.io/endpointslices:watch",
        "linkerd.io/serviceprofiles:list",
        "split.smi-spec.io/trafficsplits:watch",
        "specs.smi-spec.io/httproutegroups:watch",
        "specs.smi-spec.io/tcproutes:watch",
        "access.smi-spec.io/traffictargets:watch",
        "authentication.k8s.io/tokenreviews:create",
        "/events:create",
        "events.k8s.io/events:patch",
        "apps/replicasets:get",
        "batch/jobs:get",
    ] {
        assert!(grants.contains(needed), "missing {needed}");
    }
    // Owners are resolved through ReplicaSets and Jobs only.
    for unneeded in ["apps/deployments:get", "batch/cronjobs:get", "/secrets:get"] {
        assert!(!grants.contains(unneeded), "{unneeded} is not needed");
    }
    // Least privilege: nothing is ever written but Events and TokenReviews,
    // and no Secret is readable.
    for g in &grants {
        let (_, verb) = g.split_once(':').unwrap();
        if !["get", "list", "watch"].contains(&verb) {
            assert!(g.contains("events") || g.contains("tokenreviews"), "{g}");
        }
        assert!(!g.contains("secrets") && !g.contains('*'), "{g}");
    }
    let binding = find(&objs, "ClusterRoleBinding", "weft-controller");
    assert_eq!(binding["subjects"][0]["name"], "weft-controller");
    assert_eq!(binding["subjects"][0]["namespace"], "weft");
}

#[test]
fn the_webhook_is_configured_as_the_issue_specifies() {
    let objs = install(&[]);
    let w = webhook(&objs);
    assert_eq!(w["name"], "proxy-injector.weft.io");
    assert_eq!(w["failurePolicy"], "Ignore");
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["timeoutSeconds"], 10);
    assert_eq!(
        w["admissionReviewVersions"],
        serde_json::json!(["v1", "v1beta1"])
    );
    assert_eq!(w["rules"][0]["operations"], serde_json::json!(["CREATE"]));
    assert_eq!(w["rules"][0]["resources"], serde_json::json!(["pods"]));
    assert_eq!(w["rules"][0]["apiGroups"], serde_json::json!([""]));
    assert_eq!(
        w["clientConfig"]["service"],
        serde_json::json!({"name": "weft-injector", "namespace": "weft", "path": "/inject", "port": 443})
    );
    let exprs = w["namespaceSelector"]["matchExpressions"]
        .as_array()
        .unwrap();
    assert!(exprs.contains(&serde_json::json!({
        "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["weft", "kube-system"]})));
    assert!(exprs.contains(&serde_json::json!({
        "key": "config.linkerd.io/admission-webhooks", "operator": "NotIn", "values": ["disabled"]})));
    assert_eq!(
        w["objectSelector"]["matchExpressions"],
        serde_json::json!([{"key": "linkerd.io/control-plane-component", "operator": "DoesNotExist"}])
    );
    // The CA bundle is the Secret's ca.crt, and the serving certificate
    // really is accepted for the Service's names by a TLS client trusting
    // only that bundle.
    let secret = find(&objs, "Secret", "weft-injector-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let ca = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(w["clientConfig"]["caBundle"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ca, secret_data(secret, "ca.crt"));
    for name in [
        "weft-injector.weft.svc",
        "weft-injector.weft.svc.cluster.local",
    ] {
        handshake(
            &secret_data(secret, "tls.crt"),
            &secret_data(secret, "tls.key"),
            &ca,
            name,
        )
        .unwrap();
    }
    assert!(handshake(
        &secret_data(secret, "tls.crt"),
        &secret_data(secret, "tls.key"),
        &ca,
        "evil.example"
    )
    .is_err());
}

#[test]
fn json_output_is_one_list_of_the_same_objects() {
    let out = weft(&["install", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["kind"], "List");
    assert_eq!(kinds_and_names(list["items"].as_array().unwrap()), EXPECTED);
}

#[test]
fn ha_adds_replicas_a_budget_anti_affinity_and_fails_closed() {
    let objs = install(&["--ha"]);
    let deploy = find(&objs, "Deployment", "weft-controller");
    assert_eq!(deploy["spec"]["replicas"], 3);
    let term = &deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        term["labelSelector"]["matchLabels"]["linkerd.io/control-plane-component"],
        "controller"
    );
    let pdb = find(&objs, "PodDisruptionBudget", "weft-controller");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["metadata"]["labels"]["app.kubernetes.io/part-of"],
        "weft"
    );
    assert_eq!(webhook(&objs)["failurePolicy"], "Fail");
    // `--ha` is the `ha` value; an explicit failure policy still wins.
    let objs = install(&["--set", "ha=true", "--set", "webhook.failurePolicy=Ignore"]);
    assert_eq!(webhook(&objs)["failurePolicy"], "Ignore");
    assert_eq!(
        find(&objs, "Deployment", "weft-controller")["spec"]["replicas"],
        3
    );
}

#[test]
fn values_files_then_set_flags_change_the_objects() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.yaml");
    let second = dir.path().join("second.yaml");
    std::fs::write(
        &first,
        "image:\n  registry: registry.example/mesh\n  tag: '1.2'\ncontroller:\n  replicas: 2\n  logLevel: debug\n  ports:\n    admin: 9999\n",
    )
    .unwrap();
    std::fs::write(
        &second,
        "controller:\n  replicas: 5\nclusterDomain: corp.example\n",
    )
    .unwrap();
    let objs = install(&[
        "-f",
        first.to_str().unwrap(),
        "--values",
        second.to_str().unwrap(),
        "--set",
        "controller.replicas=4",
        "--set",
        "identity.trustDomain=mesh.example",
        "--set",
        "webhook.timeoutSeconds=5",
        "--set",
        "controller.resources.cpuLimit=1",
    ]);
    let deploy = find(&objs, "Deployment", "weft-controller");
    assert_eq!(deploy["spec"]["replicas"], 4, "--set wins over both files");
    let c = container(&objs);
    assert_eq!(c["image"], "registry.example/mesh/weft-controller:1.2");
    assert_eq!(c["env"][0]["value"], "debug");
    assert_eq!(c["resources"]["limits"]["cpu"], "1");
    let command = c["command"].as_array().unwrap();
    let arg = |flag: &str| {
        command
            .iter()
            .position(|a| a == flag)
            .map(|i| command[i + 1].clone())
            .unwrap()
    };
    assert_eq!(arg("--admin-addr"), "0.0.0.0:9999");
    assert_eq!(arg("--cluster-domain"), "corp.example");
    assert_eq!(arg("--trust-domain"), "mesh.example");
    assert_eq!(
        find(&objs, "Service", "weft-admin")["spec"]["ports"][0]["port"],
        9999
    );
    assert_eq!(webhook(&objs)["timeoutSeconds"], 5);
    // The ConfigMap holds the final values, which the controller reads back.
    let stored = find(&objs, "ConfigMap", "weft-config")["data"]["values.yaml"]
        .as_str()
        .unwrap();
    let values = weft_inject::Values::from_yaml("weft-config", stored).unwrap();
    assert_eq!(values.controller.replicas, 4);
    assert_eq!(values.cluster_domain, "corp.example");
    // The webhook certificate names the Service in the configured domain.
    let secret = find(&objs, "Secret", "weft-injector-tls");
    handshake(
        &secret_data(secret, "tls.crt"),
        &secret_data(secret, "tls.key"),
        &secret_data(secret, "ca.crt"),
        "weft-injector.weft.svc.corp.example",
    )
    .unwrap();
    // A different config is a different checksum, so the pods roll.
    let default_sum = find(&install(&[]), "Deployment", "weft-controller")["spec"]["template"]
        ["metadata"]["annotations"]["checksum/config"]
        .clone();
    assert_ne!(
        deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"],
        default_sum
    );
}

#[test]
fn an_external_webhook_url_is_called_directly_and_named_in_the_certificate() {
    let objs = install(&["--set", "webhook.externalUrl=https://127.0.0.1:9443"]);
    let w = webhook(&objs);
    assert_eq!(w["clientConfig"]["url"], "https://127.0.0.1:9443/inject");
    assert!(w["clientConfig"]["service"].is_null());
    let secret = find(&objs, "Secret", "weft-injector-tls");
    let (cert, key, ca) = (
        secret_data(secret, "tls.crt"),
        secret_data(secret, "tls.key"),
        secret_data(secret, "ca.crt"),
    );
    handshake(&cert, &key, &ca, "127.0.0.1").unwrap();
    handshake(&cert, &key, &ca, "weft-injector.weft.svc").unwrap();
    let objs = install(&[
        "--set",
        "webhook.externalUrl=https://injector.example:8443/hook",
    ]);
    assert_eq!(
        webhook(&objs)["clientConfig"]["url"],
        "https://injector.example:8443/hook"
    );
    let secret = find(&objs, "Secret", "weft-injector-tls");
    handshake(
        &secret_data(secret, "tls.crt"),
        &secret_data(secret, "tls.key"),
        &secret_data(secret, "ca.crt"),
        "injector.example",
    )
    .unwrap();

    let err = refused(
        &[
            "install",
            "--set",
            "webhook.externalUrl=http://127.0.0.1:9443",
        ],
        1,
    );
    assert!(
        err.contains("webhook.externalUrl") && err.contains("https"),
        "{err}"
    );
}

#[test]
fn bad_values_exit_1_naming_the_key_and_usage_errors_exit_2() {
    let err = refused(&["install", "--set", "proxy.uidd=3"], 1);
    assert!(err.contains("uidd"), "{err}");
    let err = refused(&["install", "--set", "controller.replicas=0"], 1);
    assert!(err.contains("controller.replicas"), "{err}");
    let err = refused(&["install", "--set", "webhook.failurePolicy=Maybe"], 1);
    assert!(err.contains("webhook.failurePolicy"), "{err}");
    let err = refused(&["install", "--set", "novalue"], 1);
    assert!(err.contains("key.path=value"), "{err}");
    let err = refused(&["install", "-f", "/nonexistent/values.yaml"], 1);
    assert!(err.contains("/nonexistent/values.yaml"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "proxy:\n  logLevel: [1, 2]\n").unwrap();
    let err = refused(&["install", "-f", bad.to_str().unwrap()], 1);
    assert!(err.contains("bad.yaml"), "{err}");

    // Usage errors (clap): exit 2.
    let err = refused(&["install", "--identity-trust-anchors-file", "ca.crt"], 2);
    assert!(err.contains("--identity-issuer-certificate-file"), "{err}");
    refused(
        &[
            "install",
            "--identity-issuer-key-file",
            "k",
            "--identity-issuer-certificate-file",
            "c",
        ],
        2,
    );
    refused(&["install", "-o", "xml"], 2);
    refused(&["install", "--crds", "--ha"], 2);
}

/// The value after `flag` in the controller's command line.
fn controller_flag(objs: &[Value], flag: &str) -> String {
    let command = container(objs)["command"].as_array().unwrap().clone();
    let i = command
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {command:?}"));
    command[i + 1].as_str().unwrap().to_owned()
}

/// The values the controller's injector reads (the ConfigMap).
fn stored_values(objs: &[Value]) -> Value {
    let cm = find(objs, "ConfigMap", "weft-config");
    serde_yaml::from_str(cm["data"]["values.yaml"].as_str().unwrap()).unwrap()
}

#[test]
fn inbound_policy_flags_reach_the_controller_and_the_stored_values() {
    let objs = install(&[
        "--default-inbound-policy",
        "deny",
        "--cluster-networks",
        "10.1.0.0/16, fd00::/8",
    ]);
    assert_eq!(controller_flag(&objs, "--default-inbound-policy"), "deny");
    assert_eq!(
        controller_flag(&objs, "--cluster-networks"),
        "10.1.0.0/16,fd00::/8",
        "normalized"
    );
    let values = stored_values(&objs);
    assert_eq!(values["defaultInboundPolicy"], "deny");
    assert_eq!(values["clusterNetworks"], "10.1.0.0/16,fd00::/8");

    // The flags are shorthands for the values, and win over --set.
    let objs = install(&["--set", "defaultInboundPolicy=audit"]);
    assert_eq!(controller_flag(&objs, "--default-inbound-policy"), "audit");
    let objs = install(&[
        "--set",
        "defaultInboundPolicy=audit",
        "--default-inbound-policy",
        "cluster-authenticated",
    ]);
    assert_eq!(
        controller_flag(&objs, "--default-inbound-policy"),
        "cluster-authenticated"
    );

    // A bad name or network on the flag is a usage error (exit 2), naming
    // what was wrong and what is accepted; in the values, exit 1 naming the key.
    let err = refused(&["install", "--default-inbound-policy", "allow"], 2);
    assert!(
        err.contains("'allow'") && err.contains("all-authenticated") && err.contains("deny"),
        "{err}"
    );
    let err = refused(&["install", "--cluster-networks", "10.0.0.0/33"], 2);
    assert!(err.contains("10.0.0.0/33") && err.contains("CIDR"), "{err}");
    let err = refused(&["install", "--cluster-networks", ","], 2);
    assert!(err.contains("at least one CIDR"), "{err}");
    let err = refused(&["install", "--set", "defaultInboundPolicy=allow"], 1);
    assert!(
        err.contains("defaultInboundPolicy") && err.contains("cluster-unauthenticated"),
        "{err}"
    );
    let err = refused(&["install", "--set", "clusterNetworks=everything"], 1);
    assert!(err.contains("clusterNetworks"), "{err}");
    refused(
        &["install", "--crds", "--default-inbound-policy", "deny"],
        2,
    );
}

/// `weft identity init` into `dir`, as the docs tell operators to.
fn identity_dir(dir: &Path) {
    let out = weft(&["identity", "init", "--out", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

fn byo_args(dir: &Path) -> Vec<String> {
    vec![
        "--identity-trust-anchors-file".into(),
        dir.join("ca.crt").display().to_string(),
        "--identity-issuer-certificate-file".into(),
        dir.join("issuer.crt").display().to_string(),
        "--identity-issuer-key-file".into(),
        dir.join("issuer.key").display().to_string(),
    ]
}

/// The objects with the always-fresh webhook key material blanked.
fn without_webhook_keys(mut objs: Vec<Value>) -> Vec<Value> {
    for o in &mut objs {
        if o["kind"] == "Secret" && o["metadata"]["name"] == "weft-injector-tls" {
            o["data"] = Value::Null;
        }
        if o["kind"] == "MutatingWebhookConfiguration" {
            o["webhooks"][0]["clientConfig"]["caBundle"] = Value::Null;
        }
    }
    objs
}

#[test]
fn brought_identity_material_is_used_as_is_and_makes_the_output_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    identity_dir(dir.path());
    let args = byo_args(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = install(&args);
    let anchors = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    assert_eq!(
        find(&first, "ConfigMap", "weft-identity-trust-roots")["data"]["ca.crt"],
        anchors.as_str()
    );
    let issuer = find(&first, "Secret", "weft-identity-issuer");
    assert_eq!(
        secret_data(issuer, "issuer.crt"),
        std::fs::read_to_string(dir.path().join("issuer.crt")).unwrap()
    );
    assert_eq!(
        secret_data(issuer, "issuer.key"),
        std::fs::read_to_string(dir.path().join("issuer.key")).unwrap()
    );
    // Twice: identical, but for the webhook certificate made on every run.
    let second = install(&args);
    assert_ne!(first, second, "the webhook certificate is fresh each time");
    assert_eq!(without_webhook_keys(first), without_webhook_keys(second));
}

#[test]
fn an_issuer_not_signed_by_the_anchor_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    identity_dir(a.path());
    identity_dir(b.path());
    let mut args = vec!["install".to_owned()];
    args.extend(byo_args(a.path()));
    // a's anchor with b's issuer.
    args[4] = b.path().join("issuer.crt").display().to_string();
    args[6] = b.path().join("issuer.key").display().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = refused(&args, 1);
    assert!(
        err.contains("cannot be used with the trust anchors"),
        "{err}"
    );
    // a's issuer certificate with b's issuer key.
    let mut mixed = byo_args(a.path());
    mixed[5] = b.path().join("issuer.key").display().to_string();
    let mut args = vec!["install".to_owned()];
    args.extend(mixed);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = refused(&args, 1);
    assert!(err.contains("cannot be used"), "{err}");
    // Not a certificate at all.
    std::fs::write(a.path().join("ca.crt"), "hello").unwrap();
    let mut args = vec!["install".to_owned()];
    args.extend(byo_args(a.path()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&args, 1);
}

/// Blanks everything generated fresh on each run without user material.
fn without_key_material(objs: Vec<Value>) -> Vec<Value> {
    let mut objs = without_webhook_keys(objs);
    for o in &mut objs {
        match (
            o["kind"].as_str().unwrap(),
            o["metadata"]["name"].as_str().unwrap(),
        ) {
            ("ConfigMap", "weft-identity-trust-roots") | ("Secret", "weft-identity-issuer") => {
                o["data"] = Value::Null;
            }
            _ => {}
        }
    }
    objs
}

#[test]
fn generated_identity_is_valid_and_only_key_material_differs_between_runs() {
    let first = install(&[]);
    let anchors = find(&first, "ConfigMap", "weft-identity-trust-roots")["data"]["ca.crt"]
        .as_str()
        .unwrap();
    let issuer = find(&first, "Secret", "weft-identity-issuer");
    let loaded = weft_identity::Issuer::from_pem(
        &secret_data(issuer, "issuer.crt"),
        &secret_data(issuer, "issuer.key"),
        anchors,
    )
    .expect("the generated issuer chains to the generated anchor");
    let year = std::time::Duration::from_secs(8760 * 3600);
    let left = loaded
        .not_after()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left > year - std::time::Duration::from_secs(7200) && left <= year,
        "{left:?}"
    );
    let anchor = weft_identity::parse_pem_certs(anchors).unwrap();
    assert_eq!(anchor.len(), 1);
    assert!(weft_identity::describe_cert(&anchor[0]).unwrap().is_ca);

    let second = install(&[]);
    assert_ne!(
        find(&second, "ConfigMap", "weft-identity-trust-roots")["data"]["ca.crt"],
        anchors,
        "a fresh anchor each run"
    );
    assert_eq!(without_key_material(first), without_key_material(second));
}

#[test]
fn crds_are_the_embedded_file_with_the_install_labels() {
    let objs = install(&["--crds"]);
    let file =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../install/crds.yaml"))
            .unwrap();
    let mut expected: Vec<Value> = serde_yaml::Deserializer::from_str(&file)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(objs.len(), expected.len());
    assert!(objs.len() >= 5);
    for (got, want) in objs.iter().zip(&mut expected) {
        assert_eq!(got["kind"], "CustomResourceDefinition");
        assert_eq!(
            got["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "weft"
        );
        assert_eq!(
            got["metadata"]["labels"]["app.kubernetes.io/component"],
            "crds"
        );
        let mut got = got.clone();
        got["metadata"].as_object_mut().unwrap().remove("labels");
        if let Some(m) = want["metadata"].as_object_mut() {
            m.remove("labels");
        }
        assert_eq!(&got, want, "otherwise unchanged");
    }
    let out = weft(&["install", "--crds", "-o", "json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), objs.len());
}

#[test]
fn uninstall_without_a_cluster_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("kubeconfig");
    let err = refused(&["uninstall", "--kubeconfig", missing.to_str().unwrap()], 1);
    assert!(err.contains("kubeconfig"), "{err}");
    refused(&["uninstall", "-o", "table"], 2);
}

/// Serves one TLS handshake on loopback with `cert`/`key` and connects to
/// it as `server_name`, trusting only `ca`: what the API server does when
/// it calls the webhook.
fn handshake(cert: &str, key: &str, ca: &str, server_name: &str) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server_thread = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut byte = [0u8; 1];
        // Fails when the client rejects the certificate; that is reported
        // on the client side.
        if tls.read_exact(&mut byte).is_ok() {
            let _ = tls.write_all(&byte);
        }
    });
    let name = match server_name.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(server_name.to_owned()).unwrap(),
    };
    let conn = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    let result = tls
        .write_all(b"x")
        .and_then(|()| {
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte)
        })
        .map_err(|e| e.to_string());
    drop(tls);
    server_thread.join().unwrap();
    result
}
