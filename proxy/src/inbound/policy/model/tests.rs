#![allow(clippy::unwrap_used)]

use super::*;
use linkerd2_proxy_api::grpc_route::GrpcRpcMatch;
use linkerd2_proxy_api::inbound::{Authn as ApiAuthn, Network as ApiNetwork};
use weft_policy::{default_authz, default_server, DefaultPolicy, DEFAULT_CLUSTER_NETWORKS};

fn cluster() -> Vec<IpNet> {
    weft_policy::parse_networks(DEFAULT_CLUSTER_NETWORKS).unwrap()
}

/// A `Detect` server named `web` (SMI-style labels) with `routes`.
fn server(authorizations: Vec<api::Authz>, routes: Vec<api::HttpRoute>) -> api::Server {
    api::Server {
        protocol: Some(weft_policy::protocol(false, routes)),
        server_ips: Vec::new(),
        authorizations,
        labels: weft_policy::labels("access.smi-spec.io", "serviceaccount", "web"),
    }
}

fn route(name: &str, rules: Vec<api::http_route::Rule>) -> api::HttpRoute {
    api::HttpRoute {
        metadata: Some(weft_policy::resource_meta(
            "specs.smi-spec.io",
            "HTTPRouteGroup",
            "shop",
            name,
        )),
        hosts: Vec::new(),
        authorizations: Vec::new(),
        rules,
    }
}

fn all() -> api::Authz {
    default_authz(
        "all",
        weft_policy::all_networks(),
        weft_policy::unauthenticated(),
    )
}

fn refused(s: api::Server) -> String {
    ServerPolicy::from_proto(s, false).unwrap_err().to_string()
}

#[test]
fn every_default_server_converts() {
    for policy in DefaultPolicy::ALL {
        for opaque in [false, true] {
            let s = default_server(policy, &cluster(), opaque, &["/ready".to_owned()]);
            let p = ServerPolicy::from_proto(s, false).unwrap();
            assert_eq!(p.meta, Meta::default_named(policy.as_str()));
            assert_eq!(p.is_opaque(), opaque);
            let expected = usize::from(policy != DefaultPolicy::Deny);
            assert_eq!(p.authorizations.len(), expected, "{policy}");
            let names: Vec<&str> = p.routes.iter().map(|r| &*r.meta.name).collect();
            if opaque {
                assert_eq!(names, ["default"]);
            } else {
                assert_eq!(names, ["probe", "default"]);
            }
            let d = ServerPolicy::default_for(policy, &cluster(), opaque, false);
            assert!(!d.answered);
            assert_eq!(d.meta, p.meta);
        }
    }
    let p = ServerPolicy::default_for(DefaultPolicy::Audit, &cluster(), false, false);
    assert!(p.authorizations[0].meta.is_audit());
    let cu = ServerPolicy::default_for(
        DefaultPolicy::ClusterUnauthenticated,
        &cluster(),
        false,
        false,
    );
    assert_eq!(cu.authorizations[0].networks.len(), 5);
    assert_eq!(cu.authorizations[0].authn, Authn::Unauthenticated);
    let ca = ServerPolicy::default_for(
        DefaultPolicy::ClusterAuthenticated,
        &cluster(),
        false,
        false,
    );
    assert!(
        matches!(&ca.authorizations[0].authn, Authn::Identities { names, suffixes }
        if names.is_empty() && suffixes.len() == 1 && suffixes[0].contains("anyone.at.all"))
    );
}

#[test]
fn trusted_loopback_is_the_last_server_authorization() {
    let s = default_server(DefaultPolicy::Deny, &cluster(), false, &[]);
    let p = ServerPolicy::from_proto(s.clone(), true).unwrap();
    assert_eq!(p.authorizations.len(), 1);
    let localhost = &p.authorizations[0];
    assert_eq!(localhost.meta, Meta::default_named("localhost"));
    let nets: Vec<String> = localhost
        .networks
        .iter()
        .map(|n| n.net.to_string())
        .collect();
    assert_eq!(nets, ["127.0.0.1/32", "::1/128"]);
    assert!(ServerPolicy::from_proto(s, false)
        .unwrap()
        .authorizations
        .is_empty());
}

#[test]
fn metadata_and_labels_name_things_as_linkerd_does() {
    let p = ServerPolicy::from_proto(server(vec![all()], vec![]), false).unwrap();
    assert_eq!(
        p.meta,
        Meta {
            group: "access.smi-spec.io".into(),
            kind: "serviceaccount".into(),
            name: "web".into()
        }
    );
    // No routes: a catch-all, as Linkerd's proxy does for old controllers.
    assert_eq!(&*p.routes[0].meta.name, "default");
    assert!(p.routes[0].authorizations.is_empty());

    let from = |pairs: &[(&str, &str)]| {
        let labels: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Meta::from_labels(&labels, "policy.linkerd.io", "server")
    };
    assert_eq!(from(&[("name", "x")]).unwrap().kind.as_ref(), "server");
    assert_eq!(
        from(&[("name", "x")]).unwrap().group.as_ref(),
        "policy.linkerd.io"
    );
    assert_eq!(
        from(&[("name", "default:deny")]).unwrap(),
        Meta::default_named("deny")
    );
    assert_eq!(
        from(&[("name", "deny"), ("group", ""), ("kind", "default")]).unwrap(),
        Meta::default_named("deny")
    );
    assert_eq!(from(&[("kind", "server")]), Err(InvalidMeta::Name));

    // Authorizations without metadata fall back to their labels.
    let mut a = all();
    a.metadata = None;
    a.labels = weft_policy::labels("policy.linkerd.io", "authorizationpolicy", "ops");
    let p = ServerPolicy::from_proto(server(vec![a], vec![]), false).unwrap();
    assert_eq!(&*p.authorizations[0].meta.kind, "authorizationpolicy");
    let mut a = all();
    a.metadata = None;
    a.labels.clear();
    assert!(refused(server(vec![a], vec![])).contains("authorization #0: missing 'name' label"));
    let mut a = all();
    a.metadata = Some(Metadata { kind: None });
    assert!(refused(server(vec![a], vec![])).contains("missing metadata"));
}

#[test]
fn malformed_servers_are_refused_as_a_whole() {
    let mut s = server(vec![all()], vec![]);
    s.protocol = None;
    assert!(refused(s).contains("no protocol"));
    let mut s = server(vec![all()], vec![]);
    s.protocol = Some(api::ProxyProtocol { kind: None });
    assert!(refused(s).contains("no protocol"));
    let mut s = server(vec![all()], vec![]);
    s.labels.remove("name");
    assert!(refused(s).contains("server labels"));
    let mut s = server(vec![all()], vec![]);
    s.protocol = Some(api::ProxyProtocol {
        kind: Some(proxy_protocol::Kind::Detect(proxy_protocol::Detect {
            timeout: None,
            http_routes: Vec::new(),
            http_local_rate_limit: None,
        })),
    });
    assert!(refused(s).contains("no timeout"));

    let no_networks = api::Authz {
        networks: Vec::new(),
        ..all()
    };
    assert!(
        refused(server(vec![all(), no_networks], vec![])).contains("authorization #1: no networks")
    );
    let no_net = api::Authz {
        networks: vec![ApiNetwork {
            net: None,
            except: Vec::new(),
        }],
        ..all()
    };
    assert!(refused(server(vec![no_net], vec![])).contains("without an address"));
    let no_authn = api::Authz {
        authentication: None,
        ..all()
    };
    assert!(refused(server(vec![no_authn], vec![])).contains("missing authentication"));
    let no_permit = api::Authz {
        authentication: Some(ApiAuthn { permit: None }),
        ..all()
    };
    assert!(refused(server(vec![no_permit], vec![])).contains("missing authentication"));
    let no_clients = api::Authz {
        authentication: Some(ApiAuthn {
            permit: Some(authn::Permit::MeshTls(authn::PermitMeshTls {
                clients: None,
            })),
        }),
        ..all()
    };
    assert!(refused(server(vec![no_clients], vec![])).contains("missing authentication"));

    let rule = api::http_route::Rule {
        matches: Vec::new(),
        filters: Vec::new(),
    };
    let mut no_meta = route("r", vec![rule.clone()]);
    no_meta.metadata = None;
    assert!(refused(server(vec![], vec![no_meta])).contains("route #0: metadata: missing metadata"));
    assert!(refused(server(
        vec![],
        vec![route("r", vec![rule.clone()]), route("empty", vec![])]
    ))
    .contains("route #1: no rules"));
    let bad_regex = api::http_route::Rule {
        matches: vec![HttpRouteMatch {
            path: Some(api_route::PathMatch {
                kind: Some(api_route::path_match::Kind::Regex("/api/(".into())),
            }),
            ..Default::default()
        }],
        filters: Vec::new(),
    };
    let e = refused(server(vec![], vec![route("r", vec![bad_regex])]));
    assert!(e.contains("route #0") && e.contains("invalid regex"), "{e}");
    let mut bad_route_authz = route("r", vec![rule]);
    bad_route_authz.authorizations = vec![api::Authz {
        networks: Vec::new(),
        ..all()
    }];
    assert!(refused(server(vec![], vec![bad_route_authz]))
        .contains("route #0: authorization #0: no networks"));
}

#[test]
fn authentications_and_networks_convert() {
    let ids = api::Authz {
        authentication: Some(weft_policy::mesh_identities(
            vec!["a.shop.serviceaccount.identity.weft.cluster.local".into()],
            vec![vec!["ops".into(), "serviceaccount".into()]],
        )),
        networks: vec![ApiNetwork {
            net: Some("10.0.0.0/8".parse::<IpNet>().unwrap().into()),
            except: vec!["10.1.0.0/16".parse::<IpNet>().unwrap().into()],
        }],
        ..all()
    };
    let tls_any = api::Authz {
        authentication: Some(ApiAuthn {
            permit: Some(authn::Permit::MeshTls(authn::PermitMeshTls {
                clients: Some(authn::permit_mesh_tls::Clients::Unauthenticated(
                    authn::PermitUnauthenticated {},
                )),
            })),
        }),
        ..all()
    };
    let p = ServerPolicy::from_proto(server(vec![ids, tls_any], vec![]), false).unwrap();
    let a = &p.authorizations[0];
    assert_eq!(
        a.networks[..],
        [Network {
            net: "10.0.0.0/8".parse().unwrap(),
            except: Box::new(["10.1.0.0/16".parse().unwrap()]),
        }]
    );
    let Authn::Identities { names, suffixes } = &a.authn else {
        panic!("{:?}", a.authn)
    };
    assert!(names.contains("a.shop.serviceaccount.identity.weft.cluster.local"));
    assert!(suffixes[0].contains("x.ops.serviceaccount"));
    assert_eq!(p.authorizations[1].authn, Authn::MeshTls);
}

#[test]
fn suffixes_match_whole_labels() {
    let s = Suffix::new(&["shop".into(), "serviceaccount".into()]);
    assert!(s.contains("web.shop.serviceaccount"));
    assert!(s.contains("a.b.shop.serviceaccount"));
    assert!(!s.contains("shop.serviceaccount"), "a label must precede");
    assert!(!s.contains("xshop.serviceaccount"));
    assert!(!s.contains("web.shop.serviceaccount.evil"));
    let any = Suffix::new(&[]);
    assert!(any.contains("anything") && any.contains(""));
}

#[test]
fn protocols_convert() {
    let kinds = [
        (
            proxy_protocol::Kind::Opaque(proxy_protocol::Opaque {}),
            Protocol::Opaque,
        ),
        (
            proxy_protocol::Kind::Tls(proxy_protocol::Tls {}),
            Protocol::Tls,
        ),
        (
            proxy_protocol::Kind::Http1(proxy_protocol::Http1 {
                routes: Vec::new(),
                local_rate_limit: None,
            }),
            Protocol::Http1,
        ),
        (
            proxy_protocol::Kind::Http2(proxy_protocol::Http2 {
                routes: Vec::new(),
                local_rate_limit: None,
            }),
            Protocol::Http2,
        ),
    ];
    for (kind, want) in kinds {
        let mut s = server(vec![all()], vec![]);
        s.protocol = Some(api::ProxyProtocol { kind: Some(kind) });
        let p = ServerPolicy::from_proto(s, false).unwrap();
        assert_eq!(p.protocol, want);
        assert_eq!(p.routes.len(), 1, "catch-all");
    }
}

#[test]
fn grpc_routes_match_service_and_method_paths() {
    use crate::route::matching::RequestHead;
    let grpc = |service: &str, method: &str| api::GrpcRoute {
        metadata: Some(weft_policy::default_meta("g")),
        hosts: Vec::new(),
        authorizations: Vec::new(),
        rules: vec![api::grpc_route::Rule {
            matches: vec![GrpcRouteMatch {
                rpc: Some(GrpcRpcMatch {
                    service: service.into(),
                    method: method.into(),
                }),
                headers: Vec::new(),
            }],
            filters: Vec::new(),
        }],
    };
    let on = |route: api::GrpcRoute, path: &str| {
        let mut s = server(vec![all()], vec![]);
        s.protocol = Some(api::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Grpc(proxy_protocol::Grpc {
                routes: vec![route],
            })),
        });
        let p = ServerPolicy::from_proto(s, false).unwrap();
        assert_eq!(p.protocol, Protocol::Grpc);
        let (method, uri, headers) = (
            http::Method::POST,
            path.parse::<http::Uri>().unwrap(),
            http::HeaderMap::new(),
        );
        let head = RequestHead {
            method: &method,
            uri: &uri,
            headers: &headers,
        };
        p.routes[0].score(&head, None).is_some()
    };
    assert!(on(grpc("shop.Cart", "Add"), "/shop.Cart/Add"));
    assert!(!on(grpc("shop.Cart", "Add"), "/shop.Cart/Remove"));
    assert!(on(grpc("shop.Cart", ""), "/shop.Cart/Remove"));
    assert!(!on(grpc("shop.Cart", ""), "/shop.Carts/Remove"));
    assert!(on(grpc("", "Add"), "/any.Service/Add"));
    assert!(!on(grpc("", "Add"), "/any.Service/AddMore"));
    assert!(on(grpc("", ""), "/x/y"));
}
