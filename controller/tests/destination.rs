#![allow(clippy::unwrap_used)]
//! The destination service fed by `--config-dir`, end to end: the real
//! `weft-controller` binary, YAML files rewritten on disk, real TLS over
//! loopback, and the `linkerd2-proxy-api` client a proxy uses.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::destination::{
    protocol_hint, tls_identity, update, GetDestination, Update, WeightedAddr,
};
use linkerd2_proxy_api::net::TcpAddress;
use support::{
    destination_client as client, identity_dir, start_with_config as start, write_config as write,
    Controller,
};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// Upper bound on every wait for an update.
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is checked (> 2 polls of the config dir).
const QUIET: Duration = Duration::from_millis(2500);

const PODS: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  annotations:
    linkerd.io/inject: enabled
spec:
  serviceAccountName: web
  containers: [{name: app, image: web}]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  annotations: {linkerd.io/inject: enabled}
spec:
  serviceAccountName: web
  containers: [{name: app, image: web}]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-2
  namespace: shop
  annotations: {linkerd.io/inject: enabled}
spec:
  serviceAccountName: web
  containers: [{name: app, image: web}]
---
apiVersion: v1
kind: Pod
metadata:
  name: legacy-0
  namespace: shop
spec:
  serviceAccountName: legacy
  containers: [{name: app, image: legacy}]
";

const SPLIT: &str = "\
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: web-split, namespace: shop}
spec:
  service: web
  backends: [{service: web-v1, weight: 90}, {service: web-v2, weight: 10}]
";

/// A Service `web.shop` (port 80 named http → targetPort 8080) and its
/// Endpoints: `(ip, port, pod)` ready addresses.
fn web_yaml(addrs: &[(&str, u16, &str)]) -> String {
    let mut s = String::from(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n\
         spec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n\
         ---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: web\n  namespace: shop\n\
         subsets:\n",
    );
    for (ip, port, pod) in addrs {
        s.push_str(&format!(
            "- addresses:\n  - ip: {ip}\n    targetRef: {{kind: Pod, name: {pod}, namespace: shop}}\n  \
             ports:\n  - name: http\n    port: {port}\n"
        ));
    }
    s
}

async fn get(c: &mut DestinationClient<Channel>, path: &str) -> Streaming<Update> {
    tokio::time::timeout(
        WAIT,
        c.get(GetDestination {
            scheme: "k8s".into(),
            path: path.into(),
            context_token: String::new(),
        }),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner()
}

async fn next(s: &mut Streaming<Update>) -> update::Update {
    tokio::time::timeout(WAIT, s.message())
        .await
        .expect("no update within 10s")
        .unwrap()
        .expect("stream ended")
        .update
        .expect("empty update")
}

async fn quiet(s: &mut Streaming<Update>) {
    if let Ok(m) = tokio::time::timeout(QUIET, s.message()).await {
        panic!("unexpected update: {m:?}");
    }
}

fn addr(a: &Option<TcpAddress>) -> String {
    let a = a.as_ref().unwrap();
    let ip = match a.ip.as_ref().unwrap().ip.unwrap() {
        linkerd2_proxy_api::net::ip_address::Ip::Ipv4(v4) => std::net::Ipv4Addr::from(v4),
        other => panic!("unexpected {other:?}"),
    };
    format!("{ip}:{}", a.port)
}

fn added(u: update::Update) -> Vec<WeightedAddr> {
    match u {
        update::Update::Add(set) => {
            assert_eq!(set.metric_labels["namespace"], "shop");
            assert_eq!(set.metric_labels["service"], "web");
            set.addrs
        }
        other => panic!("expected Add, got {other:?}"),
    }
}

fn addrs_of(v: &[WeightedAddr]) -> BTreeSet<String> {
    v.iter().map(|w| addr(&w.addr)).collect()
}

fn removed(u: update::Update) -> BTreeSet<String> {
    match u {
        update::Update::Remove(set) => set.addrs.iter().map(|a| addr(&Some(*a))).collect(),
        other => panic!("expected Remove, got {other:?}"),
    }
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn identity(w: &WeightedAddr) -> Option<String> {
    match w.tls_identity.as_ref()?.strategy.as_ref()? {
        tls_identity::Strategy::DnsLikeIdentity(d) => Some(d.name.clone()),
        other => panic!("unexpected {other:?}"),
    }
}

fn is_h2(w: &WeightedAddr) -> bool {
    matches!(
        w.protocol_hint.as_ref().and_then(|h| h.protocol.as_ref()),
        Some(protocol_hint::Protocol::H2(_))
    )
}

#[tokio::test]
async fn get_streams_endpoints_scaling_and_survives_a_broken_file() {
    let (id, cfg, ctl) = start(&[
        (
            "web.yaml",
            &web_yaml(&[
                ("127.0.0.1", 24143, "web-0"),
                ("127.0.0.2", 24143, "legacy-0"),
            ]),
        ),
        ("pods.yml", PODS),
        ("split.yaml", SPLIT),
    ])
    .await;
    let mut c = client(id.path(), &ctl).await;
    let mut s = get(&mut c, "web.shop.svc.cluster.local:80").await;

    // Initial Add: both addresses; identity and h2 only for the meshed pod.
    let first = added(next(&mut s).await);
    assert_eq!(
        addrs_of(&first),
        set(&["127.0.0.1:24143", "127.0.0.2:24143"])
    );
    for w in &first {
        assert_eq!(w.weight, 10_000);
        assert_eq!(w.metric_labels["namespace"], "shop");
        assert_eq!(w.metric_labels["service"], "web");
        if addr(&w.addr) == "127.0.0.1:24143" {
            assert_eq!(
                identity(w).as_deref(),
                Some("web.shop.serviceaccount.identity.weft.cluster.local")
            );
            assert!(is_h2(w));
            assert_eq!(w.metric_labels["pod"], "web-0");
            assert_eq!(w.metric_labels["serviceaccount"], "web");
        } else {
            assert_eq!(identity(w), None);
            assert!(!is_h2(w));
            assert_eq!(w.metric_labels["pod"], "legacy-0");
            assert_eq!(w.metric_labels["serviceaccount"], "legacy");
        }
    }

    // Down to one endpoint.
    write(
        cfg.path(),
        "web.yaml",
        &web_yaml(&[("127.0.0.1", 24143, "web-0")]),
    );
    assert_eq!(removed(next(&mut s).await), set(&["127.0.0.2:24143"]));

    // 1 → 3.
    let three = web_yaml(&[
        ("127.0.0.1", 24143, "web-0"),
        ("127.0.0.1", 24144, "web-1"),
        ("127.0.0.1", 24145, "web-2"),
    ]);
    write(cfg.path(), "web.yaml", &three);
    let more = added(next(&mut s).await);
    assert_eq!(
        addrs_of(&more),
        set(&["127.0.0.1:24144", "127.0.0.1:24145"])
    );
    assert!(more.iter().all(|w| identity(w).is_some() && is_h2(w)));

    // 3 → 1.
    write(
        cfg.path(),
        "web.yaml",
        &web_yaml(&[("127.0.0.1", 24145, "web-2")]),
    );
    assert_eq!(
        removed(next(&mut s).await),
        set(&["127.0.0.1:24143", "127.0.0.1:24144"])
    );

    // A broken file: reported with its path and line, endpoints kept.
    let broken = web_yaml(&[("127.0.0.1", 24146, "web-0")]).replace("port: 24146", "port: lots");
    write(cfg.path(), "web.yaml", &broken);
    let path = cfg.path().join("web.yaml");
    ctl.wait_for_log(&format!("{}:", path.display()), WAIT)
        .await
        .unwrap();
    let log = ctl.log();
    let line = log
        .lines()
        .find(|l| l.contains("config file rejected"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("(line 23)"), "{line}");
    quiet(&mut s).await;
    // A second Get still sees the last good endpoints.
    let mut s2 = get(&mut c, "web.shop:80").await;
    assert_eq!(
        addrs_of(&added(next(&mut s2).await)),
        set(&["127.0.0.1:24145"])
    );

    // Fixed: reloads again, both streams follow.
    write(
        cfg.path(),
        "web.yaml",
        &web_yaml(&[("127.0.0.1", 24143, "web-0")]),
    );
    for s in [&mut s, &mut s2] {
        assert_eq!(addrs_of(&added(next(s).await)), set(&["127.0.0.1:24143"]));
        assert_eq!(removed(next(s).await), set(&["127.0.0.1:24145"]));
    }

    // No ready endpoints left: NoEndpoints { exists: true }.
    write(cfg.path(), "web.yaml", &web_yaml(&[]));
    assert_eq!(removed(next(&mut s).await), set(&["127.0.0.1:24143"]));
    assert_eq!(
        next(&mut s).await,
        update::Update::NoEndpoints(linkerd2_proxy_api::destination::NoEndpoints { exists: true })
    );
}

#[tokio::test]
async fn unknown_services_short_names_and_refusals() {
    let (id, cfg, ctl) = start(&[
        ("web.yaml", &web_yaml(&[("127.0.0.1", 24143, "web-0")])),
        ("pods.yaml", PODS),
    ])
    .await;
    let mut c = client(id.path(), &ctl).await;

    // The short form resolves like the full one.
    let mut short = get(&mut c, "web.shop:80").await;
    let eps = added(next(&mut short).await);
    assert_eq!(addrs_of(&eps), set(&["127.0.0.1:24143"]));
    assert!(identity(&eps[0]).is_some());

    // Unknown service: NoEndpoints { exists: false }, and the stream stays
    // open so the service appearing later is seen.
    let mut nope = get(&mut c, "api.shop.svc.cluster.local:8080").await;
    assert_eq!(
        next(&mut nope).await,
        update::Update::NoEndpoints(linkerd2_proxy_api::destination::NoEndpoints { exists: false })
    );
    write(
        cfg.path(),
        "api.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\n\
         spec:\n  ports: [{port: 8080}]\n",
    );
    assert_eq!(
        next(&mut nope).await,
        update::Update::NoEndpoints(linkerd2_proxy_api::destination::NoEndpoints { exists: true })
    );

    // Names outside the cluster domain are refused as Linkerd does.
    let err = c
        .get(GetDestination {
            scheme: "k8s".into(),
            path: "www.example.com:443".into(),
            context_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // GetProfile refuses the same names (its answers are in profile.rs).
    let err = c
        .get_profile(GetDestination {
            scheme: "k8s".into(),
            path: "www.example.com:443".into(),
            context_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Graceful shutdown ends open streams promptly.
    let mut ctl = ctl;
    ctl.terminate();
    let status = ctl.wait_exit(Duration::from_secs(5)).await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn destination_is_off_without_config_dir() {
    let id = identity_dir();
    let ctl = Controller::start(id.path(), &[]).await.unwrap();
    assert!(ctl
        .log()
        .contains("destination service disabled: start with --config-dir"));
    assert!(std::net::TcpStream::connect(ctl.destination).is_err());
}
