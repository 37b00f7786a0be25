"""The RSEQ ABI constants and layouts (kernel spec §1.1 - §1.3, userspace spec §1)."""

from __future__ import annotations

import pytest

from rseqlab.abi import (
    ABI_BY_RELEASE,
    NR_RSEQ,
    NR_RSEQ_SLICE_YIELD,
    ORIG_RSEQ_SIZE,
    PR_RSEQ_SLICE_EXT_ENABLE,
    PR_RSEQ_SLICE_EXTENSION,
    PR_RSEQ_SLICE_EXTENSION_GET,
    PR_RSEQ_SLICE_EXTENSION_SET,
    RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE,
    RSEQ_CS_FLAG_SLICE_EXT_ENABLED,
    RSEQ_FLAG_SLICE_EXT_DEFAULT_ON,
    RSEQ_SIG,
    TASK_SIZE,
    U32_MASK,
    U64_MASK,
    AuxvType,
    CpuIdSentinel,
    RseqCsFlag,
    RseqFlag,
    StructRseq,
    StructRseqCs,
    as_s32,
    in_rseq_cs,
    slice_ctrl,
    slice_ctrl_fields,
    to_u32,
)
from rseqlab.kernel import PERSONALITIES


# ----------------------------------------------------------------------
# struct rseq (§1.1)
# ----------------------------------------------------------------------
@pytest.mark.parametrize(("field", "name", "offset", "size"), [
    (StructRseq.CPU_ID_START, "cpu_id_start", 0, 4),
    (StructRseq.CPU_ID, "cpu_id", 4, 4),
    (StructRseq.RSEQ_CS, "rseq_cs", 8, 8),
    (StructRseq.FLAGS, "flags", 16, 4),
    (StructRseq.NODE_ID, "node_id", 20, 4),
    (StructRseq.MM_CID, "mm_cid", 24, 4),
])
def test_struct_rseq_field(field, name, offset, size):
    assert (field.name, field.offset, field.size) == (name, offset, size)


def test_struct_rseq_size_and_feature_size():
    assert StructRseq.END == 28
    assert StructRseq.SIZE == 32
    assert StructRseq.ALIGN == 32
    assert ORIG_RSEQ_SIZE == 32


def test_struct_rseq_fields_are_contiguous_and_end_at_feature_size():
    assert [f.name for f in StructRseq.FIELDS] == [
        "cpu_id_start", "cpu_id", "rseq_cs", "flags", "node_id", "mm_cid"]
    pos = 0
    for f in StructRseq.FIELDS:
        assert f.offset == pos, f.name
        assert f.offset % f.size == 0, f.name  # naturally aligned
        pos += f.size
    assert pos == StructRseq.END


# ----------------------------------------------------------------------
# struct rseq_cs (§1.2)
# ----------------------------------------------------------------------
@pytest.mark.parametrize(("field", "name", "offset", "size"), [
    (StructRseqCs.VERSION, "version", 0, 4),
    (StructRseqCs.FLAGS, "flags", 4, 4),
    (StructRseqCs.START_IP, "start_ip", 8, 8),
    (StructRseqCs.POST_COMMIT_OFFSET, "post_commit_offset", 16, 8),
    (StructRseqCs.ABORT_IP, "abort_ip", 24, 8),
])
def test_struct_rseq_cs_field(field, name, offset, size):
    assert (field.name, field.offset, field.size) == (name, offset, size)


def test_struct_rseq_cs_size():
    assert StructRseqCs.SIZE == 32
    assert StructRseqCs.ALIGN == 32
    assert [f.offset for f in StructRseqCs.FIELDS] == [0, 4, 8, 16, 24]
    assert sum(f.size for f in StructRseqCs.FIELDS) == 32


# ----------------------------------------------------------------------
# Flags and constants (§1.3), auxv (§1.1)
# ----------------------------------------------------------------------
def test_registration_flags():
    assert int(RseqFlag.UNREGISTER) == 1
    assert [int(f) for f in RseqFlag] == [1]


def test_cs_flags():
    assert int(RseqCsFlag.NO_RESTART_ON_PREEMPT) == 1
    assert int(RseqCsFlag.NO_RESTART_ON_SIGNAL) == 2
    assert int(RseqCsFlag.NO_RESTART_ON_MIGRATE) == 4


def test_cpu_id_sentinels():
    assert int(CpuIdSentinel.UNINITIALIZED) == -1
    assert int(CpuIdSentinel.REGISTRATION_FAILED) == -2
    assert to_u32(CpuIdSentinel.UNINITIALIZED) == 0xFFFF_FFFF
    assert to_u32(CpuIdSentinel.REGISTRATION_FAILED) == 0xFFFF_FFFE


def test_u32_conversions():
    assert to_u32(-1) == U32_MASK == 0xFFFF_FFFF
    assert to_u32(5) == 5
    assert to_u32(1 << 32) == 0
    assert as_s32(0xFFFF_FFFF) == -1
    assert as_s32(0xFFFF_FFFE) == -2
    assert as_s32(0x8000_0000) == -(1 << 31)
    assert as_s32(0x7FFF_FFFF) == 0x7FFF_FFFF
    assert as_s32(0) == 0
    for v in (-2, -1, 0, 1, 7, -(1 << 31), (1 << 31) - 1):
        assert as_s32(to_u32(v)) == v


def test_syscall_constants():
    assert RSEQ_SIG == 0x53053053
    assert NR_RSEQ == 334
    assert U64_MASK == (1 << 64) - 1
    assert TASK_SIZE == 0x7FFF_FFFF_F000


def test_auxv_types():
    assert int(AuxvType.AT_RSEQ_FEATURE_SIZE) == 27
    assert int(AuxvType.AT_RSEQ_ALIGN) == 28


@pytest.mark.parametrize("release", ["6.18", "6.19"])
def test_per_kernel_abi(release):
    abi = ABI_BY_RELEASE[release]
    assert abi.release == release
    assert (abi.feature_size, abi.align) == (28, 32)
    assert abi.auxv() == {"AT_RSEQ_FEATURE_SIZE": 28, "AT_RSEQ_ALIGN": 32}
    # The personality publishes the same values.
    assert PERSONALITIES[release].abi is abi


def test_known_releases():
    assert sorted(ABI_BY_RELEASE) == ["6.18", "6.19", "7.0", "7.1"]


@pytest.mark.parametrize("release", ["7.0", "7.1"])
def test_7x_abi_has_the_slice_extension_layout(release):
    """3b68df978133 (before 7.0 shipped): feature size 33 (slice_ctrl at 28, __reserved at 32), align 64."""
    abi = ABI_BY_RELEASE[release]
    assert (abi.feature_size, abi.align) == (33, 64)
    assert abi.register_flags == RSEQ_FLAG_SLICE_EXT_DEFAULT_ON == 2
    assert (StructRseq.SLICE_CTRL.offset, StructRseq.SLICE_CTRL.size) == (28, 4)
    assert StructRseq.RESERVED.offset + StructRseq.RESERVED.size == abi.feature_size
    assert abi.align == 1 << (abi.feature_size - 1).bit_length()  # rseq_alloc_align()


def test_slice_extension_constants():
    assert (RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE, RSEQ_CS_FLAG_SLICE_EXT_ENABLED) == (0x10, 0x20)
    assert NR_RSEQ_SLICE_YIELD == 471
    assert (PR_RSEQ_SLICE_EXTENSION, PR_RSEQ_SLICE_EXTENSION_GET, PR_RSEQ_SLICE_EXTENSION_SET,
            PR_RSEQ_SLICE_EXT_ENABLE) == (79, 1, 2, 1)
    assert slice_ctrl(request=1) == 0x1 and slice_ctrl(granted=1) == 0x100
    assert slice_ctrl_fields(0x0100) == (0, 1)


# ----------------------------------------------------------------------
# in_rseq_cs: unsigned 64-bit wrap-around (§1.2)
# ----------------------------------------------------------------------
@pytest.mark.parametrize(("ip", "start", "offset", "inside"), [
    (0x1000, 0x1000, 0x40, True),  # first instruction
    (0x103F, 0x1000, 0x40, True),  # last byte before the commit point
    (0x1040, 0x1000, 0x40, False),  # the post-commit IP itself is outside
    (0x1041, 0x1000, 0x40, False),
    (0x0FFF, 0x1000, 0x40, False),  # just below start: a huge unsigned difference
    (0, 0x1000, 0x40, False),
    (U64_MASK, 0x1000, 0x40, False),
    (0x1000, 0x1000, 1, True),
    (0x1001, 0x1000, 1, False),
    (0x1000, 0x1000, 0, False),  # post_commit_offset 0: never inside
    (0, 0, 0, False),
    (U64_MASK, U64_MASK, 0, False),
    # start near 2**64: the section wraps through 0.
    (U64_MASK - 15, U64_MASK - 15, 32, True),
    (U64_MASK, U64_MASK - 15, 32, True),
    (0, U64_MASK - 15, 32, True),
    (15, U64_MASK - 15, 32, True),
    (16, U64_MASK - 15, 32, False),
    (U64_MASK - 16, U64_MASK - 15, 32, False),
    # An offset of 2**64 - 1 covers everything except start - 1.
    (0, 1, U64_MASK, False),
    (1, 1, U64_MASK, True),
    (U64_MASK, 1, U64_MASK, True),
])
def test_in_rseq_cs(ip, start, offset, inside):
    assert in_rseq_cs(ip, start, offset) is inside


def test_in_rseq_cs_offset_zero_never_inside():
    for start in (0, 1, 0x40_1100, TASK_SIZE, U64_MASK):
        for ip in (start, start - 1, start + 1, 0, U64_MASK):
            assert in_rseq_cs(ip & U64_MASK, start, 0) is False
