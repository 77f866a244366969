//! `weft inject` and `weft uninject` as a user runs them: the real binary
//! on manifests of every supported kind, YAML and JSON, files and stdin.
//! Outputs are read back as JSON values and compared with the input, so a
//! round trip that loses or reorders anything fails.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::PathBuf;
use std::process::Output;

use serde_json::{json, Value};
use weft_test_support::command::{self, describe};

const ANCHORS: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

fn weft_stdin(args: &[&str], input: &str) -> Output {
    command::run_with_stdin(env!("CARGO_BIN_EXE_weft"), args, input).unwrap()
}

/// A temp dir with the trust anchors PEM, and the `--manual` arguments
/// that use it (and no cluster: the kubeconfig does not exist).
struct Manual {
    dir: tempfile::TempDir,
}

impl Manual {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ANCHORS).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--manual".into(),
            "--identity-trust-anchors-file".into(),
            self.path("ca.crt"),
            "--kubeconfig".into(),
            self.path("no-kubeconfig"),
        ]
    }

    fn inject(&self, extra: &[&str], input: &str) -> Output {
        let mut args: Vec<String> = vec!["inject".into()];
        args.extend(self.args());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push("-".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        weft_stdin(&args, input)
    }
}

fn ok(out: &Output) -> (Vec<Value>, String) {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    (
        yaml_docs(&stdout),
        String::from_utf8(out.stderr.clone()).unwrap(),
    )
}

fn failed(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        describe(out)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn to_yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

fn pod_spec() -> Value {
    json!({
        "containers": [{"name": "app", "image": "nginx", "futureField": {"kept": true},
                        "ports": [{"containerPort": 80}]}],
        "someNewPodField": "kept"
    })
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()})
}

/// One object of each supported kind.
fn every_kind() -> Vec<Value> {
    let workload = |api: &str, kind: &str| {
        json!({"apiVersion": api, "kind": kind, "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template()},
               "status": {"replicas": 1}})
    };
    let mut job_template = template();
    job_template["spec"]["restartPolicy"] = json!("Never");
    vec![
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}},
               "spec": pod_spec()}),
        workload("apps/v1", "Deployment"),
        {
            let mut s = workload("apps/v1", "StatefulSet");
            s["spec"]["serviceName"] = json!("web");
            s
        },
        workload("apps/v1", "DaemonSet"),
        workload("apps/v1", "ReplicaSet"),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
               "spec": {"template": job_template.clone()}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
               "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": job_template}}}}),
    ]
}

/// The pod template of a supported object.
fn pod_of(obj: &Value) -> &Value {
    match obj["kind"].as_str().unwrap() {
        "Pod" => obj,
        "CronJob" => &obj["spec"]["jobTemplate"]["spec"]["template"],
        _ => &obj["spec"]["template"],
    }
}

fn container_names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|l| l.iter().map(|c| c["name"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

#[test]
fn default_mode_adds_the_annotation_and_uninject_removes_it() {
    let input = to_yaml(&every_kind());
    let (out, stderr) = ok(&weft_stdin(&["inject", "-"], &input));
    assert_eq!(out.len(), 7);
    for (obj, before) in out.iter().zip(every_kind()) {
        let pod = pod_of(obj);
        assert_eq!(
            pod["metadata"]["annotations"]["linkerd.io/inject"], "enabled",
            "{obj}"
        );
        assert_eq!(
            container_names(&pod["spec"]["containers"]),
            ["app"],
            "no sidecar yet"
        );
        let mut without = obj.clone();
        let p = match obj["kind"].as_str().unwrap() {
            "Pod" => "/metadata/annotations",
            "CronJob" => "/spec/jobTemplate/spec/template/metadata/annotations",
            _ => "/spec/template/metadata/annotations",
        };
        let parent = p.rsplit_once('/').unwrap().0;
        without
            .pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        assert_eq!(without, before, "only the annotation was added");
    }
    for line in [
        "pod \"web-0\" injected",
        "deployment \"web\" injected",
        "statefulset \"web\" injected",
        "daemonset \"web\" injected",
        "replicaset \"web\" injected",
        "job \"once\" injected",
        "cronjob \"nightly\" injected",
    ] {
        assert!(stderr.lines().any(|l| l == line), "{line:?} in:\n{stderr}");
    }

    let (back, stderr) = ok(&weft_stdin(&["uninject", "-"], &to_yaml(&out)));
    assert_eq!(back, every_kind());
    assert!(stderr.contains("deployment \"web\" uninjected"), "{stderr}");
}

#[test]
fn manual_mode_writes_the_sidecar_for_every_kind_and_round_trips() {
    let m = Manual::new();
    let input = to_yaml(&every_kind());
    let (out, stderr) = ok(&m.inject(&[], &input));
    assert!(
        stderr.contains("native sidecars off"),
        "no cluster: says so\n{stderr}"
    );
    assert_eq!(out.len(), 7);
    for obj in &out {
        let kind = obj["kind"].as_str().unwrap();
        let pod = pod_of(obj);
        let spec = &pod["spec"];
        assert_eq!(
            container_names(&spec["containers"]),
            ["weft-proxy", "app"],
            "{kind}"
        );
        assert_eq!(
            container_names(&spec["initContainers"]),
            ["weft-init"],
            "{kind}"
        );
        let proxy = &spec["containers"][0];
        assert_eq!(env(proxy, "WEFT_PROXY_TRUST_ANCHORS"), Some(ANCHORS));
        let owner = match kind {
            "Pod" => "///".to_owned(),
            "Job" => "/job/once/".to_owned(),
            "CronJob" => "/cronjob/nightly/".to_owned(),
            k => format!("/{}/web/", k.to_lowercase()),
        };
        assert_eq!(
            env(proxy, "WEFT_PROXY_WORKLOAD").unwrap(),
            format!("$(_WEFT_POD_NS){owner}$(_WEFT_POD_NAME)"),
            "{kind}"
        );
        let job = kind == "Job" || kind == "CronJob";
        assert_eq!(
            env(proxy, "WEFT_PROXY_EXIT_WITH_APP") == Some("true"),
            job,
            "{kind}"
        );
        assert_eq!(spec["shareProcessNamespace"] == json!(true), job, "{kind}");
        // Unknown fields survive.
        assert_eq!(spec["someNewPodField"], "kept");
        assert_eq!(spec["containers"][1]["futureField"], json!({"kept": true}));
        assert_eq!(
            pod["metadata"]["labels"]["linkerd.io/control-plane-ns"],
            "weft"
        );
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("{} \"", kind.to_lowercase()))
                    && l.ends_with("\" injected")),
            "{stderr}"
        );
    }
    // The workload's namespace becomes the pods' workload-ns label.
    assert_eq!(
        pod_of(&out[1])["metadata"]["labels"]["linkerd.io/workload-ns"],
        "shop"
    );

    // Same input, same bytes.
    let again = m.inject(&[], &input);
    assert_eq!(again.stdout, m.inject(&[], &input).stdout);

    let (back, _) = ok(&weft_stdin(&["uninject", "-"], &to_yaml(&out)));
    assert_eq!(back, every_kind(), "uninject(inject(x)) == x");
}

#[test]
fn values_and_set_reach_the_sidecar() {
    let m = Manual::new();
    std::fs::write(m.path("values.yaml"), "proxy:\n  logLevel: debug\n").unwrap();
    let input = to_yaml(&every_kind()[1..2]);
    let values = m.path("values.yaml");
    let (out, stderr) = ok(&m.inject(
        &["-f", &values, "--set", "proxy.nativeSidecar=enabled"],
        &input,
    ));
    assert!(stderr.contains("native sidecars enabled"), "{stderr}");
    let spec = &pod_of(&out[0])["spec"];
    assert_eq!(
        container_names(&spec["initContainers"]),
        ["weft-init", "weft-proxy"]
    );
    assert_eq!(container_names(&spec["containers"]), ["app"]);
    let proxy = &spec["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(env(proxy, "WEFT_PROXY_LOG"), Some("debug"));
    let (back, _) = ok(&weft_stdin(&["uninject", "-"], &to_yaml(&out)));
    assert_eq!(back, every_kind()[1..2]);

    let bad = m.inject(&["--set", "proxy.nativeSidecar=yes"], &input);
    assert!(failed(&bad).contains("proxy.nativeSidecar"));
}

#[test]
fn lists_and_json_come_back_as_they_came() {
    let m = Manual::new();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": every_kind()});
    let input = serde_json::to_string_pretty(&list).unwrap();
    let out = m.inject(&[], &input);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let injected: Value = serde_json::from_str(&text).expect("JSON in, JSON out");
    let items = injected["items"].as_array().unwrap();
    assert_eq!(items.len(), 7);
    for item in items {
        assert_eq!(
            container_names(&pod_of(item)["spec"]["containers"])[0],
            "weft-proxy"
        );
    }
    let back = weft_stdin(&["uninject", "-"], &text);
    assert_eq!(back.status.code(), Some(0), "{}", describe(&back));
    let back: Value = serde_json::from_slice(&back.stdout).unwrap();
    assert_eq!(back, list);

    // Several JSON objects in a row, from a file.
    let m2 = Manual::new();
    let file = m2.path("objs.json");
    std::fs::write(&file, format!("{}\n{}\n", every_kind()[0], every_kind()[1])).unwrap();
    let out = weft_stdin(&["inject", &file], "");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let docs: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(
        pod_of(&docs[1])["metadata"]["annotations"]["linkerd.io/inject"],
        "enabled"
    );
}

#[test]
fn skipped_pods_are_reported_and_unchanged() {
    let m = Manual::new();
    let mut host = every_kind()[0].clone();
    host["metadata"]["name"] = json!("host");
    host["spec"]["hostNetwork"] = json!(true);
    let mut off = every_kind()[1].clone();
    off["spec"]["template"]["metadata"]["annotations"] = json!({"linkerd.io/inject": "disabled"});
    let mut odd = every_kind()[2].clone();
    odd["spec"]["template"]["metadata"]["annotations"] = json!({"linkerd.io/inject": "sure"});
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                         "spec": {"ports": [{"port": 80}]}});
    let input = vec![host, off, odd, service];
    for args in [vec!["inject", "-"], vec![]] {
        let out = if args.is_empty() {
            m.inject(&[], &to_yaml(&input))
        } else {
            weft_stdin(&args, &to_yaml(&input))
        };
        let (out, stderr) = ok(&out);
        assert_eq!(out, input, "all unchanged");
        assert!(
            stderr.contains("pod \"host\" skipped: hostNetwork is enabled"),
            "{stderr}"
        );
        assert!(stderr.contains("deployment \"web\" skipped: the pod or its namespace has the annotation \"linkerd.io/inject:disabled\""), "{stderr}");
        assert!(
            stderr.contains("statefulset \"web\" skipped: invalid value \"sure\""),
            "{stderr}"
        );
        assert!(
            stderr.contains("service \"web\" left unchanged: kind Service has no pod template"),
            "{stderr}"
        );
    }

    // An injected manifest is not injected twice.
    let (once, _) = ok(&m.inject(&[], &to_yaml(&every_kind()[1..2])));
    let (twice, stderr) = ok(&m.inject(&[], &to_yaml(&once)));
    assert_eq!(twice, once);
    assert!(
        stderr.contains("skipped: pod has a sidecar injected already"),
        "{stderr}"
    );
}

#[test]
fn malformed_config_annotations_warn_and_use_defaults() {
    let m = Manual::new();
    let mut deploy = every_kind()[1].clone();
    deploy["spec"]["template"]["metadata"]["annotations"] = json!({"config.linkerd.io/proxy-cpu-request": "banana", "config.linkerd.io/opaque-ports": "3306"});
    for out in [
        m.inject(&[], &to_yaml(&[deploy.clone()])),
        weft_stdin(&["inject", "-"], &to_yaml(&[deploy.clone()])),
    ] {
        let (out, stderr) = ok(&out);
        assert!(
            stderr.contains("deployment \"web\": warning: config.linkerd.io/proxy-cpu-request: \"banana\" ignored"),
            "{stderr}"
        );
        assert!(stderr.contains("deployment \"web\" injected"), "{stderr}");
        assert_eq!(out.len(), 1);
    }
    let (out, _) = ok(&m.inject(&[], &to_yaml(&[deploy])));
    let proxy = &pod_of(&out[0])["spec"]["containers"][0];
    assert_eq!(proxy["resources"]["requests"]["cpu"], "100m");
    assert_eq!(env(proxy, "WEFT_PROXY_OPAQUE_PORTS"), Some("3306"));
}

#[test]
fn bad_input_names_the_document_and_line_and_prints_nothing() {
    let good = to_yaml(&every_kind()[..1]);
    // YAML syntax error in document 2, on line L of the whole input.
    let input = format!("{good}---\napiVersion: v1\nkind: Pod\nmetadata: [unclosed\n");
    let line = good.lines().count() + 4;
    let stderr = failed(&weft_stdin(&["inject", "-"], &input));
    assert!(stderr.contains("document 2 (line"), "{stderr}");
    assert!(
        stderr.contains(&format!("line {line}")) || stderr.contains(&format!("line {}", line + 1)),
        "{stderr}"
    );

    // A well-formed document that is not a pod: containers is a string.
    let input = format!("{good}---\n# comment\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  template:\n    spec:\n      containers: nope\n");
    let start = good.lines().count() + 3;
    let stderr = failed(&weft_stdin(&["inject", "-"], &input));
    assert!(
        stderr.contains(&format!("document 2 (line {start})")),
        "{stderr}"
    );
    assert!(stderr.contains("spec.template.spec"), "{stderr}");

    let stderr = failed(&weft_stdin(
        &["inject", "-"],
        "apiVersion: v1\nmetadata: {}\n",
    ));
    assert!(
        stderr.contains("document 1 (line 1): missing kind"),
        "{stderr}"
    );

    let stderr = failed(&weft_stdin(
        &["uninject", "-"],
        "{\"kind\": \"Pod\",\n \"apiVersion\": }",
    ));
    assert!(stderr.contains("document 1 (line 2"), "{stderr}");

    let stderr = failed(&weft_stdin(&["inject", "/nonexistent/x.yaml"], ""));
    assert!(
        stderr.contains("cannot read /nonexistent/x.yaml"),
        "{stderr}"
    );

    // --manual without anchors and without a cluster.
    let m = Manual::new();
    let kubeconfig = m.path("none");
    let out = weft_stdin(
        &["inject", "--manual", "--kubeconfig", &kubeconfig, "-"],
        &good,
    );
    assert!(failed(&out).contains("--identity-trust-anchors-file"));

    // Values flags need --manual (a usage error).
    let out = weft_stdin(&["inject", "--set", "proxy.uid=1", "-"], &good);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn manifests_from_files_work_like_stdin() {
    let m = Manual::new();
    let file = m.path("app.yaml");
    let input = to_yaml(&every_kind());
    std::fs::write(&file, &input).unwrap();
    let from_file = command::run(env!("CARGO_BIN_EXE_weft"), &["inject", &file]).unwrap();
    let from_stdin = weft_stdin(&["inject", "-"], &input);
    assert_eq!(from_file.status.code(), Some(0), "{}", describe(&from_file));
    assert_eq!(from_file.stdout, from_stdin.stdout);
    let _: PathBuf = PathBuf::from(file);
}

// === against a real API server ===

/// `--manual` against the test control plane: the trust anchors come from
/// the install's ConfigMap, the server's version turns native sidecars on,
/// and the real API server accepts every injected object (its validation
/// is the judge of "a valid pod"); uninjecting what the server stored
/// leaves the app alone again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_injection_is_accepted_by_a_real_api_server() {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kube::api::{DeleteParams, PostParams};

    let plane = weft_kube_harness::TestControlPlane::start()
        .await
        .expect("test control plane failed to start (run integration/k8s/install.sh)");
    let kubeconfig = plane.kubeconfig_path().to_str().unwrap().to_owned();
    plane.create_namespace_for_pods("shop").await.unwrap();
    let namespaces: kube::Api<Namespace> = kube::Api::all(plane.client());
    let weft_ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "weft"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &weft_ns)
        .await
        .unwrap();
    let cms: kube::Api<ConfigMap> = kube::Api::namespaced(plane.client(), "weft");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "weft-identity-trust-roots"},
        "data": {"ca.crt": ANCHORS}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();

    // Native sidecars exactly when the server is 1.29+ (the test control
    // plane's version decides which branch this run checks).
    let info = plane.client().apiserver_version().await.unwrap();
    let minor: u32 = info.minor.trim_end_matches('+').parse().unwrap();
    let native = info.major == "1" && minor >= 29;
    let cronjob_v1 = info.major == "1" && minor >= 21;
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("in.yaml");
    let mut objects = every_kind();
    for obj in &mut objects {
        obj["metadata"]["namespace"] = json!("shop");
        obj.as_object_mut().unwrap().remove("status");
        // CronJob is batch/v1 from 1.21 on, batch/v1beta1 before.
        if obj["kind"] == "CronJob" && !cronjob_v1 {
            obj["apiVersion"] = json!("batch/v1beta1");
        }
        // The server's validation refuses the made-up "unknown" fields.
        let pointer = match obj["kind"].as_str().unwrap() {
            "Pod" => "/spec",
            "CronJob" => "/spec/jobTemplate/spec/template/spec",
            _ => "/spec/template/spec",
        };
        let spec = obj.pointer_mut(pointer).unwrap().as_object_mut().unwrap();
        spec.remove("someNewPodField");
        spec["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("futureField");
    }
    std::fs::write(&input_path, to_yaml(&objects)).unwrap();
    let input = input_path.to_str().unwrap().to_owned();

    let run = |args: Vec<String>| async move {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"));
        cmd.args(&args).kill_on_drop(true);
        tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
            .await
            .expect("weft did not finish in time")
            .unwrap()
    };
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = vec!["inject".into(), "--manual".into()];
        a.extend(["--kubeconfig".into(), kubeconfig.clone()]);
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let out = run(args(&[&input])).await;
    let (injected, stderr) = ok(&out);
    let said = format!(
        "cluster runs Kubernetes {}.{}: native sidecars {}",
        info.major,
        info.minor,
        if native { "on" } else { "off (needs 1.29+)" }
    );
    assert!(stderr.contains(&said), "{said:?} in:\n{stderr}");
    for obj in &injected {
        let kind = obj["kind"].as_str().unwrap();
        let spec = &pod_of(obj)["spec"];
        let job = kind == "Job" || kind == "CronJob";
        let proxy = if native {
            assert_eq!(
                container_names(&spec["initContainers"]),
                ["weft-init", "weft-proxy"]
            );
            assert_eq!(container_names(&spec["containers"]), ["app"]);
            assert_eq!(spec["initContainers"][1]["restartPolicy"], "Always");
            assert_eq!(spec.get("shareProcessNamespace"), None, "{kind}");
            &spec["initContainers"][1]
        } else {
            assert_eq!(container_names(&spec["initContainers"]), ["weft-init"]);
            assert_eq!(container_names(&spec["containers"]), ["weft-proxy", "app"]);
            assert_eq!(spec["shareProcessNamespace"] == json!(true), job, "{kind}");
            &spec["containers"][0]
        };
        assert_eq!(env(proxy, "WEFT_PROXY_TRUST_ANCHORS"), Some(ANCHORS));
    }

    // The API server validates and stores every object.
    let applied = plane
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&to_yaml(&injected)))
        .await
        .unwrap();
    assert_eq!(applied.lines().count(), 7, "{applied}");

    // What the server stored (with its defaults) uninjects to the app.
    let stored = plane
        .kubectl(&["get", "deployment", "web", "-n", "shop", "-o", "json"])
        .await
        .unwrap();
    let stored_path = dir.path().join("stored.json");
    std::fs::write(&stored_path, &stored).unwrap();
    let out = run(vec![
        "uninject".into(),
        stored_path.to_str().unwrap().into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let back: Value = serde_json::from_slice(&out.stdout).unwrap();
    let spec = &back["spec"]["template"]["spec"];
    assert_eq!(container_names(&spec["containers"]), ["app"]);
    assert_eq!(spec.get("initContainers"), None);
    assert_eq!(spec.get("volumes"), None);
    let meta = &back["spec"]["template"]["metadata"];
    assert_eq!(meta["labels"], json!({"app": "web"}));
    assert_eq!(meta.get("annotations"), None, "{meta}");

    // Without the ConfigMap the error says where the anchors come from.
    cms.delete("weft-identity-trust-roots", &DeleteParams::default())
        .await
        .unwrap();
    let out = run(args(&[&input])).await;
    let stderr = failed(&out);
    assert!(
        stderr.contains("weft/weft-identity-trust-roots")
            && stderr.contains("--identity-trust-anchors-file"),
        "{stderr}"
    );
}
