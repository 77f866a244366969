//! Tests driven by the YAML manifests in `testdata/`.
#![allow(clippy::unwrap_used)]

use crate::documents::{parse_documents, parse_documents_with_positions, AnyObject};
use crate::profile::ServiceProfile;
use crate::split::{AnyTrafficSplit, RouteRef, Split, SplitBackend};
use crate::ValidationErrors;

const SPLITS: &str = include_str!("../testdata/splits.yaml");
const INVALID_SPLITS: &str = include_str!("../testdata/invalid-splits.yaml");
const PROFILE: &str = include_str!("../testdata/profile.yaml");
const INVALID_PROFILE: &str = include_str!("../testdata/invalid-profile.yaml");
const MIXED: &str = include_str!("../testdata/mixed.yaml");

fn splits(yaml: &str) -> Vec<AnyTrafficSplit> {
    parse_documents(yaml)
        .unwrap()
        .into_iter()
        .filter_map(|o| match o {
            AnyObject::TrafficSplit(s) => Some(*s),
            _ => None,
        })
        .collect()
}

fn profile(yaml: &str) -> ServiceProfile {
    match parse_documents(yaml).unwrap().remove(0) {
        AnyObject::ServiceProfile(p) => *p,
        other => panic!("expected a ServiceProfile, got {other:?}"),
    }
}

fn paths(e: &ValidationErrors) -> Vec<&str> {
    e.errors.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn every_split_version_parses_and_normalizes() {
    let all = splits(SPLITS);
    assert_eq!(all.len(), 4);
    assert!(matches!(all[0], AnyTrafficSplit::V1alpha1(_)));
    assert!(matches!(all[1], AnyTrafficSplit::V1alpha2(_)));
    assert!(matches!(all[2], AnyTrafficSplit::V1alpha3(_)));
    assert!(matches!(all[3], AnyTrafficSplit::V1alpha4(_)));
    let normalized: Vec<Split> = all.iter().map(|s| s.to_split().unwrap()).collect();

    // v1alpha1 "900m/100m" and v1alpha2 "90/10" are the same split.
    assert_eq!(normalized[0], normalized[1]);
    assert_eq!(
        normalized[0].backends,
        [
            SplitBackend {
                service: "web-v1".into(),
                weight: 9
            },
            SplitBackend {
                service: "web-v2".into(),
                weight: 1
            },
        ]
    );
    assert_eq!(normalized[0].total_weight(), 10);
    assert_eq!(normalized[0].namespace.as_deref(), Some("shop"));
    assert!(normalized[0].matches.is_empty());

    // v1alpha3 and v1alpha4 carry route matches; a zero weight is allowed
    // as long as some backend gets traffic.
    let v3 = &normalized[2];
    assert_eq!(
        v3.matches,
        [RouteRef {
            api_group: None,
            kind: "HTTPRouteGroup".into(),
            name: "firefox-users".into()
        }]
    );
    assert_eq!(v3.backends[0].weight, 0);
    assert_eq!(v3.backends[1].weight, 1);
    let v4 = &normalized[3];
    assert_eq!(
        v4.matches[0].api_group.as_deref(),
        Some("specs.smi-spec.io")
    );
    assert_eq!(v4.backends, v3.backends);
}

#[test]
fn quantity_and_integer_weights_agree_across_notations() {
    let v1 = |a: &str, b: &str| {
        format!(
            "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {{name: s}}\n\
             spec:\n  service: web\n  backends:\n  - {{service: a, weight: {a}}}\n  - {{service: b, weight: {b}}}\n"
        )
    };
    let one = |y: &str| splits(y).remove(0).to_split().unwrap();
    assert_eq!(one(&v1("900m", "100m")), one(&v1("\"9\"", "1")));
    assert_eq!(one(&v1("1", "\"1\"")).backends[0].weight, 1);
    assert_eq!(one(&v1("1k", "1")).backends[0].weight, 1000);
    assert_eq!(one(&v1("0.75", "250m")).backends[0].weight, 3);
}

#[test]
fn route_groups_accept_map_and_list_headers() {
    let groups: Vec<_> = parse_documents(SPLITS)
        .unwrap()
        .into_iter()
        .filter_map(|o| match o {
            AnyObject::HttpRouteGroup(g) => Some(*g),
            _ => None,
        })
        .collect();
    assert_eq!(groups.len(), 2);
    for g in &groups {
        g.validate().unwrap();
    }
    let firefox = &groups[0].spec.matches[0];
    assert_eq!(
        firefox.headers.as_ref().unwrap().0["user-agent"],
        ".*Firefox.*"
    );
    assert_eq!(groups[0].spec.matches[1].methods, ["GET"]);
    let canary = groups[1].spec.matches[0].headers.as_ref().unwrap();
    assert_eq!(canary.0.len(), 2);
    assert_eq!(canary.0["x-region"], "eu-.*");
}

#[test]
fn invalid_splits_report_every_problem() {
    let all = splits(INVALID_SPLITS);
    assert_eq!(all.len(), 4);

    let e = all[0].to_split().unwrap_err();
    assert_eq!(
        paths(&e),
        [
            "spec.backends[0].service",
            "spec.backends[1].service",
            "spec.backends[2].weight",
            "spec.backends[3].service",
        ],
        "{e}"
    );
    let text = e.to_string();
    assert!(text.starts_with("4 problems: "), "{text}");
    assert!(text.contains("self-reference"), "{text}");
    assert!(text.contains("must not be empty"), "{text}");
    assert!(text.contains("negative weight -5"), "{text}");
    assert!(
        text.contains("duplicate backend \"web-v2\" (also spec.backends[2])"),
        "{text}"
    );

    let e = all[1].to_split().unwrap_err();
    assert_eq!(paths(&e), ["spec.backends"]);
    assert!(e.errors[0].message.contains("all backend weights are zero"));

    let e = all[2].to_split().unwrap_err();
    assert_eq!(
        paths(&e),
        ["spec.backends[0].weight", "spec.backends[1].weight"],
        "{e}"
    );
    assert!(
        e.errors[0].message.contains("invalid quantity \"lots\""),
        "{e}"
    );
    assert!(e.errors[1].message.contains("negative"), "{e}");

    let e = all[3].to_split().unwrap_err();
    assert_eq!(
        paths(&e),
        [
            "spec.matches[0].kind",
            "spec.matches[0].name",
            "spec.matches[0].apiGroup"
        ],
        "{e}"
    );

    // The per-version validate() says the same thing.
    let AnyTrafficSplit::V1alpha2(t) = &all[0] else {
        panic!()
    };
    assert_eq!(t.validate().unwrap_err(), all[0].to_split().unwrap_err());
}

#[test]
fn unknown_backends_and_route_groups_are_reported_by_lookup() {
    let split = splits(SPLITS)[3].to_split().unwrap();
    let services = ["web", "web-v1"];
    let e = split
        .check_references(|s| services.contains(&s), |_| false)
        .unwrap_err();
    assert_eq!(
        paths(&e),
        ["spec.backends[1].service", "spec.matches[0].name"]
    );
    assert!(e.errors[0]
        .message
        .contains("unknown backend service \"web-v2\""));
    split
        .check_references(|_| true, |g| g == "firefox-users")
        .unwrap();
}

#[test]
fn profile_with_nested_conditions_round_trips() {
    let p = profile(PROFILE);
    p.validate().unwrap();
    let routes = &p.spec.routes;
    assert_eq!(routes.len(), 2);
    assert_eq!(
        routes[0].timeout_duration(),
        Some(std::time::Duration::from_millis(300))
    );
    assert!(routes[0].is_retryable);
    assert_eq!(
        routes[1].timeout_duration(),
        Some(std::time::Duration::from_secs(90))
    );

    let all = routes[1].condition.all.as_ref().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        all[1].any.as_ref().unwrap()[1].method.as_deref(),
        Some("PUT")
    );
    assert_eq!(
        all[2].not.as_ref().unwrap().path_regex.as_deref(),
        Some("/books/internal/.*")
    );
    let class = &routes[1].response_classes[0].condition;
    let inner = &class.any.as_ref().unwrap()[1].all.as_ref().unwrap()[1];
    assert_eq!(
        inner.not.as_ref().unwrap().status.as_ref().unwrap().max,
        Some(399)
    );

    let budget = p.spec.retry_budget.as_ref().unwrap();
    assert_eq!(
        budget.ttl_duration(),
        Some(std::time::Duration::from_secs(10))
    );
    assert_eq!(p.spec.dst_overrides[0].weight.milli().unwrap(), 100);
    assert_eq!(p.spec.opaque_ports, ["3306", "4000-4100"]);

    // YAML and JSON round trips give back the same object.
    let yaml = serde_yaml::to_string(&p).unwrap();
    assert_eq!(profile(&yaml), p);
    let json = serde_json::to_string(&p).unwrap();
    let back: ServiceProfile = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    // Field names are Linkerd's camelCase ones.
    for field in [
        "responseClasses",
        "isRetryable",
        "pathRegex",
        "retryBudget",
        "minRetriesPerSecond",
        "dstOverrides",
        "opaquePorts",
        "isFailure",
    ] {
        assert!(
            json.contains(&format!("\"{field}\"")),
            "missing {field} in {json}"
        );
    }
}

#[test]
fn invalid_profile_errors_name_the_fields() {
    // v1alpha1 input is converted to the storage version on load.
    let p = profile(INVALID_PROFILE);
    assert_eq!(
        serde_json::to_value(&p).unwrap()["apiVersion"],
        "linkerd.io/v1alpha2"
    );
    let e = p.validate().unwrap_err();
    assert_eq!(
        paths(&e),
        [
            "spec.routes[1].name",
            "spec.routes[2].condition.any[1].pathRegex",
            "spec.routes[2].responseClasses[0].condition.status",
            "spec.routes[2].timeout",
            "spec.routes[3].condition",
            "spec.retryBudget.retryRatio",
            "spec.retryBudget.ttl",
            "spec.opaquePorts[0]",
            "spec.opaquePorts[1]",
        ],
        "{e}"
    );
    let msg = |path: &str| {
        e.errors
            .iter()
            .find(|x| x.path == path)
            .unwrap()
            .message
            .clone()
    };
    assert!(msg("spec.routes[2].condition.any[1].pathRegex").contains("invalid regex"));
    assert!(msg("spec.routes[2].responseClasses[0].condition.status")
        .contains("min 599 is greater than max 500"));
    assert!(msg("spec.routes[2].timeout").contains("invalid duration"));
    assert!(msg("spec.retryBudget.ttl").contains("missing"));
    assert!(msg("spec.retryBudget.retryRatio").contains("-0.5"));
    assert!(!e.to_string().contains('\n'), "one-line message: {e}");
}

#[test]
fn multi_doc_with_unknown_kinds() {
    let docs = parse_documents_with_positions(MIXED).unwrap();
    let summary: Vec<(usize, usize, &str)> = docs
        .iter()
        .map(|d| (d.index, d.line, d.object.kind()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, 2, "Service"),
            (2, 15, "Widget"),
            (3, 22, "TrafficTarget"),
            (4, 45, "TCPRoute"),
            (5, 55, "TrafficSplit"),
        ]
    );
    match &docs[0].object {
        AnyObject::Other {
            api_version,
            object,
            ..
        } => {
            assert_eq!(api_version, "v1");
            assert_eq!(object["spec"]["ports"][0]["targetPort"], 8080);
        }
        other => panic!("{other:?}"),
    }
    // An unknown version of a known kind is left to the caller, not guessed.
    assert!(
        matches!(&docs[4].object, AnyObject::Other { api_version, .. } if api_version == "split.smi-spec.io/v1alpha9")
    );
    for d in &docs {
        d.object.validate().unwrap();
    }
    let AnyObject::TrafficTarget(tt) = &docs[2].object else {
        panic!()
    };
    assert_eq!(tt.spec.sources[0].namespace.as_deref(), Some("ingress"));
    assert_eq!(tt.spec.rules[0].matches, ["metrics"]);
    let AnyObject::TcpRoute(tcp) = &docs[3].object else {
        panic!()
    };
    assert_eq!(tcp.spec.matches.as_ref().unwrap().ports, [3306]);
    assert_eq!(
        docs[3].object.metadata().unwrap().name.as_deref(),
        Some("db")
    );
}

#[test]
fn syntax_error_reports_document_and_line() {
    let yaml = "\
apiVersion: v1
kind: Service
metadata: {name: a}
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata:
  name: b
spec:
  service: web
   backends: []
";
    let e = parse_documents(yaml).unwrap_err();
    assert_eq!((e.document, e.line), (2, 11), "{e}");
    assert!(e.to_string().starts_with("document 2 (line 11"), "{e}");
    assert!(
        !e.message.contains("at line"),
        "relative position leaked: {e}"
    );
}

#[test]
fn type_error_in_known_kind_reports_field_and_line() {
    let yaml = "\
# leading comment
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata:
  name: b
spec:
  service: web
  backends:
  - service: web-v1
    weight: [1]
";
    let e = parse_documents(yaml).unwrap_err();
    assert_eq!((e.document, e.line), (1, 10), "{e}");
    assert_eq!(e.kind.as_deref(), Some("TrafficSplit"));
    assert!(e.message.contains("spec.backends[0].weight"), "{e}");
}

#[test]
fn documents_need_api_version_and_kind() {
    let e = parse_documents("---\nfoo: bar\n").unwrap_err();
    assert_eq!((e.document, e.line), (1, 2));
    assert!(e.message.contains("apiVersion or kind"));
    let e = parse_documents("a: 1\n---\n- just\n- a list\n").unwrap_err();
    assert_eq!(e.document, 1);
    let e = parse_documents("apiVersion: v1\nkind: A\n---\n- just\n- a list\n").unwrap_err();
    assert_eq!((e.document, e.line), (2, 4));
    assert!(parse_documents("").unwrap().is_empty());
    assert!(parse_documents("# only a comment\n---\n")
        .unwrap()
        .is_empty());
}
