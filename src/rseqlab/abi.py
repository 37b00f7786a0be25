"""The user/kernel RSEQ ABI: struct layouts, flags, constants (spec §1).

Everything here is plain data: offsets and sizes of ``struct rseq`` and
``struct rseq_cs`` (uapi ``linux/rseq.h``), registration flags, the CPU-id
sentinels, the auxiliary-vector entries and what each kernel publishes in them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

U32_MASK = 0xFFFF_FFFF
U64_MASK = 0xFFFF_FFFF_FFFF_FFFF

#: x86_64 user address space limit (4-level paging): addresses at or above it
#: are kernel addresses and fail ``access_ok()``.
TASK_SIZE = 0x7FFF_FFFF_F000

#: x86_64 system call number of ``rseq``.
NR_RSEQ = 334
#: x86_64 system call number of ``rseq_slice_yield`` (7.0+, ``arch/x86/entry/syscalls/syscall_64.tbl``).
NR_RSEQ_SLICE_YIELD = 471

#: ``prctl(PR_RSEQ_SLICE_EXTENSION, GET | SET, PR_RSEQ_SLICE_EXT_ENABLE, 0, 0)``
#: (uapi ``linux/prctl.h``, 7.0+): the time-slice extension's per-task switch.
PR_RSEQ_SLICE_EXTENSION = 79
PR_RSEQ_SLICE_EXTENSION_GET = 1
PR_RSEQ_SLICE_EXTENSION_SET = 2
PR_RSEQ_SLICE_EXT_ENABLE = 1
#: ``ENOTSUPP`` (``include/linux/errno.h``): a kernel-internal errno (not in the C library's
#: ``errno.h``) that the slice-extension prctl returns to user space anyway.
ENOTSUPP = 524

#: The x86 signature glibc and the selftests use (``RSEQ_SIG``). The kernel
#: does not define a signature; user space chooses one at registration.
RSEQ_SIG = 0x53053053

#: ``ORIG_RSEQ_SIZE`` (kernel/rseq.c): the size of the original ``struct rseq``.
ORIG_RSEQ_SIZE = 32


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a user-visible struct: its name, offset and size in bytes."""

    name: str
    offset: int
    size: int


class StructRseq:
    """``struct rseq``: the per-thread area, 32-byte aligned (spec §1.1)."""

    CPU_ID_START = Field("cpu_id_start", 0, 4)
    CPU_ID = Field("cpu_id", 4, 4)
    RSEQ_CS = Field("rseq_cs", 8, 8)
    FLAGS = Field("flags", 16, 4)
    NODE_ID = Field("node_id", 20, 4)
    MM_CID = Field("mm_cid", 24, 4)
    #: ``offsetof(struct rseq, end)`` in 6.3 .. 6.19: the feature size.
    END = 28
    SIZE = 32
    ALIGN = 32
    FIELDS = (CPU_ID_START, CPU_ID, RSEQ_CS, FLAGS, NODE_ID, MM_CID)
    #: 7.0+: ``struct rseq_slice_ctrl`` (``union { __u32 all; struct { __u8 request; __u8 granted;
    #: __u16 __reserved; }; }``), in what was the original struct's padding; then one reserved
    #: byte, so ``offsetof(struct rseq, end)`` is 33. Not in ``FIELDS``: kernels before 7.0
    #: know nothing there, and the area dumps of those kernels stay as they were.
    SLICE_CTRL = Field("slice_ctrl", 28, 4)
    RESERVED = Field("__reserved", 32, 1)


def slice_ctrl(request: int = 0, granted: int = 0) -> int:
    """``rseq_slice_ctrl.all`` (little endian): ``request`` in byte 28, ``granted`` in byte 29."""
    return (request & 0xFF) | (granted & 0xFF) << 8


def slice_ctrl_fields(all_: int) -> tuple[int, int]:
    """(request, granted) of a ``rseq_slice_ctrl.all`` value."""
    return all_ & 0xFF, all_ >> 8 & 0xFF


class StructRseqCs:
    """``struct rseq_cs``: the critical-section descriptor, 32-byte aligned (spec §1.2)."""

    VERSION = Field("version", 0, 4)
    FLAGS = Field("flags", 4, 4)
    START_IP = Field("start_ip", 8, 8)
    POST_COMMIT_OFFSET = Field("post_commit_offset", 16, 8)
    ABORT_IP = Field("abort_ip", 24, 8)
    SIZE = 32
    ALIGN = 32
    FIELDS = (VERSION, FLAGS, START_IP, POST_COMMIT_OFFSET, ABORT_IP)


class RseqFlag(IntFlag):
    """``enum rseq_flags``: flags of the ``rseq()`` system call."""

    UNREGISTER = 1 << 0


#: ``RSEQ_FLAG_SLICE_EXT_DEFAULT_ON`` (uapi ``linux/rseq.h``, 7.0+): the second registration
#: flag, accepted by ``sys_rseq`` whether or not the slice extension is configured.
RSEQ_FLAG_SLICE_EXT_DEFAULT_ON = 1 << 1

#: Status bits the kernel writes into ``rseq->flags`` (``enum rseq_cs_flags``, 7.0+; read-only
#: for user space): the slice extension is available (configured and not disabled at boot;
#: 7.0 as released: configured), and enabled for this task.
RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE = 1 << 4
RSEQ_CS_FLAG_SLICE_EXT_ENABLED = 1 << 5


class RseqCsFlag(IntFlag):
    """``enum rseq_cs_flags``: deprecated since commit 0190e4198e47; any set bit is fatal."""

    NO_RESTART_ON_PREEMPT = 1 << 0
    NO_RESTART_ON_SIGNAL = 1 << 1
    NO_RESTART_ON_MIGRATE = 1 << 2


class CpuIdSentinel(IntEnum):
    """``enum rseq_cpu_id_state``: values of ``cpu_id`` that are not CPU numbers."""

    UNINITIALIZED = -1
    REGISTRATION_FAILED = -2


class AuxvType(IntEnum):
    """Auxiliary-vector entries describing the RSEQ ABI (``uapi/linux/auxvec.h``)."""

    AT_RSEQ_FEATURE_SIZE = 27
    AT_RSEQ_ALIGN = 28


@dataclass(frozen=True, slots=True)
class KernelAbi:
    """What one kernel version publishes to user space about RSEQ."""

    release: str
    #: ``AT_RSEQ_FEATURE_SIZE``: ``offsetof(struct rseq, end)``.
    feature_size: int
    #: ``AT_RSEQ_ALIGN``: ``__alignof__(struct rseq)``; from 7.0 ``rseq_alloc_align()``, the
    #: feature size rounded up to a power of two. A registration longer than 32 bytes must be
    #: aligned to it.
    align: int
    #: Registration flags ``sys_rseq`` accepts besides 0 (``RSEQ_FLAGS_SUPPORTED``).
    register_flags: int = 0

    def auxv(self) -> dict[str, int]:
        return {
            AuxvType.AT_RSEQ_FEATURE_SIZE.name: self.feature_size,
            AuxvType.AT_RSEQ_ALIGN.name: self.align,
        }


#: 6.3 .. 6.19 share the 28-byte feature set (node_id and mm_cid added in 6.3). 7.0 adds
#: ``slice_ctrl`` at offset 28 and one reserved byte after it: ``offsetof(struct rseq, end)``
#: is 33, which can never be mistaken for the original 32, and ``AT_RSEQ_ALIGN`` is
#: ``rseq_alloc_align()`` = 64 (torvalds/linux 3b68df978133, merged before 7.0 shipped; uapi
#: ``linux/rseq.h``, ``fs/binfmt_elf.c``, ``include/linux/rseq.h``). 7.1 keeps that ABI.
ABI_BY_RELEASE = {
    "6.18": KernelAbi("6.18", feature_size=StructRseq.END, align=StructRseq.ALIGN),
    "6.19": KernelAbi("6.19", feature_size=StructRseq.END, align=StructRseq.ALIGN),
    "7.0": KernelAbi("7.0", feature_size=33, align=64, register_flags=RSEQ_FLAG_SLICE_EXT_DEFAULT_ON),
    "7.1": KernelAbi("7.1", feature_size=33, align=64, register_flags=RSEQ_FLAG_SLICE_EXT_DEFAULT_ON),
}


def to_u32(value: int) -> int:
    """Two's-complement encoding of a (possibly negative) C int as u32."""
    return value & U32_MASK


def as_s32(value: int) -> int:
    """Read a u32 as the signed C int user space sees (``cpu_id`` may be -1/-2)."""
    return value - (1 << 32) if value & 0x8000_0000 else value


def in_rseq_cs(ip: int, start_ip: int, post_commit_offset: int) -> bool:
    """Models ``in_rseq_cs()``: unsigned 64-bit ``ip - start_ip < post_commit_offset``.

    The wrap-around is the point: an ``ip`` below ``start_ip`` becomes a huge
    difference and is therefore outside, without a second comparison.
    """
    return ((ip - start_ip) & U64_MASK) < post_commit_offset
