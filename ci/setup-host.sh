#!/usr/bin/env bash
# Set up a Debian/Ubuntu host for mrlab's vtpm backend: QEMU, OVMF, swtpm and tpm2-tools from the
# distribution, then the pinned guest packages (kernels, firmware, systemd-boot) into .cache/.
# Safe to re-run. Needs root (or sudo) only for the apt-get install step.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pkgs=(qemu-system-x86 ipxe-qemu ovmf swtpm swtpm-tools tpm2-tools python3-pefile)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "setup-host: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
"$root/images/fetch.sh"
# vhost-user vsock daemon for vsock scenarios on hosts without /dev/vhost-vsock.
"$root/ci/install-vhost-device-vsock.sh"
