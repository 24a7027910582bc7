#!/usr/bin/env bash
# Set up a Debian 12/13 or Ubuntu 24.04 host for mrlab's vtpm backend, as root or with sudo:
# the few host tools the harness runs (swtpm, python3 for images/fetch.sh and ukify, a C
# toolchain and libc6-dev for the static agent), then everything it boots — QEMU with its own
# libraries, OVMF, kernels, systemd-boot — from Debian's archive into .cache/ (images/fetch.sh,
# no root needed for that part). The host's own QEMU and OVMF are never used unless a scenario
# asks for `qemu = "system"` or a firmware path. Safe to re-run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# One list for every supported host: these names are the same on Debian 12, 13 and Ubuntu 24.04.
# debian-archive-keyring verifies Debian's archive (Ubuntu does not ship it by default);
# tpm2-tools is an independent event-log parser some tests use when present.
pkgs=(swtpm swtpm-tools tpm2-tools python3 python3-pefile gcc libc6-dev
  dpkg apt debian-archive-keyring ca-certificates)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup-host: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  . /etc/os-release
  echo "setup-host: installing on ${PRETTY_NAME:-this host}: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
"$root/images/fetch.sh"
# vhost-user vsock daemon for vsock scenarios on hosts without /dev/vhost-vsock.
"$root/ci/install-vhost-device-vsock.sh"
