//! The endpoint choice of one backend — power of two choices over
//! peak-EWMA load, with failure accrual — lives in the
//! [`weft_proxy_balance`] crate; this module re-exports it so that
//! `crate::balance::PeakEwma` and the rest keep their paths, and teaches it
//! what a [`DiscoveredEndpoint`](crate::discovery::DiscoveredEndpoint) is:
//! an address, the key of its load state.

pub use weft_proxy_balance::*;

impl weft_proxy_balance::Endpoint for crate::discovery::DiscoveredEndpoint {
    fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}
