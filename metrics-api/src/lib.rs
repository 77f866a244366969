//! The golden-metrics API of a Weft mesh: what `weft stat`, `edges`,
//! `routes` and `top` ask the controller, and how the controller answers
//! from the proxies' own `/metrics`, with no Prometheus in between.
//!
//! - [`api`]: the JSON documents on the controller's admin port
//!   (`/api/v1/...`), shared by the controller and the CLI so the two can
//!   never disagree about a key.
//! - [`resource`]: resource kinds and names as operators type them
//!   (`deploy/web`, `svc`, `ns/shop`), with kubectl's aliases.
//! - [`exposition`]: the Prometheus text format the proxies serve, reduced
//!   on arrival to the series the API reads.
//! - [`ring`]: a bounded ring of recent scrapes per proxy.
//! - [`promql`]: `increase`, `irate` and `histogram_quantile` computed
//!   exactly as Prometheus does, so the numbers agree with a Prometheus
//!   pointed at the same proxies.

pub mod api;
pub mod exposition;
pub mod promql;
pub mod resource;
pub mod ring;
