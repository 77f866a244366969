//! Installs `install/crds.yaml` into a real kube-apiserver (the project's
//! test control plane) and round-trips one object of every kind and version
//! through `kube::Api`. Fails, never skips, when the control-plane binaries
//! are missing: run `integration/k8s/install.sh` first.
#![allow(clippy::unwrap_used)]

use anyhow::{Context, Result};
use kube::api::{Api, PostParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use weft_kube_harness::{StartOptions, TestControlPlane};
use weft_smi_crds::{access, parse_documents, profile, specs, split, AnyObject, Split};

const NS: &str = "shop";

/// Creates `obj` under a fresh name, reads it back and checks the spec survived.
async fn round_trip<K>(client: &kube::Client, mut obj: K, name: &str) -> Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), NS);
    let meta = obj.meta_mut();
    meta.name = Some(name.to_string());
    meta.namespace = Some(NS.to_string());
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating {} {name}", K::kind(&())))?;
    let fetched = api.get(name).await?;
    let spec = |o: &K| {
        let mut v = serde_json::to_value(o).unwrap();
        v.as_object_mut().unwrap().remove("metadata");
        v
    };
    assert_eq!(
        spec(&created),
        spec(&obj),
        "{} {name} changed on create",
        K::kind(&())
    );
    assert_eq!(
        spec(&fetched),
        spec(&obj),
        "{} {name} changed on read",
        K::kind(&())
    );
    Ok(fetched)
}

fn objects(yaml: &str) -> Vec<AnyObject> {
    parse_documents(yaml).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_install_and_every_kind_round_trips() -> Result<()> {
    let cp = TestControlPlane::start_with(StartOptions {
        controller_manager: false,
        ..StartOptions::default()
    })
    .await
    .context("test control plane failed to start")?;
    let yaml = weft_smi_crds::crds_yaml()?;
    cp.apply_yaml(&yaml)
        .await
        .context("applying install/crds.yaml")?;
    for crd in weft_smi_crds::crds()? {
        cp.wait_for_crd_established(crd.metadata.name.as_deref().unwrap())
            .await?;
    }
    cp.create_namespace(NS).await?;
    let client = cp.client();

    // ServiceProfile, storage version, with nested conditions.
    let AnyObject::ServiceProfile(sp) = objects(include_str!("../testdata/profile.yaml")).remove(0)
    else {
        panic!("not a profile")
    };
    let back = round_trip(&client, *sp.clone(), "books").await?;
    back.validate()?;
    assert_eq!(back.spec, sp.spec);
    // The older served version.
    let v1: profile::v1alpha1::ServiceProfile = profile::v1alpha1::ServiceProfile::new(
        "",
        profile::v1alpha1::ServiceProfileSpec {
            routes: sp.spec.routes.clone(),
            ..Default::default()
        },
    );
    round_trip(&client, v1, "books-v1").await?;

    // Every TrafficSplit version, then read back through v1alpha4: the API
    // server does not convert, so the quantity weights arrive as strings and
    // must still normalize to the same split.
    let mut normalized = Vec::new();
    for (i, obj) in objects(include_str!("../testdata/splits.yaml"))
        .into_iter()
        .enumerate()
    {
        let name = format!("split-{i}");
        match obj {
            AnyObject::TrafficSplit(ts) => {
                let want = ts.to_split()?;
                match *ts {
                    split::AnyTrafficSplit::V1alpha1(t) => {
                        round_trip(&client, t, &name).await.map(drop)?
                    }
                    split::AnyTrafficSplit::V1alpha2(t) => {
                        round_trip(&client, t, &name).await.map(drop)?
                    }
                    split::AnyTrafficSplit::V1alpha3(t) => {
                        round_trip(&client, t, &name).await.map(drop)?
                    }
                    split::AnyTrafficSplit::V1alpha4(t) => {
                        round_trip(&client, t, &name).await.map(drop)?
                    }
                }
                let api: Api<split::v1alpha4::TrafficSplit> = Api::namespaced(client.clone(), NS);
                let as_v4 = Split::try_from(api.get(&name).await?)?;
                assert_eq!(as_v4.backends, want.backends, "{name} read as v1alpha4");
                normalized.push(as_v4);
            }
            AnyObject::HttpRouteGroup(g) => {
                round_trip(&client, *g, &name).await?.validate()?;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        normalized[0].backends, normalized[1].backends,
        "900m/100m == 90/10"
    );
    let old_group = specs::v1alpha3::HTTPRouteGroup::new(
        "",
        specs::v1alpha3::HTTPRouteGroupSpec {
            matches: vec![specs::HttpMatch {
                name: "all".into(),
                methods: vec!["*".into()],
                ..Default::default()
            }],
        },
    );
    round_trip(&client, old_group, "routes-v1alpha3").await?;

    // TrafficTarget and TCPRoute.
    for (i, obj) in objects(include_str!("../testdata/mixed.yaml"))
        .into_iter()
        .enumerate()
    {
        let name = format!("mixed-{i}");
        match obj {
            AnyObject::TrafficTarget(t) => {
                let back: access::TrafficTarget = round_trip(&client, *t, &name).await?;
                back.validate()?;
            }
            AnyObject::TcpRoute(t) => {
                round_trip(&client, *t, &name).await?;
            }
            _ => {}
        }
    }

    // Both TrafficTarget versions; a v1alpha2 destination port survives
    // being read as the storage version (no conversion webhook: the API
    // server only changes apiVersion, and the v1alpha3 schema keeps it).
    let access = include_str!("../testdata/access.yaml");
    let first = access.split("\n---\n").next().unwrap();
    let v2: access::v1alpha2::TrafficTarget = serde_yaml::from_str(first)?;
    round_trip(&client, v2, "tt-v1alpha2").await?;
    let api: Api<access::TrafficTarget> = Api::namespaced(client.clone(), NS);
    let as_v3 = api.get("tt-v1alpha2").await?;
    as_v3.validate()?;
    assert_eq!(as_v3.spec.destination.port, Some(8080));
    for (i, obj) in objects(access).into_iter().enumerate() {
        let name = format!("access-{i}");
        match obj {
            AnyObject::TrafficTarget(t) => round_trip(&client, *t, &name).await?.validate()?,
            AnyObject::TcpRoute(t) => round_trip(&client, *t, &name).await?.validate()?,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The schema refuses port 0.
    let mut bad = objects(access).remove(2);
    let AnyObject::TcpRoute(r) = &mut bad else {
        panic!("not a TCPRoute")
    };
    r.spec.matches.as_mut().unwrap().ports = vec![0];
    r.metadata.name = Some("port-zero".into());
    r.metadata.namespace = Some(NS.into());
    let routes: Api<specs::v1alpha4::TCPRoute> = Api::namespaced(client.clone(), NS);
    let err = routes
        .create(&PostParams::default(), r)
        .await
        .expect_err("port 0 accepted");
    assert!(err.to_string().contains("ports"), "{err}");
    Ok(())
}
