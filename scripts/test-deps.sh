#!/usr/bin/env bash
# The real clients the tests drive (DESIGN.md, "Real parts and test bed").
# Installs them with apt-get when they are missing and we are root; otherwise
# says exactly what to install.
set -euo pipefail
need=(qemu-io nbdkit nbdinfo nbdcopy fio nbdfuse fusermount3 fuse2fs sqlite3 e2fsck mkfs.ext4 clang++ openssl strace)
missing=()
for c in "${need[@]}"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
# GnuTLS's headers: the native build needs them for NBD STARTTLS (the TLS tests).
pkg-config --exists gnutls 2>/dev/null || missing+=(gnutls)
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=(qemu-utils nbdkit libnbd-bin fio fuse3 fuse2fs sqlite3 e2fsprogs clang libclang-rt-14-dev cmake openssl strace pkg-config libgnutls28-dev)
if [ "$(id -u)" -ne 0 ]; then
  echo "missing test tools: ${missing[*]}; install them with: sudo apt-get install -y ${pkgs[*]}" >&2
  exit 1
fi
echo "installing test tools (missing: ${missing[*]})" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${pkgs[@]}" >/dev/null
