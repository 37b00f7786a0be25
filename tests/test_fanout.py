"""The fan-out layer (issue 16): local processes and a real Dask cluster on loopback give the
results of ``--jobs 1``, byte for byte; a worker killed mid-run loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from rseqlab import fanout
from rseqlab.cli import main
from rseqlab.distributions import reduction, summary
from rseqlab.errors import BadInput
from rseqlab.fanout import Fanout, parse_seeds
from rseqlab.selftests import runner

TINY = """
name = "tiny-pingpong"
description = "pingpong, 300 rounds"
source = "a test workload of issue 16"
[machine]
cpus = 2
hz = 1000
[[process]]
name = "pp"
glibc = "2.36"
[[process.thread]]
name = "ping"
repeat = 300
steps = [{ op = "pipe_write", pipe = "ab" }, { op = "pipe_read", pipe = "ba" },
         { op = "compute", ns = 20000, jitter = 0.5 }]
[[process.thread]]
name = "pong"
repeat = 300
steps = [{ op = "pipe_read", pipe = "ab" }, { op = "pipe_write", pipe = "ba" },
         { op = "compute", ns = 30000, jitter = 0.5 }]
"""


def _cli(capsys, *argv) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.toml"
    path.write_text(TINY)
    return str(path)


def test_seeds_are_ranges_and_lists():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5,1,9") == [5, 1, 9]
    assert parse_seeds("0-2, 10") == [0, 1, 2, 10]
    for bad in ("", "3-1", "a", "1,1", "-1", "0-"):
        with pytest.raises(BadInput):
            parse_seeds(bad)


def test_bad_fanout_options_are_bad_input(monkeypatch):
    with pytest.raises(BadInput, match="--jobs"):
        Fanout.from_options(0)
    with pytest.raises(BadInput, match="tcp://"):
        Fanout.from_options(1, "localhost")
    monkeypatch.setenv(fanout.SCHEDULER_ENV, "tcp://127.0.0.1:1")
    assert Fanout.from_options(None).scheduler == "tcp://127.0.0.1:1"
    assert Fanout.from_options(None, None).jobs == len(os.sched_getaffinity(0))


def test_an_unreachable_scheduler_is_one_error_line(capsys):
    assert main(["selftest", "-t", "basic_test", "-k", "6.19", "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err


@pytest.mark.parametrize("batch", [None, 1, 3])
def test_local_processes_give_the_serial_results_in_item_order(batch):
    items = [(None, False, 2, False, 0, k, s) for s in range(3) for k in ("6.18", "6.19")]
    items = [(("basic_test",), False, 2, False, 0, k, s) for _, _, _, _, _, k, s in items]
    serial = fanout.run(runner.run_item, items, Fanout(1))
    seen: list[int] = []
    parallel = fanout.run(runner.run_item, items, Fanout(2, batch=batch), on_result=lambda i, r: seen.append(i))
    assert [r.as_json() for r in parallel] == [r.as_json() for r in serial]
    assert sorted(seen) == list(range(len(items)))


def test_ctrl_c_keeps_what_finished():
    items = [(("basic_test",), False, 2, False, 0, "6.19", s) for s in range(5)]
    calls = []

    def stop_after_two(index, result):
        calls.append(index)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(fanout.Interrupted) as info:
        fanout.run(runner.run_item, items, Fanout(1), on_result=stop_after_two)
    assert sorted(info.value.done) == [0, 1] and info.value.total == 5


def test_the_bootstrap_interval_is_seeded_and_holds_the_mean():
    xs = [10, 12, 9, 14, 11, 13, 10, 12]
    a, b = summary(xs), summary(xs)
    assert a == b and a["ci95"][0] <= a["mean"] <= a["ci95"][1] and a["min"] == 9 and a["max"] == 14
    assert a["samples"] == xs and summary([7])["ci95"] == [7.0, 7.0]
    r = reduction([100, 200, 300], [50, 100, 150])
    assert r["reduction"] == 0.5 and r["ci95"] == [0.5, 0.5]  # paired: every sample halves
    assert reduction([0, 0], [1, 2]) is None


def test_compare_seeds_reports_a_distribution_with_every_sample(capsys, tiny):
    status, out = _cli(capsys, "compare", "-w", tiny, "--seeds", "0-3", "-j", "1", "--json")
    assert status == 0
    data = json.loads(out)
    assert data["seeds"] == [0, 1, 2, 3] and "bootstrap" in data["interval"]
    exits = data["kernels"]["6.18"]["exit"]
    assert len(exits["samples"]) == 4 and exits["ci95"][0] <= exits["mean"] <= exits["ci95"][1]
    assert len(set(exits["samples"])) > 1  # the seeds do differ
    assert data["reductions"]["6.18→6.19"]["ids"]["reduction"] > 0.5
    status, parallel = _cli(capsys, "compare", "-w", tiny, "--seeds", "0-3", "-j", "2", "--json")
    assert parallel == out


# ----------------------------------------------------------------------
# A real Dask scheduler and two workers on loopback
# ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")  # a pinned dependency: present in make test
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                 dashboard_address=None, silence_logs=50)
    try:
        yield c
    finally:
        c.close()


def test_selftest_through_dask_is_the_serial_json(capsys, cluster):
    argv = ["selftest", "-t", "basic_test", "-t", "syscall_errors_test", "-t", "basic_percpu_ops_test",
            "-k", "6.18", "-k", "6.19", "--json"]
    _, serial = _cli(capsys, *argv, "-j", "1")
    _, dask = _cli(capsys, *argv, "--scheduler", cluster.scheduler_address)
    assert dask == serial and len(json.loads(dask)["results"]) == 6


def test_check_subtrees_through_dask_are_the_serial_json(capsys, cluster):
    argv = ["check", "percpu-counter", "-k", "6.19:no-cs-check", "--preemptions", "0", "--migrations", "1",
            "--signals", "0", "--subtrees", "5", "--json"]
    s1, serial = _cli(capsys, *argv, "-j", "1")
    s2, dask = _cli(capsys, *argv, "--scheduler", cluster.scheduler_address)
    assert s1 == s2 == 1 and dask == serial
    assert json.loads(dask)["subtrees"] >= 5


def test_compare_seeds_through_dask_is_the_serial_json(capsys, cluster, tiny):
    argv = ["compare", "-w", tiny, "--seeds", "0-3", "--json"]
    _, serial = _cli(capsys, *argv, "-j", "1")
    _, dask = _cli(capsys, *argv, "--scheduler", cluster.scheduler_address)
    assert dask == serial


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(cluster, tiny):
    from distributed import Client

    from rseqlab import compare as cmp
    from rseqlab.workloads import load_workload

    w = load_workload(tiny)
    items = [(w, "6.19", s, True) for s in range(12)]
    serial = [r.as_json() for r in fanout.run(cmp._run_one, items, Fanout(1))]
    with Client(cluster.scheduler_address, set_as_default=False) as client:
        pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    arrived: list[int] = []
    killed = threading.Event()

    def on_result(index, result):
        arrived.append(index)
        if not killed.is_set():
            killed.set()
            os.kill(victim, signal.SIGKILL)  # the nanny starts a new worker; the scheduler retries

    results = fanout.run(cmp._run_one, items, Fanout(scheduler=cluster.scheduler_address, batch=1),
                         on_result=on_result)
    assert killed.is_set()
    assert sorted(arrived) == list(range(12))  # each result once: none lost, none twice
    assert [r.as_json() for r in results] == serial


# ----------------------------------------------------------------------
# sweep and replay of several recordings
# ----------------------------------------------------------------------
def test_sweep_runs_workloads_kernels_variants_and_seeds(capsys, tmp_path, tiny):
    sweep = tmp_path / "s.toml"
    sweep.write_text(f'workloads = ["{tiny}"]\nkernels = ["6.18", "6.19"]\nvariants = ["no-cs-check"]\n'
                     'seeds = [0, 2]\n')
    status, out = _cli(capsys, "sweep", str(sweep), "-j", "1", "--json")
    data = json.loads(out)
    assert status == 0 and data["sweep"]["kernels"] == ["6.18", "6.19", "6.19:no-cs-check"]
    block = data["workloads"]["tiny-pingpong"]
    assert block["seeds"] == [0, 2] and len(block["kernels"]["6.19:no-cs-check"]["exit"]["samples"]) == 2
    _, parallel = _cli(capsys, "sweep", str(sweep), "-j", "2", "--json")
    assert parallel == out
    # the same numbers as compare --seeds for the same runs
    _, cmp_out = _cli(capsys, "compare", "-w", tiny, "-k", "6.18,6.19,6.19:no-cs-check", "--seeds", "0,2",
                      "--json", "-j", "1")
    assert json.loads(cmp_out)["kernels"] == block["kernels"]


@pytest.mark.parametrize(("text", "message"), [
    ('workloads = ["pingpong"]\nkernels = ["6.19"]\n', "seeds"),
    ('workloads = ["pingpong"]\nkernels = ["9.9"]\nseeds = "0-1"\n', "unknown kernel"),
    ('workloads = ["pingpong"]\nkernels = ["6.18"]\nvariants = ["no-cs-check"]\nseeds = "0"\n', "applies to none"),
    ('workloads = []\nkernels = ["6.18"]\nseeds = "0"\n', "workloads"),
    ('workload = ["pingpong"]\n', "unknown key"),
    ('workloads = ["nope.toml"]\nkernels = ["6.18"]\nseeds = "0"\n', "nope.toml"),
    ("not toml [", "not a sweep file"),
])
def test_a_bad_sweep_file_is_one_error_line(capsys, tmp_path, text, message):
    sweep = tmp_path / "s.toml"
    sweep.write_text(text)
    assert main(["sweep", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_replay_of_several_recordings_aggregates_them(capsys, tmp_path):
    from pathlib import Path

    src = Path(__file__).parent / "data" / "guest-7.1.8-stats-sigstorm.trace"
    paths = []
    for name in ("a", "b"):
        p = tmp_path / f"{name}.trace"
        p.write_bytes(src.read_bytes())
        paths.append(str(p))
    _, one = _cli(capsys, "replay", paths[0], "--json", "-j", "1")
    _, many = _cli(capsys, "replay", *paths, "--json", "-j", "1")
    _, many2 = _cli(capsys, "replay", *paths, "--json", "-j", "2")
    single, data = json.loads(one), json.loads(many)
    assert many2 == many and data["recordings"] == paths
    for k in ("6.18", "6.19"):
        for counter, value in single["kernels"][k].items():
            s = data["kernels"][k][counter]
            assert s["samples"] == [value, value] and s["std"] == 0.0


def test_ctrl_c_on_local_workers_is_one_line_keeps_what_finished_and_leaves_no_process():
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-m", "rseqlab", "selftest", "-k", "6.19", "-j", "2"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(8)
    os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    out, err = p.communicate(timeout=120)
    lines = err.decode().strip().splitlines()
    assert p.returncode == 130 and len(lines) == 1 and lines[0].startswith("rseqlab: error: interrupted")
    if "reporting the" in lines[0]:
        assert b"runs:" in out  # the table of the runs that finished
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.killpg(p.pid, 0)  # no worker process left in the group


def test_compare_seeds_as_parquet_keeps_every_sample_as_a_typed_row(capsys, tiny, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rseqlab.report import tables

    status, out = _cli(capsys, "compare", "-w", tiny, "--seeds", "0-2", "-j", "1", "--json")
    assert status == 0
    doc = json.loads(out)
    path = tmp_path / "s.parquet"
    path.write_bytes(tables.parquet_bytes(tables.to_arrow(tables.rows_of(doc))))  # what --format parquet writes
    table = pq.read_table(path)
    assert table.schema.field("seed").type == pa.int64() and table.schema.field("value").type == pa.int64()
    assert table.schema.field("kernel").type == pa.string() and table.schema.field("counter").type == pa.string()
    rows = table.to_pylist()
    kernels = doc["kernels"]
    counters = {k: sorted(v) for k, v in kernels.items()}
    assert len(rows) == len(doc["seeds"]) * sum(len(c) for c in counters.values())
    got = {(r["seed"], r["kernel"], r["counter"]): r["value"] for r in rows}
    assert len(got) == len(rows) and {r["workload"] for r in rows} == {doc["workload"]}
    for i, seed in enumerate(doc["seeds"]):
        for k, cs in counters.items():
            for c in cs:
                assert got[(seed, k, c)] == kernels[k][c]["samples"][i]
    # A sample is that seed's own run: the single-seed report of seed 2 has the same counters.
    status, one = _cli(capsys, "compare", "-w", tiny, "--seed", "2", "-j", "1", "--json")
    single = json.loads(one)["kernels"]
    same = [(k, c) for k in kernels for c in counters[k] if isinstance(single[k].get(c), int)]
    assert len(same) >= 5 and all(got[(2, k, c)] == single[k][c] for k, c in same)
