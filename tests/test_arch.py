"""Architectures (issue 13, item 3): what differs per architecture and release, asserted exactly.

The expectations are written from the kernel sources (``arch/arm64/Kconfig``,
``arch/arm64/kernel/entry-common.c``, ``include/linux/rseq.h``, ``rseq_entry.h``,
``irq-entry-common.h``, ``include/uapi/asm-generic/unistd.h`` of 6.19.10 and 7.1.8),
not from the model's output; docs/architectures.md explains each.
"""

from __future__ import annotations

import pytest

from rseqlab.errors import BadInput
from rseqlab.kernel import Tif, kernel_class, make_kernel
from rseqlab.kernel.arch import ARM64, X86_64, arch_by_name, split_kernel_name, with_arch
from rseqlab.kernel.arm64 import Arm64Entry
from rseqlab.machine.scripted import Placement, ScriptedMachine
from rseqlab.scenarios import explain

IDS = {"cpu_id_start": 1, "cpu_id": 1, "node_id": 1, "mm_cid": 1}
DESC = {"cs.start_ip": 1, "cs.post_commit_offset": 1, "cs.abort_ip": 1}


# ----------------------------------------------------------------------
# The Arch object: Kconfig answers per release, constants
# ----------------------------------------------------------------------
def test_kconfig_answers_per_arch_and_release():
    for release in ("6.19", "7.0", "7.1"):
        assert X86_64.has(release, "GENERIC_ENTRY") and X86_64.has(release, "HAVE_GENERIC_TIF_BITS")
        assert ARM64.has(release, "GENERIC_IRQ_ENTRY")
        assert not ARM64.has(release, "GENERIC_ENTRY")
        assert not ARM64.has(release, "HAVE_GENERIC_TIF_BITS")
    # The regression and its fix: arm64's entry notes a user interrupt only from 7.1.
    assert not ARM64.has("6.19", "RSEQ_NOTE_USER_IRQ_ENTRY")
    assert ARM64.has("7.1", "RSEQ_NOTE_USER_IRQ_ENTRY")
    assert not ARM64.config("6.19").split_exit_helpers and ARM64.config("7.1").split_exit_helpers
    # What-if names are answered for their release.
    assert ARM64.config("6.19:no-cs-check") == ARM64.config("6.19")


def test_slice_extension_needs_generic_entry_and_tif_bits():
    """init/Kconfig (7.1.8): RSEQ_SLICE_EXTENSION depends on GENERIC_ENTRY && HAVE_GENERIC_TIF_BITS."""
    assert X86_64.has("7.0", "RSEQ_SLICE_EXTENSION") and X86_64.has("7.1", "RSEQ_SLICE_EXTENSION")
    assert not X86_64.has("6.19", "RSEQ_SLICE_EXTENSION")  # no such feature before 7.0
    assert not ARM64.has("7.0", "RSEQ_SLICE_EXTENSION") and not ARM64.has("7.1", "RSEQ_SLICE_EXTENSION")
    with pytest.raises(BadInput, match="unknown architecture feature"):
        ARM64.has("7.1", "GENERIC_FOO")


def test_syscall_numbers_and_constants():
    from rseqlab.abi import NR_RSEQ, RSEQ_SIG, TASK_SIZE

    assert X86_64.syscalls["rseq"] == NR_RSEQ == 334 and ARM64.syscalls["rseq"] == 293
    assert ARM64.syscalls["membarrier"] == 283 and X86_64.syscalls["membarrier"] == 324
    assert ARM64.syscalls["getcpu"] == 168 and ARM64.syscalls["rt_sigreturn"] == 139
    assert X86_64.rseq_sig == RSEQ_SIG and ARM64.rseq_sig == 0xD428BC00
    assert X86_64.task_size == TASK_SIZE and ARM64.task_size == 1 << 48
    assert X86_64.memory_destination_add and not ARM64.memory_destination_add
    assert X86_64.has_offset_deref_addv and not ARM64.has_offset_deref_addv


def test_kernel_names_carry_the_arch():
    assert split_kernel_name("6.19@arm64") == ("6.19", ARM64)
    assert split_kernel_name("6.19:no-cs-check") == ("6.19:no-cs-check", X86_64)
    assert with_arch("6.19", "x86_64") == "6.19" and with_arch("7.1", "arm64") == "7.1@arm64"
    assert with_arch("6.19@arm64", "arm64") == "6.19@arm64"
    with pytest.raises(BadInput, match="names architecture arm64, but --arch is x86_64"):
        with_arch("6.19@arm64", "x86_64")
    with pytest.raises(BadInput, match=r"unknown architecture 'riscv'; accepted: x86_64, arm64"):
        arch_by_name("riscv")
    k = make_kernel("6.19", arch="arm64")
    assert k.name == "6.19@arm64" and k.arch is ARM64 and isinstance(k, Arm64Entry)
    assert make_kernel("6.19").name == "6.19" and not isinstance(make_kernel("6.19"), Arm64Entry)
    # 6.18's rseq code asks no entry question: no arm64 entry mixin, only the arch's constants.
    legacy = make_kernel("6.18@arm64")
    assert legacy.arch is ARM64 and not isinstance(legacy, Arm64Entry)
    assert kernel_class("6.19:no-cs-check@arm64") is kernel_class("6.19:no-cs-check@arm64")
    assert make_kernel("6.19:no-cs-check@arm64").name == "6.19:no-cs-check@arm64"


# ----------------------------------------------------------------------
# The bench: the regression and its fix
# ----------------------------------------------------------------------
def _preempted_in_cs(kernel: str, place: Placement | None = None):
    b = ScriptedMachine(kernel)
    t = b.task
    b.register()
    b.enter_cs(at=8)
    b.start_measuring(ftrace=False)
    b.interrupt(resched=place or Placement(t.cpu, t.mm_cid))
    return b, t


def test_user_irq_is_never_set_on_arm64_6_19():
    b = ScriptedMachine("6.19@arm64")
    t = b.task
    b.register()
    b.kernel.enter_from_user_mode(t, "interrupt")
    assert t.rseq.user_irq is False  # arm64_enter_from_user_mode() has no rseq_note_user_irq_entry()
    b2 = ScriptedMachine("7.1@arm64")
    b2.register()
    b2.kernel.enter_from_user_mode(b2.task, "interrupt")
    assert b2.task.rseq.user_irq is True
    b3 = ScriptedMachine("7.1@arm64")
    b3.register()
    b3.kernel.enter_from_user_mode(b3.task, "syscall")  # a syscall is not a user interrupt
    assert b3.task.rseq.user_irq is False


@pytest.mark.parametrize("kernel", ["6.19", "7.1", "7.1@arm64", "6.18@arm64", "6.18"])
def test_same_cpu_preemption_in_cs_aborts(kernel):
    b, t = _preempted_in_cs(kernel)
    assert t.regs.ip == b.layout.abort_ip
    assert t.stats.fixup == 1 and t.trace.rseq_ip_fixup == 1


def test_same_cpu_preemption_in_cs_is_not_aborted_on_arm64_6_19():
    b, t = _preempted_in_cs("6.19@arm64")
    assert b.in_cs(t) and t.regs.ip == b.layout.cs_start + 8
    # The switch-in raises nothing (no user_irq, no ID change): not a single rseq access.
    assert t.stats.as_dict() == {"exit": 1, "signal": 0, "slowpath": 0, "fastpath": 0, "ids": 0,
                                 "cs": 0, "clear": 0, "fixup": 0}
    assert not t.uaccess.reads and not t.uaccess.writes
    assert b.area(t)["rseq_cs"] == b.layout.descriptor  # still armed


def test_migration_in_cs_is_not_aborted_on_arm64_6_19_either():
    """The slow path writes the new IDs, then rseq_update_usr() skips the section: no user_irq."""
    b, t = _preempted_in_cs("6.19@arm64", Placement(1, 0))
    assert b.in_cs(t)
    assert {c: n for c, n in t.stats.as_dict().items() if n} == {"exit": 1, "slowpath": 1, "ids": 1}
    assert dict(t.uaccess.writes) == IDS and dict(t.uaccess.reads) == {"rseq_cs": 1}
    assert b.area(t)["cpu_id"] == 1
    b71, t71 = _preempted_in_cs("7.1@arm64", Placement(1, 0))
    assert t71.regs.ip == b71.layout.abort_ip


@pytest.mark.parametrize(("kernel", "want"), [
    # x86_64: the fast path with TIF_RSEQ.
    ("6.19", {"fastpath": 1, "cs": 1, "fixup": 1}),
    # arm64 7.1: no GENERIC_ENTRY, so the same work runs in the slow path, and legacy
    # (32-byte) registrations rewrite the IDs on every switch.
    ("7.1@arm64", {"slowpath": 1, "ids": 1, "cs": 1, "fixup": 1}),
    ("7.1", {"fastpath": 1, "ids": 1, "cs": 1, "fixup": 1}),
    ("6.19@arm64", {}),
])
def test_preempt_in_cs_counters_per_arch(kernel, want):
    got = explain("preempt-in-cs", kernel)
    assert {c: n for c, n in got.counters.items() if c != "exit" and n} == want
    assert got.counters["exit"] == 1
    assert got.ip_is_abort == bool(want)


@pytest.mark.parametrize(("name", "kernel", "counters", "reads", "writes", "abort"), [
    ("signal-in-cs", "6.19@arm64", {}, {}, {}, False),
    ("signal-in-cs", "7.1@arm64", {"signal": 1, "slowpath": 1, "ids": 1, "cs": 1, "fixup": 1},
     {"rseq_cs": 2, **DESC, "abort_sig": 1}, {"rseq_cs": 1, **IDS}, True),
    ("signal", "6.19@arm64", {}, {}, {}, False),
    ("migrate", "6.19@arm64", {"slowpath": 1, "ids": 1}, {"rseq_cs": 1}, IDS, False),
    ("migrate-in-cs", "6.19@arm64", {"slowpath": 1, "ids": 1}, {"rseq_cs": 1}, IDS, False),
    ("migrate-in-cs", "7.1@arm64", {"slowpath": 1, "ids": 1, "cs": 1, "fixup": 1},
     {"rseq_cs": 1, **DESC, "abort_sig": 1}, {"rseq_cs": 1, **IDS}, True),
    ("membarrier-ipi", "6.19@arm64", {}, {}, {}, False),
    ("preempt-user-same-cpu", "6.19@arm64", {}, {}, {}, False),
    ("syscall-exit", "6.19@arm64", {}, {}, {}, False),
    ("register", "6.19@arm64", {"slowpath": 1, "ids": 1}, {"rseq_cs": 1},
     {"rseq_cs": 1, "cpu_id_start": 2, "cpu_id": 2, "node_id": 2, "mm_cid": 2}, False),
    # The pre-guest resume_user_mode_work(NULL) consumes TIF_NOTIFY_RESUME (= TIF_RSEQ);
    # rseq_virt_userspace_exit() raises it again and the real exit does the update.
    ("kvm-guest-entry", "6.19@arm64", {"slowpath": 1, "ids": 1}, {"rseq_cs": 1}, IDS, False),
])
def test_arm64_scenarios(name, kernel, counters, reads, writes, abort):
    got = explain(name, kernel)
    assert {c: n for c, n in got.counters.items() if c != "exit" and n} == counters
    assert got.counters["exit"] == 1
    assert got.user_reads == reads and got.user_writes == writes
    assert got.ip_is_abort == abort and got.signal is None


def test_arm64_never_uses_a_separate_tif_rseq():
    """No HAVE_GENERIC_TIF_BITS: raising the work raises TIF_NOTIFY_RESUME; no fast path runs."""
    b = ScriptedMachine("7.1@arm64")
    t = b.task
    b.register()
    seen = []
    k = b.kernel
    orig = k.rseq_raise_notify_resume

    def spy(task):
        orig(task)
        seen.append(task.tif)

    k.rseq_raise_notify_resume = spy
    b.interrupt(resched=Placement(1, 0))
    assert seen and all(tif & Tif.NOTIFY_RESUME and not tif & Tif.RSEQ for tif in seen)
    assert t.stats.fastpath == 0


def test_arm64_6_19_syscall_exit_clears_the_events():
    """exit_to_user_mode_prepare_legacy() serves syscalls too and clears the events; the
    x86_64 syscall exit leaves them (they are cleared only under LOCKDEP)."""
    for kernel, left in (("6.19", True), ("6.19@arm64", False)):
        b = ScriptedMachine(kernel)
        t = b.task
        t.rseq.ids_changed = True  # e.g. a placement while unregistered: nothing raised
        b.syscall()
        assert t.rseq.ids_changed is left, kernel


# ----------------------------------------------------------------------
# User programs: arm64's instruction sequences
# ----------------------------------------------------------------------
def test_arm64_counter_commit_is_ldr_add_str():
    """rseq_addv: 3 instructions of CPU check, then ldr, add, str (x86: cpu check and one addq)."""
    from rseqlab.machine.machine import Machine
    from rseqlab.userprog import primitives as P
    from rseqlab.userprog.libc import librseq_register_current_thread

    sites = {}
    for kernel in ("6.19", "6.19@arm64"):
        m = Machine(kernel)
        out = {}

        def prog(th, out=out):
            librseq_register_current_thread(th, nolibc=True)
            v = th.image.alloc(8, 8)
            cpu = P.current_index(th)
            out["ret"] = P.load_add_store(th, v, 5, cpu)
            out["value"] = th.mm.peek(v, 8)
            out["sites"] = dict(th.image.sites)

        m.spawn(prog)
        m.run()
        assert out["ret"] == 0 and out["value"] == 5
        sites[kernel] = out["sites"]
    x86 = sites["6.19"]["load_add_store_cpu_id"]
    a64 = sites["6.19@arm64"]["load_add_store_a64_cpu_id"]
    assert x86.post_commit_ip - x86.start_ip == 3
    assert a64.post_commit_ip - a64.start_ip == 6


def test_membarrier_test_is_skipped_on_arm64():
    from rseqlab.selftests import param_test

    r = param_test.run(["-T", "r", "-r", "100", "-t", "4"], "6.19@arm64")
    assert r.passed and any("Skipping membarrier test" in line for line in r.stdout)
    assert r.counters["nr_abort"] == 0


# ----------------------------------------------------------------------
# check: the lost update
# ----------------------------------------------------------------------
@pytest.mark.parametrize(("kernel", "violations"), [
    ("6.19@arm64", True), ("7.1@arm64", False), ("6.18@arm64", False), ("6.19", False),
])
def test_check_percpu_counter_per_arch(kernel, violations):
    from rseqlab import check as checker

    r = checker.check(checker.SCENARIOS["percpu-counter"](), kernel, checker.Bounds(2, 0, 1))
    assert bool(r.violations) is violations
    if violations:
        assert "sum(counter) = 1, expected 2" in r.counterexample.violation


# ----------------------------------------------------------------------
# 7.1's legacy/v2 split on arm64 (rseq_v2: GENERIC_IRQ_ENTRY && rseq_len > 32)
# ----------------------------------------------------------------------
@pytest.mark.parametrize(("length", "version"), [(32, 1), (64, 2)])
def test_7_1_split_exists_on_arm64(length, version):
    """arm64 selects GENERIC_IRQ_ENTRY, so a longer registration is v2 there too."""
    b = ScriptedMachine("7.1@arm64")
    t = b.task
    assert b.register(length=length) == 0
    assert t.rseq.has_rseq == version
    b.start_measuring(ftrace=False)
    b.syscall(block=Placement(t.cpu, t.mm_cid))  # blocks and comes back: same CPU, no user_irq
    # Legacy forces the rewrite on every switch-in; v2 raises nothing.
    assert t.stats.ids == t.stats.slowpath == (1 if version == 1 else 0) and t.stats.fastpath == 0
    # A same-CPU user-interrupt preemption raises in both modes, and without GENERIC_ENTRY the
    # slow path's rseq_update_usr() always writes the IDs (the skip is in the fast path only).
    b.start_measuring(ftrace=False)
    b.interrupt(resched=Placement(t.cpu, t.mm_cid))
    assert t.stats.ids == t.stats.slowpath == 1
    if version == 2:
        # v2 enforces the read-only fields on arm64 as well: a changed cpu_id_start is fatal.
        t.mm.poke(b.layout.area, 4, 7)
        b.interrupt(resched=Placement(1, t.mm_cid))
        assert t.killed_by == 11


def test_debug_on_arm64_6_19_kills_a_task_migrated_inside_a_section():
    """DEBUG_RSEQ is settable on arm64 (depends on !GENERIC_ENTRY): the debug key makes the slow
    path check the section, and rseq_debug_update_user_cs() finds it inside without user_irq."""
    got = explain("migrate-in-cs", "6.19@arm64", debug=True)
    assert got.signal == "SIGSEGV" and not got.ip_is_abort
    assert explain("migrate-in-cs", "7.1@arm64", debug=True).ip_is_abort
