"""The port of tools/testing/selftests/rseq/slice_test.c, per kernel."""

from __future__ import annotations

import pytest

from rseqlab.selftests import runner, slice_test

SKIPPING = ["6.18", "6.19", "7.0", "7.0.7", "7.1", "7.0.10", "7.0+slice-off", "7.1+slice-off"]
RUNNING = ["7.0+slice", "7.1+slice", "7.0.10+slice"]


def counts(r) -> dict[str, int]:
    return {line.split()[1].lower(): int(line.split()[2]) for line in r.stdout}


@pytest.mark.parametrize("kernel", SKIPPING)
def test_skips_without_the_extension(kernel):
    """The fixture's prctl fails (EINVAL before 7.0, ENOTSUPP unconfigured or booted off): SKIP."""
    for variant in slice_test.VARIANTS:
        r = slice_test.run(kernel, variant)
        assert r.passed and slice_test.skipped(r)
        assert r.stdout == ["# SKIP Time slice extension not supported"]
        assert not r.counters.get("s_granted")


@pytest.mark.parametrize("kernel", RUNNING)
def test_grants_yields_and_aborts_where_the_extension_is_built_in(kernel):
    runs = {v: slice_test.run(kernel, v) for v in slice_test.VARIANTS}
    for v, r in runs.items():
        assert r.passed and not slice_test.skipped(r), v
        n, c = counts(r), r.counters
        assert n["total"] > 100 and n["raced"] == 0
        # Every grant ends in exactly one way: a yield, a getpid() (aborted), or the timer.
        assert c["s_granted"] == c["s_yielded"] + c["s_aborted"] + c["s_expired"] > 0
        assert (n["yielded"], n["aborted"]) == (c["s_yielded"], c["s_aborted"])
        assert n["scheduled"] >= c["s_expired"]
    short, long_, no_yield = (counts(runs[v]) for v in slice_test.VARIANTS)
    assert short["yielded"] > 0 and short["aborted"] == 0
    assert no_yield["aborted"] > 0 and no_yield["yielded"] == 0
    # 50 us sections outlast the 5 us extension: grants expire and the thread is scheduled.
    assert runs["n50_2_50"].counters["s_expired"] > 0 and long_["scheduled"] > 0


def test_in_the_suite_and_expected_to_pass_everywhere():
    cases = {c.name: c for c in runner.plan(slice_test.NAMES)}
    assert list(cases) == ["slice_ext.n2_2_50.slice_test", "slice_ext.n50_2_50.slice_test",
                           "slice_ext.n2_2_50_no_yield.slice_test"]
    assert set(slice_test.NAMES) <= set(runner.SUITE)
    for kernel in [*SKIPPING, *RUNNING]:
        assert all(c.expected(kernel) is True for c in cases.values())
    assert cases["slice_ext.n2_2_50.slice_test"].expected("6.19:no-cs-check") is None


def test_same_seed_same_output():
    a, b = slice_test.run("7.1+slice", "n2_2_50", seed=5), slice_test.run("7.1+slice", "n2_2_50", seed=5)
    assert (a.stdout, a.counters) == (b.stdout, b.counters)
