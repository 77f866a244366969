//! Real-socket fixtures shared by Weft's tests and benchmarks.
//!
//! Nothing here mocks the network: proxies run as real processes, backends
//! are real HTTP/TCP servers on loopback, and metrics are scraped from the
//! admin endpoint the way Prometheus would.

pub mod authz;
pub mod backend;
pub mod client;
pub mod command;
pub mod controller;
pub mod grpc;
pub mod metrics;
pub mod netns;
pub mod proxy;
pub mod rbac;
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

/// The `weft-proxy` binary Cargo built for the calling integration test, as
/// a `&'static Path`. A macro because `CARGO_BIN_EXE_weft-proxy` is set only
/// while Cargo compiles weft-proxy's own tests: expanded there, it names
/// the binary of that build, and Cargo builds it before the test runs.
#[macro_export]
macro_rules! proxy_bin {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_weft-proxy"))
    };
}

/// The `weft-controller` binary beside [`proxy_bin!`]'s, as a `PathBuf`.
/// Cargo does not build another package's binaries for a test: it is there
/// once the workspace is built, and
/// [`ControllerProcess`](controller::ControllerProcess) says so when not.
#[macro_export]
macro_rules! controller_bin {
    () => {
        $crate::proxy_bin!().with_file_name("weft-controller")
    };
}
