"""Static builds of the guest programs, cached by source hash."""

from __future__ import annotations

import os
import subprocess

import pytest

from rseqlab.errors import BadInput, Unavailable
from rseqlab.vm import guestbuild


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "rseqlab" / "guest"


def _static(path) -> bool:
    # A static executable has no PT_INTERP program header (type 3).
    import struct

    data = path.read_bytes()
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return data[:4] == b"\x7fELF" and 3 not in types


def test_every_program_builds_static_once(cache):
    built = guestbuild.build_all()
    from rseqlab.live.workloads import WORKLOADS

    assert list(built) == ["guestrec", *WORKLOADS] and {"pingpong", "sigstorm", "munmaploop"} <= set(built)
    for name, path in built.items():
        assert path.is_relative_to(cache) and path.name == name and _static(path), name
    mtime = built["guestrec"].stat().st_mtime_ns
    assert guestbuild.build("guestrec") == built["guestrec"]
    assert built["guestrec"].stat().st_mtime_ns == mtime  # cached: not rebuilt
    res = subprocess.run([str(built["guestrec"])], capture_output=True, text=True)
    assert res.returncode == 2 and "usage: guestrec" in res.stderr
    res = subprocess.run([str(built["sigstorm"]), "100"], capture_output=True, text=True)
    assert res.returncode == 0


def test_cache_key_follows_the_source(cache, monkeypatch):
    a = guestbuild.build("guestrec")
    original = guestbuild.guestrec_source()
    monkeypatch.setattr(guestbuild, "guestrec_source", lambda: original + "\n/* changed */\n")
    b = guestbuild.build("guestrec")
    assert a != b and a.parent != b.parent and _static(b)


def test_unknown_program(cache):
    with pytest.raises(BadInput, match="unknown guest program 'nope'; accepted: guestrec, pingpong"):
        guestbuild.build("nope")


def test_missing_compiler_is_an_environment_error(cache):
    with pytest.raises(Unavailable, match="no C compiler"):
        guestbuild.build("guestrec", cc="/nonexistent/cc")


def test_missing_static_libc_is_an_environment_error(cache, tmp_path):
    # A compiler that knows no libc.a (as gcc without libc6-dev answers: the bare name).
    fake = tmp_path / "fakecc"
    fake.write_text("#!/bin/sh\ncase \"$1\" in --version) echo fakecc 1;; -print-file-name=*) echo libc.a;; "
                    "*) echo 'ld: cannot find -lc' >&2; exit 1;; esac\n")
    fake.chmod(0o755)
    with pytest.raises(Unavailable, match="no static C library.*install libc6-dev"):
        guestbuild.build("pingpong", cc=str(fake))
    assert not any(p.name == "pingpong" for p in cache.rglob("*")) if cache.exists() else True
    assert os.access(fake, os.X_OK)


def test_unusable_cache_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    with pytest.raises(BadInput, match="cache directory .*rseqlab/guest"):
        guestbuild.build("guestrec")


def test_guest_recorder_records_the_host_recorders_event_table_in_order():
    """guestrec.c's events[] is record.py's table (main instance) plus the migration event, so a
    guest recording is decoded by the same build_trace; a new event must be added to both."""
    import re
    from pathlib import Path

    from rseqlab.trace.events import EVENTS, MIGRATION_EVENT, recorded_events

    src = (Path(guestbuild.__file__).parent / "guest" / "guestrec.c").read_text()
    table = src[src.index("static struct event events[]"):]
    table = table[: table.index("};")]
    rows = re.findall(r'\{"(\w+)", "(\w+)", ([01]), 0\}', table)
    assert [(s, e) for s, e, _ in rows] == recorded_events()
    required = {(s, e) for s, e, r in rows if r == "1"}
    assert required == {k for k, req in EVENTS.items() if req} | {MIGRATION_EVENT}
