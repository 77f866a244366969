#!/usr/bin/env bash
# Builds the binaries of Weft's test Kubernetes (see docs/testing.md).
#
# Installs etcd, Go and the other build tools from Debian, and the test
# node's runtime (containerd, runc, containernetworking-plugins, conntrack);
# fetches Debian's `kubernetes` source package (1.20.x on bookworm), builds
# kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and
# kubelet from it once (a component missing from the cache is built on its
# own), and caches them outside the clone:
#
#   ${WEFT_CACHE_DIR:-$HOME/.cache/weft}/k8s/<debian-version>-weft<rev>/bin/
#   ${WEFT_CACHE_DIR:-$HOME/.cache/weft}/k8s/current -> <debian-version>-weft<rev>
#
# <rev> is BUILD_REV below: bump it whenever the build recipe changes so
# machines with an old cache rebuild.
#
# Go 1.19 (bookworm's) and Kubernetes 1.20's vendored modern-go/reflect2
# v1.0.1 do not mix: the API server dies with "fatal error: fault" in
# mapiterinit as soon as it encodes a map through json-iterator (first seen
# on custom objects). reflect2 v1.0.2 fixed that for Go >= 1.18; Debian ships
# it as golang-github-modern-go-reflect2-dev, and the build uses that copy in
# place of the vendored one.
#
# A version-matched kubectl (from the kubernetes-client .deb, unpacked, not
# installed, so it never fights another kubectl package) lands there too.
#
# Idempotent: every step is skipped when its result is already there, so a
# second run takes about a second. Must run as root (apt-get).
#
# Environment:
#   WEFT_CACHE_DIR     cache root (default $HOME/.cache/weft)
#   WEFT_K8S_VERSION   Debian version of the `kubernetes` source package to
#                      build (default: the candidate version of kubernetes-client)
#   WEFT_K8S_JOBS      parallel Go build jobs (default: nproc)
set -euo pipefail

log() { printf '[k8s/install] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ -n "${WEFT_CACHE_DIR:-}" ] || [ -n "${HOME:-}" ] || die "set HOME or WEFT_CACHE_DIR"
CACHE_ROOT="${WEFT_CACHE_DIR:-$HOME/.cache/weft}/k8s"
BUILD_REV=2
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "must run as root (or with sudo available) to use apt-get"
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

apt_updated=0
apt_update() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        $SUDO apt-get update -qq
        apt_updated=1
    fi
}

# --- 1. Debian packages ---------------------------------------------------
# command -> package providing it
declare -A PKG_FOR=(
    [etcd]=etcd-server
    [go]=golang-go
    [rsync]=rsync
    [dpkg-source]=dpkg-dev
    [openssl]=openssl
    [make]=make
    # The test node (kubelet + containerd, docs/testing.md).
    [containerd]=containerd
    [runc]=runc
    [conntrack]=conntrack
    [nsenter]=util-linux
    [iptables]=iptables
    [ip]=iproute2
)
missing=()
for cmd in "${!PKG_FOR[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG_FOR[$cmd]}")
done
# The Go build also wants these, which are on almost every machine anyway.
for cmd in find diff which; do
    command -v "$cmd" >/dev/null 2>&1 || case "$cmd" in
        find) missing+=(findutils) ;;
        diff) missing+=(diffutils) ;;
        which) missing+=(debianutils) ;;
    esac
done
[ -f "$REFLECT2/unsafe_map.go" ] || missing+=(golang-github-modern-go-reflect2-dev)
# CNI bridge + host-local IPAM for the test node's pods.
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || missing+=(containernetworking-plugins)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_update
    log "installing: ${missing[*]}"
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. which Kubernetes version -----------------------------------------
version="${WEFT_K8S_VERSION:-}"
if [ -z "$version" ]; then
    candidate() { apt-cache policy kubernetes-client 2>/dev/null | awk '/Candidate:/ {print $2}'; }
    version="$(candidate)"
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        apt_update
        version="$(candidate)"
    fi
    [ -n "$version" ] && [ "$version" != "(none)" ] \
        || die "no kubernetes-client package known to apt; is this Debian bookworm?"
fi
VDIR="$CACHE_ROOT/$version-weft$BUILD_REV"
BIN="$VDIR/bin"
mkdir -p "$BIN"

have_all_bins() {
    for c in "${COMPONENTS[@]}" kubectl; do
        [ -x "$BIN/$c" ] || return 1
    done
}

if have_all_bins; then
    log "already built: $BIN"
else
    # --- 3. deb-src entry -------------------------------------------------
    has_debsrc() {
        grep -Eqs '^[[:space:]]*deb-src[[:space:]].*bookworm' /etc/apt/sources.list /etc/apt/sources.list.d/*.list && return 0
        local f
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            awk 'BEGIN{RS=""} /(^|\n)Types:[^\n]*deb-src/ && /(^|\n)Suites:[^\n]*bookworm([ \n]|$)/ {found=1} END{exit !found}' "$f" && return 0
        done
        return 1
    }
    # URI(s) of the main bookworm `deb` entry, from either format.
    deb_uris() {
        {
            grep -Ehs '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                | sed -E 's/\[[^]]*\]//' | awk '$3 == "bookworm" {print $2}'
            local f
            for f in /etc/apt/sources.list.d/*.sources; do
                [ -f "$f" ] || continue
                awk 'BEGIN{RS=""; FS="\n"}
                     {
                       types=""; uris=""; suites="";
                       for (i=1;i<=NF;i++) {
                         if ($i ~ /^Types:/)  types=$i;
                         if ($i ~ /^URIs:/)   uris=$i;
                         if ($i ~ /^Suites:/) suites=$i;
                       }
                       if (types ~ /(^|[ :])deb([ ]|$)/ && suites ~ /[ :]bookworm([ ]|$)/) {
                         sub(/^URIs:[ ]*/, "", uris); print uris
                       }
                     }' "$f"
            done
        } | tr ' ' '\n' | awk 'NF && !seen[$0]++'
    }
    if ! has_debsrc; then
        uris="$(deb_uris | tr '\n' ' ' | sed 's/ *$//')"
        [ -n "$uris" ] || uris="http://deb.debian.org/debian"
        log "adding deb-src entry for bookworm ($uris)"
        $SUDO tee /etc/apt/sources.list.d/weft-bookworm-src.sources >/dev/null <<EOF
Types: deb-src
URIs: $uris
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        apt_updated=0
    fi

    # --- 4. source -------------------------------------------------------
    SRC="$VDIR/src"
    mkdir -p "$SRC"
    srcdir="$(find "$SRC" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' -print -quit)"
    if [ -z "$srcdir" ] || [ ! -f "$srcdir/.weft-extracted" ]; then
        [ -n "$srcdir" ] && rm -rf "$srcdir"
        apt_update
        log "apt-get source kubernetes=$version (in $SRC)"
        (cd "$SRC" && apt-get source -qq -o APT::Sandbox::User=root "kubernetes=$version" >/dev/null)
        srcdir="$(find "$SRC" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' -print -quit)"
        [ -n "$srcdir" ] || die "apt-get source produced no kubernetes-* directory in $SRC"
        touch "$srcdir/.weft-extracted"
    fi
    log "replacing vendored modern-go/reflect2 with Debian's ($REFLECT2)"
    rsync -a --delete --exclude BUILD "$REFLECT2/" "$srcdir/vendor/github.com/modern-go/reflect2/"

    # --- 5. build ----------------------------------------------------------
    export GOPATH="$srcdir/.go"
    mkdir -p "$GOPATH/src/k8s.io"
    [ -L "$GOPATH/src/k8s.io/kubernetes" ] || ln -s ../../.. "$GOPATH/src/k8s.io/kubernetes"
    export CGO_ENABLED=0 GO111MODULE="${GO111MODULE:-}" GOPROXY=off GOFLAGS="${GOFLAGS:-}"
    export GOCACHE="$SRC/go-build-cache"
    export KUBE_GIT_VERSION="${KUBE_GIT_VERSION:-v$(echo "$version" | sed -E 's/^.*really//; s/-.*$//')}"
    export KUBE_GIT_TREE_STATE=clean
    jobs="${WEFT_K8S_JOBS:-$(nproc)}"
    for c in "${COMPONENTS[@]}"; do
        if [ -x "$BIN/$c" ]; then
            log "$c already built"
            continue
        fi
        log "building $c (takes several minutes; log: $VDIR/build-$c.log)"
        start=$(date +%s)
        if ! (cd "$GOPATH/src/k8s.io/kubernetes" \
              && GOMAXPROCS="$jobs" make WHAT="cmd/$c" KUBE_BUILD_PLATFORMS=linux/amd64 \
                    >"$VDIR/build-$c.log" 2>&1); then
            tail -n 40 "$VDIR/build-$c.log" >&2 || true
            die "building $c failed (full log: $VDIR/build-$c.log)"
        fi
        built="$(find "$srcdir/_output" -type f -name "$c" -perm -u+x 2>/dev/null | head -n 1)"
        [ -n "$built" ] || die "make succeeded but no $c binary under $srcdir/_output"
        install -m 0755 "$built" "$BIN/$c.tmp" && mv -f "$BIN/$c.tmp" "$BIN/$c"
        log "built $c in $(( $(date +%s) - start ))s"
    done

    # --- 6. version-matched kubectl (unpacked, not installed) -------------
    if [ ! -x "$BIN/kubectl" ]; then
        apt_update
        tmp="$(mktemp -d)"
        (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "kubernetes-client=$version" >/dev/null)
        deb="$(find "$tmp" -name 'kubernetes-client_*.deb' -print -quit)"
        [ -n "$deb" ] || die "apt-get download kubernetes-client produced no .deb"
        dpkg-deb -x "$deb" "$tmp/x"
        install -m 0755 "$tmp/x/usr/bin/kubectl" "$BIN/kubectl"
        rm -rf "$tmp"
        log "kubectl unpacked"
    fi

    # The source tree and build outputs are big; the binaries are all we need.
    if [ "${WEFT_K8S_KEEP_SRC:-0}" != 1 ]; then
        log "removing source tree (set WEFT_K8S_KEEP_SRC=1 to keep it)"
        chmod -R u+w "$SRC" 2>/dev/null || true
        rm -rf "$SRC"
    fi
fi

ln -sfn "$(basename "$VDIR")" "$CACHE_ROOT/current"
# Drop builds of older recipes (each is ~250 MB).
for old in "$CACHE_ROOT"/*; do
    [ -d "$old" ] && [ ! -L "$old" ] && [ "$old" != "$VDIR" ] || continue
    log "removing stale build $old"
    rm -rf "$old"
done
have_all_bins || die "binaries missing in $BIN"
log "etcd: $(command -v etcd)"
for c in "${COMPONENTS[@]}" kubectl; do
    log "$c: $BIN/$c"
done
echo "WEFT_KUBE_BIN_DIR=$BIN"
