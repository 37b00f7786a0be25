"""`rseqlab validate FILE` on synthetic recordings with (and without) the kernel's statistics."""

from __future__ import annotations

import pytest

from rseqlab.kernel import COUNTERS, PERSONALITIES
from rseqlab.trace.format import EVENT_COLUMNS, SYSARG_COLUMNS, Kind, save
from rseqlab.trace.replay import replay
from tests.trace.test_replay import ROOT, started

RECORDER = 50
MS = 1_000_000


def _workload():
    b = started()
    for _ in range(20):
        b.syscall(0, block=True)
    b.ev(Kind.SYS_ENTER, ROOT, 0, -1).ev(Kind.SWITCH_OUT, ROOT, 1).ev(Kind.SWITCH_IN, ROOT, cpu=1)
    b.ev(Kind.SYS_EXIT, ROOT, 0, 1, cpu=1)
    b.ev(Kind.SWITCH_OUT, ROOT, 0, dt=3 * MS).ev(Kind.SWITCH_IN, ROOT, cpu=1)  # a user-mode preemption
    for _ in range(5):
        b.syscall(39, cpu=1)
    # As many recorded rseq_update events as 6.19 predicts (the replay never reads them).
    for _ in range(replay(b.trace(), ["6.19"])["6.19"].tracepoints["rseq_update"]):
        b.ev(Kind.RSEQ_UPDATE, ROOT, 1, 0, 0, cpu=1, dt=1)
    return b.trace()


def _recorder_window() -> dict:
    """The recorder: two syscalls before the window (not counted), three returns inside it, and the
    second statistics read entered at its end."""
    rows = []
    t = 0

    def ev(kind, a=0, b=-1):
        nonlocal t
        t += MS
        rows.append((t, 0, int(kind), RECORDER, a, b, 0, 0))

    ev(Kind.SYS_EXIT, 0, 0)
    ev(Kind.SYS_ENTER, 1)
    ev(Kind.SYS_EXIT, 1, 2)                      # 3 ms; the window opens at 3.5 ms
    for nr in (0, 1, 7):                          # the first read, the gate write, poll()
        ev(Kind.SYS_ENTER, nr)
        ev(Kind.SYS_EXIT, nr, 0)
    ev(Kind.SYS_ENTER, 0)                         # 10 ms: the second read; the window closes at 10.5 ms
    cols = list(EVENT_COLUMNS)
    events = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    meta = {"cpus": 2, "topology": {"node_of_cpu": [0, 0]}, "kernel": {"hz": 250}, "tasks": {},
            "root": {"pid": RECORDER, "rseq_registered": True, "rseq_addr": 0x7F00_0000_0200, "rseq_len": 32}}
    return {"meta": meta, "events": events, "sysargs": {c: [] for c in SYSARG_COLUMNS}, "lost": 0}


def _guest_trace(release="6.19.10", stats=True, extra=None):
    trace = _workload()
    predicted = replay(trace, ["6.19"])["6.19"].counters
    delta = {c: int(predicted[c]) for c in COUNTERS}
    delta["exit"] += 3  # the recorder's three returns inside the window
    for k, v in (extra or {}).items():
        delta[k] = delta.get(k, 0) + v
    trace.meta["kernel"]["release"] = release
    trace.meta["guest"] = {"recorder": "guestrec", "release": release, "window_ns": [int(3.5 * MS), int(10.5 * MS)],
                           "recorder_pid": RECORDER, "recorder_window": _recorder_window(),
                           "lost": {}, "rseq_stats": ({"before": dict.fromkeys(delta, 0), "after": delta,
                                                       "delta": delta, "slice": False} if stats else None)}
    return trace


@pytest.fixture
def guest_file(tmp_path):
    path = tmp_path / "guest.trace"
    save(_guest_trace(), path)
    return path


def test_every_counter_matches_with_the_recorders_share(run_cli, guest_file):
    res = run_cli("validate", "--json", "--max-error", "0", str(guest_file))
    assert res.status == 0, res.stdout + res.stderr
    v = res.json["validation"]
    assert v["kernel"] == "6.19" and v["release"] == "6.19.10" and v["statistics"] is True
    assert set(v["counters"]) == set(COUNTERS)
    assert v["counters"]["exit"]["recorder"] == 3  # only the returns inside the window
    assert all(v["counters"][c]["recorder"] == 0 for c in COUNTERS if c != "exit")
    assert all(row["error"] == 0.0 for row in v["counters"].values())
    assert v["counters"]["exit"]["predicted"] == v["counters"]["exit"]["workload"] + 3
    assert v["tracepoints"]["rseq_update"]["observed"] == v["tracepoints"]["rseq_update"]["predicted"] == 2
    assert v["failed"] == []


def test_max_error_and_slack_exit_codes(run_cli, tmp_path):
    path = tmp_path / "off.trace"
    trace = _guest_trace(extra={"ids": 1})
    save(trace, path)
    res = run_cli("validate", "--json", "--max-error", "2", str(path))
    v = res.json["validation"]
    ids = v["counters"]["ids"]
    assert ids["observed"] == ids["predicted"] + 1
    assert res.status == 1 and v["failed"] == ["ids"]
    res = run_cli("validate", "--json", "--max-error", "2", "--slack", "1", str(path))
    assert "ids" not in res.json["validation"]["failed"]
    res = run_cli("validate", "--json", str(path))  # no limit: report only
    assert res.status == 0 and res.json["validation"]["failed"] == []
    text = run_cli("validate", "--max-error", "2", str(path))
    assert text.status == 1
    assert "Kernel statistics (debugfs delta) vs prediction" in text.stdout and "beyond the limit" in text.stdout


def test_without_statistics_the_tracepoints_are_compared(run_cli, tmp_path):
    path = tmp_path / "nostats.trace"
    b = started()
    b.ev(Kind.RSEQ_UPDATE, ROOT)  # the kernel's update after the registration
    for _ in range(5):
        b.syscall(39)
    trace = b.trace()
    trace.meta["kernel"]["release"] = "6.19.6-cloud-amd64"
    save(trace, path)
    res = run_cli("validate", "--json", "--max-error", "0", str(path))
    assert res.status == 0, res.stdout
    v = res.json["validation"]
    assert v["statistics"] is False and v["counters"] == {} and v["guest"] is False
    assert v["tracepoints"]["rseq_update"] == {"observed": 1, "predicted": 1, "error": 0.0}
    # One more recorded update than the model predicts: 100% off.
    b.ev(Kind.RSEQ_UPDATE, ROOT)
    trace = b.trace()
    trace.meta["kernel"]["release"] = "6.19.6"
    save(trace, path)
    res = run_cli("validate", "--json", "--max-error", "10", str(path))
    assert res.status == 1 and res.json["validation"]["failed"] == ["tp:rseq_update"]


def test_unmapped_release_and_missing_release_are_one_line(run_cli, tmp_path):
    path = tmp_path / "t.trace"
    save(_guest_trace(release="7.0.13"), path)
    res = run_cli("validate", str(path))
    if "7.0" in PERSONALITIES:
        assert res.status in (0, 1)
    else:
        assert res.status == 2
        assert res.stderr.strip() == ("rseqlab: error: cannot validate this recording: kernel 7.0.13 needs the 7.0 "
                                      f"personality, which this rseqlab does not have (known: "
                                      f"{', '.join(sorted(PERSONALITIES))})")
    trace = _workload()
    save(trace, path)
    res = run_cli("validate", str(path))
    assert res.status == 2 and "does not say which kernel recorded it" in res.stderr


def test_7_1_release_uses_the_7_1_personality(run_cli, tmp_path):
    path = tmp_path / "t71.trace"
    trace = _guest_trace(release="7.1.8")
    save(trace, path)
    res = run_cli("validate", "--json", str(path))
    assert res.status == 0
    v = res.json["validation"]
    assert v["kernel"] == "7.1" and "7.1" in res.json["kernels"]
    # The stats were made for 6.19's prediction; 7.1's legacy registration differs on switch-ins.
    assert v["counters"]["exit"]["error"] == 0.0


@pytest.mark.parametrize("tick", ["before the first read", "after the window closes"])
def test_the_window_is_bounded_by_the_statistics_reads_not_the_clock_reads(tick):
    """guestrec takes the time, then reads the statistics: a tick in user mode between the two
    returns before the first read (not in the window) or before the second (in it). The window
    is cut at each read's sys_enter, not at the times taken."""
    from rseqlab.vm.ingest import NR_READ
    from rseqlab.vm.validate import recorder_share

    rows, t = [], 0

    def ev(kind, a=0, dt=MS // 10):
        nonlocal t
        t += dt
        rows.append((t, 0, int(kind), RECORDER, a, -1, 0, 0))

    def tick_in_user():
        ev(Kind.USER_EXIT), ev(Kind.IRQ, 0), ev(Kind.USER_ENTER)

    def syscall(nr):
        ev(Kind.USER_EXIT), ev(Kind.SYS_ENTER, nr), ev(Kind.SYS_EXIT, nr), ev(Kind.USER_ENTER)

    syscall(1)
    tb = t + MS // 20  # mono_ns(), then read()
    if tick == "before the first read":
        tick_in_user()
    syscall(NR_READ)  # the first statistics read: its return is in the window
    syscall(1)  # the gate write
    syscall(7)  # poll()
    ta = t + MS // 20
    if tick == "after the window closes":
        tick_in_user()
    ev(Kind.USER_EXIT), ev(Kind.SYS_ENTER, NR_READ)  # the second read
    meta = {"cpus": 2, "topology": {"node_of_cpu": [0, 0]}, "kernel": {"hz": 250}, "tasks": {},
            "root": {"pid": RECORDER, "rseq_registered": True, "rseq_addr": 0x7F00_0000_0200, "rseq_len": 32}}
    window = {"meta": meta, "events": {c: [r[i] for r in rows] for i, c in enumerate(EVENT_COLUMNS)},
              "sysargs": {c: [] for c in SYSARG_COLUMNS}, "lost": 0}
    trace = _guest_trace()
    trace.meta["guest"].update(window_ns=[tb, ta], recorder_window=window)
    share = recorder_share(trace, ["7.1"])["7.1"]
    assert share["exit"] == (3 if tick == "before the first read" else 4)
