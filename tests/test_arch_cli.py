"""``--arch`` on every command that takes a kernel; one-line errors; the regression from the CLI."""

from __future__ import annotations

import pytest

from rseqlab.trace.format import save

COMMANDS_WITH_A_KERNEL = ("explain", "compare", "selftest", "check", "replay", "validate")


def _one_line_error(r, text: str) -> None:
    assert r.status == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rseqlab: error: ") and text in lines[0], r.stderr


@pytest.mark.parametrize("command", COMMANDS_WITH_A_KERNEL)
def test_every_kernel_command_has_arch(run_cli, command):
    r = run_cli(command, "--help")
    assert r.status == 0 and "--arch" in r.stdout


@pytest.mark.parametrize("args", [
    ("explain", "preempt-in-cs", "-k", "6.19"),
    ("explain", "--list"),
    ("compare", "-w", "pingpong", "-k", "6.19"),
    ("selftest", "-t", "basic_test", "-k", "6.19"),
    ("check", "percpu-counter", "-k", "6.19"),
    ("check", "--list-kernels"),
    ("replay", "missing.trace"),
    ("validate", "--arch", "sparc", "--", "true"),
])
def test_invalid_arch_is_one_line(run_cli, args):
    # validate passes everything after "--" to the command: its --arch goes before it.
    r = run_cli(*args) if "--arch" in args else run_cli(*args, "--arch", "sparc")
    _one_line_error(r, "unknown architecture 'sparc'; accepted: x86_64, arm64")


def test_explain_on_arm64(run_cli):
    r = run_cli("explain", "preempt-in-cs", "-k", "6.19", "-k", "7.1", "--arch", "arm64", "--json")
    assert r.status == 0, r.stderr
    by = {d["kernel"]: d for d in r.json["results"]}
    assert set(by) == {"6.19@arm64", "7.1@arm64"}
    assert by["6.19@arm64"]["ip_is_abort"] is False and by["7.1@arm64"]["ip_is_abort"] is True
    assert "arm64_enter_from_user_mode()" in by["7.1@arm64"]["work"]
    # x86_64 is the default and keeps its plain names.
    x86 = run_cli("explain", "preempt-in-cs", "-k", "6.19", "--json")
    assert x86.json["kernel"] == "6.19" and x86.json["ip_is_abort"] is True
    assert run_cli("explain", "preempt-in-cs", "-k", "6.19", "--arch", "x86_64", "--json").stdout == x86.stdout


def test_arch_conflicting_with_the_kernel_name(run_cli):
    r = run_cli("check", "percpu-counter", "-k", "6.19@arm64", "--arch", "x86_64")
    _one_line_error(r, "names architecture arm64, but --arch is x86_64")


def test_check_finds_the_lost_update_on_arm64_6_19(run_cli):
    bad = run_cli("check", "percpu-counter", "-k", "6.19", "--arch", "arm64", "--json")
    assert bad.status == 1, bad.stderr
    assert bad.json["kernel"] == "6.19@arm64" and bad.json["violations"] == 2
    assert bad.json["counterexample"]["violation"].startswith("sum(counter) = 1")
    for kernel in ("7.1", "6.18"):
        ok = run_cli("check", "percpu-counter", "-k", kernel, "--arch", "arm64", "--json")
        assert ok.status == 0 and ok.json["violations"] == 0, kernel
    assert run_cli("check", "percpu-counter", "-k", "6.19", "--json").json["violations"] == 0


def test_compare_on_arm64(run_cli):
    r = run_cli("compare", "-w", "pingpong", "-k", "6.19,7.1", "--arch", "arm64", "--json")
    assert r.status == 0, r.stderr
    ks = r.json["kernels"]
    assert set(ks) == {"6.19@arm64", "7.1@arm64"}
    # No GENERIC_ENTRY on arm64: no fast path, ever.
    assert ks["6.19@arm64"]["fastpath"] == ks["7.1@arm64"]["fastpath"] == 0
    assert ks["7.1@arm64"]["slowpath"] > 0


def test_selftest_shows_the_regression(run_cli):
    cmd = "param_test -T l -r 200 -t 12 -4 10000"
    r = run_cli("selftest", "-t", cmd, "-k", "6.19", "-k", "7.1", "--arch", "arm64", "--json")
    assert r.status == 0, r.stderr  # the regression kernel is reported, not judged
    by = {d["kernel"]: d for d in r.json["results"]}
    assert by["6.19@arm64"]["passed"] is False and "sum" in by["6.19@arm64"]["detail"]
    assert by["6.19@arm64"]["counters"]["nr_abort"] == 0
    assert by["7.1@arm64"]["passed"] is True and by["7.1@arm64"]["counters"]["fixup"] > 0
    text = run_cli("selftest", "-t", cmd, "-k", "6.19", "--arch", "arm64")
    assert "FAIL (regression)" in text.stdout and "6.19@arm64: 1 run(s) failed" in text.stdout
    # Same seed on x86_64 6.19: the section is aborted and the list is intact.
    x86 = run_cli("selftest", "-t", cmd, "-k", "6.19", "--json")
    assert x86.json["results"][0]["passed"] is True and x86.json["results"][0]["counters"]["fixup"] > 0


def test_arm64_default_suite_adds_the_injection_runs():
    from rseqlab.selftests import runner

    plain = [c.name for c in runner.plan(None)]
    arm = [c.name for c in runner.plan(None, arm64=True)]
    extra = runner.arm64_injection_runs(2)
    assert len(extra) == 8 and all(name in arm for name in extra) and not set(extra) & set(plain)
    assert [n for n in arm if n not in extra] == plain
    # An explicit test list is left alone.
    assert [c.name for c in runner.plan(["basic_test"], arm64=True)] == ["basic_test"]


def test_replay_on_arm64(run_cli, tmp_path):
    from tests.trace.test_replay import started

    b = started()
    for i in range(12):
        b.syscall(0, block=i % 3 == 0)
    b.ev(4, 100, 0, 1)  # a migration (Kind.MIGRATE) from CPU 0 to 1
    path = tmp_path / "r.trace"
    save(b.trace(), path)
    r = run_cli("replay", str(path), "-k", "6.19,7.1", "--arch", "arm64", "--json")
    assert r.status == 0, r.stderr
    assert set(r.json["kernels"]) == {"6.19@arm64", "7.1@arm64"}
    assert all(k["fastpath"] == 0 for k in r.json["kernels"].values())
    # A recording made on another machine is refused with one line.
    tr = b.trace()
    tr.meta["kernel"]["machine"] = "aarch64"
    save(tr, tmp_path / "a.trace")
    _one_line_error(run_cli("replay", str(tmp_path / "a.trace")), "replay reads x86_64 recordings only")


def test_validate_arch_must_be_the_live_machine(run_cli):
    import platform

    other = "arm64" if platform.machine() == "x86_64" else "x86_64"
    r = run_cli("validate", "--arch", other, "--", "true")
    _one_line_error(r, f"validate --arch {other}: the live kernel runs on {platform.machine()}")
