//! Wiring: bind the listeners, build both sides, run until shutdown.

use crate::admin::Admin;
use crate::config::Config;
use crate::conn::Side;
use crate::drain::Drain;
use crate::http::client::{ClientSettings, Clients};
use crate::http::server::ServerSettings;
use crate::identity::LocalIdentity;
use crate::inbound::policy::{watch::GrpcSource, PortPolicies, Settings};
use crate::inbound::{Inbound, InboundSettings};
use crate::metrics::{Direction, Metrics};
use crate::outbound::Outbound;
use crate::transport::listen;
use std::sync::Arc;
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
    /// `WEFT_PROXY_EXIT_WITH_APP` cannot watch the process tree.
    #[error(transparent)]
    ExitWithApp(#[from] crate::exit_with_app::WatchError),
}

/// What ended the serving phase.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// SIGTERM (the kubelet stopping the pod): honours
    /// `WEFT_PROXY_WAIT_BEFORE_EXIT`.
    Term,
    /// SIGINT, `POST /shutdown` or the application's exit: drain at once.
    Now,
}

/// Every inbound port's policy: watched from the controller over
/// `channel` when there is one and the proxy knows its workload, else the
/// default policy alone (said once, with the reason).
fn inbound_policies(config: &Config, channel: Option<tonic::transport::Channel>) -> PortPolicies {
    let settings = Settings {
        default_policy: config.default_inbound_policy,
        cluster_networks: config.cluster_networks.clone(),
        opaque_ports: config.opaque_ports.clone(),
        trust_loopback: config.inbound_trust_loopback,
    };
    let source: Option<Arc<dyn crate::inbound::policy::watch::Source>> = match (
        channel,
        &config.workload,
    ) {
        (Some(channel), Some(workload)) => {
            tracing::info!(
                default = %config.default_inbound_policy,
                "watching inbound policies with the destination service"
            );
            Some(Arc::new(GrpcSource::new(
                channel,
                &workload.namespace,
                &workload.pod,
            )))
        }
        (None, _) => {
            tracing::info!(
                default = %config.default_inbound_policy,
                "inbound policy is not watched (WEFT_PROXY_DESTINATION_ADDR is unset): every port uses the default policy"
            );
            None
        }
        (Some(_), None) => {
            tracing::info!(
                default = %config.default_inbound_policy,
                "inbound policy is not watched (WEFT_PROXY_WORKLOAD is unset): every port uses the default policy"
            );
            None
        }
    };
    PortPolicies::new(settings, source, config.inbound_ports.iter())
}

/// Runs the proxy until SIGTERM (after `WEFT_PROXY_WAIT_BEFORE_EXIT`),
/// SIGINT, `POST /shutdown` or, with `WEFT_PROXY_EXIT_WITH_APP`, the
/// application's exit; then drains.
pub async fn run(config: Config) -> Result<(), StartError> {
    if let Some(fwd) = config.inbound_forward {
        if fwd == config.inbound_addr {
            return Err(StartError::ForwardLoop(fwd));
        }
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    // Read the proxy's own cgroup before serving, so a pod that cannot be
    // watched fails at start-up rather than never exiting.
    let app_watch = if config.exit_with_app {
        Some(crate::exit_with_app::AppWatch::new()?)
    } else {
        None
    };

    let inbound_listener = listen::bind(config.inbound_addr).await?;
    let outbound_listener = listen::bind(config.outbound_addr).await?;
    let admin_listener = listen::bind(config.admin_addr).await?;
    let outbound_addr = outbound_listener.local_addr()?;

    let identity = match &config.identity {
        None => None,
        Some(id) => {
            let pem = id.trust_anchors.pem().map_err(StartError::Identity)?;
            let roots = weft_identity::load_trust_anchors(&pem)
                .map_err(|e| StartError::Identity(format!("{}: {e}", id.trust_anchors)))?;
            Some(
                LocalIdentity::new(&id.name, roots)
                    .map_err(|e| StartError::Identity(e.to_string()))?,
            )
        }
    };
    let const_labels = config
        .workload
        .as_ref()
        .map(|w| w.metric_labels())
        .unwrap_or_default();
    let metrics = Metrics::new(identity.is_some(), const_labels);
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

    // One channel to the controller for discovery and inbound policy.
    let control = match (&config.destination_addr, &identity, &config.identity) {
        (Some(addr), Some(local), Some(id)) => {
            let roots = local.roots().clone();
            Some((
                addr,
                crate::control::channel(addr, &id.control_identity, roots, None),
            ))
        }
        _ => None,
    };
    let inbound = Inbound::new(
        side(Direction::Inbound),
        InboundSettings {
            forward_to: config.inbound_forward,
            max_in_flight: config.inbound_max_in_flight,
            policies: inbound_policies(&config, control.as_ref().map(|(_, c)| c.clone())),
        },
        (metrics.http.clone(), metrics.authz.clone()),
        Clients::new(
            client.clone(),
            metrics.tcp.clone(),
            Direction::Inbound,
            None,
        ),
    );
    let discovery = control.map(|(addr, channel)| {
        tracing::info!(destination = %addr, "resolving service names with the destination service");
        crate::discovery::Discovery::new(channel)
    });
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
        crate::balance::PeakEwma::default()
            .with_strategy(config.balancer)
            .with_accrual(config.accrual),
        crate::outbound::OutboundSettings {
            queue: config.queue,
            cache: crate::outbound::CACHE,
            max_in_flight: config.outbound_max_in_flight,
        },
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
        workload = %config.workload.as_ref().map(ToString::to_string).unwrap_or_default(),
        default_inbound_policy = %config.default_inbound_policy,
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

    let app_exited = async move {
        match app_watch {
            Some(watch) => {
                tracing::info!("WEFT_PROXY_EXIT_WITH_APP: exiting once the application has exited");
                watch.run(crate::exit_with_app::SCAN_INTERVAL).await
            }
            None => std::future::pending().await,
        }
    };
    let stop = tokio::select! {
        _ = sigterm.recv() => Stop::Term,
        _ = sigint.recv() => {
            tracing::info!("received SIGINT; draining");
            Stop::Now
        }
        _ = drain.signaled() => {
            tracing::info!("draining");
            Stop::Now
        }
        _ = app_exited => {
            tracing::info!("the application has exited; draining");
            Stop::Now
        }
    };
    if stop == Stop::Term {
        if config.wait_before_exit.is_zero() {
            tracing::info!("received SIGTERM; draining");
        } else {
            // Endpoints controllers and other proxies learn of the pod's
            // termination asynchronously; keep serving (and /ready) until
            // they have stopped sending traffic here.
            tracing::info!(
                wait = ?config.wait_before_exit,
                "received SIGTERM; serving for WEFT_PROXY_WAIT_BEFORE_EXIT before draining"
            );
            tokio::select! {
                _ = tokio::time::sleep(config.wait_before_exit) => {
                    tracing::info!("wait before exit elapsed; draining");
                }
                _ = sigint.recv() => tracing::info!("received SIGINT; draining now"),
                _ = drain.signaled() => tracing::info!("draining now"),
            }
        }
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
