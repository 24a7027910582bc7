#!/usr/bin/env bash
# Portability check: a fresh Debian root (debootstrap, default trixie), a plain clone of this
# repository's HEAD inside it and nothing beside it, then the README's two commands, as a new
# user would run them. Not part of every CI run (it downloads a whole system); run it by hand:
#
#   sudo ci/portability.sh [SUITE]        # SUITE: trixie (default), bookworm, …
#   REUSE_ROOT=1 sudo ci/portability.sh   # keep the root of an earlier run (its installed
#                                         # packages), fresh clone, second command only
#
# The host's Rust toolchain is lent read-only (rustup cannot be fetched here); crates, Debian
# packages and everything else are fetched inside the root. Output: the log of both commands
# and one summary line per command in $WORK/<suite>/summary (WORK=/var/tmp/mrlab-portability).
set -euo pipefail
suite=${1:-trixie}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/var/tmp/mrlab-portability}
target="$work/$suite"
[ "$(id -u)" = 0 ] || { echo "portability: run as root (debootstrap, chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null || {
  echo "portability: installing debootstrap" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
rustc=$(rustc --print sysroot)

mounts=()
cleanup() {
  # Whatever still runs inside the root (an interrupted cargo, a QEMU) goes first.
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$target" ] && kill -9 "$pid" 2>/dev/null
  done
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() { # bind SRC DEST [ro]
  mkdir -p "$2"
  mount --bind "$1" "$2"; mounts+=("$2")
  [ "${3:-}" = ro ] && mount -o remount,bind,ro "$2"
  return 0
}

reuse=${REUSE_ROOT:-0}
if [ "$reuse" = 1 ] && [ -x "$target/usr/bin/git" ]; then
  echo "portability: reusing the root in $target (fresh clone, second command only)" >&2
  rm -rf "$target/root/mrlab" "$target/root/.cargo"
else
  reuse=0
  rm -rf "$target"; mkdir -p "$target"
  echo "portability: debootstrap $suite into $target" >&2
  debootstrap --variant=minbase --include=git,ca-certificates "$suite" "$target" \
    http://deb.debian.org/debian >"$work/$suite.debootstrap.log" 2>&1 ||
    { tail -20 "$work/$suite.debootstrap.log" >&2; exit 1; }
fi
cp /etc/resolv.conf "$target/etc/resolv.conf"
# The host's own trust anchors come along (a host behind a TLS-inspecting proxy reaches
# crates.io only with them); the root's packages are otherwise its own.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$target/usr/local/share/ca-certificates/"
  chroot "$target" update-ca-certificates >/dev/null 2>&1
fi
bind /proc "$target/proc"; bind /sys "$target/sys"; bind /dev "$target/dev"
bind /dev/pts "$target/dev/pts"
bind "$rustc" "$target/opt/rust" ro
bind "$repo" "$target/src/mrlab" ro

# The clone: committed HEAD only, as `git clone` gives it; no cache, no shared/ beside it.
chroot "$target" git -c safe.directory='*' clone -q /src/mrlab /root/mrlab
env_in=(env -i HOME=/root PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  TERM=dumb LANG=C.UTF-8 CARGO_HOME=/root/.cargo)
log="$work/$suite.log"; : >"$log"; summary="$work/$suite.summary"; : >"$summary"
run() { # run NAME COMMAND
  local start=$SECONDS rc=0
  echo "portability: [$suite] $2" | tee -a "$log" >&2
  chroot "$target" "${env_in[@]}" bash -c "cd /root/mrlab && $2" >>"$log" 2>&1 || rc=$?
  local line
  line="$1: rc=$rc in $((SECONDS - start)) s; $(grep -E '^[0-9]+ passed, [0-9]+ failed|^test result: FAILED' "$log" | tail -1)"
  echo "$line" | tee -a "$summary" >&2
  return $rc
}
. "$target/etc/os-release"
echo "host: $PRETTY_NAME (debootstrap $suite, $(date -u +%Y-%m-%d)); rust $(rustc --version | cut -d' ' -f2)" | tee "$summary" >&2
status=0
if [ "$reuse" = 1 ]; then
  run "setup" 'ci/setup-host.sh' || status=1
else
  run "first command" 'ci/setup-host.sh && cargo run --release -p mrlab -- run scenarios/' || status=1
fi
run "second command" 'cargo test --workspace --locked' || status=1
grep -h "^test result" "$log" | awk '{p+=$4; f+=$6} END {print "cargo test: " p " passed, " f " failed"}' | tee -a "$summary" >&2
# Nothing outside the clone was read: no shared/ exists in the root to read.
[ ! -e "$target/root/shared" ] && [ ! -e "$target/shared" ]
exit $status
