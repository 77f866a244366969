//! Wiring: bind the listeners, build both sides, run until shutdown.

use crate::admin::Admin;
use crate::config::Config;
use crate::conn::Side;
use crate::drain::Drain;
use crate::http::client::{ClientSettings, Clients};
use crate::http::server::ServerSettings;
use crate::identity::LocalIdentity;
use crate::inbound::Inbound;
use crate::metrics::{Direction, Metrics};
use crate::outbound::Outbound;
use crate::transport::listen;
use tokio::signal::unix::{signal, SignalKind};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] std::io::Error),
    /// The identity settings are unusable.
    #[error("identity: {0}")]
    Identity(String),
    /// The configuration contradicts itself.
    #[error("WEFT_PROXY_INBOUND_FORWARD={0} points at the inbound listener itself")]
    ForwardLoop(std::net::SocketAddr),
}

/// Runs the proxy until SIGTERM, SIGINT or `POST /shutdown`, then drains.
pub async fn run(config: Config) -> Result<(), StartError> {
    if let Some(fwd) = config.inbound_forward {
        if fwd == config.inbound_addr {
            return Err(StartError::ForwardLoop(fwd));
        }
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let inbound_listener = listen::bind(config.inbound_addr).await?;
    let outbound_listener = listen::bind(config.outbound_addr).await?;
    let admin_listener = listen::bind(config.admin_addr).await?;
    let outbound_addr = outbound_listener.local_addr()?;

    let identity = match &config.identity {
        None => None,
        Some(id) => {
            let pem = std::fs::read_to_string(&id.trust_anchors).map_err(|e| {
                StartError::Identity(format!("cannot read {}: {e}", id.trust_anchors.display()))
            })?;
            let roots = weft_identity::load_trust_anchors(&pem).map_err(|e| {
                StartError::Identity(format!("{}: {e}", id.trust_anchors.display()))
            })?;
            Some(
                LocalIdentity::new(&id.name, roots)
                    .map_err(|e| StartError::Identity(e.to_string()))?,
            )
        }
    };
    let metrics = Metrics::new(identity.is_some());
    let drain = Drain::new();
    let server = ServerSettings {
        idle_timeout: config.idle_timeout,
        max_concurrent_streams: config.max_concurrent_streams,
    };
    let client = ClientSettings {
        connect_timeout: config.connect_timeout,
        idle_timeout: config.client_idle_timeout,
    };
    let side = |direction| Side {
        direction,
        tcp: metrics.tcp.clone(),
        drain: drain.clone(),
        opaque_ports: config.opaque_ports.clone(),
        detect_timeout: config.detect_timeout,
        connect_timeout: config.connect_timeout,
        server: server.clone(),
        identity: identity.clone(),
        require_identity_ports: config.require_identity_ports.clone(),
    };

    let inbound = Inbound::new(
        side(Direction::Inbound),
        config.inbound_forward,
        metrics.http.clone(),
        Clients::new(
            client.clone(),
            metrics.tcp.clone(),
            Direction::Inbound,
            None,
        ),
    );
    let discovery = match (&config.destination_addr, &identity, &config.identity) {
        (Some(addr), Some(local), Some(id)) => {
            let roots = local.roots().clone();
            let channel = crate::control::channel(addr, &id.control_identity, roots, None);
            tracing::info!(destination = %addr, "resolving service names with the destination service");
            Some(crate::discovery::Discovery::new(channel))
        }
        _ => None,
    };
    let outbound = Outbound::new(
        side(Direction::Outbound),
        outbound_addr,
        config.meshed_targets.clone(),
        (metrics.http.clone(), metrics.route.clone()),
        Clients::new(
            client,
            metrics.tcp.clone(),
            Direction::Outbound,
            identity.clone(),
        ),
        discovery,
        crate::discovery::balance::PeakEwma::default()
            .with_strategy(config.balancer)
            .with_accrual(config.accrual),
    );

    let identity_note = match (&identity, &config.identity) {
        (Some(local), Some(cfg)) => {
            tokio::spawn(crate::identity::certify::run(
                local.clone(),
                cfg.clone(),
                metrics.identity.clone(),
            ));
            format!("identity: {}", local.name())
        }
        _ => {
            tracing::warn!("identity is not configured: meshed connections are plaintext");
            "identity: disabled (connections are plaintext)".to_string()
        }
    };
    tracing::info!(
        inbound = %inbound_listener.local_addr()?,
        outbound = %outbound_addr,
        admin = %admin_listener.local_addr()?,
        forward = ?config.inbound_forward,
        "weft-proxy listening"
    );

    tokio::spawn(
        Admin::new(
            metrics.clone(),
            drain.clone(),
            &identity_note,
            identity.clone(),
        )
        .serve(admin_listener),
    );
    let inbound_task = tokio::spawn(listen::serve(inbound_listener, drain.clone(), move |a| {
        inbound.clone().serve(a)
    }));
    let outbound_task = tokio::spawn(listen::serve(outbound_listener, drain.clone(), move |a| {
        outbound.clone().serve(a)
    }));

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("received SIGTERM; draining"),
        _ = sigint.recv() => tracing::info!("received SIGINT; draining"),
        _ = drain.signaled() => tracing::info!("draining"),
    }
    drain.signal();
    // Listeners close first, so no new connection races the drain.
    let _ = tokio::join!(inbound_task, outbound_task);
    if drain.wait(config.shutdown_grace).await {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!(
            remaining = drain.active(),
            grace = ?config.shutdown_grace,
            "grace period elapsed; closing remaining connections"
        );
    }
    Ok(())
}
