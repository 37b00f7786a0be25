"""Boot a kernel with an initramfs under QEMU and collect the console and the return channel.

KVM is used when ``/dev/kvm`` opens read-write and QEMU starts with it; otherwise TCG
(``-accel tcg,thread=multi -cpu max``). An ELF ``vmlinux`` is PVH-booted, a bzImage takes
the Linux boot protocol; both with ``-kernel``. The first serial port is the console (a file),
the second the return channel (another file). QEMU runs in its own process group and is
killed on timeout, error or Ctrl-C: nothing is left running and nothing is mounted on the host.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import RseqlabError
from . import channel, host
from .initramfs import MARK_DONE, MARK_SENT, MARK_UP

APPEND = "console=ttyS0 rdinit=/init panic=-1 quiet"
DEFAULT_MEM_MB = 1024


class GuestError(RseqlabError):
    """The guest panicked, hung, ran out of memory or sent back a truncated recording."""


@dataclass
class Boot:
    console: str
    returned: bytes
    seconds: float
    accel: str
    exit_code: int | None


def qemu_command(image: Path, initrd: Path, console: Path, ret: Path, *, cpus: int, mem_mb: int,
                 kvm: bool, append: str = APPEND) -> list[str]:
    accel = ["-accel", "kvm", "-cpu", "host"] if kvm else ["-accel", "tcg,thread=multi", "-cpu", "max"]
    return ["qemu-system-x86_64", *accel, "-smp", str(cpus), "-m", str(mem_mb),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-monitor", "none",
            "-kernel", str(image), "-initrd", str(initrd),
            "-serial", f"file:{console}", "-serial", f"file:{ret}",
            "-append", append]


def out_of_memory(console: str) -> bool:
    return "Out of memory" in console or "invoked oom-killer" in console or "oom-kill:" in console


def diagnose(console: str) -> str | None:
    """Why a guest failed, from its console log (None when nothing is recognisable)."""
    if out_of_memory(console):
        return "the guest ran out of memory"
    for line in console.splitlines():
        if "Kernel panic" in line:
            return "the guest kernel panicked: " + line.split("Kernel panic", 1)[1].strip(" -:")[:160]
    if MARK_UP not in console:
        return "the guest never reached /init"
    return None


def boot(image: Path, initrd: Path, workdir: Path, *, cpus: int = 2, mem_mb: int = DEFAULT_MEM_MB,
         timeout: float = 300.0, log=None) -> Boot:
    """Run one guest to completion; raises :class:`GuestError` with the cause otherwise."""
    host.ensure(host.QEMU_TOOLS, why="booting a kernel", log=log)
    console, ret = workdir / "console.log", workdir / "return.bin"
    accels = [True, False] if kvm_works(image, initrd, workdir, log=log) else [False]
    for use_kvm in accels:
        for p in (console, ret):
            p.write_bytes(b"")
        cmd = qemu_command(image, initrd, console, ret, cpus=cpus, mem_mb=mem_mb, kvm=use_kvm)
        t0 = time.monotonic()
        qlog = open(workdir / "qemu.log", "wb")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        qlog.close()
        try:
            rc = _wait(proc, console, ret, timeout)
            out = (workdir / "qemu.log").read_bytes()
        except subprocess.TimeoutExpired:
            _kill(proc)
            text = console.read_text(errors="replace")
            why = diagnose(text)
            stage = "after its payload finished" if MARK_DONE in text else \
                "in its payload" if MARK_UP in text else "while booting"
            raise GuestError(f"the guest hung {stage}: no power-off within {timeout:.0f} s"
                             + (f" ({why})" if why else "")) from None
        except BaseException:
            _kill(proc)
            raise
        seconds = time.monotonic() - t0
        text = console.read_text(errors="replace")
        if rc != 0 and use_kvm and MARK_UP not in text:
            if log:
                log("KVM did not work; falling back to TCG")
            continue
        if rc != 0:
            msg = out.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {rc}"]
            raise GuestError(f"qemu failed (exit {rc}): {msg[0]}")
        return Boot(text, ret.read_bytes(), seconds, "kvm" if use_kvm else "tcg", rc)
    raise GuestError("qemu could not start")  # not reached


#: After the guest said it sent everything, how long it gets to stop by itself.
GRACE_S = 5.0


def _wait(proc: subprocess.Popen, console: Path, ret: Path, timeout: float) -> int:
    """QEMU's exit status; a guest that sent its data but does not stop (a kernel that can only
    halt) is stopped after :data:`GRACE_S` and counts as finished (status 0)."""
    t0 = time.monotonic()
    sent_at = None
    while True:
        try:
            return proc.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if sent_at is None and MARK_SENT in console.read_text(errors="replace"):
            sent_at = now
        if sent_at is not None and now - sent_at > GRACE_S:
            _kill(proc)
            return 0
        if now - t0 > timeout:
            raise subprocess.TimeoutExpired(proc.args, timeout)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def kvm_works(image: Path, initrd: Path, workdir: Path, *, log=None) -> bool:
    """Whether KVM boots a guest here: /dev/kvm opens and a first guest reaches /init within 30 s.

    The verdict is kept per host boot (``<cache>/vm/kvm``), so a broken KVM (nested
    virtualisation that fails or hangs) costs one short attempt, not one per run.
    ``RSEQLAB_VM_ACCEL=tcg`` skips KVM."""
    if os.environ.get("RSEQLAB_VM_ACCEL", "") == "tcg" or not host.kvm_usable():
        return False
    from .kernels import cache_root

    verdict = cache_root() / "vm" / "kvm"
    boot_id = _boot_id()
    try:
        saved = verdict.read_text().split()
        if len(saved) == 2 and saved[0] == boot_id:
            return saved[1] == "yes"
    except OSError:
        pass
    console, ret = workdir / "kvm-console.log", workdir / "kvm-return.bin"
    cmd = qemu_command(image, initrd, console, ret, cpus=1, mem_mb=DEFAULT_MEM_MB, kvm=True)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_die_with_parent)
    ok = False
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 30:
            if console.exists() and MARK_UP in console.read_text(errors="replace"):
                ok = True
                break
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    finally:
        _kill(proc)
    verdict.parent.mkdir(parents=True, exist_ok=True)
    verdict.write_text(f"{boot_id} {'yes' if ok else 'no'}\n")
    if log and not ok:
        log("KVM does not boot a guest here; using TCG")
    return ok


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when rseqlab dies, even by SIGKILL (``PR_SET_PDEATHSIG``),
    so no QEMU outlives the command that started it."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def returned_payload(b: Boot) -> bytes:
    """The return channel's payload, or a GuestError naming what the console says went wrong."""
    try:
        return channel.decode(b.returned)
    except channel.ChannelError as exc:
        why = diagnose(b.console)
        raise GuestError(f"{exc}" + (f"; {why}" if why else "")) from None
