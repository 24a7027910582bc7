#!/usr/bin/env bash
# Install the vhost-user vsock daemon (rust-vmm's vhost-device-vsock, from crates.io) into
# .cache/tools/. mrlab starts it where /dev/vhost-vsock is absent, so that a vsock scenario still
# boots a real virtio-vsock device (vhost-user-vsock-pci). Keyed by version; skips when present.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=0.3.0
cache="${MRLAB_CACHE:-$root/.cache}"
dest="$cache/tools/vhost-device-vsock-$version"
if [ -x "$dest/bin/vhost-device-vsock" ]; then
  exit 0
fi
echo "setup-host: building vhost-device-vsock $version (a few minutes)" >&2
tmp="$dest.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} cargo install --locked --quiet \
  vhost-device-vsock --version "=$version" --root "$tmp" --no-track
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$tmp" "$dest"
