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

/// A v1alpha2 profile whose `spec` is the given flow-style YAML mapping.
fn profile_with_spec(spec: &str) -> String {
    format!(
        "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\n\
         metadata: {{name: web.shop.svc.cluster.local, namespace: shop}}\nspec: {spec}\n"
    )
}

/// One route named `r` with the given condition and extra route fields.
fn route_spec(condition: &str, extra: &str) -> String {
    format!("{{routes: [{{name: r, condition: {condition}{extra}}}]}}")
}

/// One route matching `GET` whose single response class has `condition`.
fn class_spec(condition: &str) -> String {
    route_spec(
        "{method: GET}",
        &format!(", responseClasses: [{{condition: {condition}, isFailure: true}}]"),
    )
}

#[test]
fn each_invalid_profile_field_is_rejected_with_its_path() {
    let budget = |fields: &str| format!("{{retryBudget: {{minRetriesPerSecond: 10, {fields}}}}}");
    let cases: Vec<(String, &str, &str)> = vec![
        // Path regexes, anchored like the proxy applies them.
        (
            route_spec("{pathRegex: '/books/([0-9]+'}", ""),
            "spec.routes[0].condition.pathRegex",
            "invalid regex \"/books/([0-9]+\": unclosed group",
        ),
        (
            route_spec("{pathRegex: '[z-a]'}", ""),
            "spec.routes[0].condition.pathRegex",
            "invalid regex",
        ),
        // Balanced only once wrapped as ^(?:re)$: must not sneak through half anchored.
        (
            route_spec("{pathRegex: 'a)|(b'}", ""),
            "spec.routes[0].condition.pathRegex",
            "invalid regex \"a)|(b\"",
        ),
        (
            route_spec("{all: [{method: GET}, {not: {pathRegex: '*books'}}]}", ""),
            "spec.routes[0].condition.all[1].not.pathRegex",
            "invalid regex",
        ),
        (
            route_spec("{any: [{method: GET}, {pathRegex: '(?P<x'}]}", ""),
            "spec.routes[0].condition.any[1].pathRegex",
            "invalid regex",
        ),
        // Methods.
        (
            route_spec("{method: 'GE T'}", ""),
            "spec.routes[0].condition.method",
            "\"GE T\" is not a valid HTTP method",
        ),
        (
            route_spec("{method: ''}", ""),
            "spec.routes[0].condition.method",
            "is not a valid HTTP method",
        ),
        (
            route_spec("{method: get}", ""),
            "spec.routes[0].condition.method",
            "case-sensitive (use \"GET\")",
        ),
        // Names and empty conditions.
        (
            route_spec("{method: GET}", "").replace("name: r", "name: ''"),
            "spec.routes[0].name",
            "must not be empty",
        ),
        (
            route_spec("{method: GET}", "").replace("name: r", "name: '  '"),
            "spec.routes[0].name",
            "must not be empty",
        ),
        (
            route_spec("{}", ""),
            "spec.routes[0].condition",
            "condition is missing or empty",
        ),
        (
            route_spec("{any: [{method: GET}, {}]}", ""),
            "spec.routes[0].condition.any[1]",
            "condition is missing or empty",
        ),
        (
            route_spec("{not: {}}", ""),
            "spec.routes[0].condition.not",
            "condition is missing or empty",
        ),
        (
            route_spec("{all: []}", ""),
            "spec.routes[0].condition.all",
            "would match everything",
        ),
        (
            route_spec("{method: GET, any: []}", ""),
            "spec.routes[0].condition.any",
            "would never match",
        ),
        // Timeouts.
        (
            route_spec("{method: GET}", ", timeout: 5 seconds"),
            "spec.routes[0].timeout",
            "invalid duration \"5 seconds\"",
        ),
        (
            route_spec("{method: GET}", ", timeout: '300'"),
            "spec.routes[0].timeout",
            "missing unit",
        ),
        (
            route_spec("{method: GET}", ", timeout: -1s"),
            "spec.routes[0].timeout",
            "negative duration",
        ),
        (
            route_spec("{method: GET}", ", timeout: ''"),
            "spec.routes[0].timeout",
            "empty duration",
        ),
        // Response classes.
        (
            class_spec("{status: {min: 599, max: 500}}"),
            "spec.routes[0].responseClasses[0].condition.status",
            "min 599 is greater than max 500",
        ),
        (
            class_spec("{status: {min: 99}}"),
            "spec.routes[0].responseClasses[0].condition.status.min",
            "99 is not an HTTP status (100-599)",
        ),
        (
            class_spec("{status: {max: 600}}"),
            "spec.routes[0].responseClasses[0].condition.status.max",
            "600 is not an HTTP status",
        ),
        (
            class_spec("{status: {min: 0, max: 404}}"),
            "spec.routes[0].responseClasses[0].condition.status.min",
            "0 is not an HTTP status",
        ),
        (
            class_spec("{status: {}}"),
            "spec.routes[0].responseClasses[0].condition.status",
            "status range is empty",
        ),
        (
            class_spec("{}"),
            "spec.routes[0].responseClasses[0].condition",
            "condition is missing or empty",
        ),
        (
            class_spec("{any: [{status: {min: 500}}, {not: {status: {min: 1000}}}]}"),
            "spec.routes[0].responseClasses[0].condition.any[1].not.status.min",
            "1000 is not an HTTP status",
        ),
        (
            class_spec("{all: [{status: {min: 500}}, {}]}"),
            "spec.routes[0].responseClasses[0].condition.all[1]",
            "condition is missing or empty",
        ),
        (
            class_spec("{any: []}"),
            "spec.routes[0].responseClasses[0].condition.any",
            "would never match",
        ),
        // Retry budget.
        (
            budget("retryRatio: -0.5, ttl: 10s"),
            "spec.retryBudget.retryRatio",
            "must be a finite number >= 0, got -0.5",
        ),
        (
            budget("retryRatio: .nan, ttl: 10s"),
            "spec.retryBudget.retryRatio",
            "got NaN",
        ),
        (
            budget("retryRatio: .inf, ttl: 10s"),
            "spec.retryBudget.retryRatio",
            "got inf",
        ),
        (
            budget("retryRatio: 0.2"),
            "spec.retryBudget.ttl",
            "missing: a retry budget needs a ttl",
        ),
        (
            budget("retryRatio: 0.2, ttl: ten seconds"),
            "spec.retryBudget.ttl",
            "invalid duration \"ten seconds\"",
        ),
        (
            budget("retryRatio: 0.2, ttl: 10"),
            "spec.retryBudget.ttl",
            "missing unit",
        ),
        (
            budget("retryRatio: 0.2, ttl: 0s"),
            "spec.retryBudget.ttl",
            "must be greater than zero",
        ),
        (
            budget("retryRatio: 0.2, ttl: -10s"),
            "spec.retryBudget.ttl",
            "negative duration",
        ),
        // Destination overrides.
        (
            "{dstOverrides: [{authority: '', weight: 1}]}".to_string(),
            "spec.dstOverrides[0].authority",
            "must not be empty",
        ),
        (
            "{dstOverrides: [{authority: a.b.svc.cluster.local:80, weight: -1}]}".to_string(),
            "spec.dstOverrides[0].weight",
            "negative weight",
        ),
        (
            "{dstOverrides: [{authority: a.b.svc.cluster.local:80, weight: lots}]}".to_string(),
            "spec.dstOverrides[0].weight",
            "invalid quantity \"lots\"",
        ),
        // Opaque ports.
        (
            "{opaquePorts: ['0']}".to_string(),
            "spec.opaquePorts[0]",
            "invalid port \"0\"",
        ),
        (
            "{opaquePorts: ['3306', '70000']}".to_string(),
            "spec.opaquePorts[1]",
            "invalid port \"70000\"",
        ),
        (
            "{opaquePorts: ['5000-4000']}".to_string(),
            "spec.opaquePorts[0]",
            "start above end",
        ),
        (
            "{opaquePorts: ['mysql']}".to_string(),
            "spec.opaquePorts[0]",
            "invalid port \"mysql\"",
        ),
    ];
    for (spec, path, fragment) in &cases {
        let yaml = profile_with_spec(spec);
        let e = profile(&yaml).validate().unwrap_err();
        assert_eq!(paths(&e), [*path], "spec {spec}: {e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("{path}: ")) && text.contains(fragment),
            "spec {spec}: expected {fragment:?} in {text}"
        );
        assert!(!text.contains('\n'), "one-line message: {text}");
    }
}

#[test]
fn every_problem_in_one_profile_is_reported_at_once() {
    let yaml = profile_with_spec(
        "{routes: [\
           {name: a, condition: {pathRegex: '('}, timeout: soon},\
           {name: '', condition: {}, responseClasses: [{condition: {status: {min: 600}}}]}],\
         retryBudget: {retryRatio: -1, minRetriesPerSecond: 1}}",
    );
    let e = profile(&yaml).validate().unwrap_err();
    assert_eq!(
        paths(&e),
        [
            "spec.routes[0].condition.pathRegex",
            "spec.routes[0].timeout",
            "spec.routes[1].name",
            "spec.routes[1].condition",
            "spec.routes[1].responseClasses[0].condition.status.min",
            "spec.retryBudget.retryRatio",
            "spec.retryBudget.ttl",
        ],
        "{e}"
    );
    assert!(e.to_string().starts_with("7 problems: "), "{e}");
}

#[test]
fn structural_problems_are_parse_errors_naming_the_field() {
    // Fields the CRD schema requires cannot be absent from a typed object,
    // so the loader reports them, with serde's field path.
    let cases = [
        (
            "{routes: [{name: a, condition: {method: GET}}, {condition: {method: GET}}]}",
            "spec.routes[1]: missing field `name`",
        ),
        (
            "{routes: [{name: a}]}",
            "spec.routes[0]: missing field `condition`",
        ),
        (
            "{routes: [{name: a, condition: {method: GET}, responseClasses: [{isFailure: true}]}]}",
            "spec.routes[0].responseClasses[0]: missing field `condition`",
        ),
        (
            "{retryBudget: {minRetriesPerSecond: 10, ttl: 10s}}",
            "spec.retryBudget: missing field `retryRatio`",
        ),
        (
            "{retryBudget: {retryRatio: 0.2, minRetriesPerSecond: -1, ttl: 10s}}",
            "spec.retryBudget.minRetriesPerSecond",
        ),
        (
            "{retryBudget: {retryRatio: lots, minRetriesPerSecond: 1, ttl: 10s}}",
            "spec.retryBudget.retryRatio",
        ),
        (
            "{routes: [{name: a, condition: {method: GET}, responseClasses: [{condition: {status: {min: -1}}}]}]}",
            "spec.routes[0].responseClasses[0].condition.status.min",
        ),
    ];
    for (spec, fragment) in cases {
        let e = parse_documents(&profile_with_spec(spec)).unwrap_err();
        assert_eq!(e.kind.as_deref(), Some("ServiceProfile"), "{e}");
        assert!(
            e.message.contains(fragment),
            "{spec}: expected {fragment:?} in {e}"
        );
    }
}

/// The examples from Linkerd's ServiceProfile reference and guides (request
/// matches, response classes, retries, timeouts, retry budget), in one file.
const LINKERD_EXAMPLES: &str = r#"
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: webapp.default.svc.cluster.local
  namespace: default
spec:
  routes:
  - name: '/authors/{id}'
    condition:
      pathRegex: '/authors/\d+'
      method: POST
    responseClasses:
    - condition:
        status:
          min: 500
          max: 599
      isFailure: true
  - name: both fields, spelled out
    condition:
      all:
      - pathRegex: '/authors/\d+'
      - method: POST
  - name: combined
    condition:
      any:
      - all:
        - method: POST
        - pathRegex: '/authors/\d+'
      - all:
        - not:
            method: DELETE
        - pathRegex: /info.txt
    responseClasses:
    - condition:
        all:
        - status:
            min: 500
            max: 599
        - not:
            status:
              min: 503
              max: 503
      isFailure: true
    - condition:
        status:
          min: 404
      isFailure: false
  - name: GET /api/annotations
    condition:
      method: GET
      pathRegex: /api/annotations
    isRetryable: true
    timeout: 300ms
  - condition:
      method: GET
      pathRegex: /books/[^/]*
    name: GET /books/{id}
  - condition:
      method: HEAD
      pathRegex: /books\.json
    name: HEAD /books.json
    timeout: 1m
  retryBudget:
    retryRatio: 0.2
    minRetriesPerSecond: 10
    ttl: 10s
---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: mysql.db.svc.cluster.local
  namespace: db
spec:
  opaquePorts:
  - "3306"
---
apiVersion: linkerd.io/v1alpha1
kind: ServiceProfile
metadata:
  name: books.booksapp.svc.cluster.local
  namespace: booksapp
spec:
  routes:
  - condition:
      method: GET
      pathRegex: /books\.json
    name: GET /books.json
  - condition:
      method: PUT
      pathRegex: /books/[^/]*\.json
    name: PUT /books/{id}.json
    isRetryable: false
  retryBudget:
    retryRatio: 0.2
    minRetriesPerSecond: 10
    ttl: 10s
"#;

#[test]
fn linkerd_documentation_examples_are_accepted() {
    let docs = parse_documents(LINKERD_EXAMPLES).unwrap();
    assert_eq!(docs.len(), 3);
    let profiles: Vec<ServiceProfile> = docs
        .into_iter()
        .map(|d| match d {
            AnyObject::ServiceProfile(p) => *p,
            other => panic!("{other:?}"),
        })
        .collect();
    for p in &profiles {
        p.validate()
            .unwrap_or_else(|e| panic!("{:?}: {e}", p.metadata.name));
    }
    let routes = &profiles[0].spec.routes;
    assert_eq!(routes.len(), 6);
    let authors =
        crate::profile::compile_anchored(routes[0].condition.path_regex.as_deref().unwrap())
            .unwrap();
    assert!(authors.is_match("/authors/42"));
    assert!(
        !authors.is_match("/authors/42/books"),
        "anchored at the end"
    );
    assert!(!authors.is_match("/v1/authors/42"), "anchored at the start");
    assert_eq!(
        routes[3].timeout_duration(),
        Some(std::time::Duration::from_millis(300))
    );
    assert!(routes[3].is_retryable);
    // A single bound is an open range in Weft (404 and above).
    let status = routes[2].response_classes[1]
        .condition
        .status
        .as_ref()
        .unwrap();
    assert_eq!((status.min, status.max), (Some(404), None));
    assert_eq!(profiles[1].spec.opaque_ports, ["3306"]);
    // v1alpha1 is served and converted to the storage version.
    assert_eq!(
        serde_json::to_value(&profiles[2]).unwrap()["apiVersion"],
        "linkerd.io/v1alpha2"
    );
    assert_eq!(profiles[2].spec.routes[1].name, "PUT /books/{id}.json");
}

#[test]
fn typed_profiles_validate_like_parsed_ones() {
    use crate::profile::{RequestMatch, RetryBudget, RouteSpec};
    let mut spec = crate::ServiceProfileSpec {
        routes: vec![RouteSpec {
            name: "GET /".into(),
            condition: RequestMatch {
                method: Some("GET".into()),
                path_regex: Some("/".into()),
                ..RequestMatch::default()
            },
            response_classes: vec![],
            is_retryable: true,
            timeout: Some("250ms".into()),
        }],
        retry_budget: Some(RetryBudget::default()),
        ..Default::default()
    };
    spec.validate().unwrap();
    spec.routes[0].condition = RequestMatch::default();
    spec.retry_budget = Some(RetryBudget {
        retry_ratio: f32::NAN,
        ..RetryBudget::default()
    });
    let e = spec.validate().unwrap_err();
    assert_eq!(
        paths(&e),
        ["spec.routes[0].condition", "spec.retryBudget.retryRatio"]
    );
}

const ACCESS: &str = include_str!("../testdata/access.yaml");

#[test]
fn traffic_targets_of_both_versions_decode_to_the_storage_form() {
    use crate::access::TrafficTarget;
    use crate::specs::v1alpha4::TCPRoute;
    let docs = parse_documents(ACCESS).unwrap();
    let targets: Vec<&TrafficTarget> = docs
        .iter()
        .filter_map(|o| match o {
            AnyObject::TrafficTarget(t) => Some(&**t),
            _ => None,
        })
        .collect();
    assert_eq!(targets.len(), 2);
    // v1alpha2 keeps its destination port and is served as v1alpha3.
    assert_eq!(targets[0].spec.destination.port, Some(8080));
    assert_eq!(
        serde_json::to_value(targets[0]).unwrap()["apiVersion"],
        "access.smi-spec.io/v1alpha3"
    );
    assert_eq!(targets[0].metadata.name.as_deref(), Some("api-service-api"));
    assert_eq!(targets[0].spec.sources[1].namespace, None);
    assert_eq!(targets[0].spec.rules[0].matches, ["api"]);
    // The destination namespace defaults to the TrafficTarget's.
    assert_eq!(targets[1].spec.destination.port, None);
    assert_eq!(targets[1].destination_namespace(), "shop");
    assert_eq!(targets[1].spec.rules[0].kind, "TCPRoute");
    for d in &docs {
        d.validate().unwrap();
    }
    let routes: Vec<&TCPRoute> = docs
        .iter()
        .filter_map(|o| match o {
            AnyObject::TcpRoute(t) => Some(&**t),
            _ => None,
        })
        .collect();
    assert!(routes[0].selects_port(8080));
    assert!(!routes[0].selects_port(8081));
    assert!(routes[1].selects_port(1), "no ports: every port");
}

#[test]
fn invalid_traffic_targets_and_tcp_routes_name_their_fields() {
    let bad = ACCESS
        .replace(
            "kind: ServiceAccount\n    name: api-service\n    namespace: shop\n    port: 8080",
            "kind: Group\n    name: api-service\n    namespace: \"\"\n    port: 0",
        )
        .replace(
            "  - kind: HTTPRouteGroup\n    name: api-service-routes\n    matches:\n    - api",
            "  - kind: UDPRoute\n    name: \"\"\n    matches:\n    - \"\"",
        )
        .replace("name: payments-service", "name: \" \"")
        .replace("    - 8080\n", "    - 0\n    - 8080\n")
        .replace("spec: {}", "spec: {matches: {name: \"\"}}");
    let docs = parse_documents(&bad).unwrap();
    let e = docs[0].validate().unwrap_err();
    assert_eq!(
        paths(&e),
        [
            "spec.destination.kind",
            "spec.destination.namespace",
            "spec.sources[1].name",
            "spec.destination.port",
            "spec.rules[0].kind",
            "spec.rules[0].name",
            "spec.rules[0].matches[0]",
        ],
        "{e}"
    );
    docs[1].validate().unwrap();
    let e = docs[2].validate().unwrap_err();
    assert_eq!(paths(&e), ["spec.matches.ports[0]"], "{e}");
    let e = docs[3].validate().unwrap_err();
    assert_eq!(paths(&e), ["spec.matches.name"], "{e}");
    // A port beyond 65535 does not decode, with its field and line.
    let e = parse_documents(&ACCESS.replace("    - 8080\n", "    - 70000\n")).unwrap_err();
    assert_eq!(e.kind.as_deref(), Some("TCPRoute"), "{e}");
    assert!(e.message.contains("spec.matches.ports[0]"), "{e}");
    // Empty rules and sources are valid: such a target admits no one.
    let empty = "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\n\
                 metadata: {name: t, namespace: shop}\n\
                 spec: {destination: {kind: ServiceAccount, name: web}}\n";
    parse_documents(empty).unwrap()[0].validate().unwrap();
}
