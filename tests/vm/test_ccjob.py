"""The guest's parallel compile (vm/ccjob.py): what goes into the guest, checked on the host."""

from __future__ import annotations

import subprocess

import pytest

from rseqlab.errors import BadInput
from rseqlab.vm import ccjob, vmrun


def test_sources_are_deterministic_distinct_and_compile_without_headers(tmp_path):
    assert ccjob.unit_source(3) == ccjob.unit_source(3)
    assert ccjob.unit_source(3) != ccjob.unit_source(4)
    src = tmp_path / "u0.c"
    src.write_text(ccjob.unit_source(0))
    # exactly as the guest compiles it: no include path at all
    res = subprocess.run(["gcc", "-O2", "-nostdinc", "-Werror", "-c", str(src), "-o", str(tmp_path / "u0.o")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    syms = subprocess.run(["nm", str(tmp_path / "u0.o")], capture_output=True, text=True).stdout
    assert syms.count(" T kernel_0_") == 24


def test_run_script_is_valid_sh_and_checks_every_object(tmp_path):
    script = ccjob.run_script(5, 2)
    path = tmp_path / "run"
    path.write_text(script)
    assert subprocess.run(["sh", "-n", str(path)]).returncode == 0
    assert "seq 0 4" in script and "-eq 5" in script and "% 2" in script


def test_guest_command_brings_the_toolchain_and_the_sources():
    argv, programs, files = vmrun.guest_command(["cc-parallel", "3", "2"])
    assert argv == ["/work/cc/run"]
    assert sorted(f for f in files if f.endswith(".c")) == ["work/cc/u0.c", "work/cc/u1.c", "work/cc/u2.c"]
    assert "usr/bin/gcc" in programs and "usr/bin/as" in programs
    assert any(name.endswith("/cc1") for name in programs)
    assert all(p.is_file() for p in programs.values())


@pytest.mark.parametrize("args", [["0"], ["65"], ["4", "5"], ["4", "0"], ["x"], ["1", "1", "1"]])
def test_bad_arguments_are_one_line(args):
    with pytest.raises(BadInput, match="cc-parallel"):
        ccjob.parse_args(args)
