//! Outbound policy (`io.linkerd.proxy.outbound.OutboundPolicies.Watch`):
//! the routes that send only *matching* requests to other backends, i.e.
//! SMI TrafficSplits with `matches` (header/path A/B routing), which a
//! profile's `dst_overrides` cannot express.
//!
//! One stream per authority, shared and reconnected like the endpoint and
//! profile streams ([`super::follow_stream`], [`super::Watches`]). Each
//! update is parsed once into [`Policy`]: rules in order, each with its
//! request matches and weighted backend authorities. The matches are
//! compiled and evaluated by [`crate::route::matching`], the matcher the
//! inbound authorization policy uses too: hosts exact or by suffix, path
//! exact, by segment prefix or an anchored regex, headers exact or by
//! regex, query parameters, method. A request takes the backends of the
//! **first** rule it matches; a request no rule matches follows the
//! profile as before. A controller without this API (`Unimplemented`) or
//! a name it does not serve (`InvalidArgument`, `NotFound`) means "no
//! rules", so the proxy works with any controller.
//!
//! Query-parameter matches are applied: they used to drop their rule,
//! since this side had no query matcher; the shared one has.
//!
//! A rule the proxy cannot evaluate faithfully (a match that does not
//! compile, such as an invalid regex, a route filter, a backend that is
//! not a named service) is dropped with a warning rather than applied to
//! requests it was not meant for.

use super::{follow_stream, Discovery, Watches};
use crate::route::matching::{
    request_host, route_score, HostMatch, InvalidMatch, RequestHead, RequestMatch,
};
use linkerd2_proxy_api::meta::metadata;
use linkerd2_proxy_api::outbound::backend::endpoint_discovery;
use linkerd2_proxy_api::outbound::http_route::distribution;
use linkerd2_proxy_api::outbound::outbound_policies_client::OutboundPoliciesClient;
use linkerd2_proxy_api::outbound::{
    backend, proxy_protocol, traffic_spec, HttpRoute, OutboundPolicy, TrafficSpec,
};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The policy streams of a [`Discovery`]: its client and one watch per
/// authority (`None` until the first answer).
pub(super) struct Policies {
    client: OutboundPoliciesClient<Channel>,
    pub(super) watches: Watches<Option<Arc<Policy>>>,
}

/// What the proxy applies from a name's outbound policy: its HTTP route
/// rules in order. (The protocol has separate HTTP/1 and HTTP/2 route
/// lists; Weft's controller sends the same routes in both, so one list is
/// kept: the HTTP/1 routes, or the HTTP/2 ones if only those are sent.)
#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// One route rule: where matching requests go.
#[derive(Debug)]
struct Rule {
    /// The route it came from, for logs (`TrafficSplit shop/ab`).
    route: Arc<str>,
    /// Hosts the route is limited to (shared by its rules); empty: any.
    hosts: Arc<[HostMatch]>,
    /// A request matching any of these takes the rule; empty: every request.
    matches: Box<[RequestMatch]>,
    /// Backend authorities (`svc.ns.svc.cluster.local:port`) and weights.
    backends: Vec<(String, u32)>,
}

/// Why a rule of a policy update was dropped.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A match that does not compile (an invalid regex, header name or
    /// method, a value missing).
    #[error("{route}: {source}")]
    Match {
        /// The route it came from.
        route: Arc<str>,
        /// What is wrong with the match.
        source: InvalidMatch,
    },
    /// A part of the protocol this proxy does not evaluate; applying the
    /// rule without it would send requests it was not meant for.
    #[error("{route}: {what} is not supported")]
    Unsupported {
        /// The route it came from.
        route: Arc<str>,
        /// What was not understood.
        what: &'static str,
    },
}

// === impl Policies ===

impl Policies {
    /// Policy watches over `channel` (the destination service's).
    pub(super) fn new(channel: Channel) -> Self {
        Self {
            client: OutboundPoliciesClient::new(channel),
            watches: Watches::new(),
        }
    }
}

// === impl Discovery ===

impl Discovery {
    /// The outbound policy of `authority` (`name:port`) as a watch
    /// (`None` until the first answer: route by the profile alone).
    pub fn watch_policy(&self, authority: &str) -> watch::Receiver<Option<Arc<Policy>>> {
        let client = self.inner.policies.client.clone();
        let name = authority.to_string();
        self.inner
            .policies
            .watches
            .get(authority, None, move |tx, stop| {
                follow_policy(client, name, tx, stop)
            })
    }
}

/// Follows one authority's policy until stopped.
async fn follow_policy(
    client: OutboundPoliciesClient<Channel>,
    authority: String,
    tx: Arc<watch::Sender<Option<Arc<Policy>>>>,
    stop: CancellationToken,
) {
    let call = |authority: &str| {
        let mut client = client.clone();
        let spec = TrafficSpec {
            source_workload: String::new(),
            target: Some(traffic_spec::Target::Authority(authority.to_string())),
        };
        async move { client.watch(spec).await }
    };
    let on_policy = |p: OutboundPolicy, _fresh: bool| {
        let (policy, errors) = Policy::from_proto(p);
        for error in &errors {
            tracing::warn!(%authority, %error, "outbound policy: rule dropped");
        }
        tracing::debug!(%authority, rules = policy.rules.len(), "outbound policy update");
        tx.send_replace(Some(Arc::new(policy)));
    };
    // A controller without the API, or a name it does not serve: no rules.
    let refused = |status: &tonic::Status| {
        let ours = matches!(
            status.code(),
            tonic::Code::Unimplemented | tonic::Code::InvalidArgument | tonic::Code::NotFound
        );
        if ours {
            tx.send_replace(Some(Arc::default()));
        }
        ours
    };
    follow_stream(&authority, &stop, call, on_policy, refused).await
}

// === impl Policy ===

impl Policy {
    /// Parses a policy update, compiling every regex once. Rules that
    /// cannot be applied faithfully are left out and returned as errors.
    pub fn from_proto(p: OutboundPolicy) -> (Self, Vec<RuleError>) {
        let routes = match p.protocol.and_then(|p| p.kind) {
            Some(proxy_protocol::Kind::Detect(d)) => match (d.http1, d.http2) {
                (Some(h), _) => h.routes,
                (None, Some(h)) => h.routes,
                (None, None) => Vec::new(),
            },
            Some(proxy_protocol::Kind::Http1(h)) => h.routes,
            Some(proxy_protocol::Kind::Http2(h)) => h.routes,
            _ => Vec::new(),
        };
        let mut errors = Vec::new();
        let rules = rules(routes, &mut errors);
        (Self { rules }, errors)
    }

    /// True if there is no rule at all (the common case: no match-gated
    /// split for this name).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The weighted backend authorities of the first rule a request with
    /// this method, URI and headers matches; `None` when no rule matches
    /// (the request follows the profile).
    pub fn backends(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> Option<&[(String, u32)]> {
        let req = RequestHead {
            method,
            uri,
            headers,
        };
        let host = request_host(uri, headers);
        let rule = self.rules.iter().find(|r| r.matches(&req, host))?;
        tracing::trace!(route = %rule.route, "outbound policy rule matched");
        Some(&rule.backends)
    }
}

/// Parses routes into rules, in order.
fn rules(routes: Vec<HttpRoute>, errors: &mut Vec<RuleError>) -> Vec<Rule> {
    let mut out = Vec::new();
    for (i, route) in routes.into_iter().enumerate() {
        let name = route_name(&route, i);
        // A host match without a value is ignored, as it always was here.
        let hosts: Arc<[HostMatch]> = route
            .hosts
            .into_iter()
            .filter_map(HostMatch::from_proto)
            .collect();
        for rule in route.rules {
            match parse_rule(&name, &hosts, rule) {
                Ok(r) => out.push(r),
                Err(e) => errors.push(e),
            }
        }
    }
    out
}

/// `TrafficSplit shop/ab` from the route's metadata, else its position.
fn route_name(route: &HttpRoute, index: usize) -> Arc<str> {
    let name = match route.metadata.as_ref().and_then(|m| m.kind.as_ref()) {
        Some(metadata::Kind::Resource(r)) => format!("{} {}/{}", r.kind, r.namespace, r.name),
        Some(metadata::Kind::Default(name)) => format!("default route {name}"),
        None => format!("route #{index}"),
    };
    name.into()
}

fn parse_rule(
    route: &Arc<str>,
    hosts: &Arc<[HostMatch]>,
    rule: linkerd2_proxy_api::outbound::http_route::Rule,
) -> Result<Rule, RuleError> {
    let unsupported = |what| RuleError::Unsupported {
        route: route.clone(),
        what,
    };
    let matches = rule
        .matches
        .into_iter()
        .map(|m| {
            RequestMatch::from_proto(m).map_err(|source| RuleError::Match {
                route: route.clone(),
                source,
            })
        })
        .collect::<Result<Box<[_]>, _>>()?;
    if !rule.filters.is_empty() {
        return Err(unsupported("a route filter"));
    }
    let backends = match rule.backends.and_then(|d| d.kind) {
        Some(distribution::Kind::RandomAvailable(ra)) => ra
            .backends
            .into_iter()
            .map(|b| {
                let authority = b
                    .backend
                    .and_then(|rb| rb.backend)
                    .and_then(backend_authority)
                    .ok_or_else(|| unsupported("a backend that is not a discovered service"))?;
                Ok((authority, b.weight))
            })
            .collect::<Result<Vec<_>, RuleError>>()?,
        Some(distribution::Kind::FirstAvailable(fa)) => {
            let first = fa
                .backends
                .into_iter()
                .next()
                .and_then(|rb| rb.backend)
                .and_then(backend_authority)
                .ok_or_else(|| unsupported("a backend that is not a discovered service"))?;
            vec![(first, 1)]
        }
        Some(distribution::Kind::Empty(_)) | None => {
            return Err(unsupported("a rule without backends"))
        }
    };
    Ok(Rule {
        route: route.clone(),
        hosts: hosts.clone(),
        matches,
        backends,
    })
}

/// The `Destination.Get` path of a balanced backend.
fn backend_authority(b: linkerd2_proxy_api::outbound::Backend) -> Option<String> {
    let backend::Kind::Balancer(p2c) = b.kind? else {
        return None;
    };
    match p2c.discovery?.kind? {
        endpoint_discovery::Kind::Dst(dst) => Some(dst.path).filter(|p| !p.is_empty()),
    }
}

// === impl Rule ===

impl Rule {
    /// The request (for `host`) matches the route's hosts and one of the
    /// rule's matches; the first such rule wins, so no score is kept.
    fn matches(&self, req: &RequestHead<'_>, host: Option<&str>) -> bool {
        route_score(&self.hosts, [&*self.matches], req, host).is_some()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use linkerd2_proxy_api::http_route as proto_route;
    use linkerd2_proxy_api::meta::{Metadata, Resource};
    use linkerd2_proxy_api::outbound::http_route::{
        Distribution, RouteBackend, Rule as ProtoRule, WeightedRouteBackend,
    };
    use linkerd2_proxy_api::outbound::{Backend, ProxyProtocol};

    fn balancer(path: &str, weight: u32) -> WeightedRouteBackend {
        WeightedRouteBackend {
            backend: Some(RouteBackend {
                backend: Some(Backend {
                    kind: Some(backend::Kind::Balancer(backend::BalanceP2c {
                        discovery: Some(backend::EndpointDiscovery {
                            kind: Some(endpoint_discovery::Kind::Dst(
                                endpoint_discovery::DestinationGet { path: path.into() },
                            )),
                        }),
                        load: None,
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            weight,
        }
    }

    fn rule(
        matches: Vec<proto_route::HttpRouteMatch>,
        backends: Vec<WeightedRouteBackend>,
    ) -> ProtoRule {
        ProtoRule {
            matches,
            backends: Some(Distribution {
                kind: Some(distribution::Kind::RandomAvailable(
                    distribution::RandomAvailable { backends },
                )),
            }),
            ..Default::default()
        }
    }

    fn route(name: &str, rules: Vec<ProtoRule>) -> HttpRoute {
        HttpRoute {
            metadata: Some(Metadata {
                kind: Some(metadata::Kind::Resource(Resource {
                    kind: "TrafficSplit".into(),
                    namespace: "shop".into(),
                    name: name.into(),
                    ..Default::default()
                })),
            }),
            hosts: Vec::new(),
            rules,
        }
    }

    fn detect(routes: Vec<HttpRoute>) -> OutboundPolicy {
        OutboundPolicy {
            protocol: Some(ProxyProtocol {
                kind: Some(proxy_protocol::Kind::Detect(proxy_protocol::Detect {
                    http1: Some(proxy_protocol::Http1 {
                        routes: routes.clone(),
                        failure_accrual: None,
                    }),
                    http2: Some(proxy_protocol::Http2 {
                        routes,
                        failure_accrual: None,
                    }),
                    ..Default::default()
                })),
            }),
            metadata: None,
        }
    }

    fn header(name: &str, re: &str) -> proto_route::HeaderMatch {
        proto_route::HeaderMatch {
            name: name.into(),
            value: Some(proto_route::header_match::Value::Regex(re.into())),
        }
    }

    fn path_regex(re: &str) -> Option<proto_route::PathMatch> {
        Some(proto_route::PathMatch {
            kind: Some(proto_route::path_match::Kind::Regex(re.into())),
        })
    }

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn first(p: &Policy, r: &http::Request<()>) -> Option<String> {
        p.backends(r.method(), r.uri(), r.headers())
            .map(|b| b[0].0.clone())
    }

    #[test]
    fn first_matching_rule_wins_and_regexes_are_anchored() {
        let canary = rule(
            vec![
                proto_route::HttpRouteMatch {
                    headers: vec![header("x-canary", "^(?:true)$")],
                    ..Default::default()
                },
                proto_route::HttpRouteMatch {
                    headers: vec![header("user-agent", ".*Firefox.*")],
                    method: Some(http::Method::GET.into()),
                    path: path_regex("/api/.*"),
                    ..Default::default()
                },
            ],
            vec![balancer("v1:80", 0), balancer("v2:80", 100)],
        );
        let posts = rule(
            vec![proto_route::HttpRouteMatch {
                path: path_regex("/posts"),
                ..Default::default()
            }],
            vec![balancer("v3:80", 1)],
        );
        let (p, errors) = Policy::from_proto(detect(vec![
            route("canary", vec![canary]),
            route("posts", vec![posts]),
        ]));
        assert!(errors.is_empty(), "{errors:?}");
        let h = |k, v| vec![(k, v)];
        let r = req("GET", "/", &h("x-canary", "true"));
        let b = p.backends(r.method(), r.uri(), r.headers()).unwrap();
        assert_eq!(b, [("v1:80".to_owned(), 0), ("v2:80".to_owned(), 100)]);
        // Anchored: the whole value must match.
        assert_eq!(first(&p, &req("GET", "/", &h("x-canary", "truex"))), None);
        assert_eq!(first(&p, &req("GET", "/", &h("x-canary", "false"))), None);
        // Header names are case-insensitive; any of several values counts.
        let r = req("GET", "/", &[("X-Canary", "no"), ("x-canary", "true")]);
        assert_eq!(first(&p, &r).as_deref(), Some("v1:80"));
        // All parts of one match must hold.
        let ff = ("user-agent", "Mozilla/5.0 Firefox/128.0");
        assert_eq!(
            first(&p, &req("GET", "http://web.shop/api/x?q=1", &[ff])).as_deref(),
            Some("v1:80")
        );
        assert_eq!(first(&p, &req("POST", "/api/x", &[ff])), None);
        assert_eq!(first(&p, &req("GET", "/v2/api/x", &[ff])), None);
        // The second route, and its path anchored at both ends.
        assert_eq!(
            first(&p, &req("GET", "/posts", &[])).as_deref(),
            Some("v3:80")
        );
        assert_eq!(first(&p, &req("GET", "/posts/1", &[])), None);
    }

    #[test]
    fn rules_that_cannot_be_applied_faithfully_are_dropped() {
        let bad_regex = rule(
            vec![proto_route::HttpRouteMatch {
                path: path_regex("/api/("),
                ..Default::default()
            }],
            vec![balancer("v2:80", 1)],
        );
        let query = rule(
            vec![proto_route::HttpRouteMatch {
                query_params: vec![proto_route::QueryParamMatch {
                    name: "beta".into(),
                    value: Some(proto_route::query_param_match::Value::Exact("1".into())),
                }],
                ..Default::default()
            }],
            vec![balancer("v2:80", 1)],
        );
        let forward = ProtoRule {
            backends: Some(Distribution {
                kind: Some(distribution::Kind::RandomAvailable(
                    distribution::RandomAvailable {
                        backends: vec![WeightedRouteBackend {
                            backend: Some(RouteBackend {
                                backend: Some(Backend {
                                    kind: Some(backend::Kind::Forward(Default::default())),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                            weight: 1,
                        }],
                    },
                )),
            }),
            ..Default::default()
        };
        let ok = rule(
            vec![proto_route::HttpRouteMatch {
                headers: vec![header("x-canary", "true")],
                ..Default::default()
            }],
            vec![balancer("v2:80", 1)],
        );
        let (p, errors) = Policy::from_proto(detect(vec![route(
            "ab",
            vec![bad_regex, query, forward, ok],
        )]));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0]
            .to_string()
            .contains("TrafficSplit shop/ab: invalid regex"));
        assert!(errors[1].to_string().contains("not a discovered service"));
        // The remaining rules still apply; nothing else is widened.
        assert_eq!(first(&p, &req("GET", "/api/x", &[])), None);
        assert_eq!(
            first(&p, &req("GET", "/?beta=1", &[("x-canary", "true")])).as_deref(),
            Some("v2:80")
        );
        assert!(!p.is_empty());
        // Query-parameter matches are applied (the shared matcher has them).
        assert_eq!(
            first(&p, &req("GET", "/?beta=1", &[])).as_deref(),
            Some("v2:80")
        );
        assert_eq!(first(&p, &req("GET", "/?beta=2", &[])), None);
    }

    #[test]
    fn no_protocol_or_no_routes_means_no_rules() {
        let (p, errors) = Policy::from_proto(OutboundPolicy::default());
        assert!(p.is_empty() && errors.is_empty());
        let (p, _) = Policy::from_proto(detect(Vec::new()));
        assert!(p.is_empty());
        assert_eq!(first(&p, &req("GET", "/", &[])), None);
    }

    use std::time::Duration;

    /// A controller without the API (here: a gRPC server with only the
    /// health service) answers `Unimplemented`: no rules, at once.
    #[tokio::test]
    async fn a_controller_without_the_api_means_no_rules() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(incoming(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let discovery = Discovery::new(channel);
        let started = std::time::Instant::now();
        let mut rx = discovery.watch_policy("web.shop.svc.cluster.local:80");
        let answered =
            crate::discovery::first_answer(&mut rx, Duration::from_secs(5), Option::is_some).await;
        assert!(answered);
        let p = rx.borrow().clone().unwrap();
        assert!(p.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        server.abort();
    }

    /// Accepted connections as the stream `serve_with_incoming` wants.
    fn incoming(
        listener: tokio::net::TcpListener,
    ) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        futures::stream::unfold(listener, |l| async move {
            let conn = l.accept().await.map(|(s, _)| s);
            Some((conn, l))
        })
    }

    #[test]
    fn hosts_and_prefixes() {
        let mut r = route(
            "hosts",
            vec![rule(
                vec![proto_route::HttpRouteMatch {
                    path: Some(proto_route::PathMatch {
                        kind: Some(proto_route::path_match::Kind::Prefix("/a/".into())),
                    }),
                    ..Default::default()
                }],
                vec![balancer("v2:80", 1)],
            )],
        );
        r.hosts = vec![proto_route::HostMatch {
            r#match: Some(proto_route::host_match::Match::Suffix(
                proto_route::host_match::Suffix {
                    reverse_labels: vec!["local".into(), "cluster".into()],
                },
            )),
        }];
        let (p, errors) = Policy::from_proto(detect(vec![r]));
        assert!(errors.is_empty(), "{errors:?}");
        let uri = "http://web.shop.svc.cluster.local:80/a/b";
        assert!(first(&p, &req("GET", uri, &[])).is_some());
        assert!(first(&p, &req("GET", "/a", &[("host", "x.cluster.local")])).is_some());
        assert!(first(&p, &req("GET", "/ab", &[("host", "x.cluster.local")])).is_none());
        assert!(first(&p, &req("GET", "http://example.com/a/b", &[])).is_none());
    }
}
