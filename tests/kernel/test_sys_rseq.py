"""``sys_rseq``: the registration and unregistration error matrix (kernel spec §1.4).

Covers the kernel selftest ``syscall_errors_test`` (userspace spec §2.8), the
conformance rows R-01 .. R-16 (userspace spec §8.1) and the fork/exec
lifecycle rows L-01 .. L-03 (§8.6), on both personalities. Every call is a
real syscall round trip on the bench, so what the first return to user space
does with the registration is checked as well.
"""

from __future__ import annotations

import errno

import pytest

from rseqlab.abi import RSEQ_SIG, TASK_SIZE, U32_MASK, RseqFlag, StructRseq
from rseqlab.kernel import Tif
from rseqlab.kernel._base import access_ok
from rseqlab.kernel._ftrace import Ftrace
from rseqlab.kernel._task import CLONE_VM, SIGSEGV
from rseqlab.machine.scripted import Placement, ScriptedMachine
from rseqlab.usermem import PAGE_SIZE

KERNELS = ("6.18", "6.19")
UNREGISTER = int(RseqFlag.UNREGISTER)
UNINIT = 0xFFFF_FFFF  # RSEQ_CPU_ID_UNINITIALIZED (-1) as the u32 user space reads
SENTINEL = 0x5A5A_5A5A  # junk a previous user of the TLS area left in the ID fields

#: Spare addresses in the bench's TLS page (the registered area is tls + 0x100).
OTHER_AREA_OFFSET = 0x200  # 512-byte aligned
ALIGNED_16_ONLY_OFFSET = 0x210  # 16-byte but not 32-byte aligned
#: A page nothing maps, far below TASK_SIZE.
UNMAPPED = 0x1000_0000


def rseq(b: ScriptedMachine, addr: int, length: int, flags: int, sig: int, t=None) -> int | None:
    """One ``rseq()`` syscall on ``t``: its return value, or None if the task died returning."""
    return b.syscall(t, work=lambda k, task: k.sys_rseq(task, addr, length, flags, sig))


def rseq_in_kernel(b: ScriptedMachine, addr: int, length: int, flags: int, sig: int, t=None) -> dict:
    """Like :func:`rseq`, but also records what the call itself did, before the exit work runs.

    Keys: ``ret`` (the call's value), ``alive`` (the task got back to user space),
    ``reads``/``writes``/``faults`` (user accesses of the call only), ``area``
    (the area as user space would read it at that moment).
    """
    t = t or b.task
    seen: dict = {}

    def work(k, task):
        task.uaccess.clear()
        seen["ret"] = k.sys_rseq(task, addr, length, flags, sig)
        seen["reads"] = dict(task.uaccess.reads)
        seen["writes"] = dict(task.uaccess.writes)
        seen["faults"] = dict(task.uaccess.faults)
        seen["area"] = b.area(task)
        return seen["ret"]

    seen["alive"] = b.syscall(t, work=work) is not None
    return seen


def registered_bench(kernel: str, **kw) -> ScriptedMachine:
    b = ScriptedMachine(kernel, **kw)
    assert b.register() == 0
    assert b.task.rseq.usrptr == b.layout.area
    return b


def ids(b: ScriptedMachine, t=None) -> tuple[int, int, int, int]:
    a = b.area(t)
    return a["cpu_id_start"], a["cpu_id"], a["node_id"], a["mm_cid"]


def poke_ids(b: ScriptedMachine, value: int, t=None) -> None:
    t = t or b.task
    for f in (StructRseq.CPU_ID_START, StructRseq.CPU_ID, StructRseq.NODE_ID, StructRseq.MM_CID):
        t.mm.poke(b.layout.area + f.offset, f.size, value)


# ======================================================================
# syscall_errors_test (userspace spec §2.8): nine calls, in order, one task
# ======================================================================
@pytest.mark.parametrize("kernel", KERNELS)
def test_syscall_errors_test_sequence(kernel):
    b = ScriptedMachine(kernel)
    t = b.task
    area = b.layout.area

    # 1. Invalid flags: still unregistered afterwards.
    assert rseq(b, area, 32, -1, RSEQ_SIG) == -errno.EINVAL
    assert t.rseq.usrptr == 0
    # 2. Unaligned.
    assert rseq(b, area + 1, 32, 0, RSEQ_SIG) == -errno.EINVAL
    # 3. Bad size.
    assert rseq(b, area, 31, 0, RSEQ_SIG) == -errno.EINVAL
    # 4. (void *)-4096: a kernel address, refused by access_ok before any user access.
    failed_before = t.mm.faults.failed
    assert rseq(b, 0xFFFF_FFFF_FFFF_F000, 32, 0, RSEQ_SIG) == -errno.EFAULT
    assert t.mm.faults.failed == failed_before
    assert t.rseq.usrptr == 0
    # 5. Valid registration.
    assert rseq(b, area, 32, 0, RSEQ_SIG) == 0
    assert t.rseq.usrptr == area
    # 6. The same again.
    assert rseq(b, area, 32, 0, RSEQ_SIG) == -errno.EBUSY
    # 7. Unregister with the wrong signature.
    assert rseq(b, area, 32, UNREGISTER, RSEQ_SIG + 1) == -errno.EPERM
    assert t.rseq.usrptr == area
    # 8. Unregister.
    assert rseq(b, area, 32, UNREGISTER, RSEQ_SIG) == 0
    assert t.rseq.usrptr == 0
    # 9. Double unregister.
    assert rseq(b, area, 32, UNREGISTER, RSEQ_SIG) == -errno.EINVAL

    assert t.killed_by is None


@pytest.mark.parametrize("kernel", KERNELS)
def test_availability_probe(kernel):
    """R-01: rseq(NULL, 0, 0, 0) is EINVAL when rseq is built in, registered or not."""
    b = ScriptedMachine(kernel)
    got = rseq_in_kernel(b, 0, 0, 0, 0)
    assert got["ret"] == -errno.EINVAL
    assert got["reads"] == got["writes"] == got["faults"] == {}
    assert b.task.rseq.usrptr == 0

    assert b.register() == 0
    # Already registered (glibc did it): the re-registration branch also says EINVAL.
    assert rseq(b, 0, 0, 0, 0) == -errno.EINVAL
    assert b.task.rseq.usrptr == b.layout.area


# ======================================================================
# Unregistration (spec §1.4, unregister steps 1-6)
# ======================================================================
@pytest.mark.parametrize("kernel", KERNELS)
def test_unregister_when_never_registered(kernel):
    b = ScriptedMachine(kernel)
    assert b.unregister() == -errno.EINVAL
    assert b.task.rseq.usrptr == 0


@pytest.mark.parametrize("extra", [1 << 1, 1 << 31, 0xFFFF_FFFE, -1])
@pytest.mark.parametrize("kernel", KERNELS)
def test_unregister_with_extra_flag_bits(kernel, extra):
    """Step 1: any flag bit besides UNREGISTER is EINVAL, even with everything else right;
    nothing is reset and the task stays registered. (``-1`` is call 1 of
    syscall_errors_test made while registered: it must not unregister.)"""
    b = registered_bench(kernel)
    before = b.area()
    got = rseq_in_kernel(b, b.layout.area, 32, UNREGISTER | extra, RSEQ_SIG)
    assert got["ret"] == -errno.EINVAL
    assert got["writes"] == {}
    assert b.task.rseq.usrptr == b.layout.area
    assert b.area() == before


@pytest.mark.parametrize("kernel", KERNELS)
def test_unregister_different_pointer(kernel):
    b = registered_bench(kernel)
    other = b.layout.tls + OTHER_AREA_OFFSET
    assert rseq(b, other, 32, UNREGISTER, RSEQ_SIG) == -errno.EINVAL
    assert b.task.rseq.usrptr == b.layout.area
    assert b.unregister() == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_unregister_different_length(kernel):
    b = registered_bench(kernel)
    assert b.unregister(length=64) == -errno.EINVAL
    assert b.unregister(length=31) == -errno.EINVAL
    assert b.task.rseq.usrptr == b.layout.area
    assert b.unregister() == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_unregister_wrong_signature_keeps_registration(kernel):
    """Step 4 / R-10: EPERM, the IDs are not reset, and the task is still registered."""
    b = ScriptedMachine(kernel, cpus=4, nodes=2)
    b.syscall(block=Placement(cpu=3, mm_cid=5))
    assert b.register() == 0
    assert ids(b) == (3, 3, 1, 5)

    got = rseq_in_kernel(b, b.layout.area, 32, UNREGISTER, RSEQ_SIG + 1)
    assert got["ret"] == -errno.EPERM
    assert got["writes"] == {}
    assert ids(b) == (3, 3, 1, 5)
    assert b.task.rseq.usrptr == b.layout.area
    assert b.register() == -errno.EBUSY
    assert b.unregister() == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_unregister_checks_in_order(kernel):
    """Pointer before length before signature: a wrong signature alone is the only EPERM."""
    b = registered_bench(kernel)
    area, other, bad_sig = b.layout.area, b.layout.tls + OTHER_AREA_OFFSET, RSEQ_SIG + 1
    assert rseq(b, other, 64, UNREGISTER | 2, bad_sig) == -errno.EINVAL  # flags first
    assert rseq(b, other, 32, UNREGISTER, bad_sig) == -errno.EINVAL  # pointer before sig
    assert rseq(b, area, 64, UNREGISTER, bad_sig) == -errno.EINVAL  # length before sig
    assert rseq(b, area, 32, UNREGISTER, bad_sig) == -errno.EPERM
    assert b.task.rseq.usrptr == area


def test_unregister_fault_6_18_returns_efault_and_stays_registered():
    """Step 5, legacy: a fault resetting the IDs is -EFAULT, nothing else happens."""
    b = registered_bench("6.18")
    t = b.task
    before = b.area()
    t.mm.inject_fault(b.layout.area)
    got = rseq_in_kernel(b, b.layout.area, 32, UNREGISTER, RSEQ_SIG)
    assert got["ret"] == -errno.EFAULT
    assert got["alive"] is True
    assert t.killed_by is None
    assert t.rseq.usrptr == b.layout.area
    assert b.area() == before
    # Still registered: a second attempt (no fault now) succeeds.
    assert b.unregister() == 0
    assert t.rseq.usrptr == 0


def test_unregister_fault_6_19_returns_efault_and_kills():
    """Step 5, 6.19: rseq_reset_ids() forces SIGSEGV when it cannot write the IDs."""
    b = registered_bench("6.19")
    t = b.task
    t.mm.inject_fault(b.layout.area)
    got = rseq_in_kernel(b, b.layout.area, 32, UNREGISTER, RSEQ_SIG)
    assert got["ret"] == -errno.EFAULT
    assert got["alive"] is False
    assert t.killed_by == SIGSEGV
    # rseq_reset() was not reached.
    assert t.rseq.usrptr == b.layout.area
    assert t.rseq.has_rseq is True


@pytest.mark.parametrize("kernel", KERNELS)
def test_unregister_read_only_area(kernel):
    """Step 5 with a page made read-only after registration: the first ID store faults."""
    b = registered_bench(kernel)
    t = b.task
    t.mm.protect(b.layout.tls, PAGE_SIZE, writable=False)
    got = rseq_in_kernel(b, b.layout.area, 32, UNREGISTER, RSEQ_SIG)
    assert got["ret"] == -errno.EFAULT
    assert got["faults"] == {"cpu_id_start": 1}
    assert t.rseq.usrptr == b.layout.area
    if kernel == "6.19":
        assert t.killed_by == SIGSEGV
    else:
        assert t.killed_by is None


# ----------------------------------------------------------------------
# Values written at unregistration, and what it counts
# ----------------------------------------------------------------------
EXPECTED_UNREGISTERED_IDS = {
    # (cpu_id_start, cpu_id, node_id, mm_cid)
    "6.18": (0, UNINIT, 0, 0),
    # rseq_set_ids() writes the one cached CPU value (-1) to both CPU fields.
    "6.19": (UNINIT, UNINIT, 0, 0),
}


@pytest.mark.parametrize("kernel", KERNELS)
def test_unregister_values_and_counters(kernel):
    """R-11 (spec §1.4 step 5): the reset values, and 6.19's ids/rseq_update accounting."""
    b = ScriptedMachine(kernel, cpus=4, nodes=2)
    t = b.task
    b.syscall(block=Placement(cpu=3, mm_cid=5))
    assert b.register() == 0
    assert ids(b) == (3, 3, 1, 5)

    events = []
    b.kernel.trace_subscribers.append(events.append)
    ids_before = t.stats.ids
    updates_before = t.trace.rseq_update
    fixups_before = t.trace.rseq_ip_fixup

    got = rseq_in_kernel(b, b.layout.area, 32, UNREGISTER, RSEQ_SIG)
    assert got["ret"] == 0
    assert got["alive"] is True
    assert ids(b) == EXPECTED_UNREGISTERED_IDS[kernel]
    assert b.area()["rseq_cs"] == 0
    assert got["writes"] == {"cpu_id_start": 1, "cpu_id": 1, "node_id": 1, "mm_cid": 1}
    assert t.rseq.usrptr == 0
    assert t.trace.rseq_ip_fixup == fixups_before
    if kernel == "6.19":
        assert t.stats.ids == ids_before + 1
        assert t.trace.rseq_update == updates_before + 1
        assert [(e.name, e.fields["cpu_id"], e.fields["mm_cid"]) for e in events] == [
            ("rseq_update", UNINIT, 0)]
        assert t.rseq.has_rseq is False
    else:
        assert t.stats.ids == ids_before
        assert t.trace.rseq_update == updates_before
        assert events == []

    # Unregistered for good: nothing rewrites the area on later returns.
    b.syscall(block=Placement(cpu=1, mm_cid=2))
    assert ids(b) == EXPECTED_UNREGISTERED_IDS[kernel]
    # And the area can be registered again.
    assert b.register() == 0
    assert ids(b) == (1, 1, 0, 2)


# ======================================================================
# Registration (spec §1.4, register steps 1-6)
# ======================================================================
@pytest.mark.parametrize("flags", [2, 1 << 31, 0x100])
@pytest.mark.parametrize("kernel", KERNELS)
def test_register_unknown_flags(kernel, flags):
    b = ScriptedMachine(kernel)
    got = rseq_in_kernel(b, b.layout.area, 32, flags, RSEQ_SIG)
    assert got["ret"] == -errno.EINVAL
    assert got["reads"] == got["writes"] == {}
    assert b.task.rseq.usrptr == 0
    # Checked before "already registered": EINVAL, not EBUSY.
    assert b.register() == 0
    assert rseq(b, b.layout.area, 32, flags, RSEQ_SIG) == -errno.EINVAL


@pytest.mark.parametrize("kernel", KERNELS)
def test_reregister_different_address_or_length(kernel):
    """R-08, R-09, R-07 in the kernel's order: address/length, then signature, then EBUSY."""
    b = registered_bench(kernel)
    area, other, bad_sig = b.layout.area, b.layout.tls + OTHER_AREA_OFFSET, RSEQ_SIG + 1
    assert rseq(b, other, 32, 0, RSEQ_SIG) == -errno.EINVAL
    assert rseq(b, area, 64, 0, RSEQ_SIG) == -errno.EINVAL
    assert rseq(b, area + 1, 32, 0, RSEQ_SIG) == -errno.EINVAL
    # The address/length mismatch wins over a signature mismatch.
    assert rseq(b, other, 32, 0, bad_sig) == -errno.EINVAL
    assert rseq(b, area, 64, 0, bad_sig) == -errno.EINVAL
    assert rseq(b, area, 32, 0, bad_sig) == -errno.EPERM
    assert rseq(b, area, 32, 0, RSEQ_SIG) == -errno.EBUSY
    # None of them changed the registration.
    assert (b.task.rseq.usrptr, b.task.rseq.len, b.task.rseq.sig) == (area, 32, RSEQ_SIG)


@pytest.mark.parametrize("kernel", KERNELS)
def test_reregister_extended_registration(kernel):
    """A 64-byte registration is EBUSY only with the same length; 32 is a different length."""
    b = ScriptedMachine(kernel)
    assert b.register(length=64) == 0
    assert b.register(length=64) == -errno.EBUSY
    assert b.register(length=32) == -errno.EINVAL
    assert b.unregister(length=32) == -errno.EINVAL
    assert b.unregister(length=64) == 0


# Step 3: (length, offset of the area from a 32-byte aligned base, expected).
# feature size 28, AT_RSEQ_ALIGN 32 in both kernels.
LENGTH_ALIGNMENT_CASES = [
    (32, 0, 0),
    (32, 16, -errno.EINVAL),  # 32 bytes need 32-byte alignment
    (32, 8, -errno.EINVAL),
    (31, 0, -errno.EINVAL),  # below ORIG_RSEQ_SIZE
    (28, 0, -errno.EINVAL),  # the feature size, but still below 32
    (0, 0, -errno.EINVAL),
    (33, 0, 0),  # >= feature size and AT_RSEQ_ALIGN aligned
    (40, 0, 0),
    (64, 0, 0),  # extended registration
    (256, 0, 0),
    (40, 16, -errno.EINVAL),  # misaligned for AT_RSEQ_ALIGN
    (64, 16, -errno.EINVAL),
    (64, 4, -errno.EINVAL),
]


@pytest.mark.parametrize(("length", "misalign", "expected"), LENGTH_ALIGNMENT_CASES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_register_length_and_alignment(kernel, length, misalign, expected):
    b = ScriptedMachine(kernel, cpus=4, nodes=2)
    b.syscall(block=Placement(cpu=2, mm_cid=7))
    addr = b.layout.tls + OTHER_AREA_OFFSET + misalign
    got = rseq_in_kernel(b, addr, length, 0, RSEQ_SIG)
    assert got["ret"] == expected
    if expected:
        assert got["reads"] == got["writes"] == got["faults"] == {}
        assert b.task.rseq.usrptr == 0
    else:
        assert (b.task.rseq.usrptr, b.task.rseq.len) == (addr, length)
        a = {f.name: b.task.mm.peek(addr + f.offset, f.size) for f in StructRseq.FIELDS}
        assert (a["cpu_id_start"], a["cpu_id"], a["node_id"], a["mm_cid"]) == (2, 2, 1, 7)
    assert b.task.killed_by is None


@pytest.mark.parametrize("kernel", KERNELS)
def test_register_16_aligned_area_with_len_64(kernel):
    """R-15: an area aligned to 16 only is refused for an extended length; 16 bytes lower it is fine."""
    b = ScriptedMachine(kernel)
    addr = b.layout.tls + ALIGNED_16_ONLY_OFFSET
    assert addr % 16 == 0 and addr % 32 == 16
    assert rseq(b, addr, 64, 0, RSEQ_SIG) == -errno.EINVAL
    assert b.task.rseq.usrptr == 0
    assert rseq(b, addr - 16, 64, 0, RSEQ_SIG) == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_register_range_crossing_task_size(kernel):
    """Step 4: access_ok() refuses a range reaching past TASK_SIZE, before any user access."""
    b = ScriptedMachine(kernel)
    t = b.task
    top_page = TASK_SIZE - PAGE_SIZE
    t.mm.map(top_page, PAGE_SIZE)
    addr = TASK_SIZE - 32
    assert addr % 32 == 0
    failed_before = t.mm.faults.failed

    for length in (64, 33):
        got = rseq_in_kernel(b, addr, length, 0, RSEQ_SIG)
        assert got["ret"] == -errno.EFAULT
        assert got["reads"] == got["writes"] == got["faults"] == {}
    got = rseq_in_kernel(b, TASK_SIZE, 32, 0, RSEQ_SIG)
    assert got["ret"] == -errno.EFAULT
    assert got["reads"] == got["writes"] == got["faults"] == {}
    assert t.mm.faults.failed == failed_before
    assert t.rseq.usrptr == 0

    # The same address with a range that ends exactly at TASK_SIZE is user memory.
    assert access_ok(addr, 32) is True
    assert access_ok(addr, 33) is False
    assert rseq(b, addr, 32, 0, RSEQ_SIG) == 0
    assert t.rseq.usrptr == addr
    assert t.killed_by is None


@pytest.mark.parametrize("kernel", KERNELS)
def test_register_unmapped_area_efault_from_memory_init(kernel):
    """Step 5: a valid, unmapped range gets past access_ok and faults on the first access.

    6.18 reads rseq_cs first; 6.19 writes it first without reading.
    """
    b = ScriptedMachine(kernel)
    t = b.task
    b.kernel.ftrace = Ftrace()
    assert access_ok(UNMAPPED, 32) is True
    failed_before = t.mm.faults.failed

    got = rseq_in_kernel(b, UNMAPPED, 32, 0, RSEQ_SIG)
    assert got["ret"] == -errno.EFAULT
    assert got["faults"] == {"rseq_cs": 1}
    assert got["reads"] == got["writes"] == {}
    assert t.mm.faults.failed == failed_before + 1
    first_access = "R rseq_cs -> FAULT" if kernel == "6.18" else "W rseq_cs <- FAULT"
    assert [line.strip() for line in b.kernel.ftrace.lines if "FAULT" in line] == [first_access]

    # Nothing was registered, and the task lives on.
    assert got["alive"] is True
    assert t.rseq.usrptr == 0
    assert t.killed_by is None
    assert b.register() == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_register_read_only_area(kernel):
    """6.18 only reads a zero rseq_cs, so a read-only area registers (and dies at the first
    ID update); 6.19 writes at registration and refuses it with -EFAULT."""
    b = ScriptedMachine(kernel)
    t = b.task
    ro = 0x5000_0000
    t.mm.map(ro, PAGE_SIZE, writable=False)
    got = rseq_in_kernel(b, ro, 32, 0, RSEQ_SIG)
    if kernel == "6.18":
        assert got["ret"] == 0
        assert got["reads"] == {"rseq_cs": 1}
        assert got["writes"] == got["faults"] == {}
        # The first return to user cannot write the IDs: SIGSEGV.
        assert got["alive"] is False
        assert t.killed_by == SIGSEGV
    else:
        assert got["ret"] == -errno.EFAULT
        assert got["faults"] == {"rseq_cs": 1}
        assert got["reads"] == got["writes"] == {}
        assert got["alive"] is True
        assert t.rseq.usrptr == 0
        assert t.killed_by is None


def test_register_read_only_area_with_stale_rseq_cs_6_18():
    """6.18: a non-zero rseq_cs must be cleared, and that write's fault is -EFAULT."""
    b = ScriptedMachine("6.18")
    t = b.task
    ro = 0x5000_0000
    t.mm.map(ro, PAGE_SIZE, writable=False)
    t.mm.poke(ro + StructRseq.RSEQ_CS.offset, 8, b.layout.descriptor)
    got = rseq_in_kernel(b, ro, 32, 0, RSEQ_SIG)
    assert got["ret"] == -errno.EFAULT
    assert got["reads"] == {"rseq_cs": 1}
    assert got["faults"] == {"rseq_cs": 1}
    assert got["alive"] is True
    assert t.rseq.usrptr == 0


@pytest.mark.parametrize("stale", [0x60_0000, 0xFFFF_FFFF_FFFF_FFE0, 1])
@pytest.mark.parametrize("kernel", KERNELS)
def test_register_clears_stale_rseq_cs(kernel, stale):
    """R-16: a junk rseq_cs left in a reused TLS area is zeroed at registration, no SIGSEGV."""
    b = ScriptedMachine(kernel)
    t = b.task
    t.mm.poke(b.layout.area + StructRseq.RSEQ_CS.offset, 8, stale)
    got = rseq_in_kernel(b, b.layout.area, 32, 0, RSEQ_SIG)
    assert got["ret"] == 0
    assert got["area"]["rseq_cs"] == 0  # already inside the syscall
    assert got["writes"]["rseq_cs"] == 1
    if kernel == "6.18":
        assert got["reads"] == {"rseq_cs": 1}
        assert got["writes"] == {"rseq_cs": 1}
    else:
        assert got["reads"] == {}
    assert got["alive"] is True
    assert t.killed_by is None
    assert b.area()["rseq_cs"] == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_register_user_accesses(kernel):
    """Step 5: 6.18 reads a zero rseq_cs and writes nothing; 6.19 writes without reading."""
    b = ScriptedMachine(kernel)
    poke_ids(b, SENTINEL)
    got = rseq_in_kernel(b, b.layout.area, 32, 0, RSEQ_SIG)
    assert got["ret"] == 0
    assert got["faults"] == {}
    if kernel == "6.18":
        assert got["reads"] == {"rseq_cs": 1}
        assert got["writes"] == {}
        # Nothing in the area changes until the first return to user space.
        assert (got["area"]["cpu_id_start"], got["area"]["cpu_id"],
                got["area"]["node_id"], got["area"]["mm_cid"]) == (SENTINEL,) * 4
    else:
        assert got["reads"] == {}
        assert got["writes"] == {"rseq_cs": 1, "cpu_id_start": 1, "cpu_id": 1,
                                 "node_id": 1, "mm_cid": 1}
        assert (got["area"]["cpu_id_start"], got["area"]["cpu_id"],
                got["area"]["node_id"], got["area"]["mm_cid"]) == (UNINIT, UNINIT, 0, 0)
    assert got["area"]["rseq_cs"] == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_register_raises_exit_work(kernel):
    """Step 6: 6.18 sets TIF_NOTIFY_RESUME; 6.19 forces an update through TIF_RSEQ."""
    b = ScriptedMachine(kernel)
    t = b.task
    seen = {}

    def work(k, task):
        ret = k.sys_rseq(task, b.layout.area, 32, 0, RSEQ_SIG)
        seen["tif"] = task.tif
        return ret

    assert b.syscall(work=work) == 0
    if kernel == "6.18":
        assert seen["tif"] & Tif.NOTIFY_RESUME
        assert not seen["tif"] & Tif.RSEQ
    else:
        assert seen["tif"] & Tif.RSEQ
        assert t.rseq.has_rseq is True
    # The work was done on the way out.
    assert not t.tif & (Tif.NOTIFY_RESUME | Tif.RSEQ)


@pytest.mark.parametrize(("cpu", "mm_cid", "node"), [(0, 0, 0), (3, 5, 1), (2, 1, 1), (1, 3, 0)])
@pytest.mark.parametrize("kernel", KERNELS)
def test_first_return_after_registration_writes_ids(kernel, cpu, mm_cid, node):
    """R-06 / spec §1.5: after the registering syscall returns, the IDs are the task's."""
    b = ScriptedMachine(kernel, cpus=4, nodes=2)
    t = b.task
    if (cpu, mm_cid) != (t.cpu, t.mm_cid):
        b.syscall(block=Placement(cpu=cpu, mm_cid=mm_cid))
    assert (t.cpu, t.mm_cid) == (cpu, mm_cid)
    poke_ids(b, SENTINEL)
    assert b.register() == 0
    assert ids(b) == (cpu, cpu, node, mm_cid)
    assert b.area()["rseq_cs"] == 0
    assert b.area()["flags"] == 0
    assert t.killed_by is None


@pytest.mark.parametrize("kernel", KERNELS)
def test_failed_registration_leaves_area_alone(kernel):
    """Argument errors and EBUSY never touch user memory."""
    b = ScriptedMachine(kernel)
    poke_ids(b, SENTINEL)
    for addr, length, flags in ((b.layout.area, 31, 0), (b.layout.area + 1, 32, 0),
                                (b.layout.area, 32, 4)):
        got = rseq_in_kernel(b, addr, length, flags, RSEQ_SIG)
        assert got["ret"] == -errno.EINVAL
        assert got["reads"] == got["writes"] == {}
    assert ids(b) == (SENTINEL,) * 4
    assert b.register() == 0
    area_after = b.area()
    got = rseq_in_kernel(b, b.layout.area, 32, 0, RSEQ_SIG)
    assert got["ret"] == -errno.EBUSY
    assert got["reads"] == got["writes"] == {}
    assert b.area() == area_after


@pytest.mark.parametrize("kernel", KERNELS)
def test_signature_is_u32(kernel):
    """sig is a u32: -1 and 0xFFFFFFFF are the same signature."""
    b = ScriptedMachine(kernel)
    assert b.register(sig=-1) == 0
    assert b.task.rseq.sig == U32_MASK
    assert b.register(sig=U32_MASK) == -errno.EBUSY
    assert b.unregister(sig=U32_MASK) == 0


# ======================================================================
# fork / exec lifecycle (userspace spec §8.6 L-01 .. L-03)
# ======================================================================
@pytest.mark.parametrize("kernel", KERNELS)
def test_fork_child_inherits_registration(kernel):
    """L-01: the fork child is registered: EBUSY on re-registration, valid cpu_id."""
    b = ScriptedMachine(kernel, cpus=4, nodes=2)
    assert b.register() == 0
    child = b.spawn_child(child_place=Placement(cpu=2, mm_cid=0))
    assert child.mm is not b.task.mm
    assert b.child_first_return(child) is True
    assert child.rseq.usrptr == b.layout.area
    assert (child.rseq.len, child.rseq.sig) == (32, RSEQ_SIG)
    assert ids(b, child) == (2, 2, 1, 0)

    assert b.register(child) == -errno.EBUSY
    assert b.register(child, sig=RSEQ_SIG + 1) == -errno.EPERM
    assert child.killed_by is None
    # The child can unregister its copy; the parent stays registered.
    assert b.unregister(child) == 0
    assert child.rseq.usrptr == 0
    assert b.register() == -errno.EBUSY


@pytest.mark.parametrize("kernel", KERNELS)
def test_clone_vm_child_is_not_registered(kernel):
    """L-02: a CLONE_VM child (a thread) starts unregistered and can register its own area."""
    b = ScriptedMachine(kernel)
    assert b.register() == 0
    assert CLONE_VM == 0x100
    child = b.spawn_child(clone_flags=0x100)
    assert child.mm is b.task.mm
    assert b.child_first_return(child) is True
    assert child.rseq.usrptr == 0
    # Not registered: unregistering the parent's area is EINVAL for it.
    assert b.unregister(child) == -errno.EINVAL
    own = b.layout.tls + OTHER_AREA_OFFSET
    assert b.register(child, addr=own) == 0
    assert child.rseq.usrptr == own
    assert b.task.rseq.usrptr == b.layout.area
    assert child.killed_by is None


@pytest.mark.parametrize("kernel", KERNELS)
def test_execve_resets_registration(kernel):
    """L-03: after a successful execve registering succeeds again."""
    b = ScriptedMachine(kernel)
    t = b.task
    assert b.register() == 0
    assert b.register() == -errno.EBUSY
    assert b.syscall(work=lambda k, task: k.execve(task) or 0) == 0
    assert t.rseq.usrptr == 0
    assert b.unregister() == -errno.EINVAL
    assert b.register() == 0
    assert t.killed_by is None


@pytest.mark.parametrize("kernel", KERNELS)
def test_failed_execve_keeps_registration(kernel):
    b = ScriptedMachine(kernel)
    t = b.task
    assert b.register() == 0
    assert b.syscall(work=lambda k, task: k.execve(task, success=False) or 0) == 0
    assert t.rseq.usrptr == b.layout.area
    assert b.register() == -errno.EBUSY
    assert t.killed_by is None
