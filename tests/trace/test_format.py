"""The trace file format: round trip, and one clear error for every kind of bad file."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from rseqlab.errors import BadInput
from rseqlab.trace.format import (EVENT_COLUMNS, FORMAT_VERSION, MAGIC, SYSARG_COLUMNS, Kind, Trace,
                                  empty_table, load, save)


def synthetic(n: int = 500, seed: int = 1) -> Trace:
    rng = np.random.default_rng(seed)
    ev = empty_table(EVENT_COLUMNS, n)
    ev["ts"] = np.sort(rng.integers(0, 10**9, n))
    ev["cpu"] = rng.integers(0, 2, n).astype(np.int16)
    ev["kind"] = rng.integers(0, len(Kind), n).astype(np.uint8)
    ev["pid"] = rng.integers(100, 110, n).astype(np.int32)
    for c in "abcd":
        ev[c] = rng.integers(-(2**62), 2**62, n)
    sa = empty_table(SYSARG_COLUMNS, 7)
    sa["event"] = np.arange(7, dtype=np.uint32) * 3
    for i in range(6):
        sa[f"arg{i}"] = rng.integers(0, 2**63, 7).astype(np.uint64)
    meta = {"command": ["true"], "kernel": {"release": "6.18.0", "hz": 250}, "cpus": 2,
            "lost": {"total": 0}, "root": {"pid": 100}}
    return Trace(meta, ev, sa)


def test_round_trip_is_exact(tmp_path):
    tr = synthetic()
    path = tmp_path / "t.trace"
    size = save(tr, path)
    assert size == path.stat().st_size
    back = load(path)
    assert back.meta == tr.meta
    for name in EVENT_COLUMNS:
        assert back.events[name].dtype == np.dtype(EVENT_COLUMNS[name])
        np.testing.assert_array_equal(back.events[name], tr.events[name])
    for name in SYSARG_COLUMNS:
        np.testing.assert_array_equal(back.sysargs[name], tr.sysargs[name])
    # Saving again gives the same bytes: the format is deterministic.
    save(back, tmp_path / "u.trace")
    assert (tmp_path / "u.trace").read_bytes() == path.read_bytes()


def test_empty_trace_round_trips(tmp_path):
    tr = Trace({"command": []}, empty_table(EVENT_COLUMNS))
    save(tr, tmp_path / "e.trace")
    assert len(load(tmp_path / "e.trace")) == 0


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.trace"
    save(synthetic(), path)
    return path


def test_truncated_file(good):
    data = good.read_bytes()
    for cut in (5, 20, len(data) // 2, len(data) - 1):
        good.write_bytes(data[:cut])
        with pytest.raises(BadInput, match="truncated|too short"):
            load(good)


def test_corrupt_payload_fails_checksum(good):
    data = bytearray(good.read_bytes())
    data[-40] ^= 0xFF
    good.write_bytes(bytes(data))
    with pytest.raises(BadInput, match="corrupt"):
        load(good)


def test_corrupt_header(good):
    data = bytearray(good.read_bytes())
    data[20] = ord("}")
    good.write_bytes(bytes(data))
    with pytest.raises(BadInput, match="corrupt trace header"):
        load(good)


def test_unknown_version(good):
    data = bytearray(good.read_bytes())
    struct.pack_into("<I", data, 8, FORMAT_VERSION + 1)
    good.write_bytes(bytes(data))
    with pytest.raises(BadInput, match=f"unsupported trace format version {FORMAT_VERSION + 1}"):
        load(good)


def test_not_a_trace(tmp_path):
    p = tmp_path / "x.trace"
    p.write_bytes(b"hello world, this is not a trace file")
    with pytest.raises(BadInput, match="bad magic"):
        load(p)
    with pytest.raises(BadInput, match="cannot read"):
        load(tmp_path / "missing.trace")


def test_trailing_garbage(good):
    good.write_bytes(good.read_bytes() + b"xx")
    with pytest.raises(BadInput, match="trailing"):
        load(good)


def test_header_pointing_out_of_bounds(tmp_path):
    header = json.dumps({"meta": {}, "payload_size": 0, "columns": [
        {"table": "events", "name": "ts", "dtype": "<i8", "rows": 1, "offset": 0, "size": 10, "crc32": 0}]}).encode()
    p = tmp_path / "oob.trace"
    p.write_bytes(struct.pack("<8sII", MAGIC, FORMAT_VERSION, len(header)) + header)
    with pytest.raises(BadInput, match="out of bounds"):
        load(p)


@pytest.mark.parametrize("damage", ["truncate", "version", "flip"])
def test_replay_cli_bad_file_is_one_line(run_cli, good, damage):
    data = bytearray(good.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 3]
    elif damage == "version":
        struct.pack_into("<I", data, 8, 99)
    else:
        data[-10] ^= 0x55
    good.write_bytes(bytes(data))
    res = run_cli("replay", str(good))
    assert res.status == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rseqlab: error: ")


def test_replay_cli_unknown_kernel(run_cli, good):
    res = run_cli("replay", str(good), "--kernels", "5.10")
    assert res.status == 2
    assert "unknown kernel" in res.stderr
