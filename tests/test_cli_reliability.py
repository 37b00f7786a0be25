"""The CLI under hostile use (issue 17): output paths checked before the work, signals."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("path,message", [
    ("/nonexistent-dir/cost.json", "does not exist"),
    ("", "an empty path"),
    ("/dev/null", "not a regular file"),
    (".", "is a directory"),
])
def test_cost_save_is_checked_before_measuring(run_cli, monkeypatch, path, message):
    from rseqlab.live import cost

    def measured(**kwargs):
        raise AssertionError("measured before checking --save")

    monkeypatch.setattr(cost, "measure", measured)
    r = run_cli("cost", "--save", path)
    assert r.status == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_cost_save_failing_to_write_is_one_line(tmp_path, monkeypatch):
    """A disk that fills during the measurement: one line, not a traceback."""
    from rseqlab.errors import BadInput
    from rseqlab.live.cost import save_model

    with pytest.raises(BadInput, match="--save /dev/full: cannot write"):
        save_model({"format": "x"}, "/dev/full")
