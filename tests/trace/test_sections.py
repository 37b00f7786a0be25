"""A program's rseq critical sections from its ``__rseq_cs`` ELF section (trace/sections.py)."""

from __future__ import annotations

import subprocess

import pytest

from rseqlab.trace.sections import Section, find, read_sections

# One descriptor in __rseq_cs, as the selftests' __RSEQ_ASM_DEFINE_TABLE emits it (version, flags,
# start_ip, post_commit_offset, abort_ip; 32-byte aligned), and a zero-length one that is skipped.
SOURCE = r"""
struct cs { unsigned int version, flags; unsigned long long start_ip, post_commit_offset, abort_ip; };
__attribute__((section("__rseq_cs"), aligned(32), used))
struct cs table[2] = { {0, 0, 0x401234, 0x40, 0x401300}, {0, 0, 0x401400, 0, 0x401500} };
int main(void) { return 0; }
"""


def _build(tmp_path, *flags) -> str:
    src = tmp_path / "p.c"
    src.write_text(SOURCE)
    out = tmp_path / ("p" + "".join(f.strip("-") for f in flags))
    res = subprocess.run(["gcc", "-O1", *flags, str(src), "-o", str(out)], capture_output=True, text=True)
    if res.returncode:
        pytest.fail(res.stderr)
    return str(out)


def test_static_executable_descriptors(tmp_path):
    path = _build(tmp_path, "-static", "-no-pie")
    sections = read_sections(path)
    assert len(sections) == 1  # the zero-length descriptor is not a section
    s = sections[0]
    assert (s.start_ip, s.post_commit_offset, s.abort_ip) == (0x401234, 0x40, 0x401300)
    nm = subprocess.run(["nm", path], capture_output=True, text=True).stdout
    table = int(next(line.split()[0] for line in nm.splitlines() if line.endswith(" table")), 16)
    assert s.desc == table  # the address rseq_cs holds


def test_pie_and_non_elf_give_nothing(tmp_path):
    assert read_sections(_build(tmp_path, "-pie", "-fPIE")) == []  # a load bias the trace lacks
    other = tmp_path / "text"
    other.write_text("not an ELF file")
    assert read_sections(other) == [] and read_sections(tmp_path / "missing") == []


def test_contains_is_the_kernels_unsigned_range_test():
    s = Section(0x1000, 0x401000, 0x40, 0x401100)
    assert s.contains(0x401000) and s.contains(0x40103F)
    assert not s.contains(0x401040) and not s.contains(0x400FFF)
    assert find([s], 0x401010) is s and find([s], 0x500000) is None
