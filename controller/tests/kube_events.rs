#![allow(clippy::unwrap_used)]
//! Kubernetes Events for TrafficSplits (and other mesh objects) the
//! controller cannot apply, end to end: the project's real test control
//! plane (etcd + kube-apiserver 1.20), the real `weft-controller` binary
//! with `--kubeconfig`, and the Events read back through events.k8s.io/v1
//! (and `kubectl describe`) as an operator would.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams};
use linkerd2_proxy_api::destination::{DestinationProfile, GetDestination};
use support::{destination_client, identity_dir, Controller};
use tonic::Streaming;
use weft_kube_harness::{StartOptions, TestControlPlane};

const NS: &str = "shop";
const WAIT: Duration = Duration::from_secs(30);

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NS}}}\n\
         spec:\n  ports:\n  - {{name: http, port: 80, targetPort: 8080, protocol: TCP}}\n"
    )
}

fn split(name: &str, backends: &[(&str, i64)]) -> String {
    let backends: Vec<String> = backends
        .iter()
        .map(|(b, w)| format!("  - {{service: {b}, weight: {w}}}\n"))
        .collect();
    format!(
        "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\n\
         metadata: {{name: {name}, namespace: {NS}}}\n\
         spec:\n  service: web\n  backends:\n{}",
        backends.concat()
    )
}

/// A ServiceProfile whose route regex does not compile.
const BAD_PROFILE: &str = "apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: web.shop.svc.cluster.local, namespace: shop}
spec:
  routes:
  - name: books
    condition: {method: GET, pathRegex: '/books/([^/]+'}
";

/// The Warning Events in the namespace reported by weft-controller.
async fn events(client: &kube::Client) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("weft-controller"))
        .collect()
}

/// Counts by `(regarding name, reason)`.
fn counts(events: &[Event]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for e in events {
        let name = e
            .regarding
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default();
        *out.entry((name, e.reason.clone().unwrap_or_default()))
            .or_default() += 1;
    }
    out
}

/// Waits until an Event with `reason` regarding `name` exists; returns it.
async fn wait_for_event(client: &kube::Client, name: &str, reason: &str) -> Event {
    let deadline = Instant::now() + WAIT;
    loop {
        let all = events(client).await;
        let found = all.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        });
        if let Some(e) = found {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} Event regarding {name} within {WAIT:?}; have {:?}",
            counts(&events(client).await)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The uid of a custom object as the API server has it.
async fn uid_of(plane: &TestControlPlane, yaml: &str) -> String {
    let objects: Vec<DynamicObject> = plane.apply_yaml(yaml).await.unwrap();
    objects[0].metadata.uid.clone().unwrap()
}

/// Checks the fields every Event of ours must have.
fn check_event(e: &Event, kind: &str, name: &str, uid: &str, note_has: &str) {
    assert_eq!(e.type_.as_deref(), Some("Warning"), "{e:?}");
    assert_eq!(e.reporting_controller.as_deref(), Some("weft-controller"));
    let r = e.regarding.as_ref().unwrap();
    assert_eq!(r.kind.as_deref(), Some(kind), "{e:?}");
    assert_eq!(r.name.as_deref(), Some(name), "{e:?}");
    assert_eq!(r.namespace.as_deref(), Some(NS), "{e:?}");
    assert_eq!(r.uid.as_deref(), Some(uid), "{e:?}");
    let note = e.note.as_deref().unwrap_or_default();
    assert!(note.contains(note_has), "{note}");
    assert!(note.len() <= 1024, "{}", note.len());
}

async fn first_profile(stream: &mut Streaming<DestinationProfile>) -> DestinationProfile {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("no profile")
        .unwrap()
        .expect("GetProfile stream ended")
}

#[tokio::test]
async fn invalid_and_unresolvable_splits_become_warning_events_once() {
    let started = Instant::now();
    let opts = StartOptions {
        controller_manager: false,
        ..StartOptions::default()
    };
    let plane = tokio::time::timeout(Duration::from_secs(240), TestControlPlane::start_with(opts))
        .await
        .expect("control plane start timed out")
        .unwrap();
    plane
        .apply_yaml(include_str!("../../install/crds.yaml"))
        .await
        .unwrap();
    for name in [
        "serviceprofiles.linkerd.io",
        "trafficsplits.split.smi-spec.io",
        "httproutegroups.specs.smi-spec.io",
    ] {
        plane.wait_for_crd_established(name).await.unwrap();
    }
    plane.create_namespace(NS).await.unwrap();
    for name in ["web", "web-v1", "web-v2"] {
        plane.apply_yaml(&service(name)).await.unwrap();
    }
    let client = plane.client();

    // Present before the controller starts (the initial list): all-zero
    // weights, which the CRD schema allows and validation rejects.
    let zero = split("zero-split", &[("web-v1", 0), ("web-v2", 0)]);
    let zero_uid = uid_of(&plane, &zero).await;
    eprintln!("cluster ready after {:?}", started.elapsed());

    let id = identity_dir();
    let kubeconfig = plane.kubeconfig_path().to_str().unwrap().to_owned();
    let ctl = Controller::start(id.path(), &["--kubeconfig", &kubeconfig])
        .await
        .unwrap();

    // Created while it runs (the watch): a valid split whose second
    // backend Service does not exist, and a profile with a bad regex.
    let ghost = split("ghost-split", &[("web-v1", 1), ("web-v3", 1)]);
    let t = Instant::now();
    let ghost_uid = uid_of(&plane, &ghost).await;
    let profile_uid = uid_of(&plane, BAD_PROFILE).await;

    let e = wait_for_event(&client, "zero-split", "InvalidTrafficSplit").await;
    check_event(
        &e,
        "TrafficSplit",
        "zero-split",
        &zero_uid,
        "spec.backends: all backend weights are zero",
    );
    let e = wait_for_event(
        &client,
        "web.shop.svc.cluster.local",
        "InvalidServiceProfile",
    )
    .await;
    check_event(
        &e,
        "ServiceProfile",
        "web.shop.svc.cluster.local",
        &profile_uid,
        "spec.routes[0].condition.pathRegex",
    );
    let e = wait_for_event(&client, "ghost-split", "TrafficSplitBackendNotFound").await;
    check_event(
        &e,
        "TrafficSplit",
        "ghost-split",
        &ghost_uid,
        "spec.backends[1].service: unknown Service shop/web-v3",
    );
    eprintln!("split with an unknown backend → Event in {:?}", t.elapsed());

    // Re-applying the same objects (no new resourceVersion) and store
    // churn (a new Service, a Service edit) publish nothing new.
    for yaml in [zero.as_str(), ghost.as_str(), BAD_PROFILE] {
        plane.apply_yaml(yaml).await.unwrap();
    }
    plane.apply_yaml(&service("other")).await.unwrap();
    plane
        .apply_yaml(&service("web-v2").replace(
            &format!("namespace: {NS}}}"),
            &format!("namespace: {NS}, labels: {{touched: \"yes\"}}}}"),
        ))
        .await
        .unwrap();
    // Longer than the reconciler's grace period (2 s) plus an evaluation.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let once = counts(&events(&client).await);
    let want: BTreeMap<(String, String), usize> = [
        ("ghost-split", "TrafficSplitBackendNotFound"),
        ("web.shop.svc.cluster.local", "InvalidServiceProfile"),
        ("zero-split", "InvalidTrafficSplit"),
    ]
    .into_iter()
    .map(|(n, r)| ((n.to_owned(), r.to_owned()), 1))
    .collect();
    assert_eq!(once, want);

    // A different rejected update (negative weight, a new resourceVersion
    // and message) is a new Event.
    plane
        .apply_yaml(&split("zero-split", &[("web-v1", -1), ("web-v2", 1)]))
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let negative = loop {
        let found = events(&client).await.into_iter().find(|e| {
            e.note
                .as_deref()
                .is_some_and(|n| n.contains("negative weight"))
        });
        if let Some(e) = found {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no Event for the negative weight"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    check_event(
        &negative,
        "TrafficSplit",
        "zero-split",
        &zero_uid,
        "spec.backends[0].weight: negative weight -1",
    );
    assert_eq!(negative.reason.as_deref(), Some("InvalidTrafficSplit"));

    // `kubectl describe` shows them (it finds Events by the object's uid).
    if plane.kubectl_path().is_some() {
        let out = plane
            .kubectl(&["describe", "trafficsplit", "-n", NS, "ghost-split"])
            .await
            .unwrap();
        assert!(out.contains("TrafficSplitBackendNotFound"), "{out}");
        assert!(out.contains("unknown Service shop/web-v3"), "{out}");
    }

    // Creating the missing backend resolves the problem; nothing new is
    // published, and the controller kept serving throughout: the split
    // with the then-unknown backend is in the profile as written.
    plane.apply_yaml(&service("web-v3")).await.unwrap();
    let mut dst = destination_client(id.path(), &ctl).await;
    let mut profiles = dst
        .get_profile(GetDestination {
            scheme: "k8s".into(),
            path: "web.shop.svc.cluster.local:80".into(),
            context_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let p = first_profile(&mut profiles).await;
    let overrides: Vec<(&str, u32)> = p
        .dst_overrides
        .iter()
        .map(|o| (o.authority.as_str(), o.weight))
        .collect();
    assert_eq!(
        overrides,
        [
            ("web-v1.shop.svc.cluster.local:80", 1000),
            ("web-v3.shop.svc.cluster.local:80", 1000)
        ]
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = counts(&events(&client).await);
    assert_eq!(all.values().sum::<usize>(), 4, "{all:?}");

    let log = ctl.log();
    let needle =
        "TrafficSplit shop/ghost-split: spec.backends[1].service: unknown Service shop/web-v3";
    let line = log
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{log}"));
    eprintln!("{line}");
    assert!(line.contains("WARN"), "{line}");
    assert!(!log.contains("cannot publish a Kubernetes Event"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("whole test {:?}", started.elapsed());
}
