#!/bin/sh
# QEMU with one argument it rejects, as a wrong QEMU build or flag would be: the managed QEMU 7.2
# (images/fetch.sh), started through its root's own loader as the harness starts it.
r="${MRLAB_CACHE:-$(cd "$(dirname "$0")/../../../.." && pwd)/.cache}/roots/qemu-7.2"
export QEMU_MODULE_DIR="$r/usr/lib/x86_64-linux-gnu/qemu"
exec "$r/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --inhibit-cache \
  --library-path "$r/lib/x86_64-linux-gnu:$r/usr/lib/x86_64-linux-gnu" \
  "$r/usr/bin/qemu-system-x86_64" -L "$r/usr/share/qemu" -L "$r/usr/share/seabios" \
  "$@" -device bogus-device
