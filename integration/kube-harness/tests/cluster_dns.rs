//! The cluster DNS responder against a real kube-apiserver, queried over
//! real UDP and TCP sockets with hickory-proto messages: what pods on the
//! test node see when they resolve `*.svc.cluster.local`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use weft_kube_harness::{ClusterDns, TestControlPlane};

const DOMAIN: &str = "cluster.local";
/// How long a query may take before the server counts as not answering.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Changes in the API must be answered within about a second.
const FRESH: Duration = Duration::from_secs(2);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "weft_kube_harness=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A query for `name`, optionally with an EDNS OPT record (1232 bytes).
fn query(name: &str, qtype: RecordType, edns: bool) -> Result<(Message, Vec<u8>)> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name)?, qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    let bytes = m.to_vec()?;
    Ok((m, bytes))
}

async fn udp_exchange(server: SocketAddr, bytes: &[u8]) -> Result<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(bytes, server).await?;
    let mut buf = vec![0u8; 65535];
    let (n, from) = tokio::time::timeout(ANSWER_TIMEOUT, socket.recv_from(&mut buf))
        .await
        .context("no UDP answer")??;
    ensure!(from == server, "answer from {from}, not {server}");
    Ok(Message::from_vec(&buf[..n])?)
}

async fn tcp_send(stream: &mut TcpStream, bytes: &[u8]) -> Result<()> {
    let len = u16::try_from(bytes.len())?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(bytes).await?;
    Ok(())
}

async fn tcp_recv(stream: &mut TcpStream) -> Result<Message> {
    let read = async {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(ANSWER_TIMEOUT, read)
        .await
        .context("no TCP answer")??;
    Ok(Message::from_vec(&buf)?)
}

async fn tcp_exchange(server: SocketAddr, bytes: &[u8]) -> Result<Message> {
    let mut stream = TcpStream::connect(server).await?;
    tcp_send(&mut stream, bytes).await?;
    tcp_recv(&mut stream).await
}

/// Asks over UDP and TCP, checks the two agree and that the answer
/// matches the question, and returns the UDP answer.
async fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Message> {
    let (q, bytes) = query(name, qtype, false)?;
    let udp = udp_exchange(server, &bytes).await?;
    let tcp = tcp_exchange(server, &bytes).await?;
    for (how, r) in [("UDP", &udp), ("TCP", &tcp)] {
        ensure!(r.metadata.id == q.metadata.id, "{how}: wrong id");
        ensure!(r.queries == q.queries, "{how}: question not echoed: {r:?}");
        ensure!(
            r.queries.first().map(|q| q.name().to_ascii()) == Some(name.to_owned()),
            "{how}: question's case not kept"
        );
        ensure!(r.metadata.recursion_desired, "{how}: RD not copied");
        for record in &r.answers {
            ensure!(record.ttl == 5, "{how}: TTL {} for {name}", record.ttl);
            ensure!(
                record.name.eq_case(q.queries[0].name()),
                "{how}: answer named {} for {name}",
                record.name
            );
        }
    }
    ensure!(
        udp.metadata.response_code == tcp.metadata.response_code && udp.answers == tcp.answers,
        "UDP and TCP disagree for {name}: {udp:?} vs {tcp:?}"
    );
    Ok(udp)
}

fn ips(m: &Message) -> Vec<IpAddr> {
    let mut ips = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect::<Vec<_>>();
    ips.sort();
    ips
}

fn parse_ips(ips: &[&str]) -> Vec<IpAddr> {
    let mut v = ips
        .iter()
        .map(|s| s.parse().expect("test IP"))
        .collect::<Vec<_>>();
    v.sort();
    v
}

async fn expect_a(server: SocketAddr, name: &str, want: &[&str]) -> Result<()> {
    let r = ask(server, name, RecordType::A).await?;
    ensure!(
        r.metadata.response_code == ResponseCode::NoError,
        "{name}: {:?}",
        r.metadata.response_code
    );
    ensure!(r.metadata.authoritative, "{name}: not authoritative");
    ensure!(
        ips(&r) == parse_ips(want),
        "{name}: got {:?}, want {want:?}",
        ips(&r)
    );
    Ok(())
}

/// NOERROR with no answers and the zone's SOA (NODATA, RFC 2308).
async fn expect_nodata(server: SocketAddr, name: &str, qtype: RecordType) -> Result<()> {
    let r = ask(server, name, qtype).await?;
    ensure!(
        r.metadata.response_code == ResponseCode::NoError && r.answers.is_empty(),
        "{name} {qtype}: want NODATA, got {:?} {:?}",
        r.metadata.response_code,
        r.answers
    );
    ensure!(r.metadata.authoritative, "{name}: not authoritative");
    ensure!(
        matches!(r.authorities.first().map(|a| &a.data), Some(RData::SOA(_))),
        "{name}: NODATA without SOA"
    );
    Ok(())
}

async fn expect_nxdomain(server: SocketAddr, name: &str) -> Result<()> {
    let started = Instant::now();
    let r = ask(server, name, RecordType::A).await?;
    ensure!(
        r.metadata.response_code == ResponseCode::NXDomain && r.answers.is_empty(),
        "{name}: want NXDOMAIN, got {:?} {:?}",
        r.metadata.response_code,
        r.answers
    );
    ensure!(
        r.metadata.authoritative,
        "{name}: NXDOMAIN not authoritative"
    );
    ensure!(
        started.elapsed() < Duration::from_millis(500),
        "{name}: NXDOMAIN took {:?}",
        started.elapsed()
    );
    Ok(())
}

async fn expect_refused(server: SocketAddr, name: &str) -> Result<()> {
    let r = ask(server, name, RecordType::A).await?;
    ensure!(
        r.metadata.response_code == ResponseCode::Refused && r.answers.is_empty(),
        "{name}: want REFUSED, got {:?}",
        r.metadata.response_code
    );
    Ok(())
}

/// Polls `check` until it passes (bounded by [`FRESH`]); returns how long
/// that took.
async fn within_fresh<F, Fut>(what: &str, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(()) => {
                let took = started.elapsed();
                eprintln!("cluster DNS: {what} answered after {took:?}");
                return Ok(took);
            }
            Err(e) if started.elapsed() > FRESH => {
                bail!("{what} not answered within {FRESH:?}: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn service(name: &str, spec: serde_json::Value) -> Result<Service> {
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "demo" },
        "spec": spec,
    }))?)
}

fn endpoints(name: &str, ready: &[(&str, Option<&str>)], not_ready: &[&str]) -> Result<Endpoints> {
    let addresses = ready
        .iter()
        .map(|(ip, host)| match host {
            Some(h) => json!({ "ip": ip, "hostname": h }),
            None => json!({ "ip": ip }),
        })
        .collect::<Vec<_>>();
    let not_ready = not_ready
        .iter()
        .map(|ip| json!({ "ip": ip }))
        .collect::<Vec<_>>();
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "demo" },
        "subsets": [{
            "addresses": addresses,
            "notReadyAddresses": not_ready,
            "ports": [{ "name": "db", "port": 5432, "protocol": "TCP" }],
        }],
    }))?)
}

fn cluster_ip(svc: &Service) -> Result<String> {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .context("no ClusterIP assigned")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_answers_from_services() -> Result<()> {
    init_tracing();
    let plane = TestControlPlane::start()
        .await
        .context("test control plane failed to start")?;
    let client = plane.client();
    plane.create_namespace("demo").await?;
    let services: Api<Service> = Api::namespaced(client.clone(), "demo");
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "demo");
    let pp = PostParams::default();
    let port = json!([{ "name": "http", "port": 80, "protocol": "TCP" }]);

    // Objects that exist before the server starts: its first list must
    // already answer them.
    let web = services
        .create(&pp, &service("web", json!({ "ports": port }))?)
        .await?;
    let web_ip = cluster_ip(&web)?;
    services
        .create(
            &pp,
            &service("db", json!({ "clusterIP": "None", "ports": port }))?,
        )
        .await?;
    eps.create(
        &pp,
        &endpoints(
            "db",
            &[("10.1.0.1", Some("db-0")), ("10.1.0.2", None)],
            &["10.1.0.9"],
        )?,
    )
    .await?;
    services
        .create(
            &pp,
            &service(
                "ext",
                json!({ "type": "ExternalName", "externalName": "backend.example.org" }),
            )?,
        )
        .await?;
    let many_ips = (1..=60).map(|i| format!("10.2.0.{i}")).collect::<Vec<_>>();
    services
        .create(
            &pp,
            &service("many", json!({ "clusterIP": "None", "ports": port }))?,
        )
        .await?;
    let many = many_ips
        .iter()
        .map(|ip| (ip.as_str(), None))
        .collect::<Vec<_>>();
    eps.create(&pp, &endpoints("many", &many, &[])?).await?;

    let dns = ClusterDns::start(client.clone(), "127.0.0.1:0".parse()?, DOMAIN).await?;
    let server = dns.local_addr();
    ensure!(server.port() != 0, "local_addr kept port 0");
    ensure!(server.ip() == IpAddr::from([127, 0, 0, 1]));

    // A second server on the same address fails, naming it.
    let clash = ClusterDns::start(client.clone(), server, DOMAIN).await;
    match clash {
        Ok(_) => bail!("a second server bound {server}"),
        Err(e) => ensure!(
            e.to_string().contains(&server.to_string()),
            "bind error does not name {server}: {e}"
        ),
    }

    // Services with a ClusterIP, headless ones, hostnames, pods.
    expect_a(server, "web.demo.svc.cluster.local.", &[&web_ip]).await?;
    expect_a(server, "WEB.Demo.SVC.cluster.LOCAL.", &[&web_ip]).await?;
    expect_nodata(server, "web.demo.svc.cluster.local.", RecordType::AAAA).await?;
    expect_nodata(server, "web.demo.svc.cluster.local.", RecordType::MX).await?;
    expect_a(
        server,
        "db.demo.svc.cluster.local.",
        &["10.1.0.1", "10.1.0.2"],
    )
    .await?;
    expect_nodata(server, "db.demo.svc.cluster.local.", RecordType::AAAA).await?;
    expect_a(server, "db-0.db.demo.svc.cluster.local.", &["10.1.0.1"]).await?;
    expect_a(
        server,
        "10-244-0-7.demo.pod.cluster.local.",
        &["10.244.0.7"],
    )
    .await?;
    let ext = ask(server, "ext.demo.svc.cluster.local.", RecordType::A).await?;
    ensure!(
        matches!(ext.answers.first().map(|r| &r.data),
            Some(RData::CNAME(c)) if c.0.to_ascii() == "backend.example.org."),
        "ExternalName: {:?}",
        ext.answers
    );
    expect_nodata(server, "demo.svc.cluster.local.", RecordType::A).await?;

    // Unknown names, and what `search demo.svc.cluster.local svc.cluster.local
    // cluster.local` with ndots:5 makes resolvers try first.
    expect_nxdomain(server, "nope.demo.svc.cluster.local.").await?;
    expect_nxdomain(server, "web.other.svc.cluster.local.").await?;
    expect_nxdomain(server, "db-9.db.demo.svc.cluster.local.").await?;
    expect_nxdomain(server, "web.cluster.local.").await?;
    for suffix in [
        "demo.svc.cluster.local.",
        "svc.cluster.local.",
        "cluster.local.",
    ] {
        expect_nxdomain(server, &format!("web.demo.svc.cluster.local.{suffix}")).await?;
    }
    // Outside the domain there is no upstream.
    expect_refused(server, "example.com.").await?;
    expect_refused(server, "cluster.local.example.com.").await?;
    expect_refused(server, "local.").await?;

    // Too big for classic UDP: truncated, then complete over TCP or with EDNS.
    let (_, plain) = query("many.demo.svc.cluster.local.", RecordType::A, false)?;
    let truncated = udp_exchange(server, &plain).await?;
    ensure!(
        truncated.metadata.truncation && truncated.answers.is_empty(),
        "no TC for a 60-address answer over UDP: {} answers",
        truncated.answers.len()
    );
    let full = tcp_exchange(server, &plain).await?;
    ensure!(!full.metadata.truncation && full.answers.len() == 60);
    let (_, with_edns) = query("many.demo.svc.cluster.local.", RecordType::A, true)?;
    let edns = udp_exchange(server, &with_edns).await?;
    ensure!(
        !edns.metadata.truncation && edns.answers.len() == 60 && edns.edns.is_some(),
        "EDNS answer: TC={} answers={} edns={:?}",
        edns.metadata.truncation,
        edns.answers.len(),
        edns.edns
    );

    // Two queries pipelined on one TCP connection.
    let mut stream = TcpStream::connect(server).await?;
    let (q1, b1) = query("web.demo.svc.cluster.local.", RecordType::A, false)?;
    let (q2, b2) = query("db.demo.svc.cluster.local.", RecordType::A, false)?;
    tcp_send(&mut stream, &b1).await?;
    tcp_send(&mut stream, &b2).await?;
    let (r1, r2) = (tcp_recv(&mut stream).await?, tcp_recv(&mut stream).await?);
    ensure!(r1.metadata.id == q1.metadata.id && r2.metadata.id == q2.metadata.id);
    ensure!(ips(&r2) == parse_ips(&["10.1.0.1", "10.1.0.2"]));
    drop(stream);

    // Malformed input: no UDP answer, TCP connection closed, server fine.
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    for garbage in [
        &b"\x01\x02\x03"[..],
        &[0xff; 40][..],
        &plain[..plain.len() - 4],
    ] {
        socket.send_to(garbage, server).await?;
    }
    let mut buf = [0u8; 512];
    let answered =
        tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await;
    ensure!(answered.is_err(), "answered a malformed UDP packet");
    let mut stream = TcpStream::connect(server).await?;
    tcp_send(&mut stream, &[0xff; 7]).await?;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(ANSWER_TIMEOUT, stream.read_to_end(&mut rest)).await;
    ensure!(
        matches!(closed, Ok(Ok(0))),
        "TCP connection not closed after a malformed query: {closed:?}"
    );
    expect_a(server, "web.demo.svc.cluster.local.", &[&web_ip]).await?;

    // At most 64 TCP connections are served at once; the next waits for one
    // to end. Let the connections above finish first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(server).await?);
    }
    let mut waiting = TcpStream::connect(server).await?;
    tcp_send(&mut waiting, &b1).await?;
    let mut len = [0u8; 2];
    let early =
        tokio::time::timeout(Duration::from_millis(500), waiting.read_exact(&mut len)).await;
    ensure!(
        early.is_err(),
        "65th TCP connection served while 64 were open"
    );
    drop(idle.pop());
    let served = tcp_recv(&mut waiting).await?;
    ensure!(served.metadata.id == q1.metadata.id);
    drop(idle);
    drop(waiting);

    // An idle TCP connection is closed after ~10 s; watched until the end.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle_since = Instant::now();
    let mut idle_conn = TcpStream::connect(server).await?;

    // Changes in the API are answered promptly.
    let mut took = Vec::new();
    services
        .create(&pp, &service("web2", json!({ "ports": port }))?)
        .await?;
    let web2_ip = cluster_ip(&services.get("web2").await?)?;
    let web2_want = [web2_ip.as_str()];
    took.push(
        within_fresh("new Service", || {
            expect_a(server, "web2.demo.svc.cluster.local.", &web2_want)
        })
        .await?,
    );
    let patch = PatchParams::default();
    eps.patch(
        "db",
        &patch,
        &Patch::Merge(json!({ "subsets": [{
            "addresses": [{ "ip": "10.1.0.2" }, { "ip": "10.1.0.3" }],
            "ports": [{ "name": "db", "port": 5432, "protocol": "TCP" }],
        }] })),
    )
    .await?;
    took.push(
        within_fresh("changed Endpoints", || {
            expect_a(
                server,
                "db.demo.svc.cluster.local.",
                &["10.1.0.2", "10.1.0.3"],
            )
        })
        .await?,
    );
    services
        .patch(
            "db",
            &patch,
            &Patch::Merge(json!({ "spec": { "publishNotReadyAddresses": true } })),
        )
        .await?;
    eps.patch(
        "db",
        &patch,
        &Patch::Merge(json!({ "subsets": [{
            "addresses": [{ "ip": "10.1.0.2" }],
            "notReadyAddresses": [{ "ip": "10.1.0.4" }],
            "ports": [{ "name": "db", "port": 5432, "protocol": "TCP" }],
        }] })),
    )
    .await?;
    took.push(
        within_fresh("Service publishing not-ready addresses", || {
            expect_a(
                server,
                "db.demo.svc.cluster.local.",
                &["10.1.0.2", "10.1.0.4"],
            )
        })
        .await?,
    );
    services
        .patch(
            "ext",
            &patch,
            &Patch::Merge(json!({ "spec": { "externalName": "other.example.org" } })),
        )
        .await?;
    took.push(
        within_fresh("changed ExternalName", || async {
            let r = ask(server, "ext.demo.svc.cluster.local.", RecordType::A).await?;
            ensure!(matches!(r.answers.first().map(|r| &r.data),
                Some(RData::CNAME(c)) if c.0.to_ascii() == "other.example.org."));
            Ok(())
        })
        .await?,
    );
    services.delete("web", &DeleteParams::default()).await?;
    took.push(
        within_fresh("deleted Service", || {
            expect_nxdomain(server, "web.demo.svc.cluster.local.")
        })
        .await?,
    );
    let slowest = took.iter().max().copied().unwrap_or_default();
    ensure!(
        slowest < Duration::from_millis(1500),
        "an API change took {slowest:?} to be answered"
    );

    // The idle connection: closed by the server after its idle timeout.
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(15), idle_conn.read_to_end(&mut rest)).await;
    let idle_for = idle_since.elapsed();
    ensure!(
        matches!(closed, Ok(Ok(0))),
        "idle TCP connection not closed: {closed:?}"
    );
    ensure!(
        idle_for >= Duration::from_secs(9) && idle_for <= Duration::from_secs(13),
        "idle TCP connection closed after {idle_for:?}, want ~10 s"
    );

    // Dropping it stops serving.
    drop(dns);
    let stopped = within_fresh("stopped server refusing TCP", || async {
        match TcpStream::connect(server).await {
            Ok(_) => bail!("still accepting"),
            Err(_) => Ok(()),
        }
    })
    .await;
    stopped?;
    ensure!(
        udp_exchange(server, &plain).await.is_err(),
        "stopped server still answers UDP"
    );
    Ok(())
}
