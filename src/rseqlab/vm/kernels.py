"""Kernels for the harness: the cache, Debian's binary kernels, and statistics builds.

Layout under ``$XDG_CACHE_HOME/rseqlab/kernels`` (default ``~/.cache/rseqlab/kernels``), outside
any checkout so a fresh clone on the same machine reuses it:

- ``apt/``: the private apt state (:mod:`rseqlab.vm.archive`);
- ``src/linux_<version>.orig.tar.xz``: verified upstream tarballs; ``deb/``: binary packages;
- ``<version>-binary/``: Debian's cloud kernel (``vmlinuz``, ``config``, ``meta.json``);
- ``<version>-stats-<hash>/``: a tinyconfig build with ``CONFIG_RSEQ_STATS`` (``vmlinux``,
  ``config``, ``meta.json``); ``<hash>`` is :func:`rseqlab.vm.kconfig.config_hash` of the
  merged fragment. The 2 GB build tree is deleted once the vmlinux is kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput, RseqlabError, Unavailable
from . import host, kconfig
from .archive import Archive, Release, matches, version_key


def cache_root() -> Path:
    from ..cache import cache_root as root

    return root()


def kernels_dir() -> Path:
    """``<cache>/kernels``, created and checked (one line naming it when it cannot be used)."""
    from ..cache import cache_dir

    return cache_dir("kernels")


_VERSION = re.compile(r"^\d+\.\d+(?:\.\d+)?(?:~rc\d+)?$")


def check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise BadInput(f"not a kernel version: {version!r} (expected e.g. 6.19.10, 6.19 or 7.0.9)")
    return version


@dataclass
class Cached:
    """A kernel in the cache."""

    version: str
    kind: str           # "binary" or "stats"
    path: Path          # the directory
    meta: dict

    @property
    def image(self) -> Path:
        return self.path / self.meta["image"]

    @property
    def stats(self) -> bool:
        return self.kind == "stats"

    @property
    def slice(self) -> bool:
        return bool(self.meta.get("slice"))

    @property
    def config_hash(self) -> str | None:
        return self.meta.get("config_hash")

    def as_json(self) -> dict:
        return {"version": self.version, "kind": self.kind, "stats": self.stats, "slice": self.slice,
                "config_hash": self.config_hash, "image": str(self.image),
                "size": self.image.stat().st_size if self.image.exists() else None,
                "source": self.meta.get("source")}


def cached(root: Path | None = None) -> list[Cached]:
    root = root or kernels_dir()
    out = []
    for meta_path in sorted(root.glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        c = Cached(meta.get("version", "?"), meta.get("kind", "?"), meta_path.parent, meta)
        if c.image.is_file():
            out.append(c)
    out.sort(key=lambda c: (version_key(c.version), c.kind, c.path.name))
    return out


def find_cached(version: str, *, stats: bool | None = None, config_hash: str | None = None,
                extra: dict[str, str] | None = None, root: Path | None = None) -> Cached | None:
    """The newest cached kernel matching ``version`` (a stats build before a binary one).

    ``extra``: only stats builds made with exactly this user fragment (``{}``: the default)."""
    hits = [c for c in cached(root) if matches(version, c.version)
            and (stats is None or c.stats == stats)
            and (config_hash is None or c.config_hash == config_hash)
            and (extra is None or not c.stats or c.meta.get("extra", {}) == extra)]
    if not hits:
        return None
    hits.sort(key=lambda c: (version_key(c.version), c.stats))
    return hits[-1]


def _stderr_log(msg: str) -> None:
    print(f"rseqlab: {msg}", file=sys.stderr, flush=True)


class KernelStore:
    """Finds, fetches and builds kernels; ``log`` gets one line per step (progress)."""

    def __init__(self, root: Path | None = None, log=_stderr_log) -> None:
        self.root = root or kernels_dir()
        self.log = log
        self.archive = Archive(self.root / "apt", log=log)

    # ------------------------------------------------------------------ lookup
    def candidates(self, version: str, releases: dict[str, Release], *, stats: bool) -> list[Release]:
        hits = [r for v, r in releases.items() if matches(version, v) and (r.sources if stats else r.binaries)]
        return sorted(hits, key=lambda r: version_key(r.upstream), reverse=True)

    def get(self, version: str, *, stats: bool = False, fragment: dict[str, str] | None = None,
            offline_ok: bool = True) -> Cached:
        """A cached kernel for ``version`` (``6.19.10`` or ``6.19``), fetched or built if needed."""
        check_version(version)
        extra = fragment or {}
        have = find_cached(version, stats=stats, extra=extra, root=self.root)
        if have is not None and offline_ok:
            return have
        tried: list[str] = []
        releases = self.archive.releases()
        cands = self.candidates(version, releases, stats=stats)
        if not cands:
            what = "source tarball" if stats else f"linux-binary-*-{'cloud-amd64'} package"
            known = ", ".join(v for v, r in releases.items() if (r.sources if stats else r.binaries)
                              and v.split(".")[0] == version.split(".")[0]) or "none"
            raise Unavailable(f"no {what} for {version} in the archive (with one: {known})")
        for rel in cands:
            try:
                if stats:
                    return self._get_stats(rel, extra)
                return self._get_binary(rel)
            except RseqlabError as exc:
                tried.append(f"{rel.upstream}: {exc}")
                self.log(f"{rel.upstream}: {exc}")
        raise Unavailable(f"no kernel {version}{' with statistics' if stats else ''} could be had; tried "
                          + "; ".join(tried))

    # ------------------------------------------------------------------ binary
    def _get_binary(self, rel: Release) -> Cached:
        dest = self.root / f"{rel.upstream}-binary"
        hit = find_cached(rel.upstream, stats=False, root=self.root)
        if hit is not None and hit.version == rel.upstream:
            return hit
        host.ensure({"dpkg-deb": "dpkg"}, why="unpacking a binary kernel", log=self.log)
        errors = []
        for pkg in rel.binaries:
            try:
                deb = self.archive.fetch_binary(pkg, self.root / "deb")
            except RseqlabError as exc:
                errors.append(str(exc))
                continue
            with tempfile.TemporaryDirectory(dir=self.root, prefix=".unpack-") as tmp:
                res = subprocess.run(["dpkg-deb", "-x", str(deb), tmp], capture_output=True, text=True)
                if res.returncode != 0:
                    errors.append(f"dpkg-deb -x {deb.name}: {res.stderr.strip()[-200:]}")
                    continue
                images = sorted(Path(tmp, "boot").glob("vmlinuz-*"))
                if not images:
                    errors.append(f"{deb.name} has no /boot/vmlinuz-*")
                    continue
                if dest.exists():
                    shutil.rmtree(dest)
                dest.mkdir(parents=True)
                shutil.copy2(images[0], dest / "vmlinuz")
                configs = sorted(Path(tmp, "boot").glob("config-*"))
                has_stats = False
                if configs:
                    shutil.copy2(configs[0], dest / "config")
                    has_stats = kconfig.read_config(configs[0].read_text()).get("RSEQ_STATS") == "y"
                meta = {"version": rel.upstream, "kind": "binary", "image": "vmlinuz",
                        "release": images[0].name[len("vmlinuz-"):], "package": pkg, "deb": deb.name,
                        "source": "debian binary package", "rseq_stats_configured": has_stats,
                        "slice": bool(configs) and kconfig.read_config(configs[0].read_text())
                        .get("RSEQ_SLICE_EXTENSION") == "y"}
                (dest / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            deb.unlink(missing_ok=True)
            self.log(f"kernel {rel.upstream} (binary, {meta['release']}) cached in {dest}")
            return Cached(rel.upstream, "binary", dest, meta)
        raise Unavailable("; ".join(errors) or "no binary package")

    # ------------------------------------------------------------------ stats build
    def _get_stats(self, rel: Release, extra: dict[str, str]) -> Cached:
        errors = []
        tarball = None
        for src in sorted(rel.sources, key=lambda s: s.debian, reverse=True):
            try:
                tarball = self.archive.fetch_source(src, self.root / "src")
                break
            except RseqlabError as exc:
                errors.append(str(exc))
        if tarball is None:
            raise Unavailable("; ".join(dict.fromkeys(errors)) or "no source")
        return self.build(rel.upstream, tarball, extra)

    def build(self, version: str, tarball: Path, extra: dict[str, str]) -> Cached:
        host.ensure(host.BUILD_TOOLS, why="building a kernel", log=self.log)
        self.root.mkdir(parents=True, exist_ok=True)
        build_root = Path(tempfile.mkdtemp(dir=self.root, prefix=f".build-{version}-"))
        try:
            self.log(f"extracting {tarball.name}")
            res = subprocess.run(["tar", "-xf", str(tarball), "-C", str(build_root)], capture_output=True, text=True)
            if res.returncode != 0:
                raise Unavailable(f"tar -xf {tarball.name}: {res.stderr.strip()[-200:]}")
            trees = [p for p in build_root.iterdir() if p.is_dir()]
            if len(trees) != 1:
                raise Unavailable(f"{tarball.name} does not hold one source tree")
            tree = trees[0]
            options = configure(tree, extra, log=self.log)
            key = kconfig.config_hash(options)
            hit = find_cached(version, stats=True, config_hash=key, root=self.root)
            if hit is not None and hit.version == version:
                return hit
            log_path = self.root / f"build-{version}-{key}.log"
            self.log(f"building {version} vmlinux (make -j{os.cpu_count() or 1} vmlinux; log {log_path}); "
                     "about 5 CPU-minutes")
            make(tree, log_path, log=self.log)
            return self.keep(version, tree, options, extra, tarball.name)
        finally:
            shutil.rmtree(build_root, ignore_errors=True)

    def keep(self, version: str, tree: Path, options: dict[str, str], extra: dict[str, str],
             source: str) -> Cached:
        """Keep a built tree's vmlinux and config as ``<version>-stats-<hash>``."""
        key = kconfig.config_hash(options)
        dest = self.root / f"{version}-stats-{key}"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        shutil.copy2(tree / "vmlinux", dest / "vmlinux")
        shutil.copy2(tree / ".config", dest / "config")
        (dest / "fragment.config").write_text(kconfig.fragment_text(options))
        rel_file = tree / "include/config/kernel.release"
        release = rel_file.read_text().strip() if rel_file.is_file() else version
        meta = {"version": version, "kind": "stats", "image": "vmlinux", "config_hash": key,
                "release": release, "source": source, "slice": options.get("RSEQ_SLICE_EXTENSION") == "y",
                "rseq_stats_configured": True, "extra": extra,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (dest / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        self.log(f"kernel {version} (stats{', slice' if meta['slice'] else ''}) cached in {dest}")
        return Cached(version, "stats", dest, meta)


def configure(tree: Path, extra: dict[str, str], log=_stderr_log) -> dict[str, str]:
    """tinyconfig + the fragment + olddefconfig in ``tree``; returns the options asked for.

    Raises :class:`Unavailable` naming every required option the result lacks."""
    present = {o for o in kconfig.WHERE_PRESENT if kconfig.kconfig_defines(tree, o)}
    options = kconfig.wanted(present, extra)
    frag = tree / "rseqlab.config"
    frag.write_text(kconfig.fragment_text(options))
    steps = [["make", "-s", "tinyconfig"],
             ["scripts/kconfig/merge_config.sh", "-m", ".config", str(frag)],
             ["make", "-s", "olddefconfig"]]
    for cmd in steps:
        res = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
        if res.returncode != 0:
            raise Unavailable(f"{' '.join(cmd)} failed: {(res.stderr or res.stdout).strip()[-300:]}")
    missing = kconfig.verify(kconfig.read_config((tree / ".config").read_text()), options)
    if missing:
        raise Unavailable(f"the configuration lacks {', '.join(missing)} after olddefconfig "
                          "(dependencies not met in this release)")
    log(f"configured: tinyconfig + {len(options)} options ({', '.join(sorted(present)) or 'no optional ones'})")
    return options


def make(tree: Path, log_path: Path, log=_stderr_log) -> None:
    jobs = str(os.cpu_count() or 1)
    with open(log_path, "w") as out:
        proc = subprocess.Popen(["make", f"-j{jobs}", "vmlinux"], cwd=tree, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        stop = threading.Event()

        def progress() -> None:
            t0 = time.monotonic()
            while not stop.wait(30):
                try:
                    n = sum(1 for ln in open(log_path, errors="replace") if ln.lstrip().startswith("CC"))
                except OSError:
                    n = 0
                log(f"  ... {int(time.monotonic() - t0)} s, {n} files compiled")

        th = threading.Thread(target=progress, daemon=True)
        th.start()
        try:
            rc = proc.wait()
        except BaseException:
            os.killpg(proc.pid, 15)
            proc.wait()
            raise
        finally:
            stop.set()
    if rc != 0 or not (tree / "vmlinux").is_file():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise Unavailable(f"make vmlinux failed (exit {rc}): {' | '.join(tail)}")


#: A config fragment is a few CONFIG_X=y lines; a kernel's whole .config is ~300 KiB.
MAX_FRAGMENT_BYTES = 1 << 20


def parse_fragment_file(path: str) -> dict[str, str]:
    from ..files import open_regular

    with open_regular(path, "config fragment") as f:  # /dev/zero or a FIFO: refused, not read
        data = f.read(MAX_FRAGMENT_BYTES + 1)
    if len(data) > MAX_FRAGMENT_BYTES:
        raise BadInput(f"{path}: more than {MAX_FRAGMENT_BYTES >> 20} MiB; not a config fragment")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text; not a config fragment") from None
    return kconfig.parse_fragment(text, origin=path)
