//! The node's network: a namespace of its own, joined to the host by one
//! veth, with the pod bridge inside.
//!
//! ```text
//!  host netns                         node netns "weft-node"
//!  ─────────────                      ──────────────────────────────────
//!  kube-apiserver 10.213.0.1 ─ veth ─ eth0 10.213.0.2  kubelet, kube-proxy,
//!  cluster DNS    10.213.0.1:53        │                containerd
//!  routes: pods, services → .2        weft0 10.212.0.1/24 ── pod veths
//! ```
//!
//! The host routes the pod and service ranges to the node, so the API
//! server reaches webhooks, pods and the kubelet. The node has no default
//! route and the host does not forward (`ip_forward` is left as it is), so
//! nothing a pod sends can leave the machine. kube-proxy's chains live in
//! the node's namespace and vanish with it.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::error::{Error, Result};

/// The node's network namespace (`/var/run/netns/weft-node`).
pub(crate) const NETNS: &str = "weft-node";
/// Host end of the veth.
const HOST_VETH: &str = "weft-node0";
/// Node end of the veth before it moves into the namespace and becomes `eth0`.
const PEER_VETH: &str = "weft-node1";
/// The pod bridge inside the node's namespace.
pub(crate) const BRIDGE: &str = "weft0";
/// Host side of the link: the API server and cluster DNS listen here.
pub(crate) const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
/// Node side of the link: the Node's InternalIP, where the kubelet serves.
pub(crate) const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
/// The host–node link.
const LINK_CIDR: &str = "10.213.0.0/24";
/// Pod addresses (host-local IPAM on the bridge).
pub(crate) const POD_CIDR: &str = "10.212.0.0/24";
/// The bridge's address, the pods' gateway.
pub(crate) const POD_GATEWAY: &str = "10.212.0.1";
/// Service ClusterIPs.
pub(crate) const SERVICE_CIDR: &str = "10.211.0.0/16";
/// The `kubernetes` Service's ClusterIP.
pub(crate) const KUBERNETES_SERVICE_IP: &str = "10.211.0.1";

/// The namespace, veth, bridge and host routes. [`teardown`] removes them.
pub(crate) fn create() -> Result<()> {
    let routes = ip(&["-4", "route", "show"])?;
    for range in [POD_CIDR, SERVICE_CIDR, LINK_CIDR] {
        if routes.contains(range) {
            return Err(Error::Node(format!(
                "{range} is already routed on this host (another node, or a leftover?):\n{routes}"
            )));
        }
    }
    ip(&["netns", "add", NETNS])?;
    ip(&[
        "link", "add", HOST_VETH, "type", "veth", "peer", "name", PEER_VETH,
    ])?;
    ip(&["link", "set", PEER_VETH, "netns", NETNS])?;
    ip(&["-n", NETNS, "link", "set", PEER_VETH, "name", "eth0"])?;
    ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", HOST_VETH])?;
    ip(&["link", "set", HOST_VETH, "up"])?;
    ip(&[
        "-n",
        NETNS,
        "addr",
        "add",
        &format!("{NODE_IP}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", NETNS, "link", "set", "eth0", "up"])?;
    ip(&["-n", NETNS, "link", "set", "lo", "up"])?;
    ip(&["-n", NETNS, "link", "add", BRIDGE, "type", "bridge"])?;
    ip(&[
        "-n",
        NETNS,
        "addr",
        "add",
        &format!("{POD_GATEWAY}/24"),
        "dev",
        BRIDGE,
    ])?;
    ip(&["-n", NETNS, "link", "set", BRIDGE, "up"])?;
    // Pods reach the API server and DNS on the host side of the link; the
    // host reaches pods and ClusterIPs through the node.
    for range in [POD_CIDR, SERVICE_CIDR] {
        ip(&["route", "add", range, "via", &NODE_IP.to_string()])?;
    }
    // The node routes between pods, the bridge and the link; bridged
    // traffic goes through iptables so kube-proxy's DNAT is undone on the
    // way back between two pods on the bridge.
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.bridge.bridge-nf-call-iptables", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
    ] {
        in_netns(&["sysctl", "-q", "-w", &format!("{key}={value}")])?;
    }
    tracing::debug!(
        link = LINK_CIDR,
        pods = POD_CIDR,
        services = SERVICE_CIDR,
        "node network up"
    );
    Ok(())
}

/// Removes what [`create`] made; every step tolerates its object being
/// gone already, so it also cleans up after a harness that was killed.
pub(crate) fn teardown() {
    for range in [POD_CIDR, SERVICE_CIDR] {
        let _ = ip(&["route", "del", range]);
    }
    let _ = ip(&["netns", "del", NETNS]);
    // The veth goes with the namespace; delete it in case a process held
    // the namespace open.
    let _ = ip(&["link", "del", HOST_VETH]);
}

/// True when the host still has something of a node's network.
pub(crate) fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    if std::path::Path::new(&format!("/var/run/netns/{NETNS}")).exists() {
        found.push(format!("network namespace {NETNS}"));
    }
    if ip(&["link", "show", HOST_VETH]).is_ok() {
        found.push(format!("link {HOST_VETH}"));
    }
    if let Ok(routes) = ip(&["-4", "route", "show"]) {
        for range in [POD_CIDR, SERVICE_CIDR] {
            if routes.contains(range) {
                found.push(format!("route {range}"));
            }
        }
    }
    found
}

/// Runs `ip ARGS`, returning its stdout.
fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Runs a command inside the node's network namespace.
pub(crate) fn in_netns(args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", NETNS];
    full.extend_from_slice(args);
    run("ip", &full)
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Node(format!("{program} {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(Error::Node(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
