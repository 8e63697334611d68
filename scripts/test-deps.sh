#!/usr/bin/env bash
# The real clients the tests drive (DESIGN.md, "Real parts and test bed").
# Installs them with apt-get when they are missing and we are root; otherwise
# says exactly what to install.
set -euo pipefail
need=(qemu-io nbdkit nbdinfo nbdcopy fio nbdfuse fusermount3 fuse2fs sqlite3 e2fsck mkfs.ext4 debugfs clang++ openssl strace
      qemu-system-x86_64 busybox cpio modinfo chromium promtool)
missing=()
for c in "${need[@]}"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
# The VM test's guest (test/lib/guest.ts): a kernel with its modules, and a static busybox.
ls /boot/vmlinuz-* >/dev/null 2>&1 || missing+=("kernel image (/boot/vmlinuz-*)")
{ b=$(command -v busybox) && ! ldd "$b" >/dev/null 2>&1; } || missing+=("static busybox")
# GnuTLS's headers: the native build needs them for NBD STARTTLS (the TLS tests).
pkg-config --exists gnutls 2>/dev/null || missing+=(gnutls)
# LZ4 and xxHash: the native build needs them for the appliance's batch ingest (native/src/batch_ingest.h).
pkg-config --exists liblz4 libxxhash 2>/dev/null || missing+=(liblz4 libxxhash)
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=(qemu-utils nbdkit libnbd-bin fio fuse3 fuse2fs sqlite3 e2fsprogs clang libclang-rt-14-dev cmake openssl strace pkg-config libgnutls28-dev liblz4-dev libxxhash-dev
      qemu-system-x86 linux-image-cloud-amd64 busybox-static cpio kmod xz-utils prometheus)
# The dashboard test's headless browser, installed on its own without its
# recommends (they pull in a desktop's worth of fonts, themes and audio the
# headless test never uses); the packages above keep apt's default.
lean=(chromium)
if [ "$(id -u)" -ne 0 ]; then
  echo "missing test tools: ${missing[*]}; install them with: sudo apt-get install -y ${pkgs[*]} && sudo apt-get install -y --no-install-recommends ${lean[*]}" >&2
  exit 1
fi
echo "installing test tools (missing: ${missing[*]})" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${pkgs[@]}" >/dev/null
apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
