#!/usr/bin/env bash
# What the native build itself cannot do without (`npm install` runs this
# first): LZ4 and xxHash for the appliance's batch ingest
# (native/src/batch_ingest.h), found with pkg-config. Installs them with
# apt-get when they are missing and we are root; otherwise says exactly what
# to install. (scripts/test-deps.sh installs these too, with the test tools.)
set -euo pipefail
{ command -v pkg-config >/dev/null 2>&1 && pkg-config --exists liblz4 libxxhash; } && exit 0
pkgs=(pkg-config liblz4-dev libxxhash-dev)
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "tidemark: the native build needs LZ4 and xxHash: install them with: sudo apt-get install -y ${pkgs[*]}" >&2
  exit 1
fi
echo "installing what the native build needs: ${pkgs[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${pkgs[@]}" >/dev/null
