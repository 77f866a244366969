#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::config::*;
use super::*;

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn injector(native: bool) -> Injector {
    Injector::new(Values::default().finish().unwrap(), PEM.into(), native)
}

fn pod(annotations: &[(&str, &str)]) -> (ObjectMeta, PodSpec) {
    let meta = ObjectMeta {
        name: Some("web-0".into()),
        annotations: (!annotations.is_empty()).then(|| {
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        }),
        labels: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
        ..ObjectMeta::default()
    };
    let spec = PodSpec {
        containers: vec![Container {
            name: "app".into(),
            image: Some("nginx".into()),
            ..Container::default()
        }],
        ..PodSpec::default()
    };
    (meta, spec)
}

fn ctx() -> PodContext {
    PodContext {
        namespace: "shop".into(),
        namespace_annotations: BTreeMap::new(),
        owner: Some(Owner {
            kind: "deployment".into(),
            name: "web".into(),
        }),
    }
}

fn enabled() -> Vec<(&'static str, &'static str)> {
    vec![(names::INJECT_ANNOTATION, "enabled")]
}

/// Injects `annotations` + enabled into the default pod; panics on skip.
fn injected(extra: &[(&str, &str)]) -> (ObjectMeta, PodSpec, Vec<AnnotationWarning>) {
    let mut a = enabled();
    a.extend_from_slice(extra);
    let (mut meta, mut spec) = pod(&a);
    match injector(false).inject(&mut meta, &mut spec, &ctx()) {
        Outcome::Injected { warnings } => (meta, spec, warnings),
        other => panic!("not injected: {other:?}"),
    }
}

fn proxy(spec: &PodSpec) -> &Container {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == names::PROXY_CONTAINER)
        .expect("a proxy container")
}

fn init(spec: &PodSpec) -> &Container {
    spec.init_containers
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.name == names::INIT_CONTAINER)
        .unwrap()
}

fn env(c: &Container, name: &str) -> Option<String> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

fn flag(c: &Container, flag: &str) -> Option<String> {
    let cmd = c.command.as_ref().unwrap();
    let i = cmd.iter().position(|a| a == flag)?;
    cmd.get(i + 1).cloned()
}

fn resource(c: &Container, which: &str, name: &str) -> Option<String> {
    let r = c.resources.as_ref()?;
    let map = if which == "requests" {
        r.requests.as_ref()
    } else {
        r.limits.as_ref()
    };
    map?.get(name).map(|q| q.0.clone())
}

fn assert_round_trip(meta0: &ObjectMeta, spec0: &PodSpec, ctx: &PodContext, native: bool) {
    let (mut meta, mut spec) = (meta0.clone(), spec0.clone());
    let outcome = injector(native).inject(&mut meta, &mut spec, ctx);
    assert!(matches!(outcome, Outcome::Injected { .. }), "{outcome:?}");
    assert_ne!((&meta, &spec), (meta0, spec0));
    assert!(uninject(&mut meta, &mut spec));
    assert_eq!(&meta, meta0);
    assert_eq!(&spec, spec0);
}

// === decisions ===

#[test]
fn the_pod_annotation_wins_over_the_namespace() {
    let cases: &[(Option<&str>, Option<&str>, Option<Skip>)] = &[
        (Some("enabled"), None, None),
        (Some("ingress"), None, None),
        (None, Some("enabled"), None),
        (None, Some("ingress"), None),
        (Some("enabled"), Some("disabled"), None),
        (Some("disabled"), Some("enabled"), Some(Skip::Disabled)),
        (None, Some("disabled"), Some(Skip::Disabled)),
        (None, None, Some(Skip::NotEnabled)),
        (
            Some("yes"),
            Some("enabled"),
            Some(Skip::InvalidAnnotation("yes".into())),
        ),
        (None, Some("on"), Some(Skip::InvalidAnnotation("on".into()))),
        // Only the value that applies is judged.
        (Some("enabled"), Some("bogus"), None),
    ];
    for (on_pod, on_ns, want) in cases {
        let a: Vec<_> = on_pod
            .iter()
            .map(|v| (names::INJECT_ANNOTATION, *v))
            .collect();
        let (mut meta, mut spec) = pod(&a);
        let mut c = ctx();
        if let Some(v) = on_ns {
            c.namespace_annotations
                .insert(names::INJECT_ANNOTATION.into(), (*v).into());
        }
        assert_eq!(
            skip_reason(&meta, &spec, &c).as_ref(),
            want.as_ref(),
            "{on_pod:?} {on_ns:?}"
        );
        let (meta0, spec0) = (meta.clone(), spec.clone());
        let outcome = injector(false).inject(&mut meta, &mut spec, &c);
        match want {
            Some(skip) => {
                assert_eq!(outcome, Outcome::Skipped(skip.clone()));
                assert_eq!((meta, spec), (meta0, spec0), "a skipped pod is unchanged");
            }
            None => assert_eq!(outcome, Outcome::Injected { warnings: vec![] }),
        }
    }
}

#[test]
fn structural_skips_come_before_annotations() {
    let c = ctx();
    let (meta, mut spec) = pod(&enabled());
    spec.host_network = Some(true);
    assert_eq!(skip_reason(&meta, &spec, &c), Some(Skip::HostNetwork));

    for (in_init, name) in [
        (false, "weft-proxy"),
        (false, "linkerd-proxy"),
        (true, "weft-proxy"),
        (true, "linkerd-proxy"),
    ] {
        let (meta, mut spec) = pod(&enabled());
        let sidecar = Container {
            name: name.into(),
            ..Container::default()
        };
        if in_init {
            spec.init_containers = Some(vec![sidecar]);
        } else {
            spec.containers.push(sidecar);
        }
        assert_eq!(
            skip_reason(&meta, &spec, &c),
            Some(Skip::AlreadyInjected),
            "{name}"
        );
    }

    let (mut meta, mut spec) = pod(&enabled());
    meta.labels.as_mut().unwrap().insert(
        names::CONTROL_PLANE_COMPONENT_LABEL.into(),
        "controller".into(),
    );
    spec.host_network = Some(true);
    assert_eq!(skip_reason(&meta, &spec, &c), Some(Skip::ControlPlane));

    // An injected pod is never injected twice.
    let (mut meta, mut spec, _) = injected(&[]);
    assert_eq!(
        injector(false).inject(&mut meta, &mut spec, &c),
        Outcome::Skipped(Skip::AlreadyInjected)
    );
}

#[test]
fn skips_have_linkerd_labels_and_readable_reasons() {
    let all = [
        (
            Skip::NotEnabled,
            "injection_enable_annotation_absent",
            "neither the namespace nor the pod",
        ),
        (
            Skip::Disabled,
            "injection_disable_annotation_present",
            "linkerd.io/inject:disabled",
        ),
        (
            Skip::InvalidAnnotation("yes".into()),
            "invalid_inject_annotation",
            "\"yes\"",
        ),
        (
            Skip::HostNetwork,
            "host_network_enabled",
            "hostNetwork is enabled",
        ),
        (
            Skip::AlreadyInjected,
            "sidecar_already_exists",
            "sidecar injected already",
        ),
        (
            Skip::ControlPlane,
            "control_plane_component",
            "control plane",
        ),
    ];
    for (skip, label, text) in all {
        assert_eq!(skip.label(), label);
        assert!(skip.reason().contains(text), "{}", skip.reason());
        assert_eq!(skip.to_string(), skip.reason());
    }
}

// === what the pod gets ===

#[test]
fn the_default_sidecar_is_as_specified() {
    let (meta, spec, warnings) = injected(&[]);
    assert!(warnings.is_empty());
    let tag = env!("CARGO_PKG_VERSION");

    let a = meta.annotations.as_ref().unwrap();
    assert_eq!(a[names::PROXY_VERSION_ANNOTATION], tag);
    assert_eq!(a[names::IDENTITY_MODE_ANNOTATION], "default");
    assert!(a[names::CREATED_BY_ANNOTATION].starts_with("weft/"));
    assert!(
        !a.contains_key(RESTORE_ANNOTATION),
        "nothing was overwritten"
    );
    let l = meta.labels.as_ref().unwrap();
    assert_eq!(l[names::CONTROL_PLANE_NS_LABEL], "weft");
    assert_eq!(l[WORKLOAD_NS_LABEL], "shop");

    // Proxy first, app after; weft-init the only init container.
    let names_of = |cs: &[Container]| cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    assert_eq!(names_of(&spec.containers), ["weft-proxy", "app"]);
    assert_eq!(
        names_of(spec.init_containers.as_ref().unwrap()),
        ["weft-init"]
    );

    let i = init(&spec);
    assert_eq!(
        i.command.as_ref().unwrap(),
        &[
            "weft-proxy",
            "init",
            "--inbound-port",
            "4143",
            "--outbound-port",
            "4140",
            "--proxy-uid",
            "2102",
            "--skip-inbound-ports",
            "4191"
        ]
    );
    let sc = i.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(0));
    assert_eq!(sc.run_as_non_root, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(
        caps.add.as_deref(),
        Some(&["NET_ADMIN".to_owned(), "NET_RAW".to_owned()][..])
    );
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(i.volume_mounts.as_ref().unwrap()[0].mount_path, "/run");
    assert_eq!(
        i.image.as_deref(),
        Some(format!("localhost/weft/weft-proxy:{tag}").as_str())
    );

    let p = proxy(&spec);
    assert_eq!(p.command.as_deref(), Some(&["weft-proxy".to_owned()][..]));
    let e = |n| env(p, n).unwrap_or_else(|| panic!("{n}"));
    assert_eq!(e("WEFT_PROXY_INBOUND_ADDR"), "0.0.0.0:4143");
    assert_eq!(e("WEFT_PROXY_OUTBOUND_ADDR"), "127.0.0.1:4140");
    assert_eq!(e("WEFT_PROXY_ADMIN_ADDR"), "0.0.0.0:4191");
    assert_eq!(
        e("WEFT_PROXY_DESTINATION_ADDR"),
        "weft-dst.weft.svc.cluster.local:8086"
    );
    assert_eq!(
        e("WEFT_PROXY_IDENTITY_ADDR"),
        "weft-identity.weft.svc.cluster.local:8080"
    );
    assert_eq!(
        e("WEFT_PROXY_IDENTITY_NAME"),
        "$(_WEFT_POD_SA).$(_WEFT_POD_NS).serviceaccount.identity.weft.cluster.local"
    );
    assert_eq!(
        e("WEFT_PROXY_IDENTITY_TOKEN_FILE"),
        "/var/run/weft/identity/token"
    );
    assert_eq!(e("WEFT_PROXY_TRUST_ANCHORS"), PEM);
    assert_eq!(
        e("WEFT_PROXY_CONTROL_IDENTITY"),
        "weft-controller.weft.serviceaccount.identity.weft.cluster.local"
    );
    assert_eq!(
        e("WEFT_PROXY_WORKLOAD"),
        "$(_WEFT_POD_NS)/deployment/web/$(_WEFT_POD_NAME)"
    );
    assert_eq!(e("WEFT_PROXY_LOG"), "warn,weft_proxy=info");
    assert_eq!(
        e("WEFT_PROXY_OPAQUE_PORTS"),
        "25,587,3306,4444,5432,6379,9300,11211"
    );
    assert_eq!(e("WEFT_PROXY_REQUIRE_IDENTITY_PORTS"), "");
    assert_eq!(
        e("WEFT_PROXY_DEFAULT_INBOUND_POLICY"),
        "all-unauthenticated"
    );
    assert_eq!(
        e("WEFT_PROXY_CLUSTER_NETWORKS"),
        "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8"
    );
    assert_eq!(e("WEFT_PROXY_INBOUND_TRUST_LOOPBACK"), "true");
    assert_eq!(
        env(p, "WEFT_PROXY_INBOUND_PORTS"),
        None,
        "the app declares no ports"
    );
    assert_eq!(e("WEFT_PROXY_SHUTDOWN_GRACE_PERIOD"), "30s");
    assert_eq!(e("WEFT_PROXY_WAIT_BEFORE_EXIT"), "0s");
    assert_eq!(env(p, EXIT_WITH_APP_ENV), None);
    let downward: Vec<_> = p.env.as_ref().unwrap()[..3]
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                e.value_from
                    .as_ref()
                    .unwrap()
                    .field_ref
                    .as_ref()
                    .unwrap()
                    .field_path
                    .as_str(),
            )
        })
        .collect();
    assert_eq!(
        downward,
        [
            ("_WEFT_POD_NS", "metadata.namespace"),
            ("_WEFT_POD_NAME", "metadata.name"),
            ("_WEFT_POD_SA", "spec.serviceAccountName")
        ]
    );

    let ports: Vec<_> = p
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        [
            ("weft-proxy".to_owned(), 4143),
            ("weft-admin".to_owned(), 4191)
        ]
    );
    let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        let g = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        (g.path.clone().unwrap(), g.port.clone())
    };
    let admin = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(4191);
    assert_eq!(
        probe_path(&p.readiness_probe),
        ("/ready".to_owned(), admin.clone())
    );
    assert_eq!(probe_path(&p.liveness_probe), ("/live".to_owned(), admin));
    assert!(p.startup_probe.is_none());
    assert_eq!(p.restart_policy, None);
    let hook = p
        .lifecycle
        .as_ref()
        .unwrap()
        .post_start
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap();
    assert_eq!(
        hook.command.as_deref(),
        Some(&["weft-proxy".to_owned(), "await".to_owned()][..])
    );
    let sc = p.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(2102));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    assert_eq!(resource(p, "requests", "cpu").as_deref(), Some("100m"));
    assert_eq!(resource(p, "requests", "memory").as_deref(), Some("20Mi"));
    assert_eq!(resource(p, "limits", "memory").as_deref(), Some("250Mi"));
    assert_eq!(resource(p, "limits", "cpu"), None);
    let mount = &p.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (
            mount.name.as_str(),
            mount.mount_path.as_str(),
            mount.read_only
        ),
        (IDENTITY_TOKEN_VOLUME, IDENTITY_TOKEN_DIR, Some(true))
    );

    let volumes = serde_json::to_value(spec.volumes.as_ref().unwrap()).unwrap();
    assert_eq!(
        volumes,
        json!([
            {"name": "weft-init-xtables-lock", "emptyDir": {}},
            {"name": "weft-identity-token", "projected": {"sources": [{"serviceAccountToken": {
                "audience": "identity.l5d.io", "expirationSeconds": 86400, "path": "token"}}]}}
        ])
    );
    assert_eq!(spec.share_process_namespace, None);
}

#[test]
fn a_bare_pod_has_an_empty_owner_in_its_workload() {
    let (mut meta, mut spec) = pod(&enabled());
    let c = PodContext {
        owner: None,
        namespace: String::new(),
        ..ctx()
    };
    injector(false).inject(&mut meta, &mut spec, &c);
    assert_eq!(
        env(proxy(&spec), "WEFT_PROXY_WORKLOAD").unwrap(),
        "$(_WEFT_POD_NS)///$(_WEFT_POD_NAME)"
    );
    assert!(
        !meta.labels.unwrap().contains_key(WORKLOAD_NS_LABEL),
        "namespace unknown: no label"
    );
}

#[test]
fn every_config_annotation_changes_the_spec() {
    let (_, spec, warnings) = injected(&[
        (SKIP_INBOUND_PORTS, "8080, 9000-9010"),
        (SKIP_OUTBOUND_PORTS, "443"),
        (SKIP_SUBNETS, "10.0.0.0/8,fd00::/8"),
        (OPAQUE_PORTS, "3306"),
        (PROXY_LOG_LEVEL, "debug"),
        (PROXY_CPU_REQUEST, "200m"),
        (PROXY_CPU_LIMIT, "1"),
        (PROXY_MEMORY_REQUEST, "64Mi"),
        (PROXY_MEMORY_LIMIT, "1Gi"),
        (PROXY_AWAIT, "disabled"),
        (DEFAULT_INBOUND_POLICY, "deny"),
        (REQUIRE_IDENTITY_PORTS, "8443"),
        (SHUTDOWN_GRACE_PERIOD, "1m"),
        (WAIT_BEFORE_EXIT_SECONDS, "5"),
    ]);
    assert!(warnings.is_empty(), "{warnings:?}");
    let i = init(&spec);
    assert_eq!(
        flag(i, "--skip-inbound-ports").as_deref(),
        Some("4191,8080,9000-9010")
    );
    assert_eq!(flag(i, "--skip-outbound-ports").as_deref(), Some("443"));
    assert_eq!(
        flag(i, "--skip-subnets").as_deref(),
        Some("10.0.0.0/8,fd00::/8")
    );
    let p = proxy(&spec);
    assert_eq!(env(p, "WEFT_PROXY_OPAQUE_PORTS").as_deref(), Some("3306"));
    assert_eq!(env(p, "WEFT_PROXY_LOG").as_deref(), Some("debug"));
    assert_eq!(resource(p, "requests", "cpu").as_deref(), Some("200m"));
    assert_eq!(resource(p, "limits", "cpu").as_deref(), Some("1"));
    assert_eq!(resource(p, "requests", "memory").as_deref(), Some("64Mi"));
    assert_eq!(resource(p, "limits", "memory").as_deref(), Some("1Gi"));
    assert_eq!(
        resource(i, "requests", "cpu").as_deref(),
        Some("200m"),
        "init shares the proxy's resources"
    );
    assert!(
        p.lifecycle.is_none(),
        "proxy-await disabled: no postStart hook"
    );
    assert_eq!(
        env(p, "WEFT_PROXY_DEFAULT_INBOUND_POLICY").as_deref(),
        Some("deny")
    );
    assert_eq!(
        env(p, "WEFT_PROXY_REQUIRE_IDENTITY_PORTS").as_deref(),
        Some("8443")
    );
    assert_eq!(
        env(p, "WEFT_PROXY_SHUTDOWN_GRACE_PERIOD").as_deref(),
        Some("1m")
    );
    assert_eq!(env(p, "WEFT_PROXY_WAIT_BEFORE_EXIT").as_deref(), Some("5s"));
}

#[test]
fn namespace_annotations_are_defaults_for_its_pods() {
    let (mut meta, mut spec) = pod(&[(PROXY_LOG_LEVEL, "trace")]);
    let mut c = ctx();
    c.namespace_annotations = BTreeMap::from([
        (names::INJECT_ANNOTATION.to_owned(), "enabled".to_owned()),
        (PROXY_LOG_LEVEL.to_owned(), "debug".to_owned()),
        (OPAQUE_PORTS.to_owned(), "5432".to_owned()),
    ]);
    injector(false).inject(&mut meta, &mut spec, &c);
    let p = proxy(&spec);
    assert_eq!(
        env(p, "WEFT_PROXY_LOG").as_deref(),
        Some("trace"),
        "the pod wins"
    );
    assert_eq!(env(p, "WEFT_PROXY_OPAQUE_PORTS").as_deref(), Some("5432"));
}

#[test]
fn malformed_values_fall_back_with_one_warning_each() {
    let bad = [
        (SKIP_INBOUND_PORTS, "http"),
        (SKIP_OUTBOUND_PORTS, "70000"),
        (SKIP_SUBNETS, "10.0.0.0/33"),
        (OPAQUE_PORTS, "20-10"),
        (PROXY_LOG_LEVEL, "  "),
        (PROXY_CPU_REQUEST, "banana"),
        (PROXY_CPU_LIMIT, "-1"),
        (PROXY_MEMORY_REQUEST, "1Qi"),
        (PROXY_MEMORY_LIMIT, "lots"),
        (PROXY_AWAIT, "maybe"),
        (DEFAULT_INBOUND_POLICY, "allow"),
        (REQUIRE_IDENTITY_PORTS, "0"),
        (SHUTDOWN_GRACE_PERIOD, "soon"),
        (WAIT_BEFORE_EXIT_SECONDS, "5s"),
        (ENABLE_NATIVE_SIDECAR, "yes"),
    ];
    assert_eq!(
        bad.len(),
        CONFIG_ANNOTATIONS.len(),
        "every annotation is covered"
    );
    let (meta, spec, warnings) = injected(&bad);
    let got: Vec<_> = warnings
        .iter()
        .map(|w| (w.annotation.as_str(), w.value.as_str()))
        .collect();
    assert_eq!(
        got, bad,
        "in CONFIG_ANNOTATIONS order, naming annotation and value"
    );
    let cpu = warnings
        .iter()
        .find(|w| w.annotation == PROXY_CPU_REQUEST)
        .unwrap();
    assert!(
        cpu.reason.contains("quantity") && cpu.reason.contains("\"100m\""),
        "{}",
        cpu.reason
    );

    let policy = warnings
        .iter()
        .find(|w| w.annotation == DEFAULT_INBOUND_POLICY)
        .unwrap();
    assert!(
        policy.reason.contains("unknown default inbound policy")
            && policy.reason.ends_with("treated as \"deny\""),
        "{}",
        policy.reason
    );

    // ...and the result is exactly the default sidecar, except that the
    // unknown inbound policy failed closed.
    let (meta0, mut spec0, _) = injected(&[]);
    let p0 = spec0
        .containers
        .iter_mut()
        .find(|c| c.name == names::PROXY_CONTAINER)
        .unwrap();
    for e in p0.env.as_mut().unwrap() {
        if e.name == "WEFT_PROXY_DEFAULT_INBOUND_POLICY" {
            e.value = Some("deny".into());
        }
    }
    assert_eq!(spec, spec0);
    let strip = |m: &ObjectMeta| {
        let mut a = m.annotations.clone().unwrap();
        a.retain(|k, _| !k.starts_with("config."));
        a
    };
    assert_eq!(strip(&meta), strip(&meta0));
}

#[test]
fn a_bad_pod_value_falls_back_to_the_namespace() {
    let (mut meta, mut spec) = pod(&[
        (names::INJECT_ANNOTATION, "enabled"),
        (PROXY_CPU_REQUEST, "banana"),
    ]);
    let mut c = ctx();
    c.namespace_annotations
        .insert(PROXY_CPU_REQUEST.into(), "300m".into());
    let Outcome::Injected { warnings } = injector(false).inject(&mut meta, &mut spec, &c) else {
        panic!()
    };
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].reason.ends_with("using \"300m\""),
        "{}",
        warnings[0].reason
    );
    assert_eq!(
        resource(proxy(&spec), "requests", "cpu").as_deref(),
        Some("300m")
    );
}

#[test]
fn an_unknown_inbound_policy_is_deny_wherever_it_is_written() {
    let policy_of = |on_pod: &[(&str, &str)], ns: &[(&str, &str)]| {
        let mut a = enabled();
        a.extend_from_slice(on_pod);
        let (mut meta, mut spec) = pod(&a);
        let mut c = ctx();
        c.namespace_annotations = ns
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let Outcome::Injected { warnings } = injector(false).inject(&mut meta, &mut spec, &c)
        else {
            panic!("not injected")
        };
        let policy = env(proxy(&spec), "WEFT_PROXY_DEFAULT_INBOUND_POLICY").unwrap();
        let warned: Vec<String> = warnings.into_iter().map(|w| w.value).collect();
        (policy, warned)
    };
    let p = DEFAULT_INBOUND_POLICY;
    // The pod's typo does not fall back to the namespace's open policy.
    assert_eq!(
        policy_of(&[(p, "allow-all")], &[(p, "all-unauthenticated")]),
        ("deny".to_owned(), vec!["allow-all".to_owned()])
    );
    // A namespace's typo closes its pods that say nothing themselves...
    assert_eq!(
        policy_of(&[], &[(p, "Deny ")]),
        ("deny".to_owned(), vec!["Deny ".to_owned()])
    );
    // ...but a pod's valid value wins without judging the namespace's.
    assert_eq!(
        policy_of(&[(p, "audit")], &[(p, "nope")]),
        ("audit".to_owned(), vec![])
    );
    assert_eq!(
        policy_of(&[], &[(p, " cluster-authenticated ")]),
        ("cluster-authenticated".to_owned(), vec![])
    );
    // No annotation: the install's policy.
    let mut values = Values::default();
    values
        .set("defaultInboundPolicy=all-authenticated")
        .unwrap();
    let (mut meta, mut spec) = pod(&enabled());
    Injector::new(values.finish().unwrap(), PEM.into(), false).inject(&mut meta, &mut spec, &ctx());
    assert_eq!(
        env(proxy(&spec), "WEFT_PROXY_DEFAULT_INBOUND_POLICY").as_deref(),
        Some("all-authenticated")
    );
}

#[test]
fn inbound_ports_are_the_apps_tcp_container_ports() {
    use k8s_openapi::api::core::v1::ContainerPort;
    let port = |n: i32, proto: Option<&str>| ContainerPort {
        container_port: n,
        protocol: proto.map(str::to_owned),
        ..ContainerPort::default()
    };
    let (mut meta, mut spec) = pod(&enabled());
    spec.containers[0].ports = Some(vec![
        port(8080, None),
        port(53, Some("UDP")),
        port(9090, Some("TCP")),
    ]);
    spec.containers.push(Container {
        name: "sidecar".into(),
        ports: Some(vec![port(8080, Some("TCP")), port(7000, None)]),
        ..Container::default()
    });
    spec.init_containers = Some(vec![
        Container {
            name: "native-sidecar".into(),
            restart_policy: Some("Always".into()),
            ports: Some(vec![port(7100, None)]),
            ..Container::default()
        },
        Container {
            name: "migrate".into(),
            ports: Some(vec![port(7200, None)]),
            ..Container::default()
        },
    ]);
    injector(true).inject(&mut meta, &mut spec, &ctx());
    let p = proxy(&spec);
    assert_eq!(
        env(p, "WEFT_PROXY_INBOUND_PORTS").as_deref(),
        Some("7000,7100,8080,9090"),
        "sorted, deduplicated, TCP only, native sidecars but not one-shot init containers"
    );
    // The injected pod's own list is the same: never the proxy's ports.
    assert_eq!(inbound_ports(&spec), [7000, 7100, 8080, 9090]);

    let mut values = Values::default();
    values.set("clusterNetworks=10.1.0.0/16, fd00::/8").unwrap();
    let (mut meta, mut spec) = pod(&enabled());
    Injector::new(values.finish().unwrap(), PEM.into(), true).inject(&mut meta, &mut spec, &ctx());
    assert_eq!(
        env(proxy(&spec), "WEFT_PROXY_CLUSTER_NETWORKS").as_deref(),
        Some("10.1.0.0/16,fd00::/8")
    );
    assert_eq!(
        env(proxy(&spec), "WEFT_PROXY_INBOUND_TRUST_LOOPBACK").as_deref(),
        Some("true"),
        "native sidecars too"
    );
}

#[test]
fn a_request_above_its_limit_gives_way() {
    let (_, spec, warnings) = injected(&[(PROXY_CPU_REQUEST, "2"), (PROXY_CPU_LIMIT, "500m")]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].annotation, PROXY_CPU_REQUEST);
    assert_eq!(
        resource(proxy(&spec), "requests", "cpu").as_deref(),
        Some("500m")
    );
}

#[test]
fn native_sidecars_follow_values_and_annotation() {
    let names_of = |cs: &[Container]| cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    // auto on a 1.29+ cluster: the proxy is an init container after weft-init.
    let (mut meta, mut spec) = pod(&enabled());
    spec.init_containers = Some(vec![Container {
        name: "migrate".into(),
        ..Container::default()
    }]);
    injector(true).inject(&mut meta, &mut spec, &ctx());
    assert_eq!(
        names_of(spec.init_containers.as_ref().unwrap()),
        ["weft-init", "weft-proxy", "migrate"]
    );
    assert_eq!(names_of(&spec.containers), ["app"]);
    let p = proxy(&spec);
    assert_eq!(p.restart_policy.as_deref(), Some("Always"));
    assert!(p.lifecycle.is_none());
    let startup = p.startup_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(startup.path.as_deref(), Some("/ready"));

    // The annotation overrides in both directions.
    let (mut meta, mut spec) = pod(&[
        (names::INJECT_ANNOTATION, "enabled"),
        (ENABLE_NATIVE_SIDECAR, "false"),
    ]);
    injector(true).inject(&mut meta, &mut spec, &ctx());
    assert_eq!(names_of(&spec.containers), ["weft-proxy", "app"]);
    let (mut meta, mut spec) = pod(&[
        (names::INJECT_ANNOTATION, "enabled"),
        (ENABLE_NATIVE_SIDECAR, "true"),
    ]);
    injector(true).inject(&mut meta, &mut spec, &ctx());
    assert_eq!(names_of(&spec.containers), ["app"]);

    // Asked for on a cluster without native sidecars (which would refuse
    // the pod): a regular container and a warning, never a blocked pod.
    let (mut meta, mut spec) = pod(&[
        (names::INJECT_ANNOTATION, "enabled"),
        (ENABLE_NATIVE_SIDECAR, "true"),
    ]);
    let Outcome::Injected { warnings } = injector(false).inject(&mut meta, &mut spec, &ctx())
    else {
        panic!("injected")
    };
    assert_eq!(names_of(&spec.containers), ["weft-proxy", "app"]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].annotation, ENABLE_NATIVE_SIDECAR);
    assert!(warnings[0].reason.contains("1.29"), "{warnings:?}");

    // Values: `enabled` wherever the cluster runs them, `disabled` never.
    for (setting, supported, native) in [
        ("enabled", true, true),
        ("enabled", false, false),
        ("disabled", true, false),
        ("auto", false, false),
        ("auto", true, true),
    ] {
        let mut values = Values::default();
        values.proxy.native_sidecar = setting.into();
        let inj = Injector::new(values.finish().unwrap(), PEM.into(), supported);
        let (mut meta, mut spec) = pod(&enabled());
        inj.inject(&mut meta, &mut spec, &ctx());
        assert_eq!(proxy(&spec).restart_policy.is_some(), native, "{setting}");
    }

    // Native + proxy-await disabled: no startupProbe, the app does not wait.
    let (mut meta, mut spec) = pod(&[
        (names::INJECT_ANNOTATION, "enabled"),
        (PROXY_AWAIT, "disabled"),
    ]);
    injector(true).inject(&mut meta, &mut spec, &ctx());
    assert!(proxy(&spec).startup_probe.is_none());
}

#[test]
fn jobs_get_exit_with_app_without_native_sidecars() {
    for (kind, restart, native, want) in [
        ("job", Some("Never"), false, true),
        ("cronjob", Some("OnFailure"), false, true),
        ("job", Some("Never"), true, false),
        ("deployment", None, false, false),
        ("deployment", Some("Always"), false, false),
    ] {
        let (mut meta, mut spec) = pod(&enabled());
        spec.restart_policy = restart.map(Into::into);
        let c = PodContext {
            owner: Some(Owner {
                kind: kind.into(),
                name: "x".into(),
            }),
            ..ctx()
        };
        injector(native).inject(&mut meta, &mut spec, &c);
        assert_eq!(
            env(proxy(&spec), EXIT_WITH_APP_ENV).is_some(),
            want,
            "{kind} {restart:?} {native}"
        );
        assert_eq!(spec.share_process_namespace == Some(true), want, "{kind}");
    }
    // A bare run-to-completion pod too.
    let (mut meta, mut spec) = pod(&enabled());
    spec.restart_policy = Some("Never".into());
    injector(false).inject(
        &mut meta,
        &mut spec,
        &PodContext {
            owner: None,
            ..ctx()
        },
    );
    assert_eq!(
        env(proxy(&spec), EXIT_WITH_APP_ENV).as_deref(),
        Some("true")
    );
}

#[test]
fn ingress_injects_the_same_sidecar() {
    let (mut m1, mut s1) = pod(&[(names::INJECT_ANNOTATION, "ingress")]);
    let (mut m2, mut s2) = pod(&enabled());
    injector(false).inject(&mut m1, &mut s1, &ctx());
    injector(false).inject(&mut m2, &mut s2, &ctx());
    assert_eq!(s1, s2);
}

#[test]
fn output_is_deterministic() {
    let extra = [(OPAQUE_PORTS, "1,2"), (PROXY_CPU_REQUEST, "banana")];
    let a = serde_json::to_string(&injected(&extra).1).unwrap();
    for _ in 0..5 {
        assert_eq!(serde_json::to_string(&injected(&extra).1).unwrap(), a);
    }
}

// === uninject ===

#[test]
fn uninject_restores_every_variant_exactly() {
    let c = ctx();
    let (meta, spec) = pod(&enabled());
    assert_round_trip(&meta, &spec, &c, false);
    assert_round_trip(&meta, &spec, &c, true);

    // No annotations or labels at all (the namespace enables injection).
    let mut bare_ctx = ctx();
    bare_ctx
        .namespace_annotations
        .insert(names::INJECT_ANNOTATION.into(), "enabled".into());
    let (mut meta, spec) = pod(&[]);
    meta.labels = None;
    assert_round_trip(&meta, &spec, &bare_ctx, false);

    // Every config annotation set.
    let all: Vec<_> = CONFIG_ANNOTATIONS
        .iter()
        .map(|k| (*k, "1"))
        .chain(enabled())
        .collect();
    let (meta, spec) = pod(&all);
    assert_round_trip(&meta, &spec, &c, false);

    // Existing init containers, volumes (one with our name), and Job pods
    // with every prior shareProcessNamespace.
    for share in [None, Some(false), Some(true)] {
        for native in [false, true] {
            let (meta, mut spec) = pod(&enabled());
            spec.restart_policy = Some("Never".into());
            spec.share_process_namespace = share;
            spec.init_containers = Some(vec![Container {
                name: "migrate".into(),
                ..Container::default()
            }]);
            spec.volumes = Some(vec![
                Volume {
                    name: "weft-init-xtables-lock-2".into(),
                    empty_dir: Some(Default::default()),
                    ..Volume::default()
                },
                Volume {
                    name: "data".into(),
                    ..Volume::default()
                },
            ]);
            let job = PodContext {
                owner: Some(Owner {
                    kind: "job".into(),
                    name: "j".into(),
                }),
                ..ctx()
            };
            assert_round_trip(&meta, &spec, &job, native);
        }
    }

    // Labels and annotations inject overwrites come back.
    let (mut meta, spec) = pod(&[
        (names::INJECT_ANNOTATION, "enabled"),
        (names::PROXY_VERSION_ANNOTATION, "old"),
        (names::CREATED_BY_ANNOTATION, "someone"),
    ]);
    let labels = meta.labels.as_mut().unwrap();
    labels.insert(names::CONTROL_PLANE_NS_LABEL.into(), "linkerd".into());
    labels.insert(WORKLOAD_NS_LABEL.into(), "elsewhere".into());
    assert_round_trip(&meta, &spec, &c, false);
}

#[test]
fn uninject_keeps_the_users_inject_annotation_on_injected_pods() {
    let (mut meta, mut spec, _) = injected(&[]);
    uninject(&mut meta, &mut spec);
    assert_eq!(
        meta.annotations.unwrap()[names::INJECT_ANNOTATION],
        "enabled"
    );
}

#[test]
fn uninject_of_an_annotated_pod_removes_the_annotation() {
    let (mut meta, mut spec) = pod(&enabled());
    assert!(uninject(&mut meta, &mut spec));
    assert_eq!(meta.annotations, None);
    let (meta0, spec0) = (meta.clone(), spec.clone());
    assert!(!uninject(&mut meta, &mut spec), "nothing left to remove");
    assert_eq!((meta, spec), (meta0, spec0));
}

// === value parsers ===

#[test]
fn port_and_subnet_lists_normalize() {
    assert_eq!(port_list(" 80, 8000-8010 ,").unwrap(), "80,8000-8010");
    assert_eq!(port_list("").unwrap(), "");
    assert!(port_list("0").is_err());
    assert!(port_list("a-b").is_err());
    assert_eq!(
        subnet_list("10.0.0.0/8, ::1/128").unwrap(),
        "10.0.0.0/8,::1/128"
    );
    assert!(subnet_list("10.0.0.0").is_err());
    assert!(subnet_list("::/129").is_err());
}

#[test]
fn native_sidecars_from_1_29() {
    use crate::mutate::native_sidecars_supported as supported;
    assert!(!supported("1", "20"));
    assert!(!supported("1", "28+"));
    assert!(supported("1", "29"));
    assert!(supported("1", "31+"));
    assert!(supported("2", "0"));
    assert!(!supported("", ""));
}
