#![allow(clippy::unwrap_used)]
//! `Destination.GetProfile` fed by `--config-dir`, end to end: the real
//! `weft-controller` binary, ServiceProfile and TrafficSplit files rewritten
//! on disk, real TLS over loopback, and the `linkerd2-proxy-api` client a
//! proxy uses.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::destination::{
    request_match, response_match, DestinationProfile, GetDestination, HttpStatusRange,
    RequestMatch, ResponseMatch,
};
use linkerd2_proxy_api::http_types::HttpMethod;
use support::{destination_client, start_with_config, write_config};
use tonic::transport::Channel;
use tonic::Streaming;

/// Upper bound on every wait for a profile.
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is checked (> 2 polls of the config dir).
const QUIET: Duration = Duration::from_millis(1500);

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
";

/// Two routes, nested conditions, response classes and a retry budget.
const PROFILE: &str = "\
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: web.shop.svc.cluster.local
  namespace: shop
spec:
  routes:
  - name: GET /books/{id}
    condition:
      method: GET
      pathRegex: /books/[^/]+
    responseClasses:
    - condition:
        status: {min: 500, max: 599}
      isFailure: true
    isRetryable: true
    timeout: 300ms
  - name: write books
    condition:
      all:
      - pathRegex: /books(/.*)?
      - any:
        - method: POST
        - method: PUT
      - not:
          pathRegex: /books/internal/.*
    responseClasses:
    - condition:
        any:
        - status: {min: 500}
        - not:
            status: {max: 399}
      isFailure: true
    timeout: 1m30s
  retryBudget:
    retryRatio: 0.25
    minRetriesPerSecond: 7
    ttl: 15s
";

fn split_v1alpha2(w1: u32, w2: u32) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {{name: web-split, namespace: shop}}
spec:
  service: web
  backends:
  - service: web-v1
    weight: {w1}
  - service: web-v2
    weight: {w2}
"
    )
}

const SPLIT_V1ALPHA1: &str = "\
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: web-split, namespace: shop}
spec:
  service: web
  backends:
  - service: web-v1
    weight: 900m
  - service: web-v2
    weight: 100m
";

async fn get_profile(
    c: &mut DestinationClient<Channel>,
    path: &str,
) -> Streaming<DestinationProfile> {
    tokio::time::timeout(
        WAIT,
        c.get_profile(GetDestination {
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

async fn next(s: &mut Streaming<DestinationProfile>) -> DestinationProfile {
    tokio::time::timeout(WAIT, s.message())
        .await
        .expect("no profile within 10s")
        .unwrap()
        .expect("stream ended")
}

async fn quiet(s: &mut Streaming<DestinationProfile>) {
    if let Ok(m) = tokio::time::timeout(QUIET, s.message()).await {
        panic!("unexpected profile: {m:?}");
    }
}

fn method(m: http::Method) -> RequestMatch {
    RequestMatch {
        r#match: Some(request_match::Match::Method(HttpMethod::from(m))),
    }
}

fn path(re: &str) -> RequestMatch {
    RequestMatch {
        r#match: Some(request_match::Match::Path(
            linkerd2_proxy_api::destination::PathMatch { regex: re.into() },
        )),
    }
}

fn all(v: Vec<RequestMatch>) -> RequestMatch {
    RequestMatch {
        r#match: Some(request_match::Match::All(request_match::Seq { matches: v })),
    }
}

fn any(v: Vec<RequestMatch>) -> RequestMatch {
    RequestMatch {
        r#match: Some(request_match::Match::Any(request_match::Seq { matches: v })),
    }
}

fn not(m: RequestMatch) -> RequestMatch {
    RequestMatch {
        r#match: Some(request_match::Match::Not(Box::new(m))),
    }
}

fn status(min: u32, max: u32) -> ResponseMatch {
    ResponseMatch {
        r#match: Some(response_match::Match::Status(HttpStatusRange { min, max })),
    }
}

/// `(authority, weight)` of each override.
fn overrides(p: &DestinationProfile) -> Vec<(String, u32)> {
    p.dst_overrides
        .iter()
        .map(|d| (d.authority.clone(), d.weight))
        .collect()
}

fn is_default(p: &DestinationProfile) -> bool {
    let b = p.retry_budget.unwrap();
    p.routes.is_empty()
        && p.dst_overrides.is_empty()
        && !p.opaque_protocol
        && p.endpoint.is_none()
        && (b.retry_ratio, b.min_retries_per_second) == (0.2, 10)
        && b.ttl.unwrap().seconds == 10
}

fn check_translated(p: &DestinationProfile) {
    assert_eq!(p.fully_qualified_name, "web.shop.svc.cluster.local");
    assert!(p.dst_overrides.is_empty() && p.endpoint.is_none() && !p.opaque_protocol);
    assert_eq!(p.routes.len(), 2);

    let get = &p.routes[0];
    assert_eq!(
        get.metrics_labels,
        HashMap::from([("route".to_owned(), "GET /books/{id}".to_owned())])
    );
    assert_eq!(
        get.condition.as_ref().unwrap(),
        &all(vec![method(http::Method::GET), path("^(?:/books/[^/]+)$")])
    );
    assert_eq!(get.response_classes.len(), 1);
    assert!(get.response_classes[0].is_failure);
    assert_eq!(
        get.response_classes[0].condition.as_ref().unwrap(),
        &status(500, 599)
    );
    assert!(get.is_retryable);
    let t = get.timeout.unwrap();
    assert_eq!((t.seconds, t.nanos), (0, 300_000_000));

    let write = &p.routes[1];
    assert_eq!(write.metrics_labels["route"], "write books");
    assert_eq!(
        write.condition.as_ref().unwrap(),
        &all(vec![
            path("^(?:/books(/.*)?)$"),
            any(vec![method(http::Method::POST), method(http::Method::PUT)]),
            not(path("^(?:/books/internal/.*)$")),
        ])
    );
    let class = write.response_classes[0].condition.as_ref().unwrap();
    assert_eq!(
        class,
        &ResponseMatch {
            r#match: Some(response_match::Match::Any(response_match::Seq {
                matches: vec![
                    status(500, 599),
                    ResponseMatch {
                        r#match: Some(response_match::Match::Not(Box::new(status(100, 399)))),
                    },
                ],
            })),
        }
    );
    assert!(!write.is_retryable);
    assert_eq!(write.timeout.unwrap().seconds, 90);

    let b = p.retry_budget.unwrap();
    assert_eq!((b.retry_ratio, b.min_retries_per_second), (0.25, 7));
    let ttl = b.ttl.unwrap();
    assert_eq!((ttl.seconds, ttl.nanos), (15, 0));
}

#[tokio::test]
async fn service_profile_translated_and_invalid_versions_rejected() {
    let (id, cfg, ctl) = start_with_config(&[("svc.yaml", SERVICES), ("sp.yaml", PROFILE)]).await;
    let mut c = destination_client(id.path(), &ctl).await;
    let mut s = get_profile(&mut c, "web.shop.svc.cluster.local:80").await;
    let first = next(&mut s).await;
    check_translated(&first);
    // The short form names the same Service.
    let mut short = get_profile(&mut c, "web.shop:80").await;
    assert_eq!(next(&mut short).await, first);

    // A bad regex in the first route: rejected, logged with its field
    // path and file:line, and the previous valid profile stays.
    let bad = PROFILE.replace("pathRegex: /books/[^/]+", "pathRegex: /books/([^/]+");
    write_config(cfg.path(), "sp.yaml", &bad);
    ctl.wait_for_log("spec.routes[0].condition.pathRegex", WAIT)
        .await
        .unwrap();
    let log = ctl.log();
    let line = log
        .lines()
        .find(|l| l.contains("spec.routes[0].condition.pathRegex"))
        .unwrap();
    assert!(line.contains("invalid object rejected"), "{line}");
    assert!(line.contains("sp.yaml:1"), "{line}");
    assert!(line.contains("shop/web.shop.svc.cluster.local"), "{line}");
    quiet(&mut s).await;
    let mut again = get_profile(&mut c, "web.shop.svc.cluster.local:80").await;
    assert_eq!(next(&mut again).await, first);

    // A valid edit is served again (the route timeout changes).
    write_config(
        cfg.path(),
        "sp.yaml",
        &PROFILE.replace("timeout: 300ms", "timeout: 2s"),
    );
    let p = next(&mut s).await;
    assert_eq!(p.routes[0].timeout.unwrap().seconds, 2);

    // Deleting the profile falls back to the default profile.
    std::fs::remove_file(cfg.path().join("sp.yaml")).unwrap();
    let p = next(&mut s).await;
    assert!(is_default(&p), "{p:?}");
    assert_eq!(p.fully_qualified_name, "web.shop.svc.cluster.local");
}

#[tokio::test]
async fn traffic_split_weights_versions_and_updates() {
    let (id, cfg, ctl) = start_with_config(&[
        ("svc.yaml", SERVICES),
        ("split.yaml", &split_v1alpha2(90, 10)),
    ])
    .await;
    let mut c = destination_client(id.path(), &ctl).await;
    let mut s = get_profile(&mut c, "web.shop.svc.cluster.local:80").await;
    let v2 = next(&mut s).await;
    let ninety_ten = vec![
        ("web-v1.shop.svc.cluster.local:80".to_owned(), 9000),
        ("web-v2.shop.svc.cluster.local:80".to_owned(), 1000),
    ];
    assert_eq!(overrides(&v2), ninety_ten);
    assert!(v2.routes.is_empty());
    // The port asked for is the port of every backend authority.
    let mut s8080 = get_profile(&mut c, "web.shop:8080").await;
    let p = next(&mut s8080).await;
    assert_eq!(
        p.dst_overrides[0].authority,
        "web-v1.shop.svc.cluster.local:8080"
    );

    // A weight change arrives as an update within the bound.
    let t0 = Instant::now();
    write_config(cfg.path(), "split.yaml", &split_v1alpha2(50, 50));
    let p = next(&mut s).await;
    let took = t0.elapsed();
    assert_eq!(
        overrides(&p),
        vec![
            ("web-v1.shop.svc.cluster.local:80".to_owned(), 1000),
            ("web-v2.shop.svc.cluster.local:80".to_owned(), 1000),
        ]
    );
    assert!(took < WAIT, "weight change took {took:?}");
    eprintln!("weight change propagated in {took:?} (poll interval 200ms)");

    // v1alpha1 900m/100m is the same split as v1alpha2 90/10: the same
    // profile, byte for byte.
    write_config(cfg.path(), "split.yaml", SPLIT_V1ALPHA1);
    let v1 = next(&mut s).await;
    assert_eq!(v1, v2);
    // Rewriting it as v1alpha2 90/10 changes nothing, so nothing is sent.
    write_config(cfg.path(), "split.yaml", &split_v1alpha2(90, 10));
    quiet(&mut s).await;

    // An invalid split (all weights zero) is rejected; the last one stays.
    write_config(cfg.path(), "split.yaml", &split_v1alpha2(0, 0));
    ctl.wait_for_log("all backend weights are zero", WAIT)
        .await
        .unwrap();
    quiet(&mut s).await;
    let mut again = get_profile(&mut c, "web.shop:80").await;
    assert_eq!(overrides(&next(&mut again).await), ninety_ten);
}

#[tokio::test]
async fn no_profile_means_the_default_profile() {
    let (id, cfg, ctl) = start_with_config(&[("svc.yaml", SERVICES)]).await;
    let mut c = destination_client(id.path(), &ctl).await;
    let mut s = get_profile(&mut c, "web.shop.svc.cluster.local:80").await;
    let p = next(&mut s).await;
    assert!(is_default(&p), "{p:?}");
    assert_eq!(p.fully_qualified_name, "web.shop.svc.cluster.local");
    // Unknown Services get the default profile too.
    let mut unknown = get_profile(&mut c, "nope.shop:80").await;
    assert!(is_default(&next(&mut unknown).await));

    // A profile added later is streamed to the open subscriber.
    write_config(cfg.path(), "sp.yaml", PROFILE);
    check_translated(&next(&mut s).await);
}
