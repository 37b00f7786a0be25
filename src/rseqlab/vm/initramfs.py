"""The guest's initramfs: busybox, an /init script, the payload and its files, as gzip'd newc cpio.

The archive is written in Python (the ``newc`` format the kernel's ``init/initramfs.c`` unpacks:
a 110-byte ASCII header per entry, name and data each padded to 4 bytes, ``TRAILER!!!`` last),
so no host tool and no root is needed, and :func:`read_cpio` parses it back for the tests.
``/init`` mounts proc, sysfs, devtmpfs, tmpfs, tracefs and debugfs, runs ``/payload``, packs its
output directory, sends it on the second serial port (:mod:`rseqlab.vm.channel`) and powers off.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shlex
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput, Unavailable
from . import channel

#: busybox applets /init and payloads use (symlinks in /bin)
APPLETS = ("sh", "mount", "umount", "mkdir", "cat", "cp", "echo", "tar", "gzip", "sha256sum", "wc",
           "cut", "stty", "sync", "poweroff", "reboot", "uname", "sleep", "ls", "rm", "printf", "env",
           "taskset", "nproc", "true", "false", "dd", "head", "tail", "grep", "sed", "ln", "chmod", "seq",
           "test", "[", "date", "mv", "dmesg", "find", "tr", "kill")
OUTDIR = "/tmp/out"
#: printed on the console when /init starts and when the payload is done
MARK_UP = "RSEQLAB-GUEST-UP"
MARK_DONE = "RSEQLAB-PAYLOAD-DONE"
MARK_SENT = "RSEQLAB-RETURN-SENT"

INIT = f"""#!/bin/sh
# rseqlab guest init: mount, run /payload, send {OUTDIR} back on ttyS1, power off.
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
echo {MARK_UP} $(uname -r)
mkdir -p {OUTDIR}
uname -r > {OUTDIR}/uname
cat /proc/version > {OUTDIR}/proc_version
cat /proc/cpuinfo | grep -c ^processor > {OUTDIR}/nproc
cd /work 2>/dev/null || cd /
/bin/sh /payload > {OUTDIR}/payload.log 2>&1
echo $? > {OUTDIR}/payload_status
echo {MARK_DONE} $(cat {OUTDIR}/payload_status)
cd /
tar -C {OUTDIR} -czf /tmp/return.tgz .
LEN=$(wc -c < /tmp/return.tgz)
SUM=$(sha256sum /tmp/return.tgz | cut -d' ' -f1)
stty -F /dev/ttyS1 raw -echo 2>/dev/null
{{ printf '{channel.MAGIC.decode()} %s %s\\n' $LEN $SUM; cat /tmp/return.tgz; printf '\\n{channel.TRAILER.decode()}\\n'; }} > /dev/ttyS1
sync
echo {MARK_SENT}
# QEMU runs with -no-reboot, so a reboot ends it; it needs no ACPI (poweroff may only halt).
reboot -f
poweroff -f
"""


@dataclass
class Entry:
    name: str              # path inside the archive, without a leading "/"
    mode: int              # full st_mode
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


@dataclass
class Initramfs:
    entries: dict[str, Entry] = field(default_factory=dict)

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.entries:
                self.entries[d] = Entry(d, stat.S_IFDIR | 0o755)

    def dir(self, name: str, mode: int = 0o755) -> None:
        name = name.strip("/")
        self._parents(name)
        self.entries[name] = Entry(name, stat.S_IFDIR | mode)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        self._parents(name)
        self.entries[name] = Entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        self._parents(name)
        self.entries[name] = Entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        name = name.strip("/")
        self._parents(name)
        self.entries[name] = Entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def add_host_file(self, host_path: str | Path, name: str | None = None, mode: int | None = None) -> None:
        """A host file's content (symlinks followed) at ``name`` (default: the same path)."""
        p = Path(host_path)
        try:
            data = p.read_bytes()
            st = p.stat()
        except OSError as exc:
            raise BadInput(f"cannot read {p}: {exc.strerror}") from None
        self.file(name or str(p), data, mode if mode is not None else stat.S_IMODE(st.st_mode))

    def cpio(self) -> bytes:
        out = io.BytesIO()
        for ino, name in enumerate(sorted(self.entries), 1):
            e = self.entries[name]
            _write_entry(out, ino, e.name, e.mode, e.data, e.rdev)
        _write_entry(out, 0, "TRAILER!!!", 0, b"", (0, 0))
        return out.getvalue()

    def write(self, path: Path) -> None:
        path.write_bytes(gzip.compress(self.cpio(), compresslevel=6, mtime=0))


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


def _write_entry(out, ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
    nb = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(mode) else 1
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0)
    hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
    out.write(hdr + nb + b"\0" * _pad(len(hdr) + len(nb)))
    out.write(data + b"\0" * _pad(len(data)))


def read_cpio(blob: bytes) -> dict[str, Entry]:
    """Parse a newc archive (gzip'd or not) back into its entries (the tests' check)."""
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    out: dict[str, Entry] = {}
    pos = 0
    while True:
        if blob[pos:pos + 6] != b"070701":
            raise ValueError(f"bad cpio magic at {pos}")
        f = [int(blob[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        pos += 110
        name = blob[pos:pos + namesize - 1].decode()
        pos += namesize + _pad(110 + namesize)
        data = blob[pos:pos + size]
        pos += size + _pad(size)
        if name == "TRAILER!!!":
            return out
        out[name] = Entry(name, mode, data, (rmaj, rmin))


# ----------------------------------------------------------------------
# what goes in
# ----------------------------------------------------------------------
def busybox_path() -> Path:
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        if p.is_file() and is_static(p):
            return p
    raise Unavailable("no static busybox (install busybox-static)")


def is_static(path: Path) -> bool:
    """An ELF without a PT_INTERP segment needs no loader."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:
                return False
            phoff = int.from_bytes(head[32:40], "little")
            phentsize = int.from_bytes(head[54:56], "little")
            phnum = int.from_bytes(head[56:58], "little")
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    return all(int.from_bytes(table[i * phentsize:i * phentsize + 4], "little") != 3 for i in range(phnum))


def shared_libraries(path: Path) -> list[str]:
    """The absolute paths ``ldd`` resolves for a dynamically linked program, loader included."""
    res = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        raise BadInput(f"ldd {path}: {(res.stderr or res.stdout).strip()[:200]}")
    libs = []
    for line in res.stdout.splitlines():
        line = line.strip()
        m = re.match(r"^\S+\s+=>\s+(/\S+)\s+\(", line) or re.match(r"^(/\S+)\s+\(", line)
        if m:
            libs.append(m.group(1))
        elif "=> not found" in line:
            raise BadInput(f"{path}: shared library {line.split()[0]} not found")
    return libs


def resolve_command(cmd: str) -> Path:
    if "/" in cmd:
        p = Path(cmd)
    else:
        found = shutil.which(cmd)
        if found is None:
            raise BadInput(f"command not found: {cmd}")
        p = Path(found)
    if not p.is_file() or not os.access(p, os.X_OK):
        raise BadInput(f"not an executable file: {cmd}")
    return p.absolute()


def add_program(ramfs: Initramfs, path: Path, name: str | None = None) -> str:
    """Copy a program in at ``name`` (default: its host path), with its libraries if dynamic."""
    name = name or str(path)
    ramfs.add_host_file(path, name, 0o755)
    head = path.read_bytes()[:4]
    if head == b"\x7fELF" and not is_static(path):
        for lib in shared_libraries(path):
            if lib.strip("/") not in ramfs.entries:
                ramfs.add_host_file(lib, lib, 0o755)
    return "/" + name.strip("/")


def build(payload: str, *, programs: dict[str, Path] | None = None, files: dict[str, bytes] | None = None,
          busybox: Path | None = None) -> Initramfs:
    """The whole initramfs: busybox and its applets, /init, /payload (a sh script) and extras."""
    r = Initramfs()
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "work", "etc", "root"):
        r.dir(d)
    r.chardev("dev/console", 5, 1)
    r.chardev("dev/null", 1, 3, 0o666)
    r.add_host_file(busybox or busybox_path(), "bin/busybox", 0o755)
    for a in APPLETS:
        r.symlink(f"bin/{a}", "busybox")
    r.file("init", INIT.encode(), 0o755)
    r.file("payload", payload.encode(), 0o755)
    for name, path in (programs or {}).items():
        add_program(r, path, name)
    for name, data in (files or {}).items():
        r.file(name, data, 0o755)
    return r


def command_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
