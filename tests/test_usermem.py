"""``AddressSpace``: bytes, page states and fault accounting of simulated user memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rseqlab.abi import U64_MASK
from rseqlab.usermem import PAGE_SIZE, AddressSpace, FaultStats

BASE = 0x7F00_0000_0000


def fresh(pages: int = 1, **kw) -> AddressSpace:
    mm = AddressSpace()
    mm.map(BASE, pages * PAGE_SIZE, **kw)
    return mm


def stats(mm: AddressSpace) -> tuple[int, int, int]:
    return mm.faults.resolved, mm.faults.cow_breaks, mm.faults.failed


# ----------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------
def test_fresh_pages_are_zero():
    mm = fresh()
    assert mm.read(BASE, 8) == 0
    assert mm.read(BASE + PAGE_SIZE - 8, 8) == 0


def test_little_endian_round_trip():
    mm = fresh()
    assert mm.write(BASE + 16, 8, 0x1122_3344_5566_7788) is True
    assert mm.read(BASE + 16, 8) == 0x1122_3344_5566_7788
    # Byte order: least significant byte first.
    assert [mm.read(BASE + 16 + i, 1) for i in range(8)] == [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
    assert mm.read(BASE + 16, 4) == 0x5566_7788
    assert mm.read(BASE + 20, 4) == 0x1122_3344
    assert mm.peek(BASE + 16, 2) == 0x7788
    # A narrower write changes only its own bytes.
    assert mm.write(BASE + 18, 2, 0xABCD) is True
    assert mm.read(BASE + 16, 8) == 0x1122_3344_ABCD_7788
    assert stats(mm) == (0, 0, 0)


@pytest.mark.parametrize(("size", "value", "stored"), [
    (4, -1, 0xFFFF_FFFF),
    (4, -2, 0xFFFF_FFFE),
    (8, -1, U64_MASK),
    (8, -4096, 0xFFFF_FFFF_FFFF_F000),
    (2, -32768, 0x8000),
    (1, -1, 0xFF),
])
def test_negative_values_are_twos_complement(size, value, stored):
    mm = fresh()
    mm.write(BASE + 7, 1, 0x5A)
    mm.write(BASE + 8 + size, 1, 0xA5)
    assert mm.write(BASE + 8, size, value) is True
    assert mm.read(BASE + 8, size) == stored
    # Sign extension stays inside the field: the neighbouring bytes are untouched.
    assert mm.read(BASE + 7, 1) == 0x5A
    assert mm.read(BASE + 8 + size, 1) == 0xA5


def test_value_wider_than_the_field_is_truncated():
    mm = fresh()
    mm.write(BASE + 4, 4, 0x99)
    assert mm.write(BASE, 4, 0x1_2345_6789) is True
    assert mm.read(BASE, 4) == 0x2345_6789
    assert mm.read(BASE + 4, 4) == 0x99


def test_poke_and_peek_bypass_accounting_and_protection():
    mm = fresh(writable=False)
    mm.poke(BASE, 4, 0xCAFE)
    assert mm.peek(BASE, 4) == 0xCAFE
    assert mm.read(BASE, 4) == 0xCAFE
    assert stats(mm) == (0, 0, 0)


# ----------------------------------------------------------------------
# Unmapped and read-only pages: unresolvable faults
# ----------------------------------------------------------------------
@pytest.mark.parametrize("faults_allowed", [True, False])
def test_unmapped_access_fails_and_is_counted(faults_allowed):
    mm = fresh()
    hole = BASE + PAGE_SIZE
    assert mm.is_mapped(hole) is False
    assert mm.read(hole, 4, faults_allowed=faults_allowed) is None
    assert mm.faults.failed == 1
    assert mm.write(hole, 4, 1, faults_allowed=faults_allowed) is False
    assert mm.faults.failed == 2
    assert mm.read(0, 8, faults_allowed=faults_allowed) is None
    assert stats(mm) == (0, 0, 3)


def test_addresses_outside_64_bits_fail():
    mm = fresh()
    assert mm.read(-8, 8) is None
    assert mm.write(U64_MASK - 3, 8, 0) is False
    assert mm.faults.failed == 2


def test_unmap_makes_accesses_fail():
    mm = fresh(2)
    mm.write(BASE + PAGE_SIZE, 4, 7)
    mm.unmap(BASE + PAGE_SIZE, PAGE_SIZE)
    assert mm.is_mapped(BASE + PAGE_SIZE) is False
    assert mm.read(BASE + PAGE_SIZE, 4) is None
    assert mm.read(BASE, 4) == 0
    assert mm.faults.failed == 1


def test_read_only_page_write_fails():
    mm = fresh(writable=False)
    mm.poke(BASE, 4, 0x1234)
    assert mm.read(BASE, 4) == 0x1234
    assert mm.write(BASE, 4, 0x5678, faults_allowed=True) is False
    assert mm.write(BASE, 4, 0x5678, faults_allowed=False) is False
    assert mm.peek(BASE, 4) == 0x1234
    assert stats(mm) == (0, 0, 2)


def test_protect_toggles_writability():
    mm = fresh()
    mm.protect(BASE, PAGE_SIZE, writable=False)
    assert mm.write(BASE, 4, 1) is False
    mm.protect(BASE, PAGE_SIZE, writable=True)
    assert mm.write(BASE, 4, 1) is True
    assert mm.read(BASE, 4) == 1
    assert mm.faults.failed == 1


# ----------------------------------------------------------------------
# Copy-on-write after fork
# ----------------------------------------------------------------------
def test_fork_shares_pages_copy_on_write():
    parent = fresh()
    parent.write(BASE + 8, 8, 0xAAAA_BBBB)
    child = parent.fork()
    assert parent.is_cow(BASE) is True
    assert child.is_cow(BASE) is True
    # Reads are shared and need no fault, even with faults disabled.
    assert child.read(BASE + 8, 8, faults_allowed=False) == 0xAAAA_BBBB
    assert parent.read(BASE + 8, 8, faults_allowed=False) == 0xAAAA_BBBB
    assert stats(child) == stats(parent) == (0, 0, 0)


def test_cow_write_with_faults_disabled_fails():
    parent = fresh()
    parent.write(BASE, 4, 1)
    child = parent.fork()
    assert child.write(BASE, 4, 2, faults_allowed=False) is False
    assert stats(child) == (0, 0, 1)
    assert child.is_cow(BASE) is True
    assert child.read(BASE, 4) == 1
    assert parent.read(BASE, 4) == 1


def test_cow_write_with_faults_enabled_copies():
    parent = fresh()
    parent.write(BASE, 4, 1)
    child = parent.fork()
    assert child.write(BASE, 4, 2, faults_allowed=True) is True
    assert child.read(BASE, 4) == 2
    assert parent.read(BASE, 4) == 1  # the parent still sees the old bytes: a copy
    assert stats(child) == (0, 1, 0)
    assert child.is_cow(BASE) is False
    # Further child writes need no fault.
    assert child.write(BASE, 4, 3, faults_allowed=False) is True
    assert child.faults.cow_breaks == 1
    # The parent is still write-protected; its own write claims the page, now unshared.
    assert parent.is_cow(BASE) is True
    assert parent.write(BASE, 4, 9, faults_allowed=False) is False
    assert parent.write(BASE, 4, 9) is True
    assert stats(parent) == (0, 1, 1)
    assert (parent.read(BASE, 4), child.read(BASE, 4)) == (9, 3)


def test_parent_write_after_fork_does_not_leak_into_child():
    parent = fresh()
    parent.write(BASE, 8, 0x1111)
    child = parent.fork()
    assert parent.write(BASE, 8, 0x2222) is True
    assert parent.faults.cow_breaks == 1
    assert child.read(BASE, 8) == 0x1111
    assert parent.read(BASE, 8) == 0x2222


def test_cow_is_per_page():
    parent = fresh(2)
    child = parent.fork()
    assert child.write(BASE, 4, 5) is True
    assert child.is_cow(BASE) is False
    assert child.is_cow(BASE + PAGE_SIZE) is True
    assert child.faults.cow_breaks == 1


def test_read_only_pages_are_shared_not_cow():
    parent = fresh(writable=False)
    parent.poke(BASE, 4, 0x77)
    child = parent.fork()
    assert child.is_cow(BASE) is False
    assert child.read(BASE, 4, faults_allowed=False) == 0x77
    assert child.write(BASE, 4, 1) is False
    assert child.faults.cow_breaks == 0


def test_poke_into_shared_page_does_not_change_the_other_process():
    parent = fresh()
    parent.write(BASE, 4, 1)
    child = parent.fork()
    child.poke(BASE, 4, 42)
    assert child.peek(BASE, 4) == 42
    assert parent.peek(BASE, 4) == 1


# ----------------------------------------------------------------------
# Evicted (not present) pages: resolvable faults
# ----------------------------------------------------------------------
def test_evicted_page_fails_without_faults_and_resolves_with_them():
    mm = fresh()
    mm.write(BASE, 4, 0x55)
    mm.evict(BASE, PAGE_SIZE)
    assert mm.read(BASE, 4, faults_allowed=False) is None
    assert mm.write(BASE, 4, 1, faults_allowed=False) is False
    assert stats(mm) == (0, 0, 2)
    assert mm.read(BASE, 4, faults_allowed=True) == 0x55  # contents survive eviction
    assert stats(mm) == (1, 0, 2)
    # Present again: no fault needed any more.
    assert mm.write(BASE, 4, 0x66, faults_allowed=False) is True
    assert mm.read(BASE, 4, faults_allowed=False) == 0x66
    assert stats(mm) == (1, 0, 2)


def test_not_present_mapping_needs_a_fault():
    mm = AddressSpace()
    mm.map(BASE, PAGE_SIZE, present=False)
    assert mm.write(BASE, 4, 3, faults_allowed=False) is False
    assert mm.write(BASE, 4, 3, faults_allowed=True) is True
    assert stats(mm) == (1, 0, 1)


def test_evicted_cow_page_write_counts_both_faults():
    parent = fresh()
    child = parent.fork()
    child.evict(BASE, PAGE_SIZE)
    assert child.write(BASE, 4, 8) is True
    assert stats(child) == (1, 1, 0)
    assert parent.read(BASE, 4) == 0


# ----------------------------------------------------------------------
# Injected faults
# ----------------------------------------------------------------------
def test_inject_fault_twice_fails_exactly_twice():
    mm = fresh()
    mm.write(BASE + 64, 4, 0x42)
    mm.inject_fault(BASE + 64, times=2)
    assert mm.read(BASE + 64, 4, faults_allowed=True) is None
    assert mm.write(BASE + 64, 4, 1, faults_allowed=True) is False
    assert mm.faults.failed == 2
    assert mm.read(BASE + 64, 4) == 0x42  # the failed write stored nothing
    assert mm.write(BASE + 64, 4, 1) is True
    assert mm.faults.failed == 2


def test_inject_fault_hits_any_address_of_the_page():
    mm = fresh(2)
    mm.inject_fault(BASE + 100)
    assert mm.read(BASE + PAGE_SIZE, 4) == 0  # other page: unaffected
    assert mm.read(BASE + PAGE_SIZE - 4, 4) is None  # same page, other offset
    assert mm.read(BASE, 4) == 0
    assert mm.faults.failed == 1


def test_inject_fault_default_once():
    mm = fresh()
    mm.inject_fault(BASE)
    assert mm.write(BASE, 8, 1) is False
    assert mm.write(BASE, 8, 1) is True
    assert mm.faults == FaultStats(resolved=0, cow_breaks=0, failed=1)


# ----------------------------------------------------------------------
# Accesses spanning two pages
# ----------------------------------------------------------------------
def test_access_spanning_two_pages():
    mm = fresh(2)
    edge = BASE + PAGE_SIZE - 4
    assert mm.write(edge, 8, 0x1122_3344_5566_7788) is True
    assert mm.read(edge, 8) == 0x1122_3344_5566_7788
    assert mm.peek(edge, 4) == 0x5566_7788  # low half in the first page
    assert mm.peek(BASE + PAGE_SIZE, 4) == 0x1122_3344  # high half in the second
    assert stats(mm) == (0, 0, 0)


def test_spanning_access_into_unmapped_page_fails_whole():
    mm = fresh(1)
    edge = BASE + PAGE_SIZE - 4
    mm.write(edge, 4, 0xAB)
    assert mm.write(edge, 8, U64_MASK) is False
    assert mm.peek(edge, 4) == 0xAB  # no partial write
    assert mm.read(edge, 8) is None
    assert mm.faults.failed == 2


def test_spanning_access_with_second_page_evicted():
    mm = fresh(2)
    edge = BASE + PAGE_SIZE - 2
    mm.evict(BASE + PAGE_SIZE, PAGE_SIZE)
    assert mm.write(edge, 4, 0xDEAD_BEEF, faults_allowed=False) is False
    assert mm.peek(edge, 2) == 0
    assert mm.write(edge, 4, 0xDEAD_BEEF, faults_allowed=True) is True
    assert mm.read(edge, 4) == 0xDEAD_BEEF
    assert stats(mm) == (1, 0, 1)


def test_spanning_access_with_second_page_read_only():
    mm = fresh(1)
    mm.map(BASE + PAGE_SIZE, PAGE_SIZE, writable=False)
    edge = BASE + PAGE_SIZE - 4
    assert mm.write(edge, 8, 1) is False
    assert mm.peek(edge, 4) == 0
    assert mm.read(edge, 8) == 0
    assert mm.faults.failed == 1


def test_spanning_access_with_fault_injected_on_second_page():
    mm = fresh(2)
    mm.inject_fault(BASE + PAGE_SIZE)
    edge = BASE + PAGE_SIZE - 4
    assert mm.read(edge, 8) is None
    assert mm.read(edge, 8) == 0
    assert mm.faults.failed == 1


def test_spanning_cow_write_breaks_both_pages():
    parent = fresh(2)
    child = parent.fork()
    edge = BASE + PAGE_SIZE - 4
    assert child.write(edge, 8, U64_MASK) is True
    assert child.faults.cow_breaks == 2
    assert parent.read(edge, 8) == 0


# ----------------------------------------------------------------------
# Programming errors are exceptions, not user faults
# ----------------------------------------------------------------------
def test_mapping_an_already_mapped_page_raises():
    mm = fresh()
    with pytest.raises(ValueError, match="already mapped"):
        mm.map(BASE, PAGE_SIZE)
    with pytest.raises(ValueError, match="already mapped"):
        mm.map(BASE + 0x800, 16)  # any overlap with a mapped page
    assert mm.faults.failed == 0


def test_peek_of_unmapped_page_raises():
    mm = fresh()
    with pytest.raises(ValueError, match="not mapped"):
        mm.peek(BASE + PAGE_SIZE, 4)
    with pytest.raises(ValueError, match="not mapped"):
        mm.poke(BASE + PAGE_SIZE, 4, 0)
    assert mm.faults.failed == 0


# ----------------------------------------------------------------------
# Entries made on first use behave exactly like entries made at map time
# ----------------------------------------------------------------------
def test_unmap_in_the_middle_of_a_mapping_keeps_both_ends():
    mm = fresh(4)
    mm.unmap(BASE + PAGE_SIZE, 2 * PAGE_SIZE)
    assert [mm.is_mapped(BASE + i * PAGE_SIZE) for i in range(4)] == [True, False, False, True]
    assert mm.read(BASE + 3 * PAGE_SIZE, 4) == 0
    mm.map(BASE + PAGE_SIZE, PAGE_SIZE)  # the hole can be mapped again, its neighbours cannot
    with pytest.raises(ValueError, match="already mapped"):
        mm.map(BASE + 3 * PAGE_SIZE, PAGE_SIZE)


_OPS = st.lists(st.tuples(st.sampled_from(["map", "unmap", "protect", "evict", "read", "write", "fork"]),
                          st.integers(0, 7), st.integers(1, 3), st.booleans(), st.booleans()),
                max_size=40)


@given(_OPS)
@settings(max_examples=200, derandomize=True)
def test_lazy_entries_equal_eager_entries(ops):
    """Every operation on an address space gives the same result whether its page table
    entries were made at map time (``populate()`` after each map) or on first use."""
    lazy, eager = AddressSpace(), AddressSpace()
    for op, page, pages, flag, other in ops:
        addr, length = BASE + page * PAGE_SIZE, pages * PAGE_SIZE
        outcomes = []
        for mm in (lazy, eager):
            try:
                if op == "map":
                    mm.map(addr, length, writable=flag, present=other)
                    if mm is eager:
                        mm.populate()
                    out = None
                elif op == "unmap":
                    out = mm.unmap(addr, length)
                elif op == "protect":
                    out = mm.protect(addr, length, writable=flag)
                elif op == "evict":
                    out = mm.evict(addr, length)
                elif op == "read":
                    out = mm.read(addr + PAGE_SIZE - 4, 8, faults_allowed=flag)
                elif op == "write":
                    out = mm.write(addr + 4, 8, page * 0x0101 + pages, faults_allowed=flag)
                else:
                    child = mm.fork()
                    out = child.read(addr, 4), child.write(addr, 4, 9), child.faults
            except ValueError as e:
                out = str(e)
            outcomes.append((out, mm.faults, [(mm.is_mapped(BASE + i * PAGE_SIZE), mm.is_cow(BASE + i * PAGE_SIZE))
                                              for i in range(10)], [(p, bytes(b)) for p, b in mm.writable_pages()]))
        assert outcomes[0] == outcomes[1], (op, page, pages, flag, other)
        # What check hashes: the writable pages' bytes, without making entries, as populate() has them.
        assert outcomes[0][3] == [(p, bytes(e.page.view())) for p, e in sorted(eager.populate().items()) if e.writable]
