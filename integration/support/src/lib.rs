//! Real-socket fixtures shared by Weft's tests and benchmarks.
//!
//! Nothing here mocks the network: proxies run as real processes, backends
//! are real HTTP/TCP servers on loopback, and metrics are scraped from the
//! admin endpoint the way Prometheus would.

pub mod backend;
pub mod client;
pub mod controller;
pub mod metrics;
pub mod netns;
pub mod proxy;
pub mod scenario;
pub mod tap;

use std::net::{SocketAddr, TcpListener};

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener
        .local_addr()
        .expect("local address of a bound socket")
}
