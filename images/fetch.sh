#!/usr/bin/env bash
# Fetch the packages pinned in images/packages.lock with `apt-get download`, verify their sha256
# and extract each with `dpkg-deb -x` into .cache/debs/<id>/. No root needed, the host's apt
# sources and state are untouched (a private apt state under .cache/apt). Idempotent: an entry
# whose stamp matches the lock is skipped.
#   images/fetch.sh                 fetch what is missing
#   images/fetch.sh --update-lock   re-pin every entry to the newest version its suite serves
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lock="$root/images/packages.lock"
cache="${MRLAB_CACHE:-$root/.cache}"
apt_dir="$cache/apt"
update_lock=0
[ "${1:-}" = "--update-lock" ] && update_lock=1

mkdir -p "$apt_dir"/{lists/partial,cache/archives/partial,parts} "$cache/debs" "$cache/dl"
cat > "$apt_dir/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
SRC
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/parts"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o Debug::NoLocking=1
  -o APT::Sandbox::User=root)

# One line per package: id name version suite sha256.
entries=$(python3 - "$lock" <<'PY'
import sys, tomllib
for p in tomllib.load(open(sys.argv[1], "rb"))["package"]:
    print(p["id"], p["name"], p["version"], p["suite"], p["sha256"])
PY
)

lists_fresh=0
refresh_lists() {
  if [ $lists_fresh = 0 ]; then
    echo "fetch: updating private apt lists in $apt_dir" >&2
    apt-get "${apt_opts[@]}" update -qq
    lists_fresh=1
  fi
}

if [ $update_lock = 1 ]; then
  refresh_lists
  new="$lock.new"; cp "$lock" "$new"
  while read -r id name version suite sha; do
    cand=$(apt-cache "${apt_opts[@]}" madison "$name" | awk -v s="$suite" '$0 ~ " "s"/" {print $3; exit}')
    [ -n "$cand" ] || { echo "fetch: $id: $name has no version in $suite" >&2; exit 1; }
    if [ "$cand" != "$version" ]; then
      (cd "$cache/dl" && apt-get "${apt_opts[@]}" download -qq "$name=$cand")
      newsha=$(sha256sum "$cache/dl/$(ls "$cache/dl" | grep -F "${name}_" | grep -F "${cand#*:}" | head -1)" | cut -d' ' -f1)
      python3 - "$new" "$id" "$cand" "$newsha" <<'PY'
import sys, re
path, id_, ver, sha = sys.argv[1:]
text = open(path).read()
block = re.search(r'(\[\[package\]\]\nid = "%s"\n(?:.*\n)*?)(?=\n\[\[|\Z)' % re.escape(id_), text).group(1)
nb = re.sub(r'version = ".*"', 'version = "%s"' % ver, block)
nb = re.sub(r'sha256 = ".*"', 'sha256 = "%s"' % sha, nb)
open(path, "w").write(text.replace(block, nb))
PY
      echo "fetch: $id: $version -> $cand" >&2
    fi
  done <<< "$entries"
  mv "$new" "$lock"
  exec "$0"
fi

total=$(wc -l <<< "$entries"); n=0
while read -r id name version suite sha; do
  n=$((n + 1))
  dest="$cache/debs/$id"
  if [ -f "$dest/.stamp" ] && [ "$(cat "$dest/.stamp")" = "$sha" ]; then
    echo "fetch: [$n/$total] $id up to date" >&2
    continue
  fi
  deb="$cache/dl/${id}.deb"
  if [ ! -f "$deb" ] || [ "$(sha256sum "$deb" | cut -d' ' -f1)" != "$sha" ]; then
    refresh_lists
    echo "fetch: [$n/$total] $id: downloading $name=$version ($suite)" >&2
    tmp=$(mktemp -d "$cache/dl/tmp.XXXXXX")
    if ! (cd "$tmp" && apt-get "${apt_opts[@]}" download -qq "$name=$version" 2>"$tmp/err"); then
      cat "$tmp/err" >&2
      echo "fetch: $id: $name=$version is not on the mirror any more; run 'images/fetch.sh --update-lock' to re-pin" >&2
      rm -rf "$tmp"; exit 1
    fi
    mv "$tmp"/*.deb "$deb"; rm -rf "$tmp"
  fi
  got=$(sha256sum "$deb" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "fetch: $id: sha256 mismatch for $deb: lock says $sha, file has $got" >&2
    exit 1
  fi
  echo "fetch: [$n/$total] $id: extracting" >&2
  rm -rf "$dest"; mkdir -p "$dest"
  dpkg-deb -x "$deb" "$dest"
  echo "$sha" > "$dest/.stamp"
done <<< "$entries"
