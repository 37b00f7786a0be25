"""One guest run: initramfs with a payload, boot, return channel, unpacked output directory."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from . import channel, initramfs, qemu
from .kernels import Cached, cache_root
from ..tmpdirs import owned_tempdir


@dataclass
class GuestRun:
    outdir: Path
    console: str
    seconds: float
    accel: str
    serial_log: Path

    def read(self, name: str) -> str:
        p = self.outdir / name
        return p.read_text(errors="replace") if p.is_file() else ""

    @property
    def release(self) -> str:
        return self.read("uname").strip()

    @property
    def payload_status(self) -> int | None:
        s = self.read("payload_status").strip()
        return int(s) if s.lstrip("-").isdigit() else None


def default_serial_log(kernel: Cached) -> Path:
    d = cache_root() / "vm"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"serial-{kernel.version}.log"


def run(kernel: Cached, payload: str, outdir: Path, *, programs: dict[str, Path] | None = None,
        files: dict[str, bytes] | None = None, cpus: int = 2, mem_mb: int = qemu.DEFAULT_MEM_MB,
        timeout: float = 300.0, serial_log: Path | None = None, log=None) -> GuestRun:
    """Boot ``kernel``, run ``payload`` (a sh script) in the guest, unpack its OUTDIR into ``outdir``.

    The serial console is always kept at ``serial_log``; a failed guest raises
    :class:`rseqlab.vm.qemu.GuestError` whose message names the log."""
    serial_log = serial_log or default_serial_log(kernel)
    with owned_tempdir("rseqlab-vm-") as tmp:
        work = Path(tmp)
        ramfs = initramfs.build(payload, programs=programs, files=files)
        ramfs.write(work / "init.cpio.gz")
        try:
            b = qemu.boot(kernel.image, work / "init.cpio.gz", work, cpus=cpus, mem_mb=mem_mb,
                          timeout=timeout, log=log)
        except qemu.GuestError as exc:
            _keep(work / "console.log", serial_log)
            raise qemu.GuestError(f"{exc} (serial log: {serial_log})") from None
        _keep(work / "console.log", serial_log)
        if qemu.out_of_memory(b.console):
            raise qemu.GuestError(f"the guest ran out of memory (the OOM killer ran; try --mem) "
                                  f"(serial log: {serial_log})")
        try:
            data = qemu.returned_payload(b)
            channel.unpack(data, outdir)
        except (qemu.GuestError, channel.ChannelError) as exc:
            raise qemu.GuestError(f"{exc} (serial log: {serial_log})") from None
    return GuestRun(outdir, b.console, b.seconds, b.accel, serial_log)


def _keep(src: Path, dest: Path) -> None:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    except OSError as exc:
        print(f"rseqlab: could not keep the serial log at {dest}: {exc}", file=sys.stderr)
