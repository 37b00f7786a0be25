"""Parsing /sys/kernel/debug/rseq/stats.

The fixtures are written by hand from the format strings of ``rseq_stats_show()`` in
``kernel/rseq.c``: Linux 6.19.10 prints eight lines ``seq_printf(m, "exit:   %16lu\\n", ...)``
(labels ``exit signal slowp fastp ids cs clear fixup``, each padded to 8 columns, then the value
right-aligned in 16); Linux 7.1.8 with ``CONFIG_RSEQ_SLICE_EXTENSION`` adds ``sgrant sexpir srevok
syield sabort`` in the same layout. No kernel with the statistics runs on this machine.
"""

from __future__ import annotations

import pytest

from rseqlab.errors import BadInput
from rseqlab.vm.stats import BASE_COUNTERS, SLICE_COUNTERS, deltas, has_slice_counters, parse_stats

STATS_6_19 = (
    "exit:           80692981\n"
    "signal:            32581\n"
    "slowp:           1201408\n"
    "fastp:                 0\n"
    "ids:             1233989\n"
    "cs:              1125366\n"
    "clear:           1125366\n"
    "fixup:                 0\n"
)

STATS_7_1_SLICE = (
    "exit:                812\n"
    "signal:                3\n"
    "slowp:                 1\n"
    "fastp:                40\n"
    "ids:                  12\n"
    "cs:                    7\n"
    "clear:                 5\n"
    "fixup:                 2\n"
    "sgrant:                9\n"
    "sexpir:                1\n"
    "srevok:                2\n"
    "syield:                6\n"
    "sabort:                0\n"
)


def test_fixtures_have_the_kernels_layout():
    # "%-8s" of "label:" then "%16lu": every line is 24 characters.
    for text in (STATS_6_19, STATS_7_1_SLICE):
        for line in text.splitlines():
            label, value = line[:8], line[8:]
            assert len(line) == 24 and label.rstrip().endswith(":") and value == f"{int(value):16d}"


def test_6_19_format():
    s = parse_stats(STATS_6_19)
    assert list(s) == list(BASE_COUNTERS)
    assert s == {"exit": 80692981, "signal": 32581, "slowpath": 1201408, "fastpath": 0, "ids": 1233989,
                 "cs": 1125366, "clear": 1125366, "fixup": 0}
    assert not has_slice_counters(s)


def test_7_1_format_with_slice_counters():
    s = parse_stats(STATS_7_1_SLICE)
    assert list(s) == [*BASE_COUNTERS, *SLICE_COUNTERS]
    assert s["fixup"] == 2 and s["s_granted"] == 9 and s["s_yielded"] == 6 and s["s_aborted"] == 0
    assert has_slice_counters(s)


def test_any_padding_and_unknown_counters_are_read():
    s = parse_stats("exit: 5\nsignal:0\nslowp:\t1\nfastp: 2\nids: 3\ncs: 4\nclear: 4\nfixup: 0\nnewthing: 7\n\n")
    assert s["exit"] == 5 and s["slowpath"] == 1 and s["newthing"] == 7


@pytest.mark.parametrize("text,message", [
    ("", "empty statistics file"),
    (STATS_6_19[: STATS_6_19.index("cs:")], "truncated statistics (missing cs, clear, fixup)"),
    (STATS_6_19.replace("ids:   ", "ids:  x"), "not a statistics line"),
    (STATS_6_19 + "exit: 3\n", "counter 'exit' appears twice"),
    (STATS_6_19.replace("     1233989", "    -1233989"), "not a statistics line"),
    ("\x00\x00garbage", "not a statistics line"),
])
def test_bad_files_are_one_line(text, message):
    with pytest.raises(BadInput) as exc:
        parse_stats(text, source="guest/rseq_stats.after")
    assert message in str(exc.value) and str(exc.value).startswith("guest/rseq_stats.after")
    assert "\n" not in str(exc.value)


def test_deltas_per_counter():
    before = parse_stats(STATS_7_1_SLICE)
    after = dict(before, exit=before["exit"] + 100, s_granted=before["s_granted"] + 4)
    d = deltas(before, after)
    assert d["exit"] == 100 and d["s_granted"] == 4 and sum(d.values()) == 104


def test_deltas_reject_shrinking_or_different_counters():
    before = parse_stats(STATS_6_19)
    with pytest.raises(BadInput, match="counter ids went backwards"):
        deltas(before, dict(before, ids=0))
    with pytest.raises(BadInput, match="different counters"):
        deltas(before, parse_stats(STATS_7_1_SLICE))
