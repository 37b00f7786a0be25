"""parse.EventIndex and fields_of: the one-pass prefetch decodes what records_of decodes."""

from __future__ import annotations

import numpy as np
import pytest

from rseqlab.trace import parse

#: The common fields every event format starts with.
COMMON = """	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;
"""
FMT_A = f"""name: ev_a
ID: 7
format:
{COMMON}	field:long id;	offset:8;	size:8;	signed:1;
	field:unsigned long args[6];	offset:16;	size:48;	signed:0;
"""
FMT_B = f"""name: ev_b
ID: 300
format:
{COMMON}	field:unsigned char odd;	offset:9;	size:1;	signed:0;
	field:short half;	offset:10;	size:2;	signed:1;
	field:unsigned int tail;	offset:13;	size:4;	signed:0;
"""


def _records(rng, aligned: bool):
    """Random records of both formats, another ID and a too-short ev_a, back to back."""
    a, b = parse.parse_format("s", FMT_A), parse.parse_format("s", FMT_B)
    chunks, offsets, lengths, pos = [], [], [], 0
    for _ in range(3000):
        which = rng.integers(0, 4)
        ident, size = [(a.id, a.size), (b.id, b.size), (9, 12), (a.id, 12)][which]
        size = -(-size // 4) * 4
        body = rng.integers(0, 256, size, dtype=np.uint8)
        body[0:2] = np.frombuffer(np.uint16(ident).tobytes(), np.uint8)
        gap = 4 if aligned else int(rng.integers(1, 4))
        chunks += [np.zeros(gap, np.uint8), body]
        offsets.append(pos + gap)
        lengths.append(size)
        pos += gap + size
    flat = np.concatenate(chunks)
    n = len(offsets)
    raw = parse.RawRecords(flat, np.array(offsets, np.int64), np.array(lengths, np.int64),
                           np.arange(n, dtype=np.uint64) * 10, (np.arange(n) % 2).astype(np.int16), [])
    return raw, a, b


@pytest.mark.parametrize("aligned", [True, False])
def test_prefetched_fields_are_the_records_own(aligned):
    raw, a, b = _records(np.random.default_rng(3), aligned)
    wanted = {a: ("common_pid", "id"), b: ("common_pid", "odd", "half", "tail")}
    index = parse.EventIndex(raw)
    index.prefetch(wanted)
    assert (index.prefetched(a, ("id",)) is not None) == (aligned and parse._COMPILED)
    plain = parse.EventIndex(raw)  # no prefetch: fields_of's own gather
    for fmt, names in wanted.items():
        rows, ts, cpu, sel = parse.records_of(raw, fmt)
        assert len(sel) > 300
        for got in (parse.fields_of(index, fmt, names), parse.fields_of(plain, fmt, names)):
            assert np.array_equal(got[3], sel) and np.array_equal(got[1], ts) and np.array_equal(got[2], cpu)
            for n in names:
                assert got[0][n].dtype == rows[n].dtype and np.array_equal(got[0][n], rows[n]), n
    # a short record is not one of ev_a's: records_of's rule
    assert len(parse.fields_of(index, a, ("id",))[3]) < int((parse.common_types(raw) == a.id).sum())
