//! `weft-inject`: what the `weft` CLI and `weft-controller` must agree on to
//! put a proxy into a pod.
//!
//! - [`values`]: the one documented install values structure (`weft install
//!   --set` / `-f values.yaml`), also read by the controller's injector from
//!   the `weft-config` ConfigMap, so `weft inject --manual` and the webhook
//!   build the same sidecar from the same settings.
//! - [`names`]: the names, labels and annotations of everything `weft
//!   install` creates, shared by install, uninstall, check and the injector.
//! - [`mutate`]: the injection mutation itself (and its inverse), applied to
//!   a pod's metadata and spec; the webhook turns the result into a
//!   JSONPatch, the CLI prints the mutated object.
//!
//! No networking and no Kubernetes client here: callers look up namespaces
//! and owners and pass what they found in a [`mutate::PodContext`].

pub mod mutate;
pub mod names;
pub mod values;

pub use mutate::{
    inbound_ports, skip_reason, uninject, AnnotationWarning, InjectMode, Injector, Outcome, Owner,
    PodContext, ProxyConfig, Skip,
};
pub use values::{Values, ValuesError};
