"""Linux 7.0 as released, 7.0.7, the 7.0.10 backport, and the slice-extension builds.

Every expectation is written from the source (``kernel/v7_0.py``,
``kernel/slice_ext.py``, ``kernel/builds.py`` name what was read), as a
difference from the parent personality, scenario by scenario:

* ``7.0`` is 6.19 plus two registration stores (``flags``, and ``slice_ctrl`` at
  offset 28 for any size);
* ``7.0.7`` is 7.0 with 7.1's unregistration (``cpu_id_start = 0``, no ``ids``);
* ``7.0.10`` is 7.1 (an alias);
* ``7.0+slice`` is 7.0 plus ``W slice_ctrl = 0`` on every fast-path run and every
  ID write (:data:`SLICE_CLEARS`), ``7.0+slice-off`` is 7.0 (the key is off);
* ``7.1+slice`` is 7.1 for a 32-byte registration, and 7.1 plus the clears for a
  v2 one.
"""

from __future__ import annotations

import errno

import pytest

from rseqlab.abi import (
    ENOTSUPP,
    NR_RSEQ_SLICE_YIELD,
    PR_RSEQ_SLICE_EXT_ENABLE,
    PR_RSEQ_SLICE_EXTENSION,
    PR_RSEQ_SLICE_EXTENSION_GET,
    PR_RSEQ_SLICE_EXTENSION_SET,
    RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE,
    RSEQ_CS_FLAG_SLICE_EXT_ENABLED,
    RSEQ_FLAG_SLICE_EXT_DEFAULT_ON,
    RSEQ_SIG,
    StructRseq,
    slice_ctrl,
)
from rseqlab.check import SCENARIOS as CHECKS
from rseqlab.check import Bounds, check
from rseqlab.errors import BadInput
from rseqlab.kernel import ALIASES, BUILDS, PERSONALITIES, SLICE_COUNTERS, kernel_class, kernel_names, make_kernel
from rseqlab.kernel._task import SIGSEGV, SYSCALL_WORK_RSEQ_SLICE, Tif
from rseqlab.kernel.v7_1 import Linux71
from rseqlab.machine.scripted import Placement, ScriptedMachine
from rseqlab.scenarios import SCENARIOS, explain
from rseqlab.selftests import tcmalloc_slab
from rseqlab.usermem import PAGE_SIZE

IDS = {"cpu_id_start": 1, "cpu_id": 1, "node_id": 1, "mm_cid": 1}
SPEC = [n for n, sc in SCENARIOS.items() if not sc.row.startswith("S")]  # the spec §4 rows
SLICE_ROWS = [n for n, sc in SCENARIOS.items() if sc.row.startswith("SL")]
SENTINEL = 0xC0FF_EE11  # something user space keeps in bytes 28..31


def shape(got) -> dict:
    """An explanation without its call graph, zero counters dropped (and without the debugfs
    text, a function of the counters compared here; its layout is pinned in test_exactness)."""
    d = got.as_json()
    d.pop("work")
    d.pop("kernel")
    d.pop("debugfs", None)
    d["counters"] = {c: n for c, n in d["counters"].items() if n}
    d["rseq_area"] = {f: v for f, v in d["rseq_area"].items() if f != "slice_ctrl"}
    return d


def plus_writes(d: dict, **extra: int) -> dict:
    d = {**d, "user_writes": dict(d["user_writes"])}
    for label, n in extra.items():
        d["user_writes"][label] = d["user_writes"].get(label, 0) + n
    d["user_writes"] = {k: v for k, v in sorted(d["user_writes"].items()) if v}
    return d


class V2ScriptedMachine(ScriptedMachine):
    def register(self, t=None, *, length: int = 64, **kw):
        return super().register(t, length=length, **kw)

    def unregister(self, t=None, *, length: int = 64, **kw):
        return super().unregister(t, length=length, **kw)


def observed(b: ScriptedMachine, t) -> dict:
    return {"counters": {c: n for c, n in t.stats.as_dict(b.kernel.counters).items() if n},
            "writes": dict(+t.uaccess.writes), "reads": dict(+t.uaccess.reads), "faults": dict(+t.uaccess.faults),
            "ip": t.regs.ip}


# ----------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------
def test_registry_names():
    assert list(PERSONALITIES) == ["6.18", "6.19", "7.0", "7.0.7", "7.1"]
    assert list(BUILDS) == ["7.0+slice", "7.0+slice-off", "7.1+slice", "7.1+slice-off"]
    assert ALIASES == {"7.0.10": "7.1", "7.0.10+slice": "7.1+slice", "7.0.10+slice-off": "7.1+slice-off"}
    for name in kernel_names():
        k = make_kernel(name)
        assert k.name == ALIASES.get(name, name)
    assert kernel_class("7.0.10") is Linux71
    with pytest.raises(BadInput, match="no slice extension"):
        make_kernel("7.0", slice_ext_nsec=10_000)


def test_list_kernels_shows_the_alias(run_cli):
    res = run_cli("check", "--list-kernels", "--json")
    assert res.status == 0
    assert res.json["kernels"]["7.0.10"].startswith("alias of 7.1: ")
    assert set(res.json["kernels"]) == set(kernel_names())


# ----------------------------------------------------------------------
# Spec §4 on every new personality, as differences from its parent
# ----------------------------------------------------------------------
@pytest.mark.parametrize("name", SPEC)
def test_7_0_is_6_19_plus_the_registration_stores(name):
    old, new = shape(explain(name, "6.19")), shape(explain(name, "7.0"))
    if name == "register":
        old = plus_writes(old, flags=1, slice_ctrl=1)
    assert new == old


@pytest.mark.parametrize("name", SPEC)
def test_7_0_7_is_7_0_with_7_1s_unregistration(name):
    old, new = shape(explain(name, "7.0")), shape(explain(name, "7.0.7"))
    if name == "unregister":
        # rseq_reset_ids: four plain stores, cpu_id_start = 0; no ids count, no rseq_update.
        assert old["counters"] == {"exit": 1, "ids": 1} and old["tracepoints"]["rseq_update"] == 1
        old["counters"] = {"exit": 1}
        old["tracepoints"] = {**old["tracepoints"], "rseq_update": 0}
        old["rseq_area"] = {**old["rseq_area"], "cpu_id_start": 0}
    assert new == old


@pytest.mark.parametrize("name", [*SPEC, *SLICE_ROWS])
@pytest.mark.parametrize(("alias", "target"), sorted(ALIASES.items()))
def test_7_0_10_is_7_1(name, alias, target):
    a, b = explain(name, alias).as_json(), explain(name, target).as_json()
    assert a.pop("kernel") == alias and b.pop("kernel") == target
    assert a == b


#: 7.0+slice over 7.0: ``W slice_ctrl = 0`` once per fast-path run with unchanged IDs and once
#: per successful ID write (``rseq_exit_user_update``, ``rseq_set_ids_get_csaddr``).
SLICE_CLEARS = {
    "syscall-exit": 0, "notify-resume-other": 0, "block-same-cpu": 0,
    "preempt-user-same-cpu": 1, "preempt-user-cs-outside": 1,  # the fast path, IDs unchanged
    "migrate": 1, "migrate-syscall": 1, "mmcid-change": 1, "syscall-in-cs": 1,  # the ID write
    "signal": 0, "signal-syscall": 0, "signal-in-cs": 0,  # the signal path has no clear
    "signal-in-cs-preempted": 1, "irq-no-resched": 0, "thread-create": 0,
    "fork-child-cow": 1,  # the fast path faults on cpu_id_start first; the slow path's write
    "fork-child-settid": 1,  # the page is private (schedule_tail()): the fast path's ID write
    "preempt-in-cs": 1,  # cleared before the section is checked
    "migrate-in-cs": 1,  # the migration's ID write, then the section is checked (and aborted)
    "preempt-in-cs-fault": 2,  # the fast path cleared, then the slow path's ID write
    "register": 1,  # the forced update's ID write (the registration's own store is 7.0's)
    "unregister": 1,  # 7.0 unregisters through rseq_set_ids
    "membarrier-ipi": 1, "kvm-guest-entry": 1,
}


def test_every_spec_scenario_has_a_slice_clear_count():
    assert set(SLICE_CLEARS) == set(SPEC)


@pytest.mark.parametrize("name", SPEC)
def test_7_0_slice_is_7_0_plus_the_implicit_clears(name):
    base, got = explain(name, "7.0"), explain(name, "7.0+slice")
    assert {c: got.counters[c] for c in SLICE_COUNTERS} == dict.fromkeys(SLICE_COUNTERS, 0)
    assert got.rseq_area["slice_ctrl"] == 0
    old, new = plus_writes(shape(base), slice_ctrl=SLICE_CLEARS[name]), shape(got)
    # Registration advertises AVAILABLE (unregistration leaves flags alone).
    assert new["rseq_area"].pop("flags") == RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE
    old["rseq_area"].pop("flags")
    assert new == old


@pytest.mark.parametrize("name", SPEC)
def test_7_0_slice_off_is_7_0(name):
    """rseq_slice_ext=0: the static key is off, so no clear; only the flags value differs."""
    base, got = shape(explain(name, "7.0")), shape(explain(name, "7.0+slice-off"))
    # 7.0 advertises AVAILABLE whenever configured, even with the key off (fixed by 010b7723c0a3).
    assert got["rseq_area"].pop("flags") == RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE
    base["rseq_area"].pop("flags")
    assert got == base


@pytest.mark.parametrize("kernel", ["7.1+slice", "7.1+slice-off"])
@pytest.mark.parametrize("name", SPEC)
def test_7_1_slice_with_a_32_byte_registration_is_7_1(name, kernel):
    """Legacy mode has no slice extension: no status bits, no slice_ctrl store at all."""
    assert shape(explain(name, kernel)) == shape(explain(name, "7.1"))


@pytest.mark.parametrize("name", SPEC)
def test_7_1_slice_v2_is_7_1_plus_the_implicit_clears(name):
    b_old, b_new = V2ScriptedMachine("7.1"), V2ScriptedMachine("7.1+slice")
    old, new = observed(b_old, SCENARIOS[name].play(b_old)), observed(b_new, SCENARIOS[name].play(b_new))
    extra = {"register": 2,  # v2 registration stores slice_ctrl, then the forced ID write
             "unregister": 0,  # 7.1 unregisters with plain stores
             }.get(name, SLICE_CLEARS[name])
    want = dict(old["writes"])
    if extra:
        want["slice_ctrl"] = extra
    assert new["writes"] == want
    assert {k: v for k, v in new.items() if k != "writes"} == {k: v for k, v in old.items() if k != "writes"}


# ----------------------------------------------------------------------
# Registration: flags and bytes 28..31, per kernel, size and flag
# ----------------------------------------------------------------------
A, E = RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE, RSEQ_CS_FLAG_SLICE_EXT_ENABLED
#: kernel -> {(length, DEFAULT_ON): (flags after registration, bytes 28..31 after the first exit)}.
#: Junk (0xFFFF) in flags and SENTINEL in bytes 28..31 before the registration.
REGISTRATION = {
    # 6.19 writes neither flags nor offset 28; it rejects DEFAULT_ON (EINVAL: nothing written).
    "6.19": {(32, 0): (0xFFFF, SENTINEL), (64, 0): (0xFFFF, SENTINEL), (32, 1): None, (64, 1): None},
    "7.0": {(32, 0): (0, 0), (64, 0): (0, 0), (32, 1): (0, 0), (64, 1): (0, 0)},
    "7.0.7": {(32, 0): (0, 0), (64, 0): (0, 0), (32, 1): (0, 0), (64, 1): (0, 0)},
    "7.0+slice": {(32, 0): (A, 0), (64, 0): (A, 0), (32, 1): (A | E, 0), (64, 1): (A | E, 0)},
    "7.0+slice-off": {(32, 0): (A, 0), (64, 0): (A, 0), (32, 1): (A, 0), (64, 1): (A, 0)},
    # 7.1: legacy registrations leave offset 28 alone; v2 stores slice_ctrl only when configured.
    "7.1": {(32, 0): (0, SENTINEL), (64, 0): (0, SENTINEL), (32, 1): (0, SENTINEL), (64, 1): (0, SENTINEL)},
    "7.1+slice": {(32, 0): (0, SENTINEL), (64, 0): (A, 0), (32, 1): (0, SENTINEL), (64, 1): (A | E, 0)},
    "7.1+slice-off": {(32, 0): (0, SENTINEL), (64, 0): (0, 0), (32, 1): (0, SENTINEL), (64, 1): (0, 0)},
}


@pytest.mark.parametrize("kernel", sorted(REGISTRATION))
@pytest.mark.parametrize(("length", "default_on"), [(32, 0), (64, 0), (32, 1), (64, 1)])
def test_registration_flags_and_slice_ctrl(kernel, length, default_on):
    b = ScriptedMachine(kernel)
    a = b.layout.area
    b.task.mm.poke(a + StructRseq.FLAGS.offset, 4, 0xFFFF)
    b.task.mm.poke(a + StructRseq.SLICE_CTRL.offset, 4, SENTINEL)
    flags = RSEQ_FLAG_SLICE_EXT_DEFAULT_ON if default_on else 0
    ret = b.syscall(work=lambda k, t: k.sys_rseq(t, a, length, flags, RSEQ_SIG))
    want = REGISTRATION[kernel][(length, default_on)]
    if want is None:
        assert ret == -errno.EINVAL
        return
    assert ret == 0
    assert (b.task.mm.peek(a + StructRseq.FLAGS.offset, 4),
            b.task.mm.peek(a + StructRseq.SLICE_CTRL.offset, 4)) == want
    configured = getattr(kernel_class(kernel), "slice_configured", False)
    enabled = getattr(b.task.rseq, "slice_enabled", False)
    assert enabled == (configured and bool(want[0] & E))
    assert b.prctl(PR_RSEQ_SLICE_EXTENSION, PR_RSEQ_SLICE_EXTENSION_GET) == (
        -errno.EINVAL if kernel == "6.19" else -ENOTSUPP if not configured
        else PR_RSEQ_SLICE_EXT_ENABLE if enabled else 0)


# ----------------------------------------------------------------------
# The prctl errno matrix (kernel/sys.c, rseq_slice_extension_prctl), in the kernel's order
# ----------------------------------------------------------------------
GET, SET, ON = PR_RSEQ_SLICE_EXTENSION_GET, PR_RSEQ_SLICE_EXTENSION_SET, PR_RSEQ_SLICE_EXT_ENABLE
EINVAL, ENXIO = -errno.EINVAL, -errno.ENXIO
#: (registration length or None, arg2, arg3, arg4) -> the answer per kernel group:
#: (before 7.0, 7.x not configured, 7.0+slice, 7.0+slice-off, 7.1+slice, 7.1+slice-off)
PRCTL = [
    ((None, GET, 0, 0), (EINVAL, -ENOTSUPP, 0, 0, 0, 0)),  # GET never looks at the key
    ((None, GET, 1, 0), (EINVAL, -ENOTSUPP, EINVAL, EINVAL, EINVAL, EINVAL)),
    ((None, GET, 0, 1), (EINVAL, EINVAL, EINVAL, EINVAL, EINVAL, EINVAL)),  # arg4: sys.c first
    ((None, 3, 0, 0), (EINVAL, -ENOTSUPP, EINVAL, EINVAL, EINVAL, EINVAL)),  # unknown arg2
    ((None, SET, 2, 0), (EINVAL, -ENOTSUPP, EINVAL, EINVAL, EINVAL, EINVAL)),  # bits besides ENABLE
    ((None, SET, ON, 0), (EINVAL, -ENOTSUPP, ENXIO, -ENOTSUPP, ENXIO, -ENOTSUPP)),  # key, then rseq
    ((32, SET, ON, 0), (EINVAL, -ENOTSUPP, 0, -ENOTSUPP, -ENOTSUPP, -ENOTSUPP)),  # 7.1: v2 only
    ((64, SET, ON, 0), (EINVAL, -ENOTSUPP, 0, -ENOTSUPP, 0, -ENOTSUPP)),
    ((64, SET, 0, 0), (EINVAL, -ENOTSUPP, 0, -ENOTSUPP, 0, -ENOTSUPP)),  # no change: 0, no access
]
GROUPS = {"6.18": 0, "6.19": 0, "7.0": 1, "7.0.7": 1, "7.1": 1, "7.0+slice": 2, "7.0+slice-off": 3,
          "7.1+slice": 4, "7.1+slice-off": 5}


@pytest.mark.parametrize("kernel", sorted(GROUPS))
@pytest.mark.parametrize(("case", "answers"), PRCTL, ids=[str(c) for c, _ in PRCTL])
def test_prctl_errno_matrix(kernel, case, answers):
    length, arg2, arg3, arg4 = case
    b = ScriptedMachine(kernel)
    if length is not None:
        assert b.register(length=length) == 0
    b.start_measuring(ftrace=False)
    assert b.prctl(PR_RSEQ_SLICE_EXTENSION, arg2, arg3, arg4) == answers[GROUPS[kernel]]
    assert b.task.killed_by is None
    if answers[GROUPS[kernel]] != 0 or arg3 == 0:
        assert not b.task.uaccess.reads and not b.task.uaccess.writes


@pytest.mark.parametrize(("kernel", "length"), [("7.0+slice", 32), ("7.0+slice", 64), ("7.1+slice", 64)])
def test_prctl_set_rewrites_flags_and_get_reports_it(kernel, length):
    b = ScriptedMachine(kernel)
    assert b.register(length=length) == 0
    a = b.layout.area + StructRseq.FLAGS.offset
    b.task.mm.poke(a, 4, A | 0x100)  # a bit user space owns stays
    assert b.prctl(PR_RSEQ_SLICE_EXTENSION, SET, ON) == 0
    assert b.task.mm.peek(a, 4) == A | E | 0x100
    assert b.prctl(PR_RSEQ_SLICE_EXTENSION, GET) == ON
    assert b.prctl(PR_RSEQ_SLICE_EXTENSION, SET, 0) == 0
    assert b.task.mm.peek(a, 4) == A | 0x100
    assert b.prctl(PR_RSEQ_SLICE_EXTENSION, GET) == 0


@pytest.mark.parametrize(("flags_value", "enabled_before"), [(0, False), (A, True)])
def test_prctl_dies_on_inconsistent_status_bits(flags_value, enabled_before):
    """(flags & valid) != valid, valid = AVAILABLE (| ENABLED if enabled): SIGSEGV and -EFAULT."""
    b = ScriptedMachine("7.0+slice")
    assert b.register(length=64) == 0
    if enabled_before:
        assert b.prctl(PR_RSEQ_SLICE_EXTENSION, SET, ON) == 0
    b.task.mm.poke(b.layout.area + StructRseq.FLAGS.offset, 4, flags_value)
    assert b.prctl(PR_RSEQ_SLICE_EXTENSION, SET, 0 if enabled_before else ON) is None  # died on the way out
    assert b.task.killed_by == SIGSEGV


def test_prctl_dies_when_the_flags_store_faults():
    b = ScriptedMachine("7.1+slice")
    assert b.register(length=64) == 0
    b.task.mm.protect(b.layout.tls, PAGE_SIZE, writable=False)
    assert b.prctl(PR_RSEQ_SLICE_EXTENSION, SET, ON) is None
    assert b.task.killed_by == SIGSEGV and b.task.uaccess.faults == {"flags": 1}


@pytest.mark.parametrize("kernel", ["6.18", "6.19", "7.0", "7.1", "7.0.7"])
def test_rseq_slice_yield_is_enosys_without_the_extension(kernel):
    b = ScriptedMachine(kernel)
    assert b.rseq_slice_yield() == -errno.ENOSYS


# ----------------------------------------------------------------------
# The extension's scenarios (rows S1-S5), per kernel
# ----------------------------------------------------------------------
def slice_outcome(counters=None, *, reads=None, writes=None, area_ctrl=0, switched=True):
    return {"counters": {"exit": 1, **(counters or {})}, "reads": reads or {}, "writes": writes or {},
            "slice_ctrl": area_ctrl, "switched": switched}


#: On the kernels that grant (7.0+slice, 7.1+slice and its alias), exactly.
GRANTING = {
    # R slice_ctrl (request 1), W slice_ctrl (granted 1); schedule() skipped, the timer armed.
    "slice-grant": slice_outcome({"s_granted": 1}, reads={"slice_ctrl": 1}, writes={"slice_ctrl": 1},
                                 area_ctrl=slice_ctrl(granted=1), switched=False),
    # The timer forces the reschedule: the exit loop revokes the standing grant (W 0) and
    # schedules; the fast path after the switch clears again.
    "slice-expire": slice_outcome({"fastpath": 1, "s_expired": 1, "s_revoked": 1}, reads={"rseq_cs": 1},
                                  writes={"slice_ctrl": 2}),
    # getpid at entry: timer cancelled, need-resched set, aborted, schedule, W slice_ctrl = 0.
    "slice-syscall-revoke": slice_outcome({"s_aborted": 1}, writes={"slice_ctrl": 1}),
    "slice-yield": slice_outcome({"s_yielded": 1}, writes={"slice_ctrl": 1}),
    # A signal pending with the reschedule: W slice_ctrl = 0, no grant (nothing to revoke); the
    # signal path reads rseq_cs, the fast path after the switch reads it again and clears.
    "slice-refused": slice_outcome({"signal": 1, "fastpath": 1}, reads={"rseq_cs": 2}, writes={"slice_ctrl": 2}),
}


def played(name: str, kernel: str) -> tuple[dict, ScriptedMachine]:
    b = ScriptedMachine(kernel)
    t = SCENARIOS[name].play(b)
    got = {"counters": {c: n for c, n in t.stats.as_dict(b.kernel.counters).items() if n},
           "reads": dict(+t.uaccess.reads), "writes": dict(+t.uaccess.writes),
           "slice_ctrl": t.mm.peek(b.layout.area + StructRseq.SLICE_CTRL.offset, 4),
           "switched": b.sched.switches > 0}
    return got, b


@pytest.mark.parametrize("kernel", ["7.0+slice", "7.1+slice", "7.0.10+slice"])
@pytest.mark.parametrize("name", SLICE_ROWS)
def test_slice_scenario_on_a_granting_kernel(name, kernel):
    got, b = played(name, kernel)
    assert got == GRANTING[name]
    assert b.task.killed_by is None
    if name == "slice-grant":
        assert b.task.syscall_work & SYSCALL_WORK_RSEQ_SLICE
        assert b.sched.timers[b.task.cpu][0] == 5_000  # now (0) + slice_ext_nsec (default 5 µs)
    if name == "slice-syscall-revoke":
        assert b.sched.cancelled == 1 and not b.sched.timers
    if name in ("slice-yield", "slice-syscall-revoke"):
        assert not b.task.syscall_work and not b.task.rseq.slice_granted


def test_rseq_slice_yield_returns_1_once():
    b = ScriptedMachine("7.1+slice")
    SCENARIOS["slice-grant"].play(b)
    assert b.rseq_slice_yield(resched=Placement(0, 0)) == 1
    assert b.rseq_slice_yield() == 0  # no grant any more: the entry work is not armed


@pytest.mark.parametrize("kernel", ["6.18", "6.19", "7.0", "7.0.7", "7.1", "7.0+slice-off", "7.1+slice-off"])
@pytest.mark.parametrize("name", SLICE_ROWS)
def test_slice_scenario_on_a_kernel_that_never_grants(name, kernel):
    """No grant: the tick preempts as usual, no slice counter moves, and slice_ctrl keeps the
    request user space stored (7.0+slice-off and 7.1+slice-off never clear: the key is off)."""
    got, b = played(name, kernel)
    assert not any(got["counters"].get(c) for c in SLICE_COUNTERS)
    assert "slice_ctrl" not in got["writes"] and "slice_ctrl" not in got["reads"]
    assert got["slice_ctrl"] == slice_ctrl(request=1)
    assert got["switched"]  # preempted by the (setup's or the measured) tick
    assert b.task.killed_by is None


def test_the_grant_is_refused_after_a_syscall_entry():
    """state.enabled &= event.user_irq: a reschedule at a syscall exit is never extended."""
    b = ScriptedMachine("7.0+slice")
    SCENARIOS["slice-grant"].play(b)  # granted, then yield to end it
    b.rseq_slice_yield(resched=Placement(0, 0))
    b.task.mm.poke(b.layout.area + StructRseq.SLICE_CTRL.offset, 4, slice_ctrl(request=1))
    b.start_measuring(ftrace=False)
    before = b.sched.switches
    b.syscall(resched=Placement(0, 0))
    assert b.task.stats.s_granted == 0 and b.sched.switches == before + 1


def test_expired_before_going_out_reschedules():
    """__rseq_arm_slice_extension_timer: expires < now -> need-resched and one more loop pass."""
    b = ScriptedMachine("7.0+slice")
    SCENARIOS["slice-grant"].play(b)
    t, k = b.task, b.kernel
    b.sched.timers.clear()
    b.advance(6_000)
    assert k.rseq_arm_slice_extension_timer(t) is True
    assert t.tif & Tif.NEED_RESCHED and not b.sched.timers


def test_the_expiry_only_hits_the_task_that_armed_it():
    b = ScriptedMachine("7.0+slice")
    SCENARIOS["slice-grant"].play(b)
    k, t = b.kernel, b.task
    other = k.new_task(999, t.mm)
    k.rseq_slice_expired(t.cpu, other)
    assert not other.tif & Tif.NEED_RESCHED and t.stats.s_expired == 0
    k.rseq_slice_expired(t.cpu, t)
    assert t.tif & Tif.NEED_RESCHED and t.stats.s_expired == 1


def test_debug_key_kills_a_task_that_touched_slice_ctrl_during_the_grant():
    b = ScriptedMachine("7.0+slice", debug=True)
    SCENARIOS["slice-grant"].play(b)
    b.task.mm.poke(b.layout.area + StructRseq.SLICE_CTRL.offset, 4, slice_ctrl(request=1, granted=1))
    assert b.syscall(nr=39) is None
    assert b.task.killed_by == SIGSEGV


@pytest.mark.parametrize(("text", "want"), [("5000", 4), ("50000", 5), ("4999", -errno.ERANGE),
                                            ("50001", -errno.ERANGE), ("-1", -errno.EINVAL),
                                            ("abc", -errno.EINVAL)])
def test_slice_ext_nsec_debugfs_write(text, want):
    k = make_kernel("7.0+slice")
    assert k.rseq_slice_ext_write(text) == want
    assert k.slice_ext_nsec == (int(text) if want > 0 else 5_000)


def test_slice_ext_nsec_option_sets_the_expiry():
    b = ScriptedMachine("7.1+slice", slice_ext_nsec=20_000)
    SCENARIOS["slice-grant"].play(b)
    assert b.sched.timers[b.task.cpu][0] == 20_000
    with pytest.raises(BadInput, match="ERANGE"):
        make_kernel("7.1+slice", slice_ext_nsec=60_000)
    assert make_kernel("7.0+slice", rseq_slice_ext=False).slice_key is False
    assert make_kernel("7.0+slice-off").slice_key is False


# ----------------------------------------------------------------------
# TCMalloc on 7.0: the missing ID rewrite and, separately, the offset-28 clobber
# ----------------------------------------------------------------------
@pytest.mark.parametrize(("kernel", "rewritten", "kept"), [
    ("6.19", False, True),
    ("7.0", False, True),  # no rewrite; the key does not exist: bytes 28..31 survive
    ("7.0+slice", False, False),  # no rewrite, and the fast path stores slice_ctrl = 0
    ("7.0+slice-off", False, True),
    ("7.0.10", True, True),
    ("7.0.10+slice", True, True),  # legacy registrations: no slice store (v2 only)
    ("7.1+slice", True, True),
])
def test_offset_28_clobber_is_separate_from_the_missing_id_rewrite(kernel, rewritten, kept):
    """A 32-byte registration, then user space keeps its own word in cpu_id_start and bytes
    28..31 (TCMalloc's layout); a preemption back onto the same CPU."""
    b = ScriptedMachine(kernel)
    assert b.register() == 0
    a = b.layout.area
    b.task.mm.poke(a + StructRseq.CPU_ID_START.offset, 4, 0x8000_1234)
    b.task.mm.poke(a + StructRseq.SLICE_CTRL.offset, 4, SENTINEL)
    assert b.interrupt(resched=Placement(0, b.task.mm_cid))
    assert (b.task.mm.peek(a + StructRseq.CPU_ID_START.offset, 4) != 0x8000_1234) is rewritten
    assert (b.task.mm.peek(a + StructRseq.SLICE_CTRL.offset, 4) == SENTINEL) is kept


@pytest.mark.parametrize(("kernel", "passes"), [("7.0", False), ("7.0.7", False), ("7.0+slice", False),
                                                 ("7.0.10", True), ("7.1+slice", True)])
def test_tcmalloc_selftest_on_each_7_0_variant(kernel, passes):
    r = tcmalloc_slab.run(kernel)
    assert r.passed is passes, r.detail
    if not passes:
        assert "double hand-outs 0" not in r.stdout[1]


@pytest.mark.parametrize(("kernel", "broken"), [("7.0", True), ("7.0.10", False)])
def test_check_tcmalloc_slab_cache_on_7_0(kernel, broken):
    r = check(CHECKS["tcmalloc-slab-cache"](), kernel, Bounds(preemptions=1, migrations=0, signals=0))
    assert (r.violations > 0) is broken
    if broken:
        assert "handed out" in r.counterexample.violation


def test_nr_and_enosys_constants():
    assert NR_RSEQ_SLICE_YIELD == 471
