//! Cluster DNS for the pods of the test node, answered from the API.
//!
//! Debian has no CoreDNS, and pods need `*.svc.cluster.local` names, so the
//! harness answers those names itself, like the parts of CoreDNS's
//! `kubernetes` plugin that pods use:
//!
//! - `<svc>.<ns>.svc.<domain>`: the Service's ClusterIPs; for a headless
//!   Service the ready addresses of its Endpoints; for an ExternalName
//!   Service a CNAME. A name that exists but has no data of the asked type
//!   is NODATA (NOERROR, no answers), never NXDOMAIN, so resolvers keep it.
//! - `<hostname>.<svc>.<ns>.svc.<domain>`: an Endpoints address with that
//!   hostname (StatefulSet pods behind a headless Service).
//! - `<a-b-c-d>.<ns>.pod.<domain>`: `a.b.c.d`.
//! - Every other name under the domain is an authoritative NXDOMAIN (fast,
//!   for the search-path expansions `ndots:5` makes resolvers try first);
//!   names outside it are REFUSED: there is no upstream, so test traffic
//!   never leaves the machine.
//!
//! Services and Endpoints come from reflector stores fed by watches, so a
//! change is answered within milliseconds of the API accepting it. SRV
//! records and reverse (PTR) lookups are not served.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, Result};

/// TTL of every answer: short, so a changed Service is seen soon even by a
/// caching resolver (CoreDNS's default is 5 s too).
const TTL: u32 = 5;
/// Largest UDP response without EDNS (RFC 1035).
const CLASSIC_UDP_PAYLOAD: usize = 512;
/// The EDNS payload size this server advertises and honours at most (the
/// DNS flag day 2020 value: no IP fragmentation).
const EDNS_UDP_PAYLOAD: u16 = 1232;
/// Receive buffer for UDP queries (a query is far smaller).
const UDP_RECV_BUFFER: usize = 4096;
/// A TCP connection that sends no complete query for this long is closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Writing one TCP response may take at most this long.
const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many TCP connections are served at once; more wait in the
/// listen backlog.
const MAX_TCP_CONNECTIONS: usize = 64;
/// How long [`ClusterDns::start`] waits for the first list of Services and
/// Endpoints.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to find a port free for both UDP and TCP when binding port 0.
const BIND_ATTEMPTS: usize = 5;
/// Pause after a socket error, so a persistent one cannot spin a core.
const ERROR_PAUSE: Duration = Duration::from_millis(20);

/// Answers cluster DNS for pods of the test node from the API's Services,
/// because the harness has no CoreDNS. Serves UDP and TCP on one address.
/// Dropping it stops the server and its watches.
pub struct ClusterDns {
    local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ClusterDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterDns")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl ClusterDns {
    /// Serves UDP and TCP DNS on `bind` (e.g. `10.213.0.1:53`, or port 0 for
    /// a free port) for names under `domain` (e.g. `cluster.local`), once
    /// the Services and Endpoints of all namespaces have been listed, so the
    /// first answer is already right.
    pub async fn start(client: Client, bind: SocketAddr, domain: &str) -> Result<Self> {
        let zone_domain = Domain::parse(domain)?;
        let (udp, tcp) = bind_both(bind).await?;
        let local_addr = udp
            .local_addr()
            .map_err(|e| Error::Dns(format!("local address of UDP {bind}: {e}")))?;

        let last_error = Arc::new(Mutex::new(None::<String>));
        let (services, services_writer) = reflector::store::<Service>();
        let (endpoints, endpoints_writer) = reflector::store::<Endpoints>();
        let mut dns = Self {
            local_addr,
            tasks: vec![
                tokio::spawn(reflect(
                    "Services",
                    Api::<Service>::all(client.clone()),
                    services_writer,
                    last_error.clone(),
                )),
                tokio::spawn(reflect(
                    "Endpoints",
                    Api::<Endpoints>::all(client),
                    endpoints_writer,
                    last_error.clone(),
                )),
            ],
        };
        let synced = tokio::time::timeout(SYNC_TIMEOUT, async {
            services.wait_until_ready().await.is_ok() && endpoints.wait_until_ready().await.is_ok()
        })
        .await;
        if synced != Ok(true) {
            let last = last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_else(|| "no error reported".to_owned());
            // Dropping `dns` aborts the watches.
            return Err(Error::Dns(format!(
                "could not list Services and Endpoints within {SYNC_TIMEOUT:?} (last error: {last})"
            )));
        }

        let zone = Arc::new(Zone::new(zone_domain, services, endpoints)?);
        dns.tasks.push(tokio::spawn(serve_udp(zone.clone(), udp)));
        dns.tasks.push(tokio::spawn(serve_tcp(zone, tcp)));
        tracing::info!(addr = %local_addr, domain, "cluster DNS serving");
        Ok(dns)
    }

    /// The address it serves on (UDP and TCP), with the real port when it
    /// was started on port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for ClusterDns {
    fn drop(&mut self) {
        // Aborting the TCP acceptor drops its JoinSet, which aborts the
        // connections it serves.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds UDP, then TCP on the same port. For port 0 the UDP port is free
/// for UDP only, so a TCP clash is retried on another port.
async fn bind_both(bind: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(bind)
            .await
            .map_err(|e| Error::Dns(format!("cannot bind UDP {bind}: {e}")))?;
        let addr = udp
            .local_addr()
            .map_err(|e| Error::Dns(format!("local address of UDP {bind}: {e}")))?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if bind.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < BIND_ATTEMPTS =>
            {
                tracing::debug!(%addr, "TCP port taken, trying another port");
            }
            Err(e) => return Err(Error::Dns(format!("cannot bind TCP {addr}: {e}"))),
        }
    }
}

/// Keeps a store in step with the API; the watcher re-lists and retries
/// with backoff on its own, so this only runs until aborted.
async fn reflect<K>(
    what: &'static str,
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    last_error: Arc<Mutex<Option<String>>>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    stream
        .for_each(|event| {
            if let Err(e) = event {
                tracing::warn!("cluster DNS: watching {what}: {e}");
                if let Ok(mut last) = last_error.lock() {
                    *last = Some(format!("watching {what}: {e}"));
                }
            }
            futures::future::ready(())
        })
        .await;
}

async fn serve_udp(zone: Arc<Zone>, socket: UdpSocket) {
    let mut buf = vec![0u8; UDP_RECV_BUFFER];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("cluster DNS: UDP receive: {e}");
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(packet) = buf.get(..n) else {
            continue;
        };
        match zone.handle(packet, Transport::Udp) {
            Some(response) => {
                if let Err(e) = socket.send_to(&response, peer).await {
                    tracing::debug!(%peer, "cluster DNS: UDP send: {e}");
                }
            }
            None => tracing::debug!(%peer, len = n, "cluster DNS: dropped a malformed UDP query"),
        }
    }
}

async fn serve_tcp(zone: Arc<Zone>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        // Wait for a free slot before accepting: extra clients wait in the
        // backlog instead of growing the set.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("cluster DNS: TCP accept: {e}");
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        let zone = zone.clone();
        connections.spawn(async move {
            let _slot = slot;
            if let Err(why) = serve_tcp_connection(&zone, stream).await {
                tracing::debug!(%peer, "cluster DNS: closed TCP connection: {why}");
            }
        });
    }
}

/// Serves length-prefixed queries on one connection until the client
/// closes it, idles, or sends something malformed.
async fn serve_tcp_connection(zone: &Zone, mut stream: TcpStream) -> Result<(), String> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut len)).await {
            Err(_) => return Err("idle".to_owned()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(_)) => {}
        }
        let len = usize::from(u16::from_be_bytes(len));
        let mut query = vec![0u8; len];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut query)).await {
            Err(_) => return Err("idle in the middle of a query".to_owned()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(_)) => {}
        }
        let response = zone
            .handle(&query, Transport::Tcp)
            .ok_or_else(|| "malformed query".to_owned())?;
        let len =
            u16::try_from(response.len()).map_err(|_| "response over 65535 bytes".to_owned())?;
        let mut framed = Vec::with_capacity(response.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&response);
        match tokio::time::timeout(TCP_WRITE_TIMEOUT, stream.write_all(&framed)).await {
            Err(_) => return Err("write timed out".to_owned()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(())) => {}
        }
    }
}

/// How a query arrived, which bounds the response size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// The cluster domain, as lowercase labels and as a name for records.
struct Domain {
    labels: Vec<String>,
    name: Name,
}

impl Domain {
    fn parse(domain: &str) -> Result<Self> {
        let invalid = |why: String| Error::Dns(format!("invalid cluster domain {domain:?}: {why}"));
        let trimmed = domain.trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(invalid("empty".to_owned()));
        }
        let mut name = Name::from_ascii(trimmed).map_err(|e| invalid(e.to_string()))?;
        name.set_fqdn(true);
        let labels = trimmed
            .split('.')
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>();
        if labels.iter().any(String::is_empty) {
            return Err(invalid("empty label".to_owned()));
        }
        Ok(Self { labels, name })
    }
}

/// What a name resolves to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Not ours to answer.
    Refused,
    /// No such name in the zone.
    NxDomain,
    /// The name exists; these records of the asked type (none: NODATA).
    Data(Vec<RData>),
}

/// The zone: the domain plus the stores it is answered from.
struct Zone {
    domain: Domain,
    soa: Record,
    services: Store<Service>,
    endpoints: Store<Endpoints>,
}

impl Zone {
    fn new(domain: Domain, services: Store<Service>, endpoints: Store<Endpoints>) -> Result<Self> {
        let sub = |label: &str| {
            Name::from_ascii(label)
                .and_then(|n| n.append_domain(&domain.name))
                .map_err(|e| Error::Dns(format!("SOA name {label}.{}: {e}", domain.name)))
        };
        // Negative answers carry the SOA, whose minimum bounds how long a
        // resolver caches them (RFC 2308).
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| {
                u32::try_from(d.as_secs() % u64::from(u32::MAX)).unwrap_or(1)
            });
        let soa = SOA::new(
            sub("ns.dns")?,
            sub("hostmaster")?,
            serial,
            7200,
            1800,
            86400,
            TTL,
        );
        let soa = Record::from_rdata(domain.name.clone(), TTL, RData::SOA(soa));
        Ok(Self {
            domain,
            soa,
            services,
            endpoints,
        })
    }

    /// The response to one query packet, or `None` to drop it (malformed,
    /// or not a query at all).
    fn handle(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = Message::from_vec(packet).ok()?;
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata = Metadata::response_from_request(&request.metadata);
        let udp_limit = match &request.edns {
            Some(edns) => {
                let mut ours = Edns::new();
                ours.set_max_payload(EDNS_UDP_PAYLOAD);
                ours.set_version(0);
                response.set_edns(ours);
                usize::from(edns.max_payload().clamp(512, EDNS_UDP_PAYLOAD))
            }
            None => CLASSIC_UDP_PAYLOAD,
        };
        response.add_queries(request.queries.iter().cloned());

        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
        } else if request.queries.len() != 1 {
            response.metadata.response_code = ResponseCode::FormErr;
        } else if let Some(query) = request.queries.first() {
            let outcome = if query.query_class() == DNSClass::IN {
                self.resolve(query.name(), query.query_type())
            } else {
                Outcome::Refused
            };
            match outcome {
                Outcome::Refused => response.metadata.response_code = ResponseCode::Refused,
                Outcome::NxDomain => {
                    response.metadata.authoritative = true;
                    response.metadata.response_code = ResponseCode::NXDomain;
                    response.add_authority(self.soa.clone());
                }
                Outcome::Data(data) if data.is_empty() => {
                    response.metadata.authoritative = true;
                    response.add_authority(self.soa.clone());
                }
                Outcome::Data(data) => {
                    response.metadata.authoritative = true;
                    response.add_answers(
                        data.into_iter()
                            .map(|d| Record::from_rdata(query.name().clone(), TTL, d)),
                    );
                }
            }
        }

        let encoded = match response.to_vec() {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!("cluster DNS: cannot encode a response: {e}");
                return servfail(&request);
            }
        };
        if transport == Transport::Udp && encoded.len() > udp_limit {
            // Too big for this client over UDP: an empty truncated answer
            // makes it retry over TCP.
            let mut truncated = response.truncate();
            truncated.metadata.truncation = true;
            return truncated.to_vec().ok();
        }
        Some(encoded)
    }

    /// Resolves a name (any case) for one record type.
    fn resolve(&self, name: &Name, qtype: RecordType) -> Outcome {
        let labels = name
            .iter()
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect::<Vec<_>>();
        let Some(relative_len) = labels.len().checked_sub(self.domain.labels.len()) else {
            return Outcome::Refused;
        };
        let (relative, suffix) = labels.split_at(relative_len);
        if suffix != self.domain.labels.as_slice() {
            return Outcome::Refused;
        }
        match relative {
            [] => match qtype {
                RecordType::SOA | RecordType::ANY => Outcome::Data(vec![self.soa.data.clone()]),
                _ => Outcome::Data(Vec::new()),
            },
            [kind] if kind == "svc" || kind == "pod" => Outcome::Data(Vec::new()),
            [ns, kind] if kind == "svc" => {
                let exists = self
                    .services
                    .find(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
                    .is_some();
                if exists {
                    Outcome::Data(Vec::new())
                } else {
                    Outcome::NxDomain
                }
            }
            [_, kind] if kind == "pod" => Outcome::Data(Vec::new()),
            [svc, ns, kind] if kind == "svc" => self.service(ns, svc, qtype),
            [host, svc, ns, kind] if kind == "svc" => self.endpoint_host(ns, svc, host, qtype),
            [ip, _, kind] if kind == "pod" => match pod_ip(ip) {
                Some(ip) => Outcome::Data(address_records([ip], qtype)),
                None => Outcome::NxDomain,
            },
            _ => Outcome::NxDomain,
        }
    }

    fn service(&self, ns: &str, name: &str, qtype: RecordType) -> Outcome {
        let Some(svc) = self.services.get(&ObjectRef::new(name).within(ns)) else {
            return Outcome::NxDomain;
        };
        let Some(spec) = svc.spec.as_ref() else {
            return Outcome::Data(Vec::new());
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec
                .external_name
                .as_deref()
                .and_then(|n| Name::from_ascii(n.trim_end_matches('.')).ok());
            return Outcome::Data(match target {
                Some(mut target) => {
                    target.set_fqdn(true);
                    vec![RData::CNAME(CNAME(target))]
                }
                None => Vec::new(),
            });
        }
        if spec.cluster_ip.as_deref() == Some("None") {
            let ips = self.endpoint_ips(ns, name, spec.publish_not_ready_addresses == Some(true));
            return Outcome::Data(address_records(ips.into_iter().map(|(ip, _)| ip), qtype));
        }
        let ips = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .collect::<BTreeSet<_>>();
        Outcome::Data(address_records(ips, qtype))
    }

    /// `<hostname>.<svc>.<ns>.svc`: the addresses of a headless Service's
    /// Endpoints that carry that hostname.
    fn endpoint_host(&self, ns: &str, svc: &str, host: &str, qtype: RecordType) -> Outcome {
        let Some(service) = self.services.get(&ObjectRef::new(svc).within(ns)) else {
            return Outcome::NxDomain;
        };
        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.cluster_ip.as_deref()) != Some("None") {
            return Outcome::NxDomain;
        }
        let not_ready = spec.and_then(|s| s.publish_not_ready_addresses) == Some(true);
        let ips = self
            .endpoint_ips(ns, svc, not_ready)
            .into_iter()
            .filter(|(_, h)| h.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(host)))
            .map(|(ip, _)| ip)
            .collect::<Vec<_>>();
        if ips.is_empty() {
            return Outcome::NxDomain;
        }
        Outcome::Data(address_records(ips, qtype))
    }

    /// The addresses of Endpoints `ns/name` with their hostnames: the ready
    /// ones, plus the not-ready ones when the Service publishes them.
    fn endpoint_ips(
        &self,
        ns: &str,
        name: &str,
        include_not_ready: bool,
    ) -> BTreeSet<(IpAddr, Option<String>)> {
        let Some(endpoints) = self.endpoints.get(&ObjectRef::new(name).within(ns)) else {
            return BTreeSet::new();
        };
        let mut ips = BTreeSet::new();
        for subset in endpoints.subsets.iter().flatten() {
            let not_ready = subset
                .not_ready_addresses
                .iter()
                .flatten()
                .filter(|_| include_not_ready);
            for address in subset.addresses.iter().flatten().chain(not_ready) {
                if let Ok(ip) = address.ip.parse::<IpAddr>() {
                    ips.insert((ip, address.hostname.clone()));
                }
            }
        }
        ips
    }
}

/// The A (IPv4) or AAAA (IPv6) records among `ips`, sorted and without
/// duplicates; none for other types.
fn address_records(ips: impl IntoIterator<Item = IpAddr>, qtype: RecordType) -> Vec<RData> {
    let ips = ips.into_iter().collect::<BTreeSet<_>>();
    ips.into_iter()
        .filter_map(|ip| match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(v4))),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(v6))),
            _ => None,
        })
        .collect()
}

/// The address in a pod name label: `10-1-2-3` or, for IPv6, `fd00--1`.
fn pod_ip(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// A SERVFAIL echoing the question, when the real answer cannot be encoded.
fn servfail(request: &Message) -> Option<Vec<u8>> {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.response_code = ResponseCode::ServFail;
    response.add_queries(request.queries.iter().cloned());
    response.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointSubset, ServiceSpec};
    use kube::api::ObjectMeta;

    fn zone(services: Vec<Service>, endpoints: Vec<Endpoints>) -> Zone {
        let (svc_reader, mut svc_writer) = reflector::store::<Service>();
        let (ep_reader, mut ep_writer) = reflector::store::<Endpoints>();
        for s in services {
            svc_writer.apply_watcher_event(&watcher::Event::Apply(s));
        }
        for e in endpoints {
            ep_writer.apply_watcher_event(&watcher::Event::Apply(e));
        }
        Zone::new(
            Domain::parse("cluster.local").expect("domain"),
            svc_reader,
            ep_reader,
        )
        .expect("zone")
    }

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.to_owned()),
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        }
    }

    fn service(ns: &str, name: &str, cluster_ip: &str) -> Service {
        Service {
            metadata: meta(ns, name),
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.to_owned()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn resolve(zone: &Zone, name: &str, qtype: RecordType) -> Outcome {
        zone.resolve(&Name::from_ascii(name).expect("name"), qtype)
    }

    fn a(ip: &str) -> RData {
        RData::A(A(ip.parse().expect("ip")))
    }

    #[test]
    fn names() {
        let headless = Endpoints {
            metadata: meta("demo", "db"),
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![
                    EndpointAddress {
                        ip: "10.1.0.2".to_owned(),
                        hostname: Some("db-0".to_owned()),
                        ..EndpointAddress::default()
                    },
                    EndpointAddress {
                        ip: "10.1.0.1".to_owned(),
                        ..EndpointAddress::default()
                    },
                ]),
                not_ready_addresses: Some(vec![EndpointAddress {
                    ip: "10.1.0.9".to_owned(),
                    ..EndpointAddress::default()
                }]),
                ..EndpointSubset::default()
            }]),
        };
        let z = zone(
            vec![
                service("demo", "web", "10.96.0.10"),
                service("demo", "db", "None"),
            ],
            vec![headless],
        );
        use Outcome::*;
        assert_eq!(
            resolve(&z, "WEB.demo.svc.Cluster.Local.", RecordType::A),
            Data(vec![a("10.96.0.10")])
        );
        assert_eq!(
            resolve(&z, "web.demo.svc.cluster.local.", RecordType::AAAA),
            Data(vec![])
        );
        assert_eq!(
            resolve(&z, "db.demo.svc.cluster.local.", RecordType::A),
            Data(vec![a("10.1.0.1"), a("10.1.0.2")])
        );
        assert_eq!(
            resolve(&z, "db-0.db.demo.svc.cluster.local.", RecordType::A),
            Data(vec![a("10.1.0.2")])
        );
        assert_eq!(
            resolve(&z, "db-1.db.demo.svc.cluster.local.", RecordType::A),
            NxDomain
        );
        assert_eq!(
            resolve(&z, "nope.demo.svc.cluster.local.", RecordType::A),
            NxDomain
        );
        for expanded in [
            "web.demo.svc.cluster.local.demo.svc.cluster.local.",
            "web.demo.svc.cluster.local.svc.cluster.local.",
            "web.demo.svc.cluster.local.cluster.local.",
        ] {
            assert_eq!(resolve(&z, expanded, RecordType::A), NxDomain, "{expanded}");
        }
        assert_eq!(
            resolve(&z, "demo.svc.cluster.local.", RecordType::A),
            Data(vec![])
        );
        assert_eq!(
            resolve(&z, "other.svc.cluster.local.", RecordType::A),
            NxDomain
        );
        assert_eq!(
            resolve(&z, "10-1-2-3.demo.pod.cluster.local.", RecordType::A),
            Data(vec![a("10.1.2.3")])
        );
        assert_eq!(
            resolve(&z, "x-1.demo.pod.cluster.local.", RecordType::A),
            NxDomain
        );
        assert_eq!(resolve(&z, "example.com.", RecordType::A), Refused);
        assert_eq!(resolve(&z, "local.", RecordType::A), Refused);
        assert_eq!(
            resolve(&z, "cluster.local.example.com.", RecordType::A),
            Refused
        );
        assert!(matches!(
            resolve(&z, "cluster.local.", RecordType::SOA),
            Data(d) if d.len() == 1
        ));
    }

    #[test]
    fn truncates_big_udp_answers_and_drops_garbage() {
        let addresses = (1..=60)
            .map(|i| EndpointAddress {
                ip: format!("10.2.0.{i}"),
                ..EndpointAddress::default()
            })
            .collect();
        let z = zone(
            vec![service("demo", "many", "None")],
            vec![Endpoints {
                metadata: meta("demo", "many"),
                subsets: Some(vec![EndpointSubset {
                    addresses: Some(addresses),
                    ..EndpointSubset::default()
                }]),
            }],
        );
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(
            Name::from_ascii("many.demo.svc.cluster.local.").expect("name"),
            RecordType::A,
        ));
        let bytes = query.to_vec().expect("encode");

        let udp =
            Message::from_vec(&z.handle(&bytes, Transport::Udp).expect("udp")).expect("decode");
        assert!(udp.metadata.truncation);
        assert!(udp.answers.is_empty());
        assert_eq!(udp.queries, query.queries);
        assert_eq!(udp.metadata.id, query.metadata.id);

        let tcp =
            Message::from_vec(&z.handle(&bytes, Transport::Tcp).expect("tcp")).expect("decode");
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 60);

        assert!(z.handle(b"\x01\x02\x03", Transport::Udp).is_none());
        assert!(z
            .handle(&bytes[..bytes.len() - 3], Transport::Udp)
            .is_none());
    }
}
