#!/usr/bin/env bash
# Installs, idempotently, every system package and tool that building and testing skiff need.
# Safe to run again: it installs only what is missing.
set -euo pipefail

# Debian packages: skopeo (image proxy, fixtures), docker-registry (local test registry),
# libssl-dev + pkg-config (openssl crate), zstd, xfsprogs (reflink-capable loop filesystems),
# erofs-utils (inspecting EROFS images), openssl (test CAs), apache2-utils (htpasswd),
# time (peak memory in benchmarks), make, man-db (renders the man pages in the `make install`
# test), zsh and fish (load the installed completions in that test; bash is always there),
# podman and runc (podman pulls from, runs and pushes to `skiff serve`), busybox-static (the one
# static program the test images carry, so that podman has something to run), debootstrap (the
# Debian base layer of `make bench`'s realistic image), sqlite3 (the rpm-style database of its
# update scenario).
packages=(skopeo docker-registry libssl-dev pkg-config zstd xfsprogs erofs-utils openssl apache2-utils ca-certificates time make man-db zsh fish podman runc busybox-static debootstrap sqlite3)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The docker-registry package starts a system service on port 5000; tests run their own
# instances on ports chosen at run time, so the packaged one is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
    systemctl stop docker-registry || true
fi

# cfsctl 0.9.4: the peer whose repository format skiff writes, used by interop tests and benches.
cfsctl_version=0.9.4
if ! command -v cfsctl >/dev/null 2>&1 || ! cfsctl --version 2>/dev/null | grep -q "$cfsctl_version"; then
    cargo install composefs-ctl --version "$cfsctl_version" --locked
fi

# ferro-oci-server 1.0.0: a registry with the OCI 1.1 referrers API as specified (OCI-Subject,
# artifactType filter), for the delta-discovery tests; distribution 2.8 has no referrers API.
ferro_version=1.0.0
if ! command -v ferro-oci-server >/dev/null 2>&1 ||
    ! grep -q "\"ferro-oci-server $ferro_version " "${CARGO_HOME:-$HOME/.cargo}/.crates.toml" 2>/dev/null; then
    cargo install ferro-oci-server --version "$ferro_version" --locked
fi

# cargo-fuzz 0.13.2: builds and runs the libFuzzer targets in fuzz/ (`make test` runs each briefly,
# `make fuzz` for long). Its builds need the nightly toolchain (sanitizer flags).
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "install-deps: the fuzz targets need the nightly Rust toolchain, and \`cargo +nightly\` fails:" \
        "install it with \`rustup toolchain install nightly\`" >&2
    exit 1
fi
cargo_fuzz_version=0.13.2
if ! grep -q "\"cargo-fuzz $cargo_fuzz_version " "${CARGO_HOME:-$HOME/.cargo}/.crates.toml" 2>/dev/null; then
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

# Go peers, built from the module proxy by contrib/go-peers (a tools module of our own, pinned by
# its go.mod and go.sum): skiff-peer-copy (containers/image's copy, i.e. skopeo copy, writing
# current containers/storage zstd:chunked) and skiff-peer-registry (go-containerregistry's
# registry with the OCI 1.1 referrers API), and skiff-peer-conformance (the OCI distribution-spec
# conformance suite, a tool of the module). They are built once per version of the module into a
# cache outside the work tree; $SKIFF_PEERS_DIR/bin points at the current build (the Makefile puts
# it on PATH).
peers_dir="${SKIFF_PEERS_DIR:-/var/cache/skiff/go-peers}"
peers_src="$(cd "$(dirname "$0")/go-peers" && pwd)"
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"
if ! command -v go >/dev/null 2>&1; then
    echo "install-deps: Go is needed to build the Go peers (contrib/go-peers) and is not installed" >&2
    exit 1
fi
peers_key="$(cd "$peers_src" && cat go.mod go.sum $(find cmd -name '*.go' | sort) | sha256sum | cut -c1-16)"
if [ ! -x "$peers_dir/$peers_key/skiff-peer-copy" ] || [ ! -x "$peers_dir/$peers_key/skiff-peer-registry" ] ||
    [ ! -x "$peers_dir/$peers_key/skiff-peer-conformance" ]; then
    mkdir -p "$peers_dir"
    staging="$(mktemp -d "$peers_dir/.build.XXXXXX")"
    chmod 755 "$staging"
    # The build tags drop gpgme, btrfs and devicemapper, as for skopeo's static builds.
    (cd "$peers_src" && go build -trimpath -mod=readonly \
        -tags 'containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper' \
        -o "$staging/" ./cmd/...)
    # The suite is a main package these days (its `go test` entry point is deprecated and only
    # adds a warning), so it is built like the others, under our name for it. Its version comes
    # from go.mod, which the key covers.
    (cd "$peers_src" && go build -trimpath -mod=readonly \
        -o "$staging/skiff-peer-conformance" github.com/opencontainers/distribution-spec/conformance)
    rm -rf "$peers_dir/$peers_key"
    mv "$staging" "$peers_dir/$peers_key"
fi
ln -sfn "$peers_key" "$peers_dir/bin"
