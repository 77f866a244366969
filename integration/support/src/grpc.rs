//! gRPC on both sides of a proxy: the standard health service
//! (`grpc.health.v1.Health`) as the server, and its client. One server
//! gives both gRPC outcomes a test needs on HTTP 200: `OK` for
//! [`SERVING`], `NOT_FOUND` for any other service.

use std::net::SocketAddr;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The service the [`health_server`] reports as serving.
pub const SERVING: &str = "weft.Echo";

/// Starts a health server on a free loopback port, reporting [`SERVING`]
/// as serving, and returns its address. It runs until the test's runtime
/// ends.
pub async fn health_server() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVING, tonic_health::ServingStatus::Serving)
        .await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    Ok(addr)
}

/// A health client on a new HTTP/2 connection to `addr`. With `origin`
/// (`http://name`), requests carry it as their authority, as those of an
/// app whose connections to `name` are redirected to the proxy.
pub async fn health_client(
    addr: SocketAddr,
    origin: Option<&str>,
) -> anyhow::Result<HealthClient<Channel>> {
    let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    if let Some(origin) = origin {
        endpoint = endpoint.origin(origin.parse()?);
    }
    Ok(HealthClient::new(endpoint.connect().await?))
}

/// Asks for the health of `service`: the answer, or the gRPC status the
/// call failed with (from the server, or from the proxy in between).
pub async fn check(
    client: &mut HealthClient<Channel>,
    service: &str,
) -> Result<HealthCheckResponse, tonic::Status> {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    Ok(client.check(request).await?.into_inner())
}
