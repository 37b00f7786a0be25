"""The trace file format: round trip, and one clear error for every kind of bad file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from rseqlab.errors import BadInput
from rseqlab.trace.format import (EVENT_COLUMNS, FORMAT_VERSION, MAGIC, SYSARG_COLUMNS, Kind, Trace,
                                  empty_table, file_version, load, save)


def _kinds_without_sysargs(rng, n: int) -> np.ndarray:
    """Random event kinds, except syscall entries: their ``b`` is a row in sysargs, which the
    loader checks; these columns are random values to exercise the encodings."""
    kinds = np.array([k for k in Kind if k != Kind.SYS_ENTER], np.uint8)
    return rng.choice(kinds, n).astype(np.uint8)


def synthetic(n: int = 500, seed: int = 1) -> Trace:
    rng = np.random.default_rng(seed)
    ev = empty_table(EVENT_COLUMNS, n)
    ev["ts"] = np.sort(rng.integers(0, 10**9, n))
    ev["cpu"] = rng.integers(0, 2, n).astype(np.int16)
    ev["kind"] = _kinds_without_sysargs(rng, n)
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
    res = run_cli("replay", str(good), "-k", "5.10")
    assert res.status == 2
    assert "unknown kernel" in res.stderr


# ----------------------------------------------------------------------
# Version 2 (per-column encodings) and version 1 (still read)
# ----------------------------------------------------------------------
def _columns(path):
    data = path.read_bytes()
    _, version, hdr_len = struct.unpack_from("<8sII", data)
    return version, {(c["table"], c["name"]): c for c in json.loads(data[16:16 + hdr_len])["columns"]}


def _same(a: Trace, b: Trace) -> None:
    assert a.meta == b.meta
    for table, spec in (("events", EVENT_COLUMNS), ("sysargs", SYSARG_COLUMNS)):
        for name, dtype in spec.items():
            got, want = getattr(b, table)[name], getattr(a, table)[name]
            assert got.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(got, want)
            assert got.flags.writeable


def recording_like(n: int = 5000, seed: int = 3) -> Trace:
    """Columns shaped like a real recording: each v2 encoding is used."""
    rng = np.random.default_rng(seed)
    ev = empty_table(EVENT_COLUMNS, n)
    ev["ts"] = 11_000 + np.cumsum(rng.integers(0, 70_000, n))  # delta
    ev["cpu"] = rng.integers(0, 2, n).astype(np.int16)  # offset u1
    ev["kind"] = _kinds_without_sysargs(rng, n)  # raw (already one byte)
    ev["pid"] = rng.integers(19_973, 19_976, n).astype(np.int32)  # offset u1
    ev["a"] = rng.integers(-3, 20_000, n)  # offset u2, negative base
    ev["b"] = rng.integers(-2, 2**47, n)  # raw
    ev["c"] = np.full(n, -7)  # const
    # d stays all zero: const
    sa = empty_table(SYSARG_COLUMNS, 4)
    sa["event"] = np.array([3, 10, 11, 400], np.uint32)
    sa["arg3"] = np.array([2, 2**64 - 1, 0, 2**63], np.uint64)  # beyond int64: raw
    sa["arg0"] = np.array([2**63 - 1, 2**63 - 5, 2**63 - 2, 2**63 - 1], np.uint64)  # offset near the top
    return Trace({"command": ["x"], "cpus": 2}, ev, sa)


def test_v2_encodings_round_trip_exactly(tmp_path):
    tr = recording_like()
    path = tmp_path / "v2.trace"
    save(tr, path)
    version, cols = _columns(path)
    assert version == FORMAT_VERSION == 2
    enc = {k[1]: c["encoding"] for k, c in cols.items() if k[0] == "events"}
    assert enc == {"ts": "delta", "cpu": "offset", "kind": "raw", "pid": "offset", "a": "offset",
                   "b": "raw", "c": "const", "d": "const"}
    assert cols[("sysargs", "arg3")]["encoding"] == "raw"
    assert cols[("sysargs", "arg0")]["encoding"] == "offset"
    back = load(path)
    _same(tr, back)
    save(back, tmp_path / "again.trace")
    assert (tmp_path / "again.trace").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("seed", range(4))
def test_v2_random_columns_round_trip(tmp_path, seed):
    tr = synthetic(300, seed)
    rng = np.random.default_rng(seed)
    tr.events["a"] = rng.integers(-5, 5, 300)
    tr.events["b"] = np.sort(rng.integers(-(2**40), 2**40, 300))
    save(tr, tmp_path / "r.trace")
    _same(tr, load(tmp_path / "r.trace"))


def test_version_1_files_are_still_read(tmp_path):
    tr = recording_like(2000)
    v1 = tmp_path / "v1.trace"
    save(tr, v1, version=1)
    version, cols = _columns(v1)
    assert version == 1 and not any("encoding" in c for c in cols.values())
    _same(tr, load(v1))
    # converting a v1 file gives the v2 file
    save(load(v1), tmp_path / "conv.trace")
    save(tr, tmp_path / "direct.trace")
    assert (tmp_path / "conv.trace").read_bytes() == (tmp_path / "direct.trace").read_bytes()
    assert file_version(v1) == 1 and file_version(tmp_path / "direct.trace") == 2


def test_version_1_damage_is_still_reported(tmp_path):
    p = tmp_path / "v1.trace"
    save(synthetic(), p, version=1)
    data = bytearray(p.read_bytes())
    data[-40] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(BadInput, match="corrupt"):
        load(p)


def test_v2_damaged_encoded_column(tmp_path):
    p = tmp_path / "v2.trace"
    save(recording_like(), p)
    _, cols = _columns(p)
    ts = cols[("events", "ts")]
    data = bytearray(p.read_bytes())
    start = len(data) - sum(c["size"] for c in cols.values())
    data[start + ts["offset"] + ts["size"] // 2] ^= 0x41
    p.write_bytes(bytes(data))
    with pytest.raises(BadInput, match="corrupt"):
        load(p)


def test_v2_unknown_encoding(tmp_path):
    header = json.dumps({"meta": {}, "payload_size": 0, "columns": [
        {"table": "events", "name": "c", "dtype": "<i8", "rows": 1, "offset": 0, "size": 0, "crc32": 0,
         "encoding": "zigzag", "base": 0, "stored": "<i8"}]}).encode()
    p = tmp_path / "enc.trace"
    p.write_bytes(struct.pack("<8sII", MAGIC, 2, len(header)) + header)
    with pytest.raises(BadInput, match="unknown encoding"):
        load(p)


def test_cannot_write_unknown_version(tmp_path):
    with pytest.raises(ValueError):
        save(synthetic(), tmp_path / "x.trace", version=3)


# --- Hostile inputs (issue 17): every one a one-line BadInput, nothing read that need not be ---

def _with_header(tr: Trace, tmp_path, edit) -> "Path":
    """``tr`` saved, then its JSON header rewritten by ``edit(header_text) -> text``."""
    p = tmp_path / "h.trace"
    save(tr, p)
    data = p.read_bytes()
    _, version, hdr_len = struct.unpack_from("<8sII", data)
    header = edit(data[16:16 + hdr_len].decode()).encode()
    p.write_bytes(struct.pack("<8sII", MAGIC, version, len(header)) + header + data[16 + hdr_len:])
    return p


def test_devices_fifos_and_directories_are_refused_without_reading(tmp_path):
    import os

    with pytest.raises(BadInput, match="not a regular file"):
        load("/dev/zero")  # would read forever
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="not a regular file"):
        load(fifo)  # would block in open() without a writer
    with pytest.raises(BadInput, match="not a regular file"):
        load(tmp_path)


def test_magic_is_checked_before_the_rest_is_read(tmp_path, monkeypatch):
    import os

    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (1 << 20))
    reads = []
    real_fdopen = os.fdopen

    class Counting:
        def __init__(self, f):
            self.f = f

        def read(self, *a):
            reads.append(a)
            return self.f.read(*a)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: Counting(real_fdopen(*a, **k)))
    with pytest.raises(BadInput, match="bad magic"):
        load(big)
    assert reads == [(16,)]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_numbers_in_the_header_are_corrupt(tmp_path, constant):
    p = _with_header(synthetic(20), tmp_path, lambda h: h.replace('"duration_ns": 0', f'"duration_ns": {constant}')
                     if '"duration_ns"' in h else h.replace('"meta": {', f'"meta": {{"duration_ns": {constant}, ', 1))
    with pytest.raises(BadInput, match="corrupt trace header"):
        load(p)


def test_deeply_nested_header_is_corrupt_not_a_recursion_error(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    p = _with_header(synthetic(20), tmp_path, lambda h: h.replace('"meta": {', f'"meta": {{"x": {deep}, ', 1))
    with pytest.raises(BadInput, match="corrupt trace header"):
        load(p)


@pytest.mark.parametrize("meta, problem", [
    ([], "not a JSON object"),
    ({"cpus": "2"}, "cpus must be an integer"),
    ({"cpus": 0}, "cpus must be an integer"),
    ({"cpus": 10**30}, "cpus must be an integer"),
    ({"cpus": 2, "topology": {"node_of_cpu": [0, "x"]}}, "topology.node_of_cpu"),
    ({"cpus": 2, "kernel": {"hz": 0}}, "kernel.hz"),
    ({"cpus": 2, "kernel": {"hz": [250]}}, "kernel.hz"),
    ({"cpus": 2, "kernel": "6.18"}, "kernel must be an object"),
    ({"cpus": 2, "root": {"pid": -1}}, "root.pid"),
    ({"cpus": 2, "root": {"rseq_len": {"a": 1}}}, "root.rseq_len"),
    ({"cpus": 2, "tasks": {"100": ["make"]}}, "tasks must map"),
    ({"cpus": 2, "lost": {"total": -3}}, "lost.total"),
    ({"cpus": 2, "duration_ns": 1e300}, "duration_ns"),
    ({"cpus": 2, "command": "true"}, "command must be a list"),
])
def test_metadata_of_the_wrong_type_is_named(tmp_path, meta, problem):
    tr = synthetic(20)
    tr.meta = meta
    p = tmp_path / "m.trace"
    save(tr, p)
    with pytest.raises(BadInput, match=f"corrupt trace metadata \\({problem}"):
        load(p)


def test_unknown_metadata_keys_are_kept(tmp_path):
    tr = synthetic(20)
    tr.meta = dict(tr.meta, guest={"release": "7.1.8", "stats": {"exit": 3}})
    save(tr, tmp_path / "g.trace")
    assert load(tmp_path / "g.trace").meta["guest"]["stats"] == {"exit": 3}


def test_event_on_an_undeclared_cpu(tmp_path):
    tr = synthetic(50)
    tr.events["cpu"][7] = 2  # the metadata declares 2 CPUs: 0 and 1
    save(tr, tmp_path / "c.trace")
    with pytest.raises(BadInput, match="CPU the metadata does not declare"):
        load(tmp_path / "c.trace")


def test_syscall_entry_pointing_past_the_sysargs_table(tmp_path):
    tr = synthetic(50)
    tr.events["kind"][5] = Kind.SYS_ENTER
    tr.events["b"][5] = len(tr.sysargs["event"])  # one past the last row
    save(tr, tmp_path / "s.trace")
    with pytest.raises(BadInput, match="syscall entry points past the sysargs"):
        load(tmp_path / "s.trace")
    tr.events["b"][5] = -1  # -1: no arguments kept
    save(tr, tmp_path / "ok.trace")
    load(tmp_path / "ok.trace")


def test_overhead_has_no_share_for_a_command_that_used_almost_no_cpu():
    """`record -- true`: a percentage of ~0 CPU time is meaningless (it was printed as ~10^7 %)."""
    from rseqlab.trace.build import estimate_overhead

    tr = synthetic(20)
    tr.meta["recorder"] = {"reader_cpu_s": 0.0001, "workload_cpu_s": 0.001}
    tr.meta["duration_ns"] = 3_000_000
    assert estimate_overhead(tr)["estimated_pct"] is None
    tr.meta["recorder"]["workload_cpu_s"] = 2.0
    assert 0 < estimate_overhead(tr)["estimated_pct"] < 1


def test_replay_and_validate_say_how_much_was_lost(run_cli, tmp_path):
    """A lossy or interrupted recording is never reported as if it were whole (issue 17)."""
    from pathlib import Path

    from rseqlab.trace.format import load, save

    src = sorted((Path(__file__).resolve().parents[1] / "data").glob("*.trace"))[0]
    trace = load(src)
    trace.meta["lost"] = dict(trace.meta.get("lost") or {}, total=1234)
    trace.meta["incomplete"] = {"reason": "interrupted by SIGINT"}
    path = tmp_path / "lossy.trace"
    save(trace, path)
    res = run_cli("replay", str(path), "-k", "6.19")
    assert res.status == 0, res.stderr
    assert "warning: the recording lost 1,234 events" in res.stdout
    assert "warning: the recording is incomplete (interrupted by SIGINT)" in res.stdout
    data = run_cli("replay", str(path), "-k", "6.19", "--json").json
    assert data["trace"]["lost"] == 1234 and data["trace"]["incomplete"] == "interrupted by SIGINT"


def test_replay_without_a_file_reads_rseqlab_trace(run_cli, tmp_path, monkeypatch):
    """``rseqlab record`` writes rseqlab.trace by default; ``rseqlab replay`` reads it by default."""
    import shutil

    src = Path(__file__).resolve().parents[1] / "data" / "guest-7.1.8-stats-sigstorm.trace"
    monkeypatch.chdir(tmp_path)
    missing = run_cli("replay", "-k", "7.1")
    assert missing.status == 2 and "rseqlab.trace" in missing.stderr
    shutil.copy(src, tmp_path / "rseqlab.trace")
    assert run_cli("replay", "-k", "7.1", "--json").stdout == run_cli("replay", str(src), "-k", "7.1", "--json").stdout
