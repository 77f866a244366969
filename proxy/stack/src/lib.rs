//! Generic tower plumbing for `weft-proxy`, in the manner of linkerd2-proxy's `linkerd-stack`.
//!
//! The proxy is built as *stacks*: a target (an inbound port, an outbound service, an endpoint)
//! is turned into a [`tower::Service`] once, by composing typed layers, and the result is cached
//! so that the hot path never builds anything. This crate holds the pieces of that plumbing that
//! know nothing about HTTP or Kubernetes:
//!
//! - [`NewService`] builds a service for a target, and [`Stack`] composes layers in reading order.
//! - [`NewCache`] keeps one built service per target, evicting idle ones, within a bound.
//! - [`Queue`] waits, boundedly, for a backend (a balancer) to become ready and fails fast when
//!   it has had no ready endpoint for too long.
//! - [`ConcurrencyLimit`] sheds load: a request over a listener's [`Limit`] fails at once with
//!   [`Overloaded`] instead of queueing.
//!
//! All time is `tokio::time`, so every behaviour here is testable with paused time.

pub mod cache;
mod new_service;
pub mod queue;
pub mod shed;
mod stack;

pub use self::{
    cache::{CacheConfig, NewCache},
    new_service::NewService,
    queue::{FailFast, Queue, QueueConfig},
    shed::{ConcurrencyLimit, Limit, Overloaded},
    stack::Stack,
};
