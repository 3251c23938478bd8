#!/usr/bin/env bash
# Installs, idempotently, every system package and tool that building and testing skiff need.
# Safe to run again: it installs only what is missing.
set -euo pipefail

# Debian packages: skopeo (image proxy, fixtures), docker-registry (local test registry),
# libssl-dev + pkg-config (openssl crate), zstd, xfsprogs (reflink-capable loop filesystems),
# erofs-utils (inspecting EROFS images), openssl (test CAs), apache2-utils (htpasswd),
# time (peak memory in benchmarks).
packages=(skopeo docker-registry libssl-dev pkg-config zstd xfsprogs erofs-utils openssl apache2-utils ca-certificates time)

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
