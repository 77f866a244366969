#!/usr/bin/env bash
# Builds Weft's container images without Docker or a registry.
#
#   install/image.sh [--profile release|debug] [--out DIR] [--no-build]
#
# Three images, all tagged with the workspace version (Cargo.toml):
#
#   localhost/weft/weft:VERSION      weft-proxy, weft-controller, weft and
#                                    iptables (legacy backend) in
#                                    /usr/local/bin; user 2102. Also tagged
#                                    localhost/weft/weft-proxy:VERSION and
#                                    localhost/weft/weft-controller:VERSION
#                                    (the `weft install` defaults).
#   localhost/weft/test-app:VERSION  weft-test-app; entrypoint
#                                    ["/usr/local/bin/weft-test-app"], user 2500.
#   localhost/weft/pause:VERSION     the same layer; entrypoint
#                                    ["/usr/local/bin/weft-test-app","pause"].
#
# Written to ${WEFT_IMAGE_DIR:-${CARGO_TARGET_DIR:-target}/weft-images}
# (or --out DIR):
#
#   weft.tar, test-app.tar, pause.tar   docker-archive tars carrying every tag
#                                       as RepoTags: `ctr -n k8s.io images import FILE`
#   oci/                                OCI layout, tags weft, test-app, pause:
#                                       `skopeo copy oci:DIR/oci:weft docker://...`
#
# Each root filesystem holds only the binaries, exactly the shared libraries
# `ldd` says they need (and the dynamic loader), /etc/passwd and /etc/group
# (root 0, weft 2102, weft-controller 2103, test-app 2500), /etc/nsswitch.conf,
# /tmp (1777) and /run (where weft-init's emptyDir holds the xtables lock).
# Binaries are copied with their DWARF debug info stripped (the release
# profile keeps line tables, which would triple the image size); symbols stay,
# so backtraces still name functions.
#
# iptables: the legacy backend (xtables-legacy-multi). It needs only the
# x_tables kernel interface (ip_tables/iptable_nat, present wherever
# kube-proxy in iptables mode works), links no netlink libraries, and is what
# Linkerd's proxy-init uses by default. Each pod's rules live in the pod's own
# network namespace, so the node's backend (nft or legacy) does not matter.
#
# Every run assembles the images afresh from the built binaries (file times
# and image dates are SOURCE_DATE_EPOCH, default the last commit's time, so
# unchanged inputs give byte-identical archives); tools that are missing are
# installed with apt-get. Must run as root (apt-get, chroot, unshare).
#
# Environment:
#   CARGO_TARGET_DIR    where cargo builds (default: target in the repository)
#   WEFT_IMAGE_DIR      output directory (default: $CARGO_TARGET_DIR/weft-images)
#   SOURCE_DATE_EPOCH   timestamp of the files and image configs
set -euo pipefail

log() { printf '[image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE=release
OUT=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) [ $# -ge 2 ] || usage; PROFILE="$2"; shift 2 ;;
        --profile=*) PROFILE="${1#*=}"; shift ;;
        --out) [ $# -ge 2 ] || usage; OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#*=}"; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
case "$PROFILE" in
    release|debug) ;;
    *) die "--profile must be release or debug, not '$PROFILE'" ;;
esac
[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get, chroot and unshare need it)"

abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$PWD" "$1" ;; esac; }
TARGET_DIR="$(abspath "${CARGO_TARGET_DIR:-$REPO/target}")"
OUT="$(abspath "${OUT:-${WEFT_IMAGE_DIR:-$TARGET_DIR/weft-images}}")"
BIN_DIR="$TARGET_DIR/$PROFILE"
VERSION="$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml")"
[ -n "$VERSION" ] || die "no version in [workspace.package] of $REPO/Cargo.toml"
REGISTRY=localhost/weft
REVISION="$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    REVISION="$REVISION-dirty"
fi
SOURCE_URL="$(git -C "$REPO" config --get remote.origin.url 2>/dev/null || true)"
EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)}"
CREATED="$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
MULTIARCH="$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)"
[ -d "/usr/lib/$MULTIARCH" ] || MULTIARCH=x86_64-linux-gnu
XTABLES_MULTI=/usr/sbin/xtables-legacy-multi
XTABLES_EXT="/usr/lib/$MULTIARCH/xtables"
IPTABLES_NAMES=(iptables iptables-restore iptables-save ip6tables ip6tables-restore ip6tables-save)

# --- 1. tools -------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
declare -A PKG_FOR=(
    [umoci]=umoci
    [skopeo]=skopeo
    [strip]=binutils
    [chroot]=coreutils
    [unshare]=util-linux
    [ldd]=libc-bin
)
missing=()
for cmd in "${!PKG_FOR[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG_FOR[$cmd]}")
done
[ -x "$XTABLES_MULTI" ] || missing+=(iptables)
if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get update"
    apt-get update -qq
    log "apt-get install ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x "$XTABLES_MULTI" ] || die "$XTABLES_MULTI missing after installing iptables"
[ -d "$XTABLES_EXT" ] || die "no xtables extensions in $XTABLES_EXT"

# --- 2. binaries ----------------------------------------------------------
build_secs=0
if [ "$BUILD" -eq 1 ]; then
    profile_flag=()
    [ "$PROFILE" = release ] && profile_flag=(--release)
    log "cargo build --locked ${profile_flag[*]} (target dir $TARGET_DIR)"
    build_start=$(date +%s)
    (cd "$REPO" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --locked "${profile_flag[@]}" \
        -p weft-proxy -p weft-controller -p weft-cli -p weft-test-app)
    build_secs=$(( $(date +%s) - build_start ))
    log "build took ${build_secs}s"
else
    log "--no-build: using the binaries in $BIN_DIR"
fi
for bin in weft-proxy weft-controller weft weft-test-app; do
    [ -x "$BIN_DIR/$bin" ] || die "$BIN_DIR/$bin is missing: build it (drop --no-build) or pick the right --profile"
done

# --- 3. root filesystems --------------------------------------------------
assembly_start=$(date +%s)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/weft-image.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# A merged-/usr skeleton, so the paths ldd prints (/lib/..., /lib64/...)
# land in /usr like on the build host.
skeleton() {
    local root="$1"
    mkdir -p "$root"/{etc,tmp,run,root} "$root"/usr/{bin,sbin,lib,lib64,local/bin} "$root/usr/lib/$MULTIARCH"
    ln -s usr/bin "$root/bin"
    ln -s usr/sbin "$root/sbin"
    ln -s usr/lib "$root/lib"
    ln -s usr/lib64 "$root/lib64"
    chmod 1777 "$root/tmp"
    chmod 0700 "$root/root"
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
weft:x:2102:2102:Weft proxy:/nonexistent:/sbin/nologin
weft-controller:x:2103:2103:Weft controller:/nonexistent:/sbin/nologin
test-app:x:2500:2500:Weft test app:/nonexistent:/sbin/nologin
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
weft:x:2102:
weft-controller:x:2103:
test-app:x:2500:
EOF
    printf 'hosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n' >"$root/etc/nsswitch.conf"
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
    : >"$root/etc/resolv.conf"
    [ -f /etc/protocols ] && cp /etc/protocols "$root/etc/protocols"
    return 0
}

# Copies the shared libraries (and the loader) that FILE needs into ROOT,
# at the paths ldd names them by.
copy_libs() {
    local root="$1" file="$2" lib
    if ! ldd "$file" >/dev/null 2>&1; then
        return 0 # static: nothing to copy
    fi
    while read -r lib; do
        [ -n "$lib" ] || continue
        [ -e "$root$lib" ] && continue
        install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done < <(ldd "$file" | awk '/=> \// { print $3; next } /^[ \t]*\// { print $1 }')
    if ldd "$file" | grep -q 'not found'; then
        die "ldd $file: a library is not found"
    fi
}

# Installs a binary (debug info stripped) and its libraries.
install_bin() {
    local root="$1" src="$2" dest="$3"
    install -D -m 0755 "$src" "$root$dest"
    strip --strip-debug "$root$dest"
    copy_libs "$root" "$src"
}

log "assembling the root filesystems"
WEFT_ROOT="$WORK/rootfs-weft"
APP_ROOT="$WORK/rootfs-test-app"
skeleton "$WEFT_ROOT"
for bin in weft-proxy weft-controller weft; do
    install_bin "$WEFT_ROOT" "$BIN_DIR/$bin" "/usr/local/bin/$bin"
done
# iptables, legacy backend: the multi-call binary dispatches on its name.
install_bin "$WEFT_ROOT" "$XTABLES_MULTI" "$XTABLES_MULTI"
for name in "${IPTABLES_NAMES[@]}"; do
    ln -s "../../sbin/$(basename "$XTABLES_MULTI")" "$WEFT_ROOT/usr/local/bin/$name"
done
mkdir -p "$WEFT_ROOT$XTABLES_EXT"
# The iptables/ip6tables extensions (libxt_*, libipt_*, libip6t_*); the
# ebtables and arptables ones are for tools the image does not ship.
for ext in "$XTABLES_EXT"/libxt_*.so "$XTABLES_EXT"/libipt_*.so "$XTABLES_EXT"/libip6t_*.so; do
    install -m 0644 "$ext" "$WEFT_ROOT$XTABLES_EXT/"
    copy_libs "$WEFT_ROOT" "$ext"
done

skeleton "$APP_ROOT"
install_bin "$APP_ROOT" "$BIN_DIR/weft-test-app" /usr/local/bin/weft-test-app

# --- 4. smoke checks in the root filesystems ------------------------------
# smoke LABEL ROOT USER CMD...: runs CMD by chroot into ROOT as USER.
smoke() {
    local label="$1" root="$2" user="$3"
    shift 3
    local out
    if ! out="$(chroot --userspec="$user" "$root" "$@" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "$label: '$*' failed"
    fi
    log "ok: $label: $* → $(printf '%s' "$out" | head -n 1)"
}
log "smoke checks (chroot)"
smoke weft "$WEFT_ROOT" 2102:2102 /usr/local/bin/weft-proxy --help
smoke weft "$WEFT_ROOT" 2103:2103 /usr/local/bin/weft-controller --help
smoke weft "$WEFT_ROOT" 2102:2102 /usr/local/bin/weft --help
for name in "${IPTABLES_NAMES[@]}"; do
    smoke weft "$WEFT_ROOT" 0:0 "/usr/local/bin/$name" --version
done
smoke test-app "$APP_ROOT" 2500:2500 /usr/local/bin/weft-test-app --help
smoke test-app "$APP_ROOT" 2500:2500 /usr/local/bin/weft-test-app pause --help
if unshare -n true 2>/dev/null; then
    # What weft-init does, in one fresh network namespace per family:
    # restore a chain with --noflush, hook it into OUTPUT, read it back.
    rules='*nat
:WEFT-CHECK - [0:0]
-A WEFT-CHECK -m owner --uid-owner 2102 -j RETURN
-A WEFT-CHECK -o lo -j RETURN
-A WEFT-CHECK -p tcp -j REDIRECT --to-ports 4140
COMMIT
'
    for fam in iptables ip6tables; do
        if ! out="$(printf '%s' "$rules" | unshare -n -- sh -c '
                root="$1" fam="$2"
                chroot "$root" "/usr/local/bin/$fam-restore" --noflush &&
                chroot "$root" "/usr/local/bin/$fam" -t nat -A OUTPUT -p tcp -j WEFT-CHECK &&
                chroot "$root" "/usr/local/bin/$fam" -t nat -C OUTPUT -p tcp -j WEFT-CHECK &&
                chroot "$root" "/usr/local/bin/$fam" -t nat -L -n >/dev/null &&
                chroot "$root" "/usr/local/bin/$fam-save" -t nat' sh "$WEFT_ROOT" "$fam" 2>&1)"; then
            printf '%s\n' "$out" >&2
            # weft-init needs IPv4 NAT; a kernel without IPv6 NAT is only noted.
            [ "$fam" = ip6tables ] || die "$fam (legacy) failed in a fresh network namespace"
            log "WARNING: ip6tables (legacy) NAT does not work on this kernel (the binary itself runs)"
            continue
        fi
        printf '%s\n' "$out" | grep -q -- '-A WEFT-CHECK -p tcp -j REDIRECT --to-ports 4140' \
            || { printf '%s\n' "$out" >&2; die "$fam-save does not show the restored rules"; }
        log "ok: weft: $fam (legacy) restores, hooks, checks, lists and saves NAT rules in a fresh network namespace"
    done
else
    log "WARNING: cannot unshare a network namespace here: iptables not exercised"
fi

# The checks leave iptables' lock behind; in a pod /run is an emptyDir.
rm -f "$WEFT_ROOT/run/xtables.lock"

# --- 5. OCI layout and archives -------------------------------------------
mkdir -p "$OUT"
OCI="$OUT/oci"
rm -rf "$OCI"
umoci init --layout "$OCI"

labels() {
    local title="$1" description="$2"
    local l=(
        --config.label "org.opencontainers.image.title=$title"
        --config.label "org.opencontainers.image.description=$description"
        --config.label "org.opencontainers.image.version=$VERSION"
        --config.label "org.opencontainers.image.revision=$REVISION"
        --config.label "org.opencontainers.image.created=$CREATED"
        --config.label "org.opencontainers.image.licenses=Apache-2.0"
    )
    [ -n "$SOURCE_URL" ] && l+=(--config.label "org.opencontainers.image.source=$SOURCE_URL")
    printf '%s\0' "${l[@]}"
}

# image TAG ROOTFS: one layer holding ROOTFS. GNU tar writes it (sorted,
# owned by 0:0, times pinned), not `umoci insert`, whose 0.4.7 layers lack
# the end-of-archive blocks (umoci issue #436) that strict readers want.
image() {
    local tag="$1" root="$2" layer="$WORK/layer-$1.tar"
    (cd "$root" && find . -mindepth 1 -maxdepth 1 -printf '%P\0' | LC_ALL=C sort -z |
        tar --create --file "$layer" --null --files-from - --sort=name --format=gnu \
            --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH")
    umoci new --image "$OCI:$tag"
    umoci raw add-layer --image "$OCI:$tag" --history.created "$CREATED" \
        --history.created_by "install/image.sh" "$layer"
}

log "OCI layout $OCI"
image weft "$WEFT_ROOT"
mapfile -d '' weft_labels < <(labels weft "Weft: weft-proxy (with iptables for weft-init), weft-controller and the weft CLI")
umoci config --image "$OCI:weft" --created "$CREATED" --history.created "$CREATED" \
    --config.user 2102:2102 \
    --config.env PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin \
    --config.workingdir / \
    "${weft_labels[@]}"

image test-app "$APP_ROOT"
mapfile -d '' app_labels < <(labels test-app "weft-test-app: the workloads of Weft's end-to-end tests")
umoci config --image "$OCI:test-app" --created "$CREATED" --history.created "$CREATED" \
    --config.user 2500:2500 \
    --config.env PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin \
    --config.entrypoint /usr/local/bin/weft-test-app \
    --config.workingdir / \
    "${app_labels[@]}"

# The pause image shares test-app's layer; only its configuration differs.
mapfile -d '' pause_labels < <(labels pause "weft-test-app pause: the pod sandbox process")
umoci config --image "$OCI:test-app" --tag pause --created "$CREATED" --history.created "$CREATED" \
    --config.user 65535:65535 \
    --config.entrypoint /usr/local/bin/weft-test-app --config.entrypoint pause \
    "${pause_labels[@]}"
umoci gc --layout "$OCI"

# archive NAME EXTRA_NAME...: docker-archive tar with every name as a RepoTag.
archive() {
    local name="$1"
    shift
    local file="$OUT/$name.tar" tmp="$OUT/.$name.tar.tmp"
    local extra=()
    for other in "$@"; do
        extra+=(--additional-tag "$REGISTRY/$other:$VERSION")
    done
    rm -f "$tmp"
    skopeo copy --quiet "oci:$OCI:$name" "docker-archive:$tmp:$REGISTRY/$name:$VERSION" "${extra[@]}"
    mv -f "$tmp" "$file"
}
log "docker archives in $OUT"
archive weft weft-proxy weft-controller
archive test-app
archive pause

# --- 6. checks of the result ----------------------------------------------
# config_has FILE JSON: the image config of FILE contains JSON (spaces removed).
config_has() {
    local file="$1" needle="$2"
    skopeo inspect --config "docker-archive:$file" | tr -d ' \n' | grep -qF -- "$needle" \
        || die "$(basename "$file"): image config lacks $needle"
}
repo_tags_have() {
    local file="$1" tag="$2"
    tar -xOf "$file" manifest.json | grep -qF "\"$tag\"" || die "$(basename "$file"): RepoTags lack $tag"
}
for t in weft weft-proxy weft-controller; do repo_tags_have "$OUT/weft.tar" "$REGISTRY/$t:$VERSION"; done
repo_tags_have "$OUT/test-app.tar" "$REGISTRY/test-app:$VERSION"
repo_tags_have "$OUT/pause.tar" "$REGISTRY/pause:$VERSION"
config_has "$OUT/weft.tar" '"User":"2102:2102"'
config_has "$OUT/weft.tar" '"PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin"'
config_has "$OUT/test-app.tar" '"User":"2500:2500"'
config_has "$OUT/test-app.tar" '"Entrypoint":["/usr/local/bin/weft-test-app"]'
config_has "$OUT/pause.tar" '"Entrypoint":["/usr/local/bin/weft-test-app","pause"]'

# Unpack what was written and run the binaries from there once more.
for tag in weft test-app pause; do
    umoci unpack --image "$OCI:$tag" "$WORK/unpacked-$tag" >/dev/null
done
smoke "unpacked weft" "$WORK/unpacked-weft/rootfs" 2102:2102 /usr/local/bin/weft-proxy --version
smoke "unpacked weft" "$WORK/unpacked-weft/rootfs" 2103:2103 /usr/local/bin/weft-controller --version
smoke "unpacked weft" "$WORK/unpacked-weft/rootfs" 2102:2102 /usr/local/bin/weft --version
smoke "unpacked weft" "$WORK/unpacked-weft/rootfs" 0:0 /usr/local/bin/iptables --version
smoke "unpacked test-app" "$WORK/unpacked-test-app/rootfs" 2500:2500 /usr/local/bin/weft-test-app --version
smoke "unpacked pause" "$WORK/unpacked-pause/rootfs" 65535:65535 /usr/local/bin/weft-test-app --version
for tag in weft test-app pause; do
    log "umoci stat $tag:"
    umoci stat --image "$OCI:$tag" >&2
done
assembly_secs=$(( $(date +%s) - assembly_start ))

# --- 7. summary -----------------------------------------------------------
log "build: ${build_secs}s; assembly and checks: ${assembly_secs}s"
log "images (version $VERSION):"
for f in "$OUT/weft.tar" "$OUT/test-app.tar" "$OUT/pause.tar"; do
    log "  $f  $(du -h "$f" | cut -f1)  ($(stat -c %s "$f") bytes)"
done
log "  $OCI/  $(du -sh "$OCI" | cut -f1)  (tags: $(umoci ls --layout "$OCI" | tr '\n' ' '))"
