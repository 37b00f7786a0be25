"""Recording on the live kernel: clean-up on every exit path, bad input, validation figures."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rseqlab.live.workloads import build, compile_tree
from rseqlab.trace.format import load

from .conftest import tracefs_state


def _wait_for_instance(live_tracefs, proc, deadline_s: float = 20):
    """The recorder's main instance (``rseqlab-<pid>-<token>``) once it is tracing."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for inst in (live_tracefs / "instances").glob(f"rseqlab-{proc.pid}-*"):
            if inst.name.endswith("-mig"):
                continue
            try:  # tracing_on is switched on last, just before the workload is released
                if (inst / "tracing_on").read_text().strip() == "1" and (inst / "set_event_pid").read_text().strip():
                    return inst
            except OSError:
                pass
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the recorder never set up its instance")


def test_interrupted_recording_restores_tracefs(live_tracefs, tmp_path):
    before = tracefs_state(live_tracefs)
    out = tmp_path / "int.trace"
    proc = subprocess.Popen([sys.executable, "-m", "rseqlab.cli", "record", "-o", str(out), "--", "sleep", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    inst = _wait_for_instance(live_tracefs, proc)
    assert "sched_switch" in (inst / "set_event").read_text()
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip().splitlines() == [
        f"rseqlab: error: interrupted by SIGINT; kept what was recorded in {out} (marked incomplete)"]
    assert tracefs_state(live_tracefs) == before
    assert not inst.exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"rseqlab-spool-{proc.pid}-*"))  # spool removed
    trace = load(out)  # what was recorded is kept, and says so
    assert trace.meta["incomplete"]["reason"] == "interrupted by SIGINT"
    assert trace.kind_counts()["exec"] >= 1
    # the workload was stopped with the recorder
    assert subprocess.run(["pgrep", "-f", "^sleep 30$", "-P", str(proc.pid)], capture_output=True).stdout == b""


def test_bad_commands_leave_nothing_enabled(live_tracefs, run_cli):
    before = tracefs_state(live_tracefs)
    res = run_cli("record", "--", "/nonexistent/program")
    assert res.status == 2 and res.stderr.strip() == "rseqlab: error: command not found: /nonexistent/program"
    res = run_cli("record")
    assert res.status == 2 and res.stderr.startswith("rseqlab: error: missing COMMAND")
    assert tracefs_state(live_tracefs) == before


def test_not_root_is_an_environment_error(run_cli, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    res = run_cli("validate", "--", "true")
    assert res.status == 3
    assert res.stderr.strip().splitlines() == [
        "rseqlab: error: recording needs root (tracefs and pid filters); run rseqlab as root"]


def test_no_tracefs_is_an_environment_error(tmp_path):
    from rseqlab.errors import Unavailable
    from rseqlab.trace.record import record

    if os.geteuid() != 0:
        pytest.skip("needs root to reach the tracefs check")
    with pytest.raises(Unavailable, match="tracefs is not mounted"):
        record(["true"], tracefs=tmp_path / "no-such-dir")


def _validate(run_cli, *command: str) -> dict:
    res = run_cli("validate", "--json", "--", *command)
    assert res.status == 0, res.stderr
    return res.json


def test_validate_pingpong_within_2_percent_and_619_ids_a_handful(live_tracefs, run_cli):
    data = _validate(run_cli, str(build("pingpong")), "10000", "same")
    v = data["validation"]
    print(f"\npingpong: observed {v['observed_rseq_update']}, predicted {v['predicted_rseq_update']}, "
          f"error {100 * v['relative_error']:+.3f}%; 6.19 ids {data['kernels']['6.19']['ids']}")
    assert v["kernel"] == "6.18"
    assert v["observed_rseq_update"] >= 2 * 10000  # two blocking reads per round trip
    assert abs(v["relative_error"]) <= 0.02
    assert data["kernels"]["6.19"]["ids"] <= 10
    assert data["record"]["lost"]["total"] == 0
    assert set(v) >= {"kernel", "predicted_rseq_update", "observed_rseq_update", "relative_error",
                      "predicted_rseq_ip_fixup", "observed_rseq_ip_fixup"}


@pytest.mark.parametrize("workload,args", [("threadmix", ["30", "4"]), ("sigstorm", ["10000"]),
                                           ("munmaploop", ["3000"])])
def test_validate_shipped_workloads_within_2_percent(live_tracefs, run_cli, workload, args):
    data = _validate(run_cli, str(build(workload)), *args)
    v = data["validation"]
    print(f"\n{workload}: observed {v['observed_rseq_update']}, predicted {v['predicted_rseq_update']}, "
          f"error {100 * v['relative_error']:+.3f}%")
    assert v["observed_rseq_update"] > 1000
    assert abs(v["relative_error"]) <= 0.02
    assert len(data["tasks"]) >= (5 if workload == "threadmix" else 1)


def test_parallel_compile_loses_nothing_and_reports_its_cost(live_tracefs, run_cli, tmp_path):
    make = compile_tree(tmp_path, files=6, functions=30)
    plain, traced = [], []
    for rep in range(3):  # interleaved A/B: the VM is noisy
        subprocess.run(["make", "-s", "-C", str(tmp_path), "clean"], check=True)
        t0 = time.monotonic()
        subprocess.run(make, check=True)
        plain.append(time.monotonic() - t0)
        subprocess.run(["make", "-s", "-C", str(tmp_path), "clean"], check=True)
        res = run_cli("record", "--json", "-o", str(tmp_path / f"make{rep}.trace"), "--", *make)
        assert res.status == 0, res.stderr
        summary = res.json
        assert summary["lost"]["total"] == 0
        assert summary["by_kind"]["lost"] == 0
        traced.append(summary["duration_s"])
    measured = 100 * (statistics.median(traced) - statistics.median(plain)) / statistics.median(plain)
    estimate = summary["overhead"]["estimated_pct"]
    print(f"\nparallel compile: untraced median {statistics.median(plain):.3f} s, traced median "
          f"{statistics.median(traced):.3f} s, measured overhead {measured:+.1f}% (noisy VM), "
          f"recorder's estimate {estimate:.2f}% of CPU time, lost 0")
    assert estimate < 5.0
    # The replay reports its error and names the residual sources for a build.
    trace_path = tmp_path / "make0.trace"
    rep = run_cli("replay", str(trace_path), "--json")
    assert rep.status == 0
    trace = load(trace_path)
    assert trace.meta["glibc"]["observed_registration_lengths"] == [32]
    subprocess.run(["make", "-s", "-C", str(tmp_path), "clean"], check=True)
    data = _validate(run_cli, *make)
    v = data["validation"]
    print(f"compile: observed {v['observed_rseq_update']}, predicted {v['predicted_rseq_update']}, "
          f"error {100 * v['relative_error']:+.2f}%")
    assert v["relative_error"] is not None and abs(v["relative_error"]) < 0.10
    assert any("mm_cid" in s for s in v["residual_sources"])


@pytest.mark.parametrize(("script", "status", "says"), [
    ("exit 3", 3, "command exited with status 3"),
    ("kill -TERM $$", 143, "command was killed by SIGTERM (exit status 143)"),
])
def test_record_and_validate_exit_with_the_commands_status(live_tracefs, run_cli, tmp_path, script, status, says):
    """As ``perf record`` does: the recording is kept, and the exit status is the command's."""
    rec = run_cli("record", "-o", str(tmp_path / "r.trace"), "--", "sh", "-c", script)
    assert rec.status == status and says in rec.stderr
    assert load(tmp_path / "r.trace").meta["exit_status"] in (3, -15)
    val = run_cli("validate", "--json", "--", "sh", "-c", script)
    assert val.status == status and val.json["record"]["exit_status"] in (3, -15)
    assert run_cli("record", "-o", str(tmp_path / "ok.trace"), "--", "true").status == 0


def test_per_process_view_names_each_process_after_its_exec(live_tracefs, run_cli, tmp_path):
    """A child of sh runs cat: its row says cat, not the sh it was forked from (issue 15)."""
    out = tmp_path / "sh.trace"
    assert run_cli("record", "-o", str(out), "--", "sh", "-c", "cat /dev/null; cat /dev/null; true").status == 0
    for extra in ((), ("--reference",)):
        res = run_cli("replay", str(out), "-k", "6.18", "--per-process", "--json", *extra)
        assert res.status == 0, res.stderr
        comms = sorted(p["comm"] for p in res.json["processes"])
        assert comms.count("cat") == 2 and "sh" in comms, comms
