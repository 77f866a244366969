//! Typed custom resources shared by `weft-controller` and the `weft` CLI:
//! ServiceProfile and the SMI TrafficSplit, TrafficTarget, HTTPRouteGroup
//! and TCPRoute kinds.
//!
//! Keeping one definition of each resource means the CLI and the controller
//! can never disagree about a field. The types arrive with the destination
//! service; until then this crate is intentionally empty.
