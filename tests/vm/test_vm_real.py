"""Real kernels under QEMU (marker ``vm``, ``make vm-test``; not part of ``make test``).

Statistics kernels (tinyconfig + CONFIG_RSEQ_STATS) for one 6.19.x and one 7.x release are
built once into the cache (``RSEQLAB_VM_KERNELS`` overrides, e.g. "6.19.10:stats 7.1.8:stats").
Each deterministic workload is recorded in the guest with guestrec and replayed through the
personality of the guest's release; every one of the eight counters and both tracepoints must
be predicted exactly. Then the failure paths: a guest that panics, hangs, runs out of memory or
sends back nothing gives one clear error, keeps its serial log and leaves nothing running.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from rseqlab.trace.format import load
from rseqlab.trace.replay import tracks_user_mode
from rseqlab.vm import fidelity, guest_run, kernels, qemu

pytestmark = pytest.mark.vm

STATS_KERNELS = [v for v, stats in fidelity.kernels_from_env(("6.19.10:stats", "7.1.8:stats")) if stats]


@pytest.fixture(scope="module", params=STATS_KERNELS)
def stats_runs(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"vm-{request.param}")
    rows = fidelity.run_kernel(request.param, True, list(fidelity.DETERMINISTIC), outdir=out)
    return request.param, rows


def _qemu_running() -> list[str]:
    res = subprocess.run(["pgrep", "-a", "-f", "qemu-system-x86_64.*rseqlab-"], capture_output=True, text=True)
    return [ln for ln in res.stdout.splitlines() if ln.strip()]


#: Differences measured on these kernels and explained in docs/real-kernels.md ("Where observed and
#: predicted differ"): (kernel, workload, counter) -> (why, largest difference accepted).
#: Within it the test is an expected failure (not strict: timing in the guest varies from run to
#: run); beyond it, or anywhere else, it fails. Fixed causes have no entry, so they cannot come
#: back: schedule_tail()'s set_child_tid store (forkloop slowpath), unrecorded page faults
#: (munmaploop/forkloop exit), a tick on kill()'s way out read as one from user mode (sigstorm
#: signal on 6.19), the recorded root's first CPU (one ids/rseq_update), a switch inside the slow
#: path's store into a copy-on-write rseq page (7.1.8 forkloop: a second fast path in that exit,
#: placed by the recorded kernel faults), the statistics window cut at the clock reads instead of
#: the statistics reads (one recorder `exit` too many). The statistics kernels record
#: context_tracking:user_enter/user_exit, so the replay reads every return and every entry's mode.
#: Nothing differs on the deterministic workloads now (docs/real-kernels.md, items 10 and 11).
KNOWN: dict[tuple[str, str, str], tuple[str, int | None]] = {}


def test_deterministic_workloads_come_back_whole(stats_runs):
    """The statistics and the recording agree with each other (the harness's own consistency)."""
    version, rows = stats_runs
    assert len(rows) == len(fidelity.DETERMINISTIC)
    for r in rows:
        v = r["validation"]
        assert v["statistics"], f"{version}: no CONFIG_RSEQ_STATS counters came back"
        assert r["lost"] == 0
        assert r["exit_status"] == 0, f"{version} {r['workload']}: the workload failed in the guest"
        c = v["counters"]
        # every recorded syscall return is one `exit`; the kernel also counts interrupt and fault returns
        assert c["exit"]["observed"] >= c["exit"]["workload"] * 0.9
        # 6.19+: each of the workload's ID writes fires trace_rseq_update inside the window
        assert c["ids"]["observed"] >= v["tracepoints"]["rseq_update"]["observed"]
        # the statistics kernels track user mode: the recording holds every entry and return
        assert tracks_user_mode(load(r["trace"])), f"{version} {r['workload']}: no context_tracking events"


def _cells(rows):
    for r in rows:
        v = r["validation"]
        for c, x in v["counters"].items():
            yield r, c, x
        for c, x in v["tracepoints"].items():
            yield r, f"tp:{c}", x


def test_deterministic_workloads_counters_exact(stats_runs, request):
    version, rows = stats_runs
    unexpected, known = [], []
    for r, c, x in _cells(rows):
        if x.get("predicted") is None or x["predicted"] == x["observed"]:
            continue
        line = f"{r['workload']}: {c} observed {x['observed']} predicted {x['predicted']}"
        why = KNOWN.get((version, r["workload"], c))
        ok = why is not None and (why[1] is None or abs(x["predicted"] - x["observed"]) <= why[1])
        (known if ok else unexpected).append(line)
    assert not unexpected, f"{version} ({rows[0]['personality']}): " + "; ".join(unexpected)
    if known:
        pytest.xfail(f"{version}: known differences: " + "; ".join(known))


#: The fidelity row whose critical sections are aborted by preemption (a busy loop inside each).
PARAM_TEST_LOOP = next(w for w in fidelity.OTHER if "loop in section" in w[0])


@pytest.mark.parametrize("version", STATS_KERNELS)
def test_critical_sections_in_a_real_program_are_predicted_exactly(version, tmp_path):
    """The release's own param_test with preemptions inside its sections: the user IP of each
    interrupt (guestrec's ip instance) and the program's __rseq_cs descriptors give the replay
    every abort; every counter must match (6.19.10: cs and fixup 4-7 in the runs seen)."""
    rows = fidelity.run_kernel(version, True, [PARAM_TEST_LOOP], outdir=tmp_path)
    assert rows, f"{version}: the release's param_test could not be built (see the log above)"
    r = rows[0]
    assert r["lost"] == 0 and r["exit_status"] == 0
    trace = load(r["trace"])
    assert trace.meta["rseq_cs"] and trace.meta["user_ip"]["with_ip"] == trace.meta["user_ip"]["interrupts"]
    v = r["validation"]
    cells = {c: (x["observed"], x["predicted"]) for c, x in [*v["counters"].items(), *v["tracepoints"].items()]}
    diff = ", ".join(f"{c} {o}/{p}" for c, (o, p) in cells.items() if o != p)
    # The one thing the recording cannot show: a stale rseq_cs user space left outside a section
    # since the last interrupt that hit one. The kernel then checks and clears it; the replay
    # does not see the pointer. So `cs` and `clear` may both be short by the same number, and
    # nothing else may differ (7.1.8: cs 14/13, clear 1/0 in one of six runs).
    unseen = cells["clear"][0] - cells["clear"][1]
    assert unseen >= 0 and cells["cs"][0] - cells["cs"][1] == unseen, f"{version}: {diff}"
    assert set(v["failed"]) <= {"cs", "clear"}, f"{version}: {diff}"
    if unseen:
        pytest.xfail(f"{version}: {unseen} stale rseq_cs cleared by the kernel, not in the recording ({diff})")


def _kernel():
    k = kernels.find_cached(STATS_KERNELS[0], stats=True) if STATS_KERNELS else None
    return k or kernels.KernelStore().get(STATS_KERNELS[0] if STATS_KERNELS else "6.19.10", stats=True)


def test_guest_panic_is_one_error_with_the_serial_log(tmp_path):
    log = tmp_path / "serial.log"
    # An /init that exits at once: the kernel panics (init died) and reboots, QEMU stops.
    with pytest.raises(qemu.GuestError, match=r"panicked.*serial log") as ei:
        guest_run.run(_kernel(), "true\n", tmp_path / "o", serial_log=log, timeout=300,
                      files={"init": b"#!/bin/sh\necho RSEQLAB-GUEST-UP\nexit 3\n"})
    assert "\n" not in str(ei.value)
    assert "Kernel panic" in log.read_text()
    assert not _qemu_running()


def test_guest_hang_times_out(tmp_path):
    log = tmp_path / "serial.log"
    with pytest.raises(qemu.GuestError, match=r"hung in its payload: no power-off within 20 s"):
        guest_run.run(_kernel(), "sleep 600\n", tmp_path / "o", serial_log=log, timeout=20)
    assert log.is_file()
    assert not _qemu_running()


def test_guest_out_of_memory(tmp_path):
    log = tmp_path / "serial.log"
    payload = 'x=$(head -c 400000000 /dev/zero | tr "\\0" a)\necho done\n'
    with pytest.raises(qemu.GuestError, match="ran out of memory"):
        guest_run.run(_kernel(), payload, tmp_path / "o", serial_log=log, mem_mb=160, timeout=300)
    assert not _qemu_running()


def test_guest_that_dies_before_sending_is_one_error(tmp_path):
    log = tmp_path / "serial.log"
    with pytest.raises(qemu.GuestError, match="sent no return data"):
        guest_run.run(_kernel(), "reboot -f\nsleep 5\n", tmp_path / "o", serial_log=log, timeout=300)
    assert not _qemu_running()


def test_dynamic_command_runs_with_its_libraries(tmp_path):
    """A dynamically linked host program runs in the guest on the host's own glibc."""
    import shutil

    from rseqlab.vm import vmrun

    true = shutil.which("true")
    run = vmrun.vm_run("", [true], str(tmp_path / "t.trace"), kernel=_kernel())
    assert run.summary["exit_status"] == 0
    assert os.path.getsize(tmp_path / "t.trace") > 0
    assert run.trace.meta["guest"]["release"].startswith(run.summary["kernel"]["version"].rsplit(".", 1)[0])
