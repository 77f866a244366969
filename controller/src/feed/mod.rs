//! Feeds fill the [`Store`](crate::store::Store) with Kubernetes objects.
//!
//! Only the file feed (`--config-dir`) exists so far; the kube-rs watcher
//! feed for cluster mode will write to the same store through
//! `Store::upsert`/`Store::remove`/`Store::replace_all`.

pub mod files;
