//! `weft-test-app`: the one binary every end-to-end test container runs.
//!
//! The end-to-end tests run real pods on a real kubelet, so they need small,
//! predictable workloads whose behaviour the tests can query: an HTTP server
//! that says who answered (`server`), a steady load generator that tallies
//! what it saw (`client`), a one-shot checker for Jobs (`get`), a
//! server-speaks-first TCP pair (`banner-server`, `banner-client`) for opaque
//! ports, and the pod sandbox process (`pause`). One binary keeps the image
//! small and the tests' image list short.

pub mod banner;
pub mod client;
pub mod get;
pub mod pause;
pub mod server;
pub mod signal;
pub mod web;
