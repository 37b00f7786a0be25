"""Port of ``syscall_errors_test`` (userspace spec §2.8): nine ``rseq()`` calls and their errno.

Run as ``run_syscall_errors_test.sh`` runs it: with ``glibc.pthread.rseq=0``,
so the thread starts unregistered and uses the test library's TLS area.
"""

from __future__ import annotations

import errno

from ..abi import ORIG_RSEQ_SIZE, RSEQ_SIG, RseqFlag
from .harness import MachineSpec, Output, RunResult, library_area, run_program

#: (what the test says, arguments relative to the area, expected return: 0 or -errno)
CALLS = [
    ("Registration with invalid flag fails with errno set to EINVAL", 0, 32, -1, 0, -errno.EINVAL),
    ("Registration with unaligned rseq_abi fails with errno set to EINVAL", 1, 32, 0, 0, -errno.EINVAL),
    ("Registration with invalid size fails with errno set to EINVAL", 0, 31, 0, 0, -errno.EINVAL),
    ("Registration with invalid address fails with errno set to EFAULT", None, 32, 0, 0, -errno.EFAULT),
    ("Registration succeeds for the current thread", 0, 32, 0, 0, 0),
    ("Double registration fails with errno set to EBUSY", 0, 32, 0, 0, -errno.EBUSY),
    ("Unregistration with wrong RSEQ_SIG fails with errno set to EPERM", 0, 32, int(RseqFlag.UNREGISTER), 1,
     -errno.EPERM),
    ("Unregistration succeeds for the current thread", 0, 32, int(RseqFlag.UNREGISTER), 0, 0),
    ("Double unregistration fails with errno set to EINVAL", 0, 32, int(RseqFlag.UNREGISTER), 0, -errno.EINVAL),
]
BAD_ADDRESS = (1 << 64) - 4096  # (void *) -4096


def main(th, out: Output) -> int:
    area = library_area(th)
    assert ORIG_RSEQ_SIZE == 32
    failed = 0
    for n, (what, delta, length, flags, sig_delta, expected) in enumerate(CALLS, 1):
        addr = BAD_ADDRESS if delta is None else area + delta
        ret = th.rseq(addr, length, flags, RSEQ_SIG + sig_delta)
        ok = ret == expected
        failed += not ok
        out.print(f"{'ok' if ok else 'not ok'} {n} - {what}" + ("" if ok else f" (got {ret})"))
    return 1 if failed else 0


def run(kernel: str, *, machine: MachineSpec | None = None, seed: int = 0) -> RunResult:
    return run_program(kernel, main, machine=machine or MachineSpec(), seed=seed)
