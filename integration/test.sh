#!/usr/bin/env bash
# Runs every Weft test: the one command in the README, and what CI runs.
#
#  1. installs what the tests need (the test Kubernetes: etcd,
#     kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
#     kube-proxy, kubectl, containerd, runc, the CNI plugins; cached, so
#     later runs skip it in about a second);
#  2. checks formatting and lints (warnings are errors);
#  3. builds the workspace and the images the test node runs
#     (install/image.sh: release binaries on a minimal root filesystem);
#  4. runs the whole workspace's tests with cargo-nextest (required).
#
# Environment: CARGO_TARGET_DIR (where cargo builds), WEFT_CACHE_DIR (where
# the control-plane binaries are cached, default $HOME/.cache/weft).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "test prerequisites (integration/k8s/install.sh, iptables)"
bash integration/k8s/install.sh
# The redirect tests run `weft-proxy init` in network namespaces.
if ! command -v iptables >/dev/null || ! command -v ip >/dev/null; then
    apt-get update -qq && apt-get install -y -qq iptables iproute2
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the workspace binaries the tests run"
cargo build --workspace --locked --bins

step "images for the test node (install/image.sh)"
bash install/image.sh

step "tests"
# nextest, not `cargo test`: its per-test time-outs (.config/nextest.toml)
# turn a hung test into a failure and its test groups run the real node's
# tests one at a time.
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "cargo-nextest is required (cargo install cargo-nextest --locked)" >&2
    exit 1
fi
cargo nextest run --workspace --locked --profile ci
