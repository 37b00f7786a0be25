"""User-space owners of the rseq registration: glibc (per version) and librseq.

glibc (userspace spec §4) registers one area per thread, at start-up and in
every new thread before the user's start routine, unless the tunable
``glibc.pthread.rseq=0`` disables it. What differs by version is what it
reports in ``__rseq_size`` and how large a registration it makes.

librseq and the kernel selftests' ``rseq.c`` (userspace §2.2) use glibc's
registration when glibc owns one, otherwise they register their own
per-thread area (1024-byte TLS union) with 32 bytes, or the feature size.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from ..abi import ORIG_RSEQ_SIZE, RSEQ_SIG, CpuIdSentinel, StructRseq, to_u32
from ..errors import BadInput

GLIBC_VERSIONS = ("2.35", "2.36", "2.37", "2.38", "2.39", "2.40", "2.41", "2.42")
GLIBC_AREA_OFFSET = 0x100  # glibc's area within the thread's TLS page (32-byte aligned)
LIBRSEQ_AREA_OFFSET = 0x400  # librseq's own 1024-byte aligned TLS union
#: ``struct pthread::tid``, the child TID pointer of glibc's fork(): on the same page as the rseq
#: area (measured: 0x650 bytes apart in the guest's static forkloop, glibc 2.36).
GLIBC_TID_OFFSET = 0x2D0


@dataclass
class Glibc:
    """glibc's rseq support for one process."""

    version: str = "2.36"
    #: ``GLIBC_TUNABLES=glibc.pthread.rseq=0`` sets this False.
    rseq_tunable: bool = True
    registered_threads: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.version not in GLIBC_VERSIONS:
            raise BadInput(f"unknown glibc version {self.version!r}; accepted: {', '.join(GLIBC_VERSIONS)}")

    def forked(self) -> Glibc:
        return Glibc(self.version, self.rseq_tunable, set(self.registered_threads))

    @property
    def minor(self) -> int:
        return int(self.version.split(".")[1])

    def registration_length(self, feature_size: int, align: int) -> int:
        """2.35-2.40 register the original 32 bytes; 2.41+ the extensible size
        ``roundup(max(feature_size, 20), align)``."""
        if self.minor < 41:
            return ORIG_RSEQ_SIZE
        align = max(align, 32)
        return -(-max(feature_size, 20) // align) * align

    def rseq_size(self, feature_size: int) -> int:
        """What ``__rseq_size`` says: 32 (2.35-2.39), 20 (2.40), the feature size (2.41+);
        0 when not registered."""
        if not self.rseq_tunable:
            return 0
        if self.minor < 40:
            return 32
        if self.minor == 40:
            return 20
        return feature_size

    def thread_start(self, th) -> None:
        """What glibc does for a new thread (main thread at start-up, or in start_thread)."""
        area = th.st.tls + GLIBC_AREA_OFFSET
        mm = th.mm
        # The area is cleared and marked uninitialized before the syscall.
        for f in StructRseq.FIELDS:
            mm.poke(area + f.offset, f.size, 0)
        mm.poke(area + StructRseq.CPU_ID.offset, 4, to_u32(CpuIdSentinel.UNINITIALIZED))
        if not self.rseq_tunable:
            mm.poke(area + StructRseq.CPU_ID.offset, 4, to_u32(CpuIdSentinel.REGISTRATION_FAILED))
            return
        abi = th.k.abi
        ret = th.rseq(area, self.registration_length(abi.feature_size, abi.align), 0, RSEQ_SIG)
        if ret == 0:
            th.area = area
            self.registered_threads.add(th.tid)
        else:
            mm.poke(area + StructRseq.CPU_ID.offset, 4, to_u32(CpuIdSentinel.REGISTRATION_FAILED))

    def owns(self, th) -> bool:
        return th.tid in self.registered_threads


def librseq_register_current_thread(th, *, nolibc: bool = False, legacy: bool = False) -> int:
    """Models ``rseq_register_current_thread()`` (selftests rseq.c / librseq).

    glibc owning the registration counts as success, except for callers that
    insist on their own (``nolibc``: the non-benchmark param_test), which get
    -EBUSY. Otherwise the thread registers the library's own area.
    """
    glibc = th.proc.runtime
    if isinstance(glibc, Glibc) and glibc.owns(th):
        return -errno.EBUSY if nolibc else 0
    feature = th.k.abi.feature_size
    length = ORIG_RSEQ_SIZE if legacy or feature < ORIG_RSEQ_SIZE else feature
    length = max(length, ORIG_RSEQ_SIZE)
    area = th.st.tls + LIBRSEQ_AREA_OFFSET
    th.mm.poke(area + StructRseq.CPU_ID.offset, 4, to_u32(CpuIdSentinel.UNINITIALIZED))
    ret = th.rseq(area, length, 0, RSEQ_SIG)
    if ret == 0:
        th.area = area
        th.local["librseq_len"] = length
    return ret


def librseq_unregister_current_thread(th) -> int:
    glibc = th.proc.runtime
    if isinstance(glibc, Glibc) and glibc.owns(th):
        return 0
    from ..abi import RseqFlag

    ret = th.rseq(th.area, th.local.get("librseq_len", ORIG_RSEQ_SIZE), RseqFlag.UNREGISTER, RSEQ_SIG)
    return ret
