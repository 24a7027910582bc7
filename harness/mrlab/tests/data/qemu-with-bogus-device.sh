#!/bin/sh
# QEMU with one argument it rejects, as a wrong QEMU build or flag would be.
exec qemu-system-x86_64 "$@" -device bogus-device
