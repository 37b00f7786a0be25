"""Debian's kernels through a private apt state: which releases exist, and fetching them.

The archive URI is the one the machine's own apt configuration uses (deb822
``/etc/apt/sources.list.d/*.sources`` ``URIs:`` or one-line ``/etc/apt/sources.list``); the
suites ``sid``, ``experimental`` and ``trixie-backports`` go into a sources.list under the cache
directory, and every apt call points ``Dir::Etc::sourcelist``, ``Dir::State::Lists`` and
``Dir::Cache`` there, so the system's apt state is never read for kernels nor changed.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Unavailable

SUITES = ("sid", "experimental", "trixie-backports")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: apt lists older than this are refreshed before a lookup.
MAX_LIST_AGE_S = 24 * 3600
FLAVOUR = "cloud-amd64"


def archive_uri(etc: Path = Path("/etc/apt")) -> str:
    """The main archive URI of the machine's apt configuration (not its security archive)."""
    uris: list[str] = []
    parts = etc / "sources.list.d"
    for f in sorted(parts.glob("*.sources")) if parts.is_dir() else []:
        for stanza in re.split(r"\n\s*\n", f.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if "deb" in fields.get("types", "").split():
                uris += fields.get("uris", "").split()
    files = [etc / "sources.list"] + (sorted(parts.glob("*.list")) if parts.is_dir() else [])
    for f in files:
        if not f.is_file():
            continue
        for line in f.read_text(errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", line)
            if m:
                uris.append(m.group(1))
    uris = [u.rstrip("/") for u in uris if re.match(r"^(https?|file)://", u)]
    main = [u for u in uris if not re.search(r"security|updates|backports", u)]
    if not (main or uris):
        raise Unavailable(f"no apt archive URI found in {etc}/sources.list or {etc}/sources.list.d/*.sources")
    return (main or uris)[0]


def sources_list(uri: str) -> str:
    lines = []
    for suite in SUITES:
        for kind in ("deb", "deb-src"):
            lines.append(f"{kind} [signed-by={KEYRING}] {uri} {suite} main")
    return "\n".join(lines) + "\n"


def upstream_of(debian_version: str) -> str:
    """``6.19.10-1~bpo13+1`` -> ``6.19.10``; ``7.3~rc7-1~exp1`` -> ``7.3~rc7``."""
    v = debian_version.split(":", 1)[-1]
    return v.rsplit("-", 1)[0] if "-" in v else v


def version_key(v: str) -> tuple:
    """Sort key of an upstream version; a ``~rcN`` sorts before the release."""
    base, _, rc = v.partition("~")
    nums = tuple(int(x) for x in re.findall(r"\d+", base))
    rcn = int(re.sub(r"\D", "", rc) or 0) if rc else None
    return nums + ((-1, rcn) if rc else (0, 0))


def matches(request: str, version: str) -> bool:
    """``6.19`` matches every 6.19.y (and 6.19 itself); ``6.19.10`` only itself."""
    if version == request:
        return True
    return version.startswith(request + ".") and "~" not in version


@dataclass
class Source:
    debian: str
    upstream: str
    tarball: str
    sha256: str
    size: int


@dataclass
class Release:
    upstream: str
    sources: list[Source] = field(default_factory=list)
    binaries: list[str] = field(default_factory=list)


def parse_showsrc(text: str) -> list[Source]:
    """``apt-cache showsrc linux`` stanzas -> the upstream tarball of each Debian version."""
    out: list[Source] = []
    for stanza in re.split(r"\n\s*\n", text):
        ver = re.search(r"^Version:\s*(\S+)", stanza, re.M)
        pkg = re.search(r"^Package:\s*(\S+)", stanza, re.M)
        if not ver or not pkg or pkg.group(1) != "linux":
            continue
        sums = re.search(r"^Checksums-Sha256:\s*\n((?:[ \t].*\n?)+)", stanza, re.M)
        if not sums:
            continue
        for line in sums.group(1).splitlines():
            parts = line.split()
            if len(parts) == 3 and re.match(r"^linux_.*\.orig\.tar\.(xz|gz)$", parts[2]):
                up = upstream_of(ver.group(1))
                out.append(Source(ver.group(1), up, parts[2], parts[0], int(parts[1])))
    return out


_BIN = re.compile(r"^linux-binary-(?:unsigned-)?(\d+\.\d+(?:\.\d+)?(?:~rc\d+)?)(?:\+deb\d+)?-" + FLAVOUR + r"$")


def parse_binary_names(text: str) -> dict[str, list[str]]:
    """``apt-cache search`` lines -> {upstream version: [package, ...]} (signed first)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        name = line.split(" ", 1)[0].strip()
        m = _BIN.match(name)
        if m:
            out.setdefault(m.group(1), []).append(name)
    for v in out:
        out[v].sort(key=lambda n: ("unsigned" in n, n))
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Archive:
    """The private apt state under ``root`` (``<cache>/apt``)."""

    def __init__(self, root: Path, log=None) -> None:
        self.root = root
        self.log = log or (lambda msg: None)
        self.sources = root / "sources.list"
        self.lists = root / "lists"
        self.cache = root / "cache"

    def options(self) -> list[str]:
        return ["-o", f"Dir::Etc::sourcelist={self.sources}", "-o", "Dir::Etc::sourceparts=-",
                "-o", f"Dir::State::Lists={self.lists}", "-o", f"Dir::Cache={self.cache}",
                "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"]

    def _run(self, tool: str, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run([tool, *self.options(), *args], capture_output=True, text=True, cwd=cwd)
        if check and res.returncode != 0:
            tail = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.startswith("E:")][-1:] or \
                (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
            raise Unavailable(f"{tool} {' '.join(args[:2])}: {tail[0]}")
        return res

    def update(self, *, force: bool = False) -> None:
        (self.lists / "partial").mkdir(parents=True, exist_ok=True)
        (self.cache / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        text = sources_list(archive_uri())
        fresh = self.sources.is_file() and self.sources.read_text() == text
        stamp = self.root / "updated"
        if fresh and not force and stamp.is_file() and time.time() - stamp.stat().st_mtime < MAX_LIST_AGE_S:
            return
        self.sources.write_text(text)
        self.log(f"apt-get update of {', '.join(SUITES)} (private state in {self.root})")
        self._run("apt-get", "update", "-qq")
        stamp.touch()

    def releases(self) -> dict[str, Release]:
        self.update()
        srcs = parse_showsrc(self._run("apt-cache", "showsrc", "linux", check=False).stdout)
        bins = parse_binary_names(self._run("apt-cache", "search", "--names-only", "^linux-binary-").stdout)
        out: dict[str, Release] = {}
        for s in srcs:
            r = out.setdefault(s.upstream, Release(s.upstream))
            if all(x.debian != s.debian for x in r.sources):
                r.sources.append(s)
        for v, names in bins.items():
            out.setdefault(v, Release(v)).binaries = names
        return dict(sorted(out.items(), key=lambda kv: version_key(kv[0])))

    def fetch_source(self, src: Source, dest_dir: Path) -> Path:
        """The verified upstream tarball of ``src`` in ``dest_dir`` (downloaded if needed)."""
        dest = dest_dir / src.tarball
        if dest.is_file():
            if dest.stat().st_size == src.size and sha256_file(dest) == src.sha256:
                return dest
            dest.unlink()
        dest_dir.mkdir(parents=True, exist_ok=True)
        work = dest_dir / f".get-{src.upstream}"
        work.mkdir(exist_ok=True)
        self.log(f"downloading {src.tarball} ({src.size / 1e6:.0f} MB) via apt-get source -d linux={src.debian}")
        # The .dsc and debian tarball of these versions are often gone; the upstream tarball,
        # which apt fetches first and checks against the Sources index, may still be there.
        res = self._run("apt-get", "source", "-d", "-qq", f"linux={src.debian}", cwd=work, check=False)
        got = work / src.tarball
        try:
            if not got.is_file():
                errs = [ln for ln in (res.stderr or "").splitlines() if src.tarball in ln and "E:" in ln]
                why = "404 Not Found" if any("404" in e for e in errs) else (errs[-1:] or ["not downloaded"])[0]
                raise Unavailable(f"source tarball {src.tarball}: {why}")
            if got.stat().st_size != src.size or sha256_file(got) != src.sha256:
                raise Unavailable(f"source tarball {src.tarball}: SHA-256 does not match the Sources index")
            got.rename(dest)
        finally:
            for f in work.iterdir():
                f.unlink()
            work.rmdir()
        return dest

    def fetch_binary(self, package: str, dest_dir: Path) -> Path:
        """``apt-get download`` one binary kernel package; returns the .deb."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        have = sorted(dest_dir.glob(f"{package}_*.deb"))
        if have:
            return have[-1]
        self.log(f"downloading {package} (apt-get download)")
        self._run("apt-get", "download", "-qq", package, cwd=dest_dir)
        have = sorted(dest_dir.glob(f"{package}_*.deb"))
        if not have:
            raise Unavailable(f"apt-get download {package}: no .deb written")
        return have[-1]
