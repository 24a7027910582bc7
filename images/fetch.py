#!/usr/bin/env python3
"""Fetch what images/packages.lock pins, from Debian's archive, without root.

Two kinds of entries:
- [[package]]: one .deb, extracted with `dpkg-deb -x` into <cache>/debs/<id>/ (firmware,
  kernels, systemd-boot, ukify).
- [[root]]: a program with its whole Depends closure (libc6 included) over an empty dpkg
  status, extracted together into <cache>/roots/<id>/ and started through that root's own
  dynamic loader, so the same bytes run on any glibc host (Debian 12, 13, Ubuntu 24.04).
  Absolute symlinks inside the root are made relative, so it does not reach into the host.

Each apt call uses a private state under <cache>/apt/ (sources, lists, archives; an empty
dpkg status for closures): the host's sources, lists and installed packages are never read
or touched. Every .deb is checked against the lock's sha256 before it is extracted.
Idempotent: an entry whose stamp matches the lock is skipped.

  images/fetch.sh                 fetch what is missing
  images/fetch.sh --update-lock [ID…]   re-pin every entry (or those ids) to the newest
                                        version its suites serve, then fetch
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "images" / "packages.lock"
CACHE = Path(os.environ.get("MRLAB_CACHE") or REPO / ".cache")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class FetchError(Exception):
    """One line for the user: what failed and what to do."""


def log(msg):
    print(f"fetch: {msg}", file=sys.stderr, flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def root_stamp(members):
    """The stamp of a root: sha256 over its pinned member lines (images::Cache reads it too)."""
    return hashlib.sha256("".join(m + "\n" for m in members).encode()).hexdigest()


def source_line(suite):
    archive = "debian-security" if suite.endswith("-security") else "debian"
    return f"deb [signed-by={KEYRING}] http://deb.debian.org/{archive} {suite} main\n"


class Apt:
    """apt-get/apt-cache on a private state that knows only `suites`."""

    def __init__(self, suites, empty_status=False):
        self.dir = CACHE / "apt" / "+".join(suites)
        for sub in ("lists/partial", "cache/archives/partial", "parts"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "sources.list").write_text("".join(source_line(s) for s in suites))
        self.opts = [
            "-o", f"Dir::Etc::SourceList={self.dir / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={self.dir / 'parts'}",
            "-o", f"Dir::State::Lists={self.dir / 'lists'}",
            "-o", f"Dir::Cache={self.dir / 'cache'}",
            "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root",
        ]
        if empty_status:
            status = self.dir / "empty-status"
            status.write_text("")
            self.opts += ["-o", f"Dir::State::status={status}"]
        self.fresh = False

    def run(self, tool, *args, cwd=None):
        proc = subprocess.run([tool, *self.opts, *args], cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise FetchError(f"{tool} {' '.join(args[:3])}…: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def update(self):
        if not self.fresh:
            log(f"updating private apt lists in {self.dir}")
            self.run("apt-get", "update", "-qq")
            self.fresh = True

    def has_lists(self):
        return any(p.name.endswith("InRelease") for p in (self.dir / "lists").iterdir())

    def download(self, specs, dest):
        """Downloads name=version specs into dest; a version gone from the mirror is one line."""
        if not self.has_lists():
            self.update()
        try:
            self.run("apt-get", "download", "-qq", *specs, cwd=dest)
        except FetchError:
            # Lists may be stale (a point release replaced a version): refresh once and retry.
            self.update()
            try:
                self.run("apt-get", "download", "-qq", *specs, cwd=dest)
            except FetchError as e:
                raise FetchError(
                    f"{e}; a pinned version is not on the mirror any more: "
                    "run 'images/fetch.sh --update-lock' to re-pin"
                ) from None

    def sha256s(self, specs):
        """{(name, version): sha256} of name=version specs, from the package index."""
        out, name, version = {}, None, None
        for line in self.run("apt-cache", "show", *specs).splitlines():
            if line.startswith("Package: "):
                name = line.split(": ", 1)[1]
            elif line.startswith("Version: "):
                version = line.split(": ", 1)[1]
            elif line.startswith("SHA256: "):
                out.setdefault((name, version), line.split(": ", 1)[1])
        return out

    def closure(self, install, release):
        """(name, version) of everything `apt-get install` would unpack on an empty system."""
        args = ["-s", "-qq", "-o", "APT::Install-Recommends=0", "install", *install]
        if release:
            args = ["-t", release, *args]
        found = re.findall(r"^Inst (\S+) \((\S+) ", self.run("apt-get", *args), re.M)
        if not found:
            raise FetchError(f"apt resolved nothing for {install}")
        return sorted(found)

    def newest(self, name, suite):
        for line in self.run("apt-cache", "madison", name).splitlines():
            cols = [c.strip() for c in line.split("|")]
            if len(cols) >= 3 and re.search(rf"\s{re.escape(suite)}/", f" {cols[2]}"):
                return cols[1]
        raise FetchError(f"{name} has no version in {suite}")


def fetch_debs(apt, want, what):
    """Makes sure <cache>/dl holds each (name, version, sha256) .deb; returns their paths."""
    dl = CACHE / "dl"
    dl.mkdir(parents=True, exist_ok=True)
    paths, missing = {}, []
    for name, version, sha in want:
        path = dl / f"{name}_{version.replace(':', '%3a')}.deb"
        paths[(name, version)] = path
        if not (path.exists() and sha256_file(path) == sha):
            missing.append((name, version, sha))
    if missing:
        log(f"{what}: downloading {len(missing)} package(s)")
        with tempfile.TemporaryDirectory(dir=dl) as tmp:
            apt.download([f"{n}={v}" for n, v, _ in missing], tmp)
            by_sha = {sha256_file(p): p for p in Path(tmp).glob("*.deb")}
            for name, version, sha in missing:
                got = by_sha.get(sha)
                if got is None:
                    raise FetchError(
                        f"{what}: {name}={version}: no download has the lock's sha256 {sha}"
                    )
                os.replace(got, paths[(name, version)])
    return paths


def extract(debs, dest):
    """dpkg-deb -x each .deb into a fresh dest (built aside, then renamed into place)."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        return tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def install(tmp, dest, stamp):
    (tmp / ".stamp").write_text(stamp + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def relative_symlinks(root):
    """An absolute link inside the root (lib64/ld-linux…, bios-256k.bin → /usr/share/seabios/…)
    would reach into the host: point it at the root's own copy instead."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            link = Path(dirpath) / name
            if not link.is_symlink():
                continue
            target = os.readlink(link)
            if not target.startswith("/"):
                continue
            inside = root / target.lstrip("/")
            if os.path.lexists(inside):
                link.unlink()
                link.symlink_to(os.path.relpath(inside, link.parent))


def lock_entries():
    with open(LOCK, "rb") as f:
        lock = tomllib.load(f)
    return lock.get("package", []), lock.get("root", [])


def member(line, root_id):
    parts = line.split()
    if len(parts) != 3:
        raise FetchError(f"{LOCK}: root {root_id}: bad member '{line}' (want 'name version sha256')")
    return tuple(parts)


def fetch_packages(packages):
    suites = sorted({p["suite"] for p in packages} | {"bookworm-security"})
    apt = Apt(suites)
    for n, p in enumerate(packages, 1):
        pid = p["id"]
        dest = CACHE / "debs" / pid
        tag = f"[{n}/{len(packages)}] {pid}"
        if (dest / ".stamp").exists() and (dest / ".stamp").read_text().strip() == p["sha256"]:
            log(f"{tag} up to date")
            continue
        debs = fetch_debs(apt, [(p["name"], p["version"], p["sha256"])], tag)
        log(f"{tag}: extracting")
        dest.parent.mkdir(parents=True, exist_ok=True)
        install(extract(debs.values(), dest), dest, p["sha256"])


def fetch_roots(roots):
    for n, r in enumerate(roots, 1):
        rid = r["id"]
        members = r["packages"]
        want = [member(m, rid) for m in members]
        dest = CACHE / "roots" / rid
        tag = f"[root {n}/{len(roots)}] {rid}"
        stamp = root_stamp(members)
        if (dest / ".stamp").exists() and (dest / ".stamp").read_text().strip() == stamp:
            log(f"{tag} up to date ({len(want)} packages)")
            continue
        apt = Apt(r["suites"], empty_status=True)
        debs = fetch_debs(apt, want, tag)
        log(f"{tag}: extracting {len(want)} packages")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = extract(debs.values(), dest)
        relative_symlinks(tmp)
        install(tmp, dest, stamp)


def update_lock(packages, roots, only):
    """Re-pins every entry (or only the ids in `only`) to the newest its suites serve."""
    if only:
        unknown = set(only) - {e["id"] for e in packages + roots}
        if unknown:
            raise FetchError(f"--update-lock: no entry with id {', '.join(sorted(unknown))} in {LOCK}")
        packages = [p for p in packages if p["id"] in only]
        roots = [r for r in roots if r["id"] in only]
    text = LOCK.read_text()
    apt = Apt(sorted({p["suite"] for p in packages} | {"bookworm-security"}))
    if packages:
        apt.update()
    for p in packages:
        cand = apt.newest(p["name"], p["suite"])
        if cand == p["version"]:
            continue
        sha = apt.sha256s([f"{p['name']}={cand}"])[(p["name"], cand)]
        block = re.search(r'\[\[package\]\]\nid = "%s"\n(?:.*\n)*?(?=\n|\Z)' % re.escape(p["id"]), text)
        new = re.sub(r'version = ".*"', f'version = "{cand}"', block.group(0))
        new = re.sub(r'sha256 = ".*"', f'sha256 = "{sha}"', new)
        text = text.replace(block.group(0), new)
        log(f"{p['id']}: {p['version']} -> {cand}")
    for r in roots:
        apt = Apt(r["suites"], empty_status=True)
        apt.update()
        closure = apt.closure(r["install"], r.get("release"))
        shas = apt.sha256s([f"{n}={v}" for n, v in closure])
        lines = [f"{n} {v} {shas[(n, v)]}" for n, v in closure]
        if lines == r["packages"]:
            continue
        body = "".join(f'    "{line}",\n' for line in lines)
        start = text.index(f'[[root]]\nid = "{r["id"]}"\n')
        m = re.compile(r"packages = \[\n(?:    \".*\",\n)*\]").search(text, start)
        text = text[: m.start()] + f"packages = [\n{body}]" + text[m.end():]
        old = {tuple(x.split()[:2]) for x in r["packages"]}
        changed = [f"{n} {v}" for n, v in closure if (n, v) not in old]
        log(f"root {r['id']}: {len(changed)} package(s) new or re-pinned: {', '.join(changed[:8])}"
            + (" …" if len(changed) > 8 else ""))
    LOCK.write_text(text)


def main():
    packages, roots = lock_entries()
    args = sys.argv[1:]
    if args[:1] == ["--update-lock"]:
        update_lock(packages, roots, args[1:])
        packages, roots = lock_entries()
    elif args:
        raise FetchError(f"unknown arguments {args} (usage: images/fetch.sh [--update-lock [ID…]])")
    fetch_packages(packages)
    fetch_roots(roots)


if __name__ == "__main__":
    try:
        main()
    except FetchError as e:
        log(str(e))
        sys.exit(1)
