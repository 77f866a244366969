//! The connection to the control plane.
//!
//! Identity and destination share one way of reaching `weft-controller`: a
//! lazily connecting gRPC channel over TLS 1.3 that accepts only a
//! certificate for the controller's identity from the mesh's trust anchors,
//! so a token or endpoint data never goes to an impostor or in clear.

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A channel to `addr` (`host:port`) verifying `server_name`. `timeout`
/// bounds each call (use `None` for long-lived streams).
pub fn channel(
    addr: &str,
    server_name: &str,
    roots: Arc<RootCertStore>,
    timeout: Option<Duration>,
) -> Channel {
    let mut tls = rustls::ClientConfig::builder_with_provider(weft_identity::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    if let Ok(tls) = tls.as_mut() {
        tls.alpn_protocols = vec![b"h2".to_vec()];
    }
    let tls = tls.map(Arc::new);
    let (addr, server_name) = (addr.to_string(), server_name.to_string());
    let connector = tower::service_fn(move |_: http::Uri| {
        let (tls, addr, server_name) = (tls.clone(), addr.clone(), server_name.clone());
        async move {
            let tls = tls.map_err(|e| std::io::Error::other(e.to_string()))?;
            let name = ServerName::try_from(server_name)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let tcp = tokio::net::TcpStream::connect(addr.as_str()).await?;
            let _ = tcp.set_nodelay(true);
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    // The URI only names the authority for HTTP/2; the connector decides
    // where and how to connect.
    let mut endpoint =
        Endpoint::from_static("http://control.weft").connect_timeout(Duration::from_secs(5));
    if let Some(t) = timeout {
        endpoint = endpoint.timeout(t);
    }
    endpoint.connect_with_connector_lazy(connector)
}
