#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for anvil's build, demo and
# tests: Debian packages (only the missing ones) and the Go lint tools.
# Safe to run again; prints what it installs.
set -euo pipefail

# command → Debian package that provides it
declare -A need=(
  [openssl]=openssl
  [systemd-analyze]=systemd
  [systemd-nspawn]=systemd-container
  [debootstrap]=debootstrap
  [ip]=iproute2
  [nft]=nftables
  # the demo asks its sample Service through a NodePort
  [curl]=curl
  # runc is built with cgo, statically, against libseccomp (make kube)
  [gcc]=gcc
  [pkg-config]=pkg-config
  # the conformance busybox is built from Debian's source package by its
  # debian/rules (dpkg-source, dpkg-architecture, make, patch, strip)
  [dpkg-source]=dpkg-dev
)
# Debian packages that bring no command, checked by name (apt checks the
# busybox source package against debian-archive-keyring's keys)
libs=(libseccomp-dev libc6-dev debian-archive-keyring)
missing=()
for cmd in "${!need[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
    missing+=("${need[$cmd]}")
  fi
done
for pkg in "${libs[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "anvil needs these Debian packages: ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

gobin=$(go env GOPATH)/bin
if ! [ -x "$gobin/staticcheck" ] || ! "$gobin/staticcheck" -version 2>/dev/null | grep -q "(0.8.2)"; then
  echo "installing staticcheck" >&2
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
