"""``rseqlab cost`` and ``rseqlab rseq-area`` on the live machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rseqlab.live.cost import estimate_ns, load_model
from rseqlab.errors import BadInput


def test_cost_measures_and_saves_a_loadable_model(run_cli, tmp_path):
    path = tmp_path / "cost.json"
    res = run_cli("cost", "--json", "--reps", "3", "--rounds", "3000", "--signals", "3000", "--save", str(path))
    model = res.json
    if model["benchmarks"]["pingpong"]["noisy"]:  # a loaded machine: refused, and says why
        assert res.status == 1 and not path.exists()
        assert "WARNING: pingpong: the noise" in res.stderr and "not saving the cost model" in res.stderr
        return  # the refusal is what this run could check
    assert res.status == 0, res.stderr
    assert model == load_model(path)
    for bench in ("pingpong", "sigstorm"):
        b = model["benchmarks"][bench]
        assert b["samples"] == 3
        assert b["ns_rseq_on"]["min"] <= b["ns_rseq_on"]["median"]
    print(f"\ncost (3 reps): ns per rseq_update {model['ns_per_rseq_update']}, "
          f"per signal pass {model['ns_per_signal_pass']}")
    assert estimate_ns({"user_reads": 1, "user_writes": 5}, model) == pytest.approx(
        6 * model["ns_per_user_access"])


def test_cost_model_file_errors(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{nope")
    with pytest.raises(BadInput, match="invalid JSON"):
        load_model(p)
    p.write_text(json.dumps({"format": "rseqlab-cost", "version": 9}))
    with pytest.raises(BadInput, match="version 9"):
        load_model(p)


def _area(env_extra: dict) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-m", "rseqlab.cli", "rseq-area", "--json"], capture_output=True,
                          text=True, env=env)


def test_rseq_area_registered_and_disabled():
    on = _area({})
    assert on.returncode == 0, on.stderr
    data = json.loads(on.stdout)
    assert data["registered"] and data["rseq_size"] > 0
    assert 0 <= data["fields"]["cpu_id"] < os.cpu_count()
    assert data["fields"]["cpu_id_start"] == data["fields"]["cpu_id"]
    off = _area({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})
    assert off.returncode == 0
    data = json.loads(off.stdout)
    assert not data["registered"] and data["rseq_size"] == 0
    assert data["fields"]["cpu_id"] == -2
    assert "disabled" in data["status"]


def test_rseq_area_unavailable_off_x86(run_cli, monkeypatch):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    res = run_cli("rseq-area")
    assert res.status == 3
    assert res.stderr.strip() == ("rseqlab: error: reading the rseq area needs x86_64 (arch_prctl for the "
                                  "thread pointer); this machine is aarch64")


@pytest.mark.parametrize("text, message", [
    ('{"format": "rseqlab-cost", "version": 1, "ns_per_user_access": NaN}', "invalid JSON"),
    ('{"format": "rseqlab-cost", "version": 1, "ns_per_user_access": Infinity}', "invalid JSON"),
    ('{"format": "rseqlab-cost", "version": 1, "ns_per_user_access": 1e300}', "valid ns_per_user_access"),
    ('{"format": "rseqlab-cost", "version": 1, "ns_per_user_access": -1}', "valid ns_per_user_access"),
    ('{"format": "rseqlab-cost", "version": 1, "ns_per_user_access": true}', "valid ns_per_user_access"),
    ('{"format": "rseqlab-cost", "version": 1, "ns_per_user_access": 5, "ns_per_rseq_update": [1]}',
     "valid ns_per_rseq_update"),
    ('{"format": "rseqlab-cost", "version": [1]}', "unsupported cost model version"),
    ("[" * 100_000 + "]" * 100_000, "invalid JSON"),
])
def test_hostile_cost_models_are_one_line_errors(tmp_path, text, message):
    from rseqlab.live.cost import COST_FORMAT, COST_VERSION

    p = tmp_path / "bad.json"
    p.write_text(text.replace('"rseqlab-cost"', json.dumps(COST_FORMAT)).replace('"version": 1', f'"version": {COST_VERSION}'))
    with pytest.raises(BadInput, match=message):
        load_model(p)


def test_cost_spread_and_the_noise_verdict():
    from rseqlab.live.cost import noise_warnings, refuse_meaningless, summarize
    from rseqlab.errors import RseqlabError

    clear = summarize("pingpong", [1100.0, 1110, 1105, 1120, 1101], [900.0, 905, 910, 902, 899], warmup=1)
    assert clear["ns_rseq_on"] == {"median": 1105.0, "iqr": 9.0, "min": 1100.0}  # quartiles 1101, 1110
    assert clear["effect_ns"] == 203.0 and clear["noise_ns"] == 9.0 and not clear["noisy"]  # 1105 - 902
    assert clear["ns_per_pass_median"] == 101.5 and clear["warmup"] == 1
    hidden = summarize("pingpong", [1000.0, 1400, 900, 1300, 1010], [980.0, 1350, 950, 1200, 990])
    assert hidden["effect_ns"] == 20.0 and hidden["noise_ns"] > 20 and hidden["noisy"]
    backwards = summarize("sigstorm", [1.0, 1, 1], [2.0, 2, 2])  # rseq on faster: noise, whatever the IQR
    assert backwards["noisy"] and backwards["noise_ns"] == 0
    model = {"benchmarks": {"pingpong": hidden, "sigstorm": clear}}
    (line,) = noise_warnings(model)
    assert line.startswith("pingpong: the noise (IQR") and "+20.0 ns" in line
    with pytest.raises(RseqlabError, match="not saving the cost model"):
        refuse_meaningless(model)
    refuse_meaningless({"benchmarks": {"pingpong": clear, "sigstorm": hidden}})  # the model's source is clear
