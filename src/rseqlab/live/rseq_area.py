"""Read the calling thread's real ``struct rseq`` through ctypes.

glibc (>= 2.35) registers an rseq area for every thread inside its TCB and
exports where: ``__rseq_offset`` (from the thread pointer) and
``__rseq_size`` (0 when it did not register). On x86_64 the thread pointer is
the FS base, read with ``arch_prctl(ARCH_GET_FS)`` through ``syscall(2)``.
Field layout: spec §1.1 (``abi.StructRseq``).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from dataclasses import dataclass

from ..abi import StructRseq
from ..errors import Unavailable

SYS_ARCH_PRCTL = 158  # x86_64
ARCH_GET_FS = 0x1003
#: ``RSEQ_CPU_ID_UNINITIALIZED`` and ``RSEQ_CPU_ID_REGISTRATION_FAILED`` (uapi linux/rseq.h).
CPU_ID_UNINITIALIZED = -1
CPU_ID_REGISTRATION_FAILED = -2


@dataclass(frozen=True, slots=True)
class RseqArea:
    """One thread's rseq registration as glibc and the kernel left it."""

    glibc: str
    rseq_offset: int
    rseq_size: int  # __rseq_size as glibc reports it (Debian's 2.36: 20, registers 32)
    thread_pointer: int
    address: int
    fields: dict[str, int]
    registered: bool
    status: str

    def as_json(self) -> dict:
        return {"glibc": self.glibc, "rseq_offset": self.rseq_offset, "rseq_size": self.rseq_size,
                "thread_pointer": self.thread_pointer, "address": self.address,
                "fields": dict(self.fields), "registered": self.registered, "status": self.status,
                "tid": threading.get_native_id()}


def glibc_version() -> str:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") or "unknown"
    except (ValueError, OSError):
        return "not glibc"


def read_rseq_area() -> RseqArea:
    """The calling thread's area; :class:`Unavailable` says why it cannot be read."""
    machine = platform.machine()
    if machine != "x86_64":
        raise Unavailable(f"reading the rseq area needs x86_64 (arch_prctl for the thread pointer); "
                          f"this machine is {machine}")
    version = glibc_version()
    if not version.startswith("glibc"):
        raise Unavailable(f"the C library is {version}: __rseq_offset/__rseq_size are glibc symbols")
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        offset = ctypes.c_ssize_t.in_dll(libc, "__rseq_offset").value
        size = ctypes.c_uint.in_dll(libc, "__rseq_size").value
    except ValueError:
        raise Unavailable(f"{version} does not export __rseq_offset/__rseq_size "
                          "(rseq registration by glibc needs glibc >= 2.35)") from None
    fs = ctypes.c_ulong(0)
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(SYS_ARCH_PRCTL), ctypes.c_int(ARCH_GET_FS), ctypes.byref(fs)) != 0:
        raise Unavailable(f"arch_prctl(ARCH_GET_FS) failed: {os.strerror(ctypes.get_errno())}")
    address = fs.value + offset
    raw = ctypes.string_at(address, StructRseq.SIZE)
    fields = {}
    for f in StructRseq.FIELDS:
        value = int.from_bytes(raw[f.offset : f.offset + f.size], "little", signed=f.size == 4)
        fields[f.name] = value
    registered = size > 0 and fields["cpu_id"] >= 0
    if size == 0:
        status = ("rseq disabled: glibc did not register this thread (GLIBC_TUNABLES="
                  "glibc.pthread.rseq=0, or the kernel refused)")
    elif fields["cpu_id"] == CPU_ID_REGISTRATION_FAILED:
        status = "registration failed: cpu_id is RSEQ_CPU_ID_REGISTRATION_FAILED (-2)"
    elif fields["cpu_id"] == CPU_ID_UNINITIALIZED:
        status = "registered but not yet updated by the kernel (cpu_id -1)"
    else:
        status = "registered"
    return RseqArea(version, offset, size, fs.value, address, fields, registered, status)
