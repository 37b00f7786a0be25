"""What the host needs for the real-kernel harness, installed on demand with the system's apt.

Only packages missing from the machine are installed, with ``--no-upgrade`` so nothing already
installed changes; the system's apt configuration is never touched (the archive state for
kernels is private, see :mod:`rseqlab.vm.archive`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import Unavailable

#: command (or file) -> Debian package providing it
QEMU_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static"}
BUILD_TOOLS = {"flex": "flex", "bison": "bison", "bc": "bc", "cpio": "cpio", "make": "make",
               "gcc": "gcc", "/usr/include/gelf.h": "libelf-dev", "zstd": "zstd",
               "dpkg-deb": "dpkg", "xz": "xz-utils"}
_updated = False


def _have(what: str) -> bool:
    return Path(what).exists() if what.startswith("/") else shutil.which(what) is not None


def missing(tools: dict[str, str]) -> list[str]:
    return sorted({pkg for what, pkg in tools.items() if not _have(what)})


def ensure(tools: dict[str, str], *, why: str, log=None) -> None:
    """Install the packages behind any missing tool (root only), or say which are missing."""
    global _updated
    need = missing(tools)
    if not need:
        return
    if os.geteuid() != 0:
        raise Unavailable(f"{why} needs {', '.join(need)} (install them, or run as root to have rseqlab do it)")
    if log:
        log(f"installing {' '.join(need)} (apt-get install --no-upgrade)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _updated:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        _updated = True
    res = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-upgrade", *need], env=env,
                         capture_output=True, text=True)
    still = missing(tools)
    if res.returncode != 0 or still:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
        raise Unavailable(f"{why}: could not install {', '.join(still or need)}: {tail[0]}")


def kvm_usable() -> bool:
    """Whether /dev/kvm can be opened read-write (QEMU then also has to start with it)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


#: Static glibc for the guest programs (``gcc -static``).
STATIC_LIBC = {"/usr/lib/x86_64-linux-gnu/libc.a": "libc6-dev"}


def main() -> int:
    """``python -m rseqlab.vm.host``: install whatever the VM targets need and is missing."""
    import sys

    from ..errors import RseqlabError

    try:
        ensure({**QEMU_TOOLS, **BUILD_TOOLS, **STATIC_LIBC}, why="the VM targets",
               log=lambda m: print(f"rseqlab: {m}", file=sys.stderr))
    except RseqlabError as exc:
        print(f"rseqlab: error: {exc}", file=sys.stderr)
        return int(exc.status)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
