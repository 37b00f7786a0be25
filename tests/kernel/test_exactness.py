"""Small exactness items (issue 13, item 4), from the 6.19.10 / 7.1.8 sources and 6.18's
kernel/rseq.c (raspberrypi/linux 656a52a8): the debugfs text, the node_id of 6.19's
rseq_update at unregistration, and 6.18's CONFIG_DEBUG_RSEQ copy of the ID fields."""

from __future__ import annotations

import pytest

from rseqlab.abi import RSEQ_SIG, RseqFlag
from rseqlab.kernel import RseqStats, Topology
from rseqlab.machine.scripted import Placement, ScriptedMachine
from rseqlab.scenarios import explain

UNINIT = 0xFFFF_FFFF


def test_debugfs_text_has_the_kernel_widths():
    s = RseqStats(exit=80_692_981, signal=32_581, slowpath=1_201_408, fastpath=0, ids=1_233_989,
                  cs=1_125_366, clear=1_125_366, fixup=0)
    assert s.debugfs() == (
        "exit:           80692981\n"
        "signal:            32581\n"
        "slowp:           1201408\n"
        "fastp:                 0\n"
        "ids:             1233989\n"
        "cs:              1125366\n"
        "clear:           1125366\n"
        "fixup:                 0\n")
    # seq_printf("%16lu"): the number takes exactly 16 columns after the 8-column label.
    assert all(len(line) == 24 for line in s.debugfs().splitlines())


def test_debugfs_file_per_kernel():
    """6.18 has no rseq debugfs directory; 6.19 and 7.1 sum every CPU's counters."""
    got = {k: explain("migrate", k).debugfs for k in ("6.18", "6.19", "7.1")}
    assert got["6.18"] is None
    assert got["6.19"].splitlines()[4] == "ids:    " + f"{1:>16}"
    assert got["7.1"].count("\n") == 8  # no slice counters without CONFIG_RSEQ_SLICE_EXTENSION


def _unregister_event(numa: bool):
    b = ScriptedMachine("6.19", cpus=2, nodes=1)
    b.kernel.topology = Topology.uniform(2, 1, numa=numa)
    b.syscall(block=Placement(cpu=1, mm_cid=0))
    assert b.register() == 0
    events = []
    b.kernel.trace_subscribers.append(events.append)
    assert b.syscall(work=lambda k, t: k.sys_rseq(t, b.layout.area, 32, RseqFlag.UNREGISTER, RSEQ_SIG)) == 0
    assert [e.name for e in events] == ["rseq_update"]
    return events[0].fields


@pytest.mark.parametrize("numa, node", [(False, 0), (True, None)])
def test_619_unregistration_event_node_id(numa, node):
    """cpu_to_node(-1): 0 from the generic macro without CONFIG_NUMA; with it, a per-CPU read
    at __per_cpu_offset[-1] that the source does not determine (the model: None)."""
    fields = _unregister_event(numa)
    assert fields["cpu_id"] == UNINIT and fields["mm_cid"] == 0
    assert fields["node_id"] == node


def test_619_registered_event_node_id_is_the_cpus_node():
    b = ScriptedMachine("6.19", cpus=4, nodes=2)
    events = []
    b.kernel.trace_subscribers.append(events.append)
    b.syscall(block=Placement(cpu=3, mm_cid=0))
    b.register()
    assert [(e.fields["cpu_id"], e.fields["node_id"]) for e in events] == [(3, 1)]


def test_618_debug_copy_after_unregistration_holds_the_reset_values():
    """rseq_unsafe_put_user() updates t->rseq_fields with every store, the reset too."""
    b = ScriptedMachine("6.18", debug=True)
    b.syscall(block=Placement(cpu=1, mm_cid=0))
    assert b.register() == 0
    assert b.task.rseq.kernel_fields == (1, 1, 0, 0)
    assert b.unregister() == 0
    assert b.task.rseq.kernel_fields == (0, UNINIT, 0, 0)


def test_618_debug_copy_is_read_from_the_area_at_registration():
    """Registration fills the copy with four get_user()s of what the area holds (a reused TLS
    area may hold anything); the first exit's ID write then updates it field by field."""
    b = ScriptedMachine("6.18", debug=True)
    t = b.task
    for off, value in ((0, 7), (4, 7), (20, 1), (24, 3)):  # cpu_id_start, cpu_id, node_id, mm_cid
        t.mm.poke(b.layout.area + off, 4, value)
    seen = {}

    def register(k, task):
        ret = k.sys_rseq(task, b.layout.area, 32, 0, RSEQ_SIG)
        seen["copy"] = task.rseq.kernel_fields
        return ret

    assert b.syscall(work=register) == 0
    assert seen["copy"] == (7, 7, 1, 3)
    assert t.rseq.kernel_fields == (0, 0, 0, 0)  # rewritten by the first return (CPU 0, cid 0)
