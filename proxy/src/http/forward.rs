//! The end of the HTTP stack: send a request to its endpoint.

use super::body::{self, BoxBody};
use super::client::{Clients, Endpoint};
use super::errors::ProxyError;
use super::headers;
use crate::drain::Drain;
use crate::metrics::{Direction, TcpMetrics, Tls};
use crate::transport::connect::connect;
use http::{Request, Response, StatusCode, Uri};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

/// Sends requests through pooled clients; tunnels upgrades and `CONNECT`.
#[derive(Clone)]
pub struct Forward {
    clients: Clients,
    drain: Drain,
    tcp: TcpMetrics,
    direction: Direction,
    connect_timeout: Duration,
}

// === impl Forward ===

impl Forward {
    /// A forwarder for one side of the proxy.
    pub fn new(
        clients: Clients,
        drain: Drain,
        tcp: TcpMetrics,
        direction: Direction,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            clients,
            drain,
            tcp,
            direction,
            connect_timeout,
        }
    }

    /// Sends `req` to `endpoint` and returns its response.
    ///
    /// An HTTP/1.1 `Upgrade` request (WebSocket) keeps its upgrade headers;
    /// when the target answers `101`, both upgraded connections are joined
    /// and copied byte-for-byte.
    pub async fn http(
        &self,
        endpoint: Endpoint,
        mut req: Request<BoxBody>,
    ) -> Result<Response<BoxBody>, ProxyError> {
        let upgrade = headers::is_upgrade(&req).then(|| {
            let on_upgrade = hyper::upgrade::on(&mut req);
            let proto = req.headers().get(http::header::UPGRADE).cloned();
            (on_upgrade, proto)
        });
        headers::strip_hop_by_hop(req.headers_mut());
        if let Some((_, Some(proto))) = &upgrade {
            let h = req.headers_mut();
            h.insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("upgrade"),
            );
            h.insert(http::header::UPGRADE, proto.clone());
        }
        absolute_uri(&mut req, endpoint.addr);

        let client = self.clients.get(&endpoint);
        let tls = match &endpoint.identity {
            Some(id) if self.clients.uses_tls(&endpoint) => Tls::Server(id.clone()),
            _ => self.tcp.plaintext(),
        };
        let mut rsp = client
            .request(req)
            .await
            .map_err(|e| ProxyError::from_client(endpoint.addr, e))?;

        match upgrade {
            Some((downstream, _)) if rsp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let upstream = hyper::upgrade::on(&mut rsp);
                self.drain.spawn(join_upgrades(downstream, upstream));
            }
            _ => headers::strip_hop_by_hop(rsp.headers_mut()),
        }
        // Outbound requests are labelled with the TLS of the endpoint they
        // went to; inbound ones keep their connection's (the hop to the app
        // is always local plaintext).
        if self.direction == Direction::Outbound {
            rsp.extensions_mut().insert(tls);
        }
        Ok(rsp.map(body::boxed))
    }

    /// Answers a `CONNECT host:port` request (an app using the proxy as its
    /// `https_proxy`): connects to `target`, replies `200`, and tunnels the
    /// connection opaquely.
    pub async fn connect_tunnel(
        &self,
        target: SocketAddr,
        mut req: Request<BoxBody>,
    ) -> Result<Response<BoxBody>, ProxyError> {
        let mut server = connect(
            target,
            self.connect_timeout,
            &self.tcp,
            self.direction,
            self.tcp.plaintext(),
        )
        .await?;
        let on_upgrade = hyper::upgrade::on(&mut req);
        self.drain.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let mut client = TokioIo::new(upgraded);
                    if let Err(error) =
                        tokio::io::copy_bidirectional(&mut client, &mut server).await
                    {
                        tracing::debug!(%target, %error, "CONNECT tunnel failed");
                    }
                }
                Err(error) => tracing::debug!(%target, %error, "CONNECT upgrade failed"),
            }
        });
        Ok(Response::new(body::empty()))
    }
}

/// Joins the client's and the target's upgraded connections.
async fn join_upgrades(downstream: OnUpgrade, upstream: OnUpgrade) {
    match tokio::try_join!(downstream, upstream) {
        Ok((down, up)) => {
            let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
            if let Err(error) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                tracing::debug!(%error, "upgraded connection failed");
            }
        }
        Err(error) => tracing::debug!(%error, "upgrade failed"),
    }
}

/// The pooled client needs an absolute URI; build one from the `Host`
/// header (or the endpoint address) for origin-form requests.
fn absolute_uri(req: &mut Request<BoxBody>, endpoint: SocketAddr) {
    let uri = req.uri();
    if uri.scheme().is_some() && uri.authority().is_some() {
        return;
    }
    let authority = headers::authority(req)
        .map(|a| a.to_string())
        .unwrap_or_else(|| endpoint.to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match Uri::builder()
        .scheme("http")
        .authority(authority.as_str())
        .path_and_query(path)
        .build()
    {
        Ok(uri) => *req.uri_mut() = uri,
        Err(error) => tracing::debug!(%error, %authority, "cannot build absolute URI"),
    }
}
