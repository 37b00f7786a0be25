"""param_test port: the real option parser, every test type's final assertion, injection, mutation."""

from __future__ import annotations

import pytest

from rseqlab.selftests import param_test as PT
from rseqlab.selftests.harness import MachineSpec

KERNELS = ["6.18", "6.19"]


def run(cmd: str, kernel: str, build: str = "param_test", seed: int = 0):
    return PT.run(cmd.split(), kernel, build=build, machine=MachineSpec(cpus=2), seed=seed)


# ----------------------------------------------------------------------
# The option parser
# ----------------------------------------------------------------------
def test_parser_reads_every_option():
    o = PT.parse_args("-T m -r 7 -t 3 -1 5 -9 -1 -m 2 -y -k -s 4 -d -D 3 -M -L -v".split())
    assert (o.test, o.reps, o.threads, o.loops, o.modulo) == ("m", 7, 3, {1: 5, 9: -1}, 2)
    assert o.yield_ and o.signal and o.sleep_ms == 4 and o.disable_rseq and o.disable_mod == 3
    assert o.release and o.legacy and o.verbose


def test_parser_skips_words_without_dash_and_reads_only_the_second_character():
    o = PT.parse_args(["junk", "-Tlist", "l", "-rx", "12"])
    assert o.test == "l" and o.reps == 12
    # "-Tl" is still case 'T', whose value is the next word: "-x" is no test.
    with pytest.raises(PT.ParamTestUsage):
        PT.parse_args(["-Tl", "-x"])


@pytest.mark.parametrize("argv, reason", [
    (["-T", "x"], "unknown test"),
    (["-r", "-5"], "must be >= 0"),
    (["-t"], "needs an argument"),
    (["-c"], "unknown option"),  # librseq's -c is not the kernel's
    (["-O"], "unknown option"),  # the stale help text's -O does not exist
    (["-"], "unknown option"),
])
def test_parser_usage_errors(argv, reason):
    with pytest.raises(PT.ParamTestUsage) as err:
        PT.parse_args(argv)
    assert reason in str(err.value)
    assert err.value.exit_status == 255
    assert err.value.usage.startswith("Usage : param_test <OPTIONS>\nOPTIONS:\n")
    assert "[-L] Register rseq in legacy" in err.value.usage and "[-O]" not in err.value.usage


def test_help_is_not_an_error():
    r = PT.run(["-h"], "6.19")
    assert r.passed and r.exit_status == 0 and r.stdout[0] == "Usage : param_test <OPTIONS>"


def test_atol_semantics():
    assert PT.parse_args(["-r", "12abc"]).reps == 12
    assert PT.parse_args(["-r", "abc"]).reps == 0


# ----------------------------------------------------------------------
# Final assertions
# ----------------------------------------------------------------------
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("test", list("slbmir"))
@pytest.mark.parametrize("build", ["param_test", "param_test_mm_cid_compare_twice"])
def test_every_test_type_passes(kernel, test, build):
    reps = 20 if test == "m" else 40
    r = run(f"-T {test} -r {reps} -t 6", kernel, build)
    assert r.passed, r.detail
    assert r.counters["threads"] >= 7


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("test, point", [("s", 3), ("i", 3), ("l", 4), ("b", 5), ("m", 4), ("r", 3)])
def test_loop_injection_inside_sections_aborts_and_still_passes(kernel, test, point):
    reps = {"m": 150, "s": 400, "i": 400}.get(test, 150)
    r = run(f"-T {test} -r {reps} -t 12 -{point} 10000", kernel, "param_test_compare_twice")
    assert r.passed, r.detail
    assert r.counters["nr_abort"] > 0 and r.counters["fixup"] > 0, r.counters


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("how", ["-y -L", "-k", "-s 1"])
def test_blocking_injection_passes(kernel, how):
    r = run(f"-T l -r 100 -t 12 -9 -1 -m 1 {how}", kernel)
    assert r.passed, r.detail
    if how == "-k":
        assert r.counters["signals_delivered"] == 12 * 100 * 2  # pop and push both pass point 9
    else:
        assert r.counters["nr_abort"] > 0  # the CPU changed between snapshot and section
    if how == "-s 1":
        assert r.counters["sim_us"] > 100 * 1000  # 100 sleeps of 1 ms per thread


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("how", ["-y -L", "-k"])
def test_blocking_injection_with_membarrier_sees_kernel_fixups(kernel, how):
    """Blocking injection acts before arming; the kernel aborts come from the manager's
    broadcast membarrier IPIs (mm_cid build) landing in the workers' sections."""
    r = run(f"-T r -r 300 -t 12 -9 -1 -m 1 {how}", kernel, "param_test_mm_cid")
    assert r.passed, r.detail
    assert r.counters["nr_abort"] > 0 and r.counters["fixup"] > 0, r.counters


def test_verbose_lines():
    r = run("-T i -r 20 -t 2 -v", "6.19")
    assert r.stdout[0] == "Signal handler set for SIGUSR1" and r.stdout[1] == "counter increment"
    assert any(line.endswith(": count 2") for line in r.stdout)
    assert sum("number of rseq abort" in line for line in r.stdout) == 2


def test_progress_division_by_zero_with_fewer_than_ten_reps():
    """``i % (reps / 10)`` is evaluated even without -v: the real test dies of SIGFPE."""
    r = run("-T i -r 5 -t 1", "6.19")
    assert not r.passed and "SIGFPE" in r.detail


def test_unregistered_threads_livelock_is_reported():
    r = run("-T i -r 20 -t 2 -d", "6.19")
    assert not r.passed and "livelock" in r.detail


def test_nolibc_build_refuses_a_glibc_owned_registration():
    from rseqlab.selftests.harness import run_program
    from rseqlab.userprog.libc import Glibc

    prog = PT.ParamTest(PT.BUILDS["param_test"], PT.parse_args("-T i -r 10 -t 1".split()), 2)
    r = run_program("6.19", prog.main, machine=MachineSpec(), glibc=Glibc("2.41", rseq_tunable=True))
    assert not r.passed and r.exit_status == 255 and r.detail == "exit status 255"


# ----------------------------------------------------------------------
# Mutation check: 6.19 without the critical-section check in its fast path
# ----------------------------------------------------------------------
@pytest.mark.parametrize("test, point", [("l", 4), ("b", 4), ("b", 5), ("m", 4)])
@pytest.mark.parametrize("build", ["param_test", "param_test_mm_cid"])
def test_missing_cs_check_loses_or_duplicates_updates(test, point, build):
    cmd = f"-T {test} -r {150 if test == 'm' else 200} -t 12 -{point} 10000"
    good = run(cmd, "6.19", build, seed=3)
    bad = run(cmd, "6.19:no-cs-check", build, seed=3)
    assert good.passed, good.detail
    assert not bad.passed
    assert bad.detail.startswith("Assertion `sum == expected_sum' failed")
    assert bad.counters["fixup"] == 0


@pytest.mark.parametrize("test", ["s", "i"])
def test_missing_cs_check_caught_by_compare_twice_for_spinlock_and_counter(test):
    """On x86 the spinlock and counter commits cannot go stale on one CPU (docs/selftests.md): their
    compare-twice builds catch the missing abort as rseq_bug()."""
    cmd = f"-T {test} -r 400 -t 12 -3 10000"
    assert run(cmd, "6.19", "param_test_compare_twice", seed=3).passed
    bad = run(cmd, "6.19:no-cs-check", "param_test_compare_twice", seed=3)
    assert not bad.passed and bad.detail.startswith("rseq_bug():")


def test_same_seed_same_run_different_seed_different_run():
    a, b = run("-T l -r 200 -t 12 -4 10000", "6.19", seed=1), run("-T l -r 200 -t 12 -4 10000", "6.19", seed=1)
    assert a.counters == b.counters
    others = [run("-T l -r 200 -t 12 -4 10000", "6.19", seed=s).counters for s in (2, 3, 4)]
    assert any(c != a.counters for c in others)
